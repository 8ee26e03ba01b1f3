"""Firewall syslog parsing speed: lines per second on one core for each device profile, and through the listener.

    .venv/bin/python bench/syslog.py [--lines 100000] [--profile NAME] [--no-listener]

For each profile, typical connection lines (the fixtures', with source ports varied so no two lines are equal) are
fed to one SyslogParser into a FlowBatchBuilder, one process, one core, the process's CPU time (time.process_time, so
that other work on a shared machine does not count) around the loop: first in blocks of BLOCK lines through the
block path (``feed_lines``: numba kernels, as the listener hands over what one TCP read framed and ``decode`` reads a
file), then the same lines one per call through the reference path (``feed_line``, pure Python, the twin the block
path is tested against), taking turns, the best of REPEAT runs each, and their ratio. "kernel" is the share of lines the block path finished without the
reference. The last figure sends LF-framed lines over loopback TCP to ``start_syslog_listeners`` (framing, parsing
and FlowBatch building included) and counts rows out. The target is >= 100k lines/s/core for the common formats.
"""

from __future__ import annotations

import argparse
import asyncio
import calendar
import os
import re
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

FIX = REPO / "fixtures" / "syslog"

#: Lines per profile that make records (start/end pairs where the format has them).
SAMPLES = {
    "cisco_asa": [FIX / "cisco_asa.log"],
    "panos": [FIX / "panos.log"],
    "fortigate": [FIX / "fortigate.log"],
    "juniper_srx": [FIX / "juniper_srx.log"],
    "pfsense": [FIX / "pfsense.log"],
    "iptables": [FIX / "iptables.log"],
}


def lines_for(profile: str, n: int) -> list[bytes]:
    """n lines of a profile's samples with the source port rewritten so that every line differs."""
    base = [line for p in SAMPLES[profile] for line in p.read_bytes().splitlines() if line.strip()]
    out = []
    i = 0
    port = re.compile(rb"(SPT=|srcport=|/)(5\d{4})\b")
    while len(out) < n:
        line = base[i % len(base)]
        k = 50000 + (i // len(base)) % 15000
        out.append(port.sub(lambda m: m.group(1) + str(k).encode(), line, count=1))
        i += 1
    return out


def calibration_ms() -> float:
    """Time of a fixed pure-Python loop, so figures from a loaded or slow machine can be compared."""
    best = float("inf")
    for _ in range(5):
        t0 = time.process_time()
        x = 0
        for i in range(1_000_000):
            x += i & 7
        best = min(best, time.process_time() - t0)
    return best * 1e3


#: Lines per feed_lines call (what one TCP read of a busy sender frames, about 64 KiB).
BLOCK = 512
#: Each loop runs this many times and the fastest counts (other work on a shared machine only ever slows a run).
REPEAT = 5


def bench_profile(profile: str, n: int) -> tuple[float, float, int, float]:
    """(lines/s through the block path, lines/s one line per call through the reference, rows, kernel share)."""
    from analytics.schema import FlowBatchBuilder
    from collector.syslog.parser import SyslogParser
    from collector.metrics import Counters

    lines = lines_for(profile, n)
    ref = calendar.timegm((2026, 11, 28, 12, 0, 0)) * 10**9
    block = SyslogParser(Counters(), reference_ns=ref)
    line_by_line = SyslogParser(Counters(), reference_ns=ref)
    line_by_line.block = False
    builder = FlowBatchBuilder(n + 16)
    block.feed_lines(lines[:2000], (0, 1), 0, builder)  # load the cached kernels and warm the caches
    for line in lines[:2000]:
        line_by_line.feed_line(line, (0, 1), 0, builder)
    block._block.kernel_lines = block._block.reference_lines = 0
    feed_lines = block.feed_lines
    feed = line_by_line.feed_line
    dt_block = dt_line = float("inf")
    rows = 0
    # The two paths take turns, so that a slow phase of a shared machine falls on both alike.
    for _ in range(REPEAT):
        builder.reset()
        t0 = time.process_time()
        for i in range(0, n, BLOCK):
            feed_lines(lines[i:i + BLOCK], (0, 1), 0, builder)
        dt_block = min(dt_block, time.process_time() - t0)
        rows = len(builder)
        builder.reset()
        t0 = time.process_time()
        for line in lines:
            feed(line, (0, 1), 0, builder)
        dt_line = min(dt_line, time.process_time() - t0)
    k = block._block
    share = k.kernel_lines / max(1, k.kernel_lines + k.reference_lines)
    return n / dt_block, n / dt_line, rows, share


def bench_listener(n: int) -> float:
    from collector.metrics import Counters
    from collector.syslog.listener import start_syslog_listeners

    payload = b"".join(line + b"\n" for line in lines_for("pfsense", n))

    async def run() -> float:
        rows = 0
        done = asyncio.Event()

        def on_rows(batch):
            nonlocal rows
            rows += len(batch)
            if rows >= n:
                done.set()

        closers = await start_syslog_listeners("127.0.0.1", None, 0, on_rows, Counters())
        t0 = time.perf_counter()
        _, writer = await asyncio.open_connection("127.0.0.1", closers[0].port)
        writer.write(payload)
        await writer.drain()
        writer.close()
        await asyncio.wait_for(done.wait(), 300)
        dt = time.perf_counter() - t0
        for c in closers:
            c.close()
        return n / dt

    return asyncio.run(run())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=100_000)
    ap.add_argument("--profile", choices=sorted(SAMPLES))
    ap.add_argument("--no-listener", action="store_true")
    a = ap.parse_args()
    print(f"syslog parsing, one core, {a.lines} lines per profile (python {sys.version.split()[0]}, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    print(f"  calibration: {calibration_ms():.1f} ms for a fixed 10^6-step pure-Python loop (run this script on "
          "another machine to scale the figures below)")
    for profile in ([a.profile] if a.profile else SAMPLES):
        rate, rate_line, rows, share = bench_profile(profile, a.lines)
        print(f"  {profile:12s} {rate / 1e3:8.1f}k lines/s   {rows} rows   kernel {share:6.1%}   reference path "
              f"{rate_line / 1e3:6.1f}k lines/s   ({rate / rate_line:.1f}x)")
    if not a.no_listener:
        print(f"  {'listener tcp':12s} {bench_listener(a.lines) / 1e3:8.1f}k lines/s   "
              "(pfsense lines over loopback TCP, framing + parsing + batches, sender in the same process)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
