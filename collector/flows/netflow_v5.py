"""NetFlow v5 decoder: a numba kernel over a batch of datagrams writing FlowBatch rows in place.

Times: the header carries the exporter's uptime (ms) and wall clock (unix_secs + unix_nsecs) at export; a record's
First/Last are uptimes (ms), so start = export_time - (SysUptime - First) ms, computed modulo 2**32 so that an uptime
wrap between First and export still gives the right time. Sampling: the low 14 bits of sampling_interval are the
1-in-N interval (mode in the top 2 bits); counters are scaled by N and N is kept in ``sampling_rate``.
Sequence: flow_sequence counts flows, so the next datagram of an engine is expected at sequence + count.

One kernel serves both a single datagram (``decode``) and a batch (``decode_many``, the receive path), so the hot
path pays the dispatch once per batch and there is one implementation to trust.
"""

from __future__ import annotations

import numba
import numpy as np

from analytics.schema import FLAG_NO_PORTS, FlowBatchBuilder, dataset_id
from collector.flows.decoders import DecodeError
from collector.metrics import Counters

HEADER_LEN = 24
RECORD_LEN = 48
#: Cisco's documented maximum number of records in one v5 datagram.
MAX_COUNT = 30

#: Kernel status codes → rejection reasons (0 = decoded).
REASONS = ("", "short_header", "bad_version", "bad_count", "truncated")


@numba.njit(cache=True, inline="always")
def _u16(b, o):
    return (np.uint32(b[o]) << np.uint32(8)) | np.uint32(b[o + 1])


@numba.njit(cache=True, inline="always")
def _u32(b, o):
    return (np.uint32(b[o]) << np.uint32(24)) | (np.uint32(b[o + 1]) << np.uint32(16)) | \
        (np.uint32(b[o + 2]) << np.uint32(8)) | np.uint32(b[o + 3])


@numba.njit(cache=True)
def _decode_batch(buf, offs, lens, ex_hi, ex_lo, rows, dataset, status, hdr):
    """Decode datagrams buf[offs[d]:offs[d]+lens[d]] into rows; per datagram status and (seq, count, engine)."""
    n = 0
    mapped = np.uint64(0x0000FFFF00000000)
    for d in range(len(offs)):
        o = offs[d]
        length = lens[d]
        if length < HEADER_LEN:
            status[d] = 1
            continue
        if _u16(buf, o) != 5:
            status[d] = 2
            continue
        count = _u16(buf, o + 2)
        if count > MAX_COUNT:
            status[d] = 3
            continue
        if length < HEADER_LEN + RECORD_LEN * count:
            status[d] = 4
            continue
        uptime = np.int64(_u32(buf, o + 4))
        export_ns = np.int64(_u32(buf, o + 8)) * 1_000_000_000 + np.int64(_u32(buf, o + 12))
        hdr[d, 0] = _u32(buf, o + 16)
        hdr[d, 1] = count
        hdr[d, 2] = (np.int64(buf[o + 20]) << 8) | np.int64(buf[o + 21])
        interval = np.int64(_u16(buf, o + 22) & np.uint32(0x3FFF))
        rate = interval if interval > 0 else 1
        status[d] = 0
        for r in range(count):
            p = o + HEADER_LEN + RECORD_LEN * r
            row = rows[n]
            first = np.int64(_u32(buf, p + 24))
            last = np.int64(_u32(buf, p + 28))
            # (uptime - first) mod 2**32 ms: how long before export the flow started, robust to uptime wrap.
            row["start_ns"] = export_ns - ((uptime - first) & 0xFFFFFFFF) * 1_000_000
            row["end_ns"] = export_ns - ((uptime - last) & 0xFFFFFFFF) * 1_000_000
            row["src_hi"] = 0
            row["src_lo"] = mapped | np.uint64(_u32(buf, p))
            row["dst_hi"] = 0
            row["dst_lo"] = mapped | np.uint64(_u32(buf, p + 4))
            row["exporter_hi"] = ex_hi[d]
            row["exporter_lo"] = ex_lo[d]
            row["in_if"] = _u16(buf, p + 12)
            row["out_if"] = _u16(buf, p + 14)
            row["packets"] = np.uint64(_u32(buf, p + 16)) * np.uint64(rate)
            row["bytes"] = np.uint64(_u32(buf, p + 20)) * np.uint64(rate)
            row["src_port"] = _u16(buf, p + 32)
            row["dst_port"] = _u16(buf, p + 34)
            row["tcp_flags"] = buf[p + 37]
            proto = buf[p + 38]
            row["proto"] = proto
            row["rev_bytes"] = 0
            row["rev_packets"] = 0
            row["sampling_rate"] = rate
            row["topic_id"] = 0
            row["app_proto"] = 0
            row["action"] = 0
            row["dataset"] = dataset
            row["flags"] = 0 if (proto == 6 or proto == 17 or proto == 132) else FLAG_NO_PORTS
            n += 1
    return n


class NetflowV5Decoder:
    """Decodes NetFlow v5 datagrams and accounts sequence gaps per (exporter, engine type, engine id)."""

    name = "netflow.v5"
    REASONS = REASONS

    def __init__(self, counters: Counters | None = None):
        self.counters = counters if counters is not None else Counters()
        self._dataset = np.uint8(dataset_id(self.name))
        self._next_seq: dict[tuple, int] = {}

    def decode(self, data: bytes, exporter: tuple[int, int], recv_ns: int, builder: FlowBatchBuilder) -> int:
        """Append one datagram's flows to builder; raises DecodeError on a malformed datagram."""
        n, status = self.decode_many([data], [exporter], builder)
        if status[0]:
            raise DecodeError(REASONS[status[0]], f"{len(data)} bytes")
        return n

    def decode_many(self, datagrams: list[bytes], exporters: list[tuple[int, int]],
                    builder: FlowBatchBuilder) -> tuple[int, np.ndarray]:
        """Append the flows of many datagrams; returns (rows appended, per-datagram status: 0 or a REASONS index)."""
        k = len(datagrams)
        lens = np.fromiter((len(d) for d in datagrams), np.int64, k)
        offs = np.zeros(k, np.int64)
        np.cumsum(lens[:-1], out=offs[1:])
        ex = np.array(exporters, np.uint64).reshape(k, 2)
        return self.decode_buffer(np.frombuffer(b"".join(datagrams), np.uint8), offs, lens,
                                  np.ascontiguousarray(ex[:, 0]), np.ascontiguousarray(ex[:, 1]), builder)

    def decode_buffer(self, buf: np.ndarray, offs: np.ndarray, lens: np.ndarray, ex_hi: np.ndarray,
                      ex_lo: np.ndarray, builder: FlowBatchBuilder) -> tuple[int, np.ndarray]:
        """Datagrams already laid out in one receive buffer (the listener's): same result as ``decode_many``."""
        k = len(offs)
        status = np.zeros(k, np.int8)
        hdr = np.zeros((k, 3), np.int64)
        mark = len(builder)
        rows = builder.reserve(MAX_COUNT * k, zero=False)  # the kernel writes every field
        n = _decode_batch(buf, offs, lens, ex_hi, ex_lo, rows, self._dataset, status, hdr)
        builder.truncate(mark + n)
        ok = status == 0
        if ok.any():
            self._account_sequences(ex_hi[ok], ex_lo[ok], hdr[ok])
        return n, status

    def _account_sequences(self, ex_hi: np.ndarray, ex_lo: np.ndarray, hdr: np.ndarray) -> None:
        """Sequence gaps per (exporter, engine), vectorised over one batch's decoded datagrams (in arrival order)."""
        keys = np.stack([ex_hi, ex_lo, hdr[:, 2].astype(np.uint64)], axis=1)
        if (keys == keys[0]).all():
            groups = [(tuple(int(x) for x in keys[0]), slice(None))]
        else:
            uniq, inverse = np.unique(keys, axis=0, return_inverse=True)
            groups = [(tuple(int(x) for x in u), inverse.ravel() == i) for i, u in enumerate(uniq)]
        for (hi, lo, engine), sel in groups:
            seq, count = hdr[sel, 0], hdr[sel, 1]
            exporter = (hi, lo)
            expected = np.empty_like(seq)
            expected[1:] = (seq[:-1] + count[:-1]) & 0xFFFFFFFF
            expected[0] = self._next_seq.get((exporter, engine), seq[0])
            self._next_seq[(exporter, engine)] = int((seq[-1] + count[-1]) & 0xFFFFFFFF)
            gap = (seq - expected) & 0xFFFFFFFF
            self.counters.inc("brokerwatch_netflow_v5_datagrams_total", (exporter,), len(seq))
            ahead = (gap > 0) & (gap < 0x80000000)
            if ahead.any():
                self.counters.inc("brokerwatch_netflow_v5_sequence_lost_total", (exporter,), int(gap[ahead].sum()))
            behind = gap >= 0x80000000  # an older datagram arriving late, or an exporter restart
            if behind.any():
                self.counters.inc("brokerwatch_netflow_v5_sequence_reordered_total", (exporter,), int(behind.sum()))
