"""Incremental evaluation: every pass of an incremental Detector equals a full recompute over the same window
(alerts, score arrays, window counters), through out-of-order rows, expiry, roll-over, caps and eviction."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analytics.config import Config
from analytics.detections.an0005 import Detector, DetectorParams
from analytics.schema import APP_PROTOCOL_ID, COLUMNS, FLOW_DTYPE, FlowBatch
from analytics.stitch import quantile_sorted
from tests.reference.an0005_ref import alert_ref

NS = 1_000_000_000
T0 = 1_767_225_600
SYN, FIN, PSH, ACK = 0x02, 0x01, 0x08, 0x10


def world(seed: int, n_pairs: int = 24, hours: float = 5.0, fleet: int = 0):
    """Per-pair (times, kind) of a small world: beacons, random publishers, exporter-sliced sessions, bursts; the
    first ``fleet`` pairs beacon every 60 s (fleets on the three brokers)."""
    rng = np.random.default_rng(seed)
    pairs = []
    for p in range(n_pairs):
        kind = 0 if p < fleet else p % 5
        if kind == 0:  # jittered beacon
            period = 60.0 if p < fleet else float(rng.choice([30.0, 60.0, 300.0]))
            t = np.cumsum(rng.uniform(period * 0.7, period, int(hours * 3600 / period)))
        elif kind == 1:  # random publisher
            t = np.cumsum(rng.exponential(120.0, int(hours * 30)))
        elif kind == 2:  # a long session cut by an exporter's active timeout (60 s or 120 s), flags without FIN
            timeout = float(rng.choice([60.0, 120.0]))
            t = np.arange(0.0, hours * 3600, timeout)[: int(rng.integers(20, 200))] + rng.uniform(0, 3600)
        elif kind == 3:  # high-frequency publisher
            t = np.cumsum(rng.uniform(1.0, 5.0, int(rng.integers(50, 400))))
        else:  # a few rows, some far in the past
            t = np.sort(rng.uniform(-3600, hours * 3600, int(rng.integers(1, 8))))
        pairs.append((t[t < hours * 3600], kind))
    return pairs


def batch_of(rng, pairs, lo_s, hi_s, late_share=0.1):
    """The rows of every pair with lo_s <= t < hi_s, plus some late rows from earlier, shuffled."""
    parts = []
    for p, (t, kind) in enumerate(pairs):
        sel = t[(t >= lo_s) & (t < hi_s)]
        late = t[(t < lo_s) & (rng.random(len(t)) < late_share * 0.05)]
        sel = np.concatenate([sel, late])
        if len(sel):
            parts.append((p, kind, sel))
    n = sum(len(s) for _, _, s in parts)
    cols = {k: np.zeros(n, FLOW_DTYPE[k]) for k in COLUMNS}
    strings = ["", "c2/8f3a9b2c7d1e4f60a9b8c7d6e5f4a3b2"]
    i = 0
    for p, kind, sel in parts:
        m = len(sel)
        r = slice(i, i + m)
        cols["start_ns"][r] = ((T0 + sel) * NS).astype(np.int64)
        dur = 60.0 if kind == 2 else 0.5
        cols["end_ns"][r] = cols["start_ns"][r] + int(dur * NS)
        cols["src_hi"][r], cols["src_lo"][r] = 0, 0xFFFF0A000000 + p
        cols["dst_hi"][r], cols["dst_lo"][r] = 0, 0xFFFFC6120000 + p % 3
        cols["dst_port"][r] = 4444 if p % 7 == 6 else 1883
        cols["app_proto"][r] = APP_PROTOCOL_ID["mqtt"] if p % 7 == 6 else 0
        cols["proto"][r] = 6
        cols["src_port"][r] = 40000 + p if kind == 2 else rng.integers(30000, 60000, m)
        cols["tcp_flags"][r] = (ACK | PSH) if kind == 2 else (SYN | ACK | PSH | FIN)
        cols["bytes"][r] = rng.integers(200, 900, m) if p % 11 != 4 else 500_000
        cols["packets"][r] = rng.integers(4, 12, m) if p % 11 != 4 else 360
        cols["topic_id"][r] = 1 if p % 13 == 12 else 0
        i += m
    order = rng.permutation(n)
    return FlowBatch({k: np.ascontiguousarray(v[order]) for k, v in cols.items()}, strings)


def assert_same_pass(inc: Detector, full: Detector, a_inc, a_full):
    assert [a.key for a in a_inc] == [a.key for a in a_full]
    for x, y in zip(a_inc, a_full):
        assert (x.revision, x.score, x.timestamp_ns, x.protocol) == (y.revision, y.score, y.timestamp_ns, y.protocol)
        assert x.evidence == y.evidence
    assert inc.window.stats == full.window.stats
    s, t = inc.last_scores, full.last_scores
    assert (s is None) == (t is None)
    if s is not None:
        assert set(s) == set(t)
        for k in s:
            assert np.array_equal(s[k], t[k]), k


def replay(seed: int, window: str = "2h", cadence_s: float = 600.0, max_per_pair: int = 120, max_rows: int = 2000,
           allow: tuple = ("198.18.0.2/32",), hours: float = 5.0, n_pairs: int = 24,
           internal: tuple | None = None, fleet: int = 0) -> tuple[int, Detector]:
    """Feed the same batches to an incremental and a full-recompute Detector; compare after every pass."""
    rng = np.random.default_rng(seed + 1)
    pairs = world(seed, n_pairs, hours, fleet)
    cfg = Config.from_mapping({"TimeWindow": {"window": window, "cadence": "10m"},
                               "BrokerAllowList": list(allow),
                               **({"InternalNetworks": list(internal)} if internal is not None else {})})
    params = DetectorParams(max_per_pair=max_per_pair, max_rows=max_rows)
    inc, full = Detector(cfg, params), Detector(cfg, params, incremental=False)
    t, emitted = 0.0, 0
    while t < hours * 3600:
        step = float(rng.uniform(0.3, 1.7) * cadence_s)
        b = batch_of(rng, pairs, t, t + step)
        for d in (inc, full):
            d.ingest(b)
        t += step
        # now: usually the end of the batch, sometimes behind it (later rows stay unscored) or the latest row
        now = int((T0 + t - float(rng.choice([0.0, 0.0, 300.0]))) * NS)
        a_inc, a_full = inc.evaluate(now), full.evaluate(now)
        assert_same_pass(inc, full, a_inc, a_full)
        emitted += len(a_full)
    return emitted, inc


def test_incremental_equals_full_recompute():
    emitted, inc = replay(3)
    assert emitted > 5 and inc.last_scores["active_timeout_s"] > 0


def test_incremental_with_tight_bounds_and_no_allowlist():
    _, inc = replay(7, window="1h", max_per_pair=15, max_rows=150, allow=(), cadence_s=300.0)
    assert inc.window.stats.evicted_pairs and inc.window.stats.capped_rows and inc.window.stats.expired_rows


def test_incremental_equals_full_with_site_brokers_whose_population_changes():
    # the brokers inside InternalNetworks: a pair's alert depends on its broker's other clients, which expire,
    # get evicted and return while the pair itself has no new rows
    emitted, inc = replay(11, window="1h", max_per_pair=15, max_rows=120, allow=(), cadence_s=300.0,
                          internal=("198.18.0.0/24",), n_pairs=13)
    assert emitted > 0 and inc.window.stats.evicted_pairs


def test_incremental_equals_full_with_outside_fleets_whose_population_changes():
    # outside brokers shared by clients in one rhythm: a fleet's beacons are quiet until evictions and expiry thin
    # the fleet below fleet_min_clients, then they alert (and back), with no new rows of their own
    emitted, inc = replay(13, window="1h", max_per_pair=40, max_rows=400, allow=(), cadence_s=300.0, n_pairs=27,
                          fleet=21)
    assert emitted > 0 and inc.window.stats.evicted_pairs
    keys = {name: v[inc._order] for name, v in inc.window.keys.items()}
    pop = inc._population(keys, inc.last_scores["beacon"])
    assert ((pop["broker_clients"] >= 5) & (pop["broker_similar_share"] >= 0.5)).any()  # fleets were in play


@settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck))
@given(seed=st.integers(0, 10_000), window=st.sampled_from(["1h", "2h", "4h"]),
       cadence=st.sampled_from([120.0, 600.0, 1800.0]), max_per_pair=st.integers(5, 200),
       max_rows=st.integers(50, 5000))
def test_incremental_equals_full_recompute_hypothesis(seed, window, cadence, max_per_pair, max_rows):
    replay(seed, window=window, cadence_s=cadence, max_per_pair=max_per_pair, max_rows=max_rows, hours=3.0,
           n_pairs=12)


def test_vectorised_alerts_equal_the_per_alert_reference():
    cfg = Config.from_mapping({"TimeWindow": {"window": "6h", "cadence": "10m"}})
    det = Detector(cfg, incremental=False)
    rng = np.random.default_rng(5)
    det.ingest(batch_of(rng, world(11, 40, 6.0), -3600.0, 6 * 3600.0))
    det.evaluate(int((T0 + 6 * 3600) * NS))
    from analytics.pairs import group_pairs
    seg = group_pairs(det.window.snapshot(int((T0 + 6 * 3600) * NS)))
    s = dict(det.score(seg), events=seg.counts())
    s.update(det._population(seg.keys, s["beacon"]))
    fired = det._fired_arrays(seg.keys, s)
    built = det._build_alerts(seg.keys, s, fired, T0 * NS)
    ref = [alert_ref(det, seg, s, fired, int(i), T0 * NS) for i in np.flatnonzero(fired["any"])]
    ref = [a for a in ref if a.evidence["analytics"]]
    assert len(built) > 5 and built == ref


def test_quantile_of_sorted_durations_equals_numpy():
    rng = np.random.default_rng(0)
    for n in (1, 2, 3, 7, 100, 1001):
        for x in (rng.exponential(60, n), np.round(rng.uniform(0, 120, n)), rng.integers(0, 3, n).astype(float)):
            assert quantile_sorted(np.sort(x), 0.99) == np.quantile(x, 0.99)
