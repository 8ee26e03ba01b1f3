"""Streaming pair state over the TimeWindow with bounded memory.

``PairWindow`` keeps the pub/sub flow rows of the last ``window_s`` seconds as columns. Appends are cheap (a list
of column chunks); ``snapshot(now_ns)`` compacts them into one set of columns and enforces the bounds:
- rows older than the window are dropped (idle pairs therefore disappear once their last row ages out, and sooner
  when ``idle_s`` is shorter than the window),
- each pair keeps at most ``max_per_pair`` rows (the latest ones: a 1 s beacon over 24 h still has enough),
- the whole state keeps at most ``max_rows`` rows: the pairs seen least recently are evicted whole.
The compacted columns become the state, so memory stays bounded between evaluations by the rows of one cadence.

A snapshot depends only on the rows and the order they arrived in, never on how they were batched, so a score
recomputed on a cadence equals a batch recompute over the same window (tests/analytics/test_window.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from analytics.pairs import EVENT_COLUMNS, KEY_COLUMNS, PairSegments, _hash_rows, _nchunks, group_pairs, take

#: Columns the detector keeps per row (topic names are reduced to their anomaly score at ingest).
STATE_COLUMNS = ("start_ns", "end_ns", "src_hi", "src_lo", "dst_hi", "dst_lo", "dst_port", "src_port", "proto",
                 "bytes", "packets", "tcp_flags", "app_proto", "flags", "topic_score")
_DTYPES = {"topic_score": np.float32}


@dataclass
class WindowStats:
    """Counters of what the bounds removed (cumulative)."""

    expired_rows: int = 0
    capped_rows: int = 0
    evicted_pairs: int = 0
    evicted_rows: int = 0


class _BoundedWindow:
    """What PairWindow and PairState share: the bounds, and rows queued as chunks until the next compaction."""

    def __init__(self, window_s: float, max_per_pair: int = 50_000, max_rows: int = 20_000_000,
                 idle_s: float | None = None):
        if window_s <= 0 or max_per_pair < 1 or max_rows < 1:
            raise ValueError("window_s, max_per_pair and max_rows must be positive")
        self.window_ns = int(window_s * 1e9)
        self.idle_ns = int((idle_s if idle_s is not None else window_s) * 1e9)
        self.max_per_pair = int(max_per_pair)
        self.max_rows = int(max_rows)
        self.stats = WindowStats()
        self._chunks: list[dict[str, np.ndarray]] = []
        self._pending = 0

    def add(self, cols: dict[str, np.ndarray]) -> None:
        """Append rows (a dict with every STATE_COLUMNS column, equal lengths)."""
        n = len(cols["start_ns"])
        if n == 0:
            return
        chunk = {}
        for k in STATE_COLUMNS:
            v = np.asarray(cols[k])
            if len(v) != n:
                raise ValueError(f"column {k} has {len(v)} rows, expected {n}")
            chunk[k] = v.astype(_DTYPES[k]) if k in _DTYPES else v
        self._chunks.append(chunk)
        self._pending += n
        if self._pending > max(self.max_rows // 4, 1_000_000):  # bound memory between evaluations
            self._bound_pending()

    def _bound_pending(self) -> None:
        """Fold the pending rows into the state now (memory stays bounded between evaluations)."""
        raise NotImplementedError


class PairWindow(_BoundedWindow):
    """Bounded per-pair state over a sliding TimeWindow."""


    def __len__(self) -> int:
        return sum(len(c["start_ns"]) for c in self._chunks)

    def _bound_pending(self) -> None:
        self.snapshot(max(int(c["start_ns"].max()) for c in self._chunks))

    def snapshot(self, now_ns: int) -> dict[str, np.ndarray]:
        """The rows of the window ending at now_ns after the bounds; also becomes the new state."""
        if not self._chunks:
            return {k: np.zeros(0, _DTYPES.get(k, np.int64)) for k in STATE_COLUMNS}
        cols = {k: np.concatenate([c[k] for c in self._chunks]) if len(self._chunks) > 1 else self._chunks[0][k]
                for k in STATE_COLUMNS}
        start = cols["start_ns"]
        keep = (start >= now_ns - self.window_ns) & (start <= now_ns)
        self.stats.expired_rows += int((start < now_ns - self.window_ns).sum())
        future = start > now_ns  # rows ahead of now (out-of-order feeds) stay in the state, unscored
        later = {k: v[future] for k, v in cols.items()} if future.any() else None
        cols = {k: v[keep] for k, v in cols.items()}
        if len(cols["start_ns"]):
            seg = group_pairs(cols)
            counts = seg.counts()
            last = seg.events["start_ns"][seg.offsets[1:] - 1]
            # idle pairs and pairs over the per-pair cap
            rank_from_end = np.repeat(seg.offsets[1:], counts) - np.arange(len(seg.row)) - 1
            keep_ev = rank_from_end < self.max_per_pair
            self.stats.capped_rows += int((~keep_ev).sum())
            alive = last >= now_ns - self.idle_ns
            kept = np.minimum(counts, self.max_per_pair) * alive
            if kept.sum() > self.max_rows:  # global budget: evict the pairs seen least recently
                order = np.lexsort((-np.arange(seg.n_pairs), last))[::-1]
                within = np.cumsum(kept[order]) <= self.max_rows
                budget_ok = np.zeros(seg.n_pairs, bool)
                budget_ok[order[within]] = True
                evicted = alive & ~budget_ok
                self.stats.evicted_pairs += int(evicted.sum())
                self.stats.evicted_rows += int(kept[evicted].sum())
                alive &= budget_ok
            keep_ev &= np.repeat(alive, counts)
            rows = np.sort(seg.row[keep_ev])  # back to arrival order
            cols = {k: v[rows] for k, v in cols.items()}
        state = cols
        if later is not None:
            state = {k: np.concatenate([cols[k], later[k]]) for k in STATE_COLUMNS}
        self._chunks = [state] if len(state["start_ns"]) else []
        self._pending = 0
        return cols


# ---------------------------------------------------------------------------------------------- incremental state

#: Columns kept per row in the incremental state (pair keys are kept once per pair; seq is the arrival order).
ROW_COLUMNS = ("start_ns", "end_ns", "bytes", "packets", "tcp_flags", "src_port", "app_proto", "topic_score",
               "flags", "seq")
_KEY_DTYPES = {"src_hi": np.uint64, "src_lo": np.uint64, "dst_hi": np.uint64, "dst_lo": np.uint64,
               "dst_port": np.uint16, "proto": np.uint8}


class HashCollision(Exception):
    """Two different pair keys share a 64-bit hash (about 3e-8 for a million pairs): the state cannot index them."""


@numba.njit(cache=True)
def _bsearch(a, lo, hi, v, right):
    """First index of sorted a[lo:hi] with a[i] > v (right) or a[i] >= v (left)."""
    while lo < hi:
        mid = (lo + hi) >> 1
        if a[mid] < v or (right and a[mid] == v):
            lo = mid + 1
        else:
            hi = mid
    return lo


@numba.njit(cache=True)
def _count_before(start, lo, n, v, right):
    """Per block start[lo[i]:lo[i]+n[i]] (sorted): its rows before v (< v, or <= v when right)."""
    out = np.empty(len(lo), np.int64)
    for i in range(len(lo)):
        out[i] = _bsearch(start, lo[i], lo[i] + n[i], v, right) - lo[i]
    return out


@numba.njit(cache=True)
def _merge_plan(pool_start, lo, n, new_start, gstart, gend, dst):
    """Per group g, the stable merge by start of pool rows lo[g]:lo[g]+n[g] (first on ties) with the sorted new rows
    gstart[g]:gend[g]: source references (>= 0 a pool row, < 0 new row -1-j) and pool destinations from dst[g]."""
    total = 0
    for g in range(len(lo)):
        total += n[g] + gend[g] - gstart[g]
    src = np.empty(total, np.int64)
    to = np.empty(total, np.int64)
    k = 0
    for g in range(len(lo)):
        i, ie, j, je, d = lo[g], lo[g] + n[g], gstart[g], gend[g], dst[g]
        while i < ie or j < je:
            if j >= je or (i < ie and pool_start[i] <= new_start[j]):
                src[k] = i
                i += 1
            else:
                src[k] = -1 - j
                j += 1
            to[k] = d
            d += 1
            k += 1
    return src, to


@numba.njit(cache=True)
def _apply_merge(pool, new, src, to):
    """pool[to[k]] = the row src[k] refers to (all read before any is written: merges may overlap in place)."""
    vals = np.empty(len(src), pool.dtype)
    for k in range(len(src)):
        s = src[k]
        vals[k] = pool[s] if s >= 0 else new[-1 - s]
    for k in range(len(src)):
        pool[to[k]] = vals[k]


class PairState(_BoundedWindow):
    """PairWindow's incremental twin: rows stay grouped by pair across passes, so a pass costs the new rows and
    the pairs they, expiry and the bounds touch (each pair a time-sorted block of a row pool; a sorted 64-bit hash
    index finds pairs). ``advance(now)`` gives the same rows per pair as ``PairWindow.snapshot(now)`` fed the same
    ``add`` calls, with the same counters; ``take_dirty`` lists the pairs whose scored rows may have changed."""

    def __init__(self, window_s: float, max_per_pair: int = 50_000, max_rows: int = 20_000_000,
                 idle_s: float | None = None):
        super().__init__(window_s, max_per_pair, max_rows, idle_s)
        self.now_ns: int | None = None
        self._seq = 0
        self._ph = np.zeros(0, np.uint64)  # sorted pair hashes
        self._pslot = np.zeros(0, np.int64)  # slot of each
        self._nslots = 0
        self._free = np.zeros(0, np.int64)
        self.h = np.zeros(0, np.uint64)  # per slot: pair hash (the pair order of group_pairs)
        self.keys = {k: np.zeros(0, dt) for k, dt in _KEY_DTYPES.items()}
        self.lo = np.zeros(0, np.int64)  # first row in the pool
        self.n = np.zeros(0, np.int64)  # rows kept (scored ones, then those ahead of now)
        self.ncur = np.zeros(0, np.int64)  # rows at or before now: the ones scored
        self._base = np.zeros(0, np.int64)  # block start and capacity in the pool
        self._cap = np.zeros(0, np.int64)
        self.used = np.zeros(0, bool)
        self.pool: dict[str, np.ndarray] = {}  # ROW_COLUMNS, typed by the first rows merged
        self._pool_end = 0
        self._live = 0
        self._dirty: list[np.ndarray] = []

    def __len__(self) -> int:
        return self._live + self._pending

    @property
    def n_slots(self) -> int:
        """Slots allocated (per-slot arrays have at least this many entries)."""
        return self._nslots

    def _bound_pending(self) -> None:
        latest = max(int(c["start_ns"].max()) for c in self._chunks)  # as PairWindow: up to the latest row seen
        u = np.flatnonzero(self.used[:self._nslots])
        if len(u):
            latest = max(latest, int(self.pool["start_ns"][self.lo[u] + self.n[u] - 1].max()))
        self.advance(latest)

    def take_dirty(self) -> np.ndarray:
        """Slots whose scored rows may have changed since the last call (sorted, unique)."""
        if not self._dirty:
            return np.zeros(0, np.int64)
        size = max([self._nslots] + [int(d.max()) + 1 for d in self._dirty if len(d)])
        seen = np.zeros(size, bool)  # a mask, not np.unique: that took seconds on millions of slots
        for d in self._dirty:
            seen[d] = True
        self._dirty = []
        return np.flatnonzero(seen)

    def scored_slots(self) -> np.ndarray:
        """Slots with rows at or before now, in the pair order of group_pairs (by hash)."""
        s = self._pslot
        return s[self.ncur[s] > 0]

    def segments(self, slots: np.ndarray) -> PairSegments:
        """The scored rows of the given slots as PairSegments (cost: their rows); ``row`` holds pool rows."""
        slots = np.asarray(slots, np.int64)
        cnt = self.ncur[slots]
        offsets = np.zeros(len(slots) + 1, np.int64)
        np.cumsum(cnt, out=offsets[1:])
        idx = np.repeat(self.lo[slots] - offsets[:-1], cnt) + np.arange(offsets[-1], dtype=np.int64)
        events = {k: take(self.pool[k], idx) for k in EVENT_COLUMNS}
        return PairSegments(offsets, {k: v[slots] for k, v in self.keys.items()}, events, idx)

    def rows(self) -> dict[str, np.ndarray]:
        """Every kept and pending row (STATE_COLUMNS) in arrival order (for a fallback to PairWindow, and tests)."""
        if not self.pool:
            return {k: np.concatenate([c[k] for c in self._chunks]) for k in STATE_COLUMNS} if self._chunks else {}
        u = np.flatnonzero(self.used[:self._nslots])
        cnt = self.n[u]
        off = np.concatenate([[0], np.cumsum(cnt)])
        idx = np.repeat(self.lo[u] - off[:-1], cnt) + np.arange(off[-1], dtype=np.int64)
        cols = {k: self.pool[k][idx] for k in STATE_COLUMNS if k in self.pool}
        for k in KEY_COLUMNS:
            cols[k] = np.repeat(self.keys[k][u], cnt)
        order = np.argsort(self.pool["seq"][idx], kind="stable")
        cols = {k: v[order] for k, v in cols.items()}
        if self._chunks:
            cols = {k: np.concatenate([cols[k]] + [c[k] for c in self._chunks]) for k in STATE_COLUMNS}
        return cols

    # ------------------------------------------------------------------------------------------------ passes

    def advance(self, now_ns: int) -> None:
        """Merge the pending rows and apply the bounds at now_ns (PairWindow.snapshot's rules)."""
        now = int(now_ns)
        self._merge_pending(now)
        self._bounds(now)
        self.now_ns = now

    def _grow_slots(self, need: int) -> None:
        cap = len(self.h)
        if need <= cap:
            return
        new = max(need, 2 * cap, 1024)

        def grow(a):
            out = np.zeros(new, a.dtype)
            out[:cap] = a
            return out
        self.h = grow(self.h)
        self.keys = {k: grow(v) for k, v in self.keys.items()}
        for name in ("lo", "n", "ncur", "_base", "_cap", "used"):
            setattr(self, name, grow(getattr(self, name)))

    def _grow_pool(self, need: int) -> None:
        cap = len(self.pool["seq"])
        if need <= cap:
            return
        new = max(need, 2 * cap, 4096)
        for k, v in self.pool.items():
            out = np.empty(new, v.dtype)
            out[:self._pool_end] = v[:self._pool_end]
            self.pool[k] = out

    def _merge_pending(self, now: int) -> None:
        if not self._chunks:
            return
        cols = {k: np.concatenate([c[k] for c in self._chunks]) if len(self._chunks) > 1 else self._chunks[0][k]
                for k in STATE_COLUMNS}
        k = len(cols["start_ns"])
        if not self.pool:
            self.pool = {x: np.empty(0, np.int64 if x == "seq" else cols[x].dtype) for x in ROW_COLUMNS}
        for name, dt in tuple(_KEY_DTYPES.items()) + (("start_ns", np.int64),):
            if cols[name].dtype != dt:
                raise TypeError(f"column {name} must be {np.dtype(dt)}, got {cols[name].dtype}")
        a, b, c, d = (np.ascontiguousarray(cols[x]) for x in ("src_hi", "src_lo", "dst_hi", "dst_lo"))
        port, proto = np.ascontiguousarray(cols["dst_port"]), np.ascontiguousarray(cols["proto"])
        h, h2 = _hash_rows(a, b, c, d, port, proto, _nchunks(k))
        order = np.lexsort((cols["start_ns"], h))  # by pair hash, then time; ties keep arrival order
        hs, h2s = h[order], h2[order]
        change = np.empty(k, bool)
        change[0] = True
        np.not_equal(hs[1:], hs[:-1], out=change[1:])
        if ((h2s[1:] != h2s[:-1]) & ~change[1:]).any():
            raise HashCollision("two new pair keys share a 64-bit hash")
        gstart = np.flatnonzero(change)
        gend = np.append(gstart[1:], k)
        gh = hs[gstart]
        first = order[gstart]
        gkeys = {x: cols[x][first] for x in KEY_COLUMNS}
        pos = np.searchsorted(self._ph, gh)
        found = pos < len(self._ph)
        found[found] = self._ph[pos[found]] == gh[found]
        slot = np.full(len(gh), -1, np.int64)
        slot[found] = self._pslot[pos[found]]
        if found.any():
            fs = slot[found]
            same = np.ones(int(found.sum()), bool)
            for x in KEY_COLUMNS:
                same &= self.keys[x][fs] == gkeys[x][found]
            if not same.all():
                raise HashCollision("a new pair key shares its 64-bit hash with a kept pair")
        # ---- from here on the state changes
        new = ~found
        nn = int(new.sum())
        if nn:
            take_free = min(nn, len(self._free))
            fresh = np.arange(self._nslots, self._nslots + nn - take_free, dtype=np.int64)
            ns = np.concatenate([self._free[len(self._free) - take_free:], fresh])
            self._free = self._free[:len(self._free) - take_free]
            self._nslots += nn - take_free
            self._grow_slots(self._nslots)
            slot[new] = ns
            self.h[ns] = gh[new]
            for x in KEY_COLUMNS:
                self.keys[x][ns] = gkeys[x][new]
            self.lo[ns] = self._base[ns] = self.n[ns] = self.ncur[ns] = self._cap[ns] = 0
            self.used[ns] = True
            self._ph = np.insert(self._ph, pos[new], gh[new])
            self._pslot = np.insert(self._pslot, pos[new], ns)
        cnt = gend - gstart
        need = self.n[slot] + cnt
        # a block that cannot take its new rows moves to the end of the pool with room to grow
        move = need > self._cap[slot]
        dst = self._base[slot].copy()
        if move.any():
            newcap = need[move] + need[move] // 2 + 4
            ends = np.cumsum(newcap)
            dst[move] = self._pool_end + ends - newcap
            self._grow_pool(self._pool_end + int(ends[-1]))
            self._pool_end += int(ends[-1])
            self._base[slot[move]] = dst[move]
            self._cap[slot[move]] = newcap
        new_cols = {x: cols[x][order].astype(self.pool[x].dtype, copy=False) for x in STATE_COLUMNS if x in self.pool}
        new_cols["seq"] = (self._seq + order).astype(np.int64)
        self._seq += k
        src, to = _merge_plan(self.pool["start_ns"], self.lo[slot], self.n[slot], new_cols["start_ns"], gstart,
                              gend, dst)
        for x, pcol in self.pool.items():
            _apply_merge(pcol, np.ascontiguousarray(new_cols[x]), src, to)
        self.lo[slot] = dst
        self.n[slot] = need
        self._live += k
        old = self.ncur[slot].copy()
        self.ncur[slot] = _count_before(self.pool["start_ns"], dst, need, now, True)
        # changed scored rows: a new row at or before now (rows of a pair are time-sorted), or a moved boundary
        self._dirty.append(slot[(self.ncur[slot] != old) | (new_cols["start_ns"][gstart] <= now)])
        self._chunks = []
        self._pending = 0

    def _drop_front(self, s: np.ndarray, k: np.ndarray) -> None:
        """Drop the first k rows of slots s (expired, capped, idle or evicted scored rows)."""
        self.lo[s] += k
        self.n[s] -= k
        self.ncur[s] -= k
        self._live -= int(k.sum())
        self._dirty.append(s[k > 0])

    def _bounds(self, now: int) -> None:
        if not self.pool:
            return
        start = self.pool["start_ns"]
        u = np.flatnonzero(self.used[:self._nslots])
        if self.now_ns is not None and now != self.now_ns:  # rows ahead of the old now may now be due
            c = u if now < self.now_ns else u[self.n[u] > self.ncur[u]]
            if len(c):
                nc = _count_before(start, self.lo[c], self.n[c], now, True)
                self._dirty.append(c[nc != self.ncur[c]])
                self.ncur[c] = nc
        cutoff = now - self.window_ns
        c = u[start[self.lo[u]] < cutoff]
        if len(c):
            e = _count_before(start, self.lo[c], self.n[c], cutoff, False)
            self.stats.expired_rows += int(e.sum())
            self._drop_front(c, e)
        c = u[self.ncur[u] > self.max_per_pair]
        if len(c):
            e = self.ncur[c] - self.max_per_pair
            self.stats.capped_rows += int(e.sum())
            self._drop_front(c, e)
        if self.idle_ns < self.window_ns:
            c = u[self.ncur[u] > 0]
            idle = start[self.lo[c] + self.ncur[c] - 1] < now - self.idle_ns
            c = c[idle]
            self._drop_front(c, self.ncur[c].copy())
        c = u[self.ncur[u] > 0]
        kept = self.ncur[c]
        if int(kept.sum()) > self.max_rows:  # global budget: evict the pairs seen least recently (as PairWindow)
            last = start[self.lo[c] + kept - 1]
            order = np.lexsort((self.h[c], -last))
            within = np.cumsum(kept[order]) <= self.max_rows
            ev = c[order[~within]]
            self.stats.evicted_pairs += len(ev)
            self.stats.evicted_rows += int(self.ncur[ev].sum())
            self._drop_front(ev, self.ncur[ev].copy())
        gone = u[self.n[u] == 0]
        if len(gone):
            self.used[gone] = False
            self.ncur[gone] = 0
            self._dirty.append(gone)
            keep = self.used[self._pslot]
            self._ph, self._pslot = self._ph[keep], self._pslot[keep]
            self._free = np.concatenate([self._free, gone])
        if self._pool_end > 2 * self._live + 65536:
            self._compact()

    def _compact(self) -> None:
        """Rewrite the pool with every block packed (a little room each), dropping the holes."""
        u = np.flatnonzero(self.used[:self._nslots])
        cnt = self.n[u]
        cap = cnt + cnt // 8 + 2
        base = np.concatenate([[0], np.cumsum(cap)[:-1]]).astype(np.int64)
        total = int(cap.sum())
        off = np.concatenate([[0], np.cumsum(cnt)])
        src = np.repeat(self.lo[u] - off[:-1], cnt) + np.arange(off[-1], dtype=np.int64)
        dst = np.repeat(base - off[:-1], cnt) + np.arange(off[-1], dtype=np.int64)
        for k, v in self.pool.items():
            out = np.empty(max(total, 4096), v.dtype)
            out[dst] = take(v, src)
            self.pool[k] = out
        self.lo[u] = self._base[u] = base
        self._cap[u] = cap
        self._pool_end = total
