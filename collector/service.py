"""``brokerwatch run``: the collector service on an asyncio loop (uvloop where it installs).

Components start in order and stop in reverse: sinks, detector, bus, pipeline, listeners. The receive path only
decodes into a reusable builder; batches cross the bounded in-process bus to the analytics task, which scores
pairs every cadence (time taken from the data, so replayed exports behave like live ones). SIGINT/SIGTERM close
the listeners, drain the bus, run a final evaluation, flush the sinks and exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from analytics.detections.an0005 import Detector
from collector.transport.inprocess import InProcessBus
from collector.config import ConfigError, load_config
from collector.errors import UsageError
from collector.metrics import Counters, serve_metrics
from collector.flows.receivers import IpfixTcpServer, UdpReceiver, make_receiver, udp_socket
from collector.pipeline import FlowPipeline
from collector.sinks import FanOut, JsonLinesSink
from collector.flows.state import load_state, save_state

log = logging.getLogger("brokerwatch.service")

class Service:
    """The running collector: listeners → pipeline → bus → detector → sinks."""

    #: How often template state is written to the state file (and once more at stop).
    STATE_EVERY_S = 60.0

    def __init__(self, args: argparse.Namespace, config):
        self.args = args
        self.config = config
        self.counters = Counters()
        self.sinks = FanOut([JsonLinesSink(sys.stdout)] + ([JsonLinesSink.open(args.alerts)]
                                                            if args.alerts and args.alerts != "-" else []))
        self.detector = Detector(config)
        self.bus: InProcessBus | None = None
        self.pipeline: FlowPipeline | None = None
        self._receivers: list[UdpReceiver] = []
        self._closers: list = []
        self._stop = asyncio.Event()

    async def start(self) -> None:
        """Bind every listener; raises OSError (reported as exit 2) when a port cannot be bound."""
        loop = asyncio.get_running_loop()
        self.bus = InProcessBus(self.counters)
        self.pipeline = FlowPipeline(self.bus.publish, self.counters)
        a = self.args
        udp = [(a.netflow_port, None, "netflow"), (a.ipfix_port, None, "ipfix"), (a.sflow_port, "sflow", "sflow")]
        seen = set()
        for port, hint, label in udp:
            if port in seen:
                continue
            seen.add(port)
            sock = udp_socket(a.listen, port)
            receiver = make_receiver(sock, self.pipeline, hint)
            receiver.attach(loop)
            self._receivers.append(receiver)
            log.info("listening for %s on udp %s:%d", label, a.listen, sock.getsockname()[1])
        loaded = load_state(a.state, self.pipeline.decoders) if a.state else 0
        if loaded:
            log.info("decoder state loaded from %s", a.state)
        self._metrics = None
        if a.metrics:
            host, _, port = a.metrics.rpartition(":")
            self._metrics = await serve_metrics(self.counters, host.strip("[]") or "127.0.0.1", int(port))
        self._ipfix_tcp = IpfixTcpServer(self.pipeline)
        await self._ipfix_tcp.start(a.listen, a.ipfix_port)
        await self._start_syslog(a)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._stop.set)
        print(f"brokerwatch: listening on {a.listen}: netflow/ipfix udp {a.netflow_port} and {a.ipfix_port}, "
              f"ipfix tcp {a.ipfix_port}, sflow udp {a.sflow_port}, syslog {a.syslog_port}", file=sys.stderr,
              flush=True)

    async def _start_syslog(self, a: argparse.Namespace) -> None:
        from collector.syslog.listener import start_syslog_listeners

        closers = await start_syslog_listeners(a.listen, a.syslog_port, a.syslog_port, self.pipeline.on_rows,
                                               self.counters)
        self._closers.extend(closers)

    async def run(self) -> int:
        """Serve until SIGINT/SIGTERM; then flush everything and return 0."""
        await self.start()
        cadence = self.args.cadence or self.config.TimeWindow.cadence_s
        analytics = asyncio.create_task(self._analytics())
        analytics.add_done_callback(self._fail_loudly)
        ticker = asyncio.create_task(self._tick(cadence))
        ticker.add_done_callback(self._fail_loudly)
        await self._stop.wait()
        loop = asyncio.get_running_loop()
        for r in self._receivers:  # drains what the kernel already queued: nothing received before the stop is lost
            r.close(loop)
        await self._ipfix_tcp.close()
        if self._metrics is not None:
            self._metrics.close()
        for c in self._closers:
            c.close()
        ticker.cancel()
        self.pipeline.flush()
        await self.bus.close()
        await analytics
        for alert in self.detector.flush():
            self.sinks.write(alert)
        self.sinks.close()
        self._save_state()
        print(self.summary(), file=sys.stderr, flush=True)
        return 0

    def _save_state(self) -> None:
        if not self.args.state:
            return
        try:
            save_state(self.args.state, self.pipeline.decoders)
        except OSError as exc:
            self.counters.inc("brokerwatch_state_save_errors_total", (type(exc).__name__,))
            log.warning("cannot save decoder state to %s: %s", self.args.state, exc)

    def summary(self) -> str:
        """One line of what moved: datagrams, records by dataset, rejections by reason, alerts written."""
        records = {k[0]: v for k, v in self.counters.series("brokerwatch_decoder_records_total").items()}
        return (f"brokerwatch: stopped after {self.pipeline.datagrams} datagrams; records {records}; "
                f"rejected {self.pipeline.decoders.rejected()}; alerts {self.sinks.written}")

    def _fail_loudly(self, task: asyncio.Task) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("background task failed: %r", exc, exc_info=exc)
            self._stop.set()

    async def _tick(self, cadence: float) -> None:
        """Flush the receive builder often, and evaluate the detector every cadence."""
        loop = asyncio.get_running_loop()
        next_eval = loop.time() + cadence
        next_save = loop.time() + self.STATE_EVERY_S
        while True:
            await asyncio.sleep(min(0.2, cadence))
            for r in self._receivers:
                r.flush()
            self.pipeline.flush()
            if loop.time() >= next_save:
                next_save = loop.time() + self.STATE_EVERY_S
                self._save_state()
            if loop.time() >= next_eval:
                next_eval = loop.time() + cadence
                for alert in self.detector.evaluate():
                    self.sinks.write(alert)

    async def _analytics(self) -> None:
        while True:
            batch = await self.bus.get()
            if batch is None:
                return
            self.detector.ingest(batch)


def serve(args: argparse.Namespace) -> int:
    """Entry of ``brokerwatch run``."""
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    async def main() -> int:
        service = Service(args, config)
        try:
            return await service.run()
        except OSError as exc:
            raise UsageError(f"cannot listen: {exc}") from None

    try:
        import uvloop
    except ImportError:
        return asyncio.run(main())
    return uvloop.run(main())
