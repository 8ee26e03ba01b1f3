"""sFlow v5 decoder: every corpus capture against tshark, counters, hand-built datagrams, and fuzzing.

tshark (``-T json --no-duplicate-keys``) is the oracle for the real captures: per datagram the sample types, and
per flow sample the sampled packet's addresses, ports and IP protocol, the sampling rate and the interfaces;
per generic interface counter record the values kept on the decoder.
"""

from __future__ import annotations

import functools
import json
import struct
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analytics.schema import (
    ACTION_ID,
    APP_PROTOCOL_ID,
    FLAG_NO_INTERFACES,
    FLAG_NO_PORTS,
    FlowBatchBuilder,
    dataset_id,
    ip_to_words,
    words_to_ip,
)
from collector.flows.decoders import DecodeError, FlowDecoders, sniff
from collector.flows.sflow_v5 import GENERIC_IF_FIELDS, MAX_INTERFACES, SflowV5Decoder
from collector.metrics import Counters
from collector.pcap import datagrams
from tests.conftest import corpus_path, require_tool

EXPORTER = ip_to_words("192.0.2.1")
RECV_NS = 1_700_000_000_123_456_789


def _sflow_files() -> list[str]:
    root = corpus_path() / "flow_pcaps"
    return sorted(p.name for p in root.glob("*sflow*")) if root.is_dir() else []


SFLOW_FILES = _sflow_files()
GOOD_FILES = [f for f in SFLOW_FILES if "MALFORMED" not in f]


def _sflow_payloads(path: Path) -> list[tuple[int, bytes]]:
    """(capture time, UDP payload) of every datagram in the capture that is sFlow by content."""
    return [(d.ts_ns, d.payload) for d in datagrams(str(path)) if sniff(d.payload) == "sflow"]


# ------------------------------------------------------------------------------------------ tshark oracle


def _items(obj: dict):
    """(key, value) pairs of a tshark JSON object, with merged duplicate keys expanded back."""
    for k, v in obj.items():
        if isinstance(v, list) and v and isinstance(v[0], dict):
            for x in v:
                yield k, x
        else:
            yield k, v


def _first(obj: dict, key: str):
    v = obj.get(key)
    return v[0] if isinstance(v, list) else v


@functools.lru_cache(maxsize=None)
def tshark_sflow(path: str, port: int = 6343) -> tuple:
    """Per sFlow frame: (agent, sub-agent, datagram sequence, [flow samples], [counter samples])."""
    tshark = require_tool("tshark")
    out = subprocess.run(
        [tshark, "-r", path, "-d", f"udp.port=={port},sflow", "-T", "json", "--no-duplicate-keys"],
        capture_output=True, text=True, check=True,
    ).stdout
    frames = []
    for pkt in json.loads(out):
        layer = pkt["_source"]["layers"].get("sflow")
        if layer is None:
            continue
        flows, counters = [], []
        names = list(pkt["_source"]["layers"])
        after = {k: pkt["_source"]["layers"][k] for k in names[names.index("sflow") + 1:]}
        for key, sample in _items(layer):
            if not isinstance(sample, dict) or "sflow_245.sampletype" not in sample:
                continue
            stype = int(sample["sflow_245.sampletype"])
            if stype in (1, 3):
                flows.append(_tshark_flow(sample, stype, after))
            elif stype in (2, 4):
                counters.append(_tshark_counters(sample))
        agent = layer.get("sflow_245.agent") or layer.get("sflow_245.agent.v6")
        frames.append((agent, int(layer["sflow_245.sub_agent_id"]), int(layer["sflow_245.sequence_number"]),
                       flows, counters))
    return tuple(frames)


def _tshark_flow(sample: dict, stype: int, after: dict) -> dict:
    """One flow sample; ``after`` holds the frame's layers that follow the sFlow layer."""
    rec = {"rate": int(sample["sflow.flow_sample.sampling_rate"]),
           "seq": int(sample["sflow.flow_sample.sequence_number"])}
    if stype == 1:
        out_raw = int(sample["sflow.flow_sample.output_interface"], 16)
        rec["out_fmt"], rec["out_val"] = out_raw >> 30, out_raw & 0x3FFFFFFF
        rec["in_val"] = int(sample["sflow.flow_sample.input_interface"])
        rec["in_fmt"] = 0
    else:
        rec["in_fmt"] = int(sample["sflow.flow_sample.input_interface_format"])
        rec["in_val"] = int(sample["sflow.flow_sample.input_interface_value"])
        rec["out_fmt"] = int(sample["sflow.flow_sample.output_interface.format"])
        rec["out_val"] = int(sample["sflow.flow_sample.output_interface_value"])
    for key, record in _items(sample):
        if key == "Raw packet header" and isinstance(record, dict):
            rec["frame_length"] = int(record["sflow_245.header.frame_length"])
            tree = record.get("sflow_245.header_tree", {})
            udp = _first(tree, "udp")
            if udp is not None and int(udp["udp.dstport"]) == 4789 and "vxlan" in after:
                # a VXLAN sample is its inner packet; tshark dissects that after the sFlow layer, not in its tree
                tree = after
            ip = _first(tree, "ip") or _first(tree, "ipv6")
            if ip is None:
                continue
            if "ip.src" in ip:
                rec["src"], rec["dst"], rec["proto"] = ip["ip.src"], ip["ip.dst"], int(ip["ip.proto"])
            else:
                rec["src"], rec["dst"], rec["proto"] = ip["ipv6.src"], ip["ipv6.dst"], int(ip["ipv6.nxt"])
            mqtt = _first(tree, "mqtt")
            if mqtt is not None:
                rec["mqtt_topic"] = mqtt.get("mqtt.topic")
            for l4 in ("tcp", "udp"):
                t = _first(tree, l4)
                if t is not None:
                    rec["ports"] = (int(t[f"{l4}.srcport"]), int(t[f"{l4}.dstport"]))
                    if l4 == "tcp":
                        rec["tcp_flags"] = int(t["tcp.flags"], 16) & 0xFF
                    break
            break
    return rec


def _tshark_counters(sample: dict) -> dict:
    rec = {"seq": int(sample["sflow.counters_sample.sequence_number"]), "generic": [],
           "source": (int(sample["sflow.counters_sample.source_id_type"]),
                      int(sample["sflow.counters_sample.source_id_index"]))}
    for key, record in _items(sample):
        if isinstance(record, dict) and record.get("sflow_245.counters_record_format") == "1":
            rec["generic"].append({
                "if_index": int(record["sflow_245.ifindex"]),
                "if_speed": int(record["sflow_245.ifspeed"]),
                "in_octets": int(record["sflow_245.ifinoct"]),
                "out_octets": int(record["sflow_245.ifoutoct"]),
                "out_multicast_pkts": int(record["sflow_245.ifoutmcast"]),
            })
    return rec


# --------------------------------------------------------------------------------------- corpus vs tshark


def _decode_file(path: Path) -> tuple[FlowDecoders, list]:
    """Decode every sFlow datagram of a capture; returns the decoders and (n rows, batch rows) per datagram."""
    dec = FlowDecoders()
    per_dgram = []
    for ts, payload in _sflow_payloads(path):
        builder = FlowBatchBuilder(64)
        n = dec.decode(payload, EXPORTER, ts, builder)
        per_dgram.append((n, builder.build()))
    return dec, per_dgram


@pytest.mark.parametrize("name", GOOD_FILES)
def test_corpus_capture_agrees_with_tshark(corpus: Path, name: str) -> None:
    """Each sFlow capture: sample counts, then per flow sample addresses, ports, protocol, rate and interfaces."""
    path = corpus / "flow_pcaps" / name
    expected = tshark_sflow(str(path))
    dec, got = _decode_file(path)
    assert dec.rejected() == {}
    assert len(got) == len(expected) > 0
    sfl: SflowV5Decoder = dec.get("sflow")  # type: ignore[assignment]
    for (n, batch), (agent, _sub, _seq, flows, _counters) in zip(got, expected):
        ip_flows = sorted((f for f in flows if "src" in f), key=_tshark_key)
        assert n == len(batch) == len(ip_flows)
        rows = sorted(range(n), key=lambda i: _row_key(batch, i))
        for i, f in zip(rows, ip_flows):
            assert _row_key(batch, i) == _tshark_key(f)
            assert batch.sampling_rate[i] == batch.packets[i] == f["rate"]
            assert batch.bytes[i] == f["frame_length"] * f["rate"]
            assert batch.tcp_flags[i] == f.get("tcp_flags", 0)
            assert batch.start_ns[i] == batch.end_ns[i]
            assert words_to_ip(batch.exporter_hi[i], batch.exporter_lo[i]) == agent
            assert batch.in_if[i] == (f["in_val"] if f["in_fmt"] == 0 and f["in_val"] != 0x3FFFFFFF else 0)
            if f["out_fmt"] == 0 and f["out_val"] != 0x3FFFFFFF:
                assert batch.out_if[i] == f["out_val"]
            else:  # local, discarded or several interfaces: no single ifIndex
                assert batch.out_if[i] == 0
            assert (batch.action[i] == ACTION_ID["drop"]) == (f["out_fmt"] == 1)
        assert (batch.dataset == dataset_id("sflow")).all()
    n_flow = sum(len(f[3]) for f in expected)
    n_counter = sum(len(f[4]) for f in expected)
    assert sum(sfl.counters.series("brokerwatch_sflow_flow_samples_total").values()) == n_flow
    assert sum(sfl.counters.series("brokerwatch_sflow_counter_samples_total").values()) == n_counter


def _tshark_key(f: dict) -> tuple:
    return (f["src"], f["dst"], f["proto"], f.get("ports"))


def _row_key(batch, i: int) -> tuple:
    """A decoded row in the shape of _tshark_key (ports None where the row has none)."""
    return (
        words_to_ip(batch.src_hi[i], batch.src_lo[i]),
        words_to_ip(batch.dst_hi[i], batch.dst_lo[i]),
        int(batch.proto[i]),
        None if batch.flags[i] & FLAG_NO_PORTS else (int(batch.src_port[i]), int(batch.dst_port[i])),
    )


PMACCT_FIXTURE = Path(__file__).resolve().parents[3] / "fixtures" / "sflow" / "pmacct_beacon_world.pcap"


def check_pmacct_export(path: Path, port: int = 29943) -> None:
    """A pmacct sfprobe export of the beacon-world traffic: every sample decodes, MQTT and topics as tshark."""
    expected = tshark_sflow(str(path), port)
    dec, got = _decode_file(path)
    assert dec.rejected() == {}
    assert len(got) == len(expected) > 0
    flows = [f for frame in expected for f in frame[3] if "src" in f]
    rows = [(batch, i) for _n, batch in got for i in range(len(batch))]
    assert len(rows) == len(flows)
    tshark_mqtt = [f for f in flows if "mqtt_topic" in f]
    ours_mqtt = [(b, i) for b, i in rows if b.app_proto[i] == MQTT_ID]
    # tshark dissects MQTT on port 1883 by port; we recognise it from the bytes: same samples, same topics
    assert len(tshark_mqtt) > 0 and len(ours_mqtt) == len(tshark_mqtt)
    assert sorted(f["mqtt_topic"] for f in tshark_mqtt if f["mqtt_topic"]) == sorted(
        b.strings[b.topic_id[i]] for b, i in ours_mqtt if b.topic_id[i]
    )
    beacon = [(b, i) for b, i in ours_mqtt if {words_to_ip(b.src_hi[i], b.src_lo[i]),
                                                words_to_ip(b.dst_hi[i], b.dst_lo[i])} == BEACON_PAIR]
    assert beacon, "the MQTT beacon pair is not recognised"


MQTT_ID = APP_PROTOCOL_ID["mqtt"]
BEACON_PAIR = {"192.0.2.10", "203.0.113.50"}  # fixtures/traffic/beacon_world.labels.json: family mqtt-beacon


def test_pmacct_sfprobe_fixture_recognises_mqtt() -> None:
    """fixtures/sflow/pmacct_beacon_world.pcap (pmacctd sfprobe, 1 in 1) decodes with the MQTT beacon recognised."""
    if not PMACCT_FIXTURE.is_file():
        pytest.skip(f"{PMACCT_FIXTURE} is not in the repository yet")
    check_pmacct_export(PMACCT_FIXTURE)


def test_times_are_receive_times(corpus: Path) -> None:
    """sFlow has no flow times: start = end = the time the datagram was received (capture time in a pcap)."""
    path = corpus / "flow_pcaps" / "ndpi_sflow.pcap"
    payloads = _sflow_payloads(path)
    dec = FlowDecoders()
    builder = FlowBatchBuilder(64)
    for ts, payload in payloads:
        dec.decode(payload, EXPORTER, ts, builder)
    batch = builder.build()
    flow_times = {ts for (ts, _), frame in zip(payloads, tshark_sflow(str(path))) if frame[3]}
    assert len(batch) == 1 and set(batch.start_ns.tolist()) == flow_times
    assert (batch.start_ns == batch.end_ns).all()


def test_counter_samples_are_kept_per_interface(corpus: Path) -> None:
    """Generic interface counters land on the decoder per (agent, ifIndex), latest values, matching tshark."""
    for name in ("tcpdump_sflow_multiple_counter_30_pdus.pcap", "tcpdump_sflow-print-v6.pcap", "ndpi_sflow.pcap"):
        path = corpus / "flow_pcaps" / name
        dec, _ = _decode_file(path)
        sfl: SflowV5Decoder = dec.get("sflow")  # type: ignore[assignment]
        latest: dict[tuple, dict] = {}
        n_generic = 0
        for agent, _sub, _seq, _flows, counters in tshark_sflow(str(path)):
            for c in counters:
                for g in c["generic"]:
                    latest[(agent, g["if_index"])] = g
                    n_generic += 1
        assert n_generic > 0
        assert sfl.counters.get("brokerwatch_sflow_counter_records_total", ("generic_interface",)) == n_generic
        assert len(sfl.interface_counters) == len(latest)
        for (agent, if_index), g in latest.items():
            kept = sfl.interface(ip_to_words(agent), if_index)
            assert kept is not None
            for field, value in g.items():
                assert kept[field] == value, (name, agent, if_index, field)
            assert set(GENERIC_IF_FIELDS) <= set(kept)


@pytest.mark.parametrize("name, sources_repeat", [
    ("tcpdump_sflow_multiple_counter_30_pdus.pcap", False),  # each counter source is sampled once in the file
    ("tcpdump_sflow-print-v6.pcap", True),
])
def test_sequence_accounting_matches_tshark(corpus: Path, name: str, sources_repeat: bool) -> None:
    """Datagram sequence gaps per (agent, sub-agent) and counter sample gaps per (agent, sub-agent, source id),
    computed independently from tshark's fields."""
    path = corpus / "flow_pcaps" / name
    # every third datagram "lost" on the way, so that there are gaps to count
    keep = [i % 3 != 1 for i in range(len(tshark_sflow(str(path))))]
    dec = FlowDecoders()
    for (ts, payload), kept in zip(_sflow_payloads(path), keep):
        if kept:
            dec.decode(payload, EXPORTER, ts, FlowBatchBuilder(16))
    nxt: dict[tuple, int] = {}
    lost: Counter = Counter()
    reordered: Counter = Counter()
    sample_lost: Counter = Counter()

    def account(key: tuple, seq: int, agent: str, gaps: Counter, late: Counter | None) -> None:
        if key in nxt and seq != nxt[key]:
            if seq > nxt[key]:
                gaps[agent] += seq - nxt[key]
            elif late is not None:
                late[agent] += 1
        nxt[key] = seq + 1

    for (agent, sub, seq, _f, counters), kept in zip(tshark_sflow(str(path)), keep):
        if not kept:
            continue
        account((agent, sub), seq, agent, lost, reordered)
        for c in counters:
            account((agent, sub, "counter", c["source"]), c["seq"], agent, sample_lost, None)
    got_samples = {words_to_ip(*k[0]): v
                   for k, v in dec.counters.series("brokerwatch_sflow_counter_sample_sequence_lost_total").items()}
    assert got_samples == dict(sample_lost)
    assert (sum(sample_lost.values()) > 0) == sources_repeat
    def by_agent(name: str) -> dict:
        return {words_to_ip(*k[0]): v for k, v in dec.counters.series(name).items()}

    got_lost = by_agent("brokerwatch_sflow_sequence_lost_total")
    got_re = by_agent("brokerwatch_sflow_sequence_reordered_total")
    assert got_lost == dict(lost) and sum(lost.values()) > 0
    assert got_re == dict(reordered)
    dgrams = dec.counters.series("brokerwatch_sflow_datagrams_total")
    assert sum(dgrams.values()) == sum(keep)


def test_malformed_capture_is_rejected_with_a_reason(corpus: Path) -> None:
    """The fuzzer-crash capture: its UDP length says 8 bytes of sFlow; the rest of the frame is garbage too."""
    path = corpus / "flow_pcaps" / "tcpdump_sflow_print-segv_MALFORMED.pcap"
    payloads = _sflow_payloads(path)
    assert len(payloads) == 1
    dec = FlowDecoders()
    builder = FlowBatchBuilder(16)
    assert dec.decode(payloads[0][1], EXPORTER, 0, builder) == 0
    assert dec.rejected() == {"sflow.short_header": 1}
    # the bytes past the UDP length (what a careless reader would take): still a specific rejection or rows
    from collector.pcap import frames, ip_packet

    (_, link, frame), = list(frames(str(path)))
    pkt = ip_packet(link, frame)
    assert pkt is not None
    whole = pkt[28:]
    with pytest.raises(DecodeError) as err:
        SflowV5Decoder().decode(whole, EXPORTER, 0, FlowBatchBuilder(16))
    assert err.value.reason in {"truncated_sample", "bad_sample_count", "bad_record_count", "truncated_record",
                                "bad_sample_length", "bad_record_length", "bad_header_length"}


# ------------------------------------------------------------------------------------ hand-built datagrams


def _datagram(samples: list[bytes], agent: bytes = bytes([10, 0, 0, 1]), seq: int = 1, sub: int = 0) -> bytes:
    atype = 1 if len(agent) == 4 else 2
    head = struct.pack(">II", 5, atype) + agent + struct.pack(">IIII", sub, seq, 1000, len(samples))
    return head + b"".join(samples)


def _sample(fmt: int, body: bytes) -> bytes:
    return struct.pack(">II", fmt, len(body)) + body


def _record(fmt: int, body: bytes) -> bytes:
    return struct.pack(">II", fmt, len(body)) + body


def _raw_header(packet: bytes, frame_length: int, proto: int = 1) -> bytes:
    padded = packet + b"\x00" * (-len(packet) % 4)
    return _record(1, struct.pack(">IIII", proto, frame_length, 4, len(packet)) + padded)


def _flow_sample(records: list[bytes], rate: int = 512, seq: int = 7, inp: int = 3, outp: int = 4,
                 drops: int = 0, source: int = 3) -> bytes:
    body = struct.pack(">IIIIIIII", seq, source, rate, rate * seq, drops, inp, outp, len(records))
    return _sample(1, body + b"".join(records))


def _eth_ipv4_tcp(payload: bytes, sport: int = 40000, dport: int = 18830, flags: int = 0x18,
                  vlans: int = 0) -> bytes:
    tcp = struct.pack(">HHIIBBHHH", sport, dport, 1, 1, 5 << 4, flags, 1024, 0, 0) + payload
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 1, 0, 64, 6, 0, bytes([10, 1, 1, 1]),
                     bytes([203, 0, 113, 9])) + tcp
    tags = b"".join(struct.pack(">HH", 0x88A8 if i == 0 and vlans > 1 else 0x8100, 100 + i) for i in range(vlans))
    return b"\x02" * 6 + b"\x04" * 6 + tags + b"\x08\x00" + ip


MQTT_PUBLISH = b"\x30\x17\x00\x0cbots/42/ping" + b"hello world"


def _decode(data: bytes, decoder: SflowV5Decoder | None = None):
    dec = decoder or SflowV5Decoder()
    builder = FlowBatchBuilder(16)
    n = dec.decode(data, EXPORTER, RECV_NS, builder)
    return dec, n, builder.build()


def test_mqtt_publish_in_sampled_header_sets_protocol_and_topic_on_any_port() -> None:
    """A sampled MQTT PUBLISH on port 18830 (not 1883) is recognised, topic interned; counters scaled by N."""
    pkt = _eth_ipv4_tcp(MQTT_PUBLISH, vlans=2)
    dgram = _datagram([_flow_sample([_raw_header(pkt, 1400)], rate=512)])
    _, n, batch = _decode(dgram)
    assert n == 1
    assert batch.app_proto[0] == APP_PROTOCOL_ID["mqtt"]
    assert batch.strings[batch.topic_id[0]] == "bots/42/ping"
    assert (batch.src_port[0], batch.dst_port[0], batch.proto[0], batch.tcp_flags[0]) == (40000, 18830, 6, 0x18)
    assert batch.packets[0] == 512 and batch.bytes[0] == 1400 * 512 and batch.sampling_rate[0] == 512
    assert (batch.in_if[0], batch.out_if[0]) == (3, 4)
    assert batch.start_ns[0] == batch.end_ns[0] == RECV_NS
    assert words_to_ip(batch.exporter_hi[0], batch.exporter_lo[0]) == "10.0.0.1"


def test_tls_payload_is_not_pubsub() -> None:
    hello = bytes.fromhex("16030100f4010000f00303") + bytes(range(32)) + b"\x00\x20"
    _, n, batch = _decode(_datagram([_flow_sample([_raw_header(_eth_ipv4_tcp(hello, dport=8883), 300)])]))
    assert n == 1 and batch.app_proto[0] == 0 and batch.topic_id[0] == 0


def test_sampled_ipv4_and_ipv6_records_without_raw_header() -> None:
    """Records 3/4 (expanded flow sample, IPv6 agent) give the row when there is no raw header."""
    v4 = _record(3, struct.pack(">II4s4sIIII", 84, 17, bytes([192, 0, 2, 7]), bytes([198, 51, 100, 1]), 5353, 4222,
                                0, 0))
    src6 = bytes.fromhex("20010db8000000000000000000000001")
    dst6 = bytes.fromhex("20010db8000000000000000000000002")
    v6 = _record(4, struct.pack(">II16s16sIIII", 120, 6, src6, dst6, 51000, 5672, 0x12, 0))
    eth = _record(2, struct.pack(">I", 134) + b"\x00" * 20)

    def expanded(records, seq):
        body = struct.pack(">IIIIIIIIIII", seq, 0, 9, 100, 100 * seq, 0, 0, 11, 0, 0x3FFFFFFF, len(records))
        return _sample(3, body + b"".join(records))

    agent6 = bytes.fromhex("fd000000000000000000000000000001")
    _, n, b = _decode(_datagram([expanded([v4], 1), expanded([eth, v6], 2)], agent=agent6))
    assert n == 2
    assert words_to_ip(b.src_hi[0], b.src_lo[0]) == "192.0.2.7" and (b.src_port[0], b.dst_port[0]) == (5353, 4222)
    assert b.bytes[0] == 84 * 100 and b.tcp_flags[0] == 0
    assert words_to_ip(b.dst_hi[1], b.dst_lo[1]) == "2001:db8::2" and b.proto[1] == 6 and b.tcp_flags[1] == 0x12
    assert b.bytes[1] == 134 * 100  # the Ethernet record's frame length wins over the IP length
    assert (b.in_if[1], b.out_if[1]) == (11, 0)  # local output interface
    assert words_to_ip(b.exporter_hi[0], b.exporter_lo[0]) == "fd00::1"


def test_sample_and_drop_accounting() -> None:
    """Flow sample sequence gaps per source, and the agent's cumulative drop counter counted by its increase."""
    pkt = _eth_ipv4_tcp(b"")
    dec = SflowV5Decoder()
    _decode(_datagram([_flow_sample([_raw_header(pkt, 60)], seq=10, drops=5)], seq=1), dec)
    _decode(_datagram([_flow_sample([_raw_header(pkt, 60)], seq=14, drops=9)], seq=2), dec)
    _decode(_datagram([_flow_sample([_raw_header(pkt, 60)], seq=15, drops=9)], seq=5), dec)
    agent = ip_to_words("10.0.0.1")
    assert dec.counters.get("brokerwatch_sflow_flow_sample_sequence_lost_total", (agent,)) == 3
    assert dec.counters.get("brokerwatch_sflow_agent_drops_total", (agent,)) == 4
    assert dec.counters.get("brokerwatch_sflow_sequence_lost_total", (agent,)) == 2
    assert dec.counters.get("brokerwatch_sflow_flow_samples_total", (agent,)) == 3


def test_non_ip_sample_gives_no_row_but_is_counted() -> None:
    arp = b"\xff" * 6 + b"\x02" * 6 + b"\x08\x06" + b"\x00" * 28
    dec, n, _ = _decode(_datagram([_flow_sample([_raw_header(arp, 64)])]))
    assert n == 0
    assert dec.counters.get("brokerwatch_sflow_samples_skipped_total", ("not_ip",)) == 1
    assert dec.counters.get("brokerwatch_sflow_flow_samples_total", (ip_to_words("10.0.0.1"),)) == 1


def test_icmp_has_no_ports_and_unknown_interfaces_are_flagged() -> None:
    icmp = struct.pack(">BBHHH", 8, 0, 0, 1, 1)
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 28, 1, 0, 64, 1, 0, bytes(4), bytes([8, 8, 8, 8])) + icmp
    _, n, b = _decode(_datagram([_flow_sample([_raw_header(ip, 28, proto=11)], inp=0, outp=0)]))
    assert n == 1 and b.proto[0] == 1
    assert b.flags[0] & FLAG_NO_PORTS and b.flags[0] & FLAG_NO_INTERFACES
    assert b.dst_port[0] == 8 << 8  # ICMP type/code, NetFlow style, not printed as a port


def test_interface_table_is_bounded(monkeypatch) -> None:
    monkeypatch.setattr("collector.flows.sflow_v5.MAX_INTERFACES", 2)
    def counters(if_index):
        rec = _record(1, struct.pack(">IIQIIQIIIIIIQIIIIII", if_index, 6, 10**9, 1, 3, *range(14)))
        return _sample(2, struct.pack(">III", if_index, if_index, 1) + rec)
    dec, n, _ = _decode(_datagram([counters(1), counters(2), counters(3)]))
    assert n == 0
    assert len(dec.interface_counters) == 2
    assert dec.counters.get("brokerwatch_sflow_interface_table_full_total") == 1
    assert dec.interface(ip_to_words("10.0.0.1"), 2)["in_octets"] == 0  # type: ignore[index]
    assert MAX_INTERFACES >= 65536


@pytest.mark.parametrize(
    "mutate, reason",
    [
        (lambda d: d[:20], "short_header"),
        (lambda d: b"\x00\x00\x00\x04" + d[4:], "bad_version"),
        (lambda d: d[:4] + b"\x00\x00\x00\x07" + d[8:], "bad_address_type"),
        (lambda d: d[:24] + b"\x00\x00\x01\x00" + d[28:], "bad_sample_count"),
        (lambda d: d[:-4], "truncated_sample"),
        (lambda d: d[:72] + b"\x00\x00\xff\x00" + d[76:], "truncated_record"),
        (lambda d: d[:32] + b"\x00\x00\xff\x00" + d[36:], "truncated_sample"),
        (lambda d: d[:32] + b"\x00\x00\x00\x10" + d[36:], "bad_sample_length"),
        (lambda d: d[:64] + b"\x00\x01\x00\x00" + d[68:], "bad_record_count"),
        (lambda d: d[:72] + b"\x00\x00\x00\x08" + d[76:], "bad_record_length"),
        (lambda d: d[:88] + b"\x00\x00\x00\xff" + d[92:], "bad_header_length"),
    ],
)
def test_malformed_reasons(mutate, reason) -> None:
    """Each length or count that does not fit is rejected with its own reason, and no row is left behind."""
    good = _datagram([_flow_sample([_raw_header(_eth_ipv4_tcp(MQTT_PUBLISH), 200)])])
    assert _decode(good)[1] == 1
    dec = FlowDecoders()
    builder = FlowBatchBuilder(16)
    assert dec.decode(mutate(good), EXPORTER, RECV_NS, builder, hint="sflow") == 0
    assert len(builder) == 0
    assert dec.rejected() == {f"sflow.{reason}": 1}


def test_rejected_datagram_changes_no_state() -> None:
    """Counts noted before the fault (an enterprise sample, a discarded packet) are not committed either."""
    enterprise = _sample((4300 << 12) | 1, b"\x00" * 8)
    discarded = _flow_sample([_raw_header(_eth_ipv4_tcp(b""), 60)], outp=(1 << 30) | 3)
    good = _datagram([enterprise, discarded], seq=1)
    dec = SflowV5Decoder()
    with pytest.raises(DecodeError):
        dec.decode(good[:-4], EXPORTER, RECV_NS, FlowBatchBuilder(16))
    assert dec.counters.snapshot() == {} and dec.interface_counters == {}
    _, n, batch = _decode(good, dec)
    assert n == 1 and batch.action[0] == ACTION_ID["drop"] and batch.out_if[0] == 0
    assert dec.counters.get("brokerwatch_sflow_datagrams_total", (ip_to_words("10.0.0.1"),)) == 1
    assert dec.counters.get("brokerwatch_sflow_samples_skipped_total", ("enterprise",)) == 1
    assert dec.counters.get("brokerwatch_sflow_discarded_total", (3,)) == 1


# ---------------------------------------------------------------------------------------------- fuzzing


def _seeds() -> list[bytes]:
    seeds = [_datagram([_flow_sample([_raw_header(_eth_ipv4_tcp(MQTT_PUBLISH, vlans=1), 200)])])]
    root = corpus_path() / "flow_pcaps"
    for name in GOOD_FILES:
        p = root / name
        if p.is_file():
            seeds.extend(payload for _, payload in _sflow_payloads(p)[:2])
    return seeds


SEEDS = _seeds()
_ALLOWED_REASONS = {"short_header", "bad_version", "bad_address_type", "bad_sample_count", "truncated_sample",
                    "bad_sample_length", "bad_record_count", "truncated_record", "bad_record_length",
                    "bad_header_length"}


def _check_one(data: bytes) -> None:
    """Directly: rows or DecodeError with a known reason; through FlowDecoders: rows or one counted rejection."""
    dec = SflowV5Decoder(Counters())
    builder = FlowBatchBuilder(16)
    try:
        n = dec.decode(data, EXPORTER, RECV_NS, builder)
        assert n == len(builder)
    except DecodeError as exc:
        assert exc.reason in _ALLOWED_REASONS
    fd = FlowDecoders()
    b2 = FlowBatchBuilder(16)
    n2 = fd.decode(data, EXPORTER, RECV_NS, b2, hint="sflow")
    rejected = sum(fd.rejected().values())
    assert (n2 == len(b2) and rejected == 0) or (n2 == 0 and len(b2) == 0 and rejected == 1)
    assert "sflow.malformed" not in fd.rejected()


_FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_FUZZ
@given(st.binary(max_size=600))
def test_any_bytes_never_raise(data: bytes) -> None:
    _check_one(data)


@_FUZZ
@given(st.binary(max_size=200))
def test_any_body_after_a_valid_header_never_raises(body: bytes) -> None:
    _check_one(struct.pack(">II4sIIII", 5, 1, b"\x0a\x00\x00\x01", 0, 1, 1, 3) + body)


@_FUZZ
@given(
    st.sampled_from(SEEDS),
    st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 255)), max_size=8),
    st.integers(0, 2000),
)
def test_mutated_real_datagrams_never_raise(seed: bytes, flips: list, cut: int) -> None:
    data = bytearray(seed)
    for pos, value in flips:
        if data:
            data[pos % len(data)] = value
    _check_one(bytes(data[: len(data) - cut % (len(data) + 1)]))


def _ipv4(proto: int, payload: bytes, src: bytes = bytes([192, 0, 2, 1]), dst: bytes = bytes([192, 0, 2, 2])) -> bytes:
    return struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 1, 0, 64, proto, 0, src, dst) + payload


def test_gre_and_vxlan_samples_are_read_by_their_inner_packet() -> None:
    """The tunnel endpoints only carry the flow: GRE (with a key) and VXLAN samples give the inner MQTT packet."""
    inner_eth = _eth_ipv4_tcp(MQTT_PUBLISH)
    inner_ip = inner_eth[14:]
    gre = struct.pack(">BBHI", 0x20, 0, 0x0800, 77) + inner_ip  # K bit: a 4-byte key follows
    vxlan = struct.pack(">HHHH", 51000, 4789, 8 + 8 + len(inner_eth), 0) + struct.pack(">II", 0x08000000, 5 << 8)
    for outer in (_ipv4(47, gre), _ipv4(17, vxlan + inner_eth)):
        pkt = b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00" + outer
        _, n, batch = _decode(_datagram([_flow_sample([_raw_header(pkt, 1500)], rate=1)]))
        assert n == 1
        assert (words_to_ip(batch.src_hi[0], batch.src_lo[0]), words_to_ip(batch.dst_hi[0], batch.dst_lo[0])) == \
            ("10.1.1.1", "203.0.113.9")
        assert (batch.src_port[0], batch.dst_port[0], batch.proto[0]) == (40000, 18830, 6)
        assert batch.app_proto[0] == APP_PROTOCOL_ID["mqtt"] and batch.strings[batch.topic_id[0]] == "bots/42/ping"
        assert batch.bytes[0] == 1500  # what crossed the wire, tunnel headers included


def test_a_tunnel_cut_off_before_its_inner_addresses_keeps_the_outer_packet() -> None:
    vxlan = struct.pack(">HHHH", 51000, 4789, 30, 0) + struct.pack(">II", 0x08000000, 0) + b"\x02" * 6
    pkt = b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00" + _ipv4(17, vxlan)
    _, n, batch = _decode(_datagram([_flow_sample([_raw_header(pkt, 100)], rate=1)]))
    assert n == 1 and (batch.dst_port[0], batch.proto[0]) == (4789, 17)
    assert words_to_ip(batch.src_hi[0], batch.src_lo[0]) == "192.0.2.1"
