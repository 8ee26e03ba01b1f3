"""The Kafka transport (DESIGN §3): flows, endpoint events and alerts through a real broker (aiokafka).

``BufferedProducer`` owns one aiokafka producer on a thread of its own (with its own event loop), so that callers on
any thread, the receive loop included, hand it messages without waiting. Messages wait in a queue bounded in bytes
(``Kafka.buffer_mb``); a message leaves the queue only once the broker has acknowledged it (acks=all), so a broker
outage is buffered up to the bound and delivered after the reconnect (at least once: a batch whose send failed half
way is sent again whole). A full queue drops the newest offer and counts it; nothing here raises into a caller.

On it sit:
- ``KafkaFlowWriter``: the collector's side of ``brokerwatch.flows``, with the channel writer's ``publish`` /
  ``publish_rows`` interface. Rows are split by partition (their (source, destination) pair's hash modulo the topic's
  partition count, see collector/transport/flowcodec.py) on the sender thread at send time, so the split always
  uses the topic's real partition count and the receive loop only copies the rows;
- ``KafkaAlertSink``: JSON alerts to ``brokerwatch.alerts``, keyed by ``event.id`` (a compacted topic keeps each
  alert's latest revision);
- ``EndpointPublisher``: endpoint events (any JSON-able dicts) to ``brokerwatch.endpoint``, keyed by host name;
  ``KafkaFlowWriter.publish_endpoint`` sends a receive worker's EndpointBatch through it (``to_ecs`` per event).

The topics are created on connect (and again after a reconnect: a broker that lost its topics gets them back) with
the configured partitions and replication factor; existing topics are left as they are.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import ssl
import threading
import time

import numpy as np

from analytics.config import Kafka
from analytics.schema import FlowBatch
from collector.ecs import dumps
from collector.metrics import RateLimitedLog
from collector.transport import flowcodec
from collector.transport.channel import KIND_ROWS

log = logging.getLogger("brokerwatch.kafka")
_limited = RateLimitedLog(0.2, log)

#: Messages sent before their acknowledgements are awaited together.
SEND_WINDOW = 256
#: Largest flows message (rows are cut into messages of at most this many).
MAX_ROWS_PER_MESSAGE = 8192
#: Seconds between reconnect attempts (doubling up to the cap).
RECONNECT_S = (0.5, 5.0)


def kafka_config(config, bootstrap: str | None) -> Kafka:
    """The config's Kafka block, its bootstrap replaced by ``--kafka`` when given."""
    import dataclasses

    return dataclasses.replace(config.Kafka, bootstrap=bootstrap) if bootstrap else config.Kafka


def client_options(k: Kafka) -> dict:
    """aiokafka client keyword arguments (bootstrap, TLS, SASL) from the Kafka block."""
    opts: dict = {"bootstrap_servers": k.bootstrap, "security_protocol": k.security_protocol}
    if k.security_protocol in ("SSL", "SASL_SSL"):
        ctx = ssl.create_default_context(cafile=k.tls_cafile or None)
        if k.tls_certfile:
            ctx.load_cert_chain(k.tls_certfile, k.tls_keyfile or None)
        opts["ssl_context"] = ctx
    if k.sasl_mechanism:
        opts.update(sasl_mechanism=k.sasl_mechanism, sasl_plain_username=k.sasl_username,
                    sasl_plain_password=k.sasl_password)
    return opts


async def ensure_topics(k: Kafka, topics: list[str]) -> None:
    """Create the topics that do not exist yet (partitions and replication from the Kafka block)."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(**client_options(k), request_timeout_ms=5000)
    await admin.start()
    try:
        have = set(await admin.list_topics())
        new = [NewTopic(t, k.partitions, k.replication_factor) for t in dict.fromkeys(topics) if t and t not in have]
        if new:
            await admin.create_topics(new)
            log.info("created topics %s", ", ".join(t.name for t in new))
    finally:
        await admin.close()


class _Pending:
    """One queued offer: ready messages (topic, key, value, partition) or flows rows split at send time."""

    __slots__ = ("topic", "key", "value", "partition", "rows", "strings", "size", "count")

    def __init__(self, topic: str, value: bytes | None, key: bytes | None = None, partition: int | None = None,
                 rows: np.ndarray | None = None, strings: list[str] | None = None):
        self.topic, self.key, self.value, self.partition = topic, key, value, partition
        self.rows, self.strings = rows, strings
        self.count = len(rows) if rows is not None else 0
        self.size = len(value) if value is not None else rows.nbytes + sum(len(s) for s in strings)


class BufferedProducer:
    """One aiokafka producer on its own thread; ``offer`` queues (bounded in bytes, drops counted) and never waits."""

    def __init__(self, kafka: Kafka, counters, topics: list[str], flows_format: str = "binary",
                 max_bytes: int | None = None):
        self.kafka = kafka
        self.counters = counters
        self.topics = [t for t in topics if t]
        self.flows_format = flows_format
        self.max_bytes = int(max_bytes if max_bytes is not None else kafka.buffer_mb << 20)
        self._queue: collections.deque[_Pending] = collections.deque()
        self._queued = 0
        self._lock = threading.Lock()
        self._closing = False
        self.connected = False
        self._partitions: dict[str, int] = {}
        self._loop = asyncio.new_event_loop()
        self._wake = asyncio.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(self._main(),),
                                        name="brokerwatch-kafka-producer", daemon=True)
        self._thread.start()

    @property
    def queued_bytes(self) -> int:
        """Bytes waiting for the broker's acknowledgement."""
        return self._queued

    def offer(self, item: _Pending) -> bool:
        """Queue one offer; False (counted as dropped) when the buffer is full or the producer is closing."""
        with self._lock:
            if self._closing or self._queued + item.size > self.max_bytes:
                reason = "closed" if self._closing else "full"
                self.counters.inc("brokerwatch_kafka_dropped_rows_total", (item.topic, reason), max(item.count, 1))
                return False
            self._queue.append(item)
            self._queued += item.size
            self._idle.clear()
        self.counters.set("brokerwatch_kafka_buffered_bytes", (), self._queued)
        self._loop.call_soon_threadsafe(self._wake.set)
        return True

    def send(self, topic: str, value: bytes, key: bytes | None = None, partition: int | None = None) -> bool:
        """Queue one ready message."""
        return self.offer(_Pending(topic, value, key, partition))

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued has been acknowledged; False when the timeout came first."""
        return self._idle.wait(timeout)

    def close(self, timeout: float | None = 30.0) -> None:
        """Deliver what is queued (waiting up to timeout for the broker), then stop; what is left is counted."""
        self.flush(timeout)
        with self._lock:
            self._closing = True
        self._loop.call_soon_threadsafe(self._wake.set)
        self._thread.join(timeout)

    # ------------------------------------------------------------------------------------------ sender thread

    def _messages(self, item: _Pending) -> list[tuple[str, bytes | None, bytes, int | None]]:
        if item.rows is None:
            return [(item.topic, item.key, item.value, item.partition)]
        parts = self._partitions.get(item.topic) or self.kafka.partitions
        out = []
        for p, rows in flowcodec.split_by_partition(item.rows, parts):
            key = str(p).encode()
            if self.flows_format == "json":
                out.extend((item.topic, key, v, p) for v in flowcodec.encode_json(rows, item.strings))
                continue
            for i in range(0, len(rows), MAX_ROWS_PER_MESSAGE):
                out.append((item.topic, key, flowcodec.encode(rows[i:i + MAX_ROWS_PER_MESSAGE], item.strings), p))
        return out

    async def _connect(self):
        from aiokafka import AIOKafkaProducer

        await ensure_topics(self.kafka, self.topics)
        producer = AIOKafkaProducer(**client_options(self.kafka), acks="all", linger_ms=5, max_batch_size=1 << 20,
                                    request_timeout_ms=10000, max_request_size=16 << 20,
                                    retry_backoff_ms=200)
        await producer.start()
        try:
            for t in self.topics:
                parts = await producer.partitions_for(t)
                self._partitions[t] = len(parts)
        except BaseException:
            await producer.stop()
            raise
        return producer

    async def _main(self) -> None:
        producer = None
        backoff = RECONNECT_S[0]
        while True:
            with self._lock:
                batch = [self._queue[i] for i in range(min(SEND_WINDOW, len(self._queue)))]
                if not batch:
                    self._idle.set()
                    if self._closing:
                        break
                    self._wake.clear()
            if not batch:
                await self._wake.wait()
                continue
            if producer is None:
                try:
                    producer = await self._connect()
                    self.connected = True
                    backoff = RECONNECT_S[0]
                except Exception as exc:  # noqa: BLE001 - any failure to connect is retried, never raised
                    self.counters.inc("brokerwatch_kafka_connect_errors_total", (type(exc).__name__,))
                    _limited.warning("connect", "kafka %s unreachable (%s); retrying, %d bytes buffered",
                                     self.kafka.bootstrap, exc, self._queued)
                    if self._closing:
                        break
                    await asyncio.sleep(backoff)
                    backoff = min(2 * backoff, RECONNECT_S[1])
                    continue
            try:
                sent = 0
                futures = []
                for item in batch:
                    for topic, key, value, part in self._messages(item):
                        futures.append(await producer.send(topic, value, key=key, partition=part))
                        sent += len(value)
                await asyncio.gather(*futures)
            except Exception as exc:  # noqa: BLE001 - the batch stays queued and is sent again after a reconnect
                self.counters.inc("brokerwatch_kafka_send_errors_total", (type(exc).__name__,))
                _limited.warning("send", "kafka send failed (%s); reconnecting, %d bytes buffered", exc, self._queued)
                self.connected = False
                try:
                    await asyncio.wait_for(producer.stop(), 10)
                except Exception:  # noqa: BLE001 - a producer that cannot stop cleanly is dropped all the same
                    pass
                producer = None
                await asyncio.sleep(backoff)
                continue
            with self._lock:
                for item in batch:
                    self._queue.popleft()
                    self._queued -= item.size
            for item in batch:
                self.counters.inc("brokerwatch_kafka_produced_messages_total", (item.topic,))
                if item.count:
                    self.counters.inc("brokerwatch_kafka_produced_rows_total", (item.topic,), item.count)
            self.counters.inc("brokerwatch_kafka_produced_bytes_total", (), sent)
            self.counters.set("brokerwatch_kafka_buffered_bytes", (), self._queued)
        with self._lock:
            lost = list(self._queue)
            self._queue.clear()
            self._queued = 0
        for item in lost:
            self.counters.inc("brokerwatch_kafka_dropped_rows_total", (item.topic, "closed"), max(item.count, 1))
        if lost:
            log.error("kafka: %d queued messages could not be delivered before the stop", len(lost))
        if producer is not None:
            try:
                await asyncio.wait_for(producer.stop(), 10)
            except Exception:  # noqa: BLE001
                pass


class KafkaFlowWriter:
    """The collector's side of ``brokerwatch.flows``: the channel writer's interface over a BufferedProducer."""

    def __init__(self, kafka: Kafka, counters, max_bytes: int | None = None):
        self.topic = kafka.flows_topic
        self.producer = BufferedProducer(kafka, counters, [kafka.flows_topic, kafka.endpoint_topic,
                                                           kafka.alerts_topic], kafka.flows_format, max_bytes)
        self.endpoints = EndpointPublisher(self.producer, kafka.endpoint_topic)
        self._counters = counters

    @property
    def queued_bytes(self) -> int:
        """Bytes buffered towards the broker."""
        return self.producer.queued_bytes

    def publish(self, batch: FlowBatch) -> bool:
        """Queue a FlowBatch; False (its rows counted as dropped) when the buffer is full."""
        if not len(batch):
            return True
        return self.publish_rows(batch.to_rows(), batch.strings)

    def publish_endpoint(self, batch) -> bool:
        """Queue endpoint events (an EndpointBatch) to the endpoint topic as JSON, keyed by host name."""
        n = len(batch)
        if not n:
            return True
        sent = self.endpoints.publish(batch.to_ecs(i) for i in range(n))
        self._counters.inc("brokerwatch_channel_published_rows_total", ("kafka-endpoint",), sent)
        return sent == n

    def publish_rows(self, rows: np.ndarray, strings: list[str], kind: int = KIND_ROWS) -> bool:
        """Queue FLOW_DTYPE rows with their string table (copied: the caller may reuse its buffer); endpoint rows
        (``KIND_ENDPOINT``, as the channel takes them) go to the endpoint topic."""
        if kind != KIND_ROWS:
            from analytics.endpoint import EndpointBatch

            return self.publish_endpoint(EndpointBatch(rows, list(strings)))
        if not len(rows):
            return True
        ok = self.producer.offer(_Pending(self.topic, None, rows=np.array(rows, copy=True), strings=list(strings)))
        if ok:
            self._counters.inc("brokerwatch_channel_published_rows_total", ("kafka",), len(rows))
        else:
            self._counters.inc("brokerwatch_channel_dropped_rows_total", ("kafka",), len(rows))
        return ok

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until the broker has everything queued."""
        return self.producer.flush(timeout)

    def close(self, timeout: float | None = 30.0) -> None:
        """Deliver what is queued, then stop."""
        self.producer.close(timeout)


class KafkaAlertSink:
    """Alerts as JSON to ``brokerwatch.alerts``, keyed by event.id (a compacted topic keeps the latest revision)."""

    def __init__(self, producer: BufferedProducer, topic: str):
        self.producer = producer
        self.topic = topic

    def write(self, alert) -> None:
        """Queue one alert."""
        self.producer.send(self.topic, dumps(alert.to_dict()).encode(), key=alert.id.encode())

    def close(self) -> None:
        """Deliver what is queued (waiting up to 30 s for the broker), then stop the producer."""
        self.producer.close(30.0)


class EndpointPublisher:
    """Endpoint events (JSON-able dicts, ECS names) to ``brokerwatch.endpoint``, keyed by ``host.name``."""

    def __init__(self, producer: BufferedProducer, topic: str):
        self.producer = producer
        self.topic = topic

    def publish(self, events) -> int:
        """Queue each event; returns how many were accepted (the rest are counted as dropped)."""
        n = 0
        for ev in events:
            host = (ev.get("host") or {}).get("name") or ""
            n += self.producer.send(self.topic, dumps(ev).encode(), key=str(host).encode() or None)
        return n


def publish_endpoint_events(producer: BufferedProducer, kafka: Kafka, events) -> int:
    """Send endpoint events to the endpoint topic (for the host-log side); returns how many were queued."""
    return EndpointPublisher(producer, kafka.endpoint_topic).publish(events)


def wait_connected(producer: BufferedProducer, timeout: float) -> bool:
    """Whether the producer reached the broker within timeout seconds (start-up checks)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if producer.connected:
            return True
        time.sleep(0.05)
    return producer.connected
