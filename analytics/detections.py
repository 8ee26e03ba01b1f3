"""DET0002 detections over FlowBatches: the streaming ``Detector`` that turns pub/sub flows into alerts.

First version (AN0005 only): pub/sub flows are those to a ``ProtocolPortList`` port or with a recognised
application protocol; pairs (source, destination, destination port, protocol) outside ``BrokerAllowList`` with
enough connections are scored for periodicity on their start times (bursts collapsed, RITA-style median/MAD of
gaps), with reputation hits and unusual ports as further evidence.
"""

from __future__ import annotations

import numpy as np

from analytics.alerts import Alert
from analytics.config import Config
from analytics.schema import APP_PROTOCOLS, APP_PROTOCOL_ID, FlowBatch

NS = 1_000_000_000
#: Events closer than this are one burst (one beat), not several.
BURST_GAP_S = 2.0
#: Fewest distinct beats that can show periodicity (RITA's minimum is 4 connections).
MIN_BEATS = 4
#: Beacon score (0-1) at which a pair alerts.
ALERT_THRESHOLD = 0.7


class Detector:
    """Keeps the pub/sub flows of the current TimeWindow and scores pairs on demand."""

    def __init__(self, config: Config):
        self.config = config
        self._window_ns = int(config.TimeWindow.window_s * NS)
        port_map = config.port_protocols()
        self._ports = np.array(sorted(port_map), dtype=np.uint16)
        self._port_proto = port_map
        self._pubsub_apps = np.array([i for i, n in enumerate(APP_PROTOCOLS) if n], dtype=np.uint8)
        self._batches: list[FlowBatch] = []
        self._alerts: dict[tuple, Alert] = {}
        self.latest_ns = 0

    def ingest(self, batch: FlowBatch) -> None:
        """Keep the batch's pub/sub rows (client → broker direction) for scoring."""
        if not len(batch):
            return
        cols = batch.columns
        to_broker = np.isin(cols["dst_port"], self._ports) | np.isin(cols["app_proto"], self._pubsub_apps)
        from_broker = np.isin(cols["src_port"], self._ports) & (cols["app_proto"] == 0)
        keep = to_broker & ~(from_broker & ~np.isin(cols["dst_port"], self._ports))
        if keep.any():
            self._batches.append(batch.select(keep))
        self.latest_ns = max(self.latest_ns, int(cols["start_ns"].max()))

    def evaluate(self, now_ns: int | None = None) -> list[Alert]:
        """Score every pair in the window ending at now_ns; new alerts and changed ones (as revisions)."""
        now_ns = self.latest_ns if now_ns is None else now_ns
        lo = now_ns - self._window_ns
        data = FlowBatch.concat(self._batches)
        if len(data):
            data = data.select(data.columns["start_ns"] >= lo)
        self._batches = [data] if len(data) else []
        if not len(data):
            return []
        c = data.columns
        allowed = self.config.allow.match(c["dst_hi"], c["dst_lo"], c["dst_port"].astype(np.int32)) >= 0
        data = data.select(~allowed)
        if not len(data):
            return []
        return self._score_pairs(data, now_ns)

    def flush(self, now_ns: int | None = None) -> list[Alert]:
        """Final evaluation (shutdown or end of replay)."""
        return self.evaluate(now_ns)

    def _score_pairs(self, data: FlowBatch, now_ns: int) -> list[Alert]:
        c = data.columns
        order = np.lexsort((c["start_ns"], c["proto"], c["dst_port"], c["dst_lo"], c["dst_hi"], c["src_lo"],
                            c["src_hi"]))
        keys = np.stack([c[k][order].astype(np.uint64) for k in ("src_hi", "src_lo", "dst_hi", "dst_lo", "dst_port",
                                                                  "proto")], axis=1)
        change = np.ones(len(order), bool)
        change[1:] = (keys[1:] != keys[:-1]).any(axis=1)
        starts = np.flatnonzero(change)
        ends = np.append(starts[1:], len(order))
        rep = self.config.reputation.match(c["dst_hi"], c["dst_lo"], c["dst_port"].astype(np.int32))
        window_start = (now_ns // self._window_ns) * self._window_ns
        out = []
        for s, e in zip(starts, ends):
            idx = order[s:e]
            ev = beacon_evidence(c["start_ns"][idx], c["bytes"][idx], c["packets"][idx])
            if ev is None:
                continue
            i0 = idx[0]
            rep_hit = int(rep[idx].max())
            dport = int(c["dst_port"][i0])
            app = int(c["app_proto"][idx].max())
            proto_name = APP_PROTOCOLS[app] if app else self._port_proto.get(dport, "unknown")
            fired = ["TimeWindow", "ProtocolPortList" if dport in self._port_proto else "unusual_port",
                     "BrokerAllowList"]
            score = 100.0 * ev["beacon_score"]
            if rep_hit >= 0:
                fired.append("BrokerReputationList")
                ev["reputation_hit"] = self.config.reputation.labels[rep_hit]
                score = min(100.0, score + 15)
            if app and dport not in self._port_proto:
                ev["unusual_port"] = True
                score = min(100.0, score + 10)
            if ev["bytes_per_flow_median"] > self.config.PayloadLengthThreshold:
                fired.append("PayloadLengthThreshold")
            if ev["beacon_score"] < ALERT_THRESHOLD:
                continue
            ev["fired"] = fired
            alert = Alert("AN0005", int(c["start_ns"][idx].max()), (int(c["src_hi"][i0]), int(c["src_lo"][i0])),
                          (int(c["dst_hi"][i0]), int(c["dst_lo"][i0])), dport, proto_name, score, ev, window_start)
            prev = self._alerts.get(alert.key)
            if prev is not None:
                if abs(prev.score - alert.score) < 5 and prev.evidence.get("events") == ev["events"]:
                    continue
                alert.revision = prev.revision + 1
            self._alerts[alert.key] = alert
            out.append(alert)
        self._alerts = {k: a for k, a in self._alerts.items() if k[-1] >= window_start - self._window_ns}
        return out


def beacon_evidence(start_ns: np.ndarray, nbytes: np.ndarray, packets: np.ndarray) -> dict | None:
    """Periodicity evidence for one pair's sorted start times, or None with too few beats."""
    t = np.sort(start_ns).astype(np.float64) / NS
    if len(t) < MIN_BEATS:
        return None
    gaps = np.diff(t)
    beats = np.concatenate(([t[0]], t[1:][gaps >= BURST_GAP_S]))
    if len(beats) < MIN_BEATS:
        return None
    g = np.diff(beats)
    med = float(np.median(g))
    mad = float(np.median(np.abs(g - med)))
    q1, q3 = np.percentile(g, [25, 75])
    bowley = 0.0 if q3 == q1 else float((q3 + q1 - 2 * med) / (q3 - q1))
    # Missed beats show as gaps near whole multiples of the period; count them as one beat each.
    multiples = np.round(g / med) if med > 0 else np.ones_like(g)
    missed = float(np.clip(multiples - 1, 0, None).sum() / max(multiples.sum(), 1))
    single = g[multiples == 1]
    jitter = float((single.max() - single.min()) / med) if len(single) > 1 and med > 0 else 0.0
    mad_score = max(0.0, 1.0 - (mad / med if med > 0 else 1.0) * 2)
    skew_score = 1.0 - min(abs(bowley), 1.0)
    count_score = min(1.0, (len(beats) - 1) / 10.0)
    score = (0.5 * mad_score + 0.3 * skew_score + 0.2 * count_score)
    return {
        "beacon_score": round(score, 3),
        "period_s": round(med, 3),
        "jitter": round(jitter, 3),
        "mad_s": round(mad, 3),
        "bowley_skew": round(bowley, 3),
        "missed_beat_fraction": round(missed, 3),
        "events": int(len(t)),
        "beats": int(len(beats)),
        "bytes_per_flow_median": float(np.median(nbytes)),
        "bytes_per_flow_mad": float(np.median(np.abs(nbytes - np.median(nbytes)))),
        "bytes_total": int(nbytes.sum()),
        "packets_total": int(packets.sum()),
    }


__all__ = ["Detector", "Alert", "beacon_evidence", "APP_PROTOCOL_ID"]
