"""Robustness bar (DESIGN §5): ≥ 1M fuzzed datagrams per decoder, no crash, every rejection counted by reason.

    .venv/bin/python bench/fuzz.py [--datagrams 1000000] [--decoder netflow.v5 ...] [--seed 1]

``--decoder syslog`` fuzzes firewall syslog lines instead (seeds: the fixtures' and the corpus's lines) through the
block path (``SyslogParser.feed_lines``, 512 lines a block) and, differentially, through the reference path one line
at a time: the rows of every block and the counters at the end must be the same.

Seeds are real datagrams: the corpus captures and payloads (``BROKERWATCH_CORPUS``) and the fixtures, grouped by
the decoder that claims them. Each fuzzed datagram is a seed mutated by one or more of: bit flips, random bytes at
random offsets, truncation, extension with random bytes, splicing two seeds, and overwriting length/count fields
with extreme values. Datagrams go through ``FlowDecoders.decode_many`` (the receive path) in batches, with the
decoder state kept (so templates learnt from one datagram meet mutated data in the next) and reset now and then.
An exception escaping the decoders is a crash: it is printed with the datagram in hex and the run exits 1.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def seeds_by_decoder() -> dict[str, list[bytes]]:
    """Real datagrams from the corpus and fixtures, keyed by the decoder their first bytes select."""
    from collector.flows.decoders import sniff
    from collector.pcap import PcapError, datagrams, is_capture

    corpus = Path(os.environ.get("BROKERWATCH_CORPUS", REPO.parent / "shared" / "corpus"))
    files = sorted(corpus.glob("flow_pcaps/*.pcap")) + sorted(corpus.glob("flow_payloads/*.dat"))
    files += sorted((REPO / "fixtures").rglob("*.pcap"))
    out: dict[str, list[bytes]] = {}
    for f in files:
        try:
            payloads = [d.payload for d in datagrams(str(f))] if is_capture(str(f)) else [f.read_bytes()]
        except (PcapError, OSError):
            continue
        for p in payloads[:200]:
            name = sniff(p)
            if name and name != "syslog":
                out.setdefault(name, []).append(p)
    return out


def mutate(rng: np.random.Generator, seeds: list[bytes]) -> bytes:
    """One mutated datagram."""
    data = bytearray(seeds[rng.integers(len(seeds))])
    for _ in range(rng.integers(1, 4)):
        op = rng.integers(7)
        n = len(data)
        if op == 0 and n:  # bit flips
            for _ in range(rng.integers(1, 9)):
                i = rng.integers(n)
                data[i] ^= 1 << int(rng.integers(8))
        elif op == 1 and n:  # random bytes
            for _ in range(rng.integers(1, 9)):
                data[rng.integers(n)] = int(rng.integers(256))
        elif op == 2 and n:  # truncate
            del data[rng.integers(n):]
        elif op == 3:  # extend
            data += rng.integers(0, 256, rng.integers(1, 200), dtype=np.uint8).tobytes()
        elif op == 4:  # splice
            other = seeds[rng.integers(len(seeds))]
            cut = rng.integers(len(data) + 1)
            data = data[:cut] + other[rng.integers(len(other) + 1):]
        elif op == 5 and n >= 4:  # extreme 16-bit field (lengths, counts, template ids)
            i = rng.integers(0, n - 1)
            data[i:i + 2] = int(rng.choice([0, 1, 3, 4, 255, 256, 0x7FFF, 0xFFFF])).to_bytes(2, "big")
        elif op == 6 and n >= 8:  # extreme 32-bit field (sFlow lengths/counts)
            i = rng.integers(0, n - 3)
            data[i:i + 4] = int(rng.choice([0, 1, 0x7FFFFFFF, 0xFFFFFFFF, 1 << 20])).to_bytes(4, "big")
    return bytes(data[:65535])


def fuzz(name: str, seeds: list[bytes], total: int, seed: int) -> int:
    from analytics.schema import FlowBatchBuilder
    from collector.flows.decoders import FlowDecoders
    from collector.metrics import Counters

    rng = np.random.default_rng(seed)
    counters = Counters()
    decoders = FlowDecoders(counters)
    builder = FlowBatchBuilder(1 << 16)
    exporters = [(0, 0x0000FFFF7F000001 + i) for i in range(4)]
    done = 0
    rows = 0
    t0 = time.perf_counter()
    batch = 512
    while done < total:
        if done and done % 200_000 == 0:
            decoders = FlowDecoders(counters)  # a cold start now and then
        k = min(batch, total - done)
        data = [mutate(rng, seeds) if rng.random() < 0.9 else seeds[rng.integers(len(seeds))] for _ in range(k)]
        ex = [exporters[i % 4] for i in range(k)]
        try:
            rows += decoders.decode_many(data, ex, 1_700_000_000_000_000_000, builder)
        except Exception:  # noqa: BLE001 - this is what the bench looks for
            for d in data:  # find the culprit one by one
                try:
                    FlowDecoders().decode(d, ex[0], 0, FlowBatchBuilder(64))
                except Exception:  # noqa: BLE001
                    traceback.print_exc()
                    print(f"CRASH in {name} on datagram: {d.hex()}", file=sys.stderr)
                    return 1
            traceback.print_exc()
            print(f"CRASH in {name} (batch path only)", file=sys.stderr)
            return 1
        builder.reset()
        done += k
    dt = time.perf_counter() - t0
    rejected = {f"{d}.{r}": v for (d, r), v in counters.series("brokerwatch_decoder_errors_total").items()}
    total_rej = sum(rejected.values())
    print(f"{name:12} {done:>10,} datagrams in {dt:6.1f} s ({done / dt:>9,.0f}/s): {rows:>11,} rows, "
          f"{total_rej:>9,} rejected, 0 crashes")
    for reason, v in sorted(rejected.items(), key=lambda kv: -kv[1])[:8]:
        print(f"{'':14}{reason:40} {v:>10,}")
    return 0


def syslog_seeds() -> list[bytes]:
    """The fixtures' and the corpus's firewall syslog lines."""
    corpus = Path(os.environ.get("BROKERWATCH_CORPUS", REPO.parent / "shared" / "corpus"))
    files = sorted((REPO / "fixtures" / "syslog").glob("*.log")) + sorted(corpus.glob("firewall_syslog/**/*.log"))
    return [line for f in files for line in f.read_bytes().splitlines() if line.strip()]


def fuzz_syslog(seeds: list[bytes], total: int, seed: int) -> int:
    """Mutated lines through the block path and the reference path: no crash, the same rows and counters."""
    from analytics.schema import FlowBatchBuilder
    from collector.syslog.parser import SyslogParser
    from collector.metrics import Counters

    rng = np.random.default_rng(seed)
    ref_ns = 1_795_000_000_000_000_000
    block, line = Counters(), Counters()
    fast = SyslogParser(block, reference_ns=ref_ns)
    slow = SyslogParser(line, reference_ns=ref_ns)
    slow.block = False
    b1, b2 = FlowBatchBuilder(1 << 12), FlowBatchBuilder(1 << 12)
    done = rows = 0
    t0 = time.perf_counter()
    while done < total:
        k = min(512, total - done)
        data = [mutate(rng, seeds)[:20000] if rng.random() < 0.8 else seeds[rng.integers(len(seeds))]
                for _ in range(k)]
        exporter = (0, 0x0000FFFF7F000001 + int(rng.integers(3)))
        try:
            fast.feed_lines(data, exporter, ref_ns, b1)
        except Exception:  # noqa: BLE001 - this is what the bench looks for
            traceback.print_exc()
            print("CRASH in the syslog block path on lines: " + " ".join(d.hex() for d in data), file=sys.stderr)
            return 1
        for d in data:
            slow.feed_line(d, exporter, ref_ns, b2)
        a, b = b1.build().to_rows(), b2.build().to_rows()
        if len(a) != len(b) or not np.array_equal(a, b):
            print(f"DIFFERENCE between the block and reference paths in block {done // 512}: "
                  + " ".join(d.hex() for d in data), file=sys.stderr)
            return 1
        rows += len(a)
        b1.reset()
        b2.reset()
        done += k
    dt = time.perf_counter() - t0
    if block.snapshot() != line.snapshot():
        print("DIFFERENCE between the block and reference paths' counters", file=sys.stderr)
        return 1
    rejected = {f"{d}.{r}": v for (d, r), v in block.series("brokerwatch_decoder_errors_total").items()}
    print(f"{'syslog':12} {done:>10,} lines in {dt:6.1f} s (both paths): {rows:>9,} rows, "
          f"{sum(rejected.values()):>9,} rejected, the same rows and counters in both paths, 0 crashes")
    for reason, v in sorted(rejected.items(), key=lambda kv: -kv[1])[:8]:
        print(f"{'':14}{reason:40} {v:>10,}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datagrams", type=int, default=1_000_000, help="per decoder (default 1,000,000)")
    ap.add_argument("--decoder", action="append", help="only these decoders (repeatable)")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    import logging

    logging.getLogger("brokerwatch").setLevel(logging.ERROR)  # rejections are the point here; counted, not logged
    seeds = seeds_by_decoder()
    status = 0
    for name in sorted(seeds):
        if args.decoder and name not in args.decoder:
            continue
        status |= fuzz(name, seeds[name], args.datagrams, args.seed)
    if not args.decoder or "syslog" in args.decoder:
        status |= fuzz_syslog(syslog_seeds(), args.datagrams, args.seed)
    return status


if __name__ == "__main__":
    sys.exit(main())
