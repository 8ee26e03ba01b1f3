"""``brokerwatch replay``: the detections over files, with time taken from the data."""

from __future__ import annotations

import argparse
import os
import sys

from analytics.detections.an0005 import Detector
from analytics.detections.endpoint import EndpointDetector
from collector.config import ConfigError, load_config
from collector.enrich.devices import SamplingOverride
from collector.enrich.observers import Enricher, enrichment_wanted
from collector.errors import UsageError
from collector.inputs import InputError, OfflineSource, is_hostlog
from collector.sinks import FanOut, JsonLinesSink

NS = 1_000_000_000


def replay(args: argparse.Namespace, progress=None) -> int:
    """Decode the inputs in order, evaluate on the data's own cadence, write alerts; returns the exit code.

    Host logs are read before the flow inputs whatever their place on the command line: they are small beside
    the flows, and process contexts, DNS answers and endpoint connections must be known when a flow alert is
    attributed. Endpoint alerts are evaluated on the same data-time cadence as the network ones.
    ``progress`` is a ``collector.progress.Progress`` (or None): bytes read, records and their rate.
    """
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    source = OfflineSource(progress=progress.file if progress is not None else None,
                           sampling=SamplingOverride(config.Exporters),
                           server_ports=tuple(config.port_protocols()))
    kafka = _kafka(args, config)
    if getattr(args, "role", "all") == "collector":
        return _publish(args, kafka, source)
    sinks = [JsonLinesSink.open(args.alerts) if args.alerts else JsonLinesSink(sys.stdout)]
    if kafka is not None:
        from collector.metrics import Counters
        from collector.transport.kafka import BufferedProducer, KafkaAlertSink

        sinks.append(KafkaAlertSink(BufferedProducer(kafka, Counters(), [kafka.alerts_topic]), kafka.alerts_topic))
    out = FanOut(sinks)
    # observer names on alerts: offline, each exporter's first SNMP poll is waited for (bounded by its timeout)
    enricher = Enricher(config.Exporters) if enrichment_wanted(config.Exporters) else None

    def write(alerts) -> None:  # endpoint alerts carry no flow pair: they are left as they are
        for alert in enricher.alerts(alerts) if enricher is not None else alerts:
            out.write(alert)
    detector = Detector(config)
    endpoint = EndpointDetector(config)
    cadence = int(config.TimeWindow.cadence_s * NS)
    window = int(config.TimeWindow.window_s * NS)
    next_eval = None
    try:
        source.check(args.inputs)
        hostlogs = [p for p in args.inputs if is_hostlog(p)]
        flows = [p for p in args.inputs if p not in hostlogs]
        for eb in source.endpoint_batches(hostlogs):
            endpoint.ingest(eb)
            if progress is not None:
                progress.add_records(len(eb))
        if progress is not None:
            for p in hostlogs:  # read whole before the flows (endpoint_batches has no byte callback)
                progress.file(p, os.path.getsize(p), 0)
        for batch in source.batches(flows):
            if enricher is not None:
                enricher.wait(enricher.seen(batch))
            for eb in source.take_endpoint_events():  # DNS answers the flow meter saw on the wire
                endpoint.ingest(eb)
            detector.ingest(batch)
            endpoint.observe_flows(batch)
            if progress is not None:
                progress.add_records(len(batch))
            now = detector.latest_ns
            if next_eval is None:
                next_eval = (now // cadence + 1) * cadence
            if now - next_eval > window:  # a jump in data time: no point evaluating every empty step
                next_eval = (now // cadence) * cadence
            while now >= next_eval:
                write(endpoint.attribute(detector.evaluate(next_eval)) + endpoint.evaluate(next_eval))
                next_eval += cadence
        last = max(detector.latest_ns, endpoint.latest_ns)
        write(endpoint.attribute(detector.flush()) + endpoint.evaluate(last))
    except InputError as exc:
        raise UsageError(str(exc)) from None
    finally:
        if progress is not None:
            progress.close()
        out.close()
        if enricher is not None:
            enricher.close()
    rejected = source.decoders.rejected()
    if rejected:
        print(f"brokerwatch: rejected datagrams: {rejected}", file=sys.stderr)
    if source.hostlog_rejected:
        print(f"brokerwatch: rejected host-log records: {dict(source.hostlog_rejected)}", file=sys.stderr)
    return 0


def _kafka(args: argparse.Namespace, config):
    """The Kafka block with --kafka applied; None when no broker is named."""
    from collector.transport.kafka import kafka_config

    kafka = kafka_config(config, getattr(args, "kafka", None))
    if getattr(args, "role", "all") == "collector" and not kafka.bootstrap:
        raise UsageError("--role collector needs a Kafka broker: --kafka HOST:PORT or Kafka.bootstrap in the config")
    return kafka if kafka.bootstrap else None


def _publish(args: argparse.Namespace, kafka, source: OfflineSource) -> int:
    """``replay --role collector``: every decoded batch to the flows topic; waits until the broker has them all."""
    from collector.metrics import Counters
    from analytics.schema import FLOW_DTYPE
    from collector.transport.kafka import KafkaFlowWriter

    counters = Counters()
    writer = KafkaFlowWriter(kafka, counters)
    rows = events = 0
    try:
        source.check(args.inputs)
        hostlogs = [p for p in args.inputs if is_hostlog(p)]
        for eb in source.endpoint_batches(hostlogs):  # to the endpoint topic, as a collector's listeners do
            writer.publish_endpoint(eb)
            events += len(eb)
        for batch in source.batches([p for p in args.inputs if p not in hostlogs]):
            need = len(batch) * FLOW_DTYPE.itemsize
            while writer.queued_bytes and writer.queued_bytes + need > writer.producer.max_bytes:
                writer.flush(1.0)  # offline: wait for room rather than drop
            writer.publish(batch)
            rows += len(batch)
    except InputError as exc:
        raise UsageError(str(exc)) from None
    finally:
        delivered = writer.flush(300.0)
        writer.close(10.0)
    print(f"brokerwatch: {rows} flow records published to {kafka.flows_topic}"
          f"{f', {events} endpoint events to {kafka.endpoint_topic}' if events else ''} on {kafka.bootstrap}"
          f"{'' if delivered else ' (NOT all acknowledged: the broker was unreachable)'}", file=sys.stderr)
    return 0 if delivered else 1
