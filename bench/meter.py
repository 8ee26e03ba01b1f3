"""The flow meter: packets/s from a capture beside softflowd and tshark on the same file, and live capture loss.

    .venv/bin/python bench/meter.py [--packets 2000000] [--flows 50000] [--live-seconds 5] [--no-live]

1. Writes an IMIX capture (Ethernet/IPv4/TCP; frames of 64, 576 and 1500 bytes in the ratio 7:4:1, each flow
   opened by a SYN) of --packets frames over --flows flows, then times on that one file, in this run:
   - brokerwatch's meter alone (``meter_file``: frame parsing and the flow table, numba);
   - the meter with its L7 stage and rows (``TrafficMeter``, in this process);
   - ``brokerwatch decode --count`` (reading, meter, L7 stage, rows), as a user runs it;
   - softflowd 1.x reading the file (``-r``, IPFIX to a UDP socket nobody reads; the same flow table work);
   - tshark's conversation table (``-q -z conv,tcp``), the nearest thing tshark has to a flow meter.
   The kernels are compiled (or loaded from the numba cache) on a small file first.
2. Live (root; skipped with the reason otherwise): a network namespace with a veth pair; a sender writes IMIX frames
   on one end through an AF_PACKET socket for --live-seconds as fast as Python sends them, and
   ``python -m collector.flows.capture`` meters the other end from its TPACKET_V3 ring. Prints frames sent,
   captured, the kernel's ring drops and the loss.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

IMIX = ((64, 7), (576, 4), (1500, 1))


def imix_frames(n: int, flows: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """n Ethernet/IPv4/TCP frames over `flows` flows (uint8 buffer, lengths); each flow's first frame is a SYN."""
    rng = np.random.default_rng(seed)
    sizes = np.repeat([s for s, _ in IMIX], [k for _, k in IMIX])
    lens = sizes[rng.integers(0, len(sizes), n)].astype(np.int64)
    flow = rng.integers(0, flows, n)
    offs = np.zeros(n, np.int64)
    np.cumsum(lens[:-1], out=offs[1:])
    buf = np.zeros(int(lens.sum()), np.uint8)
    eth = np.frombuffer(bytes.fromhex("0200000000fe020000000001") + b"\x08\x00", np.uint8)
    for k in range(14):
        buf[offs + k] = eth[k]
    ip = offs + 14
    total = lens - 14
    buf[ip] = 0x45
    buf[ip + 2] = total >> 8
    buf[ip + 3] = total & 0xFF
    buf[ip + 8] = 64
    buf[ip + 9] = 6
    # documentation addresses only (RFC 5737): clients 198.51.100.x, servers 192.0.2.x
    cli = ((flow // 200) % 256).astype(np.int64)
    buf[ip + 12], buf[ip + 13], buf[ip + 14], buf[ip + 15] = 198, 51, 100, cli
    buf[ip + 16], buf[ip + 17], buf[ip + 18], buf[ip + 19] = 192, 0, 2, (flow % 200).astype(np.uint8)
    reply = rng.random(n) < 0.4  # some frames go server -> client
    for k in range(4):
        a, b = buf[ip + 12 + k].copy(), buf[ip + 16 + k].copy()
        buf[ip + 12 + k] = np.where(reply, b, a)
        buf[ip + 16 + k] = np.where(reply, a, b)
    tcp = ip + 20
    sport = 32768 + (flow % 28000)
    dport = np.array([1883, 8883, 443, 5672, 61613])[flow % 5]
    p1, p2 = np.where(reply, dport, sport), np.where(reply, sport, dport)
    buf[tcp], buf[tcp + 1], buf[tcp + 2], buf[tcp + 3] = p1 >> 8, p1 & 255, p2 >> 8, p2 & 255
    buf[tcp + 12] = 0x50
    first = np.zeros(n, bool)
    first[np.unique(flow, return_index=True)[1]] = True
    buf[tcp + 13] = np.where(first, 0x02, 0x18)
    return buf, lens


def write_pcap(path: Path, buf: np.ndarray, lens: np.ndarray, pps: float = 100_000.0) -> None:
    """A pcap of the frames, one every 1/pps s of virtual time."""
    n = len(lens)
    t0 = 1_768_435_200
    usec = (np.arange(n) * (1e6 / pps)).astype(np.int64)
    hdr = np.zeros((n, 4), "<u4")
    hdr[:, 0] = t0 + usec // 1_000_000
    hdr[:, 1] = usec % 1_000_000
    hdr[:, 2] = lens
    hdr[:, 3] = lens
    offs = np.zeros(n, np.int64)
    np.cumsum(lens[:-1], out=offs[1:])
    with open(path, "wb") as f:
        f.write(np.array([0xA1B2C3D4], "<u4").tobytes() + np.array([2, 4], "<u2").tobytes() +
                np.array([0, 0, 65535, 1], "<u4").tobytes())
        for s in range(0, n, 100_000):
            e = min(n, s + 100_000)
            parts = []
            for i in range(s, e):
                parts.append(hdr[i].tobytes())
                parts.append(buf[offs[i]:offs[i] + lens[i]].tobytes())
            f.write(b"".join(parts))


def timed(cmd: list[str], **kw) -> float:
    """Wall-clock seconds of a command run to its end."""
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)
    return time.perf_counter() - t


def file_bench(packets: int, flows: int, work: Path) -> None:
    """Packets/s of the meter, decode, softflowd and tshark on one IMIX capture; printed."""
    from collector.flows.meter import MeterParams, meter_file

    path = work / "imix.pcap"
    buf, lens = imix_frames(packets, flows)
    write_pcap(path, buf, lens)
    small = work / "small.pcap"
    b2, l2 = imix_frames(2000, 100)
    write_pcap(small, b2, l2)
    meter_file(str(small))  # compile or load the kernels
    subprocess.run([sys.executable, "-m", "collector.cli", "decode", "--count", str(small)], check=True,
                   stdout=subprocess.DEVNULL, cwd=REPO)
    print(f"capture: {packets} frames (IMIX 64/576/1500 x 7:4:1), {flows} flows, "
          f"{path.stat().st_size >> 20} MiB", flush=True)
    rows = []
    t = time.perf_counter()
    out, meter = meter_file(str(path), MeterParams(max_flows=262144))
    rows.append(("brokerwatch meter (parse + flow table)", time.perf_counter() - t, len(out)))
    from analytics.schema import FlowBatchBuilder
    from collector.flows.traffic import TrafficMeter
    from collector.pcap import frame_blocks

    t = time.perf_counter()
    tm, builder = TrafficMeter(), FlowBatchBuilder(1 << 16)
    for block in frame_blocks(str(path)):
        tm.feed(block, builder)
        builder.reset()
    tm.finish(builder)
    rows.append(("brokerwatch meter + L7 stage + rows, in process", time.perf_counter() - t, None))
    t = timed([sys.executable, "-m", "collector.cli", "decode", "--count", str(path)], cwd=REPO)
    rows.append(("brokerwatch decode --count (a new process)", t, None))
    sfd = shutil.which("softflowd") or "/usr/sbin/softflowd"
    if os.path.exists(sfd):
        sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sink.bind(("127.0.0.1", 0))
        port = sink.getsockname()[1]
        t = timed([sfd, "-d", "-r", str(path), "-n", f"127.0.0.1:{port}", "-v", "10", "-m", "262144"])
        sink.close()
        rows.append(("softflowd -r (IPFIX export)", t, None))
    tshark = shutil.which("tshark")
    if tshark:
        rows.append(("tshark -q -z conv,tcp", timed([tshark, "-r", str(path), "-q", "-z", "conv,tcp"]), None))
    base = next((s for name, s, _ in rows if name.startswith("softflowd")), None)
    for name, secs, nflows in rows:
        rate = packets / secs
        ratio = f"  {base / secs:5.2f}x softflowd" if base else ""
        extra = f"  ({nflows} flows)" if nflows is not None else ""
        print(f"  {name:46s} {secs:7.2f} s  {rate / 1e6:6.2f} M packets/s{ratio}{extra}", flush=True)


SENDER = """
import socket, sys, time
import numpy as np
sys.path.insert(0, sys.argv[3])
from bench.meter import imix_frames
buf, lens = imix_frames(200_000, 5000, seed=2)
offs = np.zeros(len(lens), np.int64); np.cumsum(lens[:-1], out=offs[1:])
frames = [buf[o:o + n].tobytes() for o, n in zip(offs.tolist(), lens.tolist())]
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((sys.argv[1], 0))
s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
end = time.monotonic() + float(sys.argv[2])
sent = 0
while time.monotonic() < end:
    for f in frames[:20000]:
        s.send(f)
    sent += 20000
    frames = frames[20000:] + frames[:20000]
print(sent)
"""


@contextmanager
def veth_namespace(prefix: str = "bwmeter"):
    """A network namespace of our own holding a veth pair v0 <-> v1 with no IPv6 (its neighbour discovery would add
    frames); yields its name, deletes it after. RuntimeError (with the reason) where namespaces cannot be made."""
    name = f"{prefix}{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if made.returncode != 0:
        raise RuntimeError(f"no network namespace here: {made.stderr.strip()}")
    try:
        subprocess.run(["ip", "netns", "exec", name, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1",
                        "net.ipv6.conf.default.disable_ipv6=1"], check=True)
        for cmd in (["link", "add", "v0", "type", "veth", "peer", "name", "v1"], ["link", "set", "v0", "up"],
                    ["link", "set", "v1", "up"]):
            subprocess.run(["ip", "-n", name, *cmd], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name])


def live_bench(seconds: float, work: Path) -> None:
    """IMIX frames sent on a veth pair in a namespace for `seconds`, metered live from the other end; loss printed."""
    try:
        ns = veth_namespace("bwbench")
        name = ns.__enter__()
    except RuntimeError as exc:
        print(f"live capture: skipped, {exc}")
        return
    try:
        ready = work / "ready"
        cap = subprocess.Popen(["ip", "netns", "exec", name, sys.executable, "-m", "collector.flows.capture", "v1",
                                "--seconds", str(seconds + 4), "--ready", str(ready)], stdout=subprocess.PIPE,
                               cwd=REPO, text=True)
        while not ready.exists():
            time.sleep(0.05)
        sent = int(subprocess.run(["ip", "netns", "exec", name, sys.executable, "-c", SENDER, "v0", str(seconds),
                                   str(REPO)], capture_output=True, text=True, check=True).stdout)
        got = json.loads(cap.communicate(timeout=300)[0])
        lost = sent - got["frames"]
        print(f"live capture (veth in a network namespace, TPACKET_V3): sent {sent} IMIX frames in {seconds:g} s "
              f"({sent / seconds / 1e3:.0f} k frames/s, the Python sender's pace); captured {got['frames']}, "
              f"kernel ring drops {got['kernel_drops']}; loss {lost} ({100 * lost / max(sent, 1):.3f} %); "
              f"{got['flows']} flows; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (the "
              f"sender, the veth and the capture share them)", flush=True)
    finally:
        ns.__exit__(None, None, None)


def main() -> int:
    """Command line (see the module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--packets", type=int, default=2_000_000)
    ap.add_argument("--flows", type=int, default=50_000)
    ap.add_argument("--live-seconds", type=float, default=5.0)
    ap.add_argument("--no-live", action="store_true")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        file_bench(a.packets, a.flows, Path(d))
        if not a.no_live:
            live_bench(a.live_seconds, Path(d))
    return 0


if __name__ == "__main__":
    sys.exit(main())
