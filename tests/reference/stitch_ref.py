"""Plain-Python twin of analytics.stitch: sessions per 5-tuple by loops over lists."""

from __future__ import annotations

import math

from analytics.stitch import TCP_FIN, TCP_RST, StitchParams


def _continues(a, b, p: StitchParams, ta):
    if a["sport"] != b["sport"]:
        return False
    gap = b["start"] - a["end"]
    if gap < -p.tolerance_s:
        return False
    if a["flags"]:
        return not (a["flags"] & (TCP_FIN | TCP_RST)) and gap <= p.max_gap_s
    if gap <= p.tolerance_s:
        return True
    return ta > 0 and (a["end"] - a["start"]) >= p.timeout_share * ta and gap <= p.max_gap_s


def by_port(events):
    """Event indexes grouped by source port in first-seen port order... sorted by port, then time order."""
    return sorted(range(len(events)), key=lambda i: (events[i]["sport"], i))


def infer_active_timeout(pairs, p: StitchParams = StitchParams()) -> float:
    """pairs: list of lists of event dicts (start, end, bytes, packets, flags, sport) in time order."""
    durs = []
    for events in pairs:
        order = by_port(events)
        for k in range(1, len(order)):
            a, b = events[order[k - 1]], events[order[k]]
            if a["sport"] == b["sport"] and a["flags"] and not (a["flags"] & (TCP_FIN | TCP_RST)):
                gap = b["start"] - a["end"]
                if -p.tolerance_s <= gap <= p.max_gap_s:
                    durs.append(a["end"] - a["start"])
    if len(durs) < 3:
        return 0.0
    durs.sort()
    pos = 0.99 * (len(durs) - 1)
    i = int(math.floor(pos))
    q = durs[i] if i >= len(durs) - 1 else durs[i] + (durs[i + 1] - durs[i]) * (pos - i)
    return float(math.ceil(q))


def stitch_pair(events, p: StitchParams, ta: float):
    """(head index per event, active flag per event) for one pair."""
    order = by_port(events)
    head = list(range(len(events)))
    for k in range(1, len(order)):
        a, b = order[k - 1], order[k]
        if _continues(events[a], events[b], p, ta):
            head[b] = head[a]
    active = [False] * len(events)
    sessions: dict[int, list[int]] = {}
    for i in order:
        sessions.setdefault(head[i], []).append(i)
    for h, members in sessions.items():
        if len(members) < 2:
            continue
        base = min((events[e]["bytes"] / events[e]["packets"] for e in members if events[e]["packets"] > 0),
                   default=1e300)
        for e in members[1:]:
            ev = events[e]
            if ev["packets"] > 0 and ev["bytes"] - ev["packets"] * base >= p.active_min_bytes:
                active[e] = True
        cut = [e for e in members[1:] if ta > 0 and events[e]["end"] - events[e]["start"] >= p.timeout_share * ta]
        if cut and sum(active[e] for e in cut) > p.max_active_share * len(cut):
            for e in cut:
                active[e] = False
    return head, active
