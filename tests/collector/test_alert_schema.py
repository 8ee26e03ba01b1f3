"""docs/schemas/alert.schema.json describes the alerts brokerwatch really writes (file, stdout, Kafka topic)."""

from __future__ import annotations

import copy
import json

import jsonschema
import pytest

from analytics.alerts import Alert
from collector.cli import main
from tests.conftest import FIXTURES, REPO

SCHEMA = json.loads((REPO / "docs" / "schemas" / "alert.schema.json").read_text())


def validator() -> jsonschema.Draft202012Validator:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    return jsonschema.Draft202012Validator(SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)


def validate(alert: dict) -> None:
    """Fails with every schema error of alert."""
    errors = sorted(validator().iter_errors(alert), key=str)
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


@pytest.fixture(scope="module")
def real_alerts(tmp_path_factory) -> list[dict]:
    out = []
    for path in (FIXTURES / "netflow_v5" / "softflowd_beacon_world.pcap", FIXTURES / "syslog" / "asa_beacon_world.log"):
        target = tmp_path_factory.mktemp("alerts") / "alerts.jsonl"
        assert main(["replay", str(path), "--alerts", str(target)]) == 0
        out.extend(json.loads(line) for line in target.read_text().splitlines())
    return out


def test_real_alerts_validate(real_alerts):
    assert real_alerts
    for alert in real_alerts:
        validate(alert)


def test_an_attributed_alert_with_process_host_and_user_validates(real_alerts):
    """The endpoint analytics (#10) add process.*, host.* and user.name: optional objects the schema allows."""
    a = Alert.from_dict(real_alerts[0])
    a.rule_id = "AN0002"
    a.process = {"name": "python.exe", "pid": 4242, "executable": "C:\\Python\\python.exe"}
    a.host = {"name": "ws-17", "os": {"type": "windows"}}
    a.extra = {"user": {"name": "alice"}}
    validate(json.loads(json.dumps(a.to_dict())))


@pytest.mark.parametrize("path, value", [
    (("event", "kind"), "event"), (("rule", "id"), "AN0009"), (("destination", "port"), 70000),
    (("source", "ip"), "not-an-address"), (("brokerwatch", "score"), 140), (("@timestamp",), "2026-01-15 00:00"),
    (("brokerwatch", "evidence", "fired"), ["NoSuchElement"]),
])
def test_the_schema_rejects_what_is_not_an_alert(real_alerts, path, value):
    bad = copy.deepcopy(real_alerts[0])
    node = bad
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    assert list(validator().iter_errors(bad)), f"{path} = {value!r} was accepted"
