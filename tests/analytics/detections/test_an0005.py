"""The AN0005 Detector: which analytics fire, what each alert explains, one alert per pair per window."""

from __future__ import annotations

import dataclasses

import numpy as np

from analytics.config import AddressSet, Config
from analytics.detections.an0005 import Detector
from analytics.schema import APP_PROTOCOL_ID, COLUMNS, FLOW_DTYPE, FlowBatch, ip_to_words

NS = 1_000_000_000
T0 = 1_767_225_600
SYN, FIN, PSH, ACK = 0x02, 0x01, 0x08, 0x10


def flows(times, src="10.0.0.5", dst="198.18.0.9", dport=1883, nbytes=600, packets=8, app=0, topic=None,
          sport=None):
    n = len(times)
    cols = {k: np.zeros(n, FLOW_DTYPE[k]) for k in COLUMNS}
    cols["start_ns"][:] = (T0 + np.asarray(times)) * NS
    cols["end_ns"][:] = cols["start_ns"] + NS // 2
    cols["src_hi"][:], cols["src_lo"][:] = ip_to_words(src)
    cols["dst_hi"][:], cols["dst_lo"][:] = ip_to_words(dst)
    cols["dst_port"][:] = dport
    cols["src_port"][:] = np.arange(n) % 20000 + 40000 if sport is None else sport
    cols["proto"][:] = 6
    cols["bytes"][:] = nbytes
    cols["packets"][:] = packets
    cols["tcp_flags"][:] = SYN | ACK | PSH | FIN
    cols["app_proto"][:] = app
    strings = [""]
    if topic:
        strings.append(topic)
        cols["topic_id"][:] = 1
    return FlowBatch(cols, strings)


def beacon_times(period=60.0, jitter=0.3, hours=6, seed=1):
    rng = np.random.default_rng(seed)
    return np.cumsum(rng.uniform(period * (1 - jitter), period, int(hours * 3600 / period)))


def run(cfg, *batches, now=None):
    det = Detector(cfg)
    for b in batches:
        det.ingest(b)
    return det, det.evaluate(now)


def test_beacon_alert_explains_itself():
    det, alerts = run(Config(), flows(beacon_times()))
    assert len(alerts) == 1
    a = alerts[0]
    ev = a.evidence
    assert a.rule_id == "AN0005" and a.protocol == "mqtt" and a.score >= 70
    assert ev["analytics"] == ["beaconing"]
    assert {"ProtocolPortList", "BrokerAllowList", "TimeWindow"} <= set(ev["fired"])
    assert "period" in ev["why"]["TimeWindow"] and "1883" in ev["why"]["ProtocolPortList"]
    assert 42 <= ev["period_s"] <= 60 and ev["beats"] == ev["events"]
    d = a.to_dict()
    assert d["rule"]["ruleset"] == "DET0002" and d["destination"]["port"] == 1883
    assert d["brokerwatch"]["score"] == a.score and d["event"]["severity"] >= 3


def test_allowlisted_broker_and_random_traffic_are_quiet():
    allow = Config.from_mapping({"BrokerAllowList": ["198.18.0.0/24"]})
    assert run(allow, flows(beacon_times()))[1] == []
    rng = np.random.default_rng(4)
    assert run(Config(), flows(np.cumsum(rng.exponential(60, 400))))[1] == []


def test_broker_replies_are_not_pubsub_clients():
    det = Detector(Config())
    b = flows(beacon_times(), src="198.18.0.9", dst="10.0.0.5", dport=50000, sport=1883)
    assert not len(det.oriented(b.columns)["start_ns"])


def test_one_alert_per_pair_per_window_updated_by_later_evidence():
    times = beacon_times(hours=8)
    det = Detector(Config())
    first_half = times[times < 4 * 3600]
    det.ingest(flows(first_half))
    a1 = det.evaluate(int((T0 + 4 * 3600) * NS))
    assert len(a1) == 1
    assert det.evaluate(int((T0 + 4 * 3600) * NS)) == []  # nothing new: no repeat
    det.ingest(flows(times[times >= 4 * 3600], nbytes=200_000, packets=150))  # now also exfil-style messages
    a2 = det.evaluate(int((T0 + 8 * 3600) * NS))
    assert len(a2) == 1 and a2[0].id == a1[0].id and a2[0].revision == 1
    assert "long_outbound_messages" in a2[0].evidence["analytics"]
    assert "PayloadLengthThreshold" in a2[0].evidence["fired"]


def test_exfil_unusual_port_and_topic_analytics():
    exfil = flows([100.0, 5000.0, 9000.0, 15000.0], nbytes=500_000, packets=360)
    _, alerts = run(Config(), exfil)
    assert [a.evidence["analytics"] for a in alerts] == [["long_outbound_messages"]]
    odd = flows([10.0, 4000.0], dport=4444, app=APP_PROTOCOL_ID["mqtt"])
    _, alerts = run(Config(), odd)
    assert alerts[0].evidence["analytics"] == ["unusual_port"] and alerts[0].protocol == "mqtt"
    assert "4444" in alerts[0].evidence["why"]["ProtocolPortList"]
    topical = flows([10.0, 4000.0], topic="c2/8f3a9b2c7d1e4f60a9b8c7d6e5f4a3b2")
    _, alerts = run(Config(), topical)
    assert alerts[0].evidence["analytics"] == ["topic_anomaly"]
    assert "8f3a9b2c" in alerts[0].evidence["why"]["TopicAnomalyScore"]


def test_reputation_from_an_operator_source_alerts_default_list_is_evidence():
    hi, lo = ip_to_words("198.18.0.9")
    mask = (1 << 64) - 1
    for label, alerts_expected in (("intel.csv:198.18.0.9", True), ("default_reputation.txt:198.18.0.9", False)):
        rep = AddressSet(np.array([hi], np.uint64), np.array([lo], np.uint64), np.array([mask], np.uint64),
                         np.array([mask], np.uint64), np.array([-1], np.int32), (), (label,))
        cfg = dataclasses.replace(Config(), reputation=rep)
        _, alerts = run(cfg, flows([10.0, 4000.0]))
        assert bool(alerts) == alerts_expected
        if alerts:
            assert alerts[0].evidence["reputation_hit"] == label
            assert "BrokerReputationList" in alerts[0].evidence["fired"]
    # on a beacon, the default list adds evidence and score
    rep = AddressSet(np.array([hi], np.uint64), np.array([lo], np.uint64), np.array([mask], np.uint64),
                     np.array([mask], np.uint64), np.array([-1], np.int32), (), ("default_reputation.txt:x",))
    _, plain = run(Config(), flows(beacon_times()))
    _, listed = run(dataclasses.replace(Config(), reputation=rep), flows(beacon_times()))
    assert listed[0].score >= plain[0].score and "BrokerReputationList" in listed[0].evidence["fired"]


def test_empty_inputs():
    det = Detector(Config())
    det.ingest(FlowBatch.empty())
    assert det.evaluate(T0 * NS) == [] and det.flush() == []


def test_segment_max_equals_the_accumulation_it_replaced():
    import numpy as np

    from analytics.detections.an0005 import _segment_max

    rng = np.random.default_rng(3)
    for _ in range(50):
        counts = rng.integers(0, 4, rng.integers(0, 30))
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        for dtype, values in ((np.int64, rng.integers(-3, 9, offsets[-1])),
                              (np.float32, rng.normal(size=offsets[-1]).astype(np.float32)),
                              (np.uint8, rng.integers(0, 7, offsets[-1]).astype(np.uint8))):
            want = np.zeros(len(counts), dtype)
            np.maximum.at(want, np.repeat(np.arange(len(counts)), counts), values)
            np.testing.assert_array_equal(_segment_max(values, offsets, dtype), want)


# ------------------------------------------------------------------------------ site awareness, broker population


def concat(*batches):
    cols = {k: np.concatenate([b.columns[k] for b in batches]) for k in COLUMNS}
    return FlowBatch(cols, batches[0].strings)


def job_queue(dst, seed=3):
    """Five app servers sending bursts of large job messages to one AMQP broker."""
    rng = np.random.default_rng(seed)
    out = []
    for h in range(5):
        bursts = np.sort(rng.uniform(0, 6 * 3600, 12))
        times = np.sort(np.concatenate([b + rng.uniform(0, 30, 8) for b in bursts]))
        out.append(flows(times, src=f"10.1.0.{11 + h}", dst=dst, dport=5672, nbytes=2_000_000, packets=200))
    return concat(*out)


def test_internal_job_queue_with_large_messages_is_quiet_and_the_same_to_outside_is_exfil():
    assert run(Config(), job_queue("10.1.2.3"))[1] == []
    alerts = run(Config(), job_queue("198.18.0.9"))[1]
    assert alerts and all("long_outbound_messages" in a.evidence["analytics"] for a in alerts)
    assert {a.evidence["direction"] for a in alerts} == {"internal→external"}


def test_sensor_fleet_reconnecting_to_the_site_broker_is_quiet():
    fleet = [flows(beacon_times(60.0, 0.05, seed=s), src=f"10.2.0.{s + 1}", dst="10.2.1.1") for s in range(50)]
    det, alerts = run(Config(), concat(*fleet))
    assert alerts == []
    assert det.last_scores["beacon"].shape[0] == 50  # scored, not dropped


def test_lone_internal_beacon_alerts_lower_with_its_reason():
    inside = run(Config(), flows(beacon_times(), src="10.3.0.5", dst="10.3.1.1"))[1]
    outside = run(Config(), flows(beacon_times(), src="10.3.0.5", dst="198.18.0.9"))[1]
    assert len(inside) == len(outside) == 1
    a, b = inside[0], outside[0]
    assert a.evidence["analytics"] == b.evidence["analytics"] == ["beaconing"]
    assert a.evidence["direction"] == "internal→internal" and b.evidence["direction"] == "internal→external"
    pop = dict(a.evidence["broker_population"])
    assert "C2 shape" in pop.pop("why") and pop == {"clients": 1, "similar_rhythm_share": 1.0, "role": "lone",
                                                    "source_brokers_in_rhythm": 1}
    assert "lone client" in a.evidence["why"]["InternalNetworks"] and "InternalNetworks" not in b.evidence["why"]
    assert a.score < b.score and a.to_dict()["event"]["severity"] < b.to_dict()["event"]["severity"]


def test_internal_networks_key_is_validated_and_decides_the_class():
    site = Config.from_mapping({"InternalNetworks": ["198.18.0.0/24"]})
    a = run(site, flows(beacon_times(), src="10.3.0.5", dst="198.18.0.9"))[1]
    assert [x.evidence["direction"] for x in a] == ["external→internal"]
    try:
        Config.from_mapping({"InternalNetworks": ["10.0.0.0/8", "intranet.example:80"]})
    except Exception as e:  # ConfigError names the entry and its place
        assert "InternalNetworks.1" in str(e)
    else:
        raise AssertionError("a host:port entry must be refused")


def listed(address, label):
    """A Config whose reputation set holds one address under label (as the collector builds it)."""
    hi, lo = ip_to_words(address)
    mask = (1 << 64) - 1
    rep = AddressSet(np.array([hi], np.uint64), np.array([lo], np.uint64), np.array([mask], np.uint64),
                     np.array([mask], np.uint64), np.array([-1], np.int32), (), (label,))
    return dataclasses.replace(Config(), reputation=rep)


def cloud_fleet(n=20, dst="198.18.7.7", period=60.0):
    """n internal sensors publishing every period seconds to one outside broker, each its own phase."""
    return [flows(beacon_times(period, 0.05, seed=s) + s * 1.7, src=f"10.4.0.{s + 1}", dst=dst, dport=8883)
            for s in range(n)]


def test_sensor_fleet_to_an_outside_broker_is_quiet():
    det, alerts = run(Config(), concat(*cloud_fleet()))
    assert alerts == []
    assert det.last_scores["beacon"].shape[0] == 20  # scored, not dropped


def test_the_same_fleet_alerts_with_a_reputation_hit_and_says_it_is_a_fleet():
    for label in ("intel.csv:198.18.7.7", "default_reputation.txt:dyndns"):  # an operator's list; the shipped one
        alerts = run(listed("198.18.7.7", label), concat(*cloud_fleet()))[1]
        assert len(alerts) == 20
        for a in alerts:
            assert "beaconing" in a.evidence["analytics"] and a.evidence["reputation_hit"] == label
            pop = a.evidence["broker_population"]
            assert pop["role"] == "fleet" and pop["clients"] == 20 and pop["similar_rhythm_share"] >= 0.9
            assert "fleet" in pop["why"] and "corroborates" in pop["why"]


def test_the_same_fleet_alerts_on_an_anomalous_topic():
    fleet = cloud_fleet()
    fleet[3] = flows(beacon_times(60.0, 0.05, seed=3) + 3 * 1.7, src="10.4.0.4", dst="198.18.7.7", dport=8883,
                     topic="c2/8f3a9b2c7d1e4f60a9b8c7d6e5f4a3b2")
    alerts = run(Config(), *fleet)[1]
    assert [a.src for a in alerts] == [ip_to_words("10.4.0.4")]
    assert alerts[0].evidence["analytics"] == ["beaconing", "topic_anomaly"]


def test_a_lone_beacon_to_the_fleets_broker_alerts():
    # an implant on one host beaconing to the fleet's broker in its own rhythm, and a lone host on a broker nobody
    # else uses, both alert; the fleet stays quiet
    odd = flows(beacon_times(300.0, 0.2, seed=9), src="10.4.9.9", dst="198.18.7.7", dport=8883)
    alone = flows(beacon_times(60.0, 0.05, seed=4), src="10.4.9.10", dst="198.18.8.8", dport=8883)
    alerts = run(Config(), concat(*cloud_fleet(), odd, alone))[1]
    by_src = {a.src: a for a in alerts}
    assert set(by_src) == {ip_to_words("10.4.9.9"), ip_to_words("10.4.9.10")}
    shared = by_src[ip_to_words("10.4.9.9")].evidence["broker_population"]
    assert shared["clients"] == 21 and shared["role"] == "shared" and shared["similar_rhythm_share"] < 0.5
    lone = by_src[ip_to_words("10.4.9.10")].evidence["broker_population"]
    assert lone["role"] == "lone" and "C2 shape" in lone["why"]


def test_a_few_hosts_in_one_rhythm_are_not_a_fleet():
    # below fleet_min_clients (5) an outside broker's clients in one rhythm still alert: an implant must be on many
    # hosts before the fleet rule reads it as infrastructure
    alerts = run(Config(), concat(*cloud_fleet(4)))[1]
    assert len(alerts) == 4 and {a.evidence["broker_population"]["role"] for a in alerts} == {"shared"}


def test_a_monitor_polling_idle_site_brokers_is_quiet_a_lone_beacon_is_not():
    # one monitor checks six site brokers every 120 s; nobody else used them today, so it is each one's lone client
    polls = [flows(beacon_times(120.0, 0.02, seed=b) + b, src="10.5.0.2", dst=f"10.5.1.{b + 1}", dport=1883)
             for b in range(6)]
    implant = flows(beacon_times(120.0, 0.3, seed=11), src="10.5.0.66", dst="10.5.2.1", dport=1883)
    alerts = run(Config(), concat(*polls, implant))[1]
    assert [a.src for a in alerts] == [ip_to_words("10.5.0.66")]
    pop = alerts[0].evidence["broker_population"]
    assert pop["role"] == "lone" and pop["source_brokers_in_rhythm"] == 1
    # the same monitor on two brokers only is not a poller: both alert
    assert len(run(Config(), concat(*polls[:2]))[1]) == 2


def test_a_monitor_checking_each_site_service_on_its_own_schedule_is_a_poller():
    # Nagios-style: each broker's check has its own interval (60 s, 120 s, 300 s): no common rhythm, but three of
    # the site's brokers beaconed to by one source is a poller; the implant beside it still alerts
    polls = [flows(beacon_times(period, 0.01, seed=b) + b, src="10.5.0.3", dst=f"10.5.3.{b + 1}", dport=port)
             for b, (period, port) in enumerate([(60.0, 5672), (120.0, 1883), (300.0, 61613)])]
    implant = flows(beacon_times(120.0, 0.3, seed=12), src="10.5.0.67", dst="10.5.2.2", dport=1883)
    alerts = run(Config(), concat(*polls, implant))[1]
    assert [a.src for a in alerts] == [ip_to_words("10.5.0.67")]


def test_a_scheduled_bulk_transfer_is_a_job_an_implants_uploads_are_exfil():
    # an hourly backup to an outside AMQP broker: every record is bulk (300 KB at 1400 B/packet), on the dot
    backup = flows(np.arange(0, 6 * 3600, 3600.0) + 5, src="10.6.0.2", dst="198.18.9.9", dport=5672,
                   nbytes=300_000, packets=214)
    # an implant's small check-ins with three large uploads among them
    t = beacon_times(300.0, 0.3, seed=13)
    implant = flows(t, src="10.6.0.3", dst="198.18.9.10", dport=5672, nbytes=400, packets=6)
    implant.columns["bytes"][[10, 30, 50]] = 2_000_000
    implant.columns["packets"][[10, 30, 50]] = 1400
    alerts = run(Config(), concat(backup, implant))[1]
    assert [a.src for a in alerts] == [ip_to_words("10.6.0.3")]
    assert "long_outbound_messages" in alerts[0].evidence["analytics"]


def test_source_site_brokers_equals_the_plain_loop_twin():
    from tests.reference.an0005_ref import source_site_brokers_ref
    from analytics.detections.an0005 import source_site_brokers
    rng = np.random.default_rng(9)
    n = 300
    keys = {"src_hi": rng.integers(0, 2, n).astype(np.uint64), "src_lo": rng.integers(0, 9, n).astype(np.uint64)}
    site, beaconing = rng.random(n) < 0.5, rng.random(n) < 0.6
    assert source_site_brokers(keys, site, beaconing).tolist() == source_site_brokers_ref(keys, site, beaconing)
    assert len(source_site_brokers({k: v[:0] for k, v in keys.items()}, site[:0], beaconing[:0])) == 0


def test_source_rhythm_brokers_equals_the_plain_loop_twin():
    from tests.reference.an0005_ref import source_rhythm_brokers_ref
    from analytics.detections.an0005 import source_rhythm_brokers
    rng = np.random.default_rng(8)
    n = 300
    keys = {"src_hi": rng.integers(0, 2, n).astype(np.uint64), "src_lo": rng.integers(0, 9, n).astype(np.uint64)}
    period = rng.choice([30.0, 60.0, 61.5, 90.0, 120.0, 180.0, 600.0, 0.0], n) * rng.uniform(0.97, 1.03, n)
    beaconing = rng.random(n) < 0.6
    assert source_rhythm_brokers(keys, period, beaconing, 0.25).tolist() == \
        source_rhythm_brokers_ref(keys, period, beaconing, 0.25)
    e = {k: v[:0] for k, v in keys.items()}
    assert len(source_rhythm_brokers(e, period[:0], beaconing[:0], 0.25)) == 0


def test_broker_population_equals_the_plain_loop_twin():
    from tests.reference.an0005_ref import broker_population_ref
    from analytics.detections.an0005 import broker_population
    rng = np.random.default_rng(7)
    n = 300
    keys = {"dst_hi": rng.integers(0, 2, n).astype(np.uint64), "dst_lo": rng.integers(0, 6, n).astype(np.uint64),
            "dst_port": rng.choice([1883, 5672], n).astype(np.uint16)}
    period = rng.choice([30.0, 60.0, 61.5, 90.0, 120.0, 180.0, 600.0, 0.0], n) * rng.uniform(0.97, 1.03, n)
    beaconing = rng.random(n) < 0.6
    clients, share = broker_population(keys, period, beaconing, 0.25)
    rc, rs = broker_population_ref(keys, period, beaconing, 0.25)
    assert clients.tolist() == rc and np.allclose(share, rs)
    e = {k: v[:0] for k, v in keys.items()}
    assert [len(x) for x in broker_population(e, period[:0], beaconing[:0], 0.25)] == [0, 0]
