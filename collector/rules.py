"""``brokerwatch rules export --format sigma``: the process-side logic of AN0002-AN0004 as Sigma rules.

The rules are built from the validated config, so tuning ``UnusualProcessList``, ``AppContextFilter``,
``KnownPubSubClients``, ``ProtocolPortList`` or ``URIPathRegex`` changes them. Each is a plain Sigma rule with
generic field names (Sysmon's ``Image``, ``CommandLine``, ``DestinationPort``, ``Initiated``), so any Sigma backend
(pySigma's Elasticsearch, Splunk, ...) turns it into its SIEM's query; tests/collector/test_rules.py validates them
with pySigma and converts them with its Elasticsearch backend.

- AN0002 (Windows): a process of ``UnusualProcessList.windows`` or ``AppContextFilter.windows`` opening an outbound
  connection (Sysmon EID 3 / ECS network events) to a ``ProtocolPortList`` port, unless it is a known client.
- AN0003 (Linux): a process started as a CLI tool or script of ``UnusualProcessList.linux`` /
  ``AppContextFilter.linux`` (mosquitto_pub/sub, nc, socat, python with paho, ...) whose command line names a broker
  port or a pub/sub URI (``mqtt://``, ``amqp://`` ...), unless it is a known client.
- AN0004 (macOS): osascript, curl and the other ``AppContextFilter.macos`` / ``UnusualProcessList.macos`` binaries
  connecting to a broker port; any other binary not a known client connecting to one (low level); and those
  binaries started with a URI whose path matches ``URIPathRegex``.
"""

from __future__ import annotations

import os
import re
import uuid
from typing import IO

import yaml

from analytics.config import Config

#: A fixed date: the same config exports the same rules, byte for byte (rules are diffed and versioned).
RULES_DATE = "2026-12-01"
_NAMESPACE = uuid.UUID("5b0f4a3e-8d7c-4b8e-9f1a-2c6d0e3b7a10")
TAGS = ["attack.command-and-control", "attack.t1071.005"]
REFERENCES = ["https://attack.mitre.org/techniques/T1071/005/"]

#: URI schemes of each ProtocolPortList protocol, looked for on command lines (AN0003).
SCHEMES = {
    "mqtt": ("mqtt://", "mqtts://", "tcp://", "ssl://"),
    "mqtt-over-websocket": ("ws://", "wss://"),
    "amqp": ("amqp://", "amqps://"),
    "xmpp": ("xmpp:",),
    "stomp": ("stomp://", "stomp+ssl://"),
    "nats": ("nats://", "tls://"),
}
#: Words a Python one-liner uses when it speaks a pub/sub protocol (paho-mqtt, pika, stomp.py, nats-py, slixmpp).
SCRIPT_CLIENT_WORDS = ("paho", "pika", "stomp", "nats", "slixmpp", "kombu", "aio_pika")


def _uniq(*lists) -> list[str]:
    seen: dict[str, None] = {}
    for lst in lists:
        for x in lst:
            seen.setdefault(x, None)
    return list(seen)


def _image(names: list[str], sep: str) -> dict:
    """Sigma selection items matching an image by name (ends with sep + name) or by full path (equals)."""
    paths = [n for n in names if "/" in n or "\\" in n]
    bare = [sep + n for n in names if n not in paths]
    out: dict = {}
    if bare:
        out["Image|endswith"] = bare
    if paths:
        out["Image"] = paths
    return out


def _ports(config: Config) -> list[int]:
    return sorted({p for ports in config.ProtocolPortList.values() for p in ports})


def _port_words(ports: list[int]) -> list[str]:
    """How a port appears on a command line: host:port, an argument (-p 1883), a path or an argument list."""
    return [f"{sep}{p}" for p in ports for sep in (":", " ", ",", "/")]


def uri_regex(path_rx: str) -> str:
    """A command-line regex for a URI whose path matches a URIPathRegex pattern (anchors become the URI's limits)."""
    inner = path_rx[1:] if path_rx.startswith("^") else path_rx
    if inner.endswith("$") and not inner.endswith("\\$"):
        inner = inner[:-1]
    # Only features every backend's regex dialect shares (Lucene has no \s, \d or lazy quantifiers).
    return f".*(wss?|https?)://[^ /]+(:[0-9]+)?({inner})([ '\"?#].*)?"


def _detection(selections: dict, condition: str, known: list[str], sep: str) -> dict:
    """A Sigma detection: the selections, and the condition with the known clients filtered out when there are some."""
    det = dict(selections)
    if known:
        det["filter_known_clients"] = _image(known, sep)
        condition = f"({condition}) and not filter_known_clients" if " or " in condition else \
            f"{condition} and not filter_known_clients"
    det["condition"] = condition
    return det


def _rule(name: str, title: str, analytic: str, description: str, logsource: dict, detection: dict, level: str,
          falsepositives: list[str]) -> dict:
    return {
        "title": title,
        "id": str(uuid.uuid5(_NAMESPACE, name)),
        "name": name,
        "status": "experimental",
        "description": description,
        "references": REFERENCES,
        "author": "brokerwatch",
        "date": RULES_DATE,
        "tags": TAGS,
        "logsource": logsource,
        "detection": detection,
        "falsepositives": falsepositives,
        "level": level,
        "custom": {"analytic": analytic, "ruleset": "DET0002"},
    }


def sigma_rules(config: Config) -> list[dict]:
    """The Sigma rules of AN0002-AN0004 for this config, as mappings (one YAML document each)."""
    ports = _ports(config)
    rules = []

    win = _uniq(config.UnusualProcessList.get("windows", ()), config.AppContextFilter.get("windows", ()))
    win_known = list(config.KnownPubSubClients.get("windows", ()))
    if win:
        # No Initiated: 'true': the Elasticsearch pipeline maps it to network.direction:true, which no Winlogbeat
        # event carries; a broker port as the destination already means an outbound connection here.
        det = _detection({"selection_process": _image(win, "\\"), "selection_port": {"DestinationPort": ports}},
                         "selection_process and selection_port", win_known, "\\")
        rules.append(_rule(
            "brokerwatch_an0002_windows_unusual_process_pubsub_connection",
            "Non-standard Windows process connecting to a pub/sub broker port", "AN0002",
            "A process that does not normally speak MQTT, AMQP, XMPP, STOMP or NATS (DET0002 UnusualProcessList and "
            "AppContextFilter for Windows) opened an outbound connection to a pub/sub broker port "
            "(ProtocolPortList). Pub/sub protocols are used for command and control (T1071.005).",
            {"category": "network_connection", "product": "windows"}, det, "high",
            ["Scripts or tools that legitimately publish telemetry; add them to KnownPubSubClients.windows"]))

    lin = _uniq(config.UnusualProcessList.get("linux", ()), config.AppContextFilter.get("linux", ()))
    lin_known = list(config.KnownPubSubClients.get("linux", ()))
    schemes = _uniq(*(SCHEMES.get(proto, ()) for proto in config.ProtocolPortList))
    if lin:
        sel = {"selection_tool": _image(lin, "/"),
               "selection_broker_uri": {"CommandLine|contains": schemes},
               "selection_broker_port": {"CommandLine|contains": _port_words(ports)}}
        cond = "selection_tool and (selection_broker_uri or selection_broker_port)"
        scripts = [n for n in lin if n.startswith("python") or n in ("perl", "ruby", "node")]
        if scripts:
            sel["selection_script_client"] = {**_image(scripts, "/"), "CommandLine|contains": list(SCRIPT_CLIENT_WORDS)}
            cond = f"({cond}) or selection_script_client"
        det = _detection(sel, cond, lin_known, "/")
        rules.append(_rule(
            "brokerwatch_an0003_linux_cli_tool_pubsub_broker",
            "Linux CLI tool or script started against a pub/sub broker", "AN0003",
            "A command-line tool or interpreter (DET0002 UnusualProcessList and AppContextFilter for Linux: "
            "mosquitto_pub/sub, nc, ncat, socat, python with a pub/sub client library, ...) was started with a broker "
            "port (ProtocolPortList) or a pub/sub URI on its command line. Pub/sub protocols are used for command "
            "and control (T1071.005).",
            {"category": "process_creation", "product": "linux"}, det, "medium",
            ["Administrators testing a broker with mosquitto_pub/sub; add the host's tooling to "
             "KnownPubSubClients.linux"]))

    mac_app = _uniq(config.AppContextFilter.get("macos", ()), config.UnusualProcessList.get("macos", ()))
    mac_known = list(config.KnownPubSubClients.get("macos", ()))
    if mac_app:
        det = _detection({"selection_app": _image(mac_app, "/"), "selection_port": {"DestinationPort": ports}},
                         "selection_app and selection_port", mac_known, "/")
        rules.append(_rule(
            "brokerwatch_an0004_macos_app_pubsub_connection",
            "macOS application with no pub/sub context connecting to a broker port", "AN0004",
            "osascript, curl or another application not known to use pub/sub protocols (DET0002 AppContextFilter "
            "and UnusualProcessList for macOS) connected to a pub/sub broker port (ProtocolPortList).",
            {"category": "network_connection", "product": "macos"}, det, "high",
            ["Developer tools talking to a local broker; add them to KnownPubSubClients.macos"]))
        det = _detection({"selection_port": {"DestinationPort": ports}, "filter_context_apps": _image(mac_app, "/")},
                         "selection_port and not filter_context_apps", mac_known, "/")
        rules.append(_rule(
            "brokerwatch_an0004_macos_unknown_binary_pubsub_connection",
            "macOS binary not known as a pub/sub client connecting to a broker port", "AN0004",
            "A binary that is not a known pub/sub client (DET0002 KnownPubSubClients for macOS) connected to a "
            "pub/sub broker port (ProtocolPortList). Broad by design: a hunting rule for unknown binaries.",
            {"category": "network_connection", "product": "macos"}, det, "low",
            ["Any legitimate application with its own pub/sub client; add it to KnownPubSubClients.macos"]))
        if config.URIPathRegex:
            det = _detection({"selection_app": _image(mac_app, "/"),
                              "selection_broker_uri": {"CommandLine|re": [uri_regex(rx) for rx in config.URIPathRegex]}},
                             "selection_app and selection_broker_uri", mac_known, "/")
            rules.append(_rule(
                "brokerwatch_an0004_macos_app_broker_uri",
                "macOS application started against a broker's WebSocket/HTTPS URI", "AN0004",
                "osascript, curl or another application with no pub/sub context was started with a URI whose path "
                "is a pub/sub broker's (DET0002 URIPathRegex, e.g. /mqtt): frequent POST-like requests to broker "
                "URIs are a C2 pattern (T1071.005).",
                {"category": "process_creation", "product": "macos"}, det, "medium",
                ["Web developers testing a broker's WebSocket endpoint with curl"]))
    return rules


class _Dumper(yaml.SafeDumper):
    """Block style for mappings, flow style never: Sigma rules are read by people."""


def _str(dumper: yaml.SafeDumper, value: str):
    style = "'" if re.search(r"[\\:#'\"{}\[\],&*!|>%@`]|^\s|\s$|^$", value) else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump_rule(rule: dict) -> str:
    """One rule as a YAML document."""
    return yaml.dump(rule, Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True, width=120)


def write_sigma(config: Config, output: str | None, stdout: IO[str]) -> list[str]:
    """Write the rules to a directory (a file each), a file (one document each) or stdout; returns what was written."""
    rules = sigma_rules(config)
    if output is None:
        stdout.write("---\n".join(dump_rule(r) for r in rules))
        return ["-"]
    if os.path.isdir(output) or output.endswith(os.sep):
        os.makedirs(output, exist_ok=True)
        paths = []
        for r in rules:
            path = os.path.join(output, f"{r['name']}.yml")
            with open(path, "w", encoding="utf-8") as f:
                f.write(dump_rule(r))
            paths.append(path)
        return paths
    with open(output, "w", encoding="utf-8") as f:
        f.write("---\n".join(dump_rule(r) for r in rules))
    return [output]
