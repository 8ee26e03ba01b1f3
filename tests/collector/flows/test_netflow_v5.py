"""NetFlow v5: corpus captures against tshark, time and sampling arithmetic, sequence accounting, hostile input."""

from __future__ import annotations

import struct
import subprocess

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from analytics.schema import FlowBatchBuilder, ip_to_words, words_to_ip
from collector.flows.decoders import FlowDecoders
from collector.flows.netflow_v5 import NetflowV5Decoder
from collector.inputs import OfflineSource
from collector.metrics import Counters
from tests.conftest import require_tool

EXPORTER = ip_to_words("127.0.0.1")


def v5_datagram(records, uptime_ms=100_000, unix_secs=1_700_000_000, unix_nsecs=0, seq=0, sampling=0,
                count=None) -> bytes:
    """A NetFlow v5 datagram from dicts with src, dst, sport, dport, proto, pkts, octets, first, last, flags."""
    head = struct.pack(">HHIIIIBBH", 5, len(records) if count is None else count, uptime_ms, unix_secs, unix_nsecs,
                       seq, 0, 0, sampling)
    body = b""
    for r in records:
        body += struct.pack(">4s4s4sHHIIIIHHBBBBHHBBH",
                            bytes(map(int, r["src"].split("."))), bytes(map(int, r["dst"].split("."))), b"\0" * 4,
                            r.get("in", 1), r.get("out", 2), r["pkts"], r["octets"], r["first"], r["last"],
                            r["sport"], r["dport"], 0, r.get("flags", 0x1B), r["proto"], 0, 0, 0, 0, 0, 0)
    return head + body


def decode(data: bytes, decoders: FlowDecoders | None = None):
    decoders = decoders or FlowDecoders()
    builder = FlowBatchBuilder(64)
    n = decoders.decode(data, EXPORTER, 0, builder)
    return n, builder.build(), decoders


REC = dict(src="192.0.2.10", dst="203.0.113.50", sport=40000, dport=1883, proto=6, pkts=10, octets=900,
           first=95_000, last=99_000)


def test_fields_and_absolute_times():
    n, batch, _ = decode(v5_datagram([REC], uptime_ms=100_000, unix_secs=1_700_000_000, unix_nsecs=500_000_000))
    assert n == 1
    export_ns = 1_700_000_000_500_000_000
    assert batch.start_ns[0] == export_ns - 5_000 * 1_000_000
    assert batch.end_ns[0] == export_ns - 1_000 * 1_000_000
    assert words_to_ip(batch.src_hi[0], batch.src_lo[0]) == "192.0.2.10"
    assert words_to_ip(batch.dst_hi[0], batch.dst_lo[0]) == "203.0.113.50"
    assert (batch.src_port[0], batch.dst_port[0], batch.proto[0]) == (40000, 1883, 6)
    assert (batch.bytes[0], batch.packets[0], batch.sampling_rate[0]) == (900, 10, 1)
    assert (batch.in_if[0], batch.out_if[0], batch.tcp_flags[0]) == (1, 2, 0x1B)
    assert words_to_ip(batch.exporter_hi[0], batch.exporter_lo[0]) == "127.0.0.1"


def test_uptime_wrap_between_first_and_export():
    # The flow started 3 s before the 32-bit millisecond uptime wrapped; export is 2 s after the wrap.
    rec = dict(REC, first=(1 << 32) - 3_000, last=1_000)
    n, batch, _ = decode(v5_datagram([rec], uptime_ms=2_000, unix_secs=1_700_000_000))
    assert n == 1
    assert batch.start_ns[0] == 1_700_000_000_000_000_000 - 5_000 * 1_000_000
    assert batch.end_ns[0] == 1_700_000_000_000_000_000 - 1_000 * 1_000_000


def test_sampling_interval_scales_counters_and_is_kept():
    n, batch, _ = decode(v5_datagram([REC], sampling=(1 << 14) | 100))  # mode 1, 1-in-100
    assert (batch.bytes[0], batch.packets[0], batch.sampling_rate[0]) == (90_000, 1_000, 100)


def test_sequence_gap_and_reorder_counted_per_exporter():
    counters = Counters()
    dec = FlowDecoders(counters)
    decode(v5_datagram([REC, REC], seq=100), dec)
    decode(v5_datagram([REC], seq=102), dec)  # in order: 100 + 2
    decode(v5_datagram([REC], seq=110), dec)  # 7 flows lost (103..109)
    decode(v5_datagram([REC], seq=50), dec)  # older: reordered / restart
    assert counters.get("brokerwatch_netflow_v5_sequence_lost_total", (EXPORTER,)) == 7
    assert counters.get("brokerwatch_netflow_v5_sequence_reordered_total", (EXPORTER,)) == 1
    assert counters.get("brokerwatch_netflow_v5_datagrams_total", (EXPORTER,)) == 4


def test_malformed_datagrams_are_rejected_by_reason():
    good = v5_datagram([REC, REC])
    dec = FlowDecoders()
    cases = {
        "short_header": good[:10],
        "truncated": good[:-1],
        "bad_count": v5_datagram([REC], count=31),
    }
    for reason, data in cases.items():
        n, batch, _ = decode(data, dec)
        assert n == 0 and len(batch) == 0, reason
    assert dec.rejected() == {f"netflow.v5.{r}": 1 for r in cases}
    assert decode(b"\x00\x05", dec)[0] == 0  # too short to even sniff
    assert dec.rejected()["unknown.unknown_format"] == 1


def test_rejected_datagram_leaves_no_rows_behind():
    builder = FlowBatchBuilder(8)
    dec = FlowDecoders()
    assert dec.decode(v5_datagram([REC]), EXPORTER, 0, builder) == 1
    assert dec.decode(v5_datagram([REC], count=2), EXPORTER, 0, builder) == 0
    assert len(builder) == 1


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=600))
def test_any_bytes_are_decoded_or_counted(data):
    dec = FlowDecoders()
    datagram = b"\x00\x05" + data
    n, batch, _ = decode(datagram, dec)
    assert n == len(batch)
    empty_but_valid = len(datagram) >= 24 and datagram[2:4] == b"\x00\x00"  # count 0: nothing to reject
    assert (n > 0) + (sum(dec.rejected().values()) == 1) + empty_but_valid == 1


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 24 + 48 * 3 - 1), st.integers(0, 255), st.integers(0, 24 + 48 * 3 - 1))
def test_mutated_valid_datagrams_never_raise(cut, byte, pos):
    good = bytearray(v5_datagram([REC, REC, REC]))
    good[pos] = byte
    n, batch, dec = decode(bytes(good[: max(cut, pos + 1)]))
    assert n == len(batch)


def _tshark_v5(path, decode_as: str | None) -> list[tuple]:
    cmd = [require_tool("tshark"), "-r", str(path), "-T", "fields", "-E", "occurrence=a", "-E", "aggregator=,"]
    if decode_as:
        cmd += ["-d", decode_as]
    for f in ("cflow.srcaddr", "cflow.dstaddr", "cflow.srcport", "cflow.dstport", "cflow.protocol", "cflow.octets",
              "cflow.packets"):
        cmd += ["-e", f]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    flows = []
    for line in out.splitlines():
        cols = [c.split(",") for c in line.split("\t")]
        for i in range(len(cols[0])):
            flows.append((cols[0][i], cols[1][i], int(cols[2][i]), int(cols[3][i]), int(cols[4][i]),
                          int(cols[5][i]), int(cols[6][i])))
    return flows


def _ours(paths) -> list[tuple]:
    src = OfflineSource()
    flows = []
    for b in src.batches([str(p) for p in paths]):
        for i in range(len(b)):
            flows.append((words_to_ip(b.src_hi[i], b.src_lo[i]), words_to_ip(b.dst_hi[i], b.dst_lo[i]),
                          int(b.src_port[i]), int(b.dst_port[i]), int(b.proto[i]), int(b.bytes[i]),
                          int(b.packets[i])))
    return flows


def test_corpus_capture_agrees_with_tshark(corpus):
    path = corpus / "flow_pcaps" / "akvorado_nfv5.pcap"
    theirs = _tshark_v5(path, "udp.port==9990,cflow")
    ours = _ours([path])
    assert len(theirs) == 29
    assert sorted(ours) == sorted(theirs)


def test_corpus_payloads_decode_or_are_rejected(corpus):
    d = corpus / "flow_payloads"
    expected = {"netflow5.dat": 2, "netflow5_test_juniper_mx80.dat": 29, "netflow5_test_microtik.dat": 30}
    for name, count in expected.items():
        assert len(_ours([d / name])) == count, name
    src = OfflineSource()
    for name in ("netflow5_test_invalid01.dat", "netflow5_test_invalid02.dat"):
        assert list(src.batches([str(d / name)])) == []
    assert sum(src.decoders.rejected().values()) == 2


def test_decoder_alone_matches_numpy_view_of_records():
    recs = [dict(REC, src=f"192.0.2.{i}", octets=100 * i + 1, pkts=i + 1, sport=1000 + i) for i in range(30)]
    dec = NetflowV5Decoder()
    builder = FlowBatchBuilder(4)  # grows past its capacity
    assert dec.decode(v5_datagram(recs), EXPORTER, 0, builder) == 30
    b = builder.build()
    assert b.bytes.tolist() == [100 * i + 1 for i in range(30)]
    assert b.packets.tolist() == [i + 1 for i in range(30)]
    assert b.src_port.tolist() == [1000 + i for i in range(30)]
    assert np.all(b.columns["dataset"] == b.columns["dataset"][0])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(["good1", "good30", "trunc", "count", "short", "garbage"]), max_size=40))
def test_batch_path_equals_one_by_one(kinds):
    samples = {
        "good1": v5_datagram([REC], seq=1),
        "good30": v5_datagram([dict(REC, sport=i) for i in range(30)], seq=7, sampling=10),
        "trunc": v5_datagram([REC, REC])[:-5],
        "count": v5_datagram([REC], count=40),
        "short": b"\x00\x05\x00",
        "garbage": b"\x00\x05" + bytes(range(60)),
    }
    data = [samples[k] for k in kinds]
    exporters = [ip_to_words(f"127.0.0.{1 + i % 3}") for i in range(len(data))]
    one, many = FlowDecoders(), FlowDecoders()
    b1, b2 = FlowBatchBuilder(8), FlowBatchBuilder(8)
    n1 = sum(one.decode(d, e, 0, b1) for d, e in zip(data, exporters))
    n2 = many.decode_many(data, exporters, 0, b2)
    assert n1 == n2 == len(b1) == len(b2)
    assert b1.build().to_rows().tobytes() == b2.build().to_rows().tobytes()
    assert one.counters.snapshot() == many.counters.snapshot()


def test_a_block_path_bug_falls_back_to_one_datagram_at_a_time():
    dec = FlowDecoders()
    real = dec.get("netflow.v5")

    class Broken:
        name, REASONS = real.name, real.REASONS

        def decode_buffer(self, *args):
            raise IndexError("bug in the block path")

        def decode(self, data, exporter, recv_ns, builder):
            if data[-1] == 0xEE:
                raise IndexError("bug on this datagram")
            return real.decode(data, exporter, recv_ns, builder)

    dec._decoders["netflow.v5"] = Broken()
    builder = FlowBatchBuilder(8)
    good, bad = v5_datagram([REC]), v5_datagram([REC]) + b"\xee"
    assert dec.decode_many([good, bad, good], [EXPORTER] * 3, 0, builder) == 2
    assert len(builder) == 2
    assert dec.rejected() == {"netflow.v5.malformed": 1}
