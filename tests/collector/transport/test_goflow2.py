"""goflow2 interop: FlowMessages encoded with goflow2's published flow.proto become the same rows brokerwatch's own
decoders make, delimited or bare; hostile bytes are counted; the analytics role alerts on a goflow2 topic."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analytics.schema import FlowBatch, dataset_name, words_to_ip
from collector.cli import main
from collector.inputs import OfflineSource
from collector.metrics import Counters
from collector.transport.flowcodec import FlowCodecError
from collector.transport.goflow2 import REASONS, decode_messages
from collector.transport.goflow2pb.flow_pb2 import FlowMessage
from tests.conftest import FIXTURES

V9_FIXTURE = FIXTURES / "netflow_v9" / "softflowd_beacon_world.pcap"


def _addr(hi: int, lo: int) -> bytes:
    import ipaddress

    return ipaddress.ip_address(words_to_ip(hi, lo)).packed


def as_goflow2(batch: FlowBatch, rate: int = 1) -> list[FlowMessage]:
    """What goflow2 would publish for these flows (counters unscaled, its sampling rate beside them)."""
    c = {k: v.tolist() for k, v in batch.columns.items()}
    out = []
    for i in range(len(batch)):
        out.append(FlowMessage(
            type=FlowMessage.NETFLOW_V9, time_received_ns=c["end_ns"][i], sampling_rate=rate,
            sampler_address=_addr(c["exporter_hi"][i], c["exporter_lo"][i]),
            time_flow_start_ns=c["start_ns"][i], time_flow_end_ns=c["end_ns"][i],
            bytes=c["bytes"][i] // rate, packets=c["packets"][i] // rate,
            src_addr=_addr(c["src_hi"][i], c["src_lo"][i]), dst_addr=_addr(c["dst_hi"][i], c["dst_lo"][i]),
            etype=0x800, proto=c["proto"][i], src_port=c["src_port"][i], dst_port=c["dst_port"][i],
            in_if=c["in_if"][i], out_if=c["out_if"][i], tcp_flags=c["tcp_flags"][i]))
    return out


def delimited(m: FlowMessage) -> bytes:
    """goflow2's default bin format: a varint length, then the message (protodelim)."""
    body = m.SerializeToString()
    n, prefix = len(body), bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        prefix.append(b | (0x80 if n else 0))
        if not n:
            return bytes(prefix) + body


@pytest.fixture(scope="module")
def fixture_flows() -> FlowBatch:
    return FlowBatch.concat(list(OfflineSource().batches([str(V9_FIXTURE)])))


def test_goflow2_messages_become_the_rows_brokerwatch_decodes(fixture_flows):
    msgs = as_goflow2(fixture_flows)
    bare = decode_messages([m.SerializeToString() for m in msgs])
    delim = decode_messages([delimited(m) for m in msgs])
    packed = decode_messages([b"".join(delimited(m) for m in msgs[:50]), *(delimited(m) for m in msgs[50:])])
    for got in (bare, delim, packed):
        assert len(got) == len(fixture_flows)
        for name in ("start_ns", "end_ns", "src_hi", "src_lo", "dst_hi", "dst_lo", "exporter_lo", "bytes",
                     "packets", "src_port", "dst_port", "proto", "in_if", "out_if", "tcp_flags"):
            np.testing.assert_array_equal(got.columns[name], fixture_flows.columns[name], err_msg=name)
        assert {dataset_name(i) for i in got.dataset.tolist()} == {"netflow.v9"}


def test_sampled_counters_are_scaled_and_sflow_takes_the_receive_time():
    m = FlowMessage(type=FlowMessage.SFLOW_5, time_received_ns=1_700_000_000_123_000_000, sampling_rate=512,
                    bytes=100, packets=1, src_addr=bytes([10, 0, 0, 1]), dst_addr=bytes(15) + b"\x01",
                    proto=6, src_port=40000, dst_port=1883)
    got = decode_messages([m.SerializeToString()])
    assert got.bytes.tolist() == [51200] and got.packets.tolist() == [512] and got.sampling_rate.tolist() == [512]
    assert got.start_ns.tolist() == got.end_ns.tolist() == [1_700_000_000_123_000_000]
    assert words_to_ip(got.dst_hi[0], got.dst_lo[0]) == "::1"
    assert dataset_name(int(got.dataset[0])) == "sflow"


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=300), min_size=1, max_size=4))
def test_hostile_messages_are_counted_never_raised(values):
    counters = Counters()
    try:
        batch = decode_messages(values, counters)
    except FlowCodecError as exc:
        assert exc.reason in REASONS
    else:
        assert all(len(c) == len(batch) for c in batch.columns.values())
    assert set(k[1] for k in counters.series("brokerwatch_kafka_decode_errors_total")) <= set(REASONS)


@pytest.mark.live
def test_an_analytics_worker_alerts_on_a_goflow2_topic(tmp_path, fixture_flows):
    """A site running goflow2: its topic, keyed by (SrcAddr, DstAddr), read by brokerwatch's analytics role."""

    from collector.transport.kafka import BufferedProducer
    from analytics.config import Kafka
    from tests.collector.transport.test_kafka import last_revisions, reference_alerts, topic_alerts
    from tests.live import Tansu, Worker

    want = reference_alerts(tmp_path)
    broker = Tansu(tmp_path)
    try:
        (tmp_path / "gf.yaml").write_text("Kafka:\n  topics: {goflow2: flows-goflow2}\n")
        worker = Worker(tmp_path, broker.bootstrap, "gf", extra=("--config", str(tmp_path / "gf.yaml")))
        producer = BufferedProducer(Kafka(bootstrap=broker.bootstrap, partitions=4), Counters(), ["flows-goflow2"])
        for m in as_goflow2(fixture_flows):
            producer.send("flows-goflow2", delimited(m), key=m.src_addr + m.dst_addr)
        producer.close()
        end = time.monotonic() + 60
        while set(last_revisions(topic_alerts(broker.bootstrap))) != set(want) and time.monotonic() < end:
            time.sleep(1)
        log = worker.stop()
        got = last_revisions(topic_alerts(broker.bootstrap))
    finally:
        broker.stop()
    assert set(got) == set(want), log
    assert "flows-goflow2" in log
    assert [json.dumps(got[i]["rule"]) for i in want] == [json.dumps(want[i]["rule"]) for i in want]
