"""Byte statistics against their plain-Python twin; the telemetry/exfil split."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analytics.bytestats import FIELDS, F, byte_stats
from tests.reference.bytestats_ref import pair_bytes


def run(pairs, threshold=1024):
    offsets = np.zeros(len(pairs) + 1, np.int64)
    np.cumsum([len(p) for p in pairs], out=offsets[1:])
    b = np.array([x[0] for p in pairs for x in p], float)
    k = np.array([x[1] for p in pairs for x in p], float)
    return byte_stats(offsets, b, k, threshold)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.tuples(st.integers(0, 100000), st.integers(0, 100)), max_size=30), max_size=6),
       st.integers(1, 5000))
def test_matches_reference(pairs, threshold):
    got = run(pairs, threshold)
    for i, p in enumerate(pairs):
        ref = pair_bytes([float(x[0]) for x in p], [float(x[1]) for x in p], threshold)
        for name in FIELDS:
            assert got[i, F[name]] == pytest.approx(ref[name]), name


def test_edge_cases():
    assert run([]).shape == (0, len(FIELDS))
    row = run([[]])[0]
    assert not row.any()
    row = run([[(500, 0)]])[0]  # no packet counters: bytes kept, no bytes/packet
    assert row[F["bpf_median"]] == 500 and row[F["bpp_median"]] == 0


def test_telemetry_vs_exfil_split():
    telemetry = [(120 + (i % 3), 2) for i in range(100)]
    exfil = [(1400 * 40, 40) for _ in range(20)] + telemetry[:5]
    rows = run([telemetry, exfil], 1024)
    assert rows[0, F["long_share"]] == 0 and rows[0, F["bpf_mode_share"]] > 0.3
    assert rows[1, F["long_events"]] == 20 and rows[1, F["long_bytes"]] == 20 * 56000


def test_rejects_bad_input():
    with pytest.raises(TypeError):
        byte_stats(np.array([0, 1], np.int32), np.zeros(1), np.zeros(1), 10)
    with pytest.raises(ValueError):
        byte_stats(np.array([0, 1], np.int64), np.zeros(1), np.zeros(1), 0)
