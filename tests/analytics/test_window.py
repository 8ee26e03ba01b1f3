"""Streaming pair state: bounded memory, and scores on a cadence equal a batch recompute over the same window."""

from __future__ import annotations

import numpy as np
import pytest

from analytics.config import Config
from analytics.detections.an0005 import Detector
from analytics.window import STATE_COLUMNS, PairWindow
from bench.detection.scenarios import NS, T0, build_world


def rows(n, pair, t0_s, step_s):
    cols = {k: np.zeros(n, np.uint64 if k in ("src_hi", "src_lo", "dst_hi", "dst_lo", "bytes", "packets")
                        else np.float32 if k == "topic_score" else np.int64 if k.endswith("_ns")
                        else np.uint16 if k.endswith("port") else np.uint8) for k in STATE_COLUMNS}
    cols["start_ns"][:] = ((t0_s + np.arange(n) * step_s) * NS).astype(np.int64)
    cols["end_ns"][:] = cols["start_ns"]
    cols["src_lo"][:] = pair
    cols["dst_port"][:] = 1883
    cols["proto"][:] = 6
    return cols


def test_expiry_cap_idle_and_budget():
    w = PairWindow(window_s=3600, max_per_pair=100, max_rows=250)
    w.add(rows(300, 1, T0, 10))  # 3000 s of a busy pair: capped to its latest 100 rows
    w.add(rows(50, 2, T0, 10))  # goes idle
    w.add(rows(120, 3, T0 + 2000, 10))
    snap = w.snapshot((T0 + 3300) * NS)
    by_pair = {p: int((snap["src_lo"] == p).sum()) for p in (1, 2, 3)}
    assert by_pair[1] == 100 and by_pair[3] == 100
    assert snap["start_ns"][snap["src_lo"] == 1].min() == (T0 + 2000) * NS  # the latest rows are kept
    assert w.stats.capped_rows > 0
    later = w.snapshot((T0 + 2000 + 3600) * NS)  # pair 2's rows are past the window: gone
    assert not (later["src_lo"] == 2).any() and w.stats.expired_rows > 0
    w2 = PairWindow(window_s=3600, max_per_pair=1000, max_rows=150)
    w2.add(rows(100, 1, T0, 1))
    w2.add(rows(100, 2, T0 + 10, 1))
    snap = w2.snapshot((T0 + 200) * NS)
    assert len(snap["start_ns"]) <= 150 and w2.stats.evicted_pairs == 1
    assert (snap["src_lo"] == 2).all()  # the pair seen least recently went first
    assert len(w2) == len(snap["start_ns"])


def test_rejects_bad_sizes():
    with pytest.raises(ValueError):
        PairWindow(0)
    w = PairWindow(60)
    bad = rows(3, 1, T0, 1)
    bad["bytes"] = bad["bytes"][:2]
    with pytest.raises(ValueError):
        w.add(bad)


def test_streaming_scores_equal_a_batch_recompute():
    world = build_world(5, n_c2=18, n_benign_pubsub=100, n_benign_other=20, duration_s=6 * 3600)
    cfg = Config.from_mapping({"TimeWindow": {"window": "4h", "cadence": "30m"}})
    stream = Detector(cfg)
    for b in world.batches(1800.0):  # evaluate every cadence as data arrives; the window slides over it
        stream.ingest(b)
        stream.evaluate(stream.latest_ns)
    now = int((T0 + world.duration_s) * NS)
    stream.evaluate(now)
    batch = Detector(cfg)
    c = world.batch.columns
    batch.ingest(world.batch.select(c["start_ns"] >= now - int(4 * 3600 * NS)))
    batch.evaluate(now)
    a, b = stream.last_scores, batch.last_scores
    assert a["beacon"].shape == b["beacon"].shape and a["beacon"].shape[0] > 50
    assert np.array_equal(a["beacon"], b["beacon"])
    assert np.array_equal(a["bytes"], b["bytes"])
    assert np.array_equal(a["sessions"], b["sessions"])


def test_incremental_state_equals_window_snapshots():
    """PairState after advance(now) holds, per pair, the rows PairWindow.snapshot(now) keeps (and counts the same)."""
    from analytics.pairs import group_pairs
    from analytics.window import PairState
    for seed in range(8):
        rng = np.random.default_rng(seed)
        kw = dict(window_s=3000, max_per_pair=int(rng.integers(3, 40)), max_rows=int(rng.integers(50, 400)),
                  idle_s=float(rng.choice([3000, 1000])))
        a, b = PairWindow(**kw), PairState(**kw)
        now = T0 + 10000
        for _ in range(12):
            for _ in range(int(rng.integers(1, 3))):
                n = int(rng.integers(1, 60))
                c = rows(n, 0, 0, 1)
                c["start_ns"][:] = (now - 3500 + rng.integers(0, 4000, n)) * NS
                c["end_ns"][:] = c["start_ns"] + 5
                c["src_lo"][:] = rng.integers(0, 25, n)
                c["bytes"][:] = rng.integers(1, 1000, n)
                a.add(c)
                b.add(c)
            now += int(rng.integers(-200, 1500))  # now also moves back: rows ahead of it stay unscored
            ga = group_pairs(a.snapshot(now * NS))
            b.advance(now * NS)
            gb = b.segments(b.scored_slots())
            assert np.array_equal(ga.offsets, gb.offsets) and a.stats == b.stats
            for k in ga.keys:
                assert np.array_equal(ga.keys[k], gb.keys[k])
            for k in ga.events:
                assert np.array_equal(ga.events[k], gb.events[k])
