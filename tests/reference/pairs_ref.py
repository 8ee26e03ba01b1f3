"""Plain-Python twin of analytics.pairs.group_pairs: a dict of lists keyed by the pair."""

from __future__ import annotations


def group_pairs(cols) -> dict[tuple, list[int]]:
    """{(src_hi, src_lo, dst_hi, dst_lo, dst_port, proto): [row, ...] sorted by (start_ns, row)}."""
    out: dict[tuple, list[int]] = {}
    n = len(cols["start_ns"])
    for i in range(n):
        key = tuple(int(cols[k][i]) for k in ("src_hi", "src_lo", "dst_hi", "dst_lo", "dst_port", "proto"))
        out.setdefault(key, []).append(i)
    for key, rows in out.items():
        rows.sort(key=lambda i: (int(cols["start_ns"][i]), i))
    return out
