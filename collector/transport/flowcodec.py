"""The wire format of the ``brokerwatch.flows`` Kafka topic: FlowBatches as a compact, versioned columnar binary.

A message is one batch of rows that share a partition (see ``partition_of``)::

    header   magic "BWFL", version, row count, field count, descriptor length/hash, table lengths
    fields   the descriptor: "name:typestr;..." (numpy little-endian type strings, e.g. "start_ns:<i8")
    columns  each field's values, rows x itemsize bytes, in descriptor order
    strings  the batch's string table (topic names), as the channel carries it (uint32 lengths + UTF-8)
    datasets the event.dataset names of the dataset ids 0..max used, same encoding

The descriptor is written from ``FLOW_DTYPE`` itself, so a column added to the record travels without a change
here; a reader takes the fields it knows by name (converting a type it can hold), zero-fills the ones a message
lacks, and ignores the ones it does not know. Strings and dataset names travel by name: the dataset-id table is
per process. Nothing is pickled. ``decode`` raises ``FlowCodecError(reason)`` for anything it cannot read; callers
count the reason.

The JSON option (``encode_json``) writes one ECS flow record a message, for consumers other than brokerwatch;
``decode_json`` reads those records back into a batch.
"""

from __future__ import annotations

import hashlib
import struct

import numpy as np

from analytics.schema import (APP_PROTOCOL_ID, COLUMNS, FLAG_NO_COUNTERS, FLAG_NO_INTERFACES, FLAG_NO_PACKETS,
                              FLAG_NO_PORTS, ACTION_ID, FLOW_DTYPE, FlowBatch, dataset_id, dataset_name, ip_to_words)
from collector.transport.channel import ChannelError, decode_strings, encode_strings

MAGIC = b"BWFL"
VERSION = 1
#: magic, version, flags, rows, fields, descriptor bytes, descriptor hash, strings bytes/count, datasets bytes/count.
HEADER = struct.Struct("<4sHHIHHQIIII")
#: A corrupt header must not make a reader allocate without bound.
MAX_ROWS = 1 << 24
#: Field types a reader accepts: little-endian (or single-byte) integers of up to 8 bytes.
_INT_KINDS = "iu"

#: Reasons ``decode`` rejects a message for (the counter label).
REASONS = ("short", "magic", "version", "descriptor", "size", "strings", "datasets")


class FlowCodecError(Exception):
    """A flows message that cannot be read; ``reason`` is one of REASONS."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def describe(dtype: np.dtype) -> bytes:
    """The descriptor of a record dtype: "name:typestr" for each field, in order."""
    parts = []
    for name in dtype.names:
        t = dtype[name].newbyteorder("<") if dtype[name].byteorder == ">" else dtype[name]
        parts.append(f"{name}:{t.str.replace('|', '<')}")
    return ";".join(parts).encode()


_DESCRIPTOR = describe(FLOW_DTYPE)
_DESCRIPTOR_HASH = int.from_bytes(hashlib.blake2b(_DESCRIPTOR, digest_size=8).digest(), "little")
_plans: dict[tuple[int, bytes], list[tuple[str, np.dtype]]] = {}
_dataset_maps: dict[tuple[str, ...], np.ndarray] = {}


def _plan(desc: bytes, desc_hash: int) -> list[tuple[str, np.dtype]]:
    """The (name, type) of each field a message carries (cached per descriptor)."""
    plan = _plans.get((desc_hash, desc))
    if plan is not None:
        return plan
    plan = []
    try:
        for part in desc.decode("ascii").split(";"):
            name, _, typestr = part.partition(":")
            t = np.dtype(typestr)
            if not name or t.kind not in _INT_KINDS or t.itemsize > 8 or t.byteorder == ">":
                raise ValueError(part)
            plan.append((name, t))
    except (UnicodeDecodeError, ValueError, TypeError) as exc:
        raise FlowCodecError("descriptor", str(exc)[:80]) from None
    if len({n for n, _ in plan}) != len(plan):
        raise FlowCodecError("descriptor", "a field named twice")
    if len(_plans) < 64:  # a handful of record layouts live at once at most (a rolling upgrade)
        _plans[(desc_hash, desc)] = plan
    return plan


def encode(rows: np.ndarray, strings: list[str]) -> bytes:
    """One message from FLOW_DTYPE rows (a structured array) and their string table."""
    return _pack(len(rows), [rows[name] for name in COLUMNS], strings)


def encode_batch(batch: FlowBatch) -> bytes:
    """One message from a FlowBatch (its columns are written as they are)."""
    return _pack(len(batch), [batch.columns[name] for name in COLUMNS], batch.strings)


def _pack(n: int, columns: list[np.ndarray], strings: list[str]) -> bytes:
    sblob, scount = encode_strings(strings)
    used = int(columns[COLUMNS.index("dataset")].max()) + 1 if n else 1
    dblob, dcount = encode_strings([dataset_name(i) for i in range(used)])
    head = HEADER.pack(MAGIC, VERSION, 0, n, len(COLUMNS), len(_DESCRIPTOR), _DESCRIPTOR_HASH,
                       len(sblob), scount, len(dblob), dcount)
    return b"".join([head, _DESCRIPTOR, *(np.ascontiguousarray(c).data for c in columns), sblob, dblob])


def decode(data: bytes | memoryview) -> FlowBatch:
    """The FlowBatch in one message; FlowCodecError(reason) when it cannot be read."""
    view = memoryview(data)
    if len(view) < HEADER.size:
        raise FlowCodecError("short", f"{len(view)} bytes")
    magic, version, _flags, n, nfields, dlen, dhash, slen, scount, tlen, tcount = HEADER.unpack_from(view)
    if magic != MAGIC:
        raise FlowCodecError("magic")
    if version != VERSION:
        raise FlowCodecError("version", str(version))
    if n > MAX_ROWS:
        raise FlowCodecError("size", f"{n} rows")
    off = HEADER.size
    plan = _plan(bytes(view[off:off + dlen]), dhash)
    if len(plan) != nfields:
        raise FlowCodecError("descriptor", f"{len(plan)} fields described, {nfields} announced")
    off += dlen
    width = sum(t.itemsize for _, t in plan)
    if off + n * width + slen + tlen != len(view):
        raise FlowCodecError("size", f"{len(view)} bytes for {n} rows of {width}")
    found = {}
    for name, t in plan:
        found[name] = np.frombuffer(view, t, n, off)
        off += n * t.itemsize
    cols = {}
    for name in COLUMNS:
        want = FLOW_DTYPE[name]
        src = found.get(name)
        # astype copies: the columns outlive the message buffer; a type the local record holds differently is cast
        cols[name] = np.zeros(n, want) if src is None else src.astype(want)
    try:
        strings = decode_strings(view[off:off + slen], scount)
    except ChannelError as exc:
        raise FlowCodecError("strings", str(exc)) from None
    if n and int(cols["topic_id"].max()) >= len(strings):
        raise FlowCodecError("strings", "a topic id beyond the string table")
    off += slen
    try:
        names = tuple(decode_strings(view[off:off + tlen], tcount))
    except ChannelError as exc:
        raise FlowCodecError("datasets", str(exc)) from None
    if n:
        ds = cols["dataset"]
        if int(ds.max()) >= len(names):
            raise FlowCodecError("datasets", "a dataset id beyond the table")
        cols["dataset"] = _dataset_map(names)[ds]
    return FlowBatch(cols, strings)


def _dataset_map(names: tuple[str, ...]) -> np.ndarray:
    """The sender's dataset ids → this process's (by name)."""
    m = _dataset_maps.get(names)
    if m is None:
        try:
            m = np.array([dataset_id(name) for name in names], FLOW_DTYPE["dataset"])
        except ValueError as exc:  # more than 255 names: a hostile table
            raise FlowCodecError("datasets", str(exc)) from None
        if len(_dataset_maps) < 256:
            _dataset_maps[names] = m
    return m


# ------------------------------------------------------------------------------------------------ partitions

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: every input bit reaches every output bit (uint64 arithmetic wraps)."""
    x = x ^ (x >> np.uint64(30))
    x = x * _M1
    x = x ^ (x >> np.uint64(27))
    x = x * _M2
    return x ^ (x >> np.uint64(31))


def pair_hash(src_hi, src_lo, dst_hi, dst_lo) -> np.ndarray:
    """A 64-bit hash of each (source, destination) address pair, the same in every process and release."""
    with np.errstate(over="ignore"):
        h = _mix(np.asarray(src_hi, np.uint64) ^ _M1)
        for w in (src_lo, dst_hi, dst_lo):
            h = _mix(h ^ np.asarray(w, np.uint64))
    return h


def partition_of(cols, partitions: int) -> np.ndarray:
    """The partition of each row: its (source, destination) pair's hash modulo the partition count."""
    h = pair_hash(cols["src_hi"], cols["src_lo"], cols["dst_hi"], cols["dst_lo"])
    return (h % np.uint64(partitions)).astype(np.int64)


def split_by_partition(rows: np.ndarray, partitions: int) -> list[tuple[int, np.ndarray]]:
    """(partition, rows) for each partition that has rows: one stable sort and one gather, not a loop over rows."""
    if len(rows) == 0:
        return []
    part = partition_of(rows, partitions)
    order = np.argsort(part, kind="stable")
    counts = np.bincount(part, minlength=partitions)
    # gathered as opaque fixed-size records: numpy's field-by-field gather of a structured array is 10x slower
    void = np.dtype((np.void, rows.dtype.itemsize))
    grouped = np.ascontiguousarray(rows).view(void)[order].view(rows.dtype)
    ends = np.cumsum(counts)
    return [(p, grouped[ends[p] - counts[p]:ends[p]]) for p in np.flatnonzero(counts).tolist()]


# ------------------------------------------------------------------------------------------------ JSON option

def encode_json(rows: np.ndarray, strings: list[str]) -> list[bytes]:
    """One ECS flow record (JSON, as ``brokerwatch decode`` prints it) per row."""
    from collector.ecs import dumps, flow_records

    return [dumps(r).encode() for r in flow_records(FlowBatch.from_rows(rows, strings))]


def _ns(text: str) -> int:
    import datetime as dt

    return int(dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1_000_000) * 1000


def decode_json(records: list[dict]) -> FlowBatch:
    """A batch from ECS flow records as ``encode_json`` writes them; KeyError/ValueError/TypeError when one is not."""
    n = len(records)
    rows = np.zeros(n, FLOW_DTYPE)
    strings = [""]
    index = {"": 0}
    for i, r in enumerate(records):
        ev, src, dst, net, obs = r["event"], r["source"], r["destination"], r["network"], r.get("observer", {})
        row = rows[i]
        row["start_ns"], row["end_ns"] = _ns(ev["start"]), _ns(ev["end"])
        row["src_hi"], row["src_lo"] = ip_to_words(src["ip"])
        row["dst_hi"], row["dst_lo"] = ip_to_words(dst["ip"])
        if "ip" in obs:
            row["exporter_hi"], row["exporter_lo"] = ip_to_words(obs["ip"])
        flags = 0
        if "port" in dst:
            row["src_port"], row["dst_port"] = int(src.get("port", 0)), int(dst["port"])
        else:
            flags |= FLAG_NO_PORTS
        if "bytes" in net:
            row["bytes"] = int(net["bytes"])
            if "packets" in net:
                row["packets"] = int(net["packets"])
            else:
                flags |= FLAG_NO_PACKETS
        else:
            flags |= FLAG_NO_COUNTERS
        if "ingress" in obs:
            row["in_if"] = int(obs["ingress"]["interface"]["id"])
            row["out_if"] = int(obs.get("egress", {}).get("interface", {}).get("id", 0))
        else:
            flags |= FLAG_NO_INTERFACES
        row["flags"] = flags
        row["proto"] = int(net["iana_number"])
        row["tcp_flags"] = int(r.get("tcp_flags", 0))
        row["app_proto"] = APP_PROTOCOL_ID.get(net.get("protocol", ""), 0)
        row["action"] = ACTION_ID.get(ev.get("action", ""), 0)
        row["dataset"] = dataset_id(str(ev["dataset"]))
        row["sampling_rate"] = int(r.get("brokerwatch", {}).get("sampling_rate", 1))
        topic = r.get("mqtt", {}).get("topic")
        if topic:
            row["topic_id"] = index.setdefault(str(topic), len(index))
            if len(strings) < len(index):
                strings.append(str(topic))
    return FlowBatch.from_rows(rows, strings)
