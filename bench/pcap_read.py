"""Reading exported datagrams out of a capture: brokerwatch's plain reader against scapy, in one run.

    .venv/bin/python bench/pcap_read.py [--datagrams 100000]

Writes a pcap of NetFlow v5 export datagrams (Ethernet/IPv4/UDP, 30 records each), then times getting every UDP
payload with its addresses out of it: collector.pcap.datagrams, scapy's PcapReader (an object tree per packet),
and scapy's RawPcapReader (raw frames, still to be unwrapped). Also prints the decode that follows
(`brokerwatch decode --count` work), so one can see whether reading is the bottleneck.
"""

from __future__ import annotations

import argparse
import struct
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def write_capture(path: Path, n: int) -> None:
    from bench.e2e_udp import v5_datagrams

    payloads, _ = v5_datagrams(64)
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for i in range(n):
            p = payloads[i % len(payloads)]
            udp = struct.pack(">HHHH", 40000, 2055, 8 + len(p), 0) + p
            ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), i & 0xFFFF, 0, 64, 17, 0,
                             bytes([192, 0, 2, 1]), bytes([192, 0, 2, 2])) + udp
            frame = b"\x00" * 12 + b"\x08\x00" + ip
            f.write(struct.pack("<IIII", 1_700_000_000 + i // 1000, i % 1000 * 1000, len(frame), len(frame)))
            f.write(frame)


def timed(fn) -> tuple[float, int]:
    t = time.perf_counter()
    n = fn()
    return time.perf_counter() - t, n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datagrams", type=int, default=100_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "v5.pcap"
        write_capture(path, args.datagrams)
        from collector.pcap import datagrams

        def ours() -> int:
            return sum(1 for _ in datagrams(str(path)))

        def scapy_objects() -> int:
            from scapy.layers.inet import IP, UDP
            from scapy.utils import PcapReader

            n = 0
            with PcapReader(str(path)) as r:
                for pkt in r:
                    if UDP in pkt:
                        _ = (pkt[IP].src, pkt[UDP].sport, bytes(pkt[UDP].payload))
                        n += 1
            return n

        def scapy_raw() -> int:
            from scapy.utils import RawPcapReader

            n = 0
            with RawPcapReader(str(path)) as r:
                for frame, _meta in r:
                    n += frame[23] == 17
            return n

        def decode_count() -> int:
            from collector.inputs import OfflineSource

            return sum(len(b) for b in OfflineSource().batches([str(path)]))

        decode_count()  # JIT cache warm-up
        print(f"{args.datagrams:,} NetFlow v5 datagrams in one pcap ({path.stat().st_size / 1e6:.0f} MB)")
        rows = []
        for name, fn in [("collector.pcap.datagrams", ours), ("scapy RawPcapReader (frames only)", scapy_raw),
                         ("scapy PcapReader (packet objects)", scapy_objects),
                         ("brokerwatch read + decode (records)", decode_count)]:
            sample = fn if name != "scapy PcapReader (packet objects)" else None
            if sample is None:  # scapy objects are slow: time a tenth and scale
                small = Path(d) / "small.pcap"
                write_capture(small, args.datagrams // 10)
                path_backup, path = path, small
                dt, n = timed(fn)
                path = path_backup
                dt, n = dt * 10, n * 10
            else:
                dt, n = timed(fn)
            rows.append((name, n, dt))
        base = rows[0][2]
        print(f"{'reader':40} {'items':>10} {'seconds':>8} {'items/s':>12} {'vs ours':>8}")
        for name, n, dt in rows:
            print(f"{name:40} {n:>10,} {dt:>8.2f} {n / dt:>12,.0f} {dt / base:>7.1f}x")


if __name__ == "__main__":
    main()
