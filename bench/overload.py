"""Overload and scans: the whole service (`brokerwatch run`) offered more than it can take, and a scan.

1. Overload: pub/sub NetFlow v5 (512k pairs over a day of data time, as bench/receive_under_analysis.py) at
   --rate records/s (default 2M/s, about twice the loss-free rate measured there) for --seconds (default 60), with
   analysis every 2 s. The service must stay up, keep its memory under the bounds it was given (the channel's
   --channel-mb on the receive side, --window-rows on the analytics side), count every drop where it happens
   (kernel socket, channel), and the counts must add up: offered = reached + channel drops + kernel drops.
2. Scan: --scan-pairs distinct pairs (default 10M), one record each, at --scan-rate (default 500k/s).
Both runs carry one beacon throughout (a client every ~120 s of data time with 20 % jitter to an unlisted broker);
it must still be alerted on.

    .venv/bin/python bench/overload.py [--rate 2000000 --seconds 60] [--scan-pairs 10000000 --scan-rate 500000]
"""

from __future__ import annotations

import argparse
import socket
import struct
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from bench.e2e_udp import Workload, pace, run_brokerwatch  # noqa: E402
from bench.receive_under_analysis import DAY, T0, pubsub_datagrams  # noqa: E402

BEACON = ("10.250.0.7", "198.51.100.200", 1883)
HEAD = struct.Struct(">HHIIIIBBH")
REC = struct.Struct(">IIIHHIIIIHHBBBBHHBBH")


def _ip(text: str) -> int:
    return int.from_bytes(socket.inet_aton(text), "big")


def beacon_datagram(t_s: int) -> bytes:
    """One v5 record of the beacon, exported at data time t_s (the record starts 200 ms before)."""
    rec = REC.pack(_ip(BEACON[0]), _ip(BEACON[1]), 0, 1, 2, 4, 420, 99_800, 99_900, 40_000 + t_s % 20_000,
                   BEACON[2], 0, 0x1B, 6, 0, 0, 0, 0, 0, 0)
    return HEAD.pack(5, 1, 100_000, t_s, 0, 0, 0, 0, 0) + rec


def scan_datagrams(pairs: int) -> list[bytes]:
    """Distinct pairs, one record each, 30 to a datagram: sources 10.0.0.0/8 x 16 brokers x 1883."""
    out = []
    for d in range((pairs + 29) // 30):
        body = b"".join(REC.pack((10 << 24) | ((d * 30 + r) >> 4) % (1 << 24), (203 << 24) | (113 << 8) | (d * 30 + r) % 16,
                                 0, 1, 2, 2, 120, 99_000, 99_500, 50_000, 1883, 0, 0x1B, 6, 0, 0, 0, 0, 0, 0)
                        for r in range(30))
        out.append(HEAD.pack(5, 30, 100_000, T0, 0, 30 * d, 0, 0, 0) + body)
    return out


def beaconing_sender(total_seconds: float, random_order: bool):
    """Datagrams over one day of data time (export time stamped per send), with the beacon every ~120 s of data
    time (20 % jitter), sent from its own socket (its own exporter)."""

    def send(port: int, datagrams: list[bytes], rate_records: float, per: float, seconds: float) -> int:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
        b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        dest = ("127.0.0.1", port)
        bufs = [bytearray(d) for d in datagrams]
        order = (np.random.default_rng(5).integers(0, len(bufs), 1 << 22).tolist() if random_order else None)
        rng = np.random.default_rng(9)
        per_second = rate_records / per
        total = per_second * seconds
        pack = struct.Struct(">I").pack_into
        sent = 0
        next_beat = T0 + 30.0
        for due in pace(per_second, seconds):
            while sent < due:
                buf = bufs[order[sent & ((1 << 22) - 1)]] if order else bufs[sent % len(bufs)]
                t_data = T0 + DAY * sent / total
                pack(buf, 8, int(t_data))
                try:
                    s.sendto(buf, dest)
                except BlockingIOError:
                    continue
                sent += 1
                if t_data >= next_beat:
                    b.sendto(beacon_datagram(int(next_beat)), dest)
                    next_beat += 120.0 * (1 - 0.2 * rng.random())
        return sent

    return send


def report(name: str, f: dict, channel_mb: int, window_rows: int) -> None:
    """Print one run's figures and the checks."""
    kernel = max(0, f["dropped_by_kernel"])
    lost = f["offered"] - f["decoded"]
    beacon = any(p == BEACON for p in f["alert_pairs"])
    print(f"{name}: offered {f['offered']:,} records, reached the analytics process {f['records']:,} "
          f"({1 - f['records'] / max(f['offered'], 1):.2%} lost); dropped at the channel {f['dropped_channel']:,}, "
          f"by the kernel {kernel:,} datagrams; not decoded {lost:,} records")
    print(f"  receive peak RSS {f['receive_peak_mib']:.0f} MiB (channel bound {channel_mb} MiB); analytics peak RSS "
          f"{f['analytics_peak_mib']:.0f} MiB (budget {window_rows:,} rows); {f['passes']} passes, longest "
          f"{f['longest_pass_s']:.1f} s; stopped in {f['stop_s']:.1f} s; beacon alerted: {beacon}; "
          f"{len(f['alert_pairs'])} alerts")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=2_000_000)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--scan-pairs", type=int, default=10_000_000)
    ap.add_argument("--scan-rate", type=float, default=500_000)
    ap.add_argument("--channel-mb", type=int, default=1024)
    ap.add_argument("--window-rows", type=int, default=20_000_000)
    ap.add_argument("--skip", choices=["overload", "scan"], action="append", default=[])
    args = ap.parse_args()
    extra = ("--channel-mb", str(args.channel_mb), "--window-rows", str(args.window_rows))
    if "overload" not in args.skip:
        w = Workload("NetFlow v5 pub/sub", pubsub_datagrams())
        f = run_brokerwatch(w, args.rate, args.seconds, 2.0, extra, send=beaconing_sender(args.seconds, True))
        report(f"overload at {args.rate:,.0f} records/s for {args.seconds:g} s", f, args.channel_mb, args.window_rows)
    if "scan" not in args.skip:
        w = Workload("NetFlow v5 scan", scan_datagrams(args.scan_pairs))
        seconds = args.scan_pairs / args.scan_rate
        f = run_brokerwatch(w, args.scan_rate, seconds, 2.0, extra, send=beaconing_sender(seconds, False))
        report(f"scan of {args.scan_pairs:,} pairs at {args.scan_rate:,.0f} records/s", f, args.channel_mb,
               args.window_rows)


if __name__ == "__main__":
    main()
