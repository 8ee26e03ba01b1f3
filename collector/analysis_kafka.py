"""``brokerwatch run --role analytics``: an analytics worker of the consumer group on ``brokerwatch.flows``.

Workers form one consumer group (``Kafka.group``); the flows topic is partitioned by (source, destination) pair
(collector/transport/flowcodec.py), so each pair's rows reach exactly one worker and adding a worker splits the
pairs. The worker reads its partitions, feeds the detector, and runs a pass every cadence (timed from the end of the
last one); the pass runs on a thread so that the consumer keeps its group membership (heartbeats) meanwhile. Its
alerts go to stdout, the alerts file and ``brokerwatch.alerts``; offsets are committed only once the alerts of
the pass that covered them are acknowledged by the broker (at least once, end to end).

When partitions move (a worker joins, leaves or dies) a worker whose set of partitions changed rebuilds its pair
state from the topic: a new detector, each partition read again from the first message produced within TimeWindow
of now (``offsets_for_times``). It also reads the alerts already on ``brokerwatch.alerts`` over the last two
windows into the detector (``Detector.remember``), so a pair that another worker already alerted on is updated
as a revision, never alerted twice under the same (event.id, revision). A rejoin with the same partitions (a
broker restart) keeps the state. The design needs no compacted state topic (tansu, the broker of the tests, keeps
its topics in memory); the cost of a rebalance is reading back one TimeWindow of the moved partitions.

The analytics role also reads goflow2's protobuf flow topic when ``Kafka.topics.goflow2`` names it
(collector/transport/goflow2.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time

import orjson
from aiokafka import ConsumerRebalanceListener

from analytics.alerts import Alert
from analytics.schema import FlowBatch
from collector.metrics import Counters, RateLimitedLog, serve_metrics
from collector.transport import flowcodec, goflow2
from collector.transport.kafka import BufferedProducer, KafkaAlertSink, client_options, ensure_topics

log = logging.getLogger("brokerwatch.analytics.kafka")
_limited = RateLimitedLog(0.2, log)


class KafkaAnalyticsWorker(ConsumerRebalanceListener):
    """One analytics worker: its partitions of the flows topic in, detector passes, alerts out, offsets committed."""

    def __init__(self, config, sinks, producer: BufferedProducer, cadence_s: float, counters: Counters,
                 window_rows: int = 20_000_000):
        from analytics.detections.an0005 import DetectorParams

        self.config = config
        self.kafka = config.Kafka
        self.sinks = sinks
        self.producer = producer
        self.cadence_s = float(cadence_s)
        self.counters = counters
        self.params = DetectorParams(max_rows=window_rows)
        self.detector = self._new_detector()
        self.owned: set = set()
        self.consumer = None
        self.rows = 0
        self.passes = 0
        self.rebuilds = 0
        self.pass_s_max = 0.0

    def _new_detector(self):
        from analytics.detections.an0005 import Detector

        return Detector(self.config, self.params)

    # ------------------------------------------------------------------------------------- rebalance listener

    async def on_partitions_revoked(self, revoked) -> None:
        """Nothing to hand over: the next owner rebuilds from the topic."""

    async def on_partitions_assigned(self, assigned) -> None:
        """A changed set of partitions: rebuild the pair state from the topic within TimeWindow."""
        assigned = set(assigned)
        if assigned == self.owned:
            return  # the same partitions after a rejoin: the state is still right
        self.owned = assigned
        self.rebuilds += 1
        self.counters.inc("brokerwatch_kafka_rebuilds_total")
        self.detector = self._new_detector()
        since_ms = int((time.time() - self.config.TimeWindow.window_s) * 1000)
        c = self.consumer
        try:
            found = await c.offsets_for_times({tp: since_ms for tp in assigned}) if assigned else {}
        except Exception as exc:  # noqa: BLE001 - the committed or reset position is the fallback
            log.warning("cannot look offsets up by time (%s); reading the partitions from the start", exc)
            found = {}
        for tp in assigned:
            hit = found.get(tp)
            if hit is not None:
                c.seek(tp, hit.offset)
            else:
                await c.seek_to_beginning(tp) if tp not in found else await c.seek_to_end(tp)
        published = await self._published_alerts()
        self.detector.remember(published)
        log.info("partitions %s: pair state rebuilt from the last %g s of the topic; %d published alerts known",
                    sorted(f"{tp.topic}:{tp.partition}" for tp in assigned), self.config.TimeWindow.window_s,
                    len(published))

    async def _published_alerts(self, budget_s: float = 30.0) -> list[Alert]:
        """The alerts on the alerts topic over the last two windows (their latest revisions win in remember)."""
        from aiokafka import AIOKafkaConsumer, TopicPartition

        topic = self.kafka.alerts_topic
        reader = AIOKafkaConsumer(**client_options(self.kafka), enable_auto_commit=False,
                                  auto_offset_reset="earliest", group_id=None)
        out: list[Alert] = []
        try:
            await reader.start()
            parts = reader.partitions_for_topic(topic) or await self._partitions(reader, topic)
            tps = [TopicPartition(topic, p) for p in sorted(parts)]
            if not tps:
                return out
            reader.assign(tps)
            ends = await reader.end_offsets(tps)
            since_ms = int((time.time() - 2 * self.config.TimeWindow.window_s) * 1000)
            found = await reader.offsets_for_times({tp: since_ms for tp in tps})
            todo = {}
            for tp in tps:
                if found.get(tp) is not None and found[tp].offset < ends[tp]:
                    reader.seek(tp, found[tp].offset)
                    todo[tp] = ends[tp]
            end = time.monotonic() + budget_s
            while todo and time.monotonic() < end:
                got = await reader.getmany(*todo, timeout_ms=500)
                for tp, recs in got.items():
                    for r in recs:
                        try:
                            out.append(Alert.from_dict(orjson.loads(r.value)))
                        except (ValueError, KeyError, TypeError):
                            self.counters.inc("brokerwatch_kafka_decode_errors_total", (topic, "alert"))
                    if recs and recs[-1].offset + 1 >= todo[tp]:
                        del todo[tp]
        except Exception as exc:  # noqa: BLE001 - without them a dashboard may see a revision twice, never a loss
            log.warning("cannot read the published alerts (%s)", exc)
        finally:
            await reader.stop()
        return out

    @staticmethod
    async def _partitions(reader, topic: str) -> set:
        await reader._client.force_metadata_update()  # aiokafka keeps no metadata of unsubscribed topics
        return reader.partitions_for_topic(topic) or set()

    # ------------------------------------------------------------------------------------------------ loop

    def _decode(self, rec) -> FlowBatch | None:
        try:
            if rec.topic == self.kafka.goflow2_topic:
                batch = goflow2.decode_messages([rec.value], self.counters)
            elif rec.value[:4] == flowcodec.MAGIC:
                batch = flowcodec.decode(rec.value)
            else:  # the JSON option: one ECS flow record a message
                batch = flowcodec.decode_json([orjson.loads(rec.value)])
        except flowcodec.FlowCodecError as exc:
            self.counters.inc("brokerwatch_kafka_decode_errors_total", (rec.topic, exc.reason))
            _limited.warning("decode", "unreadable message on %s:%d@%d: %s", rec.topic, rec.partition, rec.offset,
                             exc)
            return None
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            self.counters.inc("brokerwatch_kafka_decode_errors_total", (rec.topic, "json"))
            _limited.warning("decode", "unreadable message on %s:%d@%d: %s", rec.topic, rec.partition, rec.offset,
                             exc)
            return None
        self.rows += len(batch)
        self.counters.inc("brokerwatch_kafka_consumed_rows_total", (rec.topic,), len(batch))
        return batch

    async def _pass(self) -> None:
        t0 = time.monotonic()
        alerts = await asyncio.get_running_loop().run_in_executor(None, self.detector.evaluate)
        self.sinks.write_many(alerts)
        took = time.monotonic() - t0
        self.passes += 1
        self.pass_s_max = max(self.pass_s_max, took)
        self.counters.set("brokerwatch_analytics_passes_total", (), self.passes)
        self.counters.set("brokerwatch_analytics_alerts_total", (), self.sinks.written)
        # the offsets are committed only once this pass's alerts are with the broker: at least once, end to end
        delivered = await asyncio.get_running_loop().run_in_executor(None, self.producer.flush, 30.0)
        if delivered:
            try:
                await self.consumer.commit()
            except Exception as exc:  # noqa: BLE001 - a failed commit re-reads a little after a rebalance
                self.counters.inc("brokerwatch_kafka_commit_errors_total", (type(exc).__name__,))
                _limited.warning("commit", "offset commit failed: %s", exc)
        await self._lag()

    async def _lag(self) -> None:
        c = self.consumer
        for tp in list(c.assignment()):
            high = c.highwater(tp)
            if high is None:
                continue
            try:
                pos = await c.position(tp)
            except Exception:  # noqa: BLE001 - a partition being revoked
                continue
            self.counters.set("brokerwatch_kafka_consumer_lag", (f"{tp.topic}:{tp.partition}",), max(0, high - pos))

    async def run(self, stop: asyncio.Event) -> dict:
        """Consume and analyse until ``stop`` is set; then a final pass, alerts delivered, offsets committed."""
        from aiokafka import AIOKafkaConsumer

        topics = [t for t in (self.kafka.flows_topic, self.kafka.goflow2_topic) if t]
        while not stop.is_set():
            try:
                await ensure_topics(self.kafka, [self.kafka.flows_topic, self.kafka.alerts_topic])
                break
            except Exception as exc:  # noqa: BLE001 - the broker may come up after the worker
                self.counters.inc("brokerwatch_kafka_connect_errors_total", (type(exc).__name__,))
                _limited.warning("connect", "kafka %s unreachable (%s); retrying", self.kafka.bootstrap, exc)
                await asyncio.sleep(1.0)
        self.consumer = AIOKafkaConsumer(**client_options(self.kafka), group_id=self.kafka.group,
                                         enable_auto_commit=False, auto_offset_reset="earliest",
                                         session_timeout_ms=10000, heartbeat_interval_ms=1000,
                                         metadata_max_age_ms=5000, max_poll_interval_ms=3_600_000,
                                         retry_backoff_ms=500)
        await self.consumer.start()
        self.consumer.subscribe(topics, listener=self)
        print(f"brokerwatch: analytics worker ready (pid {os.getpid()}): reading {', '.join(topics)} from "
              f"{self.kafka.bootstrap} in group {self.kafka.group}", file=sys.stderr, flush=True)
        next_eval = time.monotonic() + self.cadence_s
        while not stop.is_set():
            await self._read(200)
            if time.monotonic() >= next_eval:
                await self._pass()
                next_eval = time.monotonic() + self.cadence_s
        end = time.monotonic() + 5.0
        while time.monotonic() < end and await self._read(500):
            pass  # what is already fetched before the final pass
        await self._pass()
        self.sinks.write_many(self.detector.flush())
        self.sinks.close()
        await self.consumer.stop()
        return {"rows": self.rows, "alerts": self.sinks.written, "passes": self.passes,
                "longest_pass_s": round(self.pass_s_max, 3), "rebuilds": self.rebuilds}

    async def _read(self, timeout_ms: int) -> int:
        try:
            got = await self.consumer.getmany(timeout_ms=timeout_ms, max_records=20000)
        except Exception as exc:  # noqa: BLE001 - a broker outage: aiokafka reconnects, we wait
            self.counters.inc("brokerwatch_kafka_consume_errors_total", (type(exc).__name__,))
            _limited.warning("consume", "kafka fetch failed (%s); retrying", exc)
            await asyncio.sleep(1.0)
            return 0
        n = 0
        batches = []
        for recs in got.values():
            batches.extend(b for b in map(self._decode, recs) if b is not None)
            n += len(recs)
        if batches:  # one ingest per fetch: the detector's per-call cost is paid once, not per partition's message
            self.detector.ingest(FlowBatch.concat(batches))
        return n


def serve_analytics(args, config) -> int:
    """Entry of ``brokerwatch run --role analytics``."""
    import numba

    from collector.sinks import FanOut, JsonLinesSink
    from collector.warmup import warm_analytics

    threads = args.analytics_threads or numba.config.NUMBA_NUM_THREADS
    numba.set_num_threads(max(1, min(int(threads), numba.config.NUMBA_NUM_THREADS)))
    warm_analytics(config)
    counters = Counters()
    producer = BufferedProducer(config.Kafka, counters, [config.Kafka.alerts_topic])
    sinks = FanOut([JsonLinesSink(sys.stdout), KafkaAlertSink(producer, config.Kafka.alerts_topic)]
                   + ([JsonLinesSink.open(args.alerts)] if args.alerts and args.alerts != "-" else []))
    worker = KafkaAnalyticsWorker(config, sinks, producer, args.cadence or config.TimeWindow.cadence_s, counters,
                                  args.window_rows)

    async def main() -> dict:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        metrics = None
        if args.metrics:
            host, _, port = args.metrics.rpartition(":")
            metrics = await serve_metrics(counters, host.strip("[]") or "127.0.0.1", int(port))
        try:
            return await worker.run(stop)
        finally:
            if metrics is not None:
                metrics.close()

    summary = asyncio.run(main())
    producer.close(30.0)
    dropped = sum(counters.series("brokerwatch_kafka_dropped_rows_total").values())
    print(f"brokerwatch: analytics worker stopped after {summary['rows']} rows; alerts {summary['alerts']}; "
          f"passes {summary['passes']} (longest {summary['longest_pass_s']} s); rebuilds {summary['rebuilds']}; "
          f"alerts undelivered {dropped}", file=sys.stderr, flush=True)
    return 0
