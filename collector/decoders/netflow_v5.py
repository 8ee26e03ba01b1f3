"""NetFlow v5 decoder: one numpy view over the fixed 48-byte records of a datagram, no per-record Python.

Times: the header carries the exporter's uptime (ms) and wall clock (unix_secs + unix_nsecs) at export; a record's
First/Last are uptimes (ms), so start = export_time - (SysUptime - First) ms, computed modulo 2**32 so that an uptime
wrap between First and export still gives the right time. Sampling: the low 14 bits of sampling_interval are the
1-in-N interval (mode in the top 2 bits); counters are scaled by N and N is kept in ``sampling_rate``.
Sequence: flow_sequence counts flows, so the next datagram of an engine is expected at sequence + count.
"""

from __future__ import annotations

import numpy as np

from analytics.schema import FLAG_NO_PORTS, FlowBatchBuilder, dataset_id, ipv4_lo
from collector.decoders import DecodeError
from collector.metrics import Counters

HEADER_DTYPE = np.dtype(
    [
        ("version", ">u2"),
        ("count", ">u2"),
        ("sys_uptime", ">u4"),
        ("unix_secs", ">u4"),
        ("unix_nsecs", ">u4"),
        ("flow_sequence", ">u4"),
        ("engine_type", "u1"),
        ("engine_id", "u1"),
        ("sampling_interval", ">u2"),
    ]
)
RECORD_DTYPE = np.dtype(
    [
        ("srcaddr", ">u4"),
        ("dstaddr", ">u4"),
        ("nexthop", ">u4"),
        ("input", ">u2"),
        ("output", ">u2"),
        ("dPkts", ">u4"),
        ("dOctets", ">u4"),
        ("first", ">u4"),
        ("last", ">u4"),
        ("srcport", ">u2"),
        ("dstport", ">u2"),
        ("pad1", "u1"),
        ("tcp_flags", "u1"),
        ("prot", "u1"),
        ("tos", "u1"),
        ("src_as", ">u2"),
        ("dst_as", ">u2"),
        ("src_mask", "u1"),
        ("dst_mask", "u1"),
        ("pad2", ">u2"),
    ]
)
assert HEADER_DTYPE.itemsize == 24 and RECORD_DTYPE.itemsize == 48

#: Cisco's documented maximum number of records in one v5 datagram.
MAX_COUNT = 30
_MS = np.int64(1_000_000)
_WRAP = np.uint64(1 << 32)


class NetflowV5Decoder:
    """Decodes NetFlow v5 datagrams and accounts sequence gaps per (exporter, engine type, engine id)."""

    name = "netflow.v5"

    def __init__(self, counters: Counters | None = None):
        self.counters = counters if counters is not None else Counters()
        self._dataset = dataset_id(self.name)
        self._next_seq: dict[tuple, int] = {}

    def decode(self, data: bytes, exporter: tuple[int, int], recv_ns: int, builder: FlowBatchBuilder) -> int:
        """Append the datagram's flows to builder; raises DecodeError on a malformed datagram."""
        if len(data) < HEADER_DTYPE.itemsize:
            raise DecodeError("short_header", f"{len(data)} bytes")
        hdr = np.frombuffer(data, HEADER_DTYPE, 1)[0]
        if int(hdr["version"]) != 5:
            raise DecodeError("bad_version", str(int(hdr["version"])))
        count = int(hdr["count"])
        if count > MAX_COUNT:
            raise DecodeError("bad_count", f"count {count} > {MAX_COUNT}")
        if len(data) < HEADER_DTYPE.itemsize + count * RECORD_DTYPE.itemsize:
            raise DecodeError("truncated", f"count {count} needs {24 + 48 * count} bytes, have {len(data)}")
        self._account_sequence(exporter, hdr, count)
        if count == 0:
            return 0
        rec = np.frombuffer(data, RECORD_DTYPE, count, HEADER_DTYPE.itemsize)

        export_ns = np.int64(hdr["unix_secs"]) * np.int64(1_000_000_000) + np.int64(hdr["unix_nsecs"])
        uptime = np.uint64(hdr["sys_uptime"])
        # (uptime - first) mod 2**32 ms: how long before export the flow started, robust to uptime wrap.
        start_age = ((uptime + _WRAP - rec["first"].astype(np.uint64)) % _WRAP).astype(np.int64)
        end_age = ((uptime + _WRAP - rec["last"].astype(np.uint64)) % _WRAP).astype(np.int64)
        interval = int(hdr["sampling_interval"]) & 0x3FFF
        rate = interval if interval > 0 else 1

        rows = builder.reserve(count)
        rows["start_ns"] = export_ns - start_age * _MS
        rows["end_ns"] = export_ns - end_age * _MS
        rows["src_lo"] = ipv4_lo(rec["srcaddr"])
        rows["dst_lo"] = ipv4_lo(rec["dstaddr"])
        rows["exporter_hi"] = exporter[0]
        rows["exporter_lo"] = exporter[1]
        rows["src_port"] = rec["srcport"]
        rows["dst_port"] = rec["dstport"]
        rows["proto"] = rec["prot"]
        rows["tcp_flags"] = rec["tcp_flags"]
        rows["bytes"] = rec["dOctets"].astype(np.uint64) * np.uint64(rate)
        rows["packets"] = rec["dPkts"].astype(np.uint64) * np.uint64(rate)
        rows["sampling_rate"] = rate
        rows["in_if"] = rec["input"]
        rows["out_if"] = rec["output"]
        rows["dataset"] = self._dataset
        portless = (rec["prot"] != 6) & (rec["prot"] != 17) & (rec["prot"] != 132)
        if portless.any():
            rows["flags"][portless] |= FLAG_NO_PORTS
        return count

    def _account_sequence(self, exporter: tuple[int, int], hdr: np.void, count: int) -> None:
        key = (exporter, int(hdr["engine_type"]), int(hdr["engine_id"]))
        seq = int(hdr["flow_sequence"])
        expected = self._next_seq.get(key)
        self._next_seq[key] = (seq + count) & 0xFFFFFFFF
        self.counters.inc("brokerwatch_netflow_v5_datagrams_total", (exporter,))
        if expected is None or seq == expected:
            return
        gap = (seq - expected) & 0xFFFFFFFF
        if gap < 0x80000000:
            self.counters.inc("brokerwatch_netflow_v5_sequence_lost_total", (exporter,), gap)
        else:  # an older datagram arriving late, or an exporter restart
            self.counters.inc("brokerwatch_netflow_v5_sequence_reordered_total", (exporter,))
