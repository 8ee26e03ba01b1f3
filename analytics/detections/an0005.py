"""DET0002 detections over FlowBatches: the streaming ``Detector`` that turns pub/sub flows into alerts (AN0005).

Pipeline per evaluation (every TimeWindow cadence):
1. ``ingest`` keeps the client → broker rows of pub/sub traffic: a ``ProtocolPortList`` destination port or an
   application protocol recognised on the wire (``app_proto``), topic names reduced to their anomaly score.
2. ``evaluate(now_ns)`` takes the bounded window state (analytics/window.py), drops pairs whose destination is in
   ``BrokerAllowList``, groups rows by pair (analytics/pairs.py), stitches exporter slices of long sessions
   (analytics/stitch.py), and runs the kernels: beaconing (analytics/beacon.py) on session starts and publishing
   slices, byte statistics (analytics/bytestats.py) on the records.
3. Each pair's evidence is checked against the AN0005 analytics — beaconing, high-frequency publication,
   reputation hits (``BrokerReputationList``), exfil-style long messages (``PayloadLengthThreshold``), pub/sub on
   an unusual port, anomalous topic names (``TopicAnomalyScore``) — and one alert per (analytic, pair, window) is
   emitted with a 0-100 score, the severity derived from it, and for every element that fired the reason why.
   Later evidence in the same window updates that alert (a new revision) instead of repeating it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from analytics.alerts import Alert
from analytics.beacon import F as BF
from analytics.beacon import BeaconParams, score_segments
from analytics.bytestats import F as YF
from analytics.bytestats import byte_stats
from analytics.config import Config
from analytics.pairs import PairSegments, group_pairs
from analytics.schema import APP_PROTOCOLS, FlowBatch
from analytics.stitch import StitchParams, beat_segments, stitch
from analytics.topics import score_topics
from analytics.window import STATE_COLUMNS, PairWindow

NS = 1_000_000_000


@dataclass(frozen=True)
class DetectorParams:
    """Decision levels of the AN0005 analytics (not DET0002 keys; documented in docs/architecture.md)."""

    beacon_threshold: float = 0.7  # combined beacon score (0-1) that alerts
    hf_max_period_s: float = 10.0  # high-frequency publication: publishing at least this often ...
    hf_min_beats: int = 100  # ... sustained for this many publications
    exfil_min_long_events: int = 3  # long outbound messages: at least this many records over the threshold ...
    exfil_min_bytes_factor: float = 256.0  # ... carrying at least this many times PayloadLengthThreshold bytes ...
    exfil_min_record_factor: float = 16.0  # ... at least this many times it per long record on average (bulk
    # transfers, not a chat client's occasional long message)
    max_per_pair: int = 50_000
    max_rows: int = 20_000_000
    update_min_delta: float = 5.0  # a later evaluation re-emits an alert when its score moves this much


class Detector:
    """Keeps the pub/sub flows of the current TimeWindow and scores pairs on demand."""

    def __init__(self, config: Config, params: DetectorParams = DetectorParams(),
                 beacon: BeaconParams = BeaconParams(), stitching: StitchParams = StitchParams()):
        self.config = config
        self.params = params
        self.beacon_params = beacon
        self.stitch_params = stitching
        self._window_ns = int(config.TimeWindow.window_s * NS)
        port_map = config.port_protocols()
        self._ports = np.array(sorted(port_map), dtype=np.uint16)
        self._port_proto = port_map
        self.window = PairWindow(config.TimeWindow.window_s, params.max_per_pair, params.max_rows)
        self._alerts: dict[tuple, Alert] = {}
        self._topics: dict[tuple, tuple[float, str]] = {}
        self.latest_ns = 0
        self.last_scores: dict | None = None  # the arrays of the last evaluation (for benchmarks and tests)

    # ------------------------------------------------------------------------------------------------ ingest

    def pubsub_mask(self, cols: dict[str, np.ndarray]) -> np.ndarray:
        """Rows that are client → broker pub/sub traffic (ProtocolPortList port or recognised app protocol)."""
        to_port = np.isin(cols["dst_port"], self._ports)
        from_port = np.isin(cols["src_port"], self._ports)
        recognised = cols["app_proto"] != 0
        # a broker's replies (source port listed, destination an ephemeral port) are the other direction
        return (to_port | recognised) & ~(from_port & ~to_port)

    def ingest(self, batch: FlowBatch) -> None:
        """Keep the batch's pub/sub rows for scoring."""
        if not len(batch):
            return
        cols = batch.columns
        self.latest_ns = max(self.latest_ns, int(cols["start_ns"].max()))
        keep = self.pubsub_mask(cols)
        if not keep.any():
            return
        idx = np.flatnonzero(keep)
        tscore = np.asarray(score_topics(batch.strings, self.config.TopicAnomalyScore), np.float32)
        topic_id = cols["topic_id"][idx]
        rows = {k: cols[k][idx] for k in STATE_COLUMNS if k != "topic_score"}
        rows["topic_score"] = tscore[topic_id]
        hot = np.flatnonzero(rows["topic_score"] >= self.config.TopicAnomalyScore.threshold)
        for i in hot[:1000]:  # evidence only: the worst topic seen per pair
            key = (int(rows["src_hi"][i]), int(rows["src_lo"][i]), int(rows["dst_hi"][i]), int(rows["dst_lo"][i]),
                   int(rows["dst_port"][i]))
            s = float(rows["topic_score"][i])
            if s > self._topics.get(key, (0.0, ""))[0]:
                self._topics[key] = (s, batch.strings[int(topic_id[i])])
        self.window.add(rows)

    # ------------------------------------------------------------------------------------------------ evaluate

    def evaluate(self, now_ns: int | None = None) -> list[Alert]:
        """Score every pair in the window ending at now_ns; new alerts and changed ones (as revisions)."""
        now_ns = self.latest_ns if now_ns is None else int(now_ns)
        cols = self.window.snapshot(now_ns)
        if not len(cols["start_ns"]):
            return []
        seg = group_pairs(cols)
        k = seg.keys
        allowed = self.config.allow.match(k["dst_hi"], k["dst_lo"], k["dst_port"].astype(np.int32)) >= 0
        if allowed.any():
            seg = seg.select_pairs(~allowed)
        if seg.n_pairs == 0:
            return []
        scores = self.score(seg)
        self.last_scores = scores
        return self._alerts_for(seg, scores, now_ns)

    def flush(self, now_ns: int | None = None) -> list[Alert]:
        """Final evaluation (shutdown or end of replay)."""
        return self.evaluate(now_ns)

    def score(self, seg: PairSegments) -> dict:
        """Kernel outputs for every pair of seg: beacon rows, byte rows, stitching, per-pair aggregates."""
        st = stitch(seg, self.stitch_params)
        off, t, _ = beat_segments(seg, st)
        beacon = score_segments(off, t, self.beacon_params, st.resolution_s, st.dead_s)
        e = seg.events
        nbytes = byte_stats(seg.offsets, e["bytes"], e["packets"], float(self.config.PayloadLengthThreshold))
        pair = seg.pair_of_event()
        sessions = np.bincount(pair[st.is_head], minlength=seg.n_pairs)
        longest = np.zeros(seg.n_pairs, np.int64)
        np.maximum.at(longest, pair, st.slices)
        app = np.zeros(seg.n_pairs, np.uint8)
        np.maximum.at(app, pair, e["app_proto"])
        topic = np.zeros(seg.n_pairs, np.float32)
        np.maximum.at(topic, pair, e["topic_score"])
        first = e["start_ns"][seg.offsets[:-1]]
        last = e["start_ns"][seg.offsets[1:] - 1]
        return {"beacon": beacon, "bytes": nbytes, "sessions": sessions, "longest_session_slices": longest,
                "resolution_s": st.resolution_s, "dead_s": st.dead_s, "pair_timeout_s": st.pair_timing[:, 0],
                "app_proto": app, "topic_score": topic, "first_ns": first, "last_ns": last,
                "active_timeout_s": st.active_timeout_s}

    def decide(self, seg: PairSegments, scores: dict) -> np.ndarray:
        """Boolean per pair: does any AN0005 analytic fire (vectorised; details come from _evidence)."""
        return self._fired_arrays(seg, scores)["any"]

    def _fired_arrays(self, seg: PairSegments, s: dict) -> dict:
        p, cfg = self.params, self.config
        b, y = s["beacon"], s["bytes"]
        k = seg.keys
        beacon = b[:, BF["score"]] >= p.beacon_threshold
        hf = (b[:, BF["beats"]] >= p.hf_min_beats) & (b[:, BF["span_s"]] > 0) & \
            (b[:, BF["span_s"]] / np.maximum(b[:, BF["beats"]] - 1, 1) <= p.hf_max_period_s)
        exfil = (y[:, YF["long_events"]] >= p.exfil_min_long_events) & \
            (y[:, YF["long_bytes"]] >= p.exfil_min_bytes_factor * cfg.PayloadLengthThreshold) & \
            (y[:, YF["long_bytes"]] >= p.exfil_min_record_factor * cfg.PayloadLengthThreshold
             * np.maximum(y[:, YF["long_events"]], 1))
        rep = cfg.reputation.match(k["dst_hi"], k["dst_lo"], k["dst_port"].astype(np.int32)) \
            if len(cfg.reputation) else np.full(seg.n_pairs, -1)
        unusual = (s["app_proto"] != 0) & ~np.isin(k["dst_port"], self._ports)
        topic = s["topic_score"] >= cfg.TopicAnomalyScore.threshold
        return {"beacon": beacon, "hf": hf, "exfil": exfil, "rep": rep, "unusual": unusual, "topic": topic,
                "any": beacon | hf | exfil | (rep >= 0) | unusual | topic}

    def _alerts_for(self, seg: PairSegments, s: dict, now_ns: int) -> list[Alert]:
        fired = self._fired_arrays(seg, s)
        window_start = (now_ns // self._window_ns) * self._window_ns
        out = []
        for i in np.flatnonzero(fired["any"]):
            alert = self._alert(seg, s, fired, int(i), window_start)
            prev = self._alerts.get(alert.key)
            if not alert.evidence["analytics"]:
                continue  # only evidence (a default-list reputation hit), no analytic fired
            if prev is not None:
                same = prev.evidence["analytics"] == alert.evidence["analytics"]
                if same and abs(prev.score - alert.score) < self.params.update_min_delta:
                    continue
                alert.revision = prev.revision + 1
            self._alerts[alert.key] = alert
            out.append(alert)
        self._alerts = {key: a for key, a in self._alerts.items() if key[-1] >= window_start - self._window_ns}
        return out

    def _alert(self, seg: PairSegments, s: dict, fired: dict, i: int, window_start: int) -> Alert:
        cfg, p = self.config, self.params
        k = seg.keys
        b, y = s["beacon"][i], s["bytes"][i]
        dport = int(k["dst_port"][i])
        app = int(s["app_proto"][i])
        proto = APP_PROTOCOLS[app] if app else self._port_proto.get(dport, "unknown")
        why: list[dict] = []
        if dport in self._port_proto:
            why.append({"element": "ProtocolPortList", "why": f"destination port {dport} is listed for "
                                                                f"{self._port_proto[dport]}"})
        why.append({"element": "BrokerAllowList", "why": "destination is not in the allowlist"})
        score = 0.0
        analytics = []
        if fired["beacon"][i]:
            score = max(score, 100.0 * b[BF["score"]])
            analytics.append("beaconing")
            why.append({"element": "TimeWindow", "why": f"beaconing over the {cfg.TimeWindow.window_s:g} s window: "
                        f"period {b[BF['period_s']]:.1f} s, jitter {b[BF['jitter']]:.2f}, "
                        f"{b[BF['missed_fraction']]:.0%} beats missed, beacon score {b[BF['score']]:.2f}"})
        if fired["hf"][i]:
            rate = 60.0 * (b[BF["beats"]] - 1) / max(b[BF["span_s"]], 1e-9)
            score = max(score, 60.0)
            analytics.append("high_frequency_publication")
            why.append({"element": "TimeWindow", "why": f"high-frequency publication: {rate:.1f} per minute "
                                                        f"over {int(b[BF['beats']])} publications"})
        rep = int(fired["rep"][i])
        if rep >= 0:
            label = cfg.reputation.labels[rep]
            if _reputation_alerts(label):
                score = max(score, 70.0)
                analytics.append("reputation")
            else:
                score = min(100.0, score + 10.0) if score else score
            why.append({"element": "BrokerReputationList", "why": f"destination matches {label}"})
        if fired["exfil"][i]:
            score = max(score, 75.0)
            analytics.append("long_outbound_messages")
            why.append({"element": "PayloadLengthThreshold",
                        "why": f"{int(y[YF['long_events']])} records above {cfg.PayloadLengthThreshold} bytes/packet, "
                               f"{int(y[YF['long_bytes']])} bytes"})
        if fired["unusual"][i]:
            score = max(score, 40.0)
            analytics.append("unusual_port")
            why.append({"element": "ProtocolPortList", "why": f"{proto} recognised on port {dport}, which is not "
                                                              f"listed for it"})
        if fired["topic"][i]:
            score = max(score, 50.0)
            analytics.append("topic_anomaly")
            key = (int(k["src_hi"][i]), int(k["src_lo"][i]), int(k["dst_hi"][i]), int(k["dst_lo"][i]), dport)
            ts, topic = self._topics.get(key, (float(s["topic_score"][i]), ""))
            why.append({"element": "TopicAnomalyScore", "why": f"topic {topic!r} scores {ts:.2f} >= "
                                                               f"{cfg.TopicAnomalyScore.threshold}"})
        score = min(100.0, score + 10.0 * (len(analytics) - 1))  # corroborating analytics raise confidence
        reasons: dict[str, str] = {}
        for w in why:
            reasons[w["element"]] = reasons[w["element"]] + "; " + w["why"] if w["element"] in reasons else w["why"]
        evidence = {
            "analytics": analytics,
            "fired": list(reasons),
            "why": reasons,
            "period_s": round(float(b[BF["period_s"]]), 3),
            "periods_s": [round(float(v), 1) for v in (b[BF["spec_period_s"]], b[BF["period2_s"]],
                                                       b[BF["period3_s"]]) if v > 0],
            "jitter": round(float(b[BF["jitter"]]), 3),
            "missed_beat_fraction": round(float(b[BF["missed_fraction"]]), 3),
            "beacon_score": round(float(b[BF["score"]]), 3),
            "interarrival": {"concentration": round(float(b[BF["concentration"]]), 3),
                             "log10_p": round(float(b[BF["ia_logp"]]), 2),
                             "bowley_skew": round(float(b[BF["bowley_skew"]]), 3),
                             "mad_s": round(float(b[BF["mad_s"]]), 3),
                             "hour_coverage": round(float(b[BF["hist_coverage"]]), 3)},
            "spectral": {"log10_p": round(float(b[BF["spec_logp"]]), 2),
                         "acf": round(float(b[BF["spec_acf"]]), 3)},
            "events": int(seg.offsets[i + 1] - seg.offsets[i]),
            "beats": int(b[BF["beats"]]),
            "sessions": int(s["sessions"][i]),
            "longest_session_slices": int(s["longest_session_slices"][i]),
            "active_timeout_s": float(s["pair_timeout_s"][i]),
            "timing": {"resolution_s": float(s["resolution_s"][i]), "dead_time_s": round(float(s["dead_s"][i]), 3)},
            "bytes": {"per_flow_median": float(y[YF["bpf_median"]]), "per_flow_mad": float(y[YF["bpf_mad"]]),
                      "mode_share": round(float(y[YF["bpf_mode_share"]]), 3),
                      "per_packet_median": round(float(y[YF["bpp_median"]]), 1),
                      "long_share": round(float(y[YF["long_share"]]), 3), "total": int(y[YF["total_bytes"]])},
            "topic_score": round(float(s["topic_score"][i]), 3),
        }
        if rep >= 0:
            evidence["reputation_hit"] = cfg.reputation.labels[rep]
        return Alert("AN0005", int(s["last_ns"][i]), (int(k["src_hi"][i]), int(k["src_lo"][i])),
                     (int(k["dst_hi"][i]), int(k["dst_lo"][i])), dport, proto, round(score, 1), evidence,
                     window_start)


def _reputation_alerts(label: str) -> bool:
    """A hit alerts on its own when it comes from an operator's threat-intel source; hits on the shipped list of
    public brokers and dynamic-DNS names (default_reputation.txt, and names resolved from it) are evidence only."""
    return not label.startswith("default_reputation.txt:")


__all__ = ["Detector", "DetectorParams", "Alert"]
