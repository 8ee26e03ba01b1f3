"""Config loading: defaults, the example file, every error naming key, file and line; reputation sources."""

from __future__ import annotations

import json

import numpy as np
import pytest

from analytics.config import Config, ConfigError
from analytics.schema import ip_to_words
from collector.config import load_config, load_reputation
from tests.conftest import REPO


def test_defaults_cover_every_key():
    c = load_config(None, resolve=False)
    assert c.TimeWindow.window_s == 86400 and c.TimeWindow.cadence_s == 300
    assert 1883 in c.ProtocolPortList["mqtt"] and 5672 in c.ProtocolPortList["amqp"]
    assert c.PayloadLengthThreshold == 1024
    assert set(c.UnusualProcessList) == set(c.AppContextFilter) == set(c.KnownPubSubClients) == {"windows", "linux",
                                                                                                   "macos"}
    assert ".duckdns.org" in c.reputation_domains and "=test.mosquitto.org" in c.reputation_domains


def test_example_file_is_valid():
    c = load_config(str(REPO / "brokerwatch.example.yaml"), resolve=False)
    hi, lo = ip_to_words("198.51.100.20")
    assert c.allow.match(np.array([hi], np.uint64), np.array([lo], np.uint64))[0] >= 0
    hi, lo = ip_to_words("2001:db8:100::7")
    assert c.allow.match(np.array([hi], np.uint64), np.array([lo], np.uint64))[0] >= 0
    hi, lo = ip_to_words("203.0.113.50")
    assert c.allow.match(np.array([hi], np.uint64), np.array([lo], np.uint64))[0] == -1
    assert "mqtt.example.internal:8883" in c.allow.hostnames


@pytest.mark.parametrize("text, line, key", [
    ("TimeWindow: 5x\n", 1, "TimeWindow"),
    ("ProtocolPortList:\n  mqtt: [1883, 70000]\n", 2, "ProtocolPortList.mqtt"),
    ("ProtocolPortList:\n  mqttt: [1883]\n", 2, "ProtocolPortList.mqttt"),
    ("BrokerAllowList:\n  - 10.0.0.0/8\n  - not an address!\n", 3, "BrokerAllowList.1"),
    ("PayloadLengthThreshold: -3\n", 1, "PayloadLengthThreshold"),
    ("URIPathRegex: ['^/mqtt$', '(unclosed']\n", 1, "URIPathRegex.1"),
    ("TopicAnomalyScore:\n  threshold: 2\n", 2, "TopicAnomalyScore.threshold"),
    ("UnusualProcessList:\n  solaris: [sh]\n", 2, "UnusualProcessList.solaris"),
    ("\n\nTimewindow: 24h\n", 3, "Timewindow"),
    ("BrokerReputationList:\n  use_default: maybe\n", 2, "BrokerReputationList.use_default"),
    ("Kafka:\n  bootstrap: nohost\n", 2, "Kafka.bootstrap"),
    ("Kafka:\n  partitions: 0\n", 2, "Kafka.partitions"),
    ("Kafka:\n  topics:\n    flows: 'a b'\n", 3, "Kafka.topics.flows"),
    ("Kafka:\n  flows_format: avro\n", 2, "Kafka.flows_format"),
    ("Kafka:\n  sasl: {mechanism: MD5, username: u}\n", 2, "Kafka.sasl.mechanism"),
    ("Kafka:\n  security_protocol: SASL_SSL\n", 2, "Kafka.security_protocol"),
    ("Kafka:\n  buffer: 5\n", 2, "Kafka.buffer"),
])
def test_errors_name_key_file_and_line(tmp_path, text, line, key):
    f = tmp_path / "bw.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(str(f), resolve=False)
    assert f"{f}:{line}: {key}:" in str(info.value)


def test_the_kafka_block(tmp_path):
    f = tmp_path / "bw.yaml"
    f.write_text("Kafka:\n  bootstrap: 'k1:9092,[::1]:9093'\n  security_protocol: SASL_SSL\n"
                 "  sasl: {mechanism: SCRAM-SHA-512, username: bw, password: pw}\n  tls: {cafile: /etc/ca.pem}\n"
                 "  topics: {flows: f, alerts: a, goflow2: flows-gf}\n  partitions: 24\n  flows_format: json\n"
                 "  buffer_mb: 64\n  group: g\n")
    k = load_config(str(f), resolve=False).Kafka
    assert (k.bootstrap, k.security_protocol, k.sasl_mechanism, k.sasl_username, k.tls_cafile) == \
        ("k1:9092,[::1]:9093", "SASL_SSL", "SCRAM-SHA-512", "bw", "/etc/ca.pem")
    assert (k.flows_topic, k.endpoint_topic, k.alerts_topic, k.goflow2_topic) == ("f", "brokerwatch.endpoint", "a",
                                                                                  "flows-gf")
    assert (k.partitions, k.flows_format, k.buffer_mb, k.group) == (24, "json", 64, "g")
    assert load_config(None, resolve=False).Kafka.bootstrap == ""  # no Kafka unless configured


def test_all_problems_reported_together(tmp_path):
    f = tmp_path / "bw.yaml"
    f.write_text("PayloadLengthThreshold: 0\nBogus: 1\nTimeWindow: {window: 1h, cadence: 2h}\n")
    with pytest.raises(ConfigError) as info:
        load_config(str(f), resolve=False)
    assert len(info.value.problems) == 3


def test_invalid_yaml_and_missing_file(tmp_path):
    f = tmp_path / "bw.yaml"
    f.write_text("TimeWindow: [\n")
    with pytest.raises(ConfigError, match=r"bw.yaml:\d+: not valid YAML"):
        load_config(str(f))
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(str(tmp_path / "missing.yaml"))


def test_reputation_formats(tmp_path):
    plain = tmp_path / "bad.txt"
    plain.write_text("# comment\n203.0.113.66\n203.0.113.128/25 # inline\n.evil-dyn.example\n")
    csvf = tmp_path / "feed.csv"
    csvf.write_text("first_seen,indicator,type\n2026-01-01,198.51.100.99,ip\n2026-01-02,c2.example.net,domain\n")
    stix = tmp_path / "bundle.json"
    stix.write_text(json.dumps({"type": "bundle", "id": "bundle--1", "objects": [
        {"type": "indicator", "pattern": "[ipv4-addr:value = '192.0.2.200']", "pattern_type": "stix"},
        {"type": "indicator", "pattern": "[domain-name:value = 'broker.bad.example'] OR "
                                         "[url:value = 'wss://ws.bad.example/mqtt']"},
        {"type": "ipv6-addr", "value": "2001:db8::bad"},
    ]}))
    assert load_reputation(str(plain)) == ["203.0.113.66", "203.0.113.128/25", ".evil-dyn.example"]
    assert load_reputation(str(csvf)) == ["198.51.100.99", "c2.example.net"]
    assert load_reputation(str(stix)) == ["192.0.2.200", "broker.bad.example", "ws.bad.example", "2001:db8::bad"]
    cfg = tmp_path / "bw.yaml"
    cfg.write_text(f"BrokerReputationList:\n  sources: [{plain.name}, {csvf.name}, {stix.name}]\n  use_default: false\n")
    c = load_config(str(cfg), resolve=False)
    for ip, hit in [("203.0.113.66", True), ("203.0.113.200", True), ("203.0.113.1", False), ("192.0.2.200", True),
                    ("2001:db8::bad", True), ("198.51.100.99", True)]:
        hi, lo = ip_to_words(ip)
        assert (c.reputation.match(np.array([hi], np.uint64), np.array([lo], np.uint64))[0] >= 0) == hit, ip
    assert ".evil-dyn.example" in c.reputation_domains and "=broker.bad.example" in c.reputation_domains


def test_missing_reputation_file_is_an_error(tmp_path):
    cfg = tmp_path / "bw.yaml"
    cfg.write_text("BrokerReputationList: [nowhere.txt]\n")
    with pytest.raises(ConfigError, match=r"bw.yaml:1: BrokerReputationList: .*nowhere.txt"):
        load_config(str(cfg), resolve=False)


def test_from_mapping_rejects_non_mapping():
    with pytest.raises(ConfigError):
        Config.from_mapping([1, 2])


def test_resolved_host_names_keep_their_source_file(tmp_path):
    feed = tmp_path / "intel.txt"
    feed.write_text("localhost\n")  # resolves without a network
    cfg = tmp_path / "bw.yaml"
    cfg.write_text(f"BrokerReputationList:\n  sources: [{feed.name}]\n  use_default: false\n")
    c = load_config(str(cfg), resolve=True)
    assert "intel.txt:localhost" in c.reputation.labels
    hi, lo = ip_to_words("127.0.0.1")
    hit = c.reputation.match(np.array([hi], np.uint64), np.array([lo], np.uint64))[0]
    assert hit >= 0 and c.reputation.labels[hit] == "intel.txt:localhost"


def test_exporters_key_is_validated_with_file_and_line(tmp_path):
    from collector.config import ConfigError, load_config

    path = tmp_path / "bad.yaml"
    path.write_text(
        "Exporters:\n"
        "  admission:\n"
        "    flows: [10.0.0.0/8, not-a-cidr]\n"
        "    mail: [10.0.0.0/8]\n"
        "  snmp:\n"
        "    version: 4\n"
        "  devices:\n"
        "    192.0.2.1:\n"
        "      sampling_rate: 0\n"
        "      admit: maybe\n"
        "      snmp: {version: 3, auth: {protocol: SHA, key: short}}\n"
        "    300.1.1.1: {name: x}\n")
    with pytest.raises(ConfigError) as err:
        load_config(str(path), resolve=False)
    problems = "\n".join(err.value.problems)
    for line, text in ((3, "Exporters.admission.flows.1: not an address or CIDR"),
                       (4, "Exporters.admission.mail: unknown listener kind"),
                       (6, "Exporters.snmp.version: must be 1, 2c or 3"),
                       (9, "Exporters.devices.192.0.2.1.sampling_rate"),
                       (10, "Exporters.devices.192.0.2.1.admit: must be true or false"),
                       (11, "Exporters.devices.192.0.2.1.snmp.auth.key: must be a pass phrase"),
                       (11, "Exporters.devices.192.0.2.1.snmp: SNMPv3 needs a user"),
                       (12, "Exporters.devices.300.1.1.1: not an address or CIDR")):
        assert f"{path}:{line}: {text}" in problems, problems


def test_exporters_key_defaults_and_lookups(tmp_path):
    from collector.config import load_config

    path = tmp_path / "ok.yaml"
    path.write_text(
        "Exporters:\n"
        "  snmp: {community: site, timeout: 1s}\n"
        "  devices:\n"
        "    10.0.0.0/8: {snmp: true}\n"
        "    10.1.0.0/16: {snmp: false, name: lab}\n"
        "    10.1.2.3: {name: edge-rtr-2, interfaces: {17: Gi0/0/1}, sampling_rate: 1000}\n")
    ex = load_config(str(path), resolve=False).Exporters
    assert [d.cidr for d in ex.devices] == ["10.1.2.3/32", "10.1.0.0/16", "10.0.0.0/8"]  # longest prefix first
    assert ex.snmp_enabled and not ex.snmp.enabled
    assert ex.snmp_for("10.9.9.9").community == "site"
    assert ex.snmp_for("10.1.9.9") is None
    assert ex.device_for("10.1.2.3").interfaces == {17: "Gi0/0/1"}
    assert ex.device_for("::ffff:10.1.2.3").name == "edge-rtr-2"
    assert ex.snmp_for("192.0.2.1") is None  # not configured, SNMP off by default
    assert "site" not in repr(ex.snmp)  # secrets stay out of log lines
    assert load_config(None, resolve=False).Exporters.devices == ()
