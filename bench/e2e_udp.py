"""End to end on one core: UDP socket → decoded FlowBatch, against nfcapd (nfdump) and nfacctd (pmacct) in one run.

A sender process replays the same NetFlow export datagrams over loopback at a fixed rate to each receiver in turn;
each receiver runs alone on the other core. Figures per receiver: records offered, records stored/decoded, loss, the
receiver's CPU seconds, and records per CPU-second (the figure that does not depend on how busy the machine is).

    .venv/bin/python bench/e2e_udp.py [--rate 1000000] [--seconds 5] [--format v5|v9|ipfix]

The brokerwatch receiver is the service's own receive path (socket, UdpReceiver reading into one buffer on uvloop,
FlowPipeline with its batched numba decode), with the bus replaced by a row counter.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def free_port() -> int:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def v5_datagrams(n_distinct: int = 64) -> tuple[list[bytes], int]:
    """Distinct 30-record v5 datagrams (sequence numbers consecutive) and the records in each."""
    from tests.collector.flows.test_netflow_v5 import v5_datagram

    out = []
    for i in range(n_distinct):
        recs = [dict(src=f"192.0.2.{(i + r) % 250 + 1}", dst=f"203.0.113.{r + 1}", sport=1024 + r, dport=1883,
                     proto=6, pkts=3 + r, octets=200 + 10 * r, first=50_000 + r, last=60_000 + r)
                for r in range(30)]
        out.append(v5_datagram(recs, uptime_ms=100_000, unix_secs=1_700_000_000 + i, seq=30 * i))
    return out, 30


class Workload:
    """Datagrams replayed round-robin, with the records and packets each one carries (decoded once, in order)."""

    def __init__(self, name: str, datagrams: list[bytes]):
        from analytics.schema import FlowBatchBuilder
        from collector.flows.decoders import FlowDecoders

        self.name = name
        self.datagrams = datagrams
        dec = FlowDecoders()
        self.records, self.packets = [], []
        for d in datagrams:
            b = FlowBatchBuilder(64)
            self.records.append(dec.decode(d, (0, 1), 0, b))
            self.packets.append(int(b.build().packets.sum()))
        self.per = sum(self.records) / len(datagrams)  # mean records per datagram

    def offered(self, sent: int) -> int:
        """Records in the first ``sent`` datagrams of the round-robin."""
        k = len(self.datagrams)
        return (sent // k) * sum(self.records) + sum(self.records[: sent % k])

    def records_from_packets(self, packets: int) -> int:
        """Records that a packet total stands for (for a collector that only keeps aggregates)."""
        return round(packets * sum(self.records) / sum(self.packets))

    @staticmethod
    def from_fixture(name: str, path: Path) -> "Workload":
        from collector.pcap import datagrams

        return Workload(name, [d.payload for d in datagrams(str(path))])


def sender(port: int, datagrams: list[bytes], rate_records: float, per: float, seconds: float) -> int:
    """Send datagrams round-robin at rate_records/s for seconds; returns datagrams sent."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
    dest = ("127.0.0.1", port)
    per_second = rate_records / per
    chunk = max(1, int(per_second / 1000))  # pace in 1 ms steps
    sent = 0
    t0 = time.perf_counter()
    k = len(datagrams)
    while True:
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds:
            break
        due = int(elapsed * per_second) + chunk
        while sent < due:
            try:
                s.sendto(datagrams[sent % k], dest)
            except BlockingIOError:
                continue
            sent += 1
        time.sleep(0.0005)
    return sent


def brokerwatch_receiver(port: int, ready_fd: int) -> None:
    """Child process: the service's receive path, counting decoded rows; prints JSON figures on SIGTERM."""
    import uvloop

    from collector.pipeline import FlowPipeline
    from collector.flows.receivers import UdpReceiver, make_receiver, udp_socket

    rows = [0]
    start_cpu = [0.0]
    pipeline = FlowPipeline(lambda b: rows.__setitem__(0, rows[0] + len(b)))

    async def main():
        loop = asyncio.get_running_loop()
        receiver = make_receiver(udp_socket("127.0.0.1", port), pipeline)
        receiver.attach(loop)
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)

        async def tick():
            while True:
                await asyncio.sleep(0.2)
                receiver.flush()
                pipeline.flush()

        t = asyncio.create_task(tick())
        ru0 = resource.getrusage(resource.RUSAGE_SELF)
        start_cpu[0] = ru0.ru_utime + ru0.ru_stime  # start-up (imports, JIT cache load) is not receive work
        os.write(ready_fd, b"1")
        await stop.wait()
        t.cancel()
        receiver.close(loop)
        pipeline.flush()

    # warm the JIT cache before measuring
    from bench.e2e_udp import v5_datagrams as _d
    from analytics.schema import FlowBatchBuilder

    pipeline.decoders.decode_many(_d(2)[0], [(0, 1)] * 2, 0, FlowBatchBuilder(128))
    for fx in ("netflow_v9", "ipfix"):
        from collector.pcap import datagrams as _dg

        warm = [d.payload for d in _dg(str(REPO / "fixtures" / fx / "softflowd_beacon_world.pcap"))]
        pipeline.decoders.decode_many(warm, [(0, 2)] * len(warm), 0, FlowBatchBuilder(1024))
    pipeline.decoders = type(pipeline.decoders)(pipeline.counters)  # measured run starts with no templates
    uvloop.run(main())
    ru = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"records": rows[0], "cpu_s": ru.ru_utime + ru.ru_stime - start_cpu[0],
                      "rejected": pipeline.decoders.rejected(),
                      "dropped_by_kernel": _udp_drops(port)}), flush=True)


def _udp_drops(port: int) -> int:
    """Datagrams the kernel dropped on the socket bound to port (/proc/net/udp 'drops' column), -1 if unknown."""
    try:
        for line in open("/proc/net/udp").read().splitlines()[1:]:
            cols = line.split()
            if int(cols[1].split(":")[1], 16) == port:
                return int(cols[-1])
    except (OSError, ValueError, IndexError):
        pass
    return -1


def run_brokerwatch(w: "Workload", rate, seconds) -> dict:
    port = free_port()
    ready_r, ready_w = os.pipe()
    proc = subprocess.Popen([sys.executable, "-c",
                             f"import sys; sys.path.insert(0, {str(REPO)!r}); from bench.e2e_udp import "
                             f"brokerwatch_receiver; brokerwatch_receiver({port}, {ready_w})"],
                            pass_fds=(ready_w,), stdout=subprocess.PIPE, text=True)
    os.close(ready_w)
    try:
        if os.read(ready_r, 1) != b"1":
            raise RuntimeError("the brokerwatch receiver did not start")
        sent = sender(port, w.datagrams, rate, w.per, seconds)
        time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    fig = json.loads(out.strip().splitlines()[-1])
    fig.update(offered=w.offered(sent), name="brokerwatch (recvmmsg + numba batch)")
    if fig.get("rejected") or fig.get("dropped_by_kernel", 0) > 0:
        print(f"brokerwatch: rejected {fig['rejected']}, kernel drops {fig['dropped_by_kernel']}")
    return fig


def run_nfcapd(w: "Workload", rate, seconds) -> dict | None:
    if not shutil.which("nfcapd"):
        return None
    port = free_port()
    d = tempfile.mkdtemp(prefix="bench-nfcapd-")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.Popen(["nfcapd", "-b", "127.0.0.1", "-p", str(port), "-w", d, "-t", "3600",
                             "-B", str(32 << 20)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    sent = sender(port, w.datagrams, rate, w.per, seconds)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    files = [str(p) for p in Path(d).rglob("nfcapd.*")]
    records = 0
    for f in files:
        out = subprocess.run(["nfdump", "-r", f, "-I"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.startswith("Flows:"):
                records += int(line.split(":")[1])
    shutil.rmtree(d, ignore_errors=True)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return {"name": "nfcapd (nfdump, C)", "offered": w.offered(sent), "records": records, "cpu_s": cpu}


def run_nfacctd(w: "Workload", rate, seconds) -> dict | None:
    if not shutil.which("nfacctd"):
        return None
    port = free_port()
    d = tempfile.mkdtemp(prefix="bench-nfacctd-")
    conf = Path(d) / "nfacctd.conf"
    conf.write_text(f"nfacctd_ip: 127.0.0.1\nnfacctd_port: {port}\nplugins: print\n"
                    f"aggregate: src_host,dst_host,src_port,dst_port,proto\nprint_output: csv\n"
                    f"print_output_file: {d}/out.csv\nprint_refresh_time: 3600\nnfacctd_pipe_size: {32 << 20}\n"
                    f"nfacctd_time_new: true\n")
    keep = os.environ.get("BENCH_KEEP")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.Popen(["nfacctd", "-f", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.5)
    sent = sender(port, w.datagrams, rate, w.per, seconds)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    records = 0
    out = Path(d) / "out.csv"
    if out.exists():
        import csv

        with open(out) as f:
            rdr = csv.DictReader(f)
            packets = sum(int(row["PACKETS"]) for row in rdr)
        # nfacctd keeps aggregates only; the packet total tells how many records it took in.
        records = w.records_from_packets(packets)
    if not keep:
        shutil.rmtree(d, ignore_errors=True)
    else:
        print("kept", d)
    return {"name": "nfacctd (pmacct, C)", "offered": w.offered(sent), "records": records, "cpu_s": cpu,
            "note": "aggregated; records derived from packet totals"}


FORMATS = {
    "v5": lambda: Workload("NetFlow v5", v5_datagrams()[0]),
    "v9": lambda: Workload.from_fixture("NetFlow v9 (softflowd)",
                                        REPO / "fixtures" / "netflow_v9" / "softflowd_beacon_world.pcap"),
    "ipfix": lambda: Workload.from_fixture("IPFIX (softflowd)",
                                           REPO / "fixtures" / "ipfix" / "softflowd_beacon_world.pcap"),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=1_000_000, help="records/s offered (default 1M)")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--format", choices=sorted(FORMATS), default="v5",
                    help="v5: synthetic 30-record datagrams; v9, ipfix: softflowd's exports in fixtures/")
    args = ap.parse_args()
    w = FORMATS[args.format]()
    print(f"{w.name}, {w.per:.1f} records/datagram, {args.rate:,.0f} records/s offered for {args.seconds:g} s over "
          f"loopback; one receiver at a time")
    results = [run_brokerwatch(w, args.rate, args.seconds)]
    for peer in (run_nfcapd, run_nfacctd):
        fig = peer(w, args.rate, args.seconds)
        if fig:
            results.append(fig)
    print(f"{'receiver':44} {'offered':>11} {'received':>11} {'loss':>7} {'cpu s':>7} {'records/cpu-s':>14}")
    for f in results:
        loss = 1 - f["records"] / f["offered"] if f["offered"] else 0
        per_cpu = f["records"] / f["cpu_s"] if f["cpu_s"] else float("nan")
        print(f"{f['name']:44} {f['offered']:>11,} {f['records']:>11,} {loss:>7.2%} {f['cpu_s']:>7.2f} "
              f"{per_cpu:>14,.0f}")
    bw = results[0]
    for f in results[1:]:
        if f["cpu_s"] and bw["cpu_s"]:
            ratio = (bw["records"] / bw["cpu_s"]) / (f["records"] / f["cpu_s"]) if f["records"] else float("inf")
            print(f"brokerwatch records per CPU-second vs {f['name']}: {ratio:.2f}x")


if __name__ == "__main__":
    main()
