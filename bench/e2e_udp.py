"""End to end on one core: UDP socket → decoded FlowBatch, against nfcapd (nfdump) and nfacctd (pmacct) in one run.

A sender process replays the same NetFlow export datagrams over loopback at a fixed rate to each receiver in turn;
each receiver runs alone on the other core. Figures per receiver: records offered, records stored/decoded, loss, the
receiver's CPU seconds, and records per CPU-second (the figure that does not depend on how busy the machine is).

    .venv/bin/python bench/e2e_udp.py [--rate 1000000] [--seconds 5] [--format v5|v9|ipfix]

The brokerwatch receiver is the whole service, `brokerwatch run`, analytics included (a pass every --cadence
seconds): records count when they reached the analytics process's channel, and CPU is read from /proc per role
(receive worker, analytics process) between "ready" and the stop. Records per CPU-second compare the receive
worker's CPU with the peers' (they do no analysis); the analytics process's CPU is printed beside it.
"""

from __future__ import annotations

import argparse
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


def pace(per_second: float, seconds: float):
    """Every ~0.5 ms for ``seconds``: how many datagrams should have been sent by now (1 ms ahead)."""
    chunk = max(1, int(per_second / 1000))
    t0 = time.perf_counter()
    while True:
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds:
            return
        yield int(elapsed * per_second) + chunk
        time.sleep(0.0005)


class MmsgSender:
    """Datagrams sent with sendmmsg(2) from connected sockets, many per system call: a sender that leaves the
    receivers most of a 2-core machine (the plain sendto loop takes most of a core at 2M records/s)."""

    def __init__(self, port: int, datagrams: list[bytes], exporters: int = 1):
        import ctypes
        import ctypes.util

        from collector.flows.receivers import _IoVec, _MMsgHdr

        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        self._send = libc.sendmmsg
        self._send.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
        self._keep = [ctypes.create_string_buffer(d, len(d)) for d in datagrams]
        k = len(datagrams)
        self._iov = (_IoVec * k)()
        self._msgs = (_MMsgHdr * k)()
        for i, buf in enumerate(self._keep):
            self._iov[i].iov_base = ctypes.addressof(buf)
            self._iov[i].iov_len = len(datagrams[i])
            self._msgs[i].msg_hdr.msg_iov = ctypes.addressof(self._iov[i])
            self._msgs[i].msg_hdr.msg_iovlen = 1
        self._size = ctypes.sizeof(_MMsgHdr)
        self._base = ctypes.addressof(self._msgs)
        self.socks = []
        for _ in range(exporters):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
            s.connect(("127.0.0.1", port))
            self.socks.append(s)
        self.k = k

    def send(self, first: int, n: int) -> int:
        """Send datagrams first .. first+n-1 of the round-robin (one run within one pass); returns how many went."""
        i = first % self.k
        n = min(n, self.k - i)
        sock = self.socks[(first // self.k) % len(self.socks)]
        got = self._send(sock.fileno(), self._base + i * self._size, n, 0)
        return max(got, 0)


def mmsg_sender(port: int, datagrams: list[bytes], rate_records: float, per: float, seconds: float,
                exporters: int = 1) -> int:
    """As ``sender``, through sendmmsg (``--fast-sender``)."""
    s = MmsgSender(port, datagrams, exporters)
    sent = 0
    for due in pace(rate_records / per, seconds):
        while sent < due:
            sent += s.send(sent, due - sent)
    return sent


def sender(port: int, datagrams: list[bytes], rate_records: float, per: float, seconds: float,
           exporters: int = 1) -> int:
    """Send datagrams round-robin at rate_records/s for seconds; returns datagrams sent. With several exporters
    (sockets, so source ports), each sends whole passes over the datagrams in turn (templates first)."""
    socks = []
    for _ in range(exporters):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
        socks.append(s)
    dest = ("127.0.0.1", port)
    sent = 0
    k = len(datagrams)
    for due in pace(rate_records / per, seconds):
        while sent < due:
            try:
                socks[(sent // k) % exporters].sendto(datagrams[sent % k], dest)
            except BlockingIOError:
                continue
            sent += 1
    return sent


def tree_cpu(pid: int, analytics_pid: int = -1) -> dict[int, tuple[str, float, int]]:
    """CPU seconds and peak RSS (KiB) of a process and all its descendants, by pid, read from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    out, todo = {}, [pid]
    while todo:
        p = todo.pop()
        try:
            stat = open(f"/proc/{p}/stat").read()
            name = open(f"/proc/{p}/cmdline", "rb").read().split(b"\0")
            hwm = next((int(line.split()[1]) for line in open(f"/proc/{p}/status") if line.startswith("VmHWM")), 0)
            for t in os.listdir(f"/proc/{p}/task"):
                todo.extend(int(c) for c in open(f"/proc/{p}/task/{t}/children").read().split())
        except (OSError, ValueError):
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        label = "analytics" if p == analytics_pid else "receive"
        if b"resource_tracker" in b" ".join(name):
            label = "tracker"
        out[p] = (label, (int(fields[11]) + int(fields[12])) / tick, hwm)
    return out


class Service:
    """`brokerwatch run` (the whole service: receive worker(s) and the analytics process) on free loopback ports."""

    def __init__(self, cadence: float = 2.0, extra: tuple = (), env: dict | None = None):
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="bench-bw-")
        ports = [free_port() for _ in range(3)]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "collector.cli", "run", "--listen", "127.0.0.1", "--netflow-port", str(self.port),
             "--ipfix-port", str(ports[0]), "--sflow-port", str(ports[1]), "--syslog-port", str(ports[2]),
             "--alerts", str(Path(self.dir) / "alerts.jsonl"), "--state", "", "--cadence", str(cadence), *extra],
            cwd=self.dir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            env=dict(os.environ, PYTHONPATH=str(REPO), **(env or {})))
        self.log = []
        t0 = time.monotonic()
        while True:
            line = self.proc.stderr.readline()
            if not line:
                raise RuntimeError("brokerwatch did not start:\n" + "".join(self.log))
            self.log.append(line)
            if "ready in" in line:
                break
        self.ready_s = time.monotonic() - t0
        import re

        self.analytics_pid = int(re.search(r"analytics in process (\d+)", line).group(1))
        self.cpu0 = tree_cpu(self.proc.pid, self.analytics_pid)

    def stop(self) -> dict:
        """CPU used since ready (per role), then SIGTERM; the summary's figures."""
        cpu1 = tree_cpu(self.proc.pid, self.analytics_pid)
        by_role: dict[str, float] = {}
        hwm: dict[str, int] = {}
        for pid, (label, cpu, peak) in cpu1.items():
            by_role[label] = by_role.get(label, 0.0) + cpu - self.cpu0.get(pid, (label, 0.0, 0))[1]
            hwm[label] = max(hwm.get(label, 0), peak)
        self.proc.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        _, err = self.proc.communicate(timeout=600)
        stop_s = time.monotonic() - t0
        err = "".join(self.log) + err
        import ast
        import re

        lines = re.findall(r"stopped after (\d+) datagrams; records (\{.*?\}); rejected (\{.*?\}); dropped (\d+); "
                           r"delivered (\d+); kernel drops (-?\d+)(?:; alerts (\d+); analytics passes (\d+) \(longest ([\d.]+) s\))?", err)
        if not lines:
            raise RuntimeError("no summary from brokerwatch:\n" + err[-3000:])
        records = sum(sum(ast.literal_eval(m[1]).values()) for m in lines)
        dropped = sum(int(m[3]) for m in lines)
        main = lines[-1]
        alert_pairs = []
        try:
            for line in open(Path(self.dir) / "alerts.jsonl"):
                a = json.loads(line)
                alert_pairs.append((a["source"]["ip"], a["destination"]["ip"], a["destination"]["port"]))
        except OSError:
            pass
        kernel = sum(max(0, int(m[5])) for m in lines)
        shutil.rmtree(self.dir, ignore_errors=True)
        return {"records": records - dropped, "decoded": records, "dropped_channel": dropped,
                "cpu_s": by_role.get("receive", 0.0), "analytics_cpu_s": by_role.get("analytics", 0.0),
                "analytics_peak_mib": hwm.get("analytics", 0) / 1024, "receive_peak_mib": hwm.get("receive", 0) / 1024,
                "alerts": int(main[6] or 0), "passes": int(main[7] or 0), "longest_pass_s": float(main[8] or 0),
                "stop_s": stop_s, "ready_s": self.ready_s, "dropped_by_kernel": kernel,
                "delivered": sum(int(m[4]) for m in lines), "alert_pairs": alert_pairs}


def run_brokerwatch(w: "Workload", rate, seconds, cadence: float = 2.0, extra: tuple = (),
                    send=None, exporters: tuple = (), env: dict | None = None) -> dict:
    """The whole service, analysis every ``cadence`` seconds; records counted are those that reached the
    analytics channel (decoded minus dropped at the channel)."""
    svc = Service(cadence, extra, env)
    sent = (send or sender)(svc.port, w.datagrams, rate, w.per, seconds, *exporters)
    time.sleep(0.5)
    fig = svc.stop()
    fig.update(offered=w.offered(sent), name="brokerwatch run (whole service)")
    if fig["dropped_channel"] or fig.get("dropped_by_kernel", 0) > 0:
        print(f"brokerwatch: channel drops {fig['dropped_channel']}, kernel drops {fig['dropped_by_kernel']}")
    return fig


def run_nfcapd(w: "Workload", rate, seconds, exporters: int = 1, send=None) -> dict | None:
    if not shutil.which("nfcapd"):
        return None
    port = free_port()
    d = tempfile.mkdtemp(prefix="bench-nfcapd-")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.Popen(["nfcapd", "-b", "127.0.0.1", "-p", str(port), "-w", d, "-t", "3600",
                             "-B", str(32 << 20)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    sent = (send or sender)(port, w.datagrams, rate, w.per, seconds, exporters)
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


def run_nfacctd(w: "Workload", rate, seconds, exporters: int = 1, send=None) -> dict | None:
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
    sent = (send or sender)(port, w.datagrams, rate, w.per, seconds, exporters)
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
    ap.add_argument("--cadence", type=float, default=2.0, help="brokerwatch's analysis cadence (default 2 s)")
    ap.add_argument("--workers", type=int, default=1, help="brokerwatch receive workers (default 1)")
    ap.add_argument("--no-peers", action="store_true", help="brokerwatch only")
    ap.add_argument("--fast-sender", action="store_true",
                    help="send with sendmmsg(2) (less of the machine's CPU for the sender; for --workers runs)")
    ap.add_argument("--cold", action="store_true",
                    help="start brokerwatch with an empty NUMBA_CACHE_DIR (cold start: it compiles before it is ready)")
    ap.add_argument("--exporters", type=int, default=1,
                    help="sending sockets (source ports): SO_REUSEPORT spreads exporters, not datagrams (default 1)")
    ap.add_argument("--format", choices=sorted(FORMATS), default="v5",
                    help="v5: synthetic 30-record datagrams; v9, ipfix: softflowd's exports in fixtures/")
    args = ap.parse_args()
    w = FORMATS[args.format]()
    print(f"{w.name}, {w.per:.1f} records/datagram, {args.rate:,.0f} records/s offered for {args.seconds:g} s over "
          f"loopback; one receiver at a time")
    env = {"NUMBA_CACHE_DIR": tempfile.mkdtemp(prefix="bench-cold-numba-")} if args.cold else None
    send = mmsg_sender if args.fast_sender else None
    results = [run_brokerwatch(w, args.rate, args.seconds, args.cadence, ("--workers", str(args.workers)),
                               exporters=(args.exporters,), env=env, send=send)]
    for peer in () if args.no_peers else (run_nfcapd, run_nfacctd):
        fig = peer(w, args.rate, args.seconds, args.exporters, send)
        if fig:
            results.append(fig)
    print(f"{'receiver':44} {'offered':>11} {'received':>11} {'loss':>7} {'cpu s':>7} {'records/cpu-s':>14}")
    for f in results:
        loss = 1 - f["records"] / f["offered"] if f["offered"] else 0
        per_cpu = f["records"] / f["cpu_s"] if f["cpu_s"] else float("nan")
        print(f"{f['name']:44} {f['offered']:>11,} {f['records']:>11,} {loss:>7.2%} {f['cpu_s']:>7.2f} "
              f"{per_cpu:>14,.0f}")
    bw = results[0]
    print(f"brokerwatch analytics process: {bw['analytics_cpu_s']:.2f} CPU s, {bw['passes']} passes (longest "
          f"{bw['longest_pass_s']:.3f} s), peak RSS {bw['analytics_peak_mib']:.0f} MiB; receive peak RSS "
          f"{bw['receive_peak_mib']:.0f} MiB; ready {bw['ready_s']:.1f} s after start, stopped in {bw['stop_s']:.1f} s")
    for f in results[1:]:
        if f["cpu_s"] and bw["cpu_s"]:
            ratio = (bw["records"] / bw["cpu_s"]) / (f["records"] / f["cpu_s"]) if f["records"] else float("inf")
            print(f"brokerwatch records per CPU-second vs {f['name']}: {ratio:.2f}x")


if __name__ == "__main__":
    main()
