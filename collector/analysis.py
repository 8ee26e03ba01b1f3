"""The analytics process of ``brokerwatch run``: batches from the receiving processes in, alerts out.

Receiving and analysing run in separate processes (DESIGN §2), so that the receive path never waits for an analysis
pass. The service starts this process first (``AnalyticsProcess.start``); it loads the config, bounds numba's
threads (``--analytics-threads``) so that receiving keeps a core, compiles or loads its kernels, and says it is
ready. Each receiving process gets a channel (collector/transport/channel.py) whose read end is handed to this
process over a control socket (``SCM_RIGHTS``), so a restarted receive worker simply brings a new channel.

The loop reads whichever channel has a batch, feeds the detector, and runs a pass every cadence, timed from the end
of the previous pass. When the service starts to stop it says so first (``draining``): no more cadence passes,
only reading. It stops when the service says ``stop`` (every receive worker has finished, so the final pass may use
every core) and every channel has ended: a final pass, the sinks flushed, and a summary sent back. It ignores SIGINT and SIGTERM (the service coordinates the stop, so that nothing
in flight is lost), and it also stops when the service itself disappears.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import selectors
import signal
import socket
import sys
import time

from analytics.endpoint import EndpointBatch
from collector.transport.channel import ChannelError, ChannelReader

log = logging.getLogger("brokerwatch.analysis")

#: Largest control message (a word, or the summary).
CTRL_BYTES = 1 << 16


def default_threads() -> int:
    """Numba threads for the analytics process: all cores but one, at least one."""
    return max(1, (os.cpu_count() or 2) - 1)


class AnalyticsLoop:
    """The analytics process's loop: channels in, detector passes on a cadence, alerts to the sinks."""

    def __init__(self, detector, sinks, cadence_s: float, ctrl: socket.socket, endpoint=None, enricher=None):
        self.detector = detector
        self.enricher = enricher  # observer names on alerts (collector/enrich/observers.py); never waits on SNMP
        # the endpoint analytics (AN0002-AN0004, attribution of AN0005 alerts); None runs the network ones alone
        self.endpoint = endpoint
        self.sinks = sinks
        self.cadence_s = float(cadence_s)
        self.ctrl = ctrl
        self.sel = selectors.DefaultSelector()
        self.sel.register(ctrl, selectors.EVENT_READ, None)
        self.sources = 0
        self.stopping = False
        self.draining = False
        self.rows = 0
        self.endpoint_rows = 0
        self.passes = 0
        self.pass_s_max = 0.0
        from collector.metrics import PASS_BUCKETS, PASS_SECONDS, Counters

        self.metrics = Counters()  # this process's histograms, reported to the service after each pass
        self._pass_seconds = self.metrics.histogram(PASS_SECONDS, "Seconds of one analysis pass (evaluate and "
                                                    "write its alerts)", PASS_BUCKETS)

    def _control(self) -> None:
        try:
            msg, fds, _flags, _addr = socket.recv_fds(self.ctrl, CTRL_BYTES, 16)
        except OSError:
            msg, fds = b"", []
        if not msg:  # the service is gone: finish with what the channels still hold
            self.sel.unregister(self.ctrl)
            self.stopping = True
            return
        if msg == b"source":
            for fd in fds:
                self.sel.register(fd, selectors.EVENT_READ, ChannelReader(fd))
                self.sources += 1
        elif msg == b"draining":  # the service is stopping: read what is left, then one final pass
            self.draining = True
        elif msg == b"stop":  # every receive worker has finished: the final pass may use every core
            self.stopping = True
            import numba

            numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)

    def _read(self, reader) -> None:
        try:
            batch = reader.read()
        except ChannelError as exc:  # a receive worker died mid-message: its channel is over
            log.warning("channel %d ended badly: %s", reader.fileno(), exc)
            batch = None
        if batch is None:
            self.sel.unregister(reader.fileno())
            reader.close()
            self.sources -= 1
            return
        if isinstance(batch, EndpointBatch):
            self.endpoint_rows += len(batch)
            if self.endpoint is not None:
                self.endpoint.ingest(batch)
            return
        self.rows += len(batch)
        if self.enricher is not None:
            self.enricher.seen(batch)
        self.detector.ingest(batch)
        if self.endpoint is not None:
            self.endpoint.observe_flows(batch)

    def _drain(self, budget_s: float = 2.0) -> None:
        """Read every channel until none has a message waiting (or budget_s is spent)."""
        end = time.monotonic() + budget_s
        while time.monotonic() < end:
            ready = [key for key, _ in self.sel.select(0) if key.data is not None]
            if not ready:
                return
            for key in ready:
                self._read(key.data)

    def evaluate(self) -> None:
        """One analysis pass; its alerts go to the sinks, and the counters to the service (for --metrics)."""
        t0 = time.monotonic()
        self.sinks.write_many(self._alerts(self.detector.evaluate()))
        took = time.monotonic() - t0
        self._pass_seconds.observe(took)
        self.passes += 1
        self.pass_s_max = max(self.pass_s_max, took)
        if took > self.cadence_s:
            log.info("analysis pass took %.1f s (cadence %.1f s)", took, self.cadence_s)
        self._report()

    def _alerts(self, network: list) -> list:
        """A pass's network alerts, attributed to processes and observers, and the endpoint analytics' alerts."""
        if self.enricher is not None:
            network = self.enricher.alerts(network)
        if self.endpoint is None:
            return network
        return self.endpoint.attribute(network) + self.endpoint.evaluate(
            max(self.detector.latest_ns, self.endpoint.latest_ns))

    def counters(self) -> dict[str, int]:
        """This process's counters, as totals."""
        w = self.detector.window.stats
        extra = self.endpoint.counters() if self.endpoint is not None else {}
        if self.enricher is not None:
            for name, series in self.enricher.counters.snapshot().items():
                extra[name] = sum(series.values())
        return {**extra, "brokerwatch_analytics_endpoint_rows_total": self.endpoint_rows,"brokerwatch_analytics_rows_total": self.rows, "brokerwatch_analytics_passes_total": self.passes,
                "brokerwatch_analytics_alerts_total": self.sinks.written,
                "brokerwatch_analytics_window_expired_rows_total": w.expired_rows,
                "brokerwatch_analytics_window_capped_rows_total": w.capped_rows,
                "brokerwatch_analytics_window_evicted_pairs_total": w.evicted_pairs,
                "brokerwatch_analytics_window_evicted_rows_total": w.evicted_rows}

    def _report(self) -> None:
        try:  # never waits: a service that does not read them just misses a report
            self.ctrl.send(b"counters " + json.dumps(self.counters()).encode(), socket.MSG_DONTWAIT)
            self.ctrl.send(b"families " + self.metrics.families().encode(), socket.MSG_DONTWAIT)
        except OSError:
            pass

    def run(self) -> dict:
        """Serve until stopped; returns the summary."""
        next_eval = time.monotonic() + self.cadence_s
        while not (self.stopping and self.sources == 0):
            timeout = None if next_eval == float("inf") else max(0.0, next_eval - time.monotonic())
            for key, _ in self.sel.select(timeout):
                if key.data is None:
                    self._control()
                else:
                    self._read(key.data)
            if self.draining or self.stopping:
                next_eval = float("inf")  # no more cadence passes: the final pass covers what the channels still hold
            if time.monotonic() >= next_eval:
                self._drain()  # the pass sees everything already sent, and the channels start it empty
            if time.monotonic() >= next_eval:
                self.evaluate()
                next_eval = time.monotonic() + self.cadence_s
        if self.enricher is not None:
            self.enricher.settle()  # bounded: exporters first seen just before the stop get their names too
        self.sinks.write_many(self._alerts(self.detector.flush()))
        self.sinks.close()
        if self.enricher is not None:
            self.enricher.close()
        return {"rows": self.rows, "alerts": self.sinks.written, "passes": self.passes,
                "longest_pass_s": round(self.pass_s_max, 3)}


def analytics_main(ctrl: socket.socket, config_path: str | None, alerts: str | None, cadence: float | None,
                   threads: int, verbose: int, window_rows: int = 20_000_000, kafka: str = "") -> None:
    """Entry of the analytics process (spawned by AnalyticsProcess)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(level=logging.WARNING - 10 * min(verbose, 2), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s[analytics]: %(message)s")
    import numba

    numba.set_num_threads(max(1, min(int(threads), numba.config.NUMBA_NUM_THREADS)))
    from analytics.detections.an0005 import Detector, DetectorParams
    from analytics.detections.endpoint import EndpointDetector
    from collector.config import load_config
    from collector.sinks import FanOut, JsonLinesSink
    from collector.warmup import warm_analytics

    config = load_config(config_path)
    warm_analytics(config)
    sinks = FanOut([JsonLinesSink(sys.stdout)] + ([JsonLinesSink.open(alerts)] if alerts and alerts != "-" else []))
    if kafka:  # --kafka with --role all: the alerts go to the alerts topic too
        from collector.metrics import Counters
        from collector.transport.kafka import BufferedProducer, KafkaAlertSink, kafka_config

        k = kafka_config(config, kafka)
        sinks.sinks.append(KafkaAlertSink(BufferedProducer(k, Counters(), [k.alerts_topic]), k.alerts_topic))
    socket.send_fds(ctrl, [b"ready"], [])
    from collector.enrich.observers import Enricher, enrichment_wanted

    enricher = Enricher(config.Exporters) if enrichment_wanted(config.Exporters) else None
    loop = AnalyticsLoop(Detector(config, DetectorParams(max_rows=window_rows)), sinks,
                         cadence or config.TimeWindow.cadence_s, ctrl, EndpointDetector(config), enricher)
    summary = loop.run()
    try:
        ctrl.send(b"done " + json.dumps(summary).encode())
    except OSError:
        pass


class AnalyticsProcess:
    """The service's handle on its analytics process: start, hand it channels, stop it."""

    def __init__(self, config_path: str | None, alerts: str | None, cadence: float | None, threads: int,
                 verbose: int = 0, window_rows: int = 20_000_000, kafka: str = ""):
        self._args = (config_path, alerts, cadence, threads, verbose, window_rows, kafka)
        self.proc: multiprocessing.process.BaseProcess | None = None
        self._ctrl: socket.socket | None = None
        self.summary: dict = {}
        self.last_report = time.monotonic()  # when the process last reported a pass (or became ready)

    def start(self) -> None:
        """Spawn the process (it compiles or loads its kernels while the receive side does the same)."""
        ctx = multiprocessing.get_context("spawn")
        self._ctrl, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.proc = ctx.Process(target=analytics_main, args=(child, *self._args), name="brokerwatch-analytics")
        self.proc.start()
        child.close()

    def wait_ready(self, timeout: float = 600.0) -> None:
        """Block until the process has its kernels ready; RuntimeError if it died first."""
        self._ctrl.settimeout(timeout)
        try:
            msg = self._ctrl.recv(CTRL_BYTES)
        except socket.timeout:
            raise RuntimeError(f"the analytics process was not ready within {timeout:g} s") from None
        finally:
            self._ctrl.settimeout(None)
        if msg != b"ready":
            self.proc.join(5)
            raise RuntimeError(f"the analytics process failed to start (exit code {self.proc.exitcode})")
        self.last_report = time.monotonic()

    def watch(self, loop, counters) -> None:
        """Copy the counters the process reports after each pass into ``counters`` (for --metrics)."""
        def readable() -> None:
            while True:
                try:
                    msg = self._ctrl.recv(CTRL_BYTES, socket.MSG_DONTWAIT)
                except (BlockingIOError, InterruptedError):
                    return
                except OSError:
                    loop.remove_reader(self._ctrl.fileno())
                    return
                if not msg:
                    loop.remove_reader(self._ctrl.fileno())
                    return
                self.last_report = time.monotonic()
                if msg.startswith(b"counters "):
                    for name, value in json.loads(msg[9:]).items():
                        counters.set(name, (), value)
                elif msg.startswith(b"families "):
                    counters.set_reported(msg[9:].decode())

        loop.add_reader(self._ctrl.fileno(), readable)

    def unwatch(self, loop) -> None:
        """Stop copying counters (before ``stop`` reads the control socket itself)."""
        loop.remove_reader(self._ctrl.fileno())

    def add_source(self, read_fd: int) -> None:
        """Hand the read end of a channel to the process (closed here afterwards)."""
        try:
            socket.send_fds(self._ctrl, [b"source"], [read_fd])
        finally:
            os.close(read_fd)

    def alive(self) -> bool:
        """Whether the process is still running."""
        return self.proc is not None and self.proc.is_alive()

    def draining(self) -> None:
        """Tell the process the service is stopping: it only reads from now on, until the final pass."""
        try:
            self._ctrl.send(b"draining")
        except OSError:
            pass

    def stop(self, timeout: float = 600.0) -> dict:
        """Ask for the final pass (after every channel ends) and wait for it; returns the process's summary."""
        if self.proc is None:
            return {}
        try:
            self._ctrl.send(b"stop")
            self._ctrl.settimeout(timeout)
            msg = self._ctrl.recv(CTRL_BYTES)
            while msg.startswith((b"counters ", b"families ")):  # reports sent before the stop
                msg = self._ctrl.recv(CTRL_BYTES)
            if msg.startswith(b"done "):
                self.summary = json.loads(msg[5:])
        except (OSError, ValueError) as exc:
            log.error("analytics process did not report its stop: %s", exc)
        self.proc.join(timeout)
        if self.proc.is_alive():
            log.error("analytics process did not stop within %g s; killing it", timeout)
            self.proc.kill()
            self.proc.join()
        self._ctrl.close()
        return self.summary
