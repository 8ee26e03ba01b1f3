"""Counters for everything that moves, histograms of the work per batch and per pass, and rate-limited logging.

Names follow ``brokerwatch_<module>_<thing>_total`` with label tuples, Prometheus style. ``Counters`` is the one API
the code counts through (``inc``, ``set``, ``get``); the exposition is prometheus-client's: a collector turns the
counters into metric families of a ``CollectorRegistry``, histograms are prometheus-client ``Histogram`` objects in
the same registry, and families another process measured (the analytics process's pass times) are served as it
reported them. ``METRICS`` names the families always exported, at zero before anything happened, so dashboards and
alert rules never meet an absent series.
"""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict

from prometheus_client import CollectorRegistry, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

log = logging.getLogger("brokerwatch")

# The *_created series double every histogram's lines and no dashboard here reads them.
disable_created_metrics()

#: Families exported from the start (help text, label names), whether or not anything was counted yet.
METRICS: dict[str, tuple[str, tuple[str, ...]]] = {
    "brokerwatch_decoder_records_total": ("Flow records decoded, by decoder", ("decoder",)),
    "brokerwatch_decoder_errors_total": ("Datagrams rejected, by decoder and reason", ("decoder", "reason")),
    "brokerwatch_channel_published_rows_total": ("Records handed to the analytics process", ("kind",)),
    "brokerwatch_channel_dropped_rows_total": ("Records dropped at the channel to the analytics process, by reason",
                                               ("reason",)),
    "brokerwatch_listener_kernel_drops_total": ("Datagrams the kernel dropped before the listener read them",
                                                ("listener",)),
    "brokerwatch_syslog_messages_total": ("Syslog messages received, by transport", ("transport",)),
    "brokerwatch_analytics_rows_total": ("Records the analytics process ingested", ()),
    "brokerwatch_analytics_passes_total": ("Analysis passes run", ()),
    "brokerwatch_analytics_alerts_total": ("Alerts written (new ones and revisions)", ()),
    "brokerwatch_analytics_window_expired_rows_total": ("Rows that left the TimeWindow", ()),
    "brokerwatch_analytics_window_capped_rows_total": ("Rows dropped by the per-pair cap", ()),
    "brokerwatch_analytics_window_evicted_pairs_total": ("Pairs evicted whole by the window's row budget", ()),
    "brokerwatch_analytics_window_evicted_rows_total": ("Rows evicted with their pairs", ()),
    "brokerwatch_admission_refused_total": ("Messages (datagrams, connections) refused before decoding: the sender "
                                            "is not admitted, by listener kind and sender", ("listener", "sender")),
    "brokerwatch_tls_refused_total": ("TLS clients refused at the handshake (mutual TLS: no certificate from the "
                                      "configured CA), by listener kind and reason", ("listener", "reason")),
}

#: Values set whole (``Counters.set``) that go up and down: exported as gauges, not counters.
GAUGES = {"brokerwatch_kafka_buffered_bytes", "brokerwatch_kafka_consumer_lag"}

#: Histogram names and bounds (seconds): decoding one block of datagrams, one analysis pass.
DECODE_SECONDS = "brokerwatch_decode_batch_seconds"
DECODE_BUCKETS = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 0.01, 0.03, 0.1, 0.3, 1.0)
PASS_SECONDS = "brokerwatch_analytics_pass_seconds"
PASS_BUCKETS = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 60.0, 120.0, 300.0)


class Counters:
    """A flat registry of labelled counters: ``inc("brokerwatch_decoder_errors_total", ("netflow.v5", "short"))``."""

    def __init__(self) -> None:
        self._values: dict[str, dict[tuple, int]] = defaultdict(lambda: defaultdict(int))
        self._histograms: dict[str, Histogram] = {}
        self._reported: dict[str, list] = {}  # families another process measured, as it sent them
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_CountersCollector(self))

    def inc(self, name: str, labels: tuple = (), n: int = 1) -> None:
        """Add n to the counter name{labels} (adding 0 creates nothing: absent and zero read the same)."""
        if n:
            self._values[name][labels] += n

    def set(self, name: str, labels: tuple, value: int) -> None:
        """Set name{labels} to a total counted elsewhere (another process's counter, reported whole)."""
        self._values[name][labels] = int(value)

    def get(self, name: str, labels: tuple = ()) -> int:
        """Current value of name{labels} (0 if never incremented)."""
        return self._values.get(name, {}).get(labels, 0)

    def series(self, name: str) -> dict[tuple, int]:
        """All label tuples and values of one counter."""
        return dict(self._values.get(name, {}))

    def snapshot(self) -> dict[str, dict[tuple, int]]:
        """A copy of every counter."""
        return {k: dict(v) for k, v in self._values.items()}

    def merge(self, other: "Counters") -> None:
        """Add another registry's values into this one."""
        for name, series in other._values.items():
            for labels, value in series.items():
                self._values[name][labels] += value

    def histogram(self, name: str, documentation: str, buckets: tuple[float, ...]) -> Histogram:
        """The prometheus-client Histogram ``name`` of this registry (made on first use)."""
        h = self._histograms.get(name)
        if h is None:
            h = self._histograms[name] = Histogram(name, documentation, buckets=buckets, registry=self.registry)
        return h

    def families(self) -> str:
        """This registry's histograms as JSON, for another process to serve (``set_reported``)."""
        out = []
        for h in self._histograms.values():
            for m in h.collect():
                out.append([m.name, m.documentation, m.type,
                            [[s.name, s.labels, s.value] for s in m.samples if not s.name.endswith("_created")]])
        return json.dumps(out)

    def set_reported(self, families: str) -> None:
        """Serve the families another process sent (``families``), replacing what it sent before."""
        for name, doc, typ, samples in json.loads(families):
            self._reported[name] = [name, doc, typ, samples]

    def prometheus(self) -> str:
        """Every counter and histogram in Prometheus text exposition format (prometheus-client's)."""
        return generate_latest(self.registry).decode()


class _CountersCollector:
    """prometheus-client's view of a ``Counters``: one counter family per name (exporter words as addresses)."""

    def __init__(self, counters: Counters):
        self._c = counters

    def collect(self):
        values = self._c._values
        for name in sorted(set(values) | set(METRICS)):
            doc, names = METRICS.get(name, (name.replace("_", " "), _label_names(name)))
            series = list(values.get(name, {}).items())  # a copy: the dict may grow while it is read
            width = max((len(k) for k, _ in series), default=len(names))
            labels = [names[i] if i < len(names) else f"l{i}" for i in range(width)]
            fam = (GaugeMetricFamily if name in GAUGES else CounterMetricFamily)(name, doc, labels=labels)
            if not series and not labels:
                fam.add_metric([], 0)
            for key, value in sorted(series, key=lambda kv: repr(kv[0])):
                if len(key) != width:  # a label tuple of another length: padded, never dropped
                    key = tuple(key) + ("",) * (width - len(key))
                fam.add_metric([_label_value(v) for v in key], value)
            yield fam
        for name, doc, typ, samples in list(self._c._reported.values()):
            m = Metric(name, doc, typ)
            for sname, slabels, svalue in samples:
                m.add_sample(sname, slabels, svalue)
            yield m


def _label_names(metric: str) -> tuple[str, ...]:
    if metric == "brokerwatch_decoder_errors_total":
        return ("decoder", "reason")
    if metric == "brokerwatch_decoder_records_total":
        return ("decoder",)
    if "_sequence_" in metric or metric.endswith("_datagrams_total"):
        return ("exporter",)
    if metric.startswith("brokerwatch_kafka_"):
        return _KAFKA_LABELS.get(metric, ())
    if metric in ("brokerwatch_meter_packets_skipped_total", "brokerwatch_meter_flows_total"):
        return ("reason",)  # the flow meter's: why a packet was not metered, why a flow left the table
    if metric in ("brokerwatch_meter_tunnel_packets_total", "brokerwatch_meter_l7_errors_total"):
        return ("kind",)
    if metric == "brokerwatch_capture_drops_total":
        return ("interface",)
    if metric == "brokerwatch_capture_errors_total":
        return ("stage",)
    return ()


_KAFKA_LABELS = {"brokerwatch_kafka_dropped_rows_total": ("topic", "reason"),
                 "brokerwatch_kafka_decode_errors_total": ("topic", "reason"),
                 "brokerwatch_kafka_consumer_lag": ("partition",),
                 "brokerwatch_kafka_connect_errors_total": ("error",), "brokerwatch_kafka_send_errors_total": ("error",),
                 "brokerwatch_kafka_consume_errors_total": ("error",),
                 "brokerwatch_kafka_commit_errors_total": ("error",)}
for _m in ("produced_messages", "produced_rows", "consumed_rows"):
    _KAFKA_LABELS[f"brokerwatch_kafka_{_m}_total"] = ("topic",)


def _label_value(v) -> str:
    if isinstance(v, tuple) and len(v) == 2 and all(isinstance(x, int) for x in v):
        from analytics.schema import words_to_ip

        return words_to_ip(*v)
    return str(v)  # prometheus-client escapes the text


class RateLimitedLog:
    """Logs at most ``per_second`` lines a second per key, then a summary of how many were suppressed."""

    def __init__(self, per_second: float = 1.0, logger: logging.Logger = log) -> None:
        self._interval = 1.0 / per_second
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = defaultdict(int)
        self._log = logger

    def warning(self, key: str, msg: str, *args) -> None:
        """Log msg under key unless one was logged for key within the interval."""
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self._interval:
            self._suppressed[key] += 1
            return
        self._last[key] = now
        dropped = self._suppressed.pop(key, 0)
        if dropped:
            msg += " (%d similar suppressed)"
            args = (*args, dropped)
        self._log.warning(msg, *args)


async def serve_metrics(counters: Counters, host: str, port: int, health=None):
    """HTTP on host:port: ``GET /healthz`` answers ``health()`` (a dict with ``ok``) as JSON, 200 or 503; any other
    GET the counters and histograms in Prometheus text format."""
    import asyncio

    from prometheus_client import CONTENT_TYPE_LATEST

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            ctype = b"text/plain; charset=utf-8"
            if not request.startswith(b"GET "):
                body, status = b"only GET\n", b"405 Method Not Allowed"
            elif request.split(b" ", 2)[1].split(b"?")[0] == b"/healthz":
                state = health() if health is not None else {"ok": True}
                body = json.dumps(state, sort_keys=True).encode() + b"\n"
                status = b"200 OK" if state.get("ok") else b"503 Service Unavailable"
                ctype = b"application/json"
            else:
                body, status, ctype = counters.prometheus().encode(), b"200 OK", CONTENT_TYPE_LATEST.encode()
            writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Type: " + ctype + b"\r\n"
                         b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
            await writer.drain()
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            counters.inc("brokerwatch_metrics_bad_requests_total")
        finally:
            writer.close()

    return await asyncio.start_server(handle, host, port, reuse_address=True)
