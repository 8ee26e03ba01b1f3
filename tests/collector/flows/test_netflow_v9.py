"""NetFlow v9: hand-built packets for template scoping, held data, sampling, times, reduced size, hostile input."""

from __future__ import annotations

import json
import struct

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analytics.schema import FLAG_NO_COUNTERS, FLAG_NO_PACKETS, FlowBatchBuilder, ip_to_words, words_to_ip
from collector.flows.decoders import FlowDecoders
from collector.flows.netflow_v9 import NetflowV9Decoder
from collector.inputs import OfflineSource

EXPORTER_A = ip_to_words("192.0.2.1")
EXPORTER_B = ip_to_words("192.0.2.2")
EXPORT_S = 1_700_000_000
UPTIME = 500_000


def header(nsets: int, seq: int = 0, source_id: int = 0, uptime: int = UPTIME, secs: int = EXPORT_S) -> bytes:
    return struct.pack(">HHIIII", 9, nsets, uptime, secs, seq, source_id)


def flowset(set_id: int, body: bytes, pad: bool = True) -> bytes:
    if pad:
        body += b"\0" * ((-len(body) - 4) % 4)
    return struct.pack(">HH", set_id, 4 + len(body)) + body


def template(tid: int, fields: list[tuple[int, int]]) -> bytes:
    return flowset(0, struct.pack(">HH", tid, len(fields)) + b"".join(struct.pack(">HH", *f) for f in fields))


def options_template(tid: int, scope: list[tuple[int, int]], opts: list[tuple[int, int]]) -> bytes:
    body = struct.pack(">HHH", tid, 4 * len(scope), 4 * len(opts))
    body += b"".join(struct.pack(">HH", *f) for f in scope + opts)
    return flowset(1, body)


def packet(*sets: bytes, **kw) -> bytes:
    return header(len(sets), **kw) + b"".join(sets)


#: A typical IPv4 template: src, dst, sport, dport, proto, bytes, packets, first, last, in, out, flags.
V4_FIELDS = [(8, 4), (12, 4), (7, 2), (11, 2), (4, 1), (1, 4), (2, 4), (22, 4), (21, 4), (10, 2), (14, 2), (6, 1)]


def v4_record(src, dst, sport, dport, proto, octets, pkts, first, last, i_if=3, o_if=4, flags=0x18) -> bytes:
    return struct.pack(">4s4sHHBIIIIHHB", bytes(map(int, src.split("."))), bytes(map(int, dst.split("."))), sport,
                       dport, proto, octets, pkts, first, last, i_if, o_if, flags)


REC1 = ("10.0.0.1", "198.51.100.7", 51000, 1883, 6, 1200, 10, UPTIME - 30_000, UPTIME - 1_000)
REC2 = ("10.0.0.2", "198.51.100.8", 53, 40000, 17, 80, 1, UPTIME - 5_000, UPTIME - 5_000)


def run(packets, exporters=None, decoders=None):
    decoders = decoders or FlowDecoders()
    builder = FlowBatchBuilder(64)
    exporters = exporters or [EXPORTER_A] * len(packets)
    n = sum(decoders.decode(p, e, 0, builder) for p, e in zip(packets, exporters))
    batch = builder.build()
    assert n == len(batch)
    return batch, decoders


def rows(batch):
    c = batch.columns
    return [(words_to_ip(c["src_hi"][i], c["src_lo"][i]), words_to_ip(c["dst_hi"][i], c["dst_lo"][i]),
             int(c["src_port"][i]), int(c["dst_port"][i]), int(c["proto"][i]), int(c["bytes"][i]),
             int(c["packets"][i])) for i in range(len(batch))]


def test_fields_times_and_exporter():
    batch, dec = run([packet(template(256, V4_FIELDS), flowset(256, v4_record(*REC1) + v4_record(*REC2)))])
    assert rows(batch) == [REC1[:7], REC2[:7]]
    export_ns = EXPORT_S * 1_000_000_000
    assert batch.start_ns[0] == export_ns - 30_000 * 1_000_000
    assert batch.end_ns[0] == export_ns - 1_000 * 1_000_000
    assert (batch.in_if[0], batch.out_if[0], batch.tcp_flags[0], batch.sampling_rate[0]) == (3, 4, 0x18, 1)
    assert words_to_ip(batch.exporter_hi[1], batch.exporter_lo[1]) == "192.0.2.1"
    assert dec.rejected() == {}


def test_uptime_wrap_between_first_and_export():
    rec = v4_record(*REC1[:7], first=(1 << 32) - 3_000, last=1_000)
    batch, _ = run([packet(template(256, V4_FIELDS), flowset(256, rec), uptime=2_000)])
    export_ns = EXPORT_S * 1_000_000_000
    assert batch.start_ns[0] == export_ns - 5_000 * 1_000_000
    assert batch.end_ns[0] == export_ns - 1_000 * 1_000_000


def test_export_time_when_record_has_no_times():
    fields = [(8, 4), (12, 4), (1, 4), (2, 4)]
    rec = bytes([10, 0, 0, 1, 10, 0, 0, 2]) + struct.pack(">II", 100, 2)
    batch, _ = run([packet(template(300, fields), flowset(300, rec))])
    assert batch.start_ns[0] == batch.end_ns[0] == EXPORT_S * 1_000_000_000


def test_data_before_template_is_held_then_decoded():
    dec = FlowDecoders()
    data = packet(flowset(256, v4_record(*REC1)), seq=1)
    batch, _ = run([data], decoders=dec)
    assert len(batch) == 0
    held = dec.counters.series("brokerwatch_netflow_v9_data_before_template_total")
    assert held == {(EXPORTER_A,): 1}
    batch, _ = run([packet(template(256, V4_FIELDS), seq=2)], decoders=dec)
    assert rows(batch) == [REC1[:7]]
    assert batch.start_ns[0] == EXPORT_S * 1_000_000_000 - 30_000 * 1_000_000  # the held packet's own header time
    assert dec.counters.get("brokerwatch_netflow_v9_pending_decoded_total", (EXPORTER_A,)) == 1


def test_data_before_its_template_inside_one_packet():
    batch, _ = run([packet(flowset(256, v4_record(*REC2)), template(256, V4_FIELDS), flowset(256, v4_record(*REC1)))])
    assert sorted(rows(batch)) == sorted([REC1[:7], REC2[:7]])


def test_held_data_is_bounded_per_exporter():
    dec = FlowDecoders()
    run([packet(flowset(257 + (i % 50), v4_record(*REC1))) for i in range(400)], decoders=dec)
    v9 = dec.get("netflow.v9")
    assert len(v9.pending[EXPORTER_A]) == 256
    assert dec.counters.get("brokerwatch_netflow_v9_pending_dropped_total", (EXPORTER_A,)) == 400 - 256


def test_same_template_id_from_two_exporters_with_different_layouts():
    # Exporter B's template 256 puts the destination first and has 8-byte counters.
    fields_b = [(12, 4), (8, 4), (11, 2), (7, 2), (4, 1), (1, 8), (2, 8)]
    rec_b = bytes([203, 0, 113, 9, 10, 9, 9, 9]) + struct.pack(">HHBQQ", 8883, 40001, 6, 5_000_000_000, 7)
    pkts = [packet(template(256, V4_FIELDS)), packet(template(256, fields_b)),
            packet(flowset(256, v4_record(*REC1))), packet(flowset(256, rec_b))]
    batch, _ = run(pkts, [EXPORTER_A, EXPORTER_B, EXPORTER_A, EXPORTER_B])
    assert rows(batch) == [REC1[:7], ("10.9.9.9", "203.0.113.9", 40001, 8883, 6, 5_000_000_000, 7)]
    # The netflow package keys templates by id alone: B's template overwrote A's, so A's record comes out wrong.
    from netflow.utils import parse_packet

    templates: dict = {"netflow": {}, "ipfix": {}}
    for p in pkts[:2]:
        parse_packet(p, templates)
    try:
        wrong = [f.data.get("IPV4_SRC_ADDR") for f in parse_packet(pkts[2], templates).flows]
    except struct.error:  # A's 29-byte record read with B's 31-byte layout
        wrong = None
    assert wrong != [REC1[0]]


def test_template_change_inside_one_block_uses_the_layout_in_force():
    short = [(8, 4), (12, 4), (1, 4)]
    rec_short = bytes([10, 1, 1, 1, 10, 2, 2, 2]) + struct.pack(">I", 77)
    pkts = [packet(template(256, V4_FIELDS)), packet(flowset(256, v4_record(*REC1))),
            packet(template(256, short)), packet(flowset(256, rec_short))]
    dec = NetflowV9Decoder()
    builder = FlowBatchBuilder(16)
    buf = np.frombuffer(b"".join(pkts), np.uint8)
    lens = np.array([len(p) for p in pkts], np.int64)
    offs = np.concatenate([[0], np.cumsum(lens)[:-1]]).astype(np.int64)
    ex = np.array([EXPORTER_A] * 4, np.uint64)
    n, status = dec.decode_buffer(buf, offs, lens, ex[:, 0].copy(), ex[:, 1].copy(), builder)
    assert (n, status.tolist()) == (2, [0, 0, 0, 0])
    assert rows(builder.build()) == [REC1[:7], ("10.1.1.1", "10.2.2.2", 0, 0, 0, 77, 0)]


def test_options_sampling_per_sampler_id_scales_counters():
    opt = options_template(260, [(1, 4)], [(48, 1), (49, 1), (50, 4)])
    opt_data = flowset(260, struct.pack(">IBBI", 0, 1, 2, 100) + struct.pack(">IBBI", 0, 2, 2, 1000))
    fields = V4_FIELDS + [(48, 1)]
    recs = v4_record(*REC1) + b"\x01" + v4_record(*REC2) + b"\x02" + v4_record(*REC2) + b"\x09"
    batch, _ = run([packet(opt, opt_data), packet(template(256, fields), flowset(256, recs))])
    assert batch.sampling_rate.tolist() == [100, 1000, 1]  # sampler 9 is unknown: unsampled
    assert batch.bytes.tolist() == [1200 * 100, 80 * 1000, 80]
    assert batch.packets.tolist() == [10 * 100, 1 * 1000, 1]


def test_options_sampling_without_sampler_id_applies_to_the_source_id():
    opt = options_template(260, [(1, 4)], [(34, 4), (35, 1)])
    pkts = [packet(opt, flowset(260, struct.pack(">IIB", 0, 64, 2)), source_id=5),
            packet(template(256, V4_FIELDS), flowset(256, v4_record(*REC1)), source_id=5),
            packet(template(256, V4_FIELDS), flowset(256, v4_record(*REC1)), source_id=6)]
    batch, _ = run(pkts)
    assert batch.sampling_rate.tolist() == [64, 1]
    assert batch.bytes.tolist() == [1200 * 64, 1200]


def test_in_record_sampling_interval():
    fields = V4_FIELDS + [(34, 4)]
    batch, _ = run([packet(template(256, fields), flowset(256, v4_record(*REC1) + struct.pack(">I", 512)))])
    assert (batch.sampling_rate[0], batch.bytes[0], batch.packets[0]) == (512, 1200 * 512, 10 * 512)


def test_reduced_size_encoding_and_ipv6():
    fields = [(27, 16), (28, 16), (7, 2), (11, 2), (4, 1), (1, 3), (2, 1), (10, 1), (14, 1)]
    rec = (ip_bytes("2001:db8::1") + ip_bytes("2001:db8:ffff::2") + struct.pack(">HHB", 1234, 5222, 6)
           + (70_000).to_bytes(3, "big") + bytes([9, 1, 2]))
    batch, _ = run([packet(template(256, fields), flowset(256, rec + rec))])
    assert rows(batch) == [("2001:db8::1", "2001:db8:ffff::2", 1234, 5222, 6, 70_000, 9)] * 2


def ip_bytes(text: str) -> bytes:
    import ipaddress

    return ipaddress.ip_address(text).packed


def test_nsel_counters_and_no_counter_events():
    # ASA NSEL: initiatorOctets (231) carries the bytes; a template without counters flags the row.
    with_bytes = [(8, 4), (12, 4), (7, 2), (11, 2), (4, 1), (231, 4), (232, 4)]
    rec = bytes([10, 0, 0, 9, 10, 0, 0, 10]) + struct.pack(">HHBII", 1000, 61613, 6, 4321, 99)
    no_counters = [(8, 4), (12, 4), (7, 2), (11, 2), (4, 1), (233, 1)]
    rec2 = bytes([10, 0, 0, 9, 10, 0, 0, 10]) + struct.pack(">HHBB", 1000, 61613, 6, 1)
    batch, _ = run([packet(template(256, with_bytes), template(257, no_counters), flowset(256, rec),
                           flowset(257, rec2))])
    assert batch.bytes.tolist() == [4321, 0]
    assert (batch.flags & FLAG_NO_COUNTERS).tolist() == [0, FLAG_NO_COUNTERS]
    assert (batch.flags & FLAG_NO_PACKETS).tolist() == [FLAG_NO_PACKETS, 0]  # bytes known, packets not


def test_nat_capture_flags_records_without_counters(corpus):
    src = OfflineSource()
    batches = list(src.batches([str(corpus / "flow_pcaps" / "akvorado_v9_nat.pcap")]))
    flags = np.concatenate([b.flags for b in batches])
    assert len(flags) > 0
    assert (flags & FLAG_NO_COUNTERS).all()


def test_zero_padding_after_last_flowset():
    pkt = packet(template(256, V4_FIELDS), flowset(256, v4_record(*REC1))) + b"\0" * 200
    batch, dec = run([pkt])
    assert rows(batch) == [REC1[:7]] and dec.rejected() == {}


def test_sequence_lost_counts_export_packets_per_source_id():
    dec = FlowDecoders()
    tpl = template(256, V4_FIELDS)
    run([packet(tpl, seq=10, source_id=1), packet(tpl, seq=11, source_id=1), packet(tpl, seq=15, source_id=1),
         packet(tpl, seq=500, source_id=2)], decoders=dec)
    assert dec.counters.get("brokerwatch_netflow_v9_sequence_lost_total", (EXPORTER_A,)) == 3


def test_hostile_input_rejected_with_specific_reasons():
    cases = {
        "short_header": header(1)[:12],
        "set_overflow": header(1) + struct.pack(">HH", 256, 400) + b"\0" * 20,
        "bad_set_length": header(1) + struct.pack(">HH", 256, 2) + b"\1" * 20,
        "template_id": packet(template(12, V4_FIELDS)),
        "template_field_count": packet(flowset(0, struct.pack(">HH", 256, 0) + b"\1\1\1\1")),
        "template_malformed": packet(flowset(0, struct.pack(">HH", 256, 50) + b"\0\1\0\4")),
        "template_length": packet(template(256, [(1, 0), (2, 0)])),
    }
    for reason, data in cases.items():
        batch, dec = run([data])
        assert len(batch) == 0
        assert dec.rejected() == {f"netflow.v9.{reason}": 1}, reason


def test_hostile_template_rejects_its_datagram_before_any_row():
    bad = packet(flowset(256, v4_record(*REC1)), template(256, V4_FIELDS), template(7, V4_FIELDS))
    batch, dec = run([packet(template(256, V4_FIELDS)), bad])
    assert len(batch) == 0 and dec.rejected() == {"netflow.v9.template_id": 1}


def test_template_cap_per_exporter(monkeypatch):
    from collector.flows import templates as tmod

    monkeypatch.setattr(tmod, "MAX_TEMPLATES_PER_EXPORTER", 3)
    batch, dec = run([packet(*(template(256 + i, V4_FIELDS) for i in range(5)))])
    assert dec.rejected() == {"netflow.v9.template_cap": 1}
    assert len(dec.get("netflow.v9").templates) == 3


def test_state_round_trip_decodes_without_templates():
    dec = FlowDecoders()
    opt = options_template(260, [(1, 4)], [(48, 1), (50, 4)])
    run([packet(opt, flowset(260, struct.pack(">IBI", 0, 1, 10)), template(256, V4_FIELDS + [(48, 1)]), seq=1)],
        decoders=dec)
    state = json.loads(json.dumps(dec.get("netflow.v9").export_state()))
    fresh = FlowDecoders()
    fresh.get("netflow.v9").import_state(state)
    data = packet(flowset(256, v4_record(*REC1) + b"\x01"), seq=3)
    batch, _ = run([data], decoders=fresh)
    assert rows(batch) == [REC1[:5] + (12_000, 100)]
    assert fresh.counters.get("brokerwatch_netflow_v9_sequence_lost_total", (EXPORTER_A,)) == 1


VALID = packet(template(256, V4_FIELDS), flowset(256, v4_record(*REC1) + v4_record(*REC2)),
               options_template(260, [(1, 4)], [(34, 4)]), flowset(260, struct.pack(">II", 0, 10)))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600))
def test_any_bytes_decode_or_are_counted(data):
    dec = FlowDecoders()
    builder = FlowBatchBuilder(64)
    n = dec.decode(b"\x00\x09" + data, EXPORTER_A, 0, builder, hint="netflow.v9")
    check_outcome(dec, builder, n)


def check_outcome(dec: FlowDecoders, builder: FlowBatchBuilder, n: int) -> None:
    """Records, or one rejection with a specific reason (``malformed`` means an exception leaked: a bug)."""
    rejected = dec.rejected()
    assert n == len(builder)
    assert sum(rejected.values()) in (0, 1)
    assert not any(k.endswith(".malformed") for k in rejected), rejected
    if rejected:
        assert n == 0


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)), min_size=1, max_size=6),
       st.integers(0, len(VALID)))
def test_mutated_valid_packets_decode_or_are_counted(edits, cut):
    data = bytearray(VALID)
    for pos, value in edits:
        data[pos] = value
    dec = FlowDecoders()
    builder = FlowBatchBuilder(64)
    n = dec.decode(bytes(data[:max(cut, 4)]), EXPORTER_A, 0, builder, hint="netflow.v9")
    check_outcome(dec, builder, n)


def test_row_flags_for_icmp_and_missing_interfaces():
    from analytics.schema import FLAG_NO_INTERFACES, FLAG_NO_PORTS

    icmp = ("10.0.0.3", "10.0.0.4", 0, 0x0800, 1, 84, 1, UPTIME - 10, UPTIME - 10)
    no_if = [(8, 4), (12, 4), (7, 2), (11, 2), (4, 1), (1, 4), (2, 4)]
    rec = bytes([10, 0, 0, 5, 10, 0, 0, 6]) + struct.pack(">HHBII", 5000, 4222, 6, 10, 1)
    batch, _ = run([packet(template(256, V4_FIELDS), template(257, no_if),
                           flowset(256, v4_record(*REC1) + v4_record(*icmp)), flowset(257, rec))])
    assert batch.flags.tolist() == [0, FLAG_NO_PORTS, FLAG_NO_INTERFACES]
    assert batch.topic_id.tolist() == batch.app_proto.tolist() == batch.action.tolist() == [0, 0, 0]


def test_held_data_and_templates_bounded_across_exporters(monkeypatch):
    from collector.flows import templates as tmod

    monkeypatch.setattr(tmod, "MAX_PENDING_EXPORTERS", 2)
    exporters = [ip_to_words(f"192.0.2.{i}") for i in range(1, 5)]
    dec = FlowDecoders()
    run([packet(flowset(256, v4_record(*REC1)))] * 4, exporters, decoders=dec)
    v9 = dec.get("netflow.v9")
    assert list(v9.pending) == exporters[2:]
    assert dec.counters.get("brokerwatch_netflow_v9_pending_dropped_total", (exporters[0],)) == 1
    batch, _ = run([packet(template(256, V4_FIELDS))], [exporters[3]], decoders=dec)
    assert rows(batch) == [REC1[:7]] and list(v9.pending) == exporters[2:3]
    monkeypatch.setattr(tmod, "MAX_TEMPLATES_TOTAL", 2)
    run([packet(template(257, V4_FIELDS))], [exporters[0]], decoders=dec)
    run([packet(template(258, V4_FIELDS))], [exporters[1]], decoders=dec)
    assert dec.rejected() == {"netflow.v9.template_cap": 1} and len(v9.templates) == 2


def test_a_decoder_bug_in_the_block_path_is_contained_to_its_datagram(monkeypatch):
    # FlowDecoders calls decode_buffer without a guard: a bug on one datagram must cost that datagram only.
    dec = FlowDecoders()
    run([packet(template(256, V4_FIELDS))], [EXPORTER_A], decoders=dec)
    run([packet(template(256, V4_FIELDS))], [EXPORTER_B], decoders=dec)
    v9 = dec.get("netflow.v9")
    real = v9._flow_rows

    def buggy(t, key, *args):
        if key[:2] == EXPORTER_B:
            raise OverflowError("simulated decoder bug")
        return real(t, key, *args)

    monkeypatch.setattr(v9, "_flow_rows", buggy)
    builder = FlowBatchBuilder(16)
    data = packet(flowset(256, v4_record(*REC1)))
    n = dec.decode_many([data, data, data], [EXPORTER_A, EXPORTER_B, EXPORTER_A], 0, builder)
    assert n == 2 and rows(builder.build()) == [REC1[:7]] * 2
    assert dec.rejected() == {"netflow.v9.malformed": 1}


def test_nsel_create_and_event_times():
    # NF_F_FLOW_CREATE_TIME_MSEC (152) starts the record, NF_F_EVENT_TIME_MSEC (323) ends it; the event alone does both.
    both = [(8, 4), (12, 4), (152, 8), (323, 8)]
    event_only = [(8, 4), (12, 4), (323, 8)]
    addrs = bytes([10, 0, 0, 1, 10, 0, 0, 2])
    t0 = EXPORT_S * 1000 - 5000
    batch, _ = run([packet(template(256, both), template(257, event_only),
                           flowset(256, addrs + struct.pack(">QQ", t0, t0 + 2030)),
                           flowset(257, addrs + struct.pack(">Q", t0 + 10)))])
    assert batch.start_ns.tolist() == [t0 * 10**6, (t0 + 10) * 10**6]
    assert batch.end_ns.tolist() == [(t0 + 2030) * 10**6, (t0 + 10) * 10**6]


def test_options_sampling_scoped_to_an_interface():
    # Options scope Interface (v9 scope type 2): the rate applies to flows entering that interface only.
    opt = options_template(260, [(2, 4)], [(34, 4)])
    opt_data = flowset(260, struct.pack(">II", 3, 50) + struct.pack(">II", 7, 500))
    recs = v4_record(*REC1, i_if=3) + v4_record(*REC1, i_if=7) + v4_record(*REC1, i_if=9)
    dec = FlowDecoders()
    batch, _ = run([packet(opt, opt_data), packet(template(256, V4_FIELDS), flowset(256, recs))], decoders=dec)
    assert batch.sampling_rate.tolist() == [50, 500, 1]
    assert batch.bytes.tolist() == [1200 * 50, 1200 * 500, 1200]
    fresh = FlowDecoders()
    fresh.get("netflow.v9").import_state(json.loads(json.dumps(dec.get("netflow.v9").export_state())))
    batch, _ = run([packet(flowset(256, recs))], decoders=fresh)
    assert batch.sampling_rate.tolist() == [50, 500, 1]
