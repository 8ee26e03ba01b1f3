"""Every corpus connection line whose endpoints the vendor's layout gives comes out with those endpoints: 100 % per
vendor.

The endpoints are read here independently of the device profiles, straight from each vendor's documented layout
(Cisco's ASA syslog message texts, Junos RT_FLOW / RT_SCREEN, PAN-OS Traffic Log Fields, FortiOS traffic logs,
pfSense's raw filter log format, the netfilter LOG target). A connection line is a connection or deny message of
the families named below; one whose address fields hold no address (Cisco's message templates with "/port",
anonymised "00.00.000.00") gives no endpoints and is left out, by the same reading. The file goes through the parser
as a replay does (one parser, the held session starts made records when the input ends), and every connection line's
endpoint pair (either way round: a session end without its start is oriented by port) must be among its records.
"""

from __future__ import annotations

import csv
import ipaddress
import re
from pathlib import Path

import pytest

from analytics.schema import FlowBatchBuilder
from collector.ecs import flow_records
from collector.metrics import Counters
from collector.syslog.parser import SyslogParser

EXPORTER = (0, 0xFFFF0A000001)
_IP = r"(\d{1,3}(?:\.\d{1,3}){3}|[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7})"
_PORTED = {"6", "17", "tcp", "udp", "TCP", "UDP"}

# --- Cisco ASA / FTD: the connection and deny messages, by id, with the document's text around the addresses
_ASA = {
    "302013": rf"for [^:\s]+:{_IP}/(\d+).*? to [^:\s]+:{_IP}/(\d+)",
    "302015": rf"for [^:\s]+:{_IP}/(\d+).*? to [^:\s]+:{_IP}/(\d+)",
    "302014": rf"for [^:\s]+:{_IP}/(\d+).*? to [^:\s]+:{_IP}/(\d+)",
    "302016": rf"for [^:\s]+:{_IP}/(\d+).*? to [^:\s]+:{_IP}/(\d+)",
    "302020": rf"faddr {_IP}/\d+().*? laddr {_IP}/\d+()",
    "302021": rf"(?:faddr|from [^:\s]+:){_IP}/\d+().*?(?:laddr| to [^:\s]+:){_IP}/\d+()",
    "106001": rf"from {_IP}/(\d+) to {_IP}/(\d+)",
    "106006": rf"from {_IP}/(\d+) to {_IP}/(\d+)",
    "106007": rf"from {_IP}/(\d+) to {_IP}/(\d+)",
    "106015": rf"from {_IP}/(\d+) to {_IP}/(\d+)",
    "106002": rf"src {_IP}() dest {_IP}()",
    "106010": rf"src [^:\s]+:{_IP}(?:/(\d+))? dst [^:\s]+:{_IP}(?:/(\d+))?",
    "106014": rf"src [^:\s]+:{_IP}() dst [^:\s]+:{_IP}()",
    "106023": rf"src [^:\s]+:{_IP}(?:/(\d+))? dst [^:\s]+:{_IP}(?:/(\d+))?",
    "106100": rf" [^/\s]+/{_IP}\((\d+)\).*? -> [^/\s]+/{_IP}\((\d+)\)",
    "710003": rf"from {_IP}/(\d+) to [^:\s]+:{_IP}/(\d+)",
    "710005": rf"from {_IP}/(\d+) to [^:\s]+:{_IP}/(\d+)",
}
_ASA_ID = re.compile(r"%(?:ASA|FTD)-\d-(\d{6})")
_ICMP_ASA = re.compile(r"\b(?:ICMP|icmp6?|ICMPv6)\b")


def _asa(line: str):
    m = _ASA_ID.search(line)
    if not m or m.group(1) not in _ASA:
        return None
    e = re.search(_ASA[m.group(1)], line)
    if not e:
        return "template"  # the family, but no address where the layout puts one
    a, pa, b, pb = e.groups()
    if _ICMP_ASA.search(line) or m.group(1) == "106010":  # ICMP and "protocol N" carry no ports
        pa = pb = None
    return (a, pa or None), (b, pb or None)


# --- Juniper SRX: RT_FLOW session create/close/deny and RT_SCREEN, structured or plain
_SD = re.compile(r'([a-z-]+)="([^"]*)"')
_PLAIN = re.compile(rf"{_IP}/(\d+)->{_IP}/(\d+)")


def _srx(line: str):
    m = re.search(r"\b(RT_FLOW_SESSION_(?:CREATE|CLOSE|DENY)|RT_SCREEN_\w+)\b", line)
    if not m:
        return None
    if "[junos@" in line:
        sd = dict(_SD.findall(line))
        ported = sd.get("protocol-id") in _PORTED
        return ((sd["source-address"], sd.get("source-port") if ported else None),
                (sd["destination-address"], sd.get("destination-port") if ported else None))
    e = _PLAIN.search(line)
    proto = re.search(r" (\d{1,3}) \S+ \S+ \S+ \d+", line)
    ported = proto is not None and proto.group(1) in _PORTED
    return (e.group(1), e.group(2) if ported else None), (e.group(3), e.group(4) if ported else None)


# --- PAN-OS: TRAFFIC CSV, columns 7/8 addresses, 24/25 ports, 29 protocol (Traffic Log Fields)
def _panos(line: str):
    row = next(csv.reader([line]))
    if len(row) < 30 or row[3] != "TRAFFIC":
        return None
    ported = row[29] in _PORTED
    return (row[7], row[24] if ported else None), (row[8], row[25] if ported else None)


# --- FortiGate: type=traffic key=value (FortiOS 5+ srcip/dstip/srcport/dstport; FortiOS 4 src/dst/src_port)
def _fortigate(line: str):
    kv = {k: v.strip('"') for k, v in re.findall(r'(\w+)=("[^"]*"|\S*)', line)}
    if kv.get("type") != "traffic":
        return None
    ported = kv.get("proto") in _PORTED
    src, dst = kv.get("srcip", kv.get("src")), kv.get("dstip", kv.get("dst"))
    sp, dp = kv.get("srcport", kv.get("src_port")), kv.get("dstport", kv.get("dst_port"))
    return (src, sp if ported else None), (dst, dp if ported else None)


# --- pfSense / OPNsense filterlog CSV (Netgate, "Raw Filter Log Format")
def _pfsense(line: str):
    m = re.search(r"filterlog(?:\[\d+\])?:? (?:\d+ - \[[^\]]*\] )?(\d*,.*)$", line)
    if not m:
        return None
    f = m.group(1).split(",")
    if f[8] == "4":
        proto, src, dst, rest = f[16].lower(), f[18], f[19], f[20:]
    else:
        proto, src, dst, rest = f[12].lower(), f[15], f[16], f[17:]
    ported = proto in ("tcp", "udp")
    return (src, rest[0] if ported else None), (dst, rest[1] if ported else None)


# --- netfilter LOG target: SRC= DST= PROTO= SPT= DPT=
def _iptables(line: str):
    kv = dict(re.findall(r"\b(SRC|DST|PROTO|SPT|DPT)=(\S+)", line))
    if "SRC" not in kv or "DST" not in kv:
        return None
    ported = kv.get("PROTO", "").upper() in ("TCP", "UDP")
    return (kv["SRC"], kv.get("SPT") if ported else None), (kv["DST"], kv.get("DPT") if ported else None)


VENDORS = {"cisco_asa": _asa, "juniper_srx": _srx, "panos": _panos, "fortigate": _fortigate, "pfsense": _pfsense,
           "iptables_nftables": _iptables}


def _norm(end) -> tuple | None:
    ip, port = end
    try:
        return str(ipaddress.ip_address(ip)), None if port is None else int(port)
    except ValueError:
        return None  # an anonymised or templated address: the layout gives no endpoint


def _records(path: Path) -> list[frozenset]:
    """Every record's endpoint pair (either way round), the held starts made records when the input ends."""
    parser = SyslogParser(Counters())
    b = FlowBatchBuilder(64)
    parser.feed_lines(path.read_bytes().splitlines(), EXPORTER, 0, b)
    parser.close_sessions(b)
    return [frozenset({(r["source"]["ip"], r["source"].get("port")), (r["destination"]["ip"],
                                                                      r["destination"].get("port"))})
            for r in flow_records(b.build())]


@pytest.mark.parametrize("vendor", sorted(VENDORS))
def test_every_connection_line_comes_out_with_its_endpoints(corpus, vendor):
    read = VENDORS[vendor]
    files = sorted((corpus / "firewall_syslog" / vendor).glob("*.log"))
    assert files, f"no {vendor} samples in the corpus"
    lines = found = 0
    missed = []
    for path in files:
        got = set(_records(path))
        for i, raw in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            ends = read(raw)
            if ends is None or ends == "template":
                continue
            pair = [_norm(e) for e in ends]
            if None in pair:
                continue
            lines += 1
            if frozenset(pair) in got:
                found += 1
            else:
                missed.append(f"{path.name}:{i} {pair}")
    assert lines > 0
    print(f"{vendor}: {found}/{lines} connection lines with their endpoints")
    assert missed == [], f"{vendor}: {found}/{lines}; missed {missed[:5]}"
