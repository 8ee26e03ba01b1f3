"""Session stitching against its plain-Python twin, and the exporter artefacts it must undo."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analytics.beacon import F, BeaconParams, score_segments
from analytics.pairs import group_pairs
from analytics.schema import COLUMNS, FLOW_DTYPE, FlowBatch
from analytics.stitch import StitchParams, beat_segments, infer_active_timeout, stitch
from tests.reference import stitch_ref

NS = 1_000_000_000
T0 = 1_764_000_000
ACK, PSH, FIN, SYN = 0x10, 0x08, 0x01, 0x02


def make(rows):
    """rows: (start_s, end_s, sport, bytes, packets, flags, dst_lo)."""
    n = len(rows)
    cols = {k: np.zeros(n, FLOW_DTYPE[k]) for k in COLUMNS}
    for i, (s, e, sp, b, pk, fl, d) in enumerate(rows):
        cols["start_ns"][i] = int(round(s * NS))
        cols["end_ns"][i] = int(round(e * NS))
        cols["src_port"][i] = sp
        cols["bytes"][i] = b
        cols["packets"][i] = pk
        cols["tcp_flags"][i] = fl
        cols["dst_lo"][i] = d
    cols["dst_port"][:] = 1883
    cols["proto"][:] = 6
    return FlowBatch(cols)


def ref_of(seg, p):
    pairs = []
    for q in range(seg.n_pairs):
        lo, hi = seg.offsets[q], seg.offsets[q + 1]
        e = seg.events
        pairs.append([{"start": e["start_ns"][i] / NS, "end": e["end_ns"][i] / NS, "bytes": float(e["bytes"][i]),
                       "packets": float(e["packets"][i]), "flags": int(e["tcp_flags"][i]),
                       "sport": int(e["src_port"][i])} for i in range(lo, hi)])
    ta = p.active_timeout_s or stitch_ref.infer_active_timeout(pairs, p)
    heads, actives, timing = [], [], []
    for q, events in enumerate(pairs):
        h, a, tm = stitch_ref.stitch_pair(events, bool(seg.keys["proto"][q] == 6), p, ta)
        heads += [seg.offsets[q] + x for x in h]
        actives += a
        timing.append(tm)
    return ta, heads, actives, timing


def check(batch, p=StitchParams()):
    seg = group_pairs(batch)
    st_ = stitch(seg, p)
    ta, heads, actives, timing = ref_of(seg, p)
    assert st_.active_timeout_s == ta
    assert st_.head.tolist() == heads
    assert st_.active.tolist() == actives
    assert st_.pair_timing.tolist() == [list(t) for t in timing]
    return seg, st_


def long_session(t0, hours, timeout, keepalive, publish_every=0, sport=40000, dst=1, flags=ACK | PSH):
    """A single connection sliced by the exporter every `timeout` s; keepalive pings, optional publishes."""
    rows = []
    t = t0
    end_all = t0 + hours * 3600
    while t < end_all:
        e = min(t + timeout - keepalive, end_all)
        pk = max(1, int(timeout // keepalive)) * 2
        b = pk * 53
        if publish_every and int((t - t0) // timeout) % publish_every == 0:
            b += 300
            pk += 1
        last = e >= end_all
        rows.append((t, e, sport, b, pk, flags | (FIN if last else 0), dst))
        t += timeout
    return rows


def test_empty_and_single():
    check(make([]))
    check(make([(T0, T0 + 1, 5000, 100, 2, SYN | ACK | FIN, 1)]))


def test_timeout_slices_become_one_session_and_score_low():
    rows = long_session(T0, 24, 120, 30)
    seg, st_ = check(make(rows))
    assert st_.active_timeout_s == 120 - 30
    assert st_.pair_timing[0, 0] == 120 - 30
    assert st_.is_head.sum() == 1 and not st_.active.any()
    off, t, _ = beat_segments(seg, st_)
    assert score_segments(off, t)[0, F["score"]] == 0.0
    # without stitching every slice would look like a perfect 120 s beacon
    raw = score_segments(seg.offsets, seg.events["start_ns"] / NS)
    assert raw[0, F["score"]] > 0.9


def test_keepalive_30s_inside_one_session_scores_low():
    # idle-timeout exporter: one record per ping, same 5-tuple, no FIN until the end
    rows = [(T0 + k * 30, T0 + k * 30 + 0.05, 40001, 106, 2, ACK | PSH, 2) for k in range(2880)]
    seg, st_ = check(make(rows))
    assert st_.is_head.sum() == 1 and not st_.active.any()
    off, t, _ = beat_segments(seg, st_)
    assert score_segments(off, t)[0, F["score"]] == 0.0


def test_periodic_publishes_inside_a_long_session_still_show():
    rows = long_session(T0, 24, 60, 15, publish_every=10)  # a publish every 10 minutes in one connection
    seg, st_ = check(make(rows))
    assert st_.is_head.sum() == 1
    assert st_.active.sum() >= 140
    off, t, _ = beat_segments(seg, st_)
    assert st_.resolution_s[0] == 45  # publishes placed only to within a slice
    row = score_segments(off, t, resolution_s=st_.resolution_s, dead_s=st_.dead_s)[0]
    assert row[F["score"]] >= 0.9
    assert abs(row[F["period_s"]] - 600) < 5


def test_fin_ends_a_session_and_new_ports_are_new_sessions():
    rows = [(T0 + k * 600, T0 + k * 600 + 2, 40000 + k, 400, 6, SYN | ACK | PSH | FIN, 3) for k in range(100)]
    seg, st_ = check(make(rows))
    assert st_.is_head.all()
    same_port = [(T0 + k * 600, T0 + k * 600 + 2, 40000, 400, 6, SYN | ACK | PSH | FIN, 3) for k in range(100)]
    seg, st_ = check(make(same_port))
    assert st_.is_head.all()  # FIN in every record: reconnects on a fixed port are not stitched


def test_no_flags_tcp_five_tuple_is_one_connection():
    rows = long_session(T0, 6, 300, 60, flags=0)
    seg, st_ = check(make(rows + long_session(T0, 6, 300, 60, sport=40100, dst=4)))
    assert st_.active_timeout_s == 240
    assert st_.is_head.sum() == 2


def test_random_publishes_in_idle_cut_records_carry_dead_time():
    # a chat-like session: messages at random, each burst its own record once idle > 15 s
    rng = np.random.default_rng(3)
    t = np.sort(rng.uniform(0, 86400, 400))
    t = t[np.concatenate([[True], np.diff(t) > 15])]
    rows = [(T0 + x, T0 + x + 0.2, 40002, 500, 3, ACK | PSH, 5) for x in t]
    pings = [x + 16 for x, nxt in zip(t[:-1], t[1:]) if nxt - x > 32]  # keepalives in the longer silences
    rows += [(T0 + x, T0 + x + 0.03, 40002, 106, 2, ACK, 5) for x in pings]
    rows.sort()
    seg, st_ = check(make(rows))
    assert st_.is_head.sum() == 1 and st_.active.sum() == len(t) - 1
    assert st_.dead_s[0] >= 15 and st_.resolution_s[0] == st_.dead_s[0]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5000), st.integers(0, 400), st.sampled_from([1, 2, 3]),
                          st.integers(40, 2000), st.integers(1, 20), st.sampled_from([0, ACK, ACK | FIN, ACK | 4]),
                          st.sampled_from([1, 2])), max_size=60),
       st.sampled_from([0.0, 100.0]))
def test_matches_reference(raw, ta):
    rows = [(T0 + s, T0 + s + d, 40000 + sp, b, pk, fl, dst) for s, d, sp, b, pk, fl, dst in raw]
    check(make(rows), StitchParams(active_timeout_s=ta))


def test_infer_timeout_needs_evidence():
    seg = group_pairs(make([(T0, T0 + 60, 4, 100, 2, ACK, 1), (T0 + 60, T0 + 120, 4, 100, 2, ACK, 1)]))
    assert infer_active_timeout(seg) == 0.0


def test_steady_publication_in_timeout_slices_is_not_a_beacon():
    # every 30-minute slice carries telemetry: the slice starts only repeat the exporter's active timeout
    rows = long_session(T0, 24, 1800, 60, publish_every=1)
    seg, st_ = check(make(rows))
    assert st_.is_head.sum() == 1 and not st_.active.any()


def _sliced_sensor(period, command_every=0, seed=0, hours=24.0, timeout=300.0, expiry=60.0, keepalive=50.0):
    """One TLS session sliced at the active timeout as softflowd/pmacct cut it (the timeout, then the next expiry
    check and the next packet: 300-390 s), keepalive pings (2 packets, 120 B) when idle, a telemetry publish every
    `period` s (2 packets, 200 B), and (C2) a command and its result (3 packets, 560 B) every `command_every` s."""
    rng = np.random.default_rng(seed)
    end_all = T0 + hours * 3600
    pubs = np.arange(T0 + rng.uniform(0, period), end_all, period)
    cmds = np.arange(T0 + rng.uniform(0, command_every), end_all, command_every) if command_every else np.zeros(0)
    rows, t = [], T0
    while t < end_all:
        e = min(t + timeout + rng.uniform(0, expiry), end_all)
        n_pub = int(((pubs >= t) & (pubs < e)).sum())
        n_cmd = int(((cmds >= t) & (cmds < e)).sum())
        pings = max(0, int((e - t) // keepalive) - n_pub)
        rows.append((t, e, 40100, pings * 120 + n_pub * 200 + n_cmd * 560, pings * 2 + n_pub * 2 + n_cmd * 3,
                     ACK | PSH | (FIN if e >= end_all else 0), 5))
        t = e + rng.uniform(1, keepalive)
    return rows


@pytest.mark.parametrize("period", [60.0, 300.0])
def test_a_steady_publisher_is_not_read_as_beats_of_its_alias(period):
    # the slices holding a publish more than the others recur at the alias of the period against 300-390 s slices;
    # a few may still stand out, but no beacon is made of them
    for seed in range(5):
        seg, st_ = check(make(_sliced_sensor(period, seed=seed)))
        assert st_.is_head.sum() == 1
        assert st_.active.sum() <= 10, st_.active.sum()  # of about 250 slices
        off, t, _ = beat_segments(seg, st_)
        row = score_segments(off, t, resolution_s=st_.resolution_s, dead_s=st_.dead_s)[0]
        assert row[F["score"]] < 0.7, row


def test_commands_in_a_sliced_session_still_show():
    for seed in range(3):
        seg, st_ = check(make(_sliced_sensor(300.0, command_every=1800.0, seed=seed)))
        assert st_.active.sum() >= 40  # one slice in about six carries a command (48 a day)
        off, t, _ = beat_segments(seg, st_)
        row = score_segments(off, t, resolution_s=st_.resolution_s, dead_s=st_.dead_s)[0]
        assert row[F["score"]] >= 0.5 and abs(row[F["period_s"]] - 1800) < 200, row
