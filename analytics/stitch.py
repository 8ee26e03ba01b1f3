"""Long-session stitching: flow records that an exporter cut out of one connection become one session again.

Within a pair, records with the same source port (the same 5-tuple) are continuations of one TCP connection when the
next starts after the earlier one ended (within ``max_gap_s``) and the earlier one carries TCP flags without FIN or
RST. Where the exporter sends no flags, a TCP 5-tuple is still one connection (ephemeral ports are not reused within
``max_gap_s``); for other protocols a record continues the previous one when it starts within ``tolerance_s`` of its
end, or when the earlier record lasted about a configured active timeout (``active_timeout_s``).

The active timeout is inferred from the data: per pair, the longest record that a continuation shows was cut (when at
least two are seen and it is at least ``min_timeout_s``); over all pairs, the 99th percentile of such durations.

A stitched session yields one event (its start) for the beacon kernels, plus one event per *active* slice:
a later slice whose bytes exceed the session's leanest bytes-per-packet by ``active_min_bytes`` — a publish inside
the session, not a keepalive. In a session whose later slices are mostly cut by the active timeout (at least three),
unless most cut slices are active (steady publication, below), a slice must also carry ``active_min_bytes``, and
three median absolute deviations, more than the session's median byte rate gives its length: a publisher whose period is near the timeout has a publish in every slice, and the few
slices that come out a packet heavier recur at the alias of its period against the timeout, not at a command. Keepalives and timeout slices therefore do not look like beacons, while periodic
publishes inside a long session still do. Two exporter artefacts are carried to the kernels as per-pair timing:
- a slice cut by the active timeout places its publish only to within the timeout (its start is often just the
  next keepalive): the pair's *resolution* becomes the timeout, and when most such slices carry publishes (steady
  publication) they yield no events at all, since their starts would only replay the timeout's period;
- records cut by the idle timeout are never closer than it: the pair's *dead time* is the shortest start-to-start
  step between such records, so a random publisher does not look regular just because short gaps were merged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
from numba import prange

from analytics.pairs import PairSegments

TCP_FIN = 0x01
TCP_RST = 0x04
NS = 1_000_000_000


@dataclass(frozen=True)
class StitchParams:
    """Scalars of the stitcher."""

    tolerance_s: float = 2.0  # "next start ~ previous end"
    max_gap_s: float = 3600.0  # idle gap inside one connection we still stitch across (flags known)
    timeout_share: float = 0.8  # flags unknown: a record this share of the active timeout long was cut by it
    active_min_bytes: float = 100.0  # bytes beyond the keepalive baseline that make a slice a publish
    active_timeout_s: float = 0.0  # 0: infer from the data
    max_active_share: float = 0.6  # timeout-cut slices: above this share carrying publishes = steady publication
    min_timeout_s: float = 10.0  # shortest active timeout believed (shorter "cut" records are just short records)


@dataclass
class Stitched:
    """Per-event session head (global event index), activity flag, and the inferred active timeout."""

    head: np.ndarray  # int64: index of the first event of this event's session
    active: np.ndarray  # bool: a later slice of a session that carries a publish
    slices: np.ndarray  # int64 per event: slices in this event's session
    active_timeout_s: float  # over all pairs (99th percentile of cut records' durations)
    pair_timing: np.ndarray  # (n_pairs, 3): active timeout seen, timing resolution, dead time of the events (s)
    cut_s: np.ndarray | None = None  # per event: duration (s) of a flag-proven cut record, else -1 (feeds the 99th
    # percentile; kept per pair so an incremental evaluation can recompute it from cached contributions)

    @property
    def resolution_s(self) -> np.ndarray:
        """Per pair: events from timeout-cut slices are placed only to within this many seconds (else 0)."""
        return self.pair_timing[:, 1]

    @property
    def dead_s(self) -> np.ndarray:
        """Per pair: events from idle-cut records inside one session are never closer than this (else 0)."""
        return self.pair_timing[:, 2]

    @property
    def is_head(self) -> np.ndarray:
        """Events that start a session."""
        return self.head == np.arange(len(self.head))

    @property
    def beat(self) -> np.ndarray:
        """Events the beacon kernels see: session starts and active slices."""
        return self.is_head | self.active


@numba.njit(cache=True)
def _continues(prev, cur, start_ns, end_ns, flags, sport, tcp, tol, max_gap, ta, share):
    if sport[cur] != sport[prev]:
        return False
    gap = (start_ns[cur] / 1e9) - (end_ns[prev] / 1e9)
    if gap < -tol or gap > max_gap:
        return False
    if flags[prev] != 0:
        return (flags[prev] & (TCP_FIN | TCP_RST)) == 0
    if tcp:
        return True  # flags not exported: a TCP 5-tuple is not reused by a new connection within max_gap
    if gap <= tol:
        return True
    return ta > 0 and (_dur(start_ns, end_ns, prev)) >= share * ta


@numba.njit(cache=True)
def _port_order(sport, lo, hi):
    # stable by source port: events of one 5-tuple stay in time order (insertion sort for the usual short pairs)
    n = hi - lo
    if n > 48:
        return np.argsort(sport[lo:hi], kind="mergesort") + lo
    order = np.empty(n, np.int64)
    for k in range(n):
        v = sport[lo + k]
        j = k
        while j > 0 and sport[order[j - 1]] > v:
            order[j] = order[j - 1]
            j -= 1
        order[j] = lo + k
    return order


@numba.njit(cache=True)
def _candidates_pair(start, end, flags, sport, lo, hi, tol, max_gap, dur_out):
    """Durations of records followed by a flag-proven continuation (for the active-timeout estimate)."""
    order = _port_order(sport, lo, hi)
    for k in range(1, hi - lo):
        prev, cur = order[k - 1], order[k]
        if sport[cur] == sport[prev] and flags[prev] != 0 and (flags[prev] & (TCP_FIN | TCP_RST)) == 0:
            gap = start[cur] - end[prev]
            if -tol <= gap <= max_gap:
                dur_out[prev] = end[prev] - start[prev]


@numba.njit(cache=True, inline="always")
def _dur(start_ns, end_ns, i):
    """Seconds record i lasts (as the stitcher has always computed it: each end point in seconds first)."""
    return (end_ns[i] / 1e9) - (start_ns[i] / 1e9)


@numba.njit(cache=True)
def _stitch_pair(start_ns, end_ns, nbytes, packets, flags, sport, tcp, lo, hi, tol, max_gap, ta_fixed, share,
                 min_bytes, max_active_share, min_timeout, head, active, slices, pair_out, dur_out):
    order = _port_order(sport, lo, hi)
    n = hi - lo
    for k in range(n):
        cur = order[k]
        head[cur] = cur
        active[cur] = False
        dur_out[cur] = -1.0
        if k > 0:
            prev = order[k - 1]
            if _continues(prev, cur, start_ns, end_ns, flags, sport, tcp, tol, max_gap, ta_fixed, share):
                head[cur] = head[prev]
            # a flag-proven cut (for the all-pairs active-timeout estimate)
            if sport[cur] == sport[prev] and flags[prev] != 0 and (flags[prev] & (TCP_FIN | TCP_RST)) == 0:
                gap = (start_ns[cur] / 1e9) - (end_ns[prev] / 1e9)
                if -tol <= gap <= max_gap:
                    dur_out[prev] = _dur(start_ns, end_ns, prev)
    for k in range(n):
        cur = order[k]
        if head[cur] == cur:
            slices[cur] = 0
        slices[head[cur]] += 1

    # this pair's active timeout: the longest record that a continuation shows was cut, not ended
    ta = ta_fixed
    if ta <= 0:
        longest = 0.0
        seen = 0
        for k in range(1, n):
            prev, cur = order[k - 1], order[k]
            if head[cur] == head[prev]:
                longest = max(longest, _dur(start_ns, end_ns, prev))
                seen += 1
        ta = longest if seen >= 2 and longest >= min_timeout else 0.0
    # the typical cut (median continued record of at least min_timeout): the longest one above is stretched by
    # the exporter's expiry interval and the next packet's wait, so most timeout slices are shorter than 0.8 of it
    typical_cut = ta_fixed
    if typical_cut <= 0:
        conts = np.empty(n)
        m = 0
        for k in range(1, n):
            prev, cur = order[k - 1], order[k]
            d = _dur(start_ns, end_ns, prev)
            if head[cur] == head[prev] and d >= min_timeout:
                conts[m] = d
                m += 1
        typical_cut = np.median(conts[:m]) if m >= 3 else 0.0
    any_cut_active = False
    any_located_active = False
    for k in range(n):
        cur = order[k]
        h = head[cur]
        if slices[h] < 2 or h != cur:
            continue
        # session starting at cur: events order[k:k+slices]; leanest bytes per packet = keepalive baseline
        base = 1e300
        for q in range(k, k + slices[h]):
            e = order[q]
            if packets[e] > 0:
                base = min(base, nbytes[e] / packets[e])
        # in a session mostly cut by the active timeout, a slice is compared with the session's typical slice too:
        # a sensor that publishes about once per timeout has a publish in every slice, and which slices come out a
        # packet heavier is the beat of its period against the timeout (an alias), not a command
        ncut = 0
        nlater = 0
        for q in range(k + 1, k + slices[h]):
            e = order[q]
            if packets[e] > 0:
                nlater += 1
                if typical_cut > 0 and _dur(start_ns, end_ns, e) >= share * typical_cut:
                    ncut += 1
        # the session's typical byte rate and how far slices wander from it by themselves (a publish more or less as
        # a slice's length and phase vary): a slice is a command only beyond three median absolute deviations
        rate = 0.0
        spread = 0.0
        mostly_cut = ncut >= 3 and 2 * ncut >= nlater
        if mostly_cut:
            rates = np.empty(nlater)
            j = 0
            for q in range(k + 1, k + slices[h]):
                e = order[q]
                if packets[e] > 0:
                    rates[j] = nbytes[e] / max(_dur(start_ns, end_ns, e), 1.0)
                    j += 1
            rate = np.median(rates)
            j = 0
            for q in range(k + 1, k + slices[h]):
                e = order[q]
                if packets[e] > 0:
                    rates[j] = nbytes[e] - rate * max(_dur(start_ns, end_ns, e), 1.0)
                    j += 1
            spread = 3.0 * np.median(np.abs(rates - np.median(rates)))
        cut = 0
        cut_active = 0
        for q in range(k + 1, k + slices[h]):
            e = order[q]
            if packets[e] > 0 and nbytes[e] - packets[e] * base >= min_bytes:
                active[e] = True
            if ta > 0 and _dur(start_ns, end_ns, e) >= share * ta:
                cut += 1
                if active[e]:
                    cut_active += 1
        # a slice cut by the active timeout does not locate its publish in time: when most such slices carry
        # publishes the session is steady publication, and their starts would only replay the timeout's period
        steady = cut > 0 and cut_active > max_active_share * cut
        for q in range(k + 1, k + slices[h]):
            e = order[q]
            is_cut = ta > 0 and _dur(start_ns, end_ns, e) >= share * ta
            if is_cut and steady:
                active[e] = False
            elif mostly_cut and nbytes[e] - rate * max(_dur(start_ns, end_ns, e), 1.0) < max(min_bytes,
                                                                                                         spread):
                active[e] = False
            if active[e]:
                if is_cut:
                    any_cut_active = True
                else:
                    any_located_active = True
    for k in range(n):
        cur = order[k]
        slices[cur] = slices[head[cur]]
    # timing of the events from inside sessions: slices cut by the timeout only place a publish to within the
    # timeout (resolution); records cut by the idle timeout are never closer than the exporter's idle timeout
    # (dead time), the shortest start-to-start step between such records
    dead = 0.0
    if any_located_active:
        dead = 1e300
        for k in range(1, n):
            prev, cur = order[k - 1], order[k]
            if head[cur] == head[prev] and not (ta > 0 and _dur(start_ns, end_ns, prev) >= share * ta):
                dead = min(dead, (start_ns[cur] / 1e9) - (start_ns[prev] / 1e9))
        if dead == 1e300:
            dead = 0.0
    pair_out[0] = ta
    # events from inside sessions sit on the grid of the slices (keepalives, timeout cuts), not at the publish;
    # this timing describes the pair's events only when most of them come from inside sessions
    heads = 0
    inside = 0
    for k in range(n):
        cur = order[k]
        if head[cur] == cur:
            heads += 1
        elif active[cur]:
            inside += 1
    if inside > heads:
        pair_out[1] = max(ta if any_cut_active else 0.0, dead)
        pair_out[2] = dead
    elif any_cut_active:
        # a few timeout slices among many connections: their starts (the timeout's grid) would pass for precise
        # times; they add nothing the connections do not already show
        for k in range(n):
            cur = order[k]
            if active[cur] and ta > 0 and _dur(start_ns, end_ns, cur) >= share * ta:
                active[cur] = False


@numba.njit(cache=True, parallel=True)
def _candidates_all(offsets, start, end, flags, sport, tol, max_gap, nchunks):
    npairs = offsets.shape[0] - 1
    dur = np.full(offsets[npairs], -1.0)
    bounds = np.searchsorted(offsets, np.linspace(0, offsets[npairs], nchunks + 1).astype(np.int64))
    bounds[0] = 0
    bounds[nchunks] = npairs
    for c in prange(nchunks):
        for p in range(bounds[c], bounds[c + 1]):
            _candidates_pair(start, end, flags, sport, offsets[p], offsets[p + 1], tol, max_gap, dur)
    return dur


@numba.njit(cache=True, parallel=True)
def _stitch_all(offsets, start_ns, end_ns, nbytes, packets, flags, sport, tcp, tol, max_gap, ta_fixed, share,
                min_bytes, max_active_share, min_timeout, nchunks):
    npairs = offsets.shape[0] - 1
    n = offsets[npairs]
    head = np.empty(n, np.int64)
    active = np.zeros(n, np.bool_)
    slices = np.zeros(n, np.int64)
    pair_out = np.zeros((npairs, 3))
    dur = np.empty(n)
    bounds = np.searchsorted(offsets, np.linspace(0, n, nchunks + 1).astype(np.int64))
    bounds[0] = 0
    bounds[nchunks] = npairs
    for c in prange(nchunks):
        for p in range(bounds[c], bounds[c + 1]):
            _stitch_pair(start_ns, end_ns, nbytes, packets, flags, sport, tcp[p], offsets[p], offsets[p + 1], tol,
                         max_gap, ta_fixed, share, min_bytes, max_active_share, min_timeout, head, active, slices,
                         pair_out[p], dur)
    return head, active, slices, pair_out, dur


def infer_active_timeout(seg: PairSegments, params: StitchParams = StitchParams()) -> float:
    """The exporter's active timeout (s) seen in the data, or 0 when fewer than 3 records show it."""
    if len(seg) == 0:
        return 0.0
    e = seg.events
    dur = _candidates_all(seg.offsets, e["start_ns"].astype(np.float64) / NS, e["end_ns"].astype(np.float64) / NS,
                          np.ascontiguousarray(e["tcp_flags"]), np.ascontiguousarray(e["src_port"]),
                          params.tolerance_s, params.max_gap_s, _nchunks(seg))
    dur = dur[dur >= 0]
    if len(dur) < 3:
        return 0.0
    return float(np.ceil(np.quantile(dur, 0.99)))


def quantile_sorted(a: np.ndarray, q: float) -> float:
    """np.quantile(a, q) (linear, numpy's arithmetic) of an already sorted non-empty array, in O(1)."""
    n = len(a)
    v = (n - 1) * q
    lo = int(np.floor(v))
    hi = min(lo + 1, n - 1)
    g = v - lo
    x, y = float(a[lo]), float(a[hi])
    d = y - x
    return y - d * (1 - g) if g >= 0.5 else x + d * g


def stitch(seg: PairSegments, params: StitchParams = StitchParams()) -> Stitched:
    """Sessions of every pair's records (see the module docstring)."""
    for k, dt in (("start_ns", np.int64), ("end_ns", np.int64), ("bytes", np.uint64), ("packets", np.uint64),
                  ("tcp_flags", np.uint8), ("src_port", np.uint16)):
        if seg.events[k].dtype != dt:
            raise TypeError(f"event column {k} must be {np.dtype(dt)}")
    if len(seg) == 0:
        z = np.zeros(0, np.int64)
        return Stitched(z, np.zeros(0, bool), z, params.active_timeout_s, np.zeros((seg.n_pairs, 3)), np.zeros(0))
    e = seg.events
    tcp = np.ascontiguousarray(seg.keys["proto"] == 6)
    head, active, slices, pair_out, dur = _stitch_all(
        seg.offsets, np.ascontiguousarray(e["start_ns"]), np.ascontiguousarray(e["end_ns"]),
        np.ascontiguousarray(e["bytes"]), np.ascontiguousarray(e["packets"]), np.ascontiguousarray(e["tcp_flags"]),
        np.ascontiguousarray(e["src_port"]), tcp, params.tolerance_s, params.max_gap_s, params.active_timeout_s,
        params.timeout_share, params.active_min_bytes, params.max_active_share, params.min_timeout_s, _nchunks(seg))
    cut = dur
    dur = dur[dur >= 0]
    ta = params.active_timeout_s or (float(np.ceil(np.quantile(dur, 0.99))) if len(dur) >= 3 else 0.0)
    return Stitched(head, active, slices, ta, pair_out, cut)


@numba.njit(cache=True, parallel=True)
def _beats(offsets, head, active, start_ns, nchunks):
    """Beat events (session starts and active slices, as Stitched.beat) per pair: counted, then written, in
    parallel chunks of pairs balanced by events."""
    npairs = offsets.shape[0] - 1
    bounds = np.searchsorted(offsets, np.linspace(0, offsets[npairs], nchunks + 1).astype(np.int64))
    bounds[0] = 0
    bounds[nchunks] = npairs
    out_off = np.zeros(npairs + 1, np.int64)
    for c in prange(nchunks):
        for p in range(bounds[c], bounds[c + 1]):
            k = 0
            for i in range(offsets[p], offsets[p + 1]):
                if head[i] == i or active[i]:
                    k += 1
            out_off[p + 1] = k
    for p in range(npairs):
        out_off[p + 1] += out_off[p]
    idx = np.empty(out_off[npairs], np.int64)
    t = np.empty(out_off[npairs])
    for c in prange(nchunks):
        k = out_off[bounds[c]]
        for i in range(offsets[bounds[c]], offsets[bounds[c + 1]]):
            if head[i] == i or active[i]:
                idx[k] = i
                t[k] = start_ns[i] / 1e9
                k += 1
    return out_off, t, idx


def beat_segments(seg: PairSegments, st: Stitched) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(offsets, times in s, event index) of the events the beacon kernels see, per pair, in time order."""
    return _beats(seg.offsets, np.ascontiguousarray(st.head), np.ascontiguousarray(st.active),
                  np.ascontiguousarray(seg.events["start_ns"]),
                  _nchunks(seg))


def _nchunks(seg: PairSegments) -> int:
    return max(1, min(seg.n_pairs, numba.get_num_threads() * 16))
