"""Beacon kernels against their plain-Python twin, and the behaviours DESIGN §4 asks for."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analytics.beacon import FIELDS, F, BeaconParams, score_segments
from tests.reference.beacon_ref import pair_stats

T0 = 1_764_000_000.0  # a fixed epoch second
SMALL = BeaconParams(spec_max_bins=64, n_perm=6)  # keeps the O(n^2) reference DFT cheap


def kernel(times_list, params=SMALL):
    offsets = np.zeros(len(times_list) + 1, np.int64)
    np.cumsum([len(t) for t in times_list], out=offsets[1:])
    flat = np.concatenate([np.asarray(t, float) for t in times_list]) if times_list else np.zeros(0)
    return score_segments(offsets, flat, params)


def assert_same(row, ref, rel=1e-7):
    spectral = {"spec_period_s", "spec_logp", "spec_acf", "spec_score", "period2_s", "period3_s", "score"}
    for name in FIELDS:
        if ref["near_tie"] and name in spectral:
            continue  # two periodogram ordinates tie to rounding: FFT and DFT may pick either
        assert row[F[name]] == pytest.approx(ref[name], rel=rel, abs=1e-7), name


def rng_times(seed, kind, n, period=60.0, jitter=0.0, missed=0.0):
    rng = np.random.default_rng(seed)
    if kind == "poisson":
        return T0 + np.cumsum(rng.exponential(period, n))
    gaps = rng.uniform(period * (1 - jitter), period, n) if jitter else np.full(n, period)
    t = T0 + np.cumsum(gaps)
    return t[rng.random(n) >= missed]


EDGE = {
    "empty": np.zeros(0),
    "one": np.array([T0]),
    "two": np.array([T0, T0 + 60]),
    "three_equal": np.array([T0, T0, T0]),
    "perfect_period": T0 + np.arange(0, 7200, 60.0),
    "heavy_jitter": rng_times(1, "beacon", 150, 60, 0.5, 0.0),
    "jitter_and_missed": rng_times(2, "beacon", 150, 60, 0.5, 0.3),
    "bursts": np.sort(np.concatenate([T0 + np.arange(0, 36000, 600.0) + d for d in (0.0, 0.0, 0.05, 0.1)])),
    "poisson": rng_times(3, "poisson", 120, 60),
}


@pytest.mark.parametrize("name", sorted(EDGE))
def test_kernel_matches_reference_on_edge_cases(name):
    times = EDGE[name]
    row = kernel([times])[0]
    assert_same(row, pair_stats(list(times), SMALL))


def test_several_pairs_in_one_call_match_one_by_one():
    names = sorted(EDGE)
    rows = kernel([EDGE[n] for n in names])
    for i, n in enumerate(names):
        assert_same(rows[i], pair_stats(list(EDGE[n]), SMALL))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.floats(min_value=0.0, max_value=20000.0, allow_nan=False), min_size=0, max_size=60),
       st.sampled_from([0.0, 0.5, 3.0]))
def test_kernel_matches_reference_hypothesis(offsets, quantum):
    if quantum:
        offsets = [math.floor(o / quantum) * quantum for o in offsets]
    times = sorted(T0 + o for o in offsets)
    row = kernel([np.array(times)])[0]
    assert_same(row, pair_stats(times, SMALL), rel=1e-6)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**32 - 1), st.floats(5.0, 3600.0), st.floats(0.0, 0.5), st.floats(0.0, 0.3))
def test_kernel_matches_reference_on_beacons(seed, period, jitter, missed):
    times = rng_times(seed, "beacon", 60, period, jitter, missed)
    row = kernel([times])[0]
    assert_same(row, pair_stats(list(times), SMALL), rel=1e-6)


def test_validation_of_inputs():
    with pytest.raises(TypeError):
        score_segments(np.array([0, 1], np.int32), np.zeros(1))
    with pytest.raises(ValueError):
        score_segments(np.array([0, 2], np.int64), np.zeros(1))
    with pytest.raises(ValueError):
        score_segments(np.array([0, 1], np.int64), np.zeros(1), BeaconParams(spec_max_bins=100))
    assert score_segments(np.zeros(1, np.int64), np.zeros(0)).shape == (0, len(FIELDS))


def test_deterministic():
    times = [rng_times(s, "beacon", 300, 30, 0.3, 0.1) for s in range(5)]
    assert np.array_equal(kernel(times, BeaconParams()), kernel(times, BeaconParams()))


# --- behaviour (full-size defaults) --------------------------------------------------------------------------


def score_of(times):
    return kernel([times], BeaconParams())[0]


def test_perfect_60s_beacon_scores_high_with_its_period():
    row = score_of(T0 + np.arange(0, 86400, 60.0))
    assert row[F["score"]] >= 0.95
    assert row[F["period_s"]] == pytest.approx(60.0, abs=0.01)
    assert row[F["spec_period_s"]] == pytest.approx(60.0, rel=0.02)
    assert row[F["jitter"]] < 0.01 and row[F["missed_fraction"]] < 0.01


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_half_jitter_and_30pc_missed_still_high(seed):
    row = score_of(rng_times(seed, "beacon", 1440, 60, 0.5, 0.3))
    assert row[F["score"]] >= 0.7
    assert 30 <= row[F["period_s"]] <= 60
    assert 0.35 <= row[F["jitter"]] <= 0.5
    assert 0.15 <= row[F["missed_fraction"]] <= 0.4


@pytest.mark.parametrize("seed", [21, 22, 23, 24])
def test_poisson_scores_low(seed):
    assert score_of(rng_times(seed, "poisson", 1000, 60))[F["score"]] < 0.3


def test_bursts_do_not_inflate_the_score():
    base = T0 + np.cumsum(np.random.default_rng(5).exponential(600, 100))
    burst = np.sort(np.concatenate([base, base + 0.01, base + 0.02]))
    a, b = score_of(base), score_of(burst)
    assert b[F["beats"]] == a[F["beats"]]
    assert b[F["score"]] == pytest.approx(a[F["score"]])


@pytest.mark.parametrize("seed", [31, 32, 33])
def test_several_connections_a_second_apart_per_beat_are_one_beat(seed):
    # most gaps are intra-burst (2-4 connections 0.2-3 s apart at each beat), so the median gap is a burst gap
    rng = np.random.default_rng(seed)
    beats = rng_times(seed, "beacon", 35, 2400.0, jitter=0.3, missed=0.2)
    k = int(rng.integers(2, 5))
    t = np.sort(np.concatenate([beats] + [beats + rng.uniform(0.2, 3.0, len(beats)) * (i + 1) for i in range(k - 1)]))
    row = score_of(t)
    assert row[F["beats"]] == len(beats)
    assert row[F["score"]] >= 0.9 and 1700 <= row[F["period_s"]] <= 2450, row


def test_interleaved_periods_found():
    t = np.sort(np.concatenate([T0 + np.arange(0, 86400, 60.0), T0 + 17 + np.arange(0, 86400, 270.0)]))
    row = score_of(t)
    assert row[F["score"]] >= 0.9
    assert row[F["period_s"]] == pytest.approx(60.0, rel=0.05) or row[F["spec_period_s"]] == pytest.approx(60, rel=0.05)


def test_sleep_change_still_detected():
    fast = T0 + np.arange(0, 43200, 30.0)
    slow = T0 + 43200 + np.arange(0, 43200, 600.0)
    assert score_of(np.concatenate([fast, slow]))[F["score"]] >= 0.9


def test_sampling_degrades_gracefully():
    rng = np.random.default_rng(7)
    full = T0 + np.arange(0, 86400, 60.0)
    scores = [score_of(full[rng.random(len(full)) < keep])[F["score"]] for keep in (1.0, 0.5, 0.2, 0.05)]
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert scores[0] >= 0.95 and scores[1] >= 0.7  # half the beats missing is still a beacon
