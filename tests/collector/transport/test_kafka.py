"""The Kafka transport against a real Kafka-protocol broker (tansu) on loopback: flows by pair and partition,
endpoint events and alerts keyed, a broker outage buffered, analytics workers in one consumer group."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import time

import numpy as np
import pytest

from analytics.config import Kafka
from analytics.schema import FLOW_DTYPE, FlowBatch
from collector.cli import main
from collector.metrics import Counters
from collector.pcap import datagrams
from collector.transport import flowcodec
from collector.transport.kafka import BufferedProducer, EndpointPublisher, KafkaFlowWriter
from tests.collector.test_alert_schema import validate
from tests.conftest import FIXTURES
from tests.live import Running, Tansu, Worker

pytestmark = pytest.mark.live

V9_FIXTURE = FIXTURES / "netflow_v9" / "softflowd_beacon_world.pcap"


@pytest.fixture
def broker(tmp_path):
    """A tansu broker on a free loopback port, stopped at teardown."""
    b = Tansu(tmp_path)
    yield b
    b.stop()


def read_topic(bootstrap: str, topic: str, timeout: float = 20.0) -> list:
    """Every record on a topic (all partitions, from the start to the end offsets of now)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    async def run():
        c = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
        await c.start()
        try:
            await c._client.force_metadata_update()
            parts = c.partitions_for_topic(topic) or set()
            tps = [TopicPartition(topic, p) for p in sorted(parts)]
            if not tps:
                return []
            c.assign(tps)
            await c.seek_to_beginning(*tps)
            ends = await c.end_offsets(tps)
            todo = {tp for tp in tps if ends[tp] > 0}
            out = []
            end = time.monotonic() + timeout
            while todo and time.monotonic() < end:
                got = await c.getmany(*todo, timeout_ms=500)
                for tp, recs in got.items():
                    out.extend(recs)
                    if recs and recs[-1].offset + 1 >= ends[tp]:
                        todo.discard(tp)
            return out
        finally:
            await c.stop()

    return asyncio.run(run())


def many_pairs(n: int, seed: int = 1) -> np.ndarray:
    """n rows over many distinct (source, destination) pairs, on an MQTT port."""
    rng = np.random.default_rng(seed)
    rows = np.zeros(n, FLOW_DTYPE)
    rows["start_ns"] = rows["end_ns"] = 1_700_000_000_000_000_000 + np.arange(n) * 1_000_000
    rows["src_lo"] = 0xFFFF_0A00_0000 | rng.integers(0, 200, n).astype(np.uint64)
    rows["dst_lo"] = 0xFFFF_C633_6400 | rng.integers(0, 50, n).astype(np.uint64)
    rows["dst_port"] = 1883
    rows["proto"] = 6
    rows["bytes"] = np.arange(n)
    rows["dataset"] = 2
    return rows


def decode_all(records) -> tuple[FlowBatch, dict]:
    """The flows of the records, and each pair's partitions."""
    batches, where = [], {}
    for r in records:
        b = flowcodec.decode(r.value)
        batches.append(b)
        for pair in zip(b.src_lo.tolist(), b.dst_lo.tolist()):
            where.setdefault(pair, set()).add(r.partition)
    return FlowBatch.concat(batches), where


def kafka(bootstrap: str, **kw) -> Kafka:
    return Kafka(bootstrap=bootstrap, partitions=4, **kw)


def test_flows_reach_the_topic_each_pair_in_one_partition(broker):
    counters = Counters()
    writer = KafkaFlowWriter(kafka(broker.bootstrap), counters)
    rows = many_pairs(20_000)
    for part in np.array_split(rows, 7):
        assert writer.publish_rows(part, [""])
    assert writer.flush(30)
    writer.close()
    got, where = decode_all(read_topic(broker.bootstrap, "brokerwatch.flows"))
    assert sorted(got.bytes.tolist()) == list(range(len(rows)))  # every row, once
    assert all(len(p) == 1 for p in where.values())  # one pair, one partition ...
    expect = flowcodec.partition_of(got.columns, 4)  # ... the one its pair hash names
    parts = {pair: next(iter(p)) for pair, p in where.items()}
    assert [parts[(s, d)] for s, d in zip(got.src_lo.tolist(), got.dst_lo.tolist())] == expect.tolist()
    assert len({p for ps in where.values() for p in ps}) == 4
    assert counters.get("brokerwatch_kafka_produced_rows_total", ("brokerwatch.flows",)) == len(rows)
    assert counters.get("brokerwatch_kafka_buffered_bytes") == 0


def test_the_json_option_carries_ecs_records_that_read_back_to_the_same_rows(broker):
    writer = KafkaFlowWriter(kafka(broker.bootstrap, flows_format="json"), Counters())
    rows = many_pairs(300)
    writer.publish_rows(rows, [""])
    writer.close()
    records = read_topic(broker.bootstrap, "brokerwatch.flows")
    assert len(records) == 300
    first = json.loads(records[0].value)
    assert first["destination"]["port"] == 1883 and first["event"]["dataset"] == "netflow.v9"
    back = flowcodec.decode_json([json.loads(r.value) for r in records])
    assert sorted(back.bytes.tolist()) == list(range(300))
    order = np.argsort(back.bytes)
    for name in ("start_ns", "src_lo", "dst_lo", "dst_port", "proto"):
        assert back.columns[name][order].tolist() == rows[name].tolist(), name


def test_endpoint_events_are_keyed_by_host(broker):
    producer = BufferedProducer(kafka(broker.bootstrap), Counters(), ["brokerwatch.endpoint"])
    events = [{"@timestamp": "2026-01-15T00:00:00Z", "event": {"dataset": "sysmon", "action": "network_connect"},
               "host": {"name": f"host{i % 3}"}, "process": {"name": "python.exe"}} for i in range(9)]
    assert EndpointPublisher(producer, "brokerwatch.endpoint").publish(events) == 9
    producer.close()
    records = read_topic(broker.bootstrap, "brokerwatch.endpoint")
    assert sorted(r.key for r in records) == sorted(f"host{i % 3}".encode() for i in range(9))
    by_key = {}
    for r in records:
        by_key.setdefault(r.key, set()).add(r.partition)
        assert json.loads(r.value)["host"]["name"] == r.key.decode()
    assert all(len(p) == 1 for p in by_key.values())


def test_a_collectors_endpoint_batches_reach_the_endpoint_topic_as_ecs_json(broker):
    """What a receive worker's host-log listeners hand the writer (the channel's interface) arrives as JSON."""
    from analytics.endpoint import ACTION_ID, OS_ID, EndpointBatchBuilder

    b = EndpointBatchBuilder()
    for i in range(6):
        b.add(1_768_435_200_000_000_000 + i, ACTION_ID["network_connect"], OS_ID["windows"], "sysmon",
              host=f"ws-{i % 2}", pid=100 + i, executable="C:\\Python\\python.exe", dst_ip="203.0.113.50",
              dst_port=1883, proto=6)
    batch = b.build()
    writer = KafkaFlowWriter(kafka(broker.bootstrap), Counters())
    assert writer.publish_endpoint(batch)
    writer.close()
    records = read_topic(broker.bootstrap, "brokerwatch.endpoint")
    assert sorted(json.loads(r.value)["process"]["pid"] for r in records) == list(range(100, 106))
    assert {json.loads(r.value)["host"]["name"]: r.key.decode() for r in records} == {"ws-0": "ws-0", "ws-1": "ws-1"}
    assert {json.loads(r.value)["destination"]["port"] for r in records} == {1883}


def test_a_broker_outage_is_buffered_up_to_the_bound_then_counted(broker):
    """The broker stops for 30 s: what is offered meanwhile waits in the buffer and arrives after the restart;
    beyond the bound it is dropped and counted; nothing raises."""
    counters = Counters()
    bound = 600_000
    writer = KafkaFlowWriter(kafka(broker.bootstrap), counters, max_bytes=bound)
    before = many_pairs(1000, seed=1)
    writer.publish_rows(before, [""])
    assert writer.flush(30)
    assert len(decode_all(read_topic(broker.bootstrap, "brokerwatch.flows"))[0]) == 1000
    broker.stop()
    during = many_pairs(4000, seed=2)  # 424 kB: within the bound
    during["bytes"] += 10_000
    assert writer.publish_rows(during, [""])
    time.sleep(1)
    over = many_pairs(2000, seed=3)  # 212 kB more: beyond it
    assert not writer.publish_rows(over, [""])
    assert counters.get("brokerwatch_kafka_dropped_rows_total", ("brokerwatch.flows", "full")) == 2000
    assert counters.get("brokerwatch_kafka_buffered_bytes") >= during.nbytes
    time.sleep(29)
    broker.start()  # memory storage: the topics come back empty, created again by the producer
    assert writer.flush(60), "the buffer was not delivered after the broker came back"
    writer.close()
    got = decode_all(read_topic(broker.bootstrap, "brokerwatch.flows"))[0]
    assert sorted(got.bytes.tolist()) == sorted(during["bytes"].tolist())
    assert counters.get("brokerwatch_kafka_buffered_bytes") == 0
    assert sum(counters.series("brokerwatch_kafka_connect_errors_total").values()) \
        + sum(counters.series("brokerwatch_kafka_send_errors_total").values()) > 0


# --------------------------------------------------------------------------------------- analytics workers

def reference_alerts(tmp_path) -> dict:
    """`brokerwatch replay` of the fixture on one machine (--role all): the last revision per event.id."""
    out = tmp_path / "reference.jsonl"
    assert main(["replay", str(V9_FIXTURE), "--alerts", str(out)]) == 0
    return last_revisions([json.loads(line) for line in out.read_text().splitlines()])


def last_revisions(alerts: list[dict]) -> dict:
    out = {}
    for a in alerts:
        if a["event"]["id"] not in out or a["brokerwatch"]["revision"] >= out[a["event"]["id"]]["brokerwatch"]["revision"]:
            out[a["event"]["id"]] = a
    return out


def topic_alerts(bootstrap: str) -> list[dict]:
    return [json.loads(r.value) for r in read_topic(bootstrap, "brokerwatch.alerts")]


def wait_alerts(bootstrap: str, want: set, timeout: float) -> list[dict]:
    """The alerts topic once it holds every id in want (or the timeout passed)."""
    end = time.monotonic() + timeout
    while True:
        alerts = topic_alerts(bootstrap)
        if want <= {a["event"]["id"] for a in alerts} or time.monotonic() > end:
            return alerts
        time.sleep(1)


def same_alert(a: dict, b: dict) -> None:
    for path in (("rule", "id"), ("source", "ip"), ("destination", "ip"), ("destination", "port"),
                 ("network", "protocol"), ("brokerwatch", "window", "start")):
        x, y = a, b
        for k in path:
            x, y = x[k], y[k]
        assert x == y, path
    assert a["brokerwatch"]["evidence"]["analytics"] == b["brokerwatch"]["evidence"]["analytics"]
    assert abs(a["brokerwatch"]["score"] - b["brokerwatch"]["score"]) < 5


def publish_replay(bootstrap: str) -> None:
    assert main(["replay", "--kafka", bootstrap, "--role", "collector", str(V9_FIXTURE)]) == 0


def no_duplicates(alerts: list[dict]) -> None:
    keys = [(a["event"]["id"], a["brokerwatch"]["revision"]) for a in alerts]
    assert len(keys) == len(set(keys)), keys


def test_two_analytics_workers_give_the_alerts_of_one_machine(tmp_path, broker):
    """collector → flows topic → two workers in one group → alerts topic = `--role all` on the same replay."""
    want = reference_alerts(tmp_path)
    assert want
    workers = [Worker(tmp_path, broker.bootstrap, f"w{i}") for i in range(2)]
    try:
        publish_replay(broker.bootstrap)
        alerts = wait_alerts(broker.bootstrap, set(want), 90)
    finally:
        logs = [w.stop() for w in workers]
    got = last_revisions(alerts)
    assert set(got) == set(want), logs
    for i in want:
        same_alert(got[i], want[i])
    no_duplicates(alerts)
    assert all("pair state rebuilt" in log for log in logs)  # both took part in the group
    for a in alerts:  # the topic carries the documented alert (docs/schemas/alert.schema.json)
        validate(a)


def test_a_worker_killed_mid_run_loses_no_alert_and_its_partitions_move(tmp_path, broker):
    """The victim reads every flow (alone in the group at first) but never gets to a pass; the survivor joins,
    the victim is SIGKILLed, the survivor takes every partition, rebuilds from the topic and raises the alerts."""
    want = reference_alerts(tmp_path)
    victim = Worker(tmp_path, broker.bootstrap, "victim", cadence=3600)
    publish_replay(broker.bootstrap)
    time.sleep(3)  # it has read the flows
    survivor = Worker(tmp_path, broker.bootstrap, "survivor")
    try:
        survivor.wait_for("pair state rebuilt", 60)  # the group split the partitions
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait()
        every = "[" + ", ".join(sorted(f"'brokerwatch.flows:{p}'" for p in range(12))) + "]"
        survivor.wait_for(f"partitions {every}: pair state rebuilt", 60)  # the victim's partitions moved
        alerts = wait_alerts(broker.bootstrap, set(want), 120)
        time.sleep(3)  # passes after the takeover (cadence 1 s) must not publish an alert again
        alerts = topic_alerts(broker.bootstrap)
    finally:
        log = survivor.stop()
    got = last_revisions(alerts)
    assert set(got) == set(want), log
    for i in want:
        same_alert(got[i], want[i])
    no_duplicates(alerts)


def test_a_collector_killed_and_restarted_has_its_templates_and_no_alert_is_repeated(tmp_path, broker):
    """kill -9 of a collector: its restart decodes NetFlow v9 data without the templates being sent again (the
    template state was saved when they were learned), and the alerts topic has no (event.id, revision) twice."""
    want = reference_alerts(tmp_path)
    dgrams = [d.payload for d in datagrams(str(V9_FIXTURE))]
    # v9 datagrams carrying a template flowset (id 0): sent once, before the kill
    has_template = [int.from_bytes(d[20:22], "big") == 0 for d in dgrams]
    worker = Worker(tmp_path, broker.bootstrap, "w")
    state = str(tmp_path / "state" / "decoders.json")
    extra = ("--role", "collector", "--kafka", broker.bootstrap)
    try:
        svc = Running(tmp_path, state=state, extra=extra)
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        half = len(dgrams) // 2
        for d in dgrams[:half]:
            sender.sendto(d, ("127.0.0.1", svc.ports["netflow"]))
        time.sleep(2)  # decoded, published, templates saved
        svc.proc.send_signal(signal.SIGKILL)
        svc.proc.wait()
        svc = Running(tmp_path, state=state, extra=extra)
        for d, tpl in zip(dgrams[half:], has_template[half:]):
            if not tpl:
                sender.sendto(d, ("127.0.0.1", svc.ports["netflow"]))
        result = svc.stop()
        alerts = wait_alerts(broker.bootstrap, set(want), 60)
    finally:
        worker.stop()
    assert result["rejected"] == {}, result["stderr"]  # no data waiting for a template: no cold start
    assert sum(result["records"].values()) > 0
    assert set(last_revisions(alerts)) == set(want)
    no_duplicates(alerts)
