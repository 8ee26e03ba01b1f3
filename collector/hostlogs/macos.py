"""macOS host logs into endpoint events: unified-log network records, Endpoint Security and Elastic Endpoint.

- Unified log, ``log show``/``log stream --style ndjson`` (and ``--style json``): records of ``com.apple.network``
  (Network.framework) whose ``eventMessage`` names a connection's path, ``[C<id> <uuid> <local>:<port><-><remote>:<port>]``
  -> ``network_connect`` with ``processImagePath``, ``processID`` and ``userID``. The connection summary is logged when
  the connection ends; its ``Duration:`` is taken off the log time so the event carries the connection's start, as
  flow records do. Every message that names a path is one event (a connection whose path is logged twice gives two
  events with the same addresses and ports, which attribution joins to the same flow). Redacted endpoints (``IPv4#3ec082bd``, ``Hostname#ea5d1e75``: private data off, the default) keep
  their port and lose their address; an unredacted hostname in the connection's first line becomes
  ``destination.domain``.
- The unified log's text styles (``default``, ``syslog``, ``compact``): the same messages, with the continuation
  lines of a multi-line message (they begin with a tab) joined by ``MacTextAssembler``. Lines without a connection
  path are skipped and counted (``no_network_info``).
- Endpoint Security as ``eslogger`` writes it (JSON lines modelled on ``es_message_t``, Apple's EndpointSecurity
  headers): ``exec`` (``event.exec.target`` + ``args``) -> ``process_start``, ``fork`` (``event.fork.child``)
  -> ``process_start``, ``exit`` -> ``process_end``, ``openssh_login``/``screensharing_attach`` with a
  ``source_address`` -> ``network_accept``; ``uipc_connect`` (UNIX domain sockets) and every other event are skipped
  and counted. ``process.entity_id`` is ``es:<pid>:<pidversion>`` of the audit token.
- Elastic Endpoint (Elastic Defend) ECS documents, bare or as an Elasticsearch hit (``_source``): ``event.action``
  ``exec``/``fork``/``start`` -> ``process_start``, ``end``/``exit`` -> ``process_end``, ``connection_attempted``
  -> ``network_connect``, ``connection_accepted`` -> ``network_accept``, ``lookup_result`` with ``dns.resolved_ip``
  -> ``dns_query``. The OS is the document's ``host.os`` (Elastic Endpoint runs on all three).
"""

from __future__ import annotations

import re
import shlex

from analytics.endpoint import (
    DNS_QUERY, NETWORK_ACCEPT, NETWORK_CONNECT, OS_ID, PROCESS_END, PROCESS_START, address_words,
)
from collector.hostlogs.common import checked_ns, parse_time_ns, pid_of, to_int
from collector.hostlogs.errors import HostLogError, HostLogSkip

DATASET = "macos"
MACOS = OS_ID["macos"]

# A connection path: "[C348.1.1.1 A8214DA1-... 172.20.1.254:64626<->IPv4#3ec082bd:443]".
_PATH = re.compile(r"\[C([\d.]+) (?:[0-9A-Fa-f-]{36} )?(\S+?)<->(\S+?)\](?:\s|$)")
# The connection's first line: "[C348 90B95967-... Hostname#ea5d1e75:443 quic-connection, ...]".
_HEAD = re.compile(r"\[C(\d+)[\d.]* (?:[0-9A-Fa-f-]{36} )?(\S+) (tcp|udp|quic|quic-connection)\b")
_DURATION = re.compile(r"Duration: (\d+(?:\.\d+)?)s")
_PROTO = {"tcp": 6, "udp": 17, "quic": 17, "quic-connection": 17}

_TS = r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+(?:[+-]\d{4})?)"
_TAIL = r"(?:\((.*?)\) )?(?:\[([^\]\s:]+):([^\]\s]+)\] )?(.*)$"
#: ``log show``/``log stream`` text styles: (style, regex with groups ts, process, pid, library, subsystem, category,
#: message). Style ``default``: "TS THREAD TYPE ACTIVITY PID TTL process: ..."; ``syslog``: "TS HOST process[PID]: ...";
#: ``compact``: "TS Df process[PID:THREAD] ...".
TEXT_STYLES = (
    ("default", re.compile(_TS + r"\s+0x[0-9a-f]+\s+[A-Za-z]+\s+0x[0-9a-f]+\s+(\d+)\s+\d+\s+(.+?): " + _TAIL)),
    ("syslog", re.compile(_TS + r"\s+\S+ (.+?)\[(\d+)\]: " + _TAIL)),
    ("compact", re.compile(_TS + r"\s+[A-Z][a-z]\s+(.+?)\[(\d+):[0-9a-f]+\] " + _TAIL)),
)
#: A line that begins a unified-log text record (the check the host-log decoder makes before anything else): a date,
#: a space, a time with fractional seconds.
TEXT_LINE = re.compile(rb"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3,}")
#: Lines ``log show``/``log stream`` write before the records: the filter banner and the column header.
TEXT_HEADERS = (b"Timestamp  ", b"Filtering the log data", b"Skipping info and debug")
#: Lines ``log show`` writes after them (a rule and the per-type totals); taken as such only in a unified-log stream.
TEXT_TRAILERS = (b"-----", b"Log      -", b"Activity -")


def _endpoint(text: str) -> tuple[str | None, str | None, int]:
    """(address, hostname, port) of a Network.framework endpoint: ``1.2.3.4:443``, ``[2001:db8::1]:443``,
    ``2001:db8::1.443``, ``broker.example.com:8883``; redacted ``IPv4#…``/``IPv6#…``/``Hostname#…`` give the port
    alone."""
    if text.startswith("["):
        host, _, port = text[1:].partition("]")
        port = port.lstrip(":.")
    else:
        host, sep, port = text.rpartition(":")
        if not sep or ":" in host:  # IPv6 without brackets writes its port after a dot
            host, sep, port = text.rpartition(".")
            if not sep:
                return None, None, 0
    p = int(port) if port.isdigit() and len(port) <= 5 else 0
    if "#" in host:
        return None, None, p
    if address_words(host) is not None:
        return host.split("%", 1)[0], None, p
    return None, host if "." in host else None, p


def network_message(msg: str) -> tuple[str, dict, int] | None:
    """(connection id, endpoint fields, start offset ns) of a Network.framework message naming a connection path;
    None when it names none."""
    m = _PATH.search(msg)
    if m is None:
        return None
    conn, local, remote = m.groups()
    src_ip, _, src_port = _endpoint(local)
    dst_ip, domain, dst_port = _endpoint(remote)
    fields = {"src_ip": src_ip, "src_port": src_port, "dst_ip": dst_ip, "dst_port": dst_port}
    head = _HEAD.search(msg)
    if head is not None:
        _, head_domain, _ = _endpoint(head.group(2))
        fields["domain"] = domain or head_domain
        fields["proto"] = _PROTO[head.group(3)]
    elif domain:
        fields["domain"] = domain
    d = _DURATION.search(msg)
    back = int(float(d.group(1)) * 1_000_000_000) if d and len(d.group(1)) < 12 else 0
    return conn.split(".", 1)[0], fields, back


def _connection(b, ts_ns: int, pid: int, msg: str, **process) -> int:
    parsed = network_message(msg)
    if parsed is None:
        raise HostLogSkip("no_network_info")
    _conn, fields, back = parsed
    b.add(checked_ns(ts_ns - back), NETWORK_CONNECT, MACOS, DATASET, pid=pid, **process, **fields)
    return 1


# -- unified log JSON ----------------------------------------------------------------------------------------------
def is_unified_log(obj: dict) -> bool:
    """A ``log show``/``log stream`` JSON record (``--style ndjson`` or ``json``)."""
    return "eventMessage" in obj and ("processImagePath" in obj or "subsystem" in obj)


def decode_unified_log(obj: dict, b) -> int:
    """One unified-log JSON record: a network_connect when it names a connection path."""
    msg = obj.get("eventMessage")
    if not isinstance(msg, str):
        raise HostLogError("missing_field", "eventMessage")
    if "<->" not in msg:
        raise HostLogSkip("no_network_info")
    ts = obj.get("timestamp")
    if ts is None:
        raise HostLogError("missing_field", "timestamp")
    exe = obj.get("processImagePath") or None
    uid = obj.get("userID")
    return _connection(
        b, parse_time_ns(ts), pid_of(obj.get("processID")), msg,
        executable=exe if isinstance(exe, str) else None, user=str(uid) if isinstance(uid, int) else None,
    )


# -- unified log text ----------------------------------------------------------------------------------------------
class MacTextAssembler:
    """Unified-log text lines (``log show``/``log stream`` default, syslog or compact style) into network events;
    a record's continuation lines (a multi-line message, each beginning with a tab) are joined to it."""

    def __init__(self, dec) -> None:
        self.dec = dec
        self._head: bytes | None = None
        self._more: list[bytes] = []
        self._size = 0

    @property
    def pending(self) -> bool:
        """True while a record may still get continuation lines."""
        return self._head is not None

    def feed(self, line: bytes, b) -> None:
        """A line that begins a record (its continuation lines come through ``continuation``)."""
        self.flush(b)
        if line.startswith(TEXT_HEADERS) or line.startswith(TEXT_TRAILERS):
            self.dec.skip(DATASET, "banner")
            return
        self._head = line
        self._size = len(line)

    def continuation(self, line: bytes, b) -> None:
        """A tab-indented line of the pending record's message."""
        self._size += len(line)
        if self._size > (1 << 20):
            self._head = None
            self._more = []
            self.dec.reject("too_large", "unified-log text record over 1 MiB")
            return
        self._more.append(line.rstrip(b"\r\n"))

    def flush(self, b) -> None:
        """Decode the pending record."""
        head, more = self._head, self._more
        if head is None:
            return
        self._head, self._more = None, []
        text = head.rstrip(b"\r\n").decode("utf-8", "replace")
        for style, rx in TEXT_STYLES:
            m = rx.match(text)
            if m is not None:
                break
        else:
            self.dec.reject("unknown_format", "unified-log text line of no known style")
            return
        ts, proc, pid, _lib, _sub, _cat, msg = _text_groups(style, m)
        if more:
            msg = "\n".join([msg, *(x.decode("utf-8", "replace") for x in more)])
        try:
            n = _connection(b, parse_time_ns(ts), pid_of(pid), msg, name=proc)
        except HostLogSkip as s:
            self.dec.skip(DATASET, s.what)
            return
        except HostLogError as e:
            self.dec.reject(e.reason, str(e))
            return
        self.dec.count(DATASET, n)


def _text_groups(style: str, m) -> tuple:
    if style == "default":
        ts, pid, proc, lib, sub, cat, msg = m.groups()
    else:
        ts, proc, pid, lib, sub, cat, msg = m.groups()
    return ts, proc, pid, lib, sub, cat, msg


# -- Endpoint Security (eslogger) ----------------------------------------------------------------------------------
def is_eslogger(obj: dict) -> bool:
    """An eslogger JSON line: ``event`` and ``process`` objects, the process named by its audit token."""
    proc = obj.get("process")
    return isinstance(proc, dict) and "audit_token" in proc and isinstance(obj.get("event"), dict)


def _es_process(p) -> dict:
    if not isinstance(p, dict):
        raise HostLogError("missing_field", "Endpoint Security process")
    token = p.get("audit_token")
    if not isinstance(token, dict):
        raise HostLogError("missing_field", "process.audit_token")
    pid = pid_of(token.get("pid"))
    exe = p.get("executable")
    path = exe.get("path") if isinstance(exe, dict) else None
    euid = token.get("euid")
    return {
        "pid": pid,
        "ppid": pid_of(p.get("ppid")),
        "executable": path if isinstance(path, str) else None,
        "user": str(euid) if isinstance(euid, int) else None,
        "entity_id": f"es:{pid}:{to_int(token.get('pidversion'), 0)}",
    }


def decode_eslogger(obj: dict, b) -> int:
    """One eslogger event: exec/fork -> process_start, exit -> process_end, remote logins -> network_accept."""
    event = obj["event"]
    if len(event) != 1:
        raise HostLogError("bad_value", "Endpoint Security event with other than one kind")
    (kind, body), = event.items()
    if not isinstance(body, dict):
        raise HostLogError("bad_value", f"event.{kind} is not an object")
    if "time" not in obj:
        raise HostLogError("missing_field", "time")
    ts = parse_time_ns(obj["time"])
    if kind == "exec":
        target = _es_process(body.get("target"))
        args = body.get("args")
        cmd = shlex.join(str(a) for a in args) if isinstance(args, list) and args else None
        b.add(ts, PROCESS_START, MACOS, DATASET, command_line=cmd, **target)
        return 1
    if kind == "fork":
        child = _es_process(body.get("child"))
        parent = _es_process(obj["process"])
        child["ppid"] = parent["pid"] if child["ppid"] < 0 else child["ppid"]
        b.add(ts, PROCESS_START, MACOS, DATASET, parent_executable=parent["executable"], **child)
        return 1
    if kind == "exit":
        b.add(ts, PROCESS_END, MACOS, DATASET, **_es_process(obj["process"]))
        return 1
    if kind in ("openssh_login", "screensharing_attach"):
        src = body.get("source_address")
        if not isinstance(src, str) or address_words(src) is None:
            raise HostLogSkip("no_network_info")
        b.add(ts, NETWORK_ACCEPT, MACOS, DATASET, src_ip=src, inbound=True, **_es_process(obj["process"]))
        return 1
    raise HostLogSkip("af_unix" if kind.startswith("uipc_") else "other_event")


# -- Elastic Endpoint ------------------------------------------------------------------------------------------------
def _source(obj: dict) -> dict:
    src = obj.get("_source")
    return src if isinstance(src, dict) else obj


def is_elastic_endpoint(obj: dict) -> bool:
    """An Elastic Endpoint (Defend) document, bare or as an Elasticsearch hit."""
    src = _source(obj)
    event = src.get("event")
    if not isinstance(event, dict):
        return False
    if event.get("module") == "endpoint":
        return True
    agent, stream = src.get("agent"), src.get("data_stream")
    return (isinstance(agent, dict) and agent.get("type") == "endpoint") or (
        isinstance(stream, dict) and str(stream.get("dataset", "")).startswith("endpoint.")
    )


_OS_NAMES = {"macos": "macos", "darwin": "macos", "linux": "linux", "windows": "windows"}
_ACTIONS = {
    "exec": PROCESS_START, "fork": PROCESS_START, "start": PROCESS_START,
    "end": PROCESS_END, "exit": PROCESS_END,
    "connection_attempted": NETWORK_CONNECT, "connection_accepted": NETWORK_ACCEPT,
    "lookup_result": DNS_QUERY,
}
_TRANSPORTS = {"tcp": 6, "udp": 17}


def _obj(d: dict, key: str) -> dict:
    v = d.get(key)
    return v if isinstance(v, dict) else _EMPTY


_EMPTY: dict = {}


def _text(v) -> str | None:
    return v if isinstance(v, str) and v else None


def decode_elastic_endpoint(obj: dict, b) -> int:
    """One Elastic Endpoint document: process and network events, DNS lookups (one row per resolved address)."""
    src = _source(obj)
    name = _obj(src, "event").get("action")
    action = _ACTIONS.get(name) if isinstance(name, str) else None
    if action is None:
        raise HostLogSkip("other_event")
    ts_value = src.get("@timestamp")
    if ts_value is None:
        raise HostLogError("missing_field", "@timestamp")
    ts = parse_time_ns(ts_value)
    host = _obj(src, "host")
    host_os = _obj(host, "os")
    os_name = ""
    for key in ("type", "platform", "family", "name"):
        v = host_os.get(key)
        if isinstance(v, str):
            os_name = _OS_NAMES.get(v.lower(), "")
            if os_name:
                break
    proc = _obj(src, "process")
    parent = _obj(proc, "parent")
    cmd = _text(proc.get("command_line"))
    if cmd is None and isinstance(proc.get("args"), list) and proc["args"]:
        cmd = " ".join(str(a) for a in proc["args"])  # as Elastic Endpoint itself joins them
    common = {
        "host": _text(host.get("name")) or _text(host.get("hostname")),
        "pid": pid_of(proc.get("pid")),
        "ppid": pid_of(parent.get("pid")),
        "executable": _text(proc.get("executable")),
        "name": _text(proc.get("name")),
        "command_line": cmd,
        "parent_executable": _text(parent.get("executable")),
        "user": _text(_obj(src, "user").get("name")),
        "entity_id": _text(proc.get("entity_id")),
    }
    os_id = OS_ID[os_name or "macos"]
    if action == PROCESS_START or action == PROCESS_END:
        b.add(ts, action, os_id, DATASET, **common)
        return 1
    if action == DNS_QUERY:
        dns = _obj(src, "dns")
        name = _text(_obj(dns, "question").get("name"))
        answers = dns.get("resolved_ip")
        if name is None or not isinstance(answers, list) or not answers:
            raise HostLogSkip("no_network_info")
        n = 0
        for ip in answers[:256]:
            if isinstance(ip, str):
                b.add(ts, DNS_QUERY, os_id, DATASET, domain=name, dst_ip=ip, **common)
                n += 1
        return n
    source, dest = _obj(src, "source"), _obj(src, "destination")
    src_ip, dst_ip = _text(source.get("ip")), _text(dest.get("ip"))
    if dst_ip is None and src_ip is None:
        raise HostLogError("missing_field", "source.ip/destination.ip")
    transport = _obj(src, "network").get("transport")
    b.add(
        ts, action, os_id, DATASET,
        src_ip=src_ip, src_port=to_int(source.get("port"), 0), dst_ip=dst_ip, dst_port=to_int(dest.get("port"), 0),
        proto=_TRANSPORTS.get(transport.lower(), 0) if isinstance(transport, str) else 0,
        domain=_text(dest.get("domain")), inbound=action == NETWORK_ACCEPT, **common,
    )
    return 1


#: JSON dialects of this module for the host-log decoder: name -> (dataset, detect, decode).
DIALECTS = {
    "macos_unified_log": (DATASET, is_unified_log, decode_unified_log),
    "eslogger": (DATASET, is_eslogger, decode_eslogger),
    "elastic_endpoint": (DATASET, is_elastic_endpoint, decode_elastic_endpoint),
}
