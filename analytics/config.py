"""The DET0002 tuning keys ("mutable elements") as validated dataclasses, with their documented defaults.

``Config.from_mapping`` validates a plain mapping (parsed YAML) and collects every problem before raising one
``ConfigError`` that names key, file and line for each; ``locate(path)`` supplies "file:line" for a key path.
Nothing silently falls back: an unknown key, a wrong type or an out-of-range value is an error.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from analytics.exporters import ExportersConfig, validate_exporters

OS_TYPES = ("windows", "linux", "macos")


class ConfigError(Exception):
    """One or more config problems, each 'file:line: Key.sub: message'."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


DEFAULT_PORTS: dict[str, tuple[int, ...]] = {
    "mqtt": (1883, 8883),
    "mqtt-over-websocket": (8083, 8084),
    "amqp": (5672, 5671),
    "xmpp": (5222, 5223, 5269),
    "stomp": (61613, 61614),
    "nats": (4222,),
}

DEFAULT_UNUSUAL_PROCESSES: dict[str, tuple[str, ...]] = {
    "windows": ("powershell.exe", "pwsh.exe", "python.exe", "pythonw.exe", "rundll32.exe", "regsvr32.exe",
                "mshta.exe", "wscript.exe", "cscript.exe", "cmd.exe", "certutil.exe", "msbuild.exe",
                "installutil.exe"),
    "linux": ("mosquitto_pub", "mosquitto_sub", "nc", "ncat", "netcat", "socat", "python", "python3", "perl",
              "bash", "sh", "curl", "wget"),
    "macos": ("osascript", "curl", "python3", "python", "bash", "zsh", "sh", "perl"),
}

DEFAULT_APP_CONTEXT: dict[str, tuple[str, ...]] = {
    "windows": ("winword.exe", "excel.exe", "powerpnt.exe", "outlook.exe", "notepad.exe", "mspaint.exe",
                "acrord32.exe", "explorer.exe"),
    "linux": ("curl", "wget", "vim", "less", "cron", "systemd"),
    "macos": ("osascript", "curl", "Preview", "Microsoft Word", "Microsoft Excel", "Microsoft PowerPoint",
              "TextEdit", "Finder"),
}

DEFAULT_KNOWN_CLIENTS: dict[str, tuple[str, ...]] = {
    "windows": ("mosquitto.exe", "mosquitto_pub.exe", "node-red.exe", "mqtt-explorer.exe", "teams.exe",
                "slack.exe"),
    "linux": ("mosquitto", "hass", "home-assistant", "node-red", "zigbee2mqtt", "telegraf", "rabbitmq-server",
              "nats-server", "prosody", "ejabberd"),
    "macos": ("Messages", "Adium", "MQTT Explorer", "node-red", "Slack"),
}

DEFAULT_KNOWN_GOOD_TOPICS = ("homeassistant/", "zigbee2mqtt/", "tele/", "stat/", "cmnd/", "$SYS/", "shellies/",
                             "owntracks/", "frigate/", "esphome/", "tasmota/")


@dataclass(frozen=True)
class TimeWindow:
    """Beaconing is measured over ``window_s`` seconds; scores are recomputed every ``cadence_s`` seconds."""

    window_s: float = 86400.0
    cadence_s: float = 300.0


@dataclass(frozen=True)
class TopicAnomalyScore:
    """Topic-name scoring: a topic scoring at or above ``threshold`` (0-1) is anomalous; known-good prefixes score 0."""

    threshold: float = 0.7
    max_length: int = 96
    known_good: tuple[str, ...] = DEFAULT_KNOWN_GOOD_TOPICS


@dataclass(frozen=True)
class BrokerReputationList:
    """Threat-intel files (plain lists, CSV, STIX 2.1 bundles) plus the shipped default list when ``use_default``."""

    sources: tuple[str, ...] = ()
    use_default: bool = True
    refresh_s: float = 3600.0


#: The site's own ranges when InternalNetworks is not set (RITA's InternalSubnets, Zeek's Site::local_nets):
#: RFC 1918, RFC 6598 shared address space, loopback, link-local, ULA.
DEFAULT_INTERNAL_NETWORKS: tuple[str, ...] = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10",
                                              "127.0.0.0/8", "169.254.0.0/16", "::1/128", "fc00::/7", "fe80::/10")


@dataclass(frozen=True)
class AddressSet:
    """CIDRs as (network, mask) word arrays for vectorised membership tests, plus exact host:port entries."""

    net_hi: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))
    net_lo: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))
    mask_hi: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))
    mask_lo: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))
    ports: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))  # -1 = any port
    hostnames: tuple[str, ...] = ()  # names still to be resolved by the collector
    labels: tuple[str, ...] = ()  # the entry each row came from (for evidence)

    def __len__(self) -> int:
        return len(self.net_hi)

    def match(self, hi: np.ndarray, lo: np.ndarray, port: np.ndarray | None = None) -> np.ndarray:
        """Index of the first entry each address (and port) falls in, or -1."""
        out = np.full(len(hi), -1, np.int64)
        for i in range(len(self.net_hi) - 1, -1, -1):  # entries are few; rows are many and vectorised
            hit = ((hi & self.mask_hi[i]) == self.net_hi[i]) & ((lo & self.mask_lo[i]) == self.net_lo[i])
            if port is not None and self.ports[i] >= 0:
                hit &= port == self.ports[i]
            out[hit] = i
        return out

    @staticmethod
    def build(entries: list[tuple[str, int, int, str]], hostnames: tuple[str, ...] = ()) -> "AddressSet":
        """From (cidr text, prefix length ignored if in text, port or -1, label) tuples."""
        nh, nl, mh, ml, ports, labels = [], [], [], [], [], []
        for cidr, _unused, port, label in entries:
            net = ipaddress.ip_network(cidr, strict=False)
            if net.version == 4:
                value = (0xFFFF << 32) | int(net.network_address)
                mask = ((1 << 128) - 1) ^ ((1 << (32 - net.prefixlen)) - 1)
            else:
                value = int(net.network_address)
                mask = ((1 << 128) - 1) ^ ((1 << (128 - net.prefixlen)) - 1)
            nh.append(value >> 64)
            nl.append(value & 0xFFFFFFFFFFFFFFFF)
            mh.append(mask >> 64)
            ml.append(mask & 0xFFFFFFFFFFFFFFFF)
            ports.append(port)
            labels.append(label)
        return AddressSet(np.array(nh, np.uint64), np.array(nl, np.uint64), np.array(mh, np.uint64),
                          np.array(ml, np.uint64), np.array(ports, np.int32), tuple(hostnames), tuple(labels))


def _internal_set(networks: tuple[str, ...]) -> AddressSet:
    """The AddressSet of InternalNetworks entries (validated CIDR text)."""
    return AddressSet.build([(n, 0, -1, n) for n in networks])


@dataclass(frozen=True)
class Kafka:
    """The Kafka broker and topics (``Kafka:`` block; ``--kafka`` sets ``bootstrap``); empty bootstrap = not used."""

    bootstrap: str = ""
    security_protocol: str = "PLAINTEXT"  # PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL
    tls_cafile: str = ""
    tls_certfile: str = ""
    tls_keyfile: str = ""
    sasl_mechanism: str = ""  # PLAIN, SCRAM-SHA-256, SCRAM-SHA-512
    sasl_username: str = ""
    sasl_password: str = ""
    flows_topic: str = "brokerwatch.flows"
    endpoint_topic: str = "brokerwatch.endpoint"
    alerts_topic: str = "brokerwatch.alerts"
    goflow2_topic: str = ""  # goflow2's protobuf flow topic the analytics role also reads ("" = none)
    partitions: int = 12
    replication_factor: int = 1
    flows_format: str = "binary"  # or "json" (one ECS flow record a message, for other consumers)
    buffer_mb: int = 256  # what a broker outage is buffered up to, per producer, before drops are counted
    group: str = "brokerwatch-analytics"


KAFKA_SECURITY = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
KAFKA_SASL = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
_TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]{1,249}$")


@dataclass(frozen=True)
class Config:
    """Every DET0002 tuning key plus brokerwatch's KnownPubSubClients, InternalNetworks and Exporters, validated."""

    UnusualProcessList: dict[str, tuple[str, ...]] = field(default_factory=lambda: dict(DEFAULT_UNUSUAL_PROCESSES))
    TimeWindow: TimeWindow = field(default_factory=TimeWindow)
    ProtocolPortList: dict[str, tuple[int, ...]] = field(default_factory=lambda: dict(DEFAULT_PORTS))
    BrokerAllowList: tuple[str, ...] = ()
    TopicAnomalyScore: TopicAnomalyScore = field(default_factory=TopicAnomalyScore)
    AppContextFilter: dict[str, tuple[str, ...]] = field(default_factory=lambda: dict(DEFAULT_APP_CONTEXT))
    URIPathRegex: tuple[str, ...] = (r"^/mqtt$", r"^/mqtt/?$", r"^/ws$", r"^/stomp$", r"^/nats$", r"^/xmpp-websocket$",
                                     r"^/http-bind$")
    BrokerReputationList: BrokerReputationList = field(default_factory=BrokerReputationList)
    PayloadLengthThreshold: int = 1024
    KnownPubSubClients: dict[str, tuple[str, ...]] = field(default_factory=lambda: dict(DEFAULT_KNOWN_CLIENTS))
    InternalNetworks: tuple[str, ...] = DEFAULT_INTERNAL_NETWORKS
    Exporters: ExportersConfig = field(default_factory=ExportersConfig)
    Kafka: Kafka = field(default_factory=Kafka)
    # Derived at load time (not config keys): the allowlist as address ranges, the reputation set.
    allow: AddressSet = field(default_factory=AddressSet)
    reputation: AddressSet = field(default_factory=AddressSet)
    internal: AddressSet = field(default_factory=lambda: _internal_set(DEFAULT_INTERNAL_NETWORKS))
    reputation_domains: tuple[str, ...] = ()

    def port_protocols(self) -> dict[int, str]:
        """Destination port → pub/sub protocol name, from ProtocolPortList."""
        out: dict[int, str] = {}
        for proto, ports in self.ProtocolPortList.items():
            for p in ports:
                out.setdefault(p, proto)
        return out

    @staticmethod
    def from_mapping(data: Any, locate: Callable[[tuple], str] = lambda path: "<config>") -> "Config":
        """Validate a parsed mapping into a Config; raises ConfigError listing every problem with its location."""
        v = _Validator(locate)
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError([f"{locate(())}: the config must be a mapping of the DET0002 keys"])
        known = {f for f in Config.__dataclass_fields__ if f[0].isupper()}
        for key in data:
            if key not in known:
                v.err((key,), f"unknown key (expected one of: {', '.join(sorted(known))})")
        kw: dict[str, Any] = {}
        if "UnusualProcessList" in data:
            kw["UnusualProcessList"] = v.per_os(("UnusualProcessList",), data["UnusualProcessList"])
        if "AppContextFilter" in data:
            kw["AppContextFilter"] = v.per_os(("AppContextFilter",), data["AppContextFilter"])
        if "KnownPubSubClients" in data:
            kw["KnownPubSubClients"] = v.per_os(("KnownPubSubClients",), data["KnownPubSubClients"])
        if "TimeWindow" in data:
            kw["TimeWindow"] = v.time_window(data["TimeWindow"])
        if "ProtocolPortList" in data:
            kw["ProtocolPortList"] = v.ports(data["ProtocolPortList"])
        if "BrokerAllowList" in data:
            kw["BrokerAllowList"] = v.str_list(("BrokerAllowList",), data["BrokerAllowList"])
        if "TopicAnomalyScore" in data:
            kw["TopicAnomalyScore"] = v.topic_score(data["TopicAnomalyScore"])
        if "URIPathRegex" in data:
            kw["URIPathRegex"] = v.regexes(data["URIPathRegex"])
        if "BrokerReputationList" in data:
            kw["BrokerReputationList"] = v.reputation(data["BrokerReputationList"])
        if "PayloadLengthThreshold" in data:
            kw["PayloadLengthThreshold"] = v.integer(("PayloadLengthThreshold",), data["PayloadLengthThreshold"],
                                                     1, 1 << 20)
        if "Exporters" in data:
            kw["Exporters"] = validate_exporters(v, data["Exporters"])
        if "Kafka" in data:
            kw["Kafka"] = v.kafka(data["Kafka"])
        if "InternalNetworks" in data:
            kw["InternalNetworks"] = v.networks(("InternalNetworks",), data["InternalNetworks"])
        allow = v.address_list(("BrokerAllowList",), kw.get("BrokerAllowList", ()))
        if v.problems:
            raise ConfigError(v.problems)
        return Config(**kw, allow=allow, internal=_internal_set(kw.get("InternalNetworks", DEFAULT_INTERNAL_NETWORKS)))


class _Validator:
    def __init__(self, locate: Callable[[tuple], str]):
        self.locate = locate
        self.problems: list[str] = []

    def err(self, path: tuple, msg: str) -> None:
        self.problems.append(f"{self.locate(path)}: {'.'.join(str(p) for p in path)}: {msg}")

    def str_list(self, path: tuple, value: Any) -> tuple[str, ...]:
        if not isinstance(value, list) or not all(isinstance(x, str) and x for x in value):
            self.err(path, "must be a list of non-empty strings")
            return ()
        return tuple(value)

    def per_os(self, path: tuple, value: Any) -> dict[str, tuple[str, ...]]:
        if not isinstance(value, dict):
            self.err(path, f"must be a mapping of {', '.join(OS_TYPES)} to lists of names")
            return {}
        out = {}
        for os_type, names in value.items():
            if os_type not in OS_TYPES:
                self.err(path + (os_type,), f"unknown OS (expected {', '.join(OS_TYPES)})")
                continue
            out[os_type] = self.str_list(path + (os_type,), names)
        return out

    def number(self, path: tuple, value: Any, lo: float, hi: float) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
            self.err(path, f"must be a number from {lo:g} to {hi:g}, got {value!r}")
            return lo
        return float(value)

    def integer(self, path: tuple, value: Any, lo: int, hi: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            self.err(path, f"must be a whole number from {lo} to {hi}, got {value!r}")
            return lo
        return value

    def duration(self, path: tuple, value: Any, lo: float, hi: float) -> float:
        """Seconds as a number or text like '24h', '300s', '5m', '1d'."""
        if isinstance(value, str):
            m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", value)
            if not m:
                self.err(path, f"must be a duration like 300, '300s', '5m', '24h' or '1d', got {value!r}")
                return lo
            value = float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
        return self.number(path, value, lo, hi)

    def keys(self, path: tuple, value: dict, allowed: set[str]) -> None:
        for k in value:
            if k not in allowed:
                self.err(path + (k,), f"unknown key (expected one of: {', '.join(sorted(allowed))})")

    def time_window(self, value: Any) -> TimeWindow:
        path = ("TimeWindow",)
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            return TimeWindow(window_s=self.duration(path, value, 60, 30 * 86400))
        if not isinstance(value, dict):
            self.err(path, "must be a duration ('24h') or a mapping with window and cadence")
            return TimeWindow()
        self.keys(path, value, {"window", "cadence"})
        before = len(self.problems)
        window = self.duration(path + ("window",), value.get("window", "24h"), 60, 30 * 86400)
        cadence = self.duration(path + ("cadence",), value.get("cadence", "5m"), 1, 86400)
        if len(self.problems) == before and cadence > window:
            self.err(path + ("cadence",), "must not be longer than the window")
        return TimeWindow(window, cadence)

    def ports(self, value: Any) -> dict[str, tuple[int, ...]]:
        path = ("ProtocolPortList",)
        if not isinstance(value, dict) or not value:
            self.err(path, "must be a mapping of protocol name to a list of ports")
            return dict(DEFAULT_PORTS)
        out = {}
        for proto, ports in value.items():
            if proto not in DEFAULT_PORTS:
                self.err(path + (proto,), f"unknown protocol (expected {', '.join(DEFAULT_PORTS)})")
                continue
            if not isinstance(ports, list) or not ports:
                self.err(path + (proto,), "must be a non-empty list of ports")
                continue
            out[proto] = tuple(self.integer(path + (proto,), p, 1, 65535) for p in ports)
        return out

    def topic_score(self, value: Any) -> TopicAnomalyScore:
        path = ("TopicAnomalyScore",)
        if not isinstance(value, dict):
            self.err(path, "must be a mapping with threshold, max_length, known_good")
            return TopicAnomalyScore()
        self.keys(path, value, {"threshold", "max_length", "known_good"})
        d = TopicAnomalyScore()
        return TopicAnomalyScore(
            threshold=self.number(path + ("threshold",), value.get("threshold", d.threshold), 0.0, 1.0),
            max_length=self.integer(path + ("max_length",), value.get("max_length", d.max_length), 1, 65535),
            known_good=self.str_list(path + ("known_good",), value.get("known_good", list(d.known_good))),
        )

    def regexes(self, value: Any) -> tuple[str, ...]:
        path = ("URIPathRegex",)
        items = self.str_list(path, value)
        for i, rx in enumerate(items):
            try:
                re.compile(rx)
            except re.error as exc:
                self.err(path + (i,), f"invalid regular expression {rx!r}: {exc}")
        return items

    def reputation(self, value: Any) -> BrokerReputationList:
        path = ("BrokerReputationList",)
        if isinstance(value, list):
            return BrokerReputationList(sources=self.str_list(path, value))
        if not isinstance(value, dict):
            self.err(path, "must be a list of files or a mapping with sources, use_default, refresh")
            return BrokerReputationList()
        self.keys(path, value, {"sources", "use_default", "refresh"})
        use_default = value.get("use_default", True)
        if not isinstance(use_default, bool):
            self.err(path + ("use_default",), "must be true or false")
            use_default = True
        return BrokerReputationList(
            sources=self.str_list(path + ("sources",), value.get("sources", [])),
            use_default=use_default,
            refresh_s=self.duration(path + ("refresh",), value.get("refresh", "1h"), 60, 7 * 86400),
        )

    def text(self, path: tuple, value: Any, choices: tuple[str, ...] = (), pattern: re.Pattern | None = None) -> str:
        if not isinstance(value, str) or (choices and value not in choices) or (pattern and not pattern.match(value)):
            expect = f"one of {', '.join(choices)}" if choices else "a topic name ([A-Za-z0-9._-])" if pattern \
                else "a string"
            self.err(path, f"must be {expect}, got {value!r}")
            return choices[0] if choices else ""
        return value

    def kafka(self, value: Any) -> Kafka:
        path = ("Kafka",)
        if not isinstance(value, dict):
            self.err(path, "must be a mapping with bootstrap, security_protocol, tls, sasl, topics, partitions, "
                           "replication_factor, flows_format, buffer_mb, group")
            return Kafka()
        self.keys(path, value, {"bootstrap", "security_protocol", "tls", "sasl", "topics", "partitions",
                                "replication_factor", "flows_format", "buffer_mb", "group"})
        d = Kafka()
        kw: dict[str, Any] = {}
        for key in ("bootstrap", "group"):
            if key in value:
                kw[key] = self.text(path + (key,), value[key])
        if kw.get("bootstrap") and not all(
                re.fullmatch(r"\[?[A-Za-z0-9_.:-]+\]?:\d{1,5}", b.strip()) for b in kw["bootstrap"].split(",")):
            self.err(path + ("bootstrap",), f"must be host:port[,host:port...], got {kw['bootstrap']!r}")
        if "security_protocol" in value:
            kw["security_protocol"] = self.text(path + ("security_protocol",), value["security_protocol"],
                                                KAFKA_SECURITY)
        for block, keys, choices in (("tls", ("cafile", "certfile", "keyfile"), {}),
                                     ("sasl", ("mechanism", "username", "password"), {"mechanism": KAFKA_SASL})):
            sub = value.get(block)
            if sub is None:
                continue
            if not isinstance(sub, dict):
                self.err(path + (block,), f"must be a mapping with {', '.join(keys)}")
                continue
            self.keys(path + (block,), sub, set(keys))
            for key in keys:
                if key in sub:
                    kw[f"{block}_{key}"] = self.text(path + (block, key), sub[key], choices.get(key, ()))
        topics = value.get("topics")
        if topics is not None:
            names = ("flows", "endpoint", "alerts", "goflow2")
            if not isinstance(topics, dict):
                self.err(path + ("topics",), f"must be a mapping with {', '.join(names)}")
            else:
                self.keys(path + ("topics",), topics, set(names))
                for key in names:
                    if key in topics and not (key == "goflow2" and topics[key] == ""):
                        kw[f"{key}_topic"] = self.text(path + ("topics", key), topics[key], pattern=_TOPIC_NAME)
        if "partitions" in value:
            kw["partitions"] = self.integer(path + ("partitions",), value["partitions"], 1, 10_000)
        if "replication_factor" in value:
            kw["replication_factor"] = self.integer(path + ("replication_factor",), value["replication_factor"],
                                                    1, 16)
        if "flows_format" in value:
            kw["flows_format"] = self.text(path + ("flows_format",), value["flows_format"], ("binary", "json"))
        if "buffer_mb" in value:
            kw["buffer_mb"] = self.integer(path + ("buffer_mb",), value["buffer_mb"], 1, 1 << 20)
        k = Kafka(**{**d.__dict__, **kw})
        if k.sasl_mechanism and not k.security_protocol.startswith("SASL"):
            self.err(path + ("sasl",), f"needs security_protocol SASL_PLAINTEXT or SASL_SSL, not {k.security_protocol}")
        if k.security_protocol.startswith("SASL") and not (k.sasl_mechanism and k.sasl_username):
            self.err(path + ("security_protocol",), "SASL needs sasl.mechanism and sasl.username")
        return k

    def networks(self, path: tuple, value: Any) -> tuple[str, ...]:
        """InternalNetworks: a list of CIDRs or addresses (no host names, no ports: it names the site's ranges)."""
        entries = self.str_list(path, value)
        out = []
        for i, entry in enumerate(entries):
            try:
                out.append(str(ipaddress.ip_network(entry.strip(), strict=False)))
            except ValueError:
                self.err(path + (i,), f"not a CIDR or address: {entry!r}")
        return tuple(out)

    def address_list(self, path: tuple, entries: tuple[str, ...]) -> AddressSet:
        """CIDR, address, [v6]:port / a.b.c.d:port entries; hostnames (and host:port) kept for later resolution."""
        rows, hostnames = [], []
        for i, entry in enumerate(entries):
            parsed = parse_address_entry(entry)
            if parsed is None:
                self.err(path + (i,), f"not a CIDR, address, host name or host:port: {entry!r}")
            elif parsed[0] is None:
                hostnames.append(entry)
            else:
                rows.append((parsed[0], 0, parsed[1], entry))
        return AddressSet.build(rows, tuple(hostnames))


_HOSTNAME = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9])?)*\.?$")


def parse_address_entry(entry: str) -> tuple[str | None, int] | None:
    """(CIDR text or None for a host name, port or -1) for an allow/reputation entry, or None if invalid."""
    text, port = entry.strip(), -1
    m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d+)", text) or re.fullmatch(r"([^:\s]+):(\d+)", text)
    if m:
        text, port = m.group(1), int(m.group(2))
        if not 0 < port < 65536:
            return None
    try:
        return str(ipaddress.ip_network(text, strict=False)), port
    except ValueError:
        pass
    if _HOSTNAME.match(text) and not text.replace(".", "").isdigit():
        return None, port
    return None
