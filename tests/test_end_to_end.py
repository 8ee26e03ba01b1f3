"""From a real exporter's datagrams to a DET0002 alert: offline replay, and the live service over loopback UDP.

The fixture is softflowd's NetFlow v5 export of the "beacon world" traffic (fixtures/README.md): one host beacons
over MQTT to an outside broker among benign traffic. Both paths must alert on the labelled C2 pair and nothing else.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from collector.cli import main
from collector.pcap import datagrams
from tests.conftest import FIXTURES, REPO

V5_FIXTURE = FIXTURES / "netflow_v5" / "softflowd_beacon_world.pcap"
LABELS = FIXTURES / "traffic" / "beacon_world.labels.json"


def labelled_pairs(label: str) -> set[tuple[str, str, int]]:
    data = json.loads(LABELS.read_text())
    return {(p["src"], p["dst"], p["dport"]) for p in data["pairs"] if p["label"] == label}


def alert_pairs(lines: list[str]) -> set[tuple[str, str, str, int]]:
    out = set()
    for line in lines:
        a = json.loads(line)
        assert a["event"]["kind"] == "alert" and a["rule"]["ruleset"] == "DET0002"
        assert a["threat"]["technique"]["id"] == ["T1071.005"]
        out.add((a["rule"]["id"], a["source"]["ip"], a["destination"]["ip"], a["destination"]["port"]))
    return out


def test_replay_alerts_on_the_beacon_and_nothing_else(tmp_path, capsys):
    out = tmp_path / "alerts.jsonl"
    assert main(["replay", str(V5_FIXTURE), "--alerts", str(out)]) == 0
    lines = out.read_text().splitlines()
    c2 = labelled_pairs("c2")
    assert alert_pairs(lines) == {("AN0005", *pair) for pair in c2}
    alert = json.loads(lines[-1])
    ev = alert["brokerwatch"]["evidence"]
    # The generator's beacon: interval uniform in [42, 60] s with 10% missed beats.
    assert 42 <= ev["period_s"] <= 60
    assert ev["events"] >= 100
    assert alert["network"]["protocol"] == "mqtt"
    assert "BrokerAllowList" in ev["fired"] and "ProtocolPortList" in ev["fired"]


def _free_udp_port() -> int:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.mark.live
def test_live_run_over_loopback_udp_sees_the_same_alert(tmp_path):
    ports = {name: _free_udp_port() for name in ("netflow", "ipfix", "sflow", "syslog")}
    alerts = tmp_path / "alerts.jsonl"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [sys.executable, "-m", "collector.cli", "run", "--listen", "127.0.0.1",
         "--netflow-port", str(ports["netflow"]), "--ipfix-port", str(ports["ipfix"]),
         "--sflow-port", str(ports["sflow"]), "--syslog-port", str(ports["syslog"]),
         "--alerts", str(alerts), "--cadence", "0.5"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    try:
        banner = proc.stderr.readline()
        assert "listening" in banner, banner + proc.stderr.read()
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sent = 0
        for d in datagrams(str(V5_FIXTURE)):
            sender.sendto(d.payload, ("127.0.0.1", ports["netflow"]))
            sent += 1
        proc.send_signal(signal.SIGTERM)  # the service drains its sockets, evaluates and flushes on the way out
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    assert f"stopped after {sent} datagrams" in stderr
    expected = {("AN0005", *pair) for pair in labelled_pairs("c2")}
    assert alert_pairs(alerts.read_text().splitlines()) == expected
    assert alert_pairs(stdout.splitlines()) == expected
