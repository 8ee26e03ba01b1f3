"""The columnar endpoint event (DESIGN §3): what host logs say a process did, one row per event.

Host-log decoders (Sysmon, auditd, macOS, osquery; ``collector/hostlogs/``) append rows to an
``EndpointBatchBuilder``; the endpoint analytics (AN0002-AN0004) and the attribution of flows to processes take the
built ``EndpointBatch``. Rows are a numpy structured array (ENDPOINT_DTYPE); text fields (host, executable, command
line, user, domain, process id string) are ids into the batch's string table, id 0 being "not known". Addresses are
(high, low) uint64 words as in flow records (IPv4 stored IPv4-mapped); times are int64 ns since the epoch (UTC).
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import lru_cache

import numpy as np

from analytics.schema import dataset_id, dataset_name, words_to_ip

#: ``event.action`` of an endpoint event; the index is the ``action`` column.
ENDPOINT_ACTIONS: tuple[str, ...] = (
    "", "process_start", "network_connect", "dns_query", "process_end", "network_accept",
)
ACTION_ID = {name: i for i, name in enumerate(ENDPOINT_ACTIONS)}
PROCESS_START = ACTION_ID["process_start"]
NETWORK_CONNECT = ACTION_ID["network_connect"]
DNS_QUERY = ACTION_ID["dns_query"]
PROCESS_END = ACTION_ID["process_end"]
NETWORK_ACCEPT = ACTION_ID["network_accept"]

#: ``host.os.type``; the index is the ``os`` column.
OS_TYPES: tuple[str, ...] = ("", "windows", "linux", "macos")
OS_ID = {name: i for i, name in enumerate(OS_TYPES)}

#: One endpoint event. The ``*_id`` fields index ``EndpointBatch.strings`` (0 = unknown).
ENDPOINT_DTYPE = np.dtype(
    [
        ("ts_ns", np.int64),
        ("src_hi", np.uint64),
        ("src_lo", np.uint64),
        ("dst_hi", np.uint64),
        ("dst_lo", np.uint64),
        ("pid", np.int64),  # -1 = unknown
        ("ppid", np.int64),  # -1 = unknown
        ("host_id", np.uint32),  # host.name
        ("exe_id", np.uint32),  # process.executable
        ("name_id", np.uint32),  # process.name
        ("cmd_id", np.uint32),  # process.command_line
        ("parent_exe_id", np.uint32),  # process.parent.executable
        ("user_id", np.uint32),  # user.name
        ("domain_id", np.uint32),  # destination.domain (the name asked, for dns_query rows)
        ("entity_id", np.uint32),  # process.entity_id (Sysmon ProcessGuid, ES audit token, osquery/auditd pid+start)
        ("code", np.uint32),  # the source's own event code (Sysmon EventID, auditd syscall number, ...)
        ("src_port", np.uint16),
        ("dst_port", np.uint16),
        ("proto", np.uint8),  # IANA protocol number; 0 = unknown
        ("action", np.uint8),  # ENDPOINT_ACTIONS index
        ("os", np.uint8),  # OS_TYPES index
        ("dataset", np.uint8),  # dataset id (analytics.schema.dataset_id): sysmon, auditd, macos, osquery
        ("flags", np.uint8),  # EFLAG_* bits
    ]
)
ENDPOINT_COLUMNS: tuple[str, ...] = ENDPOINT_DTYPE.names
STRING_COLUMNS: tuple[str, ...] = tuple(n for n in ENDPOINT_COLUMNS if n.endswith("_id"))

#: Row flag: source.ip is known.
EFLAG_HAS_SRC = 1
#: Row flag: destination.ip is known.
EFLAG_HAS_DST = 2
#: Row flag: the connection was accepted (inbound), not initiated, by the process.
EFLAG_INBOUND = 4

_ECS_STRINGS = (
    ("host_id", ("host", "name")),
    ("exe_id", ("process", "executable")),
    ("name_id", ("process", "name")),
    ("cmd_id", ("process", "command_line")),
    ("parent_exe_id", ("process", "parent", "executable")),
    ("user_id", ("user", "name")),
    ("domain_id", ("destination", "domain")),
    ("entity_id", ("process", "entity_id")),
)


@lru_cache(maxsize=65536)
def address_words(text: str) -> tuple[int, int] | None:
    """(high, low) words of an address in text (IPv4, IPv6, IPv6 with a zone or brackets); None if it is not one."""
    t = text.strip()
    if t.startswith("[") and t.endswith("]"):
        t = t[1:-1]
    t = t.split("%", 1)[0]
    try:
        addr = ipaddress.ip_address(t)
    except ValueError:
        return None
    if addr.version == 6 and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    if addr.version == 4:
        return 0, 0x0000FFFF00000000 | int(addr)
    v = int(addr)
    return v >> 64, v & 0xFFFFFFFFFFFFFFFF


@lru_cache(maxsize=8192)
def process_name(executable: str) -> str:
    """The file name of an executable path, Windows or POSIX (``C:\\x\\powershell.exe`` -> ``powershell.exe``)."""
    cut = max(executable.rfind("\\"), executable.rfind("/"))
    return executable[cut + 1:] if cut >= 0 else executable


@dataclass
class EndpointBatch:
    """Endpoint events as one ENDPOINT_DTYPE structured array plus the batch's string table."""

    rows: np.ndarray
    strings: list[str] = field(default_factory=lambda: [""])

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.rows[name]

    @classmethod
    def empty(cls) -> "EndpointBatch":
        """A batch with no rows."""
        return cls(np.zeros(0, ENDPOINT_DTYPE))

    def text(self, column: str, i: int) -> str:
        """The string of row i's ``column`` (one of STRING_COLUMNS); '' where unknown."""
        return self.strings[int(self.rows[column][i])]

    def select(self, index: np.ndarray) -> "EndpointBatch":
        """The rows picked by a boolean mask or an index array, sharing the string table."""
        return EndpointBatch(self.rows[index], self.strings)

    @staticmethod
    def concat(batches: list["EndpointBatch"]) -> "EndpointBatch":
        """One batch holding the rows of several, with their string tables merged."""
        batches = [b for b in batches if len(b)]
        if not batches:
            return EndpointBatch.empty()
        if len(batches) == 1:
            return batches[0]
        index: dict[str, int] = {"": 0}
        parts = []
        for b in batches:
            remap = np.array([index.setdefault(s, len(index)) for s in b.strings], dtype=np.uint32)
            rows = b.rows.copy()
            for col in STRING_COLUMNS:
                rows[col] = remap[rows[col]]
            parts.append(rows)
        strings = [""] * len(index)
        for s, i in index.items():
            strings[i] = s
        return EndpointBatch(np.concatenate(parts), strings)

    def to_ecs(self, i: int) -> dict:
        """Row i as a nested ECS dict (DESIGN §3 endpoint event fields); unknown fields are left out."""
        r = self.rows[i]
        ts = int(r["ts_ns"])
        out: dict = {
            "@timestamp": datetime.fromtimestamp(ts // 1_000_000_000, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
            + f".{ts % 1_000_000_000 // 1000:06d}Z",
            "event": {"dataset": dataset_name(int(r["dataset"])), "action": ENDPOINT_ACTIONS[int(r["action"])]},
        }
        if r["code"]:
            out["event"]["code"] = str(int(r["code"]))
        if r["os"]:
            out.setdefault("host", {})["os"] = {"type": OS_TYPES[int(r["os"])]}
        for col, path in _ECS_STRINGS:
            sid = int(r[col])
            if sid:
                node = out
                for key in path[:-1]:
                    node = node.setdefault(key, {})
                node[path[-1]] = self.strings[sid]
        if r["pid"] >= 0:
            out.setdefault("process", {})["pid"] = int(r["pid"])
        if r["ppid"] >= 0:
            out.setdefault("process", {}).setdefault("parent", {})["pid"] = int(r["ppid"])
        flags = int(r["flags"])
        if flags & EFLAG_HAS_SRC:
            src = out.setdefault("source", {})
            src["ip"] = words_to_ip(r["src_hi"], r["src_lo"])
        if r["src_port"]:
            out.setdefault("source", {})["port"] = int(r["src_port"])
        if flags & EFLAG_HAS_DST:
            out.setdefault("destination", {})["ip"] = words_to_ip(r["dst_hi"], r["dst_lo"])
        if r["dst_port"]:
            out.setdefault("destination", {})["port"] = int(r["dst_port"])
        if r["proto"]:
            out.setdefault("network", {})["iana_number"] = str(int(r["proto"]))
        if flags & EFLAG_INBOUND:
            out.setdefault("network", {})["direction"] = "ingress"
        return out


#: One ENDPOINT_DTYPE row packed as numpy lays it out (a packed structured dtype, little-endian).
_ROW = struct.Struct("<qQQQQqqIIIIIIIIIHHBBBBB")
assert _ROW.size == ENDPOINT_DTYPE.itemsize
_INT64_MAX = (1 << 63) - 1


class EndpointBatchBuilder:
    """Collects endpoint events row by row into packed rows and a string table (one bytes append per event)."""

    __slots__ = ("_buf", "_ids")

    def __init__(self) -> None:
        self._buf = bytearray()
        # The string table is this dict's keys in insertion order: a string's id is the table's size when it came.
        self._ids: dict[str, int] = {"": 0}

    def __len__(self) -> int:
        return len(self._buf) // _ROW.size

    def intern(self, text: str | None) -> int:
        """Id of a string in this batch's table; None and '' are 0."""
        ids = self._ids
        return ids.setdefault(text or "", len(ids))

    def add(
        self,
        ts_ns: int,
        action: int,
        os: int,
        dataset: int | str,
        *,
        host: str | None = None,
        pid: int = -1,
        ppid: int = -1,
        executable: str | None = None,
        name: str | None = None,
        command_line: str | None = None,
        parent_executable: str | None = None,
        user: str | None = None,
        src_ip: str | None = None,
        src_port: int = 0,
        dst_ip: str | None = None,
        dst_port: int = 0,
        proto: int = 0,
        domain: str | None = None,
        entity_id: str | None = None,
        code: int = 0,
        inbound: bool = False,
    ) -> None:
        """Append one event. ``action`` and ``os`` are ACTION_ID/OS_ID values; an address that does not parse is
        left unknown (its flag unset), a port outside 0-65535 is 0, and ``name`` defaults to the executable's
        file name."""
        self.append(
            ts_ns, action, os, dataset_id(dataset) if isinstance(dataset, str) else dataset, host, pid, ppid,
            executable, name, command_line, parent_executable, user, src_ip, src_port, dst_ip, dst_port, proto, domain,
            entity_id, code, inbound,
        )

    def append(
        self, ts_ns, action, os, dataset, host, pid, ppid, executable, name, command_line, parent_executable, user,
        src_ip, src_port, dst_ip, dst_port, proto, domain, entity_id, code, inbound,
    ) -> None:
        """``add`` with every field positional and ``dataset`` an id: the same row, for decoders on a hot path.
        A time outside int64 nanoseconds (years before 1678 or after 2261) raises ValueError; a pid outside int64 is
        unknown (-1)."""
        if not -_INT64_MAX <= ts_ns <= _INT64_MAX:
            raise ValueError(f"time {ts_ns} ns out of range")
        if not -1 <= pid <= _INT64_MAX:
            pid = -1
        if not -1 <= ppid <= _INT64_MAX:
            ppid = -1
        flags = EFLAG_INBOUND if inbound else 0
        shi = slo = dhi = dlo = 0
        if src_ip:
            w = address_words(src_ip)
            if w is not None:
                shi, slo = w
                flags |= EFLAG_HAS_SRC
        if dst_ip:
            w = address_words(dst_ip)
            if w is not None:
                dhi, dlo = w
                flags |= EFLAG_HAS_DST
        if name is None and executable:
            name = process_name(executable)
        ids = self._ids
        sd = ids.setdefault
        self._buf += _ROW.pack(
            ts_ns, shi, slo, dhi, dlo, pid, ppid,
            sd(host or "", len(ids)), sd(executable or "", len(ids)), sd(name or "", len(ids)),
            sd(command_line or "", len(ids)), sd(parent_executable or "", len(ids)), sd(user or "", len(ids)),
            sd(domain or "", len(ids)), sd(entity_id or "", len(ids)), code & 0xFFFFFFFF,
            src_port if 0 <= src_port <= 65535 else 0, dst_port if 0 <= dst_port <= 65535 else 0,
            proto & 0xFF, action & 0xFF, os & 0xFF, dataset & 0xFF, flags,
        )

    def build(self) -> EndpointBatch:
        """The appended events as an EndpointBatch (the builder can then be reset)."""
        return EndpointBatch(np.frombuffer(self._buf, dtype=ENDPOINT_DTYPE).copy(), list(self._ids))

    def reset(self) -> None:
        """Forget every row and string."""
        self._buf = bytearray()
        self._ids = {"": 0}
