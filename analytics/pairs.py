"""Flow events grouped by pair (source, destination, destination port, protocol) into time-sorted CSR segments.

``group_pairs`` hashes the six key words of every row twice (one numba pass), sorts rows by the first hash (a
parallel counting sort on its top bits, then small buckets), splits pairs where the 128-bit fingerprint of both
hashes changes, and falls back to an exact lexsort when one 64-bit hash is shared by two fingerprints. Grouping is
therefore exact unless two keys share all 128 bits (about 1e-26 for a million pairs). Each pair's rows are then
sorted by start time in parallel. Pair ``i`` owns rows ``offsets[i]:offsets[i+1]`` of every event column. No per-row
Python anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
from numba import prange

from analytics.schema import FlowBatch

#: Per-event columns carried into the segments (in pair order, then start time); any other column is one gather
#: away through ``PairSegments.row`` (each gather of 50M rows costs about a second, so only what the kernels read).
EVENT_COLUMNS = ("start_ns", "end_ns", "bytes", "packets", "tcp_flags", "src_port", "app_proto", "topic_score")
#: Per-pair key columns.
KEY_COLUMNS = ("src_hi", "src_lo", "dst_hi", "dst_lo", "dst_port", "proto")


@dataclass
class PairSegments:
    """CSR layout: pair i's events are rows offsets[i]:offsets[i+1] of ``events``, sorted by start time."""

    offsets: np.ndarray  # int64, n_pairs + 1
    keys: dict[str, np.ndarray]  # KEY_COLUMNS, one value per pair
    events: dict[str, np.ndarray]  # EVENT_COLUMNS, one value per event
    row: np.ndarray  # int64: each event's row in the input batch

    @property
    def n_pairs(self) -> int:
        """Number of pairs."""
        return len(self.offsets) - 1

    def __len__(self) -> int:
        return int(self.offsets[-1]) if len(self.offsets) else 0

    def counts(self) -> np.ndarray:
        """Events per pair."""
        return np.diff(self.offsets)

    def pair_of_event(self) -> np.ndarray:
        """Pair index of every event (int64)."""
        return np.repeat(np.arange(self.n_pairs, dtype=np.int64), self.counts())

    def select_pairs(self, mask: np.ndarray) -> "PairSegments":
        """The segments of the pairs where mask is true, in the same order."""
        mask = np.asarray(mask, bool)
        counts = self.counts()[mask]
        offsets = np.zeros(len(counts) + 1, np.int64)
        np.cumsum(counts, out=offsets[1:])
        ev = np.repeat(mask, self.counts())
        return PairSegments(offsets, {k: v[mask] for k, v in self.keys.items()},
                            {k: v[ev] for k, v in self.events.items()}, self.row[ev])


@numba.njit(cache=True, inline="always")
def _mix(x):
    # splitmix64 finaliser: a cheap, well-spread 64-bit hash step.
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


@numba.njit(cache=True)
def _hash_chunk(out, out2, a, b, c, d, port, proto, lo, hi):
    for i in range(lo, hi):
        last = (np.uint64(port[i]) << np.uint64(8)) | np.uint64(proto[i])
        h = _mix(a[i] + np.uint64(0x9E3779B97F4A7C15))
        h = _mix(h ^ b[i])
        h = _mix(h ^ c[i])
        h = _mix(h ^ d[i])
        out[i] = _mix(h ^ last)
        g = _mix(d[i] + np.uint64(0xD1B54A32D192ED03))
        g = _mix(g ^ c[i] ^ (last << np.uint64(40)))
        g = _mix(g ^ b[i])
        out2[i] = _mix(g ^ a[i])


@numba.njit(cache=True, parallel=True)
def _hash_rows(a, b, c, d, port, proto, nchunks):
    """Two independent 64-bit hashes of every row's pair key: the sort key and a 128-bit fingerprint."""
    n = len(a)
    out = np.empty(n, np.uint64)
    out2 = np.empty(n, np.uint64)
    step = (n + nchunks - 1) // nchunks
    for k in prange(nchunks):
        _hash_chunk(out, out2, a, b, c, d, port, proto, k * step, min(n, (k + 1) * step))
    return out, out2


@numba.njit(cache=True, parallel=True)
def _changes(order, h, a, b, c, d, port, proto):
    """change[j]: row order[j] starts a new pair; collided[j]: ... although its hash equals the previous row's."""
    n = len(order)
    change = np.empty(n, np.bool_)
    collided = np.zeros(n, np.bool_)
    for j in prange(n):
        if j == 0:
            change[j] = True
            continue
        i = order[j]
        p = order[j - 1]
        same = a[i] == a[p] and b[i] == b[p] and c[i] == c[p] and d[i] == d[p] and port[i] == port[p] \
            and proto[i] == proto[p]
        change[j] = not same
        collided[j] = (not same) and h[i] == h[p]
    return change, collided


@numba.njit(cache=True, parallel=True)
def _changes_fp(order, h, h2):
    """As _changes, comparing the 128-bit fingerprint (h, h2) instead of the keys (2 reads a row, not 12)."""
    n = len(order)
    change = np.empty(n, np.bool_)
    collided = np.zeros(n, np.bool_)
    for j in prange(n):
        if j == 0:
            change[j] = True
            continue
        i = order[j]
        p = order[j - 1]
        same = h[i] == h[p] and h2[i] == h2[p]
        change[j] = not same
        collided[j] = (not same) and h[i] == h[p]
    return change, collided


def _boundaries(order, h, a, b, c, d, port, proto, h2=None):
    """Segment offsets of rows sorted by hash; collided=True if one hash run holds two different keys (keys
    compared exactly, or by their 128-bit fingerprint when h2 is given)."""
    if h2 is None:
        change, collided = _changes(order, h, a, b, c, d, port, proto)
    else:
        change, collided = _changes_fp(order, h, h2)
    starts = np.flatnonzero(change)
    return np.append(starts, len(order)).astype(np.int64), bool(collided.any())


@numba.njit(cache=True, parallel=True)
def _take(src, idx):
    out = np.empty(len(idx), src.dtype)
    for i in prange(len(idx)):
        out[i] = src[idx[i]]
    return out


def take(src: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """src[idx] gathered in parallel (idx int64)."""
    if len(idx) < 65536:
        return src[idx]
    return _take(np.ascontiguousarray(src), idx)


@numba.njit(cache=True)
def _sort_segment(order, t, lo, hi):
    seg = order[lo:hi]
    # rows are already in input order within a segment (stable argsort): skip the sort when times are sorted
    for j in range(1, hi - lo):
        if t[seg[j]] < t[seg[j - 1]]:
            idx = np.argsort(t[seg], kind="mergesort")
            order[lo:hi] = seg[idx]
            return


@numba.njit(cache=True, parallel=True)
def _sort_segments(order, t, offsets, nchunks):
    """Sort every segment of ``order`` by t (stable), in place; chunks balanced by event count."""
    npairs = len(offsets) - 1
    total = offsets[-1]
    bounds = np.searchsorted(offsets, np.linspace(0, total, nchunks + 1).astype(np.int64))
    bounds[0] = 0
    bounds[-1] = npairs
    for k in prange(nchunks):
        for p in range(bounds[k], bounds[k + 1]):
            _sort_segment(order, t, offsets[p], offsets[p + 1])


@numba.njit(cache=True, parallel=True)
def _bucket_rows(h, shift, nb, nchunks):
    """Rows stably grouped by the top bits of their hash (h >> shift): a parallel counting sort."""
    n = h.shape[0]
    step = (n + nchunks - 1) // nchunks
    hist = np.zeros((nchunks, nb), np.int64)
    for c in prange(nchunks):
        for i in range(c * step, min(n, (c + 1) * step)):
            hist[c, int(h[i] >> np.uint64(shift))] += 1
    bstarts = np.empty(nb + 1, np.int64)
    total = 0
    for b in range(nb):  # bucket-major, then chunk order: stable
        bstarts[b] = total
        for c in range(nchunks):
            v = hist[c, b]
            hist[c, b] = total
            total += v
    bstarts[nb] = total
    order = np.empty(n, np.int64)
    for c in prange(nchunks):
        for i in range(c * step, min(n, (c + 1) * step)):
            b = int(h[i] >> np.uint64(shift))
            order[hist[c, b]] = i
            hist[c, b] += 1
    return order, bstarts


@numba.njit(cache=True, parallel=True)
def _sort_buckets(order, h, bstarts, nchunks):
    """Stable sort of every bucket of order by full hash: insertion sort for the usual short ones."""
    nb = len(bstarts) - 1
    step = (nb + nchunks - 1) // nchunks
    for k in prange(nchunks):
        for b in range(k * step, min(nb, (k + 1) * step)):
            lo, hi = bstarts[b], bstarts[b + 1]
            if hi - lo > 64:
                seg = order[lo:hi].copy()
                idx = np.argsort(h[seg], kind="mergesort")
                order[lo:hi] = seg[idx]
                continue
            for q in range(lo + 1, hi):
                v = order[q]
                hv = h[v]
                j = q
                while j > lo and h[order[j - 1]] > hv:
                    order[j] = order[j - 1]
                    j -= 1
                order[j] = v


def _sort_by_hash(h: np.ndarray) -> np.ndarray:
    """Row order stable-sorted by hash: a parallel counting sort on the top bits (about 32 rows a bucket), then
    each bucket sorted in parallel."""
    bits = _bucket_bits(len(h))
    order, bstarts = _bucket_rows(h, 64 - bits, 1 << bits, max(1, numba.get_num_threads()))
    _sort_buckets(order, h, bstarts, _nchunks(len(h)))
    return order


def _bucket_bits(n: int) -> int:
    return int(min(22, max(8, np.ceil(np.log2(max(n, 1) / 32)))))


@numba.njit(cache=True, parallel=True)
def _scatter_rows(h, h2, shift, nb, nchunks):
    """As _bucket_rows, but the hashes travel with the row index (hs, hs2, order): every later pass over the
    sorted rows reads them sequentially instead of gathering h[order[j]] at random."""
    n = h.shape[0]
    step = (n + nchunks - 1) // nchunks
    hist = np.zeros((nchunks, nb), np.int64)
    for c in prange(nchunks):
        for i in range(c * step, min(n, (c + 1) * step)):
            hist[c, int(h[i] >> np.uint64(shift))] += 1
    bstarts = np.empty(nb + 1, np.int64)
    total = 0
    for b in range(nb):  # bucket-major, then chunk order: stable
        bstarts[b] = total
        for c in range(nchunks):
            v = hist[c, b]
            hist[c, b] = total
            total += v
    bstarts[nb] = total
    order = np.empty(n, np.int64)
    hs = np.empty(n, np.uint64)
    hs2 = np.empty(n, np.uint64)
    for c in prange(nchunks):
        for i in range(c * step, min(n, (c + 1) * step)):
            b = int(h[i] >> np.uint64(shift))
            q = hist[c, b]
            order[q] = i
            hs[q] = h[i]
            hs2[q] = h2[i]
            hist[c, b] = q + 1
    return order, hs, hs2, bstarts


@numba.njit(cache=True)
def _sort_bucket_kv(order, hs, hs2, lo, hi):
    """Stable sort of rows lo:hi by hs, moving hs2 and order along (insertion sort when short)."""
    if hi - lo > 64:
        idx = np.argsort(hs[lo:hi], kind="mergesort") + lo
        o = order[idx]
        a = hs[idx]
        b = hs2[idx]
        order[lo:hi] = o
        hs[lo:hi] = a
        hs2[lo:hi] = b
        return
    for q in range(lo + 1, hi):
        v = hs[q]
        if hs[q - 1] <= v:
            continue
        v2 = hs2[q]
        o = order[q]
        j = q
        while j > lo and hs[j - 1] > v:
            hs[j] = hs[j - 1]
            hs2[j] = hs2[j - 1]
            order[j] = order[j - 1]
            j -= 1
        hs[j] = v
        hs2[j] = v2
        order[j] = o


@numba.njit(cache=True, parallel=True)
def _sort_buckets_kv(order, hs, hs2, bstarts, nchunks):
    """Every bucket sorted by full hash, in parallel."""
    nb = len(bstarts) - 1
    step = (nb + nchunks - 1) // nchunks
    for k in prange(nchunks):
        for b in range(k * step, min(nb, (k + 1) * step)):
            _sort_bucket_kv(order, hs, hs2, bstarts[b], bstarts[b + 1])


@numba.njit(cache=True)
def _sort_bucket_radix(order, hs, hs2, lo, hi, shift, to, ths, ths2, hist):
    """Stable sort of rows lo:hi (sharing the hash bits above ``shift``) by hs: a local counting sort on the next
    bits (about 32 rows a sub-bucket, in cache), then each sub-bucket by _sort_bucket_kv."""
    m = hi - lo
    if m <= 64 or shift == 0:
        _sort_bucket_kv(order, hs, hs2, lo, hi)
        return
    bits = 1
    while bits < 16 and (m >> (bits + 5)) > 0:
        bits += 1
    bits = min(bits, shift)
    s2 = shift - bits
    mask = np.uint64((1 << bits) - 1)
    nb = 1 << bits
    for b in range(nb + 1):
        hist[b] = 0
    for q in range(lo, hi):
        hist[int((hs[q] >> np.uint64(s2)) & mask) + 1] += 1
    for b in range(nb):
        hist[b + 1] += hist[b]
    for q in range(lo, hi):
        b = int((hs[q] >> np.uint64(s2)) & mask)
        k = hist[b]
        to[k] = order[q]
        ths[k] = hs[q]
        ths2[k] = hs2[q]
        hist[b] = k + 1
    for k in range(m):
        order[lo + k] = to[k]
        hs[lo + k] = ths[k]
        hs2[lo + k] = ths2[k]
    b0 = 0
    for b in range(nb):  # hist[b] is now the end of sub-bucket b
        _sort_bucket_kv(order, hs, hs2, lo + b0, lo + hist[b])
        b0 = hist[b]


@numba.njit(cache=True, parallel=True)
def _sort_buckets_radix(order, hs, hs2, bstarts, shift, nchunks):
    """Every top-bits bucket sorted by full hash in parallel (_sort_bucket_radix), chunks balanced by rows."""
    nb = len(bstarts) - 1
    total = bstarts[nb]
    bounds = np.searchsorted(bstarts, np.linspace(0, total, nchunks + 1).astype(np.int64))
    bounds[0] = 0
    bounds[nchunks] = nb
    for k in prange(nchunks):
        longest = 1
        for b in range(bounds[k], bounds[k + 1]):
            longest = max(longest, bstarts[b + 1] - bstarts[b])
        to = np.empty(longest, np.int64)
        ths = np.empty(longest, np.uint64)
        ths2 = np.empty(longest, np.uint64)
        hist = np.empty((1 << 16) + 1, np.int64)
        for b in range(bounds[k], bounds[k + 1]):
            _sort_bucket_radix(order, hs, hs2, bstarts[b], bstarts[b + 1], shift, to, ths, ths2, hist)


@numba.njit(cache=True, parallel=True)
def _changes_sorted(hs, hs2):
    """As _changes_fp on hashes already in sorted order (sequential reads)."""
    n = len(hs)
    change = np.empty(n, np.bool_)
    collided = np.zeros(n, np.bool_)
    for j in prange(n):
        if j == 0:
            change[j] = True
            continue
        same = hs[j] == hs[j - 1] and hs2[j] == hs2[j - 1]
        change[j] = not same
        collided[j] = (not same) and hs[j] == hs[j - 1]
    return change, collided


@numba.njit(cache=True)
def _gather_sort_segment(order, t, out, lo, hi):
    for j in range(lo, hi):
        out[j] = t[order[j]]
    # rows are in input order within a segment (stable sort): usually their times are already sorted
    for j in range(lo + 1, hi):
        if out[j] < out[j - 1]:
            idx = np.argsort(out[lo:hi], kind="mergesort") + lo
            o = order[idx]
            v = out[idx]
            order[lo:hi] = o
            out[lo:hi] = v
            return


@numba.njit(cache=True, parallel=True)
def _gather_time_sorted(order, t, offsets, nchunks):
    """t gathered in segment order with every segment stably sorted by t (order permuted to match); chunks
    balanced by event count."""
    npairs = len(offsets) - 1
    total = offsets[-1]
    out = np.empty(total, t.dtype)
    bounds = np.searchsorted(offsets, np.linspace(0, total, nchunks + 1).astype(np.int64))
    bounds[0] = 0
    bounds[-1] = npairs
    for k in prange(nchunks):
        for p in range(bounds[k], bounds[k + 1]):
            _gather_sort_segment(order, t, out, offsets[p], offsets[p + 1])
    return out


def _nchunks(n: int) -> int:
    return max(1, min(64, numba.get_num_threads() * 8, n // 1024 + 1))


def group_pairs(batch: FlowBatch | dict[str, np.ndarray]) -> PairSegments:
    """Group a batch's rows into pair segments sorted by start time (ties keep input order)."""
    cols = batch.columns if isinstance(batch, FlowBatch) else batch
    n = len(cols["start_ns"])
    for k, dt in (("src_hi", np.uint64), ("src_lo", np.uint64), ("dst_hi", np.uint64), ("dst_lo", np.uint64),
                  ("dst_port", np.uint16), ("proto", np.uint8), ("start_ns", np.int64)):
        if cols[k].dtype != dt or len(cols[k]) != n:
            raise TypeError(f"column {k} must be {np.dtype(dt)} of length {n}, got {cols[k].dtype}[{len(cols[k])}]")
    if n == 0:
        return PairSegments(np.zeros(1, np.int64), {k: cols[k][:0].copy() for k in KEY_COLUMNS},
                            {k: cols[k][:0].copy() for k in EVENT_COLUMNS if k in cols}, np.zeros(0, np.int64))
    a, b, c, d = (np.ascontiguousarray(cols[k]) for k in ("src_hi", "src_lo", "dst_hi", "dst_lo"))
    port, proto = np.ascontiguousarray(cols["dst_port"]), np.ascontiguousarray(cols["proto"])
    h, h2 = _hash_rows(a, b, c, d, port, proto, _nchunks(n))
    # two-level MSD radix: a parallel scatter on the top 11 bits (2048 write streams: far fewer TLB and cache
    # misses than one bucket per 32 rows), then each bucket sorted in cache on the next bits
    bits = min(11, _bucket_bits(n))
    order, hs, hs2, bstarts = _scatter_rows(h, h2, 64 - bits, 1 << bits, max(1, numba.get_num_threads()))
    del h, h2
    _sort_buckets_radix(order, hs, hs2, bstarts, 64 - bits, _nchunks(n))
    change, collided = _changes_sorted(hs, hs2)
    del hs, hs2
    offsets = np.append(np.flatnonzero(change), n).astype(np.int64)
    del change
    if collided.any():  # two pairs share a 64-bit hash: exact (slow) grouping instead
        order = np.lexsort((proto, port, d, c, b, a)).astype(np.int64)
        offsets, _ = _boundaries(order, np.arange(n, dtype=np.uint64), a, b, c, d, port, proto)
    start = _gather_time_sorted(order, np.ascontiguousarray(cols["start_ns"]), offsets, _nchunks(n))
    first = order[offsets[:-1]]
    keys = {k: cols[k][first] for k in KEY_COLUMNS}
    events = {k: (start if k == "start_ns" else take(cols[k], order)) for k in EVENT_COLUMNS if k in cols}
    return PairSegments(offsets.astype(np.int64), keys, events, order)
