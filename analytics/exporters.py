"""The ``Exporters`` config key (brokerwatch's own): who the exporters are, what they may send, their quirks.

Pure validation, no I/O (the collector's SNMP poller and admission use the result)::

    Exporters:
      admission:            # per listener kind, the sender CIDRs it admits; a kind not listed admits every sender
        flows: [192.0.2.0/24]
        syslog: [192.0.2.0/24, 2001:db8::/32]
        hostlogs: [10.20.0.0/16]
      snmp:                 # defaults for every exporter; polling is on when ``enabled`` or a device has ``snmp``
        enabled: false
        version: 2c         # 1, 2c or 3
        community: public
        port: 161
        timeout: 1s
        retries: 1
        ttl: 1h             # names are refreshed in the background this often
        concurrency: 16     # requests in flight at most
        backoff_max: 1h     # a failing agent is retried after 1, 2, 4 ... timeouts, at most this long
      devices:              # per exporter address or CIDR; the longest prefix that holds an address wins
        192.0.2.1:
          name: edge-rtr-2              # observer.name, whatever SNMP says
          interfaces: {17: "Gi0/0/1"}   # ifIndex -> name, whatever SNMP says
          sampling_rate: 1000           # the exporter lies about its rate, or omits it
          admit: true                   # false: refused on every listener; true: admitted on every listener
          snmp: {version: 3, user: bw, auth: {protocol: SHA, key: "..."}, priv: {protocol: AES, key: "..."}}
        10.9.0.0/16: {snmp: false}      # never polled
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field, replace
from typing import Any

#: Listener kinds an admission list can name.
LISTENER_KINDS = ("flows", "syslog", "hostlogs")
#: SNMPv3 authentication and privacy protocols accepted (names as net-snmp's snmpget -a / -x spell them).
AUTH_PROTOCOLS = ("MD5", "SHA", "SHA-224", "SHA-256", "SHA-384", "SHA-512")
PRIV_PROTOCOLS = ("DES", "3DES", "AES", "AES-192", "AES-256")


@dataclass(frozen=True)
class SnmpSettings:
    """How to ask one exporter's agent (version 1/2c with a community, or 3 with a USM user)."""

    enabled: bool = False
    version: str = "2c"
    community: str = "public"
    port: int = 161
    timeout_s: float = 1.0
    retries: int = 1
    ttl_s: float = 3600.0
    concurrency: int = 16
    backoff_max_s: float = 3600.0
    user: str = ""
    auth_protocol: str = ""
    auth_key: str = ""
    priv_protocol: str = ""
    priv_key: str = ""

    def __repr__(self) -> str:  # never print secrets into a log line
        return f"SnmpSettings(enabled={self.enabled}, version={self.version!r}, port={self.port}, user={self.user!r})"


@dataclass(frozen=True)
class Device:
    """The settings of one address or CIDR in ``Exporters.devices``."""

    cidr: str
    name: str | None = None
    interfaces: dict[int, str] = field(default_factory=dict)
    sampling_rate: int | None = None
    admit: bool | None = None
    snmp: SnmpSettings | None = None  # None: the defaults; enabled=False: never polled

    @property
    def prefixlen(self) -> int:
        """The prefix length, counted over 128 bits (IPv4 as IPv4-mapped) so that v4 and v6 sort together."""
        net = ipaddress.ip_network(self.cidr)
        return net.prefixlen + (96 if net.version == 4 else 0)


@dataclass(frozen=True)
class ExportersConfig:
    """The validated ``Exporters`` key."""

    admission: dict[str, tuple[str, ...]] = field(default_factory=dict)
    snmp: SnmpSettings = field(default_factory=SnmpSettings)
    devices: tuple[Device, ...] = ()  # longest prefix first
    # address -> its device entry: lookups come per record at the JSON edge, the matching is per address
    _found: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def snmp_enabled(self) -> bool:
        """Whether any exporter is to be polled."""
        return self.snmp.enabled or any(d.snmp is not None and d.snmp.enabled for d in self.devices)

    def device_for(self, address: str) -> Device | None:
        """The device entry with the longest prefix holding address (None when no entry does)."""
        try:
            return self._found[address]
        except KeyError:
            pass
        if len(self._found) >= 65536:
            self._found.clear()
        found = self._found[address] = self._match(address)
        return found

    def _match(self, address: str) -> Device | None:
        ip = ipaddress.ip_address(address)
        if ip.version == 6 and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        for d in self.devices:
            net = ipaddress.ip_network(d.cidr)
            if ip.version == net.version and ip in net:
                return d
        return None

    def snmp_for(self, address: str) -> SnmpSettings | None:
        """The SNMP settings to poll address with, or None when it is not to be polled."""
        d = self.device_for(address)
        s = d.snmp if d is not None and d.snmp is not None else self.snmp
        return s if s.enabled else None


def _duration(v, path, value, lo, hi) -> float:
    return v.duration(path, value, lo, hi)


def validate_exporters(v, value: Any) -> ExportersConfig:
    """The Exporters mapping validated with the config's validator ``v`` (problems collected with file and line)."""
    path = ("Exporters",)
    if not isinstance(value, dict):
        v.err(path, "must be a mapping with admission, snmp, devices")
        return ExportersConfig()
    v.keys(path, value, {"admission", "snmp", "devices"})
    admission: dict[str, tuple[str, ...]] = {}
    adm = value.get("admission", {})
    if not isinstance(adm, dict):
        v.err(path + ("admission",), f"must be a mapping of listener kind ({', '.join(LISTENER_KINDS)}) to CIDRs")
    else:
        for kind, cidrs in adm.items():
            if kind not in LISTENER_KINDS:
                v.err(path + ("admission", kind), f"unknown listener kind (expected {', '.join(LISTENER_KINDS)})")
                continue
            admission[kind] = _cidrs(v, path + ("admission", kind), cidrs)
    defaults = _snmp(v, path + ("snmp",), value.get("snmp", {}), SnmpSettings(), top=True)
    devices = []
    devs = value.get("devices", {})
    if not isinstance(devs, dict):
        v.err(path + ("devices",), "must be a mapping of address or CIDR to its settings")
        devs = {}
    for key, entry in devs.items():
        p = path + ("devices", key)
        cidr = _cidr(v, p, key)
        if cidr is None:
            continue
        if entry is None:
            entry = {}
        if not isinstance(entry, dict):
            v.err(p, "must be a mapping with name, interfaces, sampling_rate, admit, snmp")
            continue
        v.keys(p, entry, {"name", "interfaces", "sampling_rate", "admit", "snmp"})
        name = entry.get("name")
        if name is not None and (not isinstance(name, str) or not name):
            v.err(p + ("name",), "must be a non-empty string")
            name = None
        interfaces = {}
        ifs = entry.get("interfaces", {})
        if not isinstance(ifs, dict):
            v.err(p + ("interfaces",), "must be a mapping of ifIndex to interface name")
        else:
            for idx, ifname in ifs.items():
                if isinstance(idx, bool) or not isinstance(idx, int) or not 0 <= idx <= 0xFFFFFFFF:
                    v.err(p + ("interfaces", idx), f"ifIndex must be a whole number from 0 to 4294967295, got {idx!r}")
                elif not isinstance(ifname, str) or not ifname:
                    v.err(p + ("interfaces", idx), "interface name must be a non-empty string")
                else:
                    interfaces[idx] = ifname
        rate = entry.get("sampling_rate")
        if rate is not None:
            rate = v.integer(p + ("sampling_rate",), rate, 1, 0xFFFFFFFF)
        admit = entry.get("admit")
        if admit is not None and not isinstance(admit, bool):
            v.err(p + ("admit",), "must be true or false")
            admit = None
        snmp = None
        if "snmp" in entry:
            raw = entry["snmp"]
            if raw is False:
                snmp = replace(defaults, enabled=False)
            else:
                snmp = _snmp(v, p + ("snmp",), raw if raw is not True else {}, replace(defaults, enabled=True))
        devices.append(Device(cidr, name, interfaces, rate, admit, snmp))
    devices.sort(key=lambda d: -d.prefixlen)
    return ExportersConfig(admission, defaults, tuple(devices))


def _cidr(v, path: tuple, value: Any) -> str | None:
    try:
        return str(ipaddress.ip_network(str(value).strip(), strict=False))
    except ValueError:
        v.err(path, f"not an address or CIDR: {value!r}")
        return None


def _cidrs(v, path: tuple, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        v.err(path, "must be a list of addresses or CIDRs")
        return ()
    out = [_cidr(v, path + (i,), c) for i, c in enumerate(value)]
    return tuple(c for c in out if c is not None)


def _snmp(v, path: tuple, value: Any, base: SnmpSettings, top: bool = False) -> SnmpSettings:
    if not isinstance(value, dict):
        v.err(path, "must be a mapping (version, community or user/auth/priv, port, timeout, ...)" +
              ("" if top else ", true or false"))
        return base
    allowed = {"version", "community", "port", "timeout", "retries", "user", "auth", "priv"}
    if top:
        allowed |= {"enabled", "ttl", "concurrency", "backoff_max"}
    v.keys(path, value, allowed)
    kw: dict[str, Any] = {}
    if "enabled" in value:
        if not isinstance(value["enabled"], bool):
            v.err(path + ("enabled",), "must be true or false")
        else:
            kw["enabled"] = value["enabled"]
    if "version" in value:
        version = str(value["version"]).lower().lstrip("v")
        if version not in ("1", "2c", "3"):
            v.err(path + ("version",), f"must be 1, 2c or 3, got {value['version']!r}")
        else:
            kw["version"] = version
    for key, attr in (("community", "community"), ("user", "user")):
        if key in value:
            if not isinstance(value[key], str) or not value[key]:
                v.err(path + (key,), "must be a non-empty string")
            else:
                kw[attr] = value[key]
    if "port" in value:
        kw["port"] = v.integer(path + ("port",), value["port"], 1, 65535)
    if "timeout" in value:
        kw["timeout_s"] = _duration(v, path + ("timeout",), value["timeout"], 0.05, 60)
    if "retries" in value:
        kw["retries"] = v.integer(path + ("retries",), value["retries"], 0, 10)
    if "ttl" in value:
        kw["ttl_s"] = _duration(v, path + ("ttl",), value["ttl"], 1, 7 * 86400)
    if "concurrency" in value:
        kw["concurrency"] = v.integer(path + ("concurrency",), value["concurrency"], 1, 1024)
    if "backoff_max" in value:
        kw["backoff_max_s"] = _duration(v, path + ("backoff_max",), value["backoff_max"], 1, 7 * 86400)
    for key, names in (("auth", AUTH_PROTOCOLS), ("priv", PRIV_PROTOCOLS)):
        if key not in value:
            continue
        sub = value[key]
        if not isinstance(sub, dict):
            v.err(path + (key,), "must be a mapping with protocol and key")
            continue
        v.keys(path + (key,), sub, {"protocol", "key"})
        proto = str(sub.get("protocol", "")).upper()
        if proto not in names:
            v.err(path + (key, "protocol"), f"must be one of {', '.join(names)}, got {sub.get('protocol')!r}")
        secret = sub.get("key")
        if not isinstance(secret, str) or len(secret) < 8:
            v.err(path + (key, "key"), "must be a pass phrase of at least 8 characters (RFC 3414)")
        kw[f"{key}_protocol"], kw[f"{key}_key"] = proto, secret if isinstance(secret, str) else ""
    out = replace(base, **kw)
    if out.version == "3" and out.enabled and not out.user:
        v.err(path, "SNMPv3 needs a user")
    if out.priv_protocol and not out.auth_protocol:
        v.err(path + ("priv",), "privacy needs authentication (auth) as well")
    return out
