"""The Elasticsearch/OpenSearch index template in docs/ maps every field an alert carries, with the ECS type its
values fit: checked on real alerts (a replay of the fixtures, an endpoint alert) and, once it exists, on the alert
JSON Schema (docs/schemas/alert.schema.json, #11)."""

from __future__ import annotations

import datetime as dt
import fnmatch
import ipaddress
import json

import pytest

from collector.cli import main
from tests.conftest import FIXTURES, REPO

TEMPLATE = REPO / "docs" / "elasticsearch" / "brokerwatch-alerts.index-template.json"
SCHEMA = REPO / "docs" / "schemas" / "alert.schema.json"


def template() -> dict:
    return json.loads(TEMPLATE.read_text())


def json_type(value) -> str:
    """How Elasticsearch's dynamic mapping classifies a JSON value (match_mapping_type)."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "long"
    if isinstance(value, float):
        return "double"
    if isinstance(value, dict):
        return "object"
    return "string"


def mapping_of(path: list[str], value) -> dict | None:
    """The mapping a field at path gets: explicit, or from the first dynamic template that matches, else None."""
    m = template()["template"]["mappings"]
    props, dynamic = m["properties"], m.get("dynamic", True)
    node = None
    for i, part in enumerate(path):
        node = props.get(part) if props is not None else None
        if node is None:
            break
        if i < len(path) - 1:
            dynamic = node.get("dynamic", dynamic)
            props = node.get("properties", {})
    if node is not None and "type" in node and node["type"] != "object":
        return node
    if not dynamic:
        return None
    dotted = ".".join(path)
    for entry in m["dynamic_templates"]:
        (rule,) = entry.values()
        if "path_match" in rule and not fnmatch.fnmatch(dotted, rule["path_match"]):
            continue
        if "match_mapping_type" in rule and rule["match_mapping_type"] != json_type(value):
            continue
        return rule["mapping"]
    return None


def leaves(obj, path=()):
    """(path, value) of every leaf of a nested dict; lists are one field of their items' type."""
    for k, v in obj.items():
        if isinstance(v, dict) and v:
            yield from leaves(v, path + (k,))
        elif isinstance(v, list):
            for item in v:
                yield list(path + (k,)), item
        else:
            yield list(path + (k,)), v


def fits(mapping: dict, value) -> bool:
    t = mapping["type"]
    if t == "ip":
        ipaddress.ip_address(value)
        return True
    if t == "date":
        dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        return True
    if t in ("long", "integer"):
        return isinstance(value, int) and not isinstance(value, bool)
    if t in ("float", "double"):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if t == "boolean":
        return isinstance(value, bool)
    if t in ("keyword", "text", "wildcard"):
        return isinstance(value, str)
    return False


def check_alert(alert: dict) -> int:
    n = 0
    for path, value in leaves(alert):
        if value is None:
            continue
        mapping = mapping_of(path, value)
        assert mapping is not None, f"{'.'.join(path)} is not mapped"
        assert fits(mapping, value), f"{'.'.join(path)}: {value!r} does not fit {mapping['type']}"
        n += 1
    return n


@pytest.fixture(scope="module")
def network_alerts(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("alerts") / "alerts.jsonl"
    assert main(["replay", "--quiet", str(FIXTURES / "netflow_v5" / "softflowd_beacon_world.pcap"),
                 "--alerts", str(out)]) == 0
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_every_field_of_a_replayed_alert_is_mapped_with_a_type_it_fits(network_alerts):
    assert network_alerts
    for a in network_alerts:
        assert check_alert(a) >= 20


def test_every_field_of_an_endpoint_alert_is_mapped_with_a_type_it_fits():
    from analytics.endpoint import EndpointBatchBuilder
    from collector.config import load_config
    from tests.analytics.detections.test_endpoint import beats, evaluate, windows_beacon

    b = EndpointBatchBuilder()
    windows_beacon(b, beats(300, 8, 1, jitter=0.5, missed=0.3))
    _, alerts = evaluate(load_config(None), b)
    (alert,) = [a.to_dict() for a in alerts]
    assert {"process", "host", "user"} <= set(alert)
    check_alert(alert)


def test_ecs_fields_have_their_ecs_types():
    expect = {("@timestamp",): "date", ("source", "ip"): "ip", ("destination", "ip"): "ip",
              ("destination", "port"): "long", ("event", "severity"): "long", ("rule", "id"): "keyword",
              ("threat", "technique", "id"): "keyword", ("process", "pid"): "long",
              ("process", "executable"): "keyword", ("host", "name"): "keyword", ("user", "name"): "keyword",
              ("brokerwatch", "score"): "float", ("brokerwatch", "window", "start"): "date"}
    for path, t in expect.items():
        assert mapping_of(list(path), None)["type"] == t, path
    cmd = mapping_of(["process", "command_line"], None)
    assert cmd["type"] == "keyword" and cmd["fields"]["text"]["type"] == "text"  # exact and full-text search
    t = template()
    assert t["index_patterns"] == ["brokerwatch-alerts*"]
    assert set(t) <= {"index_patterns", "template", "priority", "composed_of", "version", "data_stream"}


def schema_paths(node: dict, path=()) -> list[tuple[str, ...]]:
    """Leaf property paths of a JSON Schema (objects by their properties; arrays by their items)."""
    out = []
    if node.get("type") == "array" and isinstance(node.get("items"), dict):
        return schema_paths(node["items"], path)
    props = node.get("properties")
    if props:
        for k, v in props.items():
            out.extend(schema_paths(v, path + (k,)))
    elif path:
        out.append(path)
    return out


def test_the_template_covers_the_alert_json_schema():
    if not SCHEMA.is_file():
        pytest.skip(f"{SCHEMA.relative_to(REPO)} is not in this tree yet (issue #11 brings it)")
    schema = json.loads(SCHEMA.read_text())
    paths = [p for p in schema_paths(schema) if p[:2] != ("brokerwatch", "evidence")]
    assert paths
    missing = [".".join(p) for p in paths if mapping_of(list(p), "x") is None]
    assert not missing, f"schema fields the template does not map: {missing}"


def test_replayed_alerts_validate_against_the_alert_json_schema(network_alerts):
    if not SCHEMA.is_file():
        pytest.skip(f"{SCHEMA.relative_to(REPO)} is not in this tree yet (issue #11 brings it)")
    import jsonschema

    schema = json.loads(SCHEMA.read_text())
    for a in network_alerts:
        jsonschema.validate(a, schema)
