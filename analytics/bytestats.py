"""Per-pair byte statistics: bytes/flow and bytes/packet median, MAD, mode share, and the PayloadLengthThreshold
split between telemetry-style short messages and exfil-style long ones (a numba kernel over pair segments)."""

from __future__ import annotations

import numba
import numpy as np
from numba import prange

FIELDS = ("bpf_median", "bpf_mad", "bpf_mode_share", "bpp_median", "bpp_mad", "long_share", "long_events",
          "long_bytes", "total_bytes", "total_packets")
F = {name: i for i, name in enumerate(FIELDS)}
NF = len(FIELDS)


@numba.njit(cache=True)
def _sort_inplace(a, n):
    """Sort a[:n] in place: insertion sort for short runs (twice numba's quicksort there), else quicksort."""
    if n > 64:
        a[:n].sort()
        return
    for k in range(1, n):
        v = a[k]
        j = k
        while j > 0 and a[j - 1] > v:
            a[j] = a[j - 1]
            j -= 1
        a[j] = v


@numba.njit(cache=True)
def _median_sorted(a):
    n = a.shape[0]
    if n == 0:
        return 0.0
    if n % 2:
        return a[n // 2]
    return 0.5 * (a[n // 2 - 1] + a[n // 2])


@numba.njit(cache=True)
def _pair_bytes(nbytes, packets, lo, hi, threshold, out, b, d):
    """Byte statistics of rows lo:hi into out; b and d are scratch of at least hi - lo values."""
    for k in range(out.shape[0]):
        out[k] = 0.0
    n = hi - lo
    if n == 0:
        return
    for i in range(n):
        b[i] = float(nbytes[lo + i])
    _sort_inplace(b, n)
    med = _median_sorted(b[:n])
    out[0] = med
    for i in range(n):
        d[i] = abs(b[i] - med)
    _sort_inplace(d, n)
    out[1] = _median_sorted(d[:n])
    run = 1
    best = 1
    for i in range(1, n):
        run = run + 1 if b[i] == b[i - 1] else 1
        best = max(best, run)
    out[2] = best / n
    m = 0
    tb = 0.0
    tp = 0.0
    nlong = 0
    lbytes = 0.0
    for i in range(lo, hi):
        tb += float(nbytes[i])
        tp += float(packets[i])
        if packets[i] > 0:
            v = float(nbytes[i]) / float(packets[i])
            b[m] = v
            m += 1
            if v > threshold:
                nlong += 1
                lbytes += float(nbytes[i])
    _sort_inplace(b, m)
    pmed = _median_sorted(b[:m])
    out[3] = pmed
    for i in range(m):
        d[i] = abs(b[i] - pmed)
    _sort_inplace(d, m)
    out[4] = _median_sorted(d[:m])
    out[5] = nlong / m if m else 0.0
    out[6] = nlong
    out[7] = lbytes
    out[8] = tb
    out[9] = tp


@numba.njit(cache=True, parallel=True)
def _bytes_all(offsets, nbytes, packets, threshold, nchunks):
    npairs = offsets.shape[0] - 1
    out = np.zeros((npairs, NF))
    bounds = np.searchsorted(offsets, np.linspace(0, offsets[npairs], nchunks + 1).astype(np.int64))
    bounds[0] = 0
    bounds[nchunks] = npairs
    for c in prange(nchunks):
        longest = 1
        for p in range(bounds[c], bounds[c + 1]):
            longest = max(longest, offsets[p + 1] - offsets[p])
        b = np.empty(longest)
        d = np.empty(longest)
        for p in range(bounds[c], bounds[c + 1]):
            _pair_bytes(nbytes, packets, offsets[p], offsets[p + 1], threshold, out[p], b, d)
    return out


def byte_stats(offsets: np.ndarray, nbytes: np.ndarray, packets: np.ndarray, payload_threshold: float) -> np.ndarray:
    """(n_pairs, NF) float64 byte statistics; columns named by FIELDS. A flow is "long" when its bytes per packet
    exceed payload_threshold (PayloadLengthThreshold)."""
    offsets = np.ascontiguousarray(offsets)
    if offsets.dtype != np.int64 or offsets.ndim != 1 or len(offsets) < 1 or offsets[0] != 0:
        raise TypeError("offsets must be 1-D int64 CSR offsets starting at 0")
    nbytes = np.ascontiguousarray(nbytes)
    packets = np.ascontiguousarray(packets)
    if nbytes.dtype not in (np.float64, np.uint64) or packets.dtype != nbytes.dtype:
        nbytes, packets = nbytes.astype(np.float64), packets.astype(np.float64)
    if nbytes.shape != packets.shape or offsets[-1] != len(nbytes):
        raise ValueError("bytes and packets must have offsets[-1] elements each")
    if not payload_threshold > 0:
        raise ValueError("payload_threshold must be positive")
    npairs = len(offsets) - 1
    if npairs == 0:
        return np.zeros((0, NF))
    return _bytes_all(offsets, nbytes, packets, float(payload_threshold),
                      max(1, min(npairs, numba.get_num_threads() * 16)))
