"""NetFlow v9 and IPFIX decoding: brokerwatch's template decoders against the `netflow` PyPI package, in one run.

    .venv/bin/python bench/decode.py [--datagrams 100000] [--reference-datagrams 3000]

Both decode the same real exporters' data datagrams from the public corpus ($BROKERWATCH_CORPUS, else
../shared/corpus), after their templates: Cisco ASA NSEL, Ubiquiti EdgeRouter and Palo Alto for v9; MikroTik,
OpenBSD pflow and Citrix NetScaler (enterprise and variable-length fields) for IPFIX. Ours is timed through
``decode_buffer`` in blocks of 1024 datagrams (the listener's path: one buffer, offsets, lengths), templates learnt
beforehand; the package through ``parse_packet`` per datagram with its template dict. Prints records/s and the ratio.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SETS = {
    "netflow.v9": [
        (["netflow9_test_cisco_asa_1_tpl.dat"], ["netflow9_test_cisco_asa_1_data.dat"]),
        (["netflow9_test_ubnt_edgerouter_tpl.dat"], ["netflow9_test_ubnt_edgerouter_data1024.dat",
                                                     "netflow9_test_ubnt_edgerouter_data1025.dat"]),
        (["netflow9_test_paloalto_panos_tpl.dat"], ["netflow9_test_paloalto_panos_data.dat"]),
    ],
    "ipfix": [
        (["ipfix_test_mikrotik_tpl.dat"], ["ipfix_test_mikrotik_data258.dat", "ipfix_test_mikrotik_data259.dat"]),
        (["ipfix_test_openbsd_pflow_tpl.dat"], ["ipfix_test_openbsd_pflow_data.dat"]),
        (["ipfix_test_netscaler_tpl.dat"], ["ipfix_test_netscaler_data.dat"]),
    ],
}
BLOCK = 1024


def corpus_dir() -> Path:
    return Path(os.environ.get("BROKERWATCH_CORPUS", REPO.parent / "shared" / "corpus")) / "flow_payloads"


def load(name: str) -> tuple[list[tuple[int, bytes]], list[tuple[int, bytes]]]:
    """(template datagrams, data datagrams) of one format, each with its exporter number (one per vendor: their
    template ids collide, and templates are scoped by exporter)."""
    base = corpus_dir()
    tpls, data = [], []
    for ex, (t, d) in enumerate(SETS[name]):
        tpls += [(ex, (base / f).read_bytes()) for f in t]
        data += [(ex, (base / f).read_bytes()) for f in d]
    return tpls, data


def ours(name: str, tpls: list, data: list, n: int) -> tuple[float, int]:
    from analytics.schema import FlowBatchBuilder
    from collector.flows.decoders import FlowDecoders

    decoders = FlowDecoders()
    dec = decoders.get(name)
    builder = FlowBatchBuilder(BLOCK * 64)
    for ex, t in tpls:
        decoders.decode(t, (0, ex), 0, builder)
    blocks = []
    for b in range(max(1, n // BLOCK)):
        picks = [data[(b * BLOCK + i) % len(data)] for i in range(BLOCK)]
        lens = np.array([len(x) for _, x in picks], np.int64)
        offs = np.zeros(BLOCK, np.int64)
        np.cumsum(lens[:-1], out=offs[1:])
        ex_lo = np.array([ex for ex, _ in picks], np.uint64)
        blocks.append((np.frombuffer(b"".join(x for _, x in picks), np.uint8), offs, lens, ex_lo))
    ex_hi = np.zeros(BLOCK, np.uint64)
    builder.reset()
    buf, offs, lens, ex_lo = blocks[0]
    dec.decode_buffer(buf, offs, lens, ex_hi, ex_lo, builder)  # warm-up (numba kernels load from the cache)
    builder.reset()
    records = 0
    bad = 0
    t0 = time.perf_counter()
    for buf, offs, lens, ex_lo in blocks:
        k, status = dec.decode_buffer(buf, offs, lens, ex_hi, ex_lo, builder)
        records += k
        bad += int(status.astype(bool).sum())
        builder.reset()
    elapsed = time.perf_counter() - t0
    if bad:
        raise SystemExit(f"{name}: {bad} datagrams rejected; the benchmark data is wrong")
    return elapsed, records


def reference(tpls: list, data: list, n: int) -> tuple[float, int]:
    from netflow.utils import parse_packet

    templates = {ex: {"netflow": {}, "ipfix": {}} for ex, _ in tpls}  # one dict per exporter: ids collide
    for ex, t in tpls:
        parse_packet(t, templates[ex])
    records = 0
    t0 = time.perf_counter()
    for i in range(n):
        ex, d = data[i % len(data)]
        records += len(parse_packet(d, templates[ex]).flows)
    return time.perf_counter() - t0, records


def package_can_decode(tpls: list, data: list) -> tuple[list, list[str], list]:
    """(data datagrams the netflow package decodes without raising, why the others fail, the others)."""
    from netflow.utils import parse_packet

    templates = {ex: {"netflow": {}, "ipfix": {}} for ex, _ in tpls}
    for ex, t in tpls:
        parse_packet(t, templates[ex])
    keep, dropped, failing = [], [], []
    for ex, d in data:
        try:
            parse_packet(d, templates[ex])
            keep.append((ex, d))
        except Exception as exc:  # noqa: BLE001 - the reference's failures are reported, not fatal
            dropped.append(f"exporter {ex}: {type(exc).__name__}")
            failing.append((ex, d))
    return keep, dropped, failing


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datagrams", type=int, default=100_000, help="datagrams our decoder takes (default 100000)")
    ap.add_argument("--reference-datagrams", type=int, default=3000,
                    help="datagrams the netflow package takes (it is slow; default 3000)")
    args = ap.parse_args()
    if not corpus_dir().is_dir():
        print(f"corpus not found at {corpus_dir()} (set BROKERWATCH_CORPUS)")
        return 2
    print(f"{'format':<11} {'brokerwatch rec/s':>18} {'netflow pkg rec/s':>18} {'ratio':>7}   records/datagram")
    print("(* = the datagrams the netflow package raises on, decoded by ours alone)")
    for name in SETS:
        tpls, data = load(name)
        data, dropped, failing = package_can_decode(tpls, data)
        for why in dropped:
            print(f"  ({name}: a datagram the netflow package cannot decode is left out of both sides: {why})")
        t_ours, r_ours = ours(name, tpls, data, args.datagrams)
        t_ref, r_ref = reference(tpls, data, args.reference_datagrams)
        a, b = r_ours / t_ours, r_ref / t_ref
        per = r_ours / (max(1, args.datagrams // BLOCK) * BLOCK)
        print(f"{name:<11} {a:>18,.0f} {b:>18,.0f} {a / b:>6.1f}x   {per:.1f}", flush=True)
        if failing:  # ours alone on what the package cannot decode (variable-length fields, padding)
            t_f, r_f = ours(name, tpls, failing, args.datagrams // 2)
            per = r_f / (max(1, args.datagrams // 2 // BLOCK) * BLOCK)
            print(f"{name + '*':<11} {r_f / t_f:>18,.0f} {'(raises)':>18} {'':>7}   {per:.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
