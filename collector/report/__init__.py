"""``brokerwatch report``: alerts as one self-contained HTML page with plots per alert.

The page makes no network fetch: its script and style (``report.js``, ``report.css`` beside this file) are inlined
when the page is written, and the data is one JSON document inside it. Per alert the page shows the pair's event
timeline, the inter-arrival histogram with the detected period and jitter band, the bytes per event against the
other pairs to the same broker, the evidence (which DET0002 elements fired and why), the attributed process and host,
and the ATT&CK mapping. Plots are hand-made SVG, drawn only for the page of alerts on screen (25 at a time), so
10,000 alerts load as fast as 25.

The events come from the same inputs ``replay`` takes (``collector/inputs.py``): only the rows of alerted pairs and of
other pairs to their brokers are kept, summarised into histograms here, so the page stays small.
"""

from __future__ import annotations

import html
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import orjson

from analytics.schema import ip_to_words

HERE = Path(__file__).parent
NS = 1_000_000_000

#: Events of one pair kept for its plots (the earliest ones; the count says how many there were).
MAX_EVENTS_PER_PAIR = 50_000
#: A timeline shows each event as a tick up to this many events, then counts per time bin.
MAX_TICKS = 240
TIMELINE_BINS = 120
HIST_BINS = 40
#: Sizes of the other pairs to one broker kept for the comparison (bounded: a busy broker has many clients).
MAX_PEER_SAMPLES = 20_000

ATTACK = {
    "technique": ("T1071.005", "Application Layer Protocol: Publish/Subscribe Protocols",
                  "https://attack.mitre.org/techniques/T1071/005/"),
    "tactic": ("TA0011", "Command and Control", "https://attack.mitre.org/tactics/TA0011/"),
    "detection": ("DET0002", "Detection of C2 over publish/subscribe protocols"),
}


class ReportError(Exception):
    """An alerts file that cannot be read as alert JSON lines."""


def read_alerts(path: str) -> list[dict]:
    """The alerts of a JSONL file, only the latest revision of each ``event.id`` (later evidence updates an alert)."""
    latest: dict[str, dict] = {}
    try:
        f = open(path, "rb")
    except OSError as exc:
        raise ReportError(f"{path}: {exc.strerror or exc}") from None
    with f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                a = json.loads(line)
            except ValueError as exc:
                raise ReportError(f"{path}:{n}: not a JSON line: {exc}") from None
            if not isinstance(a, dict) or (a.get("event") or {}).get("kind") != "alert":
                raise ReportError(f"{path}:{n}: not an alert (event.kind is not 'alert')")
            key = a["event"].get("id") or f"line{n}"
            prev = latest.get(key)
            if prev is None or _rev(a) >= _rev(prev):
                latest[key] = a
    return list(latest.values())


def _rev(a: dict) -> int:
    return int((a.get("brokerwatch") or {}).get("revision", 0) or 0)


def _pair_key(a: dict) -> tuple[int, int, int, int, int] | None:
    try:
        s = ip_to_words(a["source"]["ip"])
        d = ip_to_words(a["destination"]["ip"])
        return (s[0], s[1], d[0], d[1], int(a["destination"].get("port") or 0))
    except (KeyError, TypeError, ValueError):
        return None


def _process_key(a: dict) -> tuple | None:
    """(host, process name, broker port, broker words or None) of an endpoint alert (AN0002-AN0004): its events are
    the process's connections in the host logs, whether or not a flow of the pair was exported."""
    proc = a.get("process") or {}
    if not proc.get("name") or (a.get("rule") or {}).get("id") == "AN0005":
        return None
    dst = a.get("destination") or {}
    try:
        words = ip_to_words(dst["ip"]) if dst.get("ip") else None
    except ValueError:
        words = None
    return ("e", (a.get("host") or {}).get("name") or "", proc["name"], int(dst.get("port") or 0), words)


@dataclass
class PairEvents:
    """What the inputs hold for the alerted pairs and the other pairs to their brokers."""

    times: dict[tuple, list[np.ndarray]] = field(default_factory=dict)
    sizes: dict[tuple, list[np.ndarray]] = field(default_factory=dict)
    counts: dict[tuple, int] = field(default_factory=dict)
    #: per broker (dst words): pair key -> bytes arrays of pairs that were not alerted
    peers: dict[tuple, dict[tuple, list[np.ndarray]]] = field(default_factory=dict)
    rows_read: int = 0


def collect_events(inputs: list[str], alerts: list[dict], progress: Callable | None = None,
                   on_batch: Callable[[int], None] | None = None) -> tuple[PairEvents, dict]:
    """Read the inputs once, keeping the rows of alerted pairs and of other pairs to their brokers."""
    from collector.inputs import OfflineSource

    from collector.inputs import is_hostlog

    ev = PairEvents()
    pairs = {k for k in (_pair_key(a) for a in alerts) if k is not None}
    procs = {k for k in (_process_key(a) for a in alerts) if k is not None}
    if not inputs or not (pairs or procs):
        return ev, {}
    source = OfflineSource(progress=progress)
    source.check(inputs)
    hostlogs = [p for p in inputs if is_hostlog(p)]
    flows = [p for p in inputs if p not in hostlogs]
    if procs:
        for eb in source.endpoint_batches(hostlogs):
            if on_batch is not None:
                on_batch(len(eb))
            _endpoint_events(eb, procs, ev)
    if progress is not None:
        for p in hostlogs:
            progress(p, os.path.getsize(p), 0)
    if not pairs:
        return ev, source.decoders.rejected()
    brokers = {(k[2], k[3]) for k in pairs}
    b_lo = np.array(sorted({b[1] for b in brokers}), np.uint64)
    for batch in source.batches(flows):
        c = batch.columns
        ev.rows_read += len(batch)
        if on_batch is not None:
            on_batch(len(batch))
        idx = np.flatnonzero(np.isin(c["dst_lo"], b_lo))  # cheap first cut on the low word; exact check below
        if not len(idx):
            continue
        keys = np.stack([c["src_hi"][idx], c["src_lo"][idx], c["dst_hi"][idx], c["dst_lo"][idx],
                         c["dst_port"][idx].astype(np.uint64)], axis=1)
        uniq, inv = np.unique(keys, axis=0, return_inverse=True)
        inv = inv.reshape(-1)
        order = np.argsort(inv, kind="stable")
        bounds = np.searchsorted(inv[order], np.arange(len(uniq) + 1))
        starts = c["start_ns"][idx]
        sizes = c["bytes"][idx]
        for g, row in enumerate(uniq.tolist()):
            key = tuple(int(x) for x in row)
            if (key[2], key[3]) not in brokers:
                continue
            sel = order[bounds[g]:bounds[g + 1]]
            if key in pairs:
                n = ev.counts.get(key, 0)
                ev.counts[key] = n + len(sel)
                room = MAX_EVENTS_PER_PAIR - n
                if room > 0:
                    ev.times.setdefault(key, []).append(starts[sel[:room]])
                    ev.sizes.setdefault(key, []).append(sizes[sel[:room]])
            else:
                ev.peers.setdefault((key[2], key[3]), {}).setdefault(key, []).append(sizes[sel])
    return ev, source.decoders.rejected()


def _endpoint_events(eb, procs: set, ev: PairEvents) -> None:
    """Keep the network connections of the alerted processes (host, name, broker port, broker if the alert has it)."""
    from analytics.endpoint import NETWORK_CONNECT

    r = eb.rows
    ports = np.array(sorted({k[3] for k in procs}), np.uint16)
    idx = np.flatnonzero((r["action"] == NETWORK_CONNECT) & np.isin(r["dst_port"], ports))
    with_dst = {k for k in procs if k[4] is not None}
    for i in idx.tolist():  # host logs are small beside flows; only connections to alerted ports get here
        row = r[i]
        host, name, port = eb.strings[int(row["host_id"])], eb.strings[int(row["name_id"])], int(row["dst_port"])
        words = (int(row["dst_hi"]), int(row["dst_lo"]))
        for key in (("e", host, name, port, words), ("e", host, name, port, None)):
            if key in procs and (key[4] is None or key in with_dst):
                n = ev.counts.get(key, 0)
                ev.counts[key] = n + 1
                if n < MAX_EVENTS_PER_PAIR:
                    ev.times.setdefault(key, []).append(np.array([row["ts_ns"]], np.int64))
                break


def _bins(values: np.ndarray, lo: float, hi: float, n: int) -> list[int]:
    """Counts of values in n even bins over [lo, hi] (outside values clipped into the end bins): np.bincount, a tenth
    of np.histogram's cost on the few hundred values of one pair (10k alerts are 30k histograms)."""
    if not len(values):
        return [0] * n
    idx = ((values - lo) * (n / max(hi - lo, 1e-12))).astype(np.int64)
    np.clip(idx, 0, n - 1, out=idx)
    return np.bincount(idx, minlength=n).tolist()


def _timeline(t: np.ndarray) -> dict:
    t0, t1 = int(t[0]), int(t[-1])
    if len(t) <= MAX_TICKS:
        # positions in thousandths of the span: the plot is 1000 units wide, finer would only grow the page
        pos = np.unique(np.round((t - t0) * 1000.0 / max(t1 - t0, 1)).astype(np.int64))
        return {"t0": t0 // 1_000_000, "t1": t1 // 1_000_000, "ticks": pos.tolist()}
    return {"t0": t0 // 1_000_000, "t1": t1 // 1_000_000,
            "bins": _bins((t - t0).astype(np.float64), 0.0, float(max(t1 - t0, 1)), TIMELINE_BINS)}


def _intervals(t: np.ndarray, period: float | None, jitter: float | None) -> dict | None:
    gaps = np.diff(t).astype(np.float64) / NS
    gaps = gaps[gaps > 0]  # bursts (zero gaps) are not intervals: the detector collapses them too
    if not len(gaps):
        return None
    gaps.sort()
    top = float(gaps[int(0.99 * (len(gaps) - 1))])  # the 99th percentile (lower), on the sorted gaps
    if period:
        top = max(top, 1.5 * float(period))
    top = max(top, 1e-3)
    out = {"lo": 0.0, "hi": round(top, 3), "counts": _bins(gaps, 0.0, top, HIST_BINS), "n": int(len(gaps)),
           "over": int((gaps > top).sum())}
    if period:
        out["period"] = float(period)
        if jitter is not None:
            # The detector's jitter j is 1 - shortest/longest gap of the concentrated window (beacon.py); for beats
            # uniform in [S(1-j), S] the median (its period) is S(1 - j/2): the band is [S(1-j), S].
            j = min(max(float(jitter), 0.0), 0.99)
            hi = float(period) / (1.0 - j / 2.0)
            out["band"] = [round(hi * (1.0 - j), 3), round(hi, 3)]
    return out


def _bytes(pair: np.ndarray, peers: dict[tuple, list[np.ndarray]]) -> dict:
    others = [np.concatenate(v) for v in peers.values()]
    other = np.concatenate(others) if others else np.zeros(0, np.uint64)
    if len(other) > MAX_PEER_SAMPLES:  # an even subsample keeps the shape of a busy broker's distribution
        other = other[np.linspace(0, len(other) - 1, MAX_PEER_SAMPLES).astype(np.int64)]
    pair_f = pair.astype(np.float64)
    other_f = other.astype(np.float64)
    lo = max(1.0, min(pair_f.min() if len(pair_f) else np.inf, other_f.min() if len(other_f) else np.inf))
    lo = lo if np.isfinite(lo) else 1.0
    hi = max(lo * 10, pair_f.max() if len(pair_f) else 0.0, other_f.max() if len(other_f) else 0.0)
    llo, lhi = np.log10(lo), np.log10(hi) + 1e-9
    n = HIST_BINS // 2
    return {"lo": round(lo, 1), "hi": round(float(10 ** lhi), 1), "log": True,
            "pair": _bins(np.log10(np.maximum(pair_f, lo)), llo, lhi, n),
            "others": _bins(np.log10(np.maximum(other_f, lo)), llo, lhi, n), "peer_pairs": len(peers),
            "pair_median": float(np.median(pair_f)) if len(pair_f) else None,
            "others_median": float(np.median(other_f)) if len(other_f) else None}


def alert_view(a: dict, ev: PairEvents) -> dict:
    """One alert as the page's script reads it: the alert itself and the summaries its plots draw."""
    e = (a.get("brokerwatch") or {}).get("evidence") or {}
    view = {"alert": a}
    key = _pair_key(a)
    pkey = _process_key(a)
    flows = key is not None and key in ev.times
    # an endpoint alert draws the process's own connections; its pair's flows, when exported, give the bytes
    tkey = pkey if pkey is not None and pkey in ev.times else key if flows else None
    if tkey is None:
        return view
    t = np.sort(np.concatenate(ev.times[tkey]))
    view["events"] = ev.counts[tkey]
    view["events_from"] = "host-log connections" if tkey is pkey else "flow records"
    view["kept"] = int(len(t))
    view["timeline"] = _timeline(t)
    view["intervals"] = _intervals(t, e.get("period_s"), e.get("jitter"))
    if flows:
        view["bytes"] = _bytes(np.concatenate(ev.sizes[key]), ev.peers.get((key[2], key[3]), {}))
    return view


def _sort_key(a: dict) -> tuple:
    return (-int((a.get("event") or {}).get("severity") or 0), -float((a.get("brokerwatch") or {}).get("score") or 0),
            a.get("@timestamp") or "")


def render(alerts: list[dict], ev: PairEvents, meta: dict) -> str:
    """The whole page as text: style, data and script inlined."""
    alerts = sorted(alerts, key=_sort_key)
    data = {"meta": meta, "attack": ATTACK, "alerts": [alert_view(a, ev) for a in alerts]}
    # '</' would end the script element early whatever the JSON says: escape it (JSON allows '\/')
    payload = orjson.dumps(data, default=str).decode().replace("</", "<\\/")
    css = (HERE / "report.css").read_text()
    js = (HERE / "report.js").read_text()
    title = f"brokerwatch report: {len(alerts)} alert{'s' if len(alerts) != 1 else ''}"
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        # the page fetches nothing: a policy that forbids it makes that checkable by the browser itself
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
        "style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:\">"
        f"<meta name=\"viewport\" content=\"width=device-width\"><title>{html.escape(title)}</title>"
        f"<style>{css}</style></head><body>"
        f"<header><h1>{html.escape(title)}</h1><div id=\"meta\"></div></header>"
        "<section id=\"summary\"></section><nav id=\"pager\"></nav><main id=\"alerts\">"
        "<noscript>This report draws its plots with JavaScript.</noscript></main>"
        f"<script type=\"application/json\" id=\"report-data\">{payload}</script>"
        f"<script>{js}</script></body></html>\n"
    )


def build_report(alerts_path: str, inputs: list[str], out_path: str, progress: Callable | None = None,
                 on_batch: Callable[[int], None] | None = None) -> dict:
    """Write the report of the alerts (events from the inputs); returns what it contains, for the command's line."""
    alerts = read_alerts(alerts_path)
    ev, rejected = collect_events(inputs, alerts, progress, on_batch)
    meta = {"alerts_file": os.path.basename(alerts_path), "inputs": [os.path.basename(p) for p in inputs],
            "rows_read": ev.rows_read, "rejected": rejected}
    text = render(alerts, ev, meta)
    tmp = f"{out_path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, out_path)
    plotted = sum(1 for a in alerts if _pair_key(a) in ev.times or _process_key(a) in ev.times)
    return {"alerts": len(alerts), "with_events": plotted, "rows_read": ev.rows_read, "bytes": len(text)}


__all__ = ["ReportError", "build_report", "read_alerts", "collect_events", "alert_view", "render"]
