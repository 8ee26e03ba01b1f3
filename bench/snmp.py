"""Decoding with 200 exporters being polled over SNMP against decoding with none, in one run.

    .venv/bin/python bench/snmp.py [--exporters 200] [--answering 100] [--seconds 3] [--rounds 3]

Debian's snmpd answers on 127.0.0.1 .. 127.0.0.<answering> (v2c; its own config in a temporary directory); the
other exporters (127.0.1.x) point at a port nobody answers on, so their polls time out and back off. The poller polls
with a 1 s TTL so that it keeps polling through the whole measurement.

The poller runs in another process by default, as in the service (the analytics process polls; the receive
workers never do); ``--thread`` puts it in a thread of the decoding process, as ``decode`` and ``replay`` do.

Measured: NetFlow v5 datagrams (30 records each, exporters taking turns) decoded by the receive path
(``FlowPipeline.decode_arrays``: admission, decode, sampling override) into FlowBatches, each batch then handed to
``Enricher.seen`` (exporters noted for the poller, the pair -> observer table updated) and its records given names
(``flow_records`` with the poller's names, the `decode` output path) for one record in 64: the same work in both phases, only the poller's thread runs
in one and not the other. The phases alternate
(none, polled, none, polled, ...) so the machine's load hits both; the records/s of each and their ratio are printed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from analytics.config import Config  # noqa: E402
from bench.e2e_udp import free_port  # noqa: E402
from analytics.schema import ip_to_words  # noqa: E402
from collector.ecs import flow_records  # noqa: E402
from collector.enrich.observers import Enricher  # noqa: E402
from collector.pipeline import FlowPipeline  # noqa: E402
from tests.collector.flows.test_netflow_v5 import REC, v5_datagram  # noqa: E402

COMMUNITY = "benchsnmp"


def start_agent(tmp: Path, answering: int, port: int) -> subprocess.Popen:
    snmpd = shutil.which("snmpd") or "/usr/sbin/snmpd"
    conf = tmp / "snmpd.conf"
    conf.write_text(f"rocommunity {COMMUNITY} 127.0.0.0/8\nsysName bench-agent\n")
    endpoints = ",".join(f"udp:127.0.0.{i}:{port}" for i in range(1, answering + 1))
    (tmp / "persist").mkdir()
    return subprocess.Popen([snmpd, "-f", "-C", "-c", str(conf), "-Lf", str(tmp / "snmpd.log"), endpoints],
                            env=dict(os.environ, SNMP_PERSISTENT_DIR=str(tmp / "persist")),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def block(exporters: list[str], n: int = 512):
    """A receive buffer of n v5 datagrams (30 records each) from the exporters in turn, as the listener lays it."""
    slot = 65535
    buf = np.zeros(n * slot, np.uint8)
    lens, hi, lo = [], [], []
    for i in range(n):
        d = v5_datagram([dict(REC, sport=1024 + (i * 30 + j) % 60000) for j in range(30)], seq=i * 30)
        buf[i * slot:i * slot + len(d)] = np.frombuffer(d, np.uint8)
        lens.append(len(d))
        w = ip_to_words(exporters[i % len(exporters)])
        hi.append(w[0])
        lo.append(w[1])
    return (buf, np.arange(n, dtype=np.int64) * slot, np.array(lens, np.int64), np.array(hi, np.uint64),
            np.array(lo, np.uint64), np.zeros(n, np.int64))


def poll_in_child(devices: dict, snmp: dict, stop, conn) -> None:
    """The analytics process's arrangement: the poller in another process; reports (polls, exporters named)."""
    cfg = Config.from_mapping({"Exporters": {"snmp": snmp, "devices": devices}}).Exporters
    enricher = Enricher(cfg)
    addresses = list(devices)
    enricher.poller.wait_tried(addresses, 30)
    conn.send("ready")
    polls0 = sum(enricher.counters.series("brokerwatch_snmp_polls_total").values())
    cpu0 = time.process_time()
    stop.wait()
    polls = sum(enricher.counters.series("brokerwatch_snmp_polls_total").values()) - polls0
    conn.send((polls, sum(1 for e in addresses if e in enricher.poller.cache), time.process_time() - cpu0))
    enricher.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (from /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def phase(pipeline: FlowPipeline, blk, seconds: float, counted: list) -> tuple[float, float]:
    """(records per wall second, records per CPU second of this thread) decoding blk for about seconds."""
    counted.clear()
    t0, c0 = time.perf_counter(), time.thread_time()
    while time.perf_counter() - t0 < seconds:
        for _ in range(8):
            pipeline.decode_arrays(*blk)
    pipeline.flush()
    wall, cpu = time.perf_counter() - t0, time.thread_time() - c0
    n = sum(counted)
    return n / wall, n / cpu


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--exporters", type=int, default=200)
    ap.add_argument("--answering", type=int, default=100, help="exporters whose agent answers (127.0.0.1..N)")
    ap.add_argument("--seconds", type=float, default=3.0, help="length of each phase")
    ap.add_argument("--rounds", type=int, default=3, help="none/polled pairs of phases")
    ap.add_argument("--ttl", type=float, default=1.0, help="seconds between polls of one exporter")
    ap.add_argument("--thread", action="store_true",
                    help="run the poller in a thread of the decoding process (as `decode` does) rather than in "
                         "another process (as the service's analytics process does)")
    a = ap.parse_args()
    answering = min(a.answering, a.exporters, 254)
    exporters = [f"127.0.0.{i}" for i in range(1, answering + 1)]
    exporters += [f"127.0.1.{i}" for i in range(1, a.exporters - answering + 1)]
    port, dead = free_port(), free_port()
    devices = {e: {"snmp": {"community": COMMUNITY, "port": port if e.startswith("127.0.0.") else dead}}
               for e in exporters}
    snmp = {"ttl": a.ttl, "timeout": 0.5, "retries": 0, "concurrency": 16, "backoff_max": 2}
    cfg = Config.from_mapping({"Exporters": {"snmp": snmp, "devices": devices}}).Exporters
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    tmp = Path(tempfile.mkdtemp(prefix="bw-snmp-bench-"))
    agent = start_agent(tmp, answering, port)
    time.sleep(1.0)
    blk = block(exporters)
    FlowPipeline(lambda b: None).decode_arrays(*blk)  # compile (or load) the kernels before any phase
    results = {"none": [], "polled": []}
    try:
        for _round in range(a.rounds):
            for mode in ("none", "polled"):
                in_thread = mode == "polled" and a.thread
                enricher = Enricher(cfg, start=in_thread)
                child = None
                if mode == "polled" and not a.thread:
                    stop = ctx.Event()
                    here, there = ctx.Pipe()
                    child = ctx.Process(target=poll_in_child, args=(devices, snmp, stop, there))
                    child.start()
                    here.recv()  # every exporter polled once before measuring
                counted: list[int] = []

                def emit(batch, enricher=enricher, counted=counted):
                    # the same work in both phases: only whether the poller runs differs
                    counted.append(len(batch))
                    enricher.seen(batch)
                    for _rec in flow_records(batch.select(np.arange(0, len(batch), 64)), enricher.names):
                        pass

                pipeline = FlowPipeline(emit)
                if in_thread:
                    enricher.poller.wait_tried(exporters, 30)  # every exporter polled once before measuring
                polls0 = sum(enricher.counters.series("brokerwatch_snmp_polls_total").values())
                agent0, poller_cpu = cpu_seconds(agent.pid), 0.0
                rate, cpu_rate = phase(pipeline, blk, a.seconds, counted)
                agent_cpu = cpu_seconds(agent.pid) - agent0
                polls = sum(enricher.counters.series("brokerwatch_snmp_polls_total").values()) - polls0
                named = sum(1 for e in exporters if enricher.poller is not None and e in enricher.poller.cache)
                if child is not None:
                    stop.set()
                    polls, named, poller_cpu = here.recv()
                    child.join(30)
                results[mode].append((rate, cpu_rate))
                print(f"{mode:6s}: {rate / 1e6:5.2f}M records/s ({cpu_rate / 1e6:5.2f}M per CPU-second of the "
                      f"decoding thread); polls during the phase {polls} (poller {poller_cpu:.2f} CPU-s, snmpd {agent_cpu:.2f}), "
                      f"exporters named {named}/{len(exporters)}",
                      flush=True)
                enricher.close()
    finally:
        agent.terminate()
        agent.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
    none = np.median([r for r, _ in results["none"]])
    polled = np.median([r for r, _ in results["polled"]])
    where = "a thread of the decoding process" if a.thread else "another process"
    print(f"poller in {where}; median: none {none / 1e6:.2f}M records/s, {a.exporters} exporters polled {polled / 1e6:.2f}M records/s "
          f"(ratio {polled / none:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
