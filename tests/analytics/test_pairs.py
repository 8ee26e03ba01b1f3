"""Pair grouping against its plain-Python twin."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from analytics import pairs as pairs_mod
from analytics.pairs import group_pairs
from analytics.schema import COLUMNS, FLOW_DTYPE, FlowBatch
from tests.reference.pairs_ref import group_pairs as ref_group


def batch(n, seed, n_src=3, n_dst=3):
    rng = np.random.default_rng(seed)
    cols = {k: np.zeros(n, FLOW_DTYPE[k]) for k in COLUMNS}
    cols["src_lo"][:] = rng.integers(0, n_src, n).astype(np.uint64)
    cols["dst_hi"][:] = rng.integers(0, 2, n).astype(np.uint64)
    cols["dst_lo"][:] = rng.integers(0, n_dst, n).astype(np.uint64)
    cols["dst_port"][:] = rng.choice([1883, 5672], n)
    cols["proto"][:] = rng.choice([6, 17], n)
    cols["start_ns"][:] = rng.integers(0, 50, n)  # many ties: input order must break them
    cols["bytes"][:] = np.arange(n)
    return FlowBatch(cols)


def check(b):
    seg = group_pairs(b)
    ref = ref_group(b.columns)
    assert seg.n_pairs == len(ref)
    got = {}
    for p in range(seg.n_pairs):
        key = tuple(int(seg.keys[k][p]) for k in ("src_hi", "src_lo", "dst_hi", "dst_lo", "dst_port", "proto"))
        got[key] = [int(r) for r in seg.row[seg.offsets[p]:seg.offsets[p + 1]]]
    assert got == ref
    assert np.array_equal(seg.events["bytes"], b.columns["bytes"][seg.row])


def test_empty_and_one_row():
    check(batch(0, 0))
    check(batch(1, 0))


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 300), st.integers(0, 2**31))
def test_matches_reference(n, seed):
    check(batch(n, seed))


def test_hash_collision_falls_back_to_exact_grouping(monkeypatch):
    """A sort hash shared by different fingerprints is detected and the exact lexsort groups instead."""
    real = pairs_mod._hash_rows

    def constant(*args):
        h, h2 = real(*args)
        return np.zeros(len(args[0]), np.uint64), h2  # every pair shares the sort hash

    monkeypatch.setattr(pairs_mod, "_hash_rows", constant)
    check(batch(200, 3))
    monkeypatch.setattr(pairs_mod, "_hash_rows", real)


def test_select_pairs_keeps_segments():
    seg = group_pairs(batch(100, 4))
    mask = np.arange(seg.n_pairs) % 2 == 0
    sub = seg.select_pairs(mask)
    assert sub.n_pairs == mask.sum()
    assert np.array_equal(sub.counts(), seg.counts()[mask])


def test_large_batch_matches_reference():
    """Enough rows that the top-bits buckets hold more than 64 rows: the in-cache second radix level runs."""
    b = batch(150_000, 7, n_src=300, n_dst=100)
    bits = min(11, pairs_mod._bucket_bits(150_000))
    assert 150_000 >> bits > 64
    check(b)
