"""Windows Sysmon (events 1, 3, 5, 22) and Security 5156 into endpoint events, from every way they are shipped.

Sources, each recognised by content (``decoder.HostLogDecoder``):
- Winlogbeat / Elastic Agent JSON: ``winlog.event_id``, ``winlog.channel``, ``winlog.event_data.<Sysmon name>``;
  ECS fields (``process.executable``, ``destination.ip``, ...) fill in what a client-side processor moved out.
- Wazuh eventchannel JSON: ``win.system.eventID``, ``win.eventdata.<lowerCamel Sysmon name>`` (alone or inside an
  alert's ``data``); Wazuh writes every backslash of the event data doubled, undone here.
- NXLog im_msvistalog / flat JSON (as the OTRF Security-Datasets ship it): ``EventID``, ``Channel``, ``Hostname`` and
  the event data at the top level.
- Rendered event XML: ``<Event>`` with ``<System>`` and ``<EventData><Data Name=...>`` (wevtutil, WEF, Sysmon for
  Linux through syslog, python-evtx); each event parsed on its own, so one truncated event costs one rejection.
- EVTX files through the Rust-backed ``evtx`` parser (its JSON rendering); python-evtx measured slower (README).

Field by field (docs/hostlogs.md cites the sources): ``UtcTime`` is the event time (Sysmon writes it in UTC; the
forwarder's ``@timestamp``/``TimeCreated`` only when it is absent); ``ProcessGuid`` is ``process.entity_id``,
normalised to Sysmon's own ``{lowercase}`` form (the Rust parser drops the braces and upper-cases);
``User`` ``DOMAIN\\name`` gives ``user.name`` = name (ECS, as Winlogbeat's sysmon processor splits it); an event 3 with
``Initiated`` false is a ``network_accept`` whose source stays Sysmon's source (the connection's initiator, as in
flow records); each address in an event 22's ``QueryResults`` is one ``dns_query`` row (CNAME entries dropped, a query
that resolved nothing one row without an address).
"""

from __future__ import annotations

import re
import warnings
import xml.etree.ElementTree as ET

import msgspec
import orjson

from analytics.endpoint import DNS_QUERY, NETWORK_ACCEPT, NETWORK_CONNECT, OS_ID, PROCESS_END, PROCESS_START
from analytics.schema import dataset_id
from collector.hostlogs.common import parse_time_ns, to_int
from collector.hostlogs.errors import HostLogError, HostLogSkip

DATASET = "sysmon"
_DS = dataset_id(DATASET)
_WINDOWS = OS_ID["windows"]
_LINUX = OS_ID["linux"]

#: Channels (and providers) whose events are Sysmon's, and the OS each runs on.
SYSMON_CHANNELS = {
    "Microsoft-Windows-Sysmon/Operational": _WINDOWS,
    "Microsoft-Windows-Sysmon": _WINDOWS,
    "Linux-Sysmon/Operational": _LINUX,
    "Linux-Sysmon": _LINUX,
}
#: Sysmon event ids decoded here; every other id of the channel is counted as skipped.
SYSMON_EVENTS = (1, 3, 5, 22)
#: Security-log Windows Filtering Platform "connection permitted".
WFP_PERMITTED = 5156

#: Security 5156 ``Direction`` (message-table ids as the raw event data carries them, and their rendered text).
_WFP_INBOUND = {"%%14592", "Inbound"}
_PROTOCOLS = {"tcp": 6, "udp": 17, "icmp": 1, "ipv6-icmp": 58, "icmpv6": 58, "sctp": 132}

#: Largest ``<Event>`` element decoded from XML (a real one is a few KiB).
MAX_XML_EVENT = 256 * 1024


class SysmonData(msgspec.Struct, rename="pascal", gc=False):
    """The event-data fields of Sysmon events 1, 3, 5 and 22 that become endpoint rows, under Sysmon's names.

    Decoded lax (``strict=False``): the numbers and booleans that forwarders ship as text (``"5888"``, ``"true"``)
    become ints and bools in msgspec's C code; every other key of the event data is skipped unread."""

    utc_time: str | None = None
    process_guid: str | None = None
    process_id: int | None = None
    image: str | None = None
    command_line: str | None = None
    user: str | None = None
    parent_process_id: int | None = None
    parent_image: str | None = None
    protocol: str | int | None = None
    initiated: bool | None = None
    source_ip: str | None = None
    source_port: int | None = None
    destination_ip: str | None = None
    destination_port: int | None = None
    query_name: str | None = None
    query_results: str | None = None


#: The same fields under Wazuh's names: its eventchannel reader lower-cases the first letter of each Data Name.
WazuhData = msgspec.defstruct(
    "WazuhData", [(f.name, f.type, f.default) for f in msgspec.structs.fields(SysmonData)], rename="camel", gc=False,
)


# -- small value parsers -------------------------------------------------------------------------------------------
_SECOND_NS: dict[str, int] = {}


def _utc_ns(value) -> int:
    """Sysmon's UtcTime (``2019-03-19 15:55:52.615``) in ns, its whole second looked up in a small cache (events come
    many to a second); any other shape through parse_time_ns."""
    if isinstance(value, str) and len(value) == 23 and value[19] == "." and value[20:].isdigit():
        second = value[:19]
        ns = _SECOND_NS.get(second)
        if ns is None:
            ns = parse_time_ns(second)
            if len(_SECOND_NS) >= 4096:
                _SECOND_NS.clear()
            _SECOND_NS[second] = ns
        return ns + int(value[20:]) * 1_000_000
    return parse_time_ns(value)


def _text(value) -> str | None:
    """A string field as text; Sysmon's ``-`` placeholder and non-strings are unknown."""
    if isinstance(value, str):
        return value if value and value != "-" else None
    if value is None or isinstance(value, (dict, list)):
        return None
    return str(value)


def _proto(value) -> int:
    if isinstance(value, int):
        return value & 0xFF
    if isinstance(value, str):
        p = _PROTOCOLS.get(value.lower())
        if p is not None:
            return p
        return to_int(value, 0) & 0xFF
    return 0


def _known(value, wazuh: bool):
    """A text field, None when empty or Sysmon's ``-`` placeholder (whichever path read it); ``wazuh`` undoes
    Wazuh's doubled backslashes (``C:\\\\Windows``)."""
    if not value or value == "-":
        return None
    return value.replace("\\\\", "\\") if wazuh else value


def _dns_addresses(results) -> list[str]:
    """The addresses of a Sysmon QueryResults (``type:  5 cname;::ffff:1.2.3.4;...``), in order, without repeats."""
    if not isinstance(results, str):
        return []
    out: list[str] = []
    for entry in results.split(";"):
        entry = entry.strip()
        # "type:  N value" entries are records other than A/AAAA (5 = CNAME); answers are bare addresses.
        if entry and not entry.startswith("type:") and entry != "-" and entry not in out:
            out.append(entry)
    return out


# -- one event, any dialect ----------------------------------------------------------------------------------------
def _to_struct(d, cls):
    """Event data (a dict of the source's text) as ``cls``; empty and ``-`` values are unknown."""
    if isinstance(d, cls):
        return d
    if not isinstance(d, dict):
        raise HostLogError("missing_field", "event without event data")
    try:
        return msgspec.convert({k: v for k, v in d.items() if v != "" and v != "-"}, cls, strict=False)
    except msgspec.ValidationError as e:
        raise HostLogError("bad_value", str(e)) from None


def emit(b, eid: int, d, host, when, os_id: int = _WINDOWS, wazuh: bool = False) -> int:
    """Append the rows of one Sysmon event (id ``eid``; event data ``d``, a SysmonData/WazuhData or a dict under
    Sysmon's names) and return how many.

    ``when`` is the forwarder's timestamp, used only without ``UtcTime``; ``wazuh`` reads Wazuh's names and undoes
    its doubled backslashes. Raises HostLogSkip for an event id not decoded here, HostLogError for an event that
    lacks what it needs.
    """
    if eid not in SYSMON_EVENTS:
        raise HostLogSkip(f"event_{eid}")
    e = d if type(d) is SysmonData else _to_struct(d, WazuhData if wazuh else SysmonData)
    if e.utc_time is not None:
        ts = _utc_ns(e.utc_time)
    elif when is not None:
        ts = parse_time_ns(when)
    else:
        raise HostLogError("missing_field", f"Sysmon event {eid} without UtcTime")
    image = _known(e.image, wazuh)
    user = _known(e.user, wazuh)
    if user is not None:
        user = user.rpartition("\\")[2] or None
    pid = e.process_id
    if pid is None or pid < 0:
        pid = -1
    g = e.process_guid
    entity = None if not g or g == "-" else g.lower() if g[0] == "{" else "{" + g.lower() + "}"
    if not isinstance(host, str):
        host = None
    if eid == 3:
        dst = e.destination_ip
        if not dst or dst == "-":
            raise HostLogError("missing_field", "Sysmon event 3 without DestinationIp")
        inbound = e.initiated is False
        sport = e.source_port
        dport = e.destination_port
        proto = e.protocol
        b.append(
            ts, NETWORK_ACCEPT if inbound else NETWORK_CONNECT, os_id, _DS, host, pid, -1, image, None, None, None,
            user, e.source_ip, sport if sport is not None else 0, dst, dport if dport is not None else 0,
            _PROTOCOLS.get(proto) or _proto(proto), None, entity, 3, inbound,
        )
        return 1
    if image is None and pid < 0 and entity is None:
        raise HostLogError("missing_field", f"Sysmon event {eid} names no process")
    if eid == 1:
        cmd = _known(e.command_line, wazuh)
        parent = _known(e.parent_image, wazuh)
        ppid = e.parent_process_id
        b.append(
            ts, PROCESS_START, os_id, _DS, host, pid, -1 if ppid is None or ppid < 0 else ppid, image, None, cmd,
            parent, user, None, 0, None, 0, 0, None, entity, 1, False,
        )
        return 1
    if eid == 22:
        name = e.query_name
        if not name or name == "-":
            raise HostLogError("missing_field", "Sysmon event 22 without QueryName")
        addresses = _dns_addresses(e.query_results)
        for addr in addresses or (None,):
            b.append(ts, DNS_QUERY, os_id, _DS, host, pid, -1, image, None, None, None, user, None, 0, addr, 0, 0, name,
                     entity, 22, False)
        return len(addresses) or 1
    # eid == 5: process terminated
    b.append(ts, PROCESS_END, os_id, _DS, host, pid, -1, image, None, None, None, user, None, 0, None, 0, 0, None,
             entity, 5, False)
    return 1


def emit_wfp(b, d: dict, host, when) -> int:
    """Append a Security 5156 (WFP connection permitted) event as a network row; returns 1.

    The event's Source is always the local end (Microsoft's 5156 schema); an inbound connection is turned round so
    that source is the initiator, as for Sysmon and flow records.
    """
    if when is None:
        raise HostLogError("missing_field", "Security 5156 without a time")
    ts = parse_time_ns(when)
    src, dst = _text(d.get("SourceAddress")), _text(d.get("DestAddress"))
    sport, dport = to_int(d.get("SourcePort"), 0), to_int(d.get("DestPort"), 0)
    if src is None or dst is None:
        raise HostLogError("missing_field", "Security 5156 without SourceAddress/DestAddress")
    inbound = d.get("Direction") in _WFP_INBOUND
    if inbound:
        src, dst, sport, dport = dst, src, dport, sport
    b.add(
        ts, NETWORK_ACCEPT if inbound else NETWORK_CONNECT, _WINDOWS, _DS, host=host if isinstance(host, str) else None,
        pid=to_int(d.get("ProcessID", d.get("ProcessId"))), executable=_text(d.get("Application")), src_ip=src,
        src_port=sport, dst_ip=dst, dst_port=dport, proto=_proto(d.get("Protocol")), code=WFP_PERMITTED,
        inbound=inbound,
    )
    return 1


def _dispatch(b, channel, eid, d, host, when, wazuh=False) -> int:
    os_id = SYSMON_CHANNELS.get(channel) if isinstance(channel, str) else None
    if os_id is not None:
        return emit(b, eid, d, host, when, os_id, wazuh)
    if channel == "Security":
        if eid == WFP_PERMITTED and isinstance(d, dict):
            return emit_wfp(b, d, host, when)
        raise HostLogSkip("security_event")
    raise HostLogSkip("channel")


# -- Winlogbeat / Elastic Agent ------------------------------------------------------------------------------------
def _detect_winlogbeat(obj: dict) -> bool:
    return "winlog" in obj


def _from_ecs(obj: dict) -> dict:
    """Sysmon event data rebuilt from the ECS fields of an event whose processor moved them out of event_data."""
    out: dict = {}
    proc = obj.get("process")
    if isinstance(proc, dict):
        parent = proc.get("parent") if isinstance(proc.get("parent"), dict) else {}
        for key, value in (
            ("Image", proc.get("executable")), ("CommandLine", proc.get("command_line")),
            ("ProcessId", proc.get("pid")), ("ProcessGuid", proc.get("entity_id")),
            ("ParentImage", parent.get("executable")), ("ParentProcessId", parent.get("pid")),
        ):
            if value is not None:
                out[key] = value
    for side, ip_key, port_key in (("source", "SourceIp", "SourcePort"),
                                   ("destination", "DestinationIp", "DestinationPort")):
        node = obj.get(side)
        if isinstance(node, dict):
            if node.get("ip") is not None:
                out[ip_key] = node["ip"]
            if node.get("port") is not None:
                out[port_key] = node["port"]
    net = obj.get("network")
    if isinstance(net, dict):
        if net.get("transport") is not None:
            out["Protocol"] = net["transport"]
        if net.get("direction") in ("inbound", "ingress"):
            out["Initiated"] = "false"
    user = obj.get("user")
    if isinstance(user, dict) and isinstance(user.get("name"), str):
        out["User"] = user["name"]
    dns = obj.get("dns")
    if isinstance(dns, dict):
        q = dns.get("question")
        if isinstance(q, dict) and q.get("name"):
            out["QueryName"] = q["name"]
        if isinstance(dns.get("resolved_ip"), list):
            out["QueryResults"] = ";".join(str(a) for a in dns["resolved_ip"])
    return out


def _decode_winlogbeat(obj: dict, b) -> int:
    w = obj["winlog"]
    if not isinstance(w, dict):
        raise HostLogError("bad_value", "winlog is not an object")
    d = w.get("event_data")
    if d is None:
        d = {}
    elif not isinstance(d, dict):
        raise HostLogError("bad_value", "winlog.event_data is not an object")
    channel = w.get("channel") or w.get("provider_name")
    eid = to_int(w.get("event_id"))
    if "Image" not in d and "SourceAddress" not in d and channel in SYSMON_CHANNELS:
        d = {**_from_ecs(obj), **d}
    host = w.get("computer_name")
    if not host:
        h = obj.get("host")
        host = h.get("name") if isinstance(h, dict) else None
    return _dispatch(b, channel, eid, d, host, obj.get("@timestamp") or w.get("time_created"))


class _Host(msgspec.Struct, gc=False):
    name: str | None = None


class _Winlog(msgspec.Struct, gc=False):
    channel: str | None = None
    provider_name: str | None = None
    computer_name: str | None = None
    event_id: int | None = None
    event_data: SysmonData | None = None


class _WinlogbeatDoc(msgspec.Struct, gc=False):
    winlog: _Winlog | None = None
    host: _Host | None = None
    timestamp: str | None = msgspec.field(default=None, name="@timestamp")


_WINLOGBEAT = msgspec.json.Decoder(_WinlogbeatDoc, strict=False)


def _pick_winlogbeat(doc: _WinlogbeatDoc):
    """(event id, event data, host, forwarder time, os id, wazuh) of a Winlogbeat document, or None for a shape the
    fast path does not cover (a record of no Sysmon channel, event data moved to ECS fields)."""
    w = doc.winlog
    if w is None:
        return None
    os_id = SYSMON_CHANNELS.get(w.channel or w.provider_name)
    d = w.event_data
    if os_id is None or d is None or w.event_id is None:
        return None
    if d.image is None and d.process_guid is None and w.event_id in SYSMON_EVENTS:
        return None
    host = w.computer_name or (doc.host.name if doc.host is not None else None)
    return w.event_id, d, host, doc.timestamp, os_id, False


def _one(decoder, pick, data: bytes, b) -> int | None:
    """A fast path over one line: msgspec reads only the fields used; None hands the record to the generic path."""
    try:
        got = pick(decoder.decode(data))
    except msgspec.DecodeError:
        return None
    if got is None:
        return None
    eid, d, host, when, os_id, wazuh = got
    return emit(b, eid, d, host, when, os_id, wazuh=wazuh)


def _lines(decoder, pick, data: bytes, b, dec) -> list[int] | None:
    """A fast path over many lines (joined by newlines) in one msgspec call: each event is emitted, counted, skipped
    or rejected as ``dec.guarded`` would. Returns the indexes of the lines it does not cover (for the one-line
    path), or None when the block does not parse as a whole (every line goes one by one)."""
    try:
        docs = decoder.decode_lines(data)
    except msgspec.DecodeError:
        return None
    rest = []
    n = 0
    value_errors = dec.VALUE_ERRORS
    for i, doc in enumerate(docs):
        got = pick(doc)
        if got is None:
            rest.append(i)
            continue
        eid, d, host, when, os_id, wazuh = got
        try:  # dec.guarded, inline: a call less per event
            n += emit(b, eid, d, host, when, os_id, wazuh=wazuh)
        except HostLogSkip as e:
            dec.skip(DATASET, e.what)
        except HostLogError as e:
            dec.reject(e.reason, str(e))
        except value_errors as e:
            dec.reject("bad_value", f"{type(e).__name__}: {e}")
    dec.count(DATASET, n)
    return rest


def decode_winlogbeat_bytes(data: bytes, b) -> int | None:
    """The fast path of a Winlogbeat line (the rendered message and everything unused is skipped unparsed)."""
    return _one(_WINLOGBEAT, _pick_winlogbeat, data, b)


def decode_winlogbeat_lines(data: bytes, b, dec) -> list[int] | None:
    """The block form of decode_winlogbeat_bytes."""
    return _lines(_WINLOGBEAT, _pick_winlogbeat, data, b, dec)


# -- Wazuh ---------------------------------------------------------------------------------------------------------
def _wazuh_win(obj: dict):
    win = obj.get("win")
    if win is None:
        data = obj.get("data")
        win = data.get("win") if isinstance(data, dict) else None
    return win


def _detect_wazuh(obj: dict) -> bool:
    return isinstance(_wazuh_win(obj), dict)


def _decode_wazuh(obj: dict, b) -> int:
    win = _wazuh_win(obj)
    system = win.get("system")
    if not isinstance(system, dict):
        raise HostLogError("missing_field", "Wazuh event without win.system")
    d = win.get("eventdata")
    channel = system.get("channel") or system.get("providerName")
    eid = to_int(system.get("eventID"))
    host = system.get("computer")
    when = system.get("systemTime")
    if channel == "Security" and isinstance(d, dict):
        # Security event data keys are lower-cased on the first letter too; 5156 reads them by their own names.
        d = {key[:1].upper() + key[1:]: value for key, value in d.items()}
        d["Application"] = _known(d.get("Application"), True)
        return _dispatch(b, channel, eid, d, host, when)
    return _dispatch(b, channel, eid, d, host, when, wazuh=True)


# -- NXLog / flat --------------------------------------------------------------------------------------------------
def _detect_flat(obj: dict) -> bool:
    return "EventID" in obj and ("Channel" in obj or "SourceName" in obj)


def _decode_flat(obj: dict, b) -> int:
    channel = obj.get("Channel") or obj.get("SourceName")
    eid = to_int(obj.get("EventID"))
    host = obj.get("Hostname") or obj.get("Computer")
    # NXLog's EventTime is local time without a zone; the ISO times the shippers add carry one.
    when = obj.get("@timestamp") or obj.get("TimeCreated") or obj.get("EventReceivedTime") or obj.get("EventTime")
    return _dispatch(b, channel, eid, obj, host, when)


# -- fast paths of the Wazuh and flat dialects: the same fields, their own names ------------------------------------
class _WazuhSystem(msgspec.Struct, rename="camel", gc=False):
    channel: str | None = None
    provider_name: str | None = None
    event_id: int | None = msgspec.field(default=None, name="eventID")
    computer: str | None = None
    system_time: str | None = None


class _WazuhWin(msgspec.Struct, gc=False):
    system: _WazuhSystem | None = None
    eventdata: WazuhData | None = None


class _WazuhDoc(msgspec.Struct, gc=False):
    win: _WazuhWin | None = None


_WAZUH = msgspec.json.Decoder(_WazuhDoc, strict=False)


def _pick_wazuh(doc: _WazuhDoc):
    win = doc.win
    if win is None or win.system is None or win.eventdata is None:
        return None
    sy = win.system
    os_id = SYSMON_CHANNELS.get(sy.channel or sy.provider_name)
    if os_id is None or sy.event_id is None:
        return None
    return sy.event_id, win.eventdata, sy.computer, sy.system_time, os_id, True


def decode_wazuh_bytes(data: bytes, b) -> int | None:
    """The fast path of a Wazuh eventchannel line (Sysmon channels only; the rest goes to the generic path)."""
    return _one(_WAZUH, _pick_wazuh, data, b)


def decode_wazuh_lines(data: bytes, b, dec) -> list[int] | None:
    """The block form of decode_wazuh_bytes."""
    return _lines(_WAZUH, _pick_wazuh, data, b, dec)


class _FlatEvent(SysmonData):
    """An NXLog im_msvistalog record: Sysmon's event data at the top level beside NXLog's own fields."""

    event_id: int | None = msgspec.field(default=None, name="EventID")
    channel: str | None = msgspec.field(default=None, name="Channel")
    source_name: str | None = msgspec.field(default=None, name="SourceName")
    hostname: str | None = msgspec.field(default=None, name="Hostname")
    timestamp: str | None = msgspec.field(default=None, name="@timestamp")


_FLAT = msgspec.json.Decoder(_FlatEvent, strict=False)


def _pick_flat(e: _FlatEvent):
    os_id = SYSMON_CHANNELS.get(e.channel or e.source_name)
    if os_id is None or e.event_id is None or (e.utc_time is None and e.timestamp is None):
        return None
    return e.event_id, e, e.hostname, e.timestamp, os_id, False


def decode_flat_bytes(data: bytes, b) -> int | None:
    """The fast path of an NXLog / flat JSON line (Sysmon channels with an event time; the rest goes generic)."""
    return _one(_FLAT, _pick_flat, data, b)


def decode_flat_lines(data: bytes, b, dec) -> list[int] | None:
    """The block form of decode_flat_bytes."""
    return _lines(_FLAT, _pick_flat, data, b, dec)


#: Byte-level fast paths (decoder.JSON_FAST_PATHS): (marker every such record holds, dataset, decode_bytes).
FAST_PATHS = (
    (b'"winlog"', DATASET, decode_winlogbeat_bytes),
    (b'"win"', DATASET, decode_wazuh_bytes),
    (b'"EventID"', DATASET, decode_flat_bytes),
)


#: Block forms of the fast paths (decoder.JSON_BATCH_PATHS): decode_bytes -> decode_lines(data, b, dec).
BATCH_PATHS = {decode_winlogbeat_bytes: decode_winlogbeat_lines, decode_wazuh_bytes: decode_wazuh_lines,
               decode_flat_bytes: decode_flat_lines}

#: JSON dialects of this module (decoder.JSON_DIALECTS): name -> (dataset, detect, decode).
DIALECTS = {
    "winlogbeat": (DATASET, _detect_winlogbeat, _decode_winlogbeat),
    "wazuh_eventchannel": (DATASET, _detect_wazuh, _decode_wazuh),
    "nxlog_windows": (DATASET, _detect_flat, _decode_flat),
}


# -- rendered event XML --------------------------------------------------------------------------------------------
_EVENT_START = re.compile(rb"<Event[\s>]")
_EVENT_END = b"</Event>"


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _xml_event(elem, b) -> int:
    """One parsed ``<Event>`` element."""
    system = data = None
    for child in elem:
        name = _local(child.tag)
        if name == "System":
            system = child
        elif name == "EventData":
            data = child
    if system is None:
        raise HostLogError("missing_field", "XML event without <System>")
    channel = provider = host = when = None
    eid = -1
    for child in system:
        name = _local(child.tag)
        if name == "EventID":
            eid = to_int(child.text)
        elif name == "Channel":
            channel = child.text
        elif name == "Computer":
            host = child.text
        elif name == "TimeCreated":
            when = child.get("SystemTime")
        elif name == "Provider":
            provider = child.get("Name")
    d = {}
    if data is not None:
        for item in data:
            key = item.get("Name")
            if key:
                d[key] = item.text or ""
    return _dispatch(b, channel or provider, eid, d, host, when)


def _xml_chunk(chunk: bytes, b) -> int:
    if len(chunk) > MAX_XML_EVENT:
        raise HostLogError("too_large", f"XML event of {len(chunk)} bytes")
    try:
        elem = ET.fromstring(chunk)
    except ET.ParseError as e:
        raise HostLogError("xml", str(e)) from None
    return _xml_event(elem, b)


def decode_xml(data: bytes, b, dec) -> None:
    """Every ``<Event>`` of rendered Windows event XML (one event, or an ``<Events>`` document), each on its own.

    A document type declaration is refused (``xml_doctype``: event XML never has one, and entities are how XML
    bombs work); an event cut short is ``truncated``; one that does not parse is ``xml``.
    """
    if isinstance(data, str):
        data = data.encode()
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        dec.reject("xml_doctype", "XML with a document type declaration")
        return
    pos = 0
    found = False
    while True:
        m = _EVENT_START.search(data, pos)
        if m is None:
            break
        found = True
        start = m.start()
        end = data.find(_EVENT_END, m.end())
        following = _EVENT_START.search(data, m.end())
        if end < 0 or (following is not None and following.start() < end):
            dec.reject("truncated", "XML event without its </Event>")
            if following is None:
                break
            pos = following.start()
            continue
        pos = end + len(_EVENT_END)
        dec.guarded(DATASET, _xml_chunk, data[start:pos], b)
    if not found:
        dec.reject("xml", "no <Event> element")


# -- EVTX ----------------------------------------------------------------------------------------------------------
def _evtx_value(node):
    """A value of the Rust parser's JSON: plain, or ``{"#text": value, "#attributes": {...}}``."""
    if isinstance(node, dict):
        return node.get("#text")
    return node


def _evtx_record(record: dict, b) -> int:
    try:
        event = orjson.loads(record["data"])["Event"]
        system = event["System"]
    except (orjson.JSONDecodeError, KeyError, TypeError) as e:
        raise HostLogError("evtx", f"record without Event/System: {e}") from None
    d = event.get("EventData")
    if not isinstance(d, dict):
        d = {}
    provider = system.get("Provider")
    channel = system.get("Channel") or (
        provider.get("#attributes", {}).get("Name") if isinstance(provider, dict) else None)
    created = system.get("TimeCreated")
    when = created.get("#attributes", {}).get("SystemTime") if isinstance(created, dict) else None
    eid = to_int(_evtx_value(system.get("EventID")))
    return _dispatch(b, channel, eid, d, system.get("Computer"), when or record.get("timestamp"))


def decode_evtx(path: str, b, dec) -> None:
    """Every record of an EVTX file, read by the Rust ``evtx`` parser on one thread; damaged chunks are counted."""
    try:
        from evtx import PyEvtxParser
    except ImportError:  # pragma: no cover - a dependency of the package
        dec.reject("unsupported", "EVTX needs the 'evtx' package")
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            parser = PyEvtxParser(path, number_of_threads=1, skip_errors=True)
            records = parser.records_json()
        except (OSError, RuntimeError, ValueError) as e:
            dec.reject("evtx", str(e))
            return
        seen = 0
        while True:
            try:
                record = next(records)
            except StopIteration:
                break
            except (OSError, RuntimeError, ValueError) as e:
                dec.reject("evtx", str(e))
                break
            seen += 1
            dec.guarded(DATASET, _evtx_record, record, b)
    for w in caught:
        dec.reject("evtx", str(w.message))
    if not seen and not caught:
        # The parser passes over a chunk it cannot recognise (a cut or foreign file) without a word.
        dec.reject("evtx", "no record could be read")
