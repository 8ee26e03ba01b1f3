"""Topic-name scoring."""

from __future__ import annotations

import pytest

from analytics.config import TopicAnomalyScore
from analytics.topics import entropy_bits, score_topics, topic_score

NORMAL = ["sensors/kitchen/temperature", "building3/floor2/hvac/setpoint", "devices/pump-07/status",
          "factory/line1/plc/alarms", "office/printer/toner", "home/garden/soil_moisture"]
KNOWN = ["homeassistant/sensor/x/config", "zigbee2mqtt/bridge/state", "tele/sonoff/SENSOR", "stat/plug/POWER",
         "cmnd/plug/POWER", "$SYS/broker/uptime"]
ANOMALOUS = ["c2/8f3a9b2c7d1e4f60a9b8c7d6e5f4a3b2", "x/aGVsbG8gd29ybGQgdGhpcyBpcyBleGZpbA==",
             "q/Zk3JxP9vLmQ2wR7tYb8NcH5sDf", "a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/p/q/r/s/t/u/v/w/x/y/z/" + "7f" * 40]


def test_entropy():
    assert entropy_bits("") == 0 and entropy_bits("aaaa") == 0
    assert entropy_bits("abcd") == pytest.approx(2.0)


@pytest.mark.parametrize("topic", KNOWN)
def test_known_good_prefixes_score_zero(topic):
    score, reasons = topic_score(topic)
    assert score == 0 and reasons[0].startswith("known_good:")


@pytest.mark.parametrize("topic", NORMAL)
def test_ordinary_topics_below_threshold(topic):
    assert topic_score(topic)[0] < TopicAnomalyScore().threshold


@pytest.mark.parametrize("topic", ANOMALOUS)
def test_encoded_or_random_topics_at_or_above_threshold(topic):
    score, reasons = topic_score(topic)
    assert score >= TopicAnomalyScore().threshold and reasons


def test_config_changes_the_outcome():
    cfg = TopicAnomalyScore(known_good=("c2/",))
    assert topic_score(ANOMALOUS[0], cfg)[0] == 0
    assert score_topics(["", "c2/x", ANOMALOUS[1]], cfg)[0] == 0
