"""IPFIX: variable-length and enterprise fields, reduced size, withdrawal, every time form, options sampling,
sequence accounting, hostile messages, the TCP framer, state round trip."""

from __future__ import annotations

import ipaddress
import json
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analytics.schema import FlowBatchBuilder, ip_to_words, words_to_ip
from collector.flows.decoders import DecodeError, FlowDecoders
from collector.flows.ipfix import IpfixStreamFramer
from collector.inputs import OfflineSource

EXPORTER = ip_to_words("192.0.2.1")
EXPORT_S = 1_700_000_000
NTP = 2_208_988_800


def message(*sets: bytes, seq: int = 0, domain: int = 1, secs: int = EXPORT_S) -> bytes:
    body = b"".join(sets)
    return struct.pack(">HHIII", 10, 16 + len(body), secs, seq, domain) + body


def ipfix_set(set_id: int, body: bytes) -> bytes:
    return struct.pack(">HH", set_id, 4 + len(body)) + body


def field_specs(fields) -> bytes:
    out = b""
    for f in fields:
        fid, length = f[0], f[1]
        pen = f[2] if len(f) > 2 else 0
        out += struct.pack(">HH", fid | (0x8000 if pen else 0), length) + (struct.pack(">I", pen) if pen else b"")
    return out


def template(tid: int, fields) -> bytes:
    return ipfix_set(2, struct.pack(">HH", tid, len(fields)) + field_specs(fields))


def options_template(tid: int, scope, opts) -> bytes:
    return ipfix_set(3, struct.pack(">HHH", tid, len(scope) + len(opts), len(scope)) + field_specs(scope + opts))


def varlen(value: bytes, long: bool = False) -> bytes:
    if long or len(value) >= 255:
        return b"\xff" + struct.pack(">H", len(value)) + value
    return bytes([len(value)]) + value


def v4(text: str) -> bytes:
    return ipaddress.ip_address(text).packed


BASIC = [(8, 4), (12, 4), (7, 2), (11, 2), (4, 1), (1, 8), (2, 8)]


def basic(src, dst, sport, dport, proto, octets, pkts) -> bytes:
    return v4(src) + v4(dst) + struct.pack(">HHBQQ", sport, dport, proto, octets, pkts)


R1 = ("10.0.0.1", "198.51.100.7", 51000, 1883, 6, 1200, 10)
R2 = ("10.0.0.2", "198.51.100.8", 40000, 5222, 6, 64, 1)


def run(msgs, decoders=None):
    decoders = decoders or FlowDecoders()
    builder = FlowBatchBuilder(64)
    n = sum(decoders.decode(m, EXPORTER, 0, builder) for m in msgs)
    batch = builder.build()
    assert n == len(batch)
    return batch, decoders


def rows(batch):
    c = batch.columns
    return [(words_to_ip(c["src_hi"][i], c["src_lo"][i]), words_to_ip(c["dst_hi"][i], c["dst_lo"][i]),
             int(c["src_port"][i]), int(c["dst_port"][i]), int(c["proto"][i]), int(c["bytes"][i]),
             int(c["packets"][i])) for i in range(len(batch))]


def test_basic_records_and_export_time_fallback():
    batch, dec = run([message(template(256, BASIC), ipfix_set(256, basic(*R1) + basic(*R2)))])
    assert rows(batch) == [R1, R2]
    assert batch.start_ns.tolist() == [EXPORT_S * 10**9] * 2
    assert dec.rejected() == {}


def test_variable_length_fields_short_and_long_forms():
    fields = [(8, 4), (82, 65535), (12, 4), (96, 65535), (7, 2), (11, 2), (4, 1), (1, 4), (2, 4)]

    def rec(r, name: bytes, app: bytes, long: bool):
        return (v4(r[0]) + varlen(name) + v4(r[1]) + varlen(app, long) + struct.pack(">HHBII", *r[2:]))

    data = rec(R1, b"eth0", b"x" * 300, False) + rec(R2, b"", b"mqtt", True) + b"\0\0"  # 2 bytes of padding
    batch, dec = run([message(template(300, fields), ipfix_set(300, data))])
    assert rows(batch) == [R1, R2]
    assert dec.rejected() == {}


def test_variable_length_record_running_past_its_set_is_rejected():
    fields = [(8, 4), (82, 65535), (12, 4)]
    data = v4("10.0.0.1") + b"\x40" + b"abc"  # says 64 bytes, has 3
    batch, dec = run([message(template(300, fields), ipfix_set(300, data + b"\0" * 6))])
    assert len(batch) == 0
    assert dec.rejected() == {"ipfix.varlen_overflow": 1}


def test_enterprise_elements_are_not_iana_elements():
    # PEN 29305 id 1 (reverseOctetDeltaCount) and PEN 2636 id 8 must not be read as octetDeltaCount / source.
    fields = [(8, 4, 2636), (8, 4), (12, 4), (1, 8, 29305), (1, 8), (2, 8), (137, 8, 2636)]
    data = v4("1.1.1.1") + v4(R1[0]) + v4(R1[1]) + struct.pack(">QQQQ", 999_999, 1200, 10, 5)
    batch, _ = run([message(template(256, fields), ipfix_set(256, data))])
    assert rows(batch) == [(R1[0], R1[1], 0, 0, 0, 1200, 10)]


def test_netflow_package_conflates_enterprise_ids(corpus):
    """ipfixprobe exports PEN 29305 id 1 (reverse octets) beside IANA 1; the package reads it as octetDeltaCount."""
    from netflow.utils import parse_packet

    from collector.pcap import datagrams

    base = corpus / "flow_pcaps"
    paths = [base / "akvorado_ipfix_templates_ipfixprobe.pcap", base / "akvorado_ipfix_data_ipfixprobe.pcap"]
    templates: dict = {"netflow": {}, "ipfix": {}}
    pkg = []
    for p in paths:
        for d in datagrams(str(p)):
            pkg += [f.data.get("octetDeltaCount") for f in parse_packet(d.payload, templates).flows]
    src = OfflineSource()
    ours = [int(b) for batch in src.batches([str(p) for p in paths]) for b in batch.bytes]
    # tshark (test_flow_corpus) agrees with ours; the package's values are the reverse direction's.
    assert len(ours) == len([x for x in pkg if x is not None]) > 0
    assert sorted(ours) != sorted(x for x in pkg if x is not None)


def test_reduced_size_encoding():
    fields = [(8, 4), (12, 4), (7, 2), (11, 2), (4, 1), (1, 4), (2, 2)]
    data = v4(R1[0]) + v4(R1[1]) + struct.pack(">HHBIH", *R1[2:])
    batch, _ = run([message(template(256, fields), ipfix_set(256, data))])
    assert rows(batch) == [R1]


def test_template_withdrawal_then_data_is_held():
    dec = FlowDecoders()
    batch, _ = run([message(template(256, BASIC), ipfix_set(256, basic(*R1)))], dec)
    assert len(batch) == 1
    withdraw = ipfix_set(2, struct.pack(">HH", 256, 0))
    batch, _ = run([message(withdraw), message(ipfix_set(256, basic(*R2)))], dec)
    assert len(batch) == 0
    assert dec.counters.get("brokerwatch_ipfix_templates_withdrawn_total", (EXPORTER,)) == 1
    assert dec.counters.get("brokerwatch_ipfix_data_before_template_total", (EXPORTER,)) == 1
    batch, _ = run([message(template(256, BASIC))], dec)  # the template is back: the held record comes out
    assert rows(batch) == [R2]


def test_withdraw_all_templates_of_a_domain():
    dec = FlowDecoders()
    run([message(template(256, BASIC), template(257, BASIC), domain=1),
         message(template(256, BASIC), domain=2)], dec)
    run([message(ipfix_set(2, struct.pack(">HH", 2, 0)), domain=1)], dec)
    assert sorted(k[2:] for k in dec.get("ipfix").templates) == [(2, 256)]


def test_template_refresh_with_same_layout_and_change_of_layout():
    other = [(12, 4), (8, 4), (1, 4)]
    data_other = v4(R1[1]) + v4(R1[0]) + struct.pack(">I", 5)
    batch, _ = run([message(template(256, BASIC), ipfix_set(256, basic(*R1))),
                    message(template(256, BASIC), ipfix_set(256, basic(*R2))),
                    message(template(256, other), ipfix_set(256, data_other))])
    assert rows(batch) == [R1, R2, (R1[0], R1[1], 0, 0, 0, 5, 0)]


@pytest.mark.parametrize("fields,values,expect_start,expect_end", [
    ([(150, 4), (151, 4)], struct.pack(">II", EXPORT_S - 60, EXPORT_S - 1), (EXPORT_S - 60) * 10**9,
     (EXPORT_S - 1) * 10**9),
    ([(152, 8), (153, 8)], struct.pack(">QQ", EXPORT_S * 1000 - 1500, EXPORT_S * 1000 - 250),
     EXPORT_S * 10**9 - 1_500_000_000, EXPORT_S * 10**9 - 250_000_000),
    ([(154, 8), (155, 8)], struct.pack(">IIII", EXPORT_S + NTP - 2, 1 << 31, EXPORT_S + NTP - 1, 0),
     (EXPORT_S - 2) * 10**9 + 500_000_000, (EXPORT_S - 1) * 10**9),
    ([(156, 8), (157, 8)], struct.pack(">IIII", EXPORT_S + NTP - 2, 1 << 30, EXPORT_S + NTP, 0),
     (EXPORT_S - 2) * 10**9 + 250_000_000, EXPORT_S * 10**9),
    ([(158, 4), (159, 4)], struct.pack(">II", 3_000_000, 1_000), EXPORT_S * 10**9 - 3_000_000_000,
     EXPORT_S * 10**9 - 1_000_000),
])
def test_time_forms(fields, values, expect_start, expect_end):
    batch, _ = run([message(template(256, BASIC + fields), ipfix_set(256, basic(*R1) + values))])
    assert (batch.start_ns[0], batch.end_ns[0]) == (expect_start, expect_end)


def test_uptime_times_use_system_init_time_from_options():
    init_ms = (EXPORT_S - 3600) * 1000
    opt = options_template(400, [(144, 4)], [(160, 8)])
    fields = BASIC + [(22, 4), (21, 4)]
    batch, _ = run([message(opt, ipfix_set(400, struct.pack(">IQ", 1, init_ms))),
                    message(template(256, fields), ipfix_set(256, basic(*R1) + struct.pack(">II", 1000, 61_000)))])
    assert (batch.start_ns[0], batch.end_ns[0]) == ((init_ms + 1000) * 10**6, (init_ms + 61_000) * 10**6)


def test_options_sampling_per_selector_and_packet_interval_space():
    opt = options_template(400, [(302, 4)], [(305, 4), (306, 4)])
    opt2 = options_template(401, [(302, 4)], [(50, 4)])
    fields = BASIC + [(302, 4)]
    recs = basic(*R1) + struct.pack(">I", 7) + basic(*R2) + struct.pack(">I", 8)
    batch, _ = run([message(opt, opt2, ipfix_set(400, struct.pack(">III", 7, 1, 99)),
                            ipfix_set(401, struct.pack(">II", 8, 2048))),
                    message(template(256, fields), ipfix_set(256, recs))])
    assert batch.sampling_rate.tolist() == [100, 2048]
    assert batch.bytes.tolist() == [1200 * 100, 64 * 2048]


def test_sequence_counts_data_records_per_domain():
    dec = FlowDecoders()
    tpl = template(256, BASIC)
    run([message(tpl, ipfix_set(256, basic(*R1) + basic(*R2)), seq=100),
         message(ipfix_set(256, basic(*R1)), seq=102),  # in order: 100 + 2 records
         message(ipfix_set(256, basic(*R1)), seq=110)], dec)  # 7 records lost
    assert dec.counters.get("brokerwatch_ipfix_sequence_lost_total", (EXPORTER,)) == 7


def test_ipv6_records():
    fields = [(27, 16), (28, 16), (7, 2), (11, 2), (4, 1), (1, 8), (2, 8)]
    data = v4("::1").rjust(16, b"\0")
    data = (ipaddress.ip_address("2001:db8::5").packed + ipaddress.ip_address("2001:db8::6").packed
            + struct.pack(">HHBQQ", 1, 4222, 6, 10, 1))
    batch, _ = run([message(template(256, fields), ipfix_set(256, data))])
    assert rows(batch) == [("2001:db8::5", "2001:db8::6", 1, 4222, 6, 10, 1)]


def test_hostile_messages_rejected_with_specific_reasons():
    cases = {
        "short_header": b"\x00\x0a\x00\x10" + b"\0" * 8,
        "bad_length": struct.pack(">HHIII", 10, 500, 0, 0, 0) + b"\0" * 20,
        "set_overflow": message(ipfix_set(256, b"\0" * 8))[:-4] + b"",
        "template_scope": message(ipfix_set(3, struct.pack(">HHH", 300, 2, 0) + field_specs([(1, 4), (2, 4)]))),
        "template_id": message(template(100, BASIC)),
        "template_malformed": message(ipfix_set(2, struct.pack(">HH", 256, 3) + field_specs([(1, 4)]))),
        "template_length": message(template(256, [(1, 0)])),
    }
    # 65535 fields declared (a few present), and fixed fields too long for any datagram
    more = [("template_field_count",
             message(ipfix_set(2, struct.pack(">HH", 256, 65535) + field_specs([(82, 65535)] * 3)))),
            ("template_length", message(template(256, [(1, 40000), (2, 40000)])))]
    # set_overflow: a set header claiming more than the message holds
    body = struct.pack(">HH", 256, 40) + b"\0" * 8
    cases["set_overflow"] = struct.pack(">HHIII", 10, 16 + len(body), 0, 0, 0) + body
    for reason, data in list(cases.items()) + more:
        batch, dec = run([data])
        assert len(batch) == 0
        assert dec.rejected() == {f"ipfix.{reason}": 1}, reason


def test_bytes_after_the_message_length_are_ignored():
    m = message(template(256, BASIC), ipfix_set(256, basic(*R1)))
    batch, dec = run([m + b"\xde\xad\xbe\xef" * 10])
    assert rows(batch) == [R1] and dec.rejected() == {}


def test_state_round_trip():
    dec = FlowDecoders()
    opt = options_template(400, [(302, 4)], [(34, 4)])
    fields = BASIC + [(302, 4), (82, 65535)]
    run([message(opt, ipfix_set(400, struct.pack(">II", 3, 10)), template(256, fields), seq=5)], dec)
    state = json.loads(json.dumps(dec.get("ipfix").export_state()))
    fresh = FlowDecoders()
    fresh.get("ipfix").import_state(state)
    batch, _ = run([message(ipfix_set(256, basic(*R1) + struct.pack(">I", 3) + varlen(b"eth1")), seq=5)], fresh)
    assert rows(batch) == [R1[:5] + (12_000, 100)]
    with pytest.raises(ValueError):
        FlowDecoders().get("ipfix").import_state(FlowDecoders().get("netflow.v9").export_state())


def test_framer_splits_a_stream_at_any_chunking():
    msgs = [message(template(256, BASIC), seq=1), message(ipfix_set(256, basic(*R1)), seq=2),
            message(ipfix_set(256, basic(*R2) * 20), seq=3)]
    stream = b"".join(msgs)
    for step in (1, 3, 7, 16, 100, len(stream)):
        framer = IpfixStreamFramer()
        out = []
        for i in range(0, len(stream), step):
            out += framer.feed(stream[i:i + step])
        assert out == msgs and framer.buffered == 0


def test_framer_rejects_garbage_and_caps_its_buffer():
    with pytest.raises(DecodeError) as exc:
        IpfixStreamFramer().feed(b"\x00\x09\x00\x20" + b"\0" * 28)
    assert exc.value.reason == "bad_version"
    with pytest.raises(DecodeError) as exc:
        IpfixStreamFramer().feed(struct.pack(">HH", 10, 8))
    assert exc.value.reason == "bad_length"
    framer = IpfixStreamFramer(max_message=65535, max_buffer=100)
    with pytest.raises(DecodeError) as exc:
        framer.feed(struct.pack(">HH", 10, 60000) + b"\0" * 200)
    assert exc.value.reason == "oversized"


VALID = message(template(256, BASIC + [(82, 65535)]), ipfix_set(256, basic(*R1) + varlen(b"eth0")),
                options_template(400, [(302, 4)], [(34, 4)]), ipfix_set(400, struct.pack(">II", 1, 10)),
                ipfix_set(2, struct.pack(">HH", 300, 1) + field_specs([(1, 4, 2636)])))


def check_outcome(dec: FlowDecoders, builder: FlowBatchBuilder, n: int) -> None:
    """Records, or one rejection with a specific reason (``malformed`` means an exception leaked: a bug)."""
    rejected = dec.rejected()
    assert n == len(builder)
    assert sum(rejected.values()) in (0, 1)
    assert not any(k.endswith(".malformed") for k in rejected), rejected
    if rejected:
        assert n == 0


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600))
def test_any_bytes_decode_or_are_counted(data):
    dec = FlowDecoders()
    builder = FlowBatchBuilder(64)
    n = dec.decode(b"\x00\x0a" + data, EXPORTER, 0, builder, hint="ipfix")
    check_outcome(dec, builder, n)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)), min_size=1, max_size=6),
       st.integers(0, len(VALID)))
def test_mutated_valid_messages_decode_or_are_counted(edits, cut):
    data = bytearray(VALID)
    for pos, value in edits:
        data[pos] = value
    dec = FlowDecoders()
    builder = FlowBatchBuilder(64)
    n = dec.decode(bytes(data[:max(cut, 4)]), EXPORTER, 0, builder, hint="ipfix")
    check_outcome(dec, builder, n)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)), max_size=4), st.integers(1, 8))
def test_mutated_blocks_through_decode_many(edits, copies):
    data = bytearray(VALID)
    for pos, value in edits:
        data[pos] = value
    dec = FlowDecoders()
    builder = FlowBatchBuilder(64)
    n = dec.decode_many([bytes(data)] * copies, [EXPORTER] * copies, 0, builder)
    assert n == len(builder)
    assert not any(k.endswith(".malformed") for k in dec.rejected())


def test_tiny_records_cannot_amplify_a_datagram_without_bound():
    tpl = template(256, [(4, 1)])  # one byte per record: 9000 bytes would be 9000 rows
    batch, dec = run([message(tpl, ipfix_set(256, bytes([6]) * 9000))])
    assert len(batch) == 0 and dec.rejected() == {"ipfix.too_many_records": 1}
    batch, dec = run([message(tpl, ipfix_set(256, bytes([17]) * 1000))])
    assert len(batch) == 1000 and dec.rejected() == {}


def test_broken_variable_length_set_rejects_only_its_datagram_in_a_block():
    fields = [(8, 4), (82, 65535), (12, 4), (1, 4)]
    good = v4(R1[0]) + varlen(b"eth0") + v4(R1[1]) + struct.pack(">I", 5)
    bad = v4(R1[0]) + b"\x50" + b"abc" + b"\0" * 6
    dec = FlowDecoders()
    builder = FlowBatchBuilder(16)
    run([message(template(300, fields))], dec)
    n = dec.decode_many([message(ipfix_set(300, good)), message(ipfix_set(300, bad)), message(ipfix_set(300, good))],
                        [EXPORTER] * 3, 0, builder)
    assert n == 2 and dec.rejected() == {"ipfix.varlen_overflow": 1}
    assert rows(builder.build()) == [(R1[0], R1[1], 0, 0, 0, 5, 0)] * 2
