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

import numpy as np

from analytics.pairs import group_pairs

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


class PairWindow:
    """Bounded per-pair state over a sliding TimeWindow."""

    def __init__(self, window_s: float, max_per_pair: int = 50_000, max_rows: int = 20_000_000,
                 idle_s: float | None = None):
        if window_s <= 0 or max_per_pair < 1 or max_rows < 1:
            raise ValueError("window_s, max_per_pair and max_rows must be positive")
        self.window_ns = int(window_s * 1e9)
        self.idle_ns = int((idle_s if idle_s is not None else window_s) * 1e9)
        self.max_per_pair = int(max_per_pair)
        self.max_rows = int(max_rows)
        self._chunks: list[dict[str, np.ndarray]] = []
        self._pending = 0
        self.stats = WindowStats()

    def __len__(self) -> int:
        return sum(len(c["start_ns"]) for c in self._chunks)

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
