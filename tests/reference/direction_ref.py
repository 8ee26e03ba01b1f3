"""Plain-Python twin of analytics.direction: rows as dicts, one at a time."""

from __future__ import annotations

from analytics.direction import EPHEMERAL_MIN, MERGE_SLACK_NS
from analytics.schema import FLAG_NO_COUNTERS, FLAG_NO_PORTS, FLAG_ORIENTED, FLAG_REVERSE


def rank(port: int, server_ports: set) -> int:
    """3 listed, 2 below 1024, 1 below the ephemeral range, 0 ephemeral."""
    if port in server_ports:
        return 3
    if port < 1024:
        return 2
    return 1 if port < EPHEMERAL_MIN else 0


def orient(rows: list[dict], server_ports: set) -> list[tuple[dict, bool]]:
    """(row, reply-only) for every row left after folding replies into their requests, in input order."""
    out = []
    for r in rows:
        r = dict(r)
        kind = None
        if not r["flags"] & (FLAG_ORIENTED | FLAG_NO_PORTS) and r["proto"] in (6, 17, 132):
            rs, rd = rank(r["src_port"], server_ports), rank(r["dst_port"], server_ports)
            kind = "reply" if rs > rd else "request" if rd > rs else None
        if kind:
            r["flags"] |= FLAG_ORIENTED
        if kind == "reply":
            for a, b in (("src_hi", "dst_hi"), ("src_lo", "dst_lo"), ("src_port", "dst_port"), ("in_if", "out_if")):
                r[a], r[b] = r[b], r[a]
            r["rev_bytes"], r["bytes"] = r["bytes"], r["rev_bytes"]
            r["rev_packets"], r["packets"] = r["packets"], r["rev_packets"]
            if r["flags"] & FLAG_REVERSE:
                kind = "biflow"  # both directions already: turned round, not a reply to fold
            elif not r["flags"] & FLAG_NO_COUNTERS:
                r["flags"] |= FLAG_REVERSE
        out.append([r, kind])
    key = ("exporter_hi", "exporter_lo", "src_hi", "src_lo", "dst_hi", "dst_lo", "src_port", "dst_port", "proto")
    dropped = set()
    has_request = any(k == "request" for _, k in out)
    for i, (r, kind) in enumerate(out):
        if kind != "reply" or not has_request:
            continue
        best = None  # the latest request of the same key starting no later (requests first at equal starts)
        for j, (q, qk) in enumerate(out):
            if qk != "request" or any(q[k] != r[k] for k in key) or q["start_ns"] > r["start_ns"]:
                continue
            if best is None or (q["start_ns"], j) > (out[best][0]["start_ns"], best):
                best = j
        if best is not None and r["start_ns"] <= out[best][0]["end_ns"] + MERGE_SLACK_NS:
            q = out[best][0]
            q["rev_bytes"] += r["rev_bytes"]
            q["rev_packets"] += r["rev_packets"]
            q["flags"] |= r["flags"] & FLAG_REVERSE
            dropped.add(i)
    return [(r, kind == "reply") for i, (r, kind) in enumerate(out) if i not in dropped]
