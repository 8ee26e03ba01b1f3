"""goflow2 interop: its protobuf ``FlowMessage`` (pb/flow.proto) from a Kafka topic into FlowBatches.

A site that already runs goflow2 (or Akvorado's inlet, which speaks the same messages) can put brokerwatch's
analytics behind it: the analytics role reads the topic named in ``Kafka.topics.goflow2``. goflow2's ``bin``
format writes each message with a varint length in front (protodelim); with the prefix turned off it writes the
bare message. Both are read, and a Kafka message holding several delimited messages gives several rows.

goflow2 keys its Kafka messages by the fields given to ``-transport.kafka.hashing``/``-format.hash``; hash on
``SrcAddr,DstAddr`` so that each pair reaches one analytics worker, as brokerwatch's own flows topic does.
Fields map to the record as DESIGN §3 names them: times in ns, addresses (4 or 16 bytes) as IPv4-mapped words,
bytes/packets scaled by the sampling rate (goflow2 reports them unscaled), the sampler address as the exporter.
"""

from __future__ import annotations

import numpy as np
from google.protobuf.message import DecodeError

from analytics.schema import FLAG_NO_INTERFACES, FLOW_DTYPE, FlowBatch, bytes_to_words, dataset_id
from collector.transport.flowcodec import FlowCodecError
from collector.transport.goflow2pb.flow_pb2 import FlowMessage

#: goflow2's FlowType → event.dataset.
DATASETS = {FlowMessage.SFLOW_5: "sflow", FlowMessage.NETFLOW_V5: "netflow.v5", FlowMessage.NETFLOW_V9: "netflow.v9",
            FlowMessage.IPFIX: "ipfix", FlowMessage.FLOWUNKNOWN: "goflow2"}
#: Reasons a message is rejected (counter labels).
REASONS = ("protobuf", "address", "length")
#: Largest Kafka message taken apart (goflow2 sends one flow a message: a few hundred bytes).
MAX_MESSAGE = 1 << 20


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    """(value, next index) of the varint at buf[i]; (-1, i) when it does not end within 10 bytes or the buffer."""
    value = shift = 0
    for j in range(i, min(i + 10, len(buf))):
        b = buf[j]
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, j + 1
        shift += 7
    return -1, i


def split_messages(data: bytes) -> list[bytes]:
    """The FlowMessages in one Kafka message: varint-delimited ones when the lengths tile it exactly, else one."""
    out, i = [], 0
    while i < len(data):
        n, j = _varint(data, i)
        if n <= 0 or j + n > len(data):
            return [data]
        out.append(data[j:j + n])
        i = j + n
    return out or [data]


def decode_messages(values: list[bytes], counters=None) -> FlowBatch:
    """A FlowBatch from goflow2 Kafka message values; a message that is not a FlowMessage is counted and skipped.

    Raises FlowCodecError only when every message of the call was rejected (the caller counts the reason).
    """
    msgs = []
    reason = "protobuf"
    for value in values:
        if len(value) > MAX_MESSAGE:
            reason = "length"
            _count(counters, reason)
            continue
        for raw in split_messages(bytes(value)):
            try:
                m = FlowMessage.FromString(raw)
            except DecodeError:
                reason = "protobuf"
                _count(counters, reason)
                continue
            if len(m.src_addr) not in (4, 16) or len(m.dst_addr) not in (4, 16) \
                    or len(m.sampler_address) not in (0, 4, 16):
                reason = "address"
                _count(counters, reason)
                continue
            msgs.append(m)
    if not msgs and values:
        raise FlowCodecError(reason, "no goflow2 FlowMessage in the message")
    rows = np.zeros(len(msgs), FLOW_DTYPE)
    if not msgs:
        return FlowBatch.from_rows(rows)
    rate = np.array([max(1, m.sampling_rate) for m in msgs], np.uint64)
    received = np.array([m.time_received_ns for m in msgs], np.int64)
    start = np.array([m.time_flow_start_ns for m in msgs], np.int64)
    end = np.array([m.time_flow_end_ns for m in msgs], np.int64)
    # sFlow carries no flow times: the receive time stands in, as brokerwatch's own sFlow decoder does
    rows["start_ns"] = np.where(start > 0, start, received)
    rows["end_ns"] = np.where(end > 0, end, rows["start_ns"])
    for prefix, attr in (("src", "src_addr"), ("dst", "dst_addr"), ("exporter", "sampler_address")):
        words = np.array([bytes_to_words(getattr(m, attr)) if getattr(m, attr) else (0, 0) for m in msgs],
                         np.uint64).reshape(-1, 2)
        rows[f"{prefix}_hi"], rows[f"{prefix}_lo"] = words[:, 0], words[:, 1]
    rows["bytes"] = np.array([m.bytes for m in msgs], np.uint64) * rate
    rows["packets"] = np.array([m.packets for m in msgs], np.uint64) * rate
    rows["sampling_rate"] = np.minimum(rate, 0xFFFFFFFF)
    for col in ("in_if", "out_if", "src_port", "dst_port", "proto", "tcp_flags"):
        rows[col] = np.array([getattr(m, col) for m in msgs], np.uint64).astype(FLOW_DTYPE[col])
    ids = {t: dataset_id(name) for t, name in DATASETS.items()}
    rows["dataset"] = np.array([ids.get(m.type, ids[FlowMessage.FLOWUNKNOWN]) for m in msgs], np.uint8)
    no_if = (rows["in_if"] == 0) & (rows["out_if"] == 0)
    rows["flags"] = np.where(no_if, FLAG_NO_INTERFACES, 0)
    return FlowBatch.from_rows(rows)


def _count(counters, reason: str) -> None:
    if counters is not None:
        counters.inc("brokerwatch_kafka_decode_errors_total", ("goflow2", reason))
