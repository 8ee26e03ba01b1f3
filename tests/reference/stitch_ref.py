"""Plain-Python twin of analytics.stitch: sessions per 5-tuple by loops over lists."""

from __future__ import annotations

import math
import statistics

from analytics.stitch import TCP_FIN, TCP_RST, StitchParams


def _continues(a, b, tcp, p: StitchParams, ta):
    if a["sport"] != b["sport"]:
        return False
    gap = b["start"] - a["end"]
    if gap < -p.tolerance_s or gap > p.max_gap_s:
        return False
    if a["flags"]:
        return not (a["flags"] & (TCP_FIN | TCP_RST))
    if tcp:
        return True
    if gap <= p.tolerance_s:
        return True
    return ta > 0 and (a["end"] - a["start"]) >= p.timeout_share * ta


def by_port(events):
    """Event indexes sorted by source port, then time order."""
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


def stitch_pair(events, tcp: bool, p: StitchParams, ta_global: float = 0.0):
    """(head index per event, active flag per event, (timeout, resolution, dead time)) for one pair."""
    order = by_port(events)
    head = list(range(len(events)))
    for k in range(1, len(order)):
        a, b = order[k - 1], order[k]
        if _continues(events[a], events[b], tcp, p, p.active_timeout_s):
            head[b] = head[a]
    dur = [e["end"] - e["start"] for e in events]
    ta = p.active_timeout_s
    if ta <= 0:
        cont = [dur[order[k - 1]] for k in range(1, len(order)) if head[order[k]] == head[order[k - 1]]]
        ta = max(cont) if len(cont) >= 2 and max(cont) >= p.min_timeout_s else 0.0
    typical_cut = p.active_timeout_s
    if typical_cut <= 0:
        long_cont = [dur[order[k - 1]] for k in range(1, len(order))
                     if head[order[k]] == head[order[k - 1]] and dur[order[k - 1]] >= p.min_timeout_s]
        typical_cut = statistics.median(long_cont) if len(long_cont) >= 3 else 0.0

    def is_cut(e):
        return ta > 0 and dur[e] >= p.timeout_share * ta

    active = [False] * len(events)
    sessions: dict[int, list[int]] = {}
    for i in order:
        sessions.setdefault(head[i], []).append(i)
    cut_active_any = located_any = False
    for h, members in sessions.items():
        if len(members) < 2:
            continue
        base = min((events[e]["bytes"] / events[e]["packets"] for e in members if events[e]["packets"] > 0),
                   default=1e300)
        later = [e for e in members[1:] if events[e]["packets"] > 0]
        ncut = sum(1 for e in later if typical_cut > 0 and dur[e] >= p.timeout_share * typical_cut)
        rate = spread = 0.0
        mostly_cut = ncut >= 3 and 2 * ncut >= len(later)
        if mostly_cut:
            rate = statistics.median(events[e]["bytes"] / max(dur[e], 1.0) for e in later)
            resid = [events[e]["bytes"] - rate * max(dur[e], 1.0) for e in later]
            mid = statistics.median(resid)
            spread = 3.0 * statistics.median(abs(x - mid) for x in resid)
        for e in members[1:]:
            ev = events[e]
            if ev["packets"] > 0 and ev["bytes"] - ev["packets"] * base >= p.active_min_bytes:
                active[e] = True
        cut = [e for e in members[1:] if is_cut(e)]
        steady = cut and sum(active[e] for e in cut) > p.max_active_share * len(cut)
        for e in members[1:]:
            if (steady and is_cut(e)) or (mostly_cut and events[e]["bytes"] - rate * max(dur[e], 1.0)
                                          < max(p.active_min_bytes, spread)):
                active[e] = False
        for e in members[1:]:
            if active[e]:
                if is_cut(e):
                    cut_active_any = True
                else:
                    located_any = True
    dead = 0.0
    if located_any:
        steps = [events[order[k]]["start"] - events[order[k - 1]]["start"] for k in range(1, len(order))
                 if head[order[k]] == head[order[k - 1]] and not is_cut(order[k - 1])]
        dead = min(steps) if steps else 0.0
    heads = sum(1 for i in range(len(events)) if head[i] == i)
    inside = sum(1 for i in range(len(events)) if head[i] != i and active[i])
    if inside <= heads:
        for i in range(len(events)):
            if active[i] and is_cut(i):
                active[i] = False
        return head, active, (ta, 0.0, 0.0)
    return head, active, (ta, max(ta if cut_active_any else 0.0, dead), dead)
