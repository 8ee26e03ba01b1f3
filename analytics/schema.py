"""The columnar flow record shared by every stage: FlowBatch and its reusable builder.

Decoders write rows into a preallocated structured buffer (``FlowBatchBuilder.reserve``); ``build()``
hands the analytics equal-length, C-contiguous numpy columns. Addresses are IPv6-capable: each one is
two uint64 words (high, low), an IPv4 address stored IPv4-mapped (``::ffff:a.b.c.d``). Times are int64
nanoseconds since the Unix epoch (UTC).
"""

from __future__ import annotations

import inspect
import ipaddress
from dataclasses import dataclass, field

import numba
import numpy as np

#: One row of the flow record. Column order is the wire order of the compact binary Kafka encoding.
FLOW_DTYPE = np.dtype(
    [
        ("start_ns", np.int64),
        ("end_ns", np.int64),
        ("src_hi", np.uint64),
        ("src_lo", np.uint64),
        ("dst_hi", np.uint64),
        ("dst_lo", np.uint64),
        ("exporter_hi", np.uint64),
        ("exporter_lo", np.uint64),
        ("bytes", np.uint64),
        ("packets", np.uint64),
        ("rev_bytes", np.uint64),  # server -> client bytes of a row that covers both directions (FLAG_REVERSE)
        ("rev_packets", np.uint64),  # server -> client packets, same scaling as packets
        ("sampling_rate", np.uint32),
        ("in_if", np.uint32),
        ("out_if", np.uint32),
        ("topic_id", np.uint32),  # index into FlowBatch.strings; 0 means "no topic seen"
        ("src_port", np.uint16),
        ("dst_port", np.uint16),
        ("proto", np.uint8),  # IANA protocol number
        ("tcp_flags", np.uint8),  # cumulative TCP flags; 0 where unknown
        ("app_proto", np.uint8),  # APP_PROTOCOLS index; 0 = not recognised
        ("action", np.uint8),  # ACTIONS index (firewall logs); 0 = unknown
        ("dataset", np.uint8),  # dataset id, see dataset_id()
        ("flags", np.uint8),  # FLAG_* bits
    ]
)

COLUMNS: tuple[str, ...] = FLOW_DTYPE.names

#: Application protocols recognised on the wire or by a firewall's application id.
APP_PROTOCOLS: tuple[str, ...] = ("", "mqtt", "amqp", "xmpp", "stomp", "nats", "mqtt-over-websocket")
APP_PROTOCOL_ID = {name: i for i, name in enumerate(APP_PROTOCOLS)}

#: Firewall verdicts kept from syslog (``event.action``).
ACTIONS: tuple[str, ...] = ("", "allow", "deny", "drop", "reset", "close")
ACTION_ID = {name: i for i, name in enumerate(ACTIONS)}

#: Row flag: the exporter's record has no packet/byte counters (NAT events, firewall denies).
FLAG_NO_COUNTERS = 1
#: Row flag: the interface ids are unknown (do not print them).
FLAG_NO_INTERFACES = 2
#: Row flag: ports are not meaningful (ICMP, other protocols).
FLAG_NO_PORTS = 4
#: Row flag: the byte count is known but the packet count is not (some firewall session logs).
FLAG_NO_PACKETS = 8
#: Row flag: the row is oriented client -> server and counts both directions: ``bytes``/``packets`` are the
#: client's, ``rev_bytes``/``rev_packets`` the server's replies (a biflow, a session log, a folded reply).
FLAG_REVERSE = 16
#: Row flag: the record itself says which side is the client (a biflow's initiator, a firewall session log, the
#: meter's SYN): the port-based fold (``collector/flows/direction.py``) leaves it as it is.
FLAG_ORIENTED = 32
#: Row flag: one application message inside a session (an MQTT PUBLISH seen by the flow meter), not a flow record:
#: start = end = its time, bytes = its size, packets = 1; the session's flow record is a row of its own.
FLAG_MESSAGE = 64

@numba.njit(cache=True)
def _split_rows(rows, start_ns, end_ns, src_hi, src_lo, dst_hi, dst_lo, exporter_hi, exporter_lo, bytes, packets, rev_bytes, rev_packets, sampling_rate, in_if, out_if, topic_id, src_port, dst_port, proto, tcp_flags, app_proto, action, dataset, flags):  # pragma: no cover - compiled
    """Rows (FLOW_DTYPE records) into contiguous columns in one pass over memory (numpy would make 24 passes)."""
    for i in range(len(rows)):
        r = rows[i]
        start_ns[i] = r["start_ns"]
        end_ns[i] = r["end_ns"]
        src_hi[i] = r["src_hi"]
        src_lo[i] = r["src_lo"]
        dst_hi[i] = r["dst_hi"]
        dst_lo[i] = r["dst_lo"]
        exporter_hi[i] = r["exporter_hi"]
        exporter_lo[i] = r["exporter_lo"]
        bytes[i] = r["bytes"]
        packets[i] = r["packets"]
        rev_bytes[i] = r["rev_bytes"]
        rev_packets[i] = r["rev_packets"]
        sampling_rate[i] = r["sampling_rate"]
        in_if[i] = r["in_if"]
        out_if[i] = r["out_if"]
        topic_id[i] = r["topic_id"]
        src_port[i] = r["src_port"]
        dst_port[i] = r["dst_port"]
        proto[i] = r["proto"]
        tcp_flags[i] = r["tcp_flags"]
        app_proto[i] = r["app_proto"]
        action[i] = r["action"]
        dataset[i] = r["dataset"]
        flags[i] = r["flags"]


assert tuple(inspect.signature(getattr(_split_rows, "py_func", _split_rows)).parameters)[1:] == COLUMNS, \
    "_split_rows must list FLOW_DTYPE"  # (py_func is absent under NUMBA_DISABLE_JIT=1)


IPV4_MAPPED_HI = np.uint64(0)
IPV4_MAPPED_LO_PREFIX = np.uint64(0x0000FFFF00000000)

_BUILTIN_DATASETS = ("", "netflow.v5", "netflow.v9", "ipfix", "sflow", "pcap")
_dataset_names: list[str] = list(_BUILTIN_DATASETS)
_dataset_ids: dict[str, int] = {n: i for i, n in enumerate(_dataset_names)}


def dataset_id(name: str) -> int:
    """The small integer that stands for ``event.dataset`` name in the ``dataset`` column (interned)."""
    i = _dataset_ids.get(name)
    if i is None:
        if len(_dataset_names) >= 255:
            raise ValueError("too many event.dataset names (255 at most)")
        i = len(_dataset_names)
        _dataset_names.append(name)
        _dataset_ids[name] = i
    return i


def dataset_name(i: int) -> str:
    """The ``event.dataset`` name for a dataset id."""
    return _dataset_names[i]


def ipv4_lo(v4: np.ndarray) -> np.ndarray:
    """Low word of the IPv4-mapped IPv6 address for an array of host-order IPv4 addresses (uint32)."""
    return IPV4_MAPPED_LO_PREFIX | v4.astype(np.uint64)


def ip_to_words(text: str) -> tuple[int, int]:
    """(high, low) words of an IPv4 or IPv6 address given as text; IPv4 comes out IPv4-mapped."""
    addr = ipaddress.ip_address(text)
    if addr.version == 4:
        return 0, 0x0000FFFF00000000 | int(addr)
    value = int(addr)
    return value >> 64, value & 0xFFFFFFFFFFFFFFFF


def words_to_ip(hi: int, lo: int) -> str:
    """Text form of an address stored as (high, low) words; IPv4-mapped addresses print as IPv4."""
    hi = int(hi)
    lo = int(lo)
    if hi == 0 and (lo >> 32) == 0xFFFF:  # dotted quad by hand: ipaddress costs ~2 us an address (alert storms)
        return f"{lo >> 24 & 255}.{lo >> 16 & 255}.{lo >> 8 & 255}.{lo & 255}"
    return str(ipaddress.IPv6Address((hi << 64) | lo))


def bytes_to_words(raw: bytes) -> tuple[int, int]:
    """(high, low) words of a 4- or 16-byte network-order address."""
    if len(raw) == 4:
        return 0, 0x0000FFFF00000000 | int.from_bytes(raw, "big")
    value = int.from_bytes(raw, "big")
    return value >> 64, value & 0xFFFFFFFFFFFFFFFF


@dataclass
class FlowBatch:
    """Equal-length, C-contiguous numpy columns (one per FLOW_DTYPE field) plus the batch's string table."""

    columns: dict[str, np.ndarray]
    strings: list[str] = field(default_factory=lambda: [""])
    #: Row index -> ECS fields beyond the columns (L7 evidence of the flow meter: TLS server name, HTTP path, MQTT
    #: client id, ...), for the JSON edge of this process only: selections, concatenation and transports drop it.
    extra: dict[int, dict] | None = None

    def __len__(self) -> int:
        return len(self.columns["start_ns"])

    def __getattr__(self, name: str) -> np.ndarray:
        try:
            return self.__dict__["columns"][name]
        except KeyError:
            raise AttributeError(name) from None

    @classmethod
    def empty(cls) -> "FlowBatch":
        """A batch with no rows."""
        return cls({name: np.zeros(0, FLOW_DTYPE[name]) for name in COLUMNS})

    @classmethod
    def from_rows(cls, rows: np.ndarray, strings: list[str] | None = None) -> "FlowBatch":
        """A batch whose columns are contiguous copies of a FLOW_DTYPE structured array."""
        cols = {name: np.empty(len(rows), FLOW_DTYPE[name]) for name in COLUMNS}
        if len(rows) < 64:  # not worth a kernel call
            for name in COLUMNS:
                cols[name][:] = rows[name]
        else:
            _split_rows(rows, *cols.values())
        return cls(cols, list(strings) if strings else [""])

    def to_rows(self) -> np.ndarray:
        """The batch as one FLOW_DTYPE structured array (for transport encodings)."""
        out = np.empty(len(self), FLOW_DTYPE)
        for name in COLUMNS:
            out[name] = self.columns[name]
        return out

    def select(self, index: np.ndarray) -> "FlowBatch":
        """The rows picked by a boolean mask or an index array, sharing the string table."""
        return FlowBatch({k: np.ascontiguousarray(v[index]) for k, v in self.columns.items()}, self.strings)

    @staticmethod
    def concat(batches: list["FlowBatch"]) -> "FlowBatch":
        """One batch holding the rows of several, with their string tables merged."""
        batches = [b for b in batches if len(b)]
        if not batches:
            return FlowBatch.empty()
        if len(batches) == 1:
            return batches[0]
        strings = [""]
        index: dict[str, int] = {"": 0}
        topic_parts = []
        for b in batches:
            remap = np.array([index.setdefault(s, len(index)) for s in b.strings], dtype=np.uint32)
            topic_parts.append(remap[b.columns["topic_id"]])
        strings = [""] * len(index)
        for s, i in index.items():
            strings[i] = s
        cols = {name: np.concatenate([b.columns[name] for b in batches]) for name in COLUMNS if name != "topic_id"}
        cols["topic_id"] = np.concatenate(topic_parts)
        return FlowBatch({name: cols[name] for name in COLUMNS}, strings)


class FlowBatchBuilder:
    """A preallocated FLOW_DTYPE buffer that decoders append rows to; ``build()`` then ``reset()`` between batches."""

    def __init__(self, capacity: int = 65536):
        self._buf = np.zeros(max(16, capacity), FLOW_DTYPE)
        self._n = 0
        self._strings: list[str] = [""]
        self._string_ids: dict[str, int] = {"": 0}
        self._extra: dict[int, dict] = {}

    def __len__(self) -> int:
        return self._n

    @property
    def capacity(self) -> int:
        """Rows the buffer holds before it grows."""
        return len(self._buf)

    def reserve(self, k: int, zero: bool = True) -> np.ndarray:
        """A view of the next k rows, which the caller fills; they count as appended.

        Rows are zeroed unless ``zero=False`` (for a kernel that writes every field of every row it keeps).
        """
        need = self._n + k
        if need > len(self._buf):
            grown = np.zeros(max(need, 2 * len(self._buf)), FLOW_DTYPE)
            grown[: self._n] = self._buf[: self._n]
            self._buf = grown
        rows = self._buf[self._n : need]
        if zero:
            rows[...] = 0
        self._n = need
        return rows

    def keep(self, mark: int, mask: np.ndarray) -> int:
        """Of the rows appended since ``mark``, keep those where mask is true (in order); returns how many remain."""
        region = self._buf[mark:self._n]
        kept = region[mask]
        self._buf[mark:mark + len(kept)] = kept
        self._n = mark + len(kept)
        return len(kept)

    def truncate(self, n: int) -> None:
        """Drop the rows appended after the first n (used when a datagram is rejected half-way)."""
        if n < self._n:
            self._n = n

    def intern(self, text: str) -> int:
        """Id of a string (an MQTT topic, say) in this batch's string table."""
        i = self._string_ids.get(text)
        if i is None:
            i = len(self._strings)
            self._strings.append(text)
            self._string_ids[text] = i
        return i

    def annotate(self, row: int, fields: dict) -> None:
        """Attach ECS fields beyond the columns to an appended row (see FlowBatch.extra)."""
        self._extra[row] = fields

    def rows(self) -> np.ndarray:
        """The appended rows as a view of the buffer (valid until the next append or reset)."""
        return self._buf[: self._n]

    @property
    def strings(self) -> list[str]:
        """The string table of the appended rows."""
        return self._strings

    def build(self) -> FlowBatch:
        """The appended rows as a FlowBatch (copied: the builder can be reset and reused)."""
        batch = FlowBatch.from_rows(self._buf[: self._n], self._strings)
        if self._extra:
            batch.extra = {i: f for i, f in self._extra.items() if i < self._n}
        return batch

    def reset(self) -> None:
        """Forget all rows and strings, keeping the buffer."""
        self._n = 0
        self._strings = [""]
        self._string_ids = {"": 0}
        self._extra = {}
