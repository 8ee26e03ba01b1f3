"""Client -> server orientation of flow rows whose record does not say who initiated (unidirectional NetFlow, sFlow
samples): the server side is told by its port, and a server's replies are folded into the pair they answer.

Rows that already know their direction (``FLAG_ORIENTED``: biflows, firewall session logs, the flow meter's SYN)
are left as they are. For the others each port gets a rank: a ``ProtocolPortList`` port (3) beats a well-known port
below 1024 (2), which beats a registered port below the ephemeral range (1), which beats an ephemeral port (0,
32768 and up: Linux's default range starts there, Windows' and the BSDs' at 49152). The side with the higher rank is
the server; equal ranks leave the row as exported. A reply (source port the server's) is swapped to client ->
server with its counters moved into ``rev_bytes``/``rev_packets`` (``FLAG_REVERSE``; a biflow's two directions
trade places), and, where the same batch
holds the request record of the same 5-tuple and exporter that it overlaps in time, added to that record and dropped.

Pure numpy over whole columns; ``tests/reference/direction_ref.py`` is the per-row twin it is tested against.
"""

from __future__ import annotations

import numpy as np

from analytics.schema import FLAG_NO_COUNTERS, FLAG_NO_PORTS, FLAG_ORIENTED, FLAG_REVERSE

#: First port of the ephemeral range (Linux's default; IANA's and Windows' start at 49152, which this covers).
EPHEMERAL_MIN = 32768
#: A reply record is folded into a request record of the same 5-tuple if it starts at most this long after the
#: request ended (exporters cut the two directions of one connection at slightly different times).
MERGE_SLACK_NS = 2_000_000_000

_PORTED = (6, 17, 132)
#: Columns swapped between the two sides when a reply is turned round.
_SWAP = (("src_hi", "dst_hi"), ("src_lo", "dst_lo"), ("src_port", "dst_port"), ("in_if", "out_if"))


def port_rank(ports: np.ndarray, server_ports: np.ndarray) -> np.ndarray:
    """How strongly each port says "server": 3 listed pub/sub port, 2 below 1024, 1 below 32768, 0 ephemeral."""
    p = np.asarray(ports)
    rank = np.where(p < 1024, 2, np.where(p < EPHEMERAL_MIN, 1, 0)).astype(np.int8)
    if len(server_ports):
        rank[np.isin(p, server_ports)] = 3
    return rank


def replies(cols: dict, server_ports: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(reply, request) masks of the rows whose direction the ports decide; oriented rows are in neither."""
    free = (cols["flags"] & (FLAG_ORIENTED | FLAG_NO_PORTS)) == 0
    free &= np.isin(cols["proto"], _PORTED)
    rs = port_rank(cols["src_port"], server_ports)
    rd = port_rank(cols["dst_port"], server_ports)
    return free & (rs > rd), free & (rd > rs)


def orient(cols: dict, server_ports: np.ndarray) -> tuple[dict, np.ndarray]:
    """Rows turned client -> server and replies folded into their requests; returns (columns, reply-only mask).

    The result holds every row of ``cols`` except the replies that were added to a request row. A reply-only row
    (a one-way reply record with no request record to fold into in this batch) is oriented, with its counters in
    ``rev_*`` and zero forward counters. Columns not changed are shared with the input.
    """
    reply, request = replies(cols, server_ports)
    if not reply.any() and not request.any():
        return cols, np.zeros(len(cols["flags"]), bool)
    out = dict(cols)
    flags = cols["flags"] | np.where(reply | request, FLAG_ORIENTED, 0).astype(np.uint8)
    if reply.any():
        for a, b in _SWAP:
            out[a] = np.where(reply, cols[b], cols[a])
            out[b] = np.where(reply, cols[a], cols[b])
        for a, b in (("bytes", "rev_bytes"), ("packets", "rev_packets")):  # a biflow keeps both directions
            out[a] = np.where(reply, cols[b], cols[a])
            out[b] = np.where(reply, cols[a], cols[b])
        counted = reply & ((cols["flags"] & FLAG_NO_COUNTERS) == 0)
        flags |= np.where(counted, FLAG_REVERSE, 0).astype(np.uint8)
    out["flags"] = flags
    reply_only = reply & ((cols["flags"] & FLAG_REVERSE) == 0)
    if not (reply_only.any() and request.any()):
        return out, reply_only
    return _merge(out, reply_only, request)


def _merge(cols: dict, reply: np.ndarray, request: np.ndarray) -> tuple[dict, np.ndarray]:
    """Add each reply row's counters to the latest request row of its 5-tuple and exporter that started before it
    and ended at most MERGE_SLACK_NS before it started; merged replies are dropped. The request keeps its own times
    and TCP flags (the stitcher reads the client's FIN/RST)."""
    cand = np.flatnonzero(reply | request)
    keys = [cols[k][cand] for k in ("exporter_hi", "exporter_lo", "src_hi", "src_lo", "dst_hi", "dst_lo",
                                     "src_port", "dst_port", "proto")]
    is_reply = reply[cand]
    # sorted by 5-tuple, then start, requests before replies at equal starts (one sFlow datagram's samples)
    order = np.lexsort((is_reply, cols["start_ns"][cand]) + tuple(keys[::-1]))
    rows = cand[order]
    k_sorted = [k[order] for k in keys]
    new_group = np.ones(len(rows), bool)
    for k in k_sorted:
        new_group[1:] &= k[1:] == k[:-1]
    new_group = ~new_group
    new_group[0] = True
    group_start = np.maximum.accumulate(np.where(new_group, np.arange(len(rows)), 0))
    rep = is_reply[order]
    last_req = np.maximum.accumulate(np.where(~rep, np.arange(len(rows)), -1))
    ok = rep & (last_req >= group_start)
    pos = np.flatnonzero(ok)
    tgt = rows[last_req[pos]]
    src = rows[pos]
    near = cols["start_ns"][src] <= cols["end_ns"][tgt] + MERGE_SLACK_NS
    src, tgt = src[near], tgt[near]
    if not len(src):
        return cols, reply
    for fwd, rev in (("rev_bytes", "rev_bytes"), ("rev_packets", "rev_packets")):
        col = cols[fwd].copy()
        np.add.at(col, tgt, cols[rev][src])
        cols[fwd] = col
    flags = cols["flags"].copy()
    flags[tgt] |= (cols["flags"][src] & FLAG_REVERSE)
    cols["flags"] = flags
    keep = np.ones(len(reply), bool)
    keep[src] = False
    return {k: v[keep] for k, v in cols.items()}, reply[keep]
