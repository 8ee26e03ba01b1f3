"""``brokerwatch rules export --format sigma``: rules pySigma accepts, validates and converts for Elasticsearch, built
from the config so that tuning reaches them."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from analytics.config import Config
from collector.cli import main
from collector.rules import sigma_rules, uri_regex

pytest.importorskip("sigma")  # pySigma is a [test] extra: `make test` installs it

from sigma.backends.elasticsearch import LuceneBackend  # noqa: E402
from sigma.collection import SigmaCollection  # noqa: E402
from sigma.pipelines.elasticsearch.windows import ecs_windows  # noqa: E402
from sigma.validation import SigmaValidator  # noqa: E402
from sigma.validators.core import validators  # noqa: E402

# The ATT&CK tag check reads MITRE's STIX data; the machine has no network, so it reads the two objects our tags name,
# kept in MITRE's own STIX form. D3FEND's check has no offline source and the rules carry no D3FEND tag.
ATTACK_SUBSET = Path(__file__).parent / "data" / "attack_subset.json"


def export(tmp_path, *extra) -> SigmaCollection:
    out = tmp_path / "rules"
    assert main(["rules", "export", "--format", "sigma", "-o", str(out) + "/", *extra]) == 0
    files = sorted(out.glob("*.yml"))
    assert files
    return SigmaCollection.load_ruleset([str(f) for f in files])


def by_name(collection: SigmaCollection) -> dict:
    return {r.name: r for r in collection.rules}


def test_every_rule_passes_pysigma_validation(tmp_path):
    from sigma.data import mitre_attack

    mitre_attack.set_url(str(ATTACK_SUBSET))
    mitre_attack.set_cache_dir(str(tmp_path / "attack-cache"))
    rules = export(tmp_path)
    assert all(not r.errors for r in rules.rules), [r.errors for r in rules.rules]
    checks = [cls for name, cls in validators.items() if name != "d3_fendtag"]
    assert any(name == "attacktag" for name in validators)  # the ATT&CK check really runs
    issues = SigmaValidator(checks).validate_rules(rules.rules)
    assert issues == [], issues
    analytics = {r.custom_attributes["custom"]["analytic"] for r in rules.rules}
    assert analytics == {"AN0002", "AN0003", "AN0004"}


def test_rules_convert_with_the_elasticsearch_backend(tmp_path):
    rules = by_name(export(tmp_path))
    win = rules["brokerwatch_an0002_windows_unusual_process_pubsub_connection"]
    (query,) = LuceneBackend(ecs_windows()).convert_rule(win)
    # Sysmon EID 3 fields mapped to ECS by the backend's Windows pipeline
    assert query.startswith("(process.executable.caseless:(*\\\\powershell.exe OR ")
    assert "destination.port:(1883 OR " in query
    assert "mosquitto.exe" in query.split("AND (NOT", 1)[1] and "powershell" not in query.split("NOT", 1)[1]

    lin = rules["brokerwatch_an0003_linux_cli_tool_pubsub_broker"]
    (query,) = LuceneBackend().convert_rule(lin)
    assert "Image:(*\\/mosquitto_pub OR " in query and "CommandLine:(*mqtt\\:\\/\\/* OR " in query
    assert "*\\:1883* OR *\\ 1883*" in query
    assert "paho" in query and "NOT" in query and "zigbee2mqtt" in query

    for name in ("brokerwatch_an0004_macos_app_pubsub_connection",
                 "brokerwatch_an0004_macos_unknown_binary_pubsub_connection"):
        (query,) = LuceneBackend().convert_rule(rules[name])
        assert "DestinationPort:(1883 OR " in query and " OR 8883 OR " in query and "osascript" in query
    uri = rules["brokerwatch_an0004_macos_app_broker_uri"]
    (query,) = LuceneBackend().convert_rule(uri)
    assert "CommandLine:/.*(wss?|https?):" in query and "(\\/mqtt)" in query
    assert "Image:(*\\/osascript OR " in query


def test_tuning_reaches_the_rules(tmp_path):
    cfg = tmp_path / "bw.yaml"
    cfg.write_text(yaml.safe_dump({
        "UnusualProcessList": {"windows": ["evil.exe"], "linux": ["weird-cli"], "macos": ["strange"]},
        "AppContextFilter": {"windows": [], "linux": [], "macos": []},
        "KnownPubSubClients": {"windows": ["C:\\Program Files\\Broker\\agent.exe"], "linux": [], "macos": []},
        "ProtocolPortList": {"mqtt": [11883]},
        "URIPathRegex": ["^/c2bus$"],
    }))
    rules = by_name(export(tmp_path, "--config", str(cfg)))
    (win,) = LuceneBackend(ecs_windows()).convert_rule(
        rules["brokerwatch_an0002_windows_unusual_process_pubsub_connection"])
    assert "evil.exe" in win and "powershell" not in win
    assert "destination.port:11883" in win and "(1883" not in win
    assert "agent.exe" in win  # a full path is matched exactly, not by its ending
    (lin,) = LuceneBackend().convert_rule(rules["brokerwatch_an0003_linux_cli_tool_pubsub_broker"])
    assert "weird\\-cli" in lin and "filter_known" not in lin
    (uri,) = LuceneBackend().convert_rule(rules["brokerwatch_an0004_macos_app_broker_uri"])
    assert "c2bus" in uri and "strange" in uri


def test_uri_regex_matches_a_broker_uri_on_a_command_line():
    import re

    rx = re.compile(uri_regex(r"^/mqtt$"))
    assert rx.fullmatch("curl -s -X POST https://broker.example.net:8084/mqtt -d x")
    assert rx.fullmatch("osascript -e 'do shell script \"curl wss://h/mqtt\"'")
    assert rx.fullmatch("curl https://broker.example.net/mqtt")
    assert not rx.fullmatch("curl https://example.net/mqttx")
    assert not rx.fullmatch("curl https://example.net/docs/mqtt")


def test_rules_are_the_same_for_the_same_config():
    assert sigma_rules(Config()) == sigma_rules(Config())


def test_export_to_stdout_is_yaml_documents(capsys):
    assert main(["rules", "export", "--format", "sigma"]) == 0
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    assert len(docs) == len(sigma_rules(Config())) and all(d["tags"] == ["attack.command-and-control",
                                                                          "attack.t1071.005"] for d in docs)
