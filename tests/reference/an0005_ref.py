"""Plain-Python twin of the AN0005 alert builder: the per-alert code that Detector._build_alerts vectorises
(one call per firing pair; ``self`` is the Detector)."""

from __future__ import annotations

from analytics.alerts import Alert
from analytics.beacon import F as BF
from analytics.bytestats import F as YF
import math

from analytics.detections.an0005 import DIRECTIONS, HARMONICS, _reputation_alerts, population_why
from analytics.schema import APP_PROTOCOLS


def alert_ref(self, seg, s: dict, fired: dict, i: int, window_start: int) -> Alert:
    cfg = self.config
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
    p = self.params
    nc, share = int(s["broker_clients"][i]), float(s["broker_similar_share"][i])
    direction = DIRECTIONS[int(fired["direction"][i])]
    if fired["site"][i]:
        score = score * p.internal_score_factor
        why.append({"element": "InternalNetworks", "why": (
            f"the broker is inside InternalNetworks ({direction}), where frequent publication, large messages and "
            f"fleets are normal work; it alerts on reputation, a topic or a lone client's beacon ({nc} "
            f"client{'s' if nc != 1 else ''} of this broker), score x{p.internal_score_factor:g}")})
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
    role = "lone" if nc == 1 else "fleet" if nc >= p.fleet_min_clients and \
        (share >= p.fleet_similar_share or round(share * nc) >= p.fleet_min_clients) else "shared"
    evidence["direction"] = direction
    fanout = int(s["source_rhythm_brokers"][i])
    evidence["broker_population"] = {"clients": nc, "similar_rhythm_share": round(share, 3), "role": role,
                                     "source_brokers_in_rhythm": fanout,
                                     "why": population_why(role, nc, round(share, 3), bool(fired["site"][i]),
                                                           bool(fired["beacon"][i]),
                                                           max(fanout, int(s["source_site_brokers"][i]))
                                                           >= p.poller_min_brokers)}
    if rep >= 0:
        evidence["reputation_hit"] = cfg.reputation.labels[rep]
    return Alert("AN0005", int(s["last_ns"][i]), (int(k["src_hi"][i]), int(k["src_lo"][i])),
                 (int(k["dst_hi"][i]), int(k["dst_lo"][i])), dport, proto, round(score, 1), evidence,
                 window_start)


def _in_rhythm(period_j, log_period_i, tolerance) -> bool:
    """Is period_j within tolerance of the period exp(log_period_i) divided by a harmonic (an0005.HARMONICS)."""
    lj = math.log(min(max(float(period_j), 1e-3), 1e9))
    return any(abs(lj - (log_period_i - math.log(k))) <= math.log1p(tolerance) for k in HARMONICS)


def broker_population_ref(keys: dict, period_s, beaconing, tolerance: float) -> tuple[list[int], list[float]]:
    """Plain-loop twin of analytics.detections.an0005.broker_population."""
    n = len(keys["dst_port"])
    broker = [(int(keys["dst_hi"][i]), int(keys["dst_lo"][i]), int(keys["dst_port"][i])) for i in range(n)]
    clients, share = [], []
    for i in range(n):
        mine = [j for j in range(n) if broker[j] == broker[i]]
        lp = math.log(min(max(float(period_s[i]), 1e-3), 1e9))
        similar = sum(1 for j in mine if beaconing[j] and _in_rhythm(period_s[j], lp, tolerance))
        clients.append(len(mine))
        share.append(similar / len(mine))
    return clients, share


def source_site_brokers_ref(keys: dict, site, beaconing) -> list[int]:
    """Plain-loop twin of analytics.detections.an0005.source_site_brokers."""
    n = len(keys["src_lo"])
    source = [(int(keys["src_hi"][i]), int(keys["src_lo"][i])) for i in range(n)]
    return [sum(1 for j in range(n) if source[j] == source[i] and site[j] and beaconing[j]) for i in range(n)]


def source_rhythm_brokers_ref(keys: dict, period_s, beaconing, tolerance: float) -> list[int]:
    """Plain-loop twin of analytics.detections.an0005.source_rhythm_brokers."""
    n = len(keys["src_lo"])
    source = [(int(keys["src_hi"][i]), int(keys["src_lo"][i])) for i in range(n)]
    out = []
    for i in range(n):
        lp = math.log(min(max(float(period_s[i]), 1e-3), 1e9))
        out.append(sum(1 for j in range(n) if source[j] == source[i] and beaconing[j] and
                       _in_rhythm(period_s[j], lp, tolerance)))
    return out
