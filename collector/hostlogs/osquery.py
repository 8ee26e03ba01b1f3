"""osquery result logs into endpoint events, on Linux, macOS and Windows.

The three result-log forms of osquery's logging documentation (``docs/wiki/deployment/logging.md``): differential
(event format: one row in ``columns`` with ``action`` added/removed), snapshot (``snapshot``: a list of rows) and
batched (``diffResults``: ``added``/``removed`` lists). Every form carries ``name`` (the *scheduled query's* name, not
the table's), ``hostIdentifier`` (or ``hostname``), ``calendarTime``, ``unixTime`` and optional ``decorations``.

Because the name is the query's, a row's table is recognised by its columns (osquery's ``specs/*.table``):
- ``process_events`` (Linux audit / macOS OpenBSM: ``pid``, ``path``, ``cmdline``, ``parent``, ``uid``, ``time``;
  Linux's ``syscall`` execve/execveat, fork/vfork/clone skipped), ``es_process_events`` (macOS EndpointSecurity:
  ``event_type`` exec/fork/exit, ``username``) and ``process_etw_events`` (Windows ETW: ``type``
  ProcessStart/ProcessStop, ``ppid``, ``username``) -> ``process_start`` / ``process_end``;
- ``socket_events`` (``action`` connect/accept with ``remote_address``/``remote_port``; bind, listen, close skipped)
  -> ``network_connect`` / ``network_accept``;
- ``process_open_sockets`` (a socket with a remote address and port; listening and UNIX sockets skipped; its ``path``
  is a UNIX socket's path, so the executable is read from a joined ``processes`` column: ``process_path``, ``exe``,
  or ``path`` of a row with an IP peer) -> ``network_connect``; a ``socket_events`` query that selects no ``action``
  (``... FROM socket_events WHERE action = 'connect'``) reads the same way;
- ``dns_lookup_events`` (Windows DNS client ETW: ``name`` asked, ``response`` answers separated by ``;``)
  -> ``dns_query``, one row per address answered.

The OS of a row, first that decides: a decoration naming it (``os``, ``platform``, ``os_type``, ``platform_like``,
``os_name``: windows / darwin, macos / linux and distribution names); the table when it exists on one OS only
(``process_etw_events`` and ``dns_lookup_events``: windows; ``es_process_events``: macos); the executable's path
(a drive letter or backslashes: windows; ``/Applications/``, ``/System/``, ``/Library/``, ``/private/``,
``/Users/``, ``/opt/homebrew/``: macos); a ``hostIdentifier`` ending in ``.local`` (macOS's Bonjour name; a
``/usr/bin`` path says nothing, both systems have one): macos; else linux (``process_events`` and ``socket_events`` come from Linux audit far more
often than from macOS OpenBSM).
"""

from __future__ import annotations

import calendar
import time

from analytics.endpoint import (
    DNS_QUERY, NETWORK_ACCEPT, NETWORK_CONNECT, OS_ID, PROCESS_END, PROCESS_START, address_words,
)
from collector.hostlogs.common import checked_ns, pid_of, to_int
from collector.hostlogs.errors import HostLogError, HostLogSkip

DATASET = "osquery"
#: Rows one result log line may carry (a snapshot of every open socket on a busy server is thousands).
MAX_ROWS = 65536
#: Addresses one DNS answer may give rows for.
MAX_ANSWERS = 64

_FORMS = ("columns", "snapshot", "diffResults")
_OS_WORDS = (
    ("windows", "windows"), ("darwin", "macos"), ("macos", "macos"), ("mac os", "macos"), ("linux", "linux"),
    ("ubuntu", "linux"), ("debian", "linux"), ("rhel", "linux"), ("centos", "linux"), ("fedora", "linux"),
    ("amzn", "linux"), ("suse", "linux"), ("alpine", "linux"), ("arch", "linux"),
)
_MAC_PREFIXES = ("/Applications/", "/System/", "/Library/", "/private/", "/Users/", "/opt/homebrew/")


def is_result_log(obj: dict) -> bool:
    """An osquery result log line (differential, snapshot or batched)."""
    return any(k in obj for k in _FORMS) and "name" in obj and (
        "hostIdentifier" in obj or "hostname" in obj or "unixTime" in obj or "calendarTime" in obj
    )


def _rows(obj: dict):
    """(row, action) of every row of the line, whatever its form."""
    if "columns" in obj:
        yield obj["columns"], str(obj.get("action", "added"))
    if "snapshot" in obj:
        rows = obj["snapshot"]
        if not isinstance(rows, list):
            raise HostLogError("bad_value", "snapshot is not a list")
        for row in rows:
            yield row, "snapshot"
    if "diffResults" in obj:
        diff = obj["diffResults"]
        if not isinstance(diff, dict):
            raise HostLogError("bad_value", "diffResults is not an object")
        for action in ("added", "removed"):
            rows = diff.get(action) or []
            if not isinstance(rows, list):
                raise HostLogError("bad_value", f"diffResults.{action} is not a list")
            for row in rows:
                yield row, action


def _line_time_ns(obj: dict) -> int:
    """The line's time: ``unixTime`` (seconds), else ``calendarTime`` ("Tue Sep 30 17:37:30 2014 UTC")."""
    t = to_int(obj.get("unixTime"))
    if t >= 0:
        return checked_ns(t * 1_000_000_000)
    cal = obj.get("calendarTime")
    if isinstance(cal, str):
        try:
            st = time.strptime(cal.replace(" UTC", "").strip(), "%a %b %d %H:%M:%S %Y")
            return calendar.timegm(st) * 1_000_000_000
        except ValueError:
            pass
    raise HostLogError("bad_time", "neither unixTime nor calendarTime")


def _decorated_os(obj: dict) -> str:
    deco = obj.get("decorations")
    if not isinstance(deco, dict):
        return ""
    for key in ("os", "platform", "os_type", "platform_like", "os_name"):
        v = deco.get(key)
        if isinstance(v, str):
            low = v.lower()
            for word, os_name in _OS_WORDS:
                if word in low:
                    return os_name
    return ""


def os_of(obj: dict, table: str, executable: str | None) -> str:
    """The OS of a row (see the module docstring for the order of the clues)."""
    os_name = _decorated_os(obj)
    if os_name:
        return os_name
    if table in ("process_etw_events", "dns_lookup_events"):
        return "windows"
    if table == "es_process_events":
        return "macos"
    if executable:
        if executable[1:3] == ":\\" or "\\" in executable:
            return "windows"
        if executable.startswith(_MAC_PREFIXES):
            return "macos"
    host = obj.get("hostIdentifier") or obj.get("hostname")
    if isinstance(host, str) and host.endswith(".local"):
        return "macos"
    return "linux"


def table_of(row: dict) -> str:
    """The osquery table a row comes from, by its columns ('' when none of ours)."""
    if "remote_address" in row:
        if "action" in row:
            return "socket_events"
        return "process_open_sockets"
    if "response" in row and "name" in row:
        return "dns_lookup_events"
    if "cmdline" in row and "pid" in row:
        if "event_type" in row:
            return "es_process_events"
        if "type" in row and ("ppid" in row or "username" in row):
            return "process_etw_events"
        return "process_events"
    return ""


def _text(v) -> str | None:
    return v if isinstance(v, str) and v else None


def _user(row: dict) -> str | None:
    name = _text(row.get("username"))
    if name:
        return name
    uid = to_int(row.get("uid"))
    return str(uid) if 0 <= uid < 4294967295 else None


def decode_result_log(obj: dict, b) -> int:
    """One result log line: every row of a table we read becomes an event; other rows are skipped."""
    host = _text(obj.get("hostIdentifier")) or _text(obj.get("hostname"))
    deco = obj.get("decorations")
    if isinstance(deco, dict) and _text(deco.get("hostname")):
        host = deco["hostname"]
    line_ts = None
    n = skipped = 0
    out = _Pending()  # rows are appended to b only once the whole line has decoded (a bad row rejects the line)
    for i, (row, action) in enumerate(_rows(obj)):
        if i >= MAX_ROWS:
            raise HostLogError("too_large", f"more than {MAX_ROWS} rows in one result line")
        if not isinstance(row, dict):
            raise HostLogError("bad_value", "a row is not an object")
        if action == "removed":
            skipped += 1  # a socket that closed, an event row aged out: nothing that happened now
            continue
        table = table_of(row)
        if not table:
            skipped += 1
            continue
        ts = to_int(row.get("time"))
        if ts >= 0:
            ts_ns = checked_ns(ts * 1_000_000_000)
        else:
            if line_ts is None:
                line_ts = _line_time_ns(obj)
            ts_ns = line_ts
        added = _DECODERS[table](row, obj, table, host, ts_ns, out)
        n += added
        skipped += added == 0
    if n == 0:
        raise HostLogSkip("no_usable_row" if skipped else "empty")
    for args, kwargs in out:
        b.add(*args, **kwargs)
    return n


class _Pending(list):
    """The events of one result line, held until every row of it has decoded."""

    def add(self, *args, **kwargs) -> None:
        """Hold one event (EndpointBatchBuilder.add's arguments)."""
        self.append((args, kwargs))


def _process(row, obj, table, host, ts_ns, b) -> int:
    exe = _text(row.get("path"))
    if table == "process_events":
        syscall = _text(row.get("syscall"))
        if syscall and syscall not in ("execve", "execveat"):
            return 0
        action = PROCESS_START
    elif table == "es_process_events":
        action = {"exec": PROCESS_START, "exit": PROCESS_END}.get(str(row.get("event_type")))
        if action is None:
            return 0
    else:
        action = {"ProcessStart": PROCESS_START, "ProcessStop": PROCESS_END}.get(str(row.get("type")))
        if action is None:
            return 0
    pid = pid_of(row.get("pid"))
    ppid = pid_of(row.get("ppid") if table == "process_etw_events" else row.get("parent"))
    os_name = os_of(obj, table, exe)
    b.add(ts_ns, action, OS_ID[os_name], DATASET, host=host, pid=pid, ppid=ppid, executable=exe,
          command_line=_text(row.get("cmdline")), user=_user(row),
          entity_id=f"osquery:{host or ''}:{pid}:{ts_ns // 1_000_000_000}")
    return 1


def _socket(row, obj, table, host, ts_ns, b) -> int:
    family = to_int(row.get("family"))
    if family == 1:
        return 0
    remote = _text(row.get("remote_address"))
    rport = to_int(row.get("remote_port"), 0)
    if remote is None or address_words(remote) is None or rport <= 0 or remote in ("0.0.0.0", "::"):
        return 0  # listening, unconnected or UNIX sockets
    if table == "socket_events":
        kind = row.get("action")
        if kind == "connect":
            action = NETWORK_CONNECT
        elif kind == "accept":
            action = NETWORK_ACCEPT
        else:
            return 0
        if row.get("status") == "no_client":
            return 0
        exe = _text(row.get("path"))
    else:
        action = NETWORK_CONNECT
        # the table's own path is a UNIX socket's; with an IP peer it can only be a joined processes.path
        exe = _text(row.get("process_path")) or _text(row.get("exe")) or _text(row.get("path"))
    local = _text(row.get("local_address"))
    lport = to_int(row.get("local_port"), 0)
    proto = to_int(row.get("protocol"), 0)
    if action == NETWORK_ACCEPT:  # the peer is the source of an accepted connection, as in the flow records
        ends = {"src_ip": remote, "src_port": rport, "dst_ip": local, "dst_port": lport}
    else:
        ends = {"src_ip": local, "src_port": lport, "dst_ip": remote, "dst_port": rport}
    b.add(ts_ns, action, OS_ID[os_of(obj, table, exe)], DATASET, host=host, pid=pid_of(row.get("pid")),
          executable=exe, name=_text(row.get("name")) if table == "process_open_sockets" else None,
          command_line=_text(row.get("cmdline")), user=_user(row), proto=proto if 0 < proto < 256 else 0,
          inbound=action == NETWORK_ACCEPT, **ends)
    return 1


def _dns(row, obj, table, host, ts_ns, b) -> int:
    name = _text(row.get("name"))
    response = row.get("response")
    if name is None or not isinstance(response, str):
        return 0
    exe = _text(row.get("path"))
    os_id = OS_ID[os_of(obj, table, exe)]
    n = 0
    for item in response.split(";"):
        item = item.strip()
        if item and address_words(item) is not None:  # CNAMEs come as "type:  5 alias.example.com"
            b.add(ts_ns, DNS_QUERY, os_id, DATASET, host=host, pid=pid_of(row.get("pid")), executable=exe,
                  user=_user(row), domain=name.rstrip("."), dst_ip=item)
            n += 1
            if n >= MAX_ANSWERS:
                break
    return n


_DECODERS = {
    "process_events": _process, "es_process_events": _process, "process_etw_events": _process,
    "socket_events": _socket, "process_open_sockets": _socket, "dns_lookup_events": _dns,
}

#: JSON dialects of this module for the host-log decoder: name -> (dataset, detect, decode).
DIALECTS = {"osquery": (DATASET, is_result_log, decode_result_log)}
