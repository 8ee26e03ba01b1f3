"""Plain-Python twin of analytics.bytestats._pair_bytes."""

from __future__ import annotations

from analytics.bytestats import FIELDS


def median(values):
    v = sorted(values)
    n = len(v)
    if n == 0:
        return 0.0
    return v[n // 2] if n % 2 else 0.5 * (v[n // 2 - 1] + v[n // 2])


def pair_bytes(nbytes, packets, threshold) -> dict:
    out = {k: 0.0 for k in FIELDS}
    n = len(nbytes)
    if n == 0:
        return out
    med = median(nbytes)
    out["bpf_median"] = med
    out["bpf_mad"] = median([abs(b - med) for b in nbytes])
    counts: dict[float, int] = {}
    for b in nbytes:
        counts[b] = counts.get(b, 0) + 1
    out["bpf_mode_share"] = max(counts.values()) / n
    bpp = [b / p for b, p in zip(nbytes, packets) if p > 0]
    pmed = median(bpp)
    out["bpp_median"] = pmed
    out["bpp_mad"] = median([abs(v - pmed) for v in bpp])
    long = [b for b, p in zip(nbytes, packets) if p > 0 and b / p > threshold]
    out["long_share"] = len(long) / len(bpp) if bpp else 0.0
    out["long_events"] = float(len(long))
    out["long_bytes"] = float(sum(long))
    out["total_bytes"] = float(sum(nbytes))
    out["total_packets"] = float(sum(packets))
    return out
