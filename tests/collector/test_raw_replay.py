"""Replay of a generated raw-traffic capture (bench/detection/raw_day.py): the C2 families alert, the benign MQTT
session does not, and the persistent session's commands give it its period (its flow record is one connection)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bench.detection.raw_day import generate
from tests.conftest import REPO


@pytest.fixture(scope="module")
def alerts(tmp_path_factory):
    path = tmp_path_factory.mktemp("raw") / "day.pcap"
    labels = generate(str(path), hours=8, seed=11)
    out = subprocess.run([sys.executable, "-m", "collector.cli", "replay", str(path)], capture_output=True,
                         text=True, timeout=600, cwd=REPO)
    assert out.returncode == 0, out.stderr
    return labels, [json.loads(line) for line in out.stdout.splitlines()]


def _pairs(alerts):
    return {(a["source"]["ip"], a["destination"]["ip"], a["destination"]["port"]): a for a in alerts}


def test_every_c2_family_alerts(alerts):
    labels, found = alerts
    got = _pairs(found)
    for pair in labels["c2"]:
        assert pair in got, pair
    assert "unusual_port" in got[labels["c2"][1]]["brokerwatch"]["evidence"]["analytics"]


def test_persistent_session_shows_its_command_period(alerts):
    labels, found = alerts
    ev = _pairs(found)[labels["c2"][2]]["brokerwatch"]["evidence"]
    assert "beaconing" in ev["analytics"]
    assert 400 <= ev["period_s"] <= 650  # commands every 480-600 s; keepalives (60 s) are not beats


def test_benign_session_stays_quiet(alerts):
    labels, found = alerts
    got = _pairs(found)
    assert not [p for p in labels["benign"] if p in got]
