"""Receive under analysis: the whole service (`brokerwatch run`) offered pub/sub NetFlow v5 while it analyses.

The measurement of the analytics-worker issue, as a script: 512k (source, broker) pairs of MQTT/AMQP records,
data time spread over a day (each datagram's export time moves on with the replay, and datagrams are drawn at
random, so a pair's records recur at random gaps: nothing periodic), offered over
loopback at a fixed rate while the service runs an analysis pass every --cadence seconds (2 s by default). Loss is
records offered minus records that reached the analytics process (the service's own summary: decoded minus dropped
at the channel; kernel socket drops show as records never decoded). Then the offered rate steps up to find where
loss starts. nfcapd, which does no analysis, is offered the same stream at each rate for comparison.

    .venv/bin/python bench/receive_under_analysis.py [--rate 300000 --seconds 30] [--steps 500000,700000,1000000]
"""

from __future__ import annotations

import argparse
import struct
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.e2e_udp import Workload, pace, run_brokerwatch, run_nfcapd  # noqa: E402

T0 = 1_767_225_600  # 2026-01-01
DAY = 86_400


def pubsub_datagrams(pairs: int = 512 * 1024) -> list[bytes]:
    """NetFlow v5 datagrams of 30 records, one record per pair: clients 10.0.0.0/12 to 64 brokers on pub/sub ports."""
    import numpy as np

    rng = np.random.default_rng(11)
    ports = np.array([1883, 8883, 5672, 5671, 5222, 61613, 4222], np.uint16)
    out = []
    rec = struct.Struct(">IIIHHIIIIHHBBBBHHBBH")
    head = struct.Struct(">HHIIIIBBH")
    for d in range(pairs // 30 + 1):
        body = bytearray()
        for r in range(30):
            i = d * 30 + r
            src = (10 << 24) | (i % (1 << 20))
            dst = (198 << 24) | (51 << 16) | (100 << 8) | int(i // (1 << 20) * 7 + rng.integers(64)) % 256
            first = int(rng.integers(0, 50_000))
            body += rec.pack(src, dst, 0, 1, 2, int(rng.integers(1, 20)), int(rng.integers(60, 3000)), first,
                             first + int(rng.integers(0, 5_000)), int(rng.integers(32768, 61000)),
                             int(ports[i % len(ports)]), 0, 0x1B, 6, 0, 0, 0, 0, 0, 0)
        out.append(head.pack(5, 30, 100_000, T0, 0, 30 * d, 0, 0, 0) + bytes(body))
    return out


def day_sender(total_seconds: float, periodic: bool = False):
    """A sender that stamps each datagram's export time so that the replay covers one day of data time."""
    import socket

    def send(port: int, datagrams: list[bytes], rate_records: float, per: float, seconds: float) -> int:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
        dest = ("127.0.0.1", port)
        import numpy as np

        bufs = [bytearray(d) for d in datagrams]
        order = np.random.default_rng(5).integers(0, len(bufs), 1 << 22).tolist()  # random recurrences, no period
        per_second = rate_records / per
        total = per_second * seconds
        sent = 0
        pack = struct.Struct(">I").pack_into
        for due in pace(per_second, seconds):
            while sent < due:
                b = bufs[sent % len(bufs) if periodic else order[sent & ((1 << 22) - 1)]]
                pack(b, 8, T0 + int(DAY * sent / total))
                try:
                    s.sendto(b, dest)
                except BlockingIOError:
                    continue
                sent += 1
        return sent

    return send


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=300_000, help="records/s of the main run (default 300k)")
    ap.add_argument("--seconds", type=float, default=30.0, help="length of the main run (default 30 s: 9M records)")
    ap.add_argument("--cadence", type=float, default=2.0, help="analysis cadence (default 2 s)")
    ap.add_argument("--steps", default="500000,700000,1000000,1500000,2000000",
                    help="higher rates, run --step-seconds each")
    ap.add_argument("--step-seconds", type=float, default=30.0,
                    help="length of each higher-rate run (default 30 s: longer than the channel can absorb alone)")
    ap.add_argument("--pairs", type=int, default=512 * 1024)
    ap.add_argument("--no-peer", action="store_true", help="skip nfcapd")
    ap.add_argument("--periodic", action="store_true",
                    help="replay the datagrams round-robin instead: every pair recurs at one fixed period, so every "
                         "pair beacons and each pass is an alert storm (stop and storm figures)")
    args = ap.parse_args()
    w = Workload("NetFlow v5 pub/sub", pubsub_datagrams(args.pairs))
    print(f"{args.pairs:,} pairs, {len(w.datagrams):,} distinct datagrams of 30 records, data time over one day; "
          f"analysis every {args.cadence:g} s")
    print(f"{'rate/s':>10} {'receiver':32} {'offered':>11} {'reached':>11} {'loss':>8} {'chan drop':>10} "
          f"{'recv cpu':>8} {'ana cpu':>8} {'passes':>6} {'longest':>8} {'ana MiB':>8} {'alerts':>7} {'stop':>6}")
    first_loss = None
    runs = [(args.rate, args.seconds)] + [(float(r), args.step_seconds) for r in args.steps.split(",") if r]
    for rate, seconds in runs:
        f = run_brokerwatch(w, rate, seconds, args.cadence, send=day_sender(seconds, args.periodic))
        loss = 1 - f["records"] / f["offered"] if f["offered"] else 0.0
        print(f"{rate:>10,.0f} {'brokerwatch run':32} {f['offered']:>11,} {f['records']:>11,} {loss:>8.3%} "
              f"{f['dropped_channel']:>10,} {f['cpu_s']:>8.2f} {f['analytics_cpu_s']:>8.2f} {f['passes']:>6} "
              f"{f['longest_pass_s']:>7.2f}s {f['analytics_peak_mib']:>8.0f} {f['alerts']:>7,} {f['stop_s']:>5.1f}s",
              flush=True)
        if loss > 0.001 and first_loss is None:
            first_loss = rate
        if not args.no_peer:
            p = run_nfcapd(w, rate, seconds)
            if p:
                ploss = 1 - p["records"] / p["offered"] if p["offered"] else 0.0
                print(f"{rate:>10,.0f} {'nfcapd (no analysis)':32} {p['offered']:>11,} {p['records']:>11,} "
                      f"{ploss:>8.3%} {'':>10} {p['cpu_s']:>8.2f}", flush=True)
    print("loss above 0.1 % starts at " + (f"{first_loss:,.0f} records/s" if first_loss else
                                          f"none of the rates tried (up to {runs[-1][0]:,.0f} records/s)"))


if __name__ == "__main__":
    main()
