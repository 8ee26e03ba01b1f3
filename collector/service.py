"""``brokerwatch run``: receive workers and the analytics process.

Processes (DESIGN §2: receiving never waits for an analysis pass):
- the **analytics process** (collector/analysis.py): window, passes, alerts, sinks; started first;
- **receive worker 0**, this process: listeners → decoders → pipeline → the channel to the analytics process
  (collector/transport/channel.py: bounded, a full channel drops and counts, never blocks the receive loop);
- with ``--workers N``, N-1 more receive workers, each its own process with its own sockets on the same ports
  (SO_REUSEPORT: the kernel hashes each exporter's address and port to one worker, so NetFlow v9/IPFIX templates
  stay with the worker that decodes that exporter's data). Worker 0 supervises them and restarts one that dies.

Start-up order: the analytics process is spawned and compiles its kernels while this process compiles the
decoders (collector/warmup.py); only then are sockets bound, and ``ready`` is printed on stderr once every worker
listens. SIGINT/SIGTERM: the workers stop and drain what their kernels already queued, the channels are written
out, the analytics process runs its final pass and flushes its sinks, and the service exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import multiprocessing
import os
import signal
import sys
import time

from collector.admission import Admission
from collector.config import ConfigError, load_config
from collector.enrich.devices import SamplingOverride
from collector.errors import UsageError
from collector.flows.receivers import IpfixTcpServer, UdpReceiver, make_receiver, udp_socket
from collector.flows.state import load_state, save_state
from collector.metrics import Counters, serve_metrics
from collector.pipeline import FlowPipeline
from collector.transport.channel import ChannelWriter, make_pipe

log = logging.getLogger("brokerwatch.service")


def worker_state_path(state: str, index: int) -> str:
    """Worker index's template state file: the path given for worker 0, ``name.wN.json`` for the others."""
    if not state or index == 0:
        return state
    root, ext = os.path.splitext(state)
    return f"{root}.w{index}{ext or '.json'}"


class ReceiveService:
    """One receive worker: listeners → pipeline → channel writer. Owns every socket it binds."""

    #: How often template state is written to the state file (and once more at stop).
    STATE_EVERY_S = 60.0

    def __init__(self, args: argparse.Namespace, writer: ChannelWriter, counters: Counters, index: int = 0):
        self.args = args
        self.index = index
        self.counters = counters
        self.writer = writer
        self.reuse_port = getattr(args, "workers", 1) > 1
        self.state = worker_state_path(args.state, index)
        exporters = load_config(getattr(args, "config", None), resolve=False).Exporters
        self.admission = Admission(exporters, counters)
        self.pipeline = FlowPipeline(writer.publish, counters, emit_rows=writer.publish_rows,
                                     admission=self.admission, sampling=SamplingOverride(exporters))
        self._receivers: list[UdpReceiver] = []
        self._closers: list = []
        self._metrics = None
        self._ipfix_tcp: IpfixTcpServer | None = None
        self.stopping = asyncio.Event()
        self.failed = False
        self.listening = False
        #: What ``/healthz`` answers (``--metrics``); worker 0 adds the analytics process and the other workers.
        self.health = self.listener_health

    async def start(self) -> None:
        """Bind every listener; raises OSError (reported as exit 2) when a port cannot be bound."""
        loop = asyncio.get_running_loop()
        a = self.args
        loaded = load_state(self.state, self.pipeline.decoders) if self.state else 0
        if loaded:
            log.info("decoder state loaded from %s", self.state)
        udp = [(a.netflow_port, None, "netflow"), (a.ipfix_port, None, "ipfix"), (a.sflow_port, "sflow", "sflow")]
        seen = set()
        for port, hint, label in udp:
            if port in seen:
                continue
            seen.add(port)
            sock = udp_socket(a.listen, port, self.reuse_port)
            receiver = make_receiver(sock, self.pipeline, hint)
            receiver.attach(loop)
            self._receivers.append(receiver)
            log.info("worker %d listening for %s on udp %s:%d", self.index, label, a.listen, sock.getsockname()[1])
        if a.metrics and self.index == 0:
            host, _, port = a.metrics.rpartition(":")
            self._metrics = await serve_metrics(self.counters, host.strip("[]") or "127.0.0.1", int(port),
                                                lambda: self.health())
        self._ipfix_tcp = IpfixTcpServer(self.pipeline)
        await self._ipfix_tcp.start(a.listen, a.ipfix_port, self.reuse_port)
        from collector.syslog.listener import start_syslog_listeners

        from collector.hostlogs.listener import HostLogListener, SyslogHostLogRouter, tls_context

        from collector.syslog.parser import SyslogParser

        router = SyslogHostLogRouter(self.writer.publish_endpoint, self.counters)
        parser = SyslogParser(self.counters)  # one for every syslog socket: a session may start on one, end on another
        self._closers.extend(await start_syslog_listeners(a.listen, a.syslog_port, a.syslog_port,
                                                          self.pipeline.on_rows, self.counters, parser=parser,
                                                          reuse_port=self.reuse_port, hostlogs=router,
                                                          admission=self.admission))
        if getattr(a, "syslog_tls_port", 0):
            self._closers.extend(await start_syslog_listeners(
                a.listen, None, a.syslog_tls_port, self.pipeline.on_rows, self.counters, a.syslog_tls_cert,
                a.syslog_tls_key, parser=parser, reuse_port=self.reuse_port, hostlogs=router,
                tls_client_ca=a.syslog_tls_client_ca, admission=self.admission))
        self._closers.append(router)
        if getattr(a, "interface", None) and self.index == 0:  # one meter sees the whole interface
            self._closers.append(self._capture(loop))
        if getattr(a, "hostlog_port", None):
            ctx = (tls_context(a.hostlog_tls_cert, a.hostlog_tls_key, getattr(a, "hostlog_tls_client_ca", None))
                   if getattr(a, "hostlog_tls_cert", None) else None)
            listener = HostLogListener(self.writer.publish_endpoint, self.counters)
            self._closers.append(await listener.start(a.listen, a.hostlog_port, ctx, self.reuse_port,
                                                      self.admission))
            log.info("worker %d listening for host logs on %s %s:%d", self.index, "tls" if ctx else "tcp",
                     a.listen, listener.port)
        self.listening = True

    def listener_health(self) -> dict:
        """Whether this worker's listeners are up: every UDP socket open, the IPFIX TCP and syslog servers bound,
        not stopping (answered from the event loop, so an answer also means the loop is turning)."""
        udp_open = sum(1 for r in self._receivers if r.sock.fileno() != -1)
        ok = (self.listening and not self.stopping.is_set() and udp_open == len(self._receivers) > 0
              and self._ipfix_tcp is not None and self._ipfix_tcp.server is not None)
        return {"ok": ok, "listeners": {"ok": ok, "udp_sockets": udp_open, "servers": len(self._closers),
                                        "stopping": self.stopping.is_set()}}

    def _capture(self, loop):
        """The live capture of --interface, metered into the pipeline (PermissionError without CAP_NET_RAW)."""
        from collector.config import load_config
        from collector.flows.capture import LiveCapture

        ports = tuple(load_config(self.args.config).port_protocols())
        cap = LiveCapture(self.args.interface, self.pipeline.on_rows, self.counters, server_ports=ports)
        cap.start(loop)
        log.info("worker %d capturing raw traffic on %s (flow meter)", self.index, self.args.interface)
        return cap

    async def serve(self, on_tick=None) -> None:
        """Receive until ``stopping`` is set, then drain and flush everything into the channel."""
        ticker = asyncio.create_task(self._tick(on_tick))
        ticker.add_done_callback(self._fail_loudly)
        await self.stopping.wait()
        self.listening = False
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
        self._save_state()

    def _templates_learned(self) -> int:
        c = self.counters
        return sum(sum(c.series(f"brokerwatch_{m}_templates_total").values()) for m in ("netflow_v9", "ipfix"))

    def _save_state(self) -> None:
        if not self.state:
            return
        try:
            save_state(self.state, self.pipeline.decoders)
        except OSError as exc:
            self.counters.inc("brokerwatch_state_save_errors_total", (type(exc).__name__,))
            log.warning("cannot save decoder state to %s: %s", self.state, exc)

    def _fail_loudly(self, task: asyncio.Task) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("background task failed: %r", exc, exc_info=exc)
            self.failed = True
            self.stopping.set()

    async def _tick(self, on_tick) -> None:
        """Flush the receive buffers into the channel often; save template state every STATE_EVERY_S."""
        loop = asyncio.get_running_loop()
        next_save = loop.time() + self.STATE_EVERY_S
        saved_templates = self._templates_learned()
        while True:
            await asyncio.sleep(0.2)
            for r in self._receivers:
                r.flush()
            self.pipeline.flush()
            learned = self._templates_learned()
            # a template learned is saved within a second, not a minute: a kill -9 then costs no cold start
            if loop.time() >= next_save or (learned != saved_templates and loop.time() >= next_save - self.STATE_EVERY_S + 1):
                next_save = loop.time() + self.STATE_EVERY_S
                saved_templates = learned
                self._save_state()
            if on_tick is not None:
                on_tick()

    def summary(self) -> str:
        """One line of what moved; the counts add up: datagrams received = decoded + rejected, records decoded =
        delivered to the analytics process + dropped at the channel; the kernel's own drops come before all that."""
        c = self.counters
        records = {k[0]: v for k, v in c.series("brokerwatch_decoder_records_total").items()}
        dropped = sum(c.series("brokerwatch_channel_dropped_rows_total").values())
        delivered = sum(c.series("brokerwatch_channel_published_rows_total").values())
        kernel = sum(c.series("brokerwatch_listener_kernel_drops_total").values())
        refused = sum(v for k, v in c.series("brokerwatch_admission_refused_total").items() if k[0] == "flows")
        return (f"{self.pipeline.datagrams} datagrams; refused (not admitted) {refused}; records {records}; "
                f"rejected {self.pipeline.decoders.rejected()}; dropped {dropped}; delivered {delivered}; "
                f"kernel drops {kernel}")


def _run_loop(coro):
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def receive_main(args: argparse.Namespace, conn, index: int, ready) -> None:
    """Entry of receive worker ``index`` >= 1 (spawned by worker 0)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # worker 0 coordinates the stop (SIGTERM)
    logging.basicConfig(level=logging.WARNING - 10 * min(args.verbose, 2), stream=sys.stderr,
                        format=f"%(asctime)s %(levelname)s %(name)s[worker {index}]: %(message)s")
    from collector.warmup import warm_receive

    warm_receive()
    fd = os.dup(conn.fileno())
    conn.close()
    counters = Counters()
    writer = make_writer(args, fd, counters)

    async def main() -> None:
        svc = ReceiveService(args, writer, counters, index)
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, svc.stopping.set)
        await svc.start()
        print(f"brokerwatch: receive worker {index} ready (pid {os.getpid()})", file=sys.stderr, flush=True)
        try:
            ready.send_bytes(b"ready")
            ready.close()
        except OSError:  # nobody waits for a restarted worker
            pass
        await svc.serve()
        print(f"brokerwatch: receive worker {index} stopped after {svc.summary()}", file=sys.stderr, flush=True)

    try:
        _run_loop(main())
    finally:
        writer.close()


def make_writer(args: argparse.Namespace, fd: int, counters: Counters):
    """A receive worker's way out: the channel to the analytics process, or with ``--role collector`` the Kafka
    flows topic (the channel's descriptor is then closed: nobody reads it)."""
    if getattr(args, "role", "all") != "collector":
        return ChannelWriter(fd, counters, int(args.channel_mb) << 20)
    from collector.transport.kafka import KafkaFlowWriter, kafka_config

    os.close(fd)
    return KafkaFlowWriter(kafka_config(load_config(args.config), args.kafka), counters)


class ElsewhereAnalytics:
    """``--role collector``: the analytics run elsewhere, behind the flows topic; the service's hooks do nothing."""

    proc = None
    summary: dict = {}

    def start(self) -> None:
        """Nothing to start."""

    def wait_ready(self, timeout: float = 0.0) -> None:
        """Nothing to wait for."""

    def watch(self, loop, counters) -> None:
        """No counters come back."""

    def unwatch(self, loop) -> None:
        """No counters come back."""

    def add_source(self, read_fd: int) -> None:
        """Nobody reads a channel: its read end is closed."""
        os.close(read_fd)

    def alive(self) -> bool:
        """Always: the analytics workers are not ours to watch."""
        return True

    def draining(self) -> None:
        """Nothing to tell."""

    def stop(self, timeout: float = 0.0) -> dict:
        """Nothing to stop."""
        return {}


class WorkerPool:
    """Receive workers 1..N-1: spawned, handed a channel each, restarted when one dies."""

    def __init__(self, args: argparse.Namespace, analytics):
        self.args = args
        self.analytics = analytics
        self.procs: dict[int, multiprocessing.process.BaseProcess] = {}
        self._ready: dict[int, object] = {}
        self._started: dict[int, float] = {}
        self.restarts = 0
        self._ctx = multiprocessing.get_context("spawn")

    def spawn(self, index: int):
        """Start worker ``index`` with a new channel; returns the pipe on which it says it is ready."""
        from multiprocessing.connection import Connection

        r, w = make_pipe()
        wconn = Connection(w, readable=False)
        ready_r, ready_w = self._ctx.Pipe(duplex=False)
        proc = self._ctx.Process(target=receive_main, args=(self.args, wconn, index, ready_w),
                                 name=f"brokerwatch-receive-{index}")
        proc.start()
        wconn.close()
        ready_w.close()
        self.analytics.add_source(r)
        self.procs[index] = proc
        self._ready[index] = ready_r
        self._started[index] = time.monotonic()
        return ready_r

    def start(self, n: int, timeout: float = 600.0) -> None:
        """Start workers 1..n-1 and wait until each listens."""
        waits = [(i, self.spawn(i)) for i in range(1, n)]
        for i, ready in waits:
            if not ready.poll(timeout) or ready.recv_bytes() != b"ready":
                raise RuntimeError(f"receive worker {i} failed to start (exit code {self.procs[i].exitcode})")

    #: A worker is restarted at most this often (one that dies at start-up must not spin).
    RESTART_EVERY_S = 5.0

    def check(self) -> None:
        """Restart any worker that died (its channel ended; a new one is handed to the analytics process)."""
        for i, proc in list(self.procs.items()):
            if not proc.is_alive() and time.monotonic() - self._started[i] >= self.RESTART_EVERY_S:
                log.error("receive worker %d exited with code %s; restarting it", i, proc.exitcode)
                self.restarts += 1
                self.spawn(i)

    def stop(self, timeout: float = 120.0) -> None:
        """SIGTERM every worker and wait for them to drain and exit."""
        for proc in self.procs.values():
            if proc.is_alive():
                proc.terminate()
        deadline = time.monotonic() + timeout
        for i, proc in self.procs.items():
            proc.join(max(0.1, deadline - time.monotonic()))
            if proc.is_alive():
                log.error("receive worker %d did not stop; killing it", i)
                proc.kill()
                proc.join()


def serve(args: argparse.Namespace) -> int:
    """Entry of ``brokerwatch run``."""
    from collector.analysis import AnalyticsProcess, default_threads
    from collector.warmup import warm_receive

    try:
        config = load_config(args.config)  # a bad config is exit 2 here, before any process starts
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    role = getattr(args, "role", "all")
    kafka = None
    if role != "all" or getattr(args, "kafka", None) or config.Kafka.bootstrap:
        from collector.transport.kafka import kafka_config

        kafka = kafka_config(config, getattr(args, "kafka", None))
        if role != "all" and not kafka.bootstrap:
            raise UsageError(f"--role {role} needs a Kafka broker: --kafka HOST:PORT or Kafka.bootstrap in the config")
    args.kafka = kafka.bootstrap if kafka else None  # as resolved, for the workers spawned with these args
    for name, value, least in (("--workers", args.workers, 1), ("--window-rows", args.window_rows, 1),
                               ("--channel-mb", args.channel_mb, 0), ("--analytics-threads", args.analytics_threads, 0)):
        if value < least:  # checked before any process starts: a clear exit 2, not a child failing later
            raise UsageError(f"{name} must be at least {least}, not {value}")
    if role == "analytics":
        from collector.analysis_kafka import serve_analytics

        return serve_analytics(args, dataclasses.replace(config, Kafka=kafka))
    for kind in ("hostlog", "syslog"):
        cert, key = getattr(args, f"{kind}_tls_cert", None), getattr(args, f"{kind}_tls_key", None)
        ca = getattr(args, f"{kind}_tls_client_ca", None)
        if (cert is None) != (key is None):
            raise UsageError(f"--{kind}-tls-cert and --{kind}-tls-key go together")
        if ca is not None and cert is None:
            raise UsageError(f"--{kind}-tls-client-ca needs --{kind}-tls-cert and --{kind}-tls-key")
        if kind == "syslog" and bool(getattr(args, "syslog_tls_port", 0)) != (cert is not None):
            raise UsageError("--syslog-tls-port needs --syslog-tls-cert and --syslog-tls-key, and they need it")
        for path in (cert, key, ca):
            if path is not None and not os.access(path, os.R_OK):
                raise UsageError(f"{path}: not readable")
    t0 = time.monotonic()
    if role == "collector":
        analytics = ElsewhereAnalytics()
    else:
        analytics = AnalyticsProcess(args.config, args.alerts, args.cadence,
                                     args.analytics_threads or default_threads(), args.verbose, args.window_rows,
                                     kafka.bootstrap if kafka else "")
    analytics.start()
    pool = WorkerPool(args, analytics)

    def quit_during_start(signum, _frame) -> None:
        # Nothing has been received yet, so nothing is lost: end the children and leave at once (a
        # KeyboardInterrupt raised inside a numba compile was seen swallowed, and a cold start compiles for a minute).
        print(f"brokerwatch: {signal.Signals(signum).name} during start-up; stopped", file=sys.stderr, flush=True)
        for proc in [analytics.proc, *pool.procs.values()]:
            if proc is not None and proc.is_alive():
                proc.kill()
        os._exit(0)

    for sig in (signal.SIGINT, signal.SIGTERM):  # until the event loop takes them over
        signal.signal(sig, quit_during_start)
    try:
        warm_receive()
        analytics.wait_ready()
        r, w = make_pipe()
        analytics.add_source(r)
        counters = Counters()
        writer = make_writer(args, w, counters)
        status = _run_loop(_serve_worker0(args, writer, counters, analytics, pool, t0,
                                          args.cadence or config.TimeWindow.cadence_s))
    except BaseException:
        pool.stop(10)
        if analytics.proc is not None and analytics.proc.is_alive():
            analytics.proc.kill()
        raise
    return status


def analytics_stale_after(cadence_s: float) -> float:
    """Seconds without a pass report after which ``/healthz`` calls the analytics process stuck: two cadences plus
    the longest pass measured (34 s over a 20M-row window, README), with room to spare."""
    return 2 * cadence_s + 120.0


async def _serve_worker0(args, writer, counters, analytics, pool, t0, cadence_s: float = 300.0) -> int:
    svc = ReceiveService(args, writer, counters, 0)
    loop = asyncio.get_running_loop()

    def health() -> dict:
        state = svc.listener_health()
        age = time.monotonic() - analytics.last_report
        alive = analytics.alive()
        fresh = age < analytics_stale_after(cadence_s)
        state["analytics"] = {"ok": alive and fresh, "alive": alive, "pid": analytics.proc.pid,
                              "seconds_since_last_pass": round(age, 1), "cadence_s": cadence_s}
        workers = {i: p.is_alive() for i, p in pool.procs.items()}
        state["workers"] = {"ok": all(workers.values()), "expected": args.workers,
                            "alive": 1 + sum(workers.values()), "restarts": pool.restarts}
        state["ok"] = state["listeners"]["ok"] and state["analytics"]["ok"] and state["workers"]["ok"]
        return state

    svc.health = health
    try:
        await svc.start()
    except OSError as exc:
        writer.close()
        raise UsageError(f"cannot listen: {exc}") from None
    if args.workers > 1:
        await loop.run_in_executor(None, pool.start, args.workers)
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, svc.stopping.set)
    analytics.watch(loop, counters)
    a = args
    tls = f", syslog tls {a.syslog_tls_port}" if getattr(a, "syslog_tls_port", 0) else ""
    print(f"brokerwatch: ready in {time.monotonic() - t0:.1f} s: listening on {a.listen}: netflow/ipfix udp "
          f"{a.netflow_port} and {a.ipfix_port}, ipfix tcp {a.ipfix_port}, sflow udp {a.sflow_port}, syslog "
          f"{a.syslog_port}{tls}, host logs tcp {a.hostlog_port}; {a.workers} receive worker(s), analytics "
          f"{f'in process {analytics.proc.pid}' if analytics.proc else 'behind Kafka ' + a.kafka}",
          file=sys.stderr, flush=True)
    lost = []

    def supervise() -> None:
        if not analytics.alive():
            log.error("the analytics process exited (code %s); stopping", analytics.proc.exitcode)
            lost.append(True)
            svc.stopping.set()
        elif not svc.stopping.is_set():
            pool.check()

    await svc.serve(on_tick=supervise)
    analytics.unwatch(loop)
    analytics.draining()
    await loop.run_in_executor(None, pool.stop)
    await loop.run_in_executor(None, writer.close)
    summary = await loop.run_in_executor(None, analytics.stop)
    print(f"brokerwatch: stopped after {svc.summary()}; alerts {summary.get('alerts', 0)}; analytics passes "
          f"{summary.get('passes', 0)} (longest {summary.get('longest_pass_s', 0)} s)", file=sys.stderr, flush=True)
    return 1 if (lost or svc.failed) else 0
