"""asyncio syslog servers: UDP datagrams and TCP streams (plain or TLS, RFC 5425) into SyslogParser, rows out batched.

One SyslogParser serves every socket, so a session started in a message over UDP can end over TCP. Each TCP
connection has its own SyslogFramer (octet counting or LF, told apart per frame, bounded). Rows are collected in one
FlowBatchBuilder and handed to ``on_rows(batch)`` per time slice (FLUSH_SECONDS after the first waiting row) or as
soon as FLUSH_ROWS wait, so a burst of datagrams makes a few large batches rather than one tiny batch each;
``close()`` hands on whatever is waiting.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from typing import Callable

from analytics.schema import FlowBatch, FlowBatchBuilder, ip_to_words
from collector.admission import Admission, server_tls_context, tls_acceptor
from collector.syslog.parser import SyslogParser
from collector.syslog.framing import MAX_MESSAGE, SyslogFramer
from collector.metrics import Counters

log = logging.getLogger("brokerwatch.syslog")

#: Largest datagram read (UDP cannot carry more).
MAX_DATAGRAM = 65535
#: Rows are handed on after this long (a time slice, as the flow receive path's 10 ms coalescing) or ...
FLUSH_SECONDS = 0.01
#: ... as soon as this many are waiting.
FLUSH_ROWS = 4096
#: Held session starts are checked against their timeout at most this often.
EXPIRE_SECONDS = 1.0
#: Open TCP connections accepted at once; more are closed and counted.
MAX_CONNECTIONS = 1024


def _peer_words(peer) -> tuple[int, int]:
    try:
        return ip_to_words(peer[0].split("%")[0])
    except (ValueError, TypeError, IndexError):
        return (0, 0)


class _Sink:
    """The shared parser and builder; flushes rows to on_rows once per loop pass."""

    def __init__(self, on_rows: Callable[[FlowBatch], None], counters: Counters, parser: SyslogParser,
                 hostlogs=None, admission: Admission | None = None):
        self.on_rows = on_rows
        self.admission = admission if admission is not None and not admission.open("syslog") else None
        self.counters = counters
        self.parser = parser
        # collector.hostlogs.listener.SyslogHostLogRouter: host-log records forwarded over syslog go there
        self.route = hostlogs.route if hostlogs is not None else (lambda lines: lines)
        self.builder = FlowBatchBuilder(4096)
        self._scheduled = False
        self._loop = asyncio.get_running_loop()
        self._expired_at = 0.0
        self._data_ns = -(2**63)  # the newest record time made: what held session starts expire by
        self.users = 0  # listeners sharing this sink; the last one to close ends the held sessions

    def close(self) -> None:
        """One listener is done; after the last, session starts still waiting become records (the input ended)."""
        self.users -= 1
        if self.users <= 0:
            self.parser.close_sessions(self.builder)
        self.flush()

    def rows_added(self) -> None:
        n = len(self.builder)
        if n >= FLUSH_ROWS:
            self.flush()
        elif n and not self._scheduled:
            self._scheduled = True
            self._loop.call_later(FLUSH_SECONDS, self.flush)

    def flush(self) -> None:
        """Hand the rows collected so far to on_rows (session starts past their timeout among them)."""
        self._scheduled = False
        if len(self.builder):
            # data time, as offline: the senders' own clocks, so a device whose clock is off does not see its
            # sessions expire at once
            self._data_ns = max(self._data_ns, int(self.builder.rows()["end_ns"].max()))
        now = time.monotonic()
        if now - self._expired_at >= EXPIRE_SECONDS:
            self._expired_at = now
            self.parser.expire_sessions(self._data_ns, self.builder)
        if not len(self.builder):
            return
        batch = self.builder.build()
        self.builder.reset()
        try:
            self.on_rows(batch)
        except Exception:  # noqa: BLE001 - a consumer bug must not stop the listener; counted and logged
            self.counters.inc("brokerwatch_syslog_listener_errors_total", ("on_rows",))
            log.exception("on_rows failed; %d rows lost", len(batch))


class _UdpReader:
    """The UDP socket read directly on readiness, up to MAX_PER_WAKEUP datagrams at a time (asyncio's datagram
    transport hands over one per loop pass), parsed per sender as one block (the parser's block path)."""

    #: Datagrams read per readiness event at most, so a flood cannot starve the TCP connections.
    MAX_PER_WAKEUP = 512

    def __init__(self, sock: socket.socket, sink: _Sink):
        self.sock = sock
        self.sink = sink
        self._loop = asyncio.get_running_loop()
        sock.setblocking(False)
        self._loop.add_reader(sock.fileno(), self._ready)

    def _ready(self) -> None:
        sink = self.sink
        recv = self.sock.recvfrom
        by_peer: dict = {}
        n = 0
        while n < self.MAX_PER_WAKEUP:
            try:
                data, addr = recv(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                sink.counters.inc("brokerwatch_syslog_listener_errors_total", ("udp_error",))
                break
            n += 1
            got = by_peer.get(addr[0])
            if got is None:
                by_peer[addr[0]] = [data]
            else:
                got.append(data)
        if not n:
            return
        sink.counters.inc("brokerwatch_syslog_messages_total", ("udp",), n)
        now = time.time_ns()
        admission = sink.admission
        for host, datagrams in by_peer.items():
            if admission is not None and not admission.admits("syslog", host, len(datagrams)):
                continue  # refused (and counted) before any parsing
            # a datagram is one message, or several separated by newlines (as SyslogParser.feed_datagram)
            lines: list[bytes] = []
            for d in datagrams:
                if b"\n" not in d.rstrip(b"\r\n\x00"):
                    lines.append(d)
                else:
                    lines += [p for p in d.split(b"\n") if p.strip()]
            sink.parser.feed_lines(sink.route(lines), _peer_words((host,)), now, sink.builder)
        sink.rows_added()

    def close(self) -> None:
        """Stop reading, close the socket and deliver the rows collected so far."""
        self._loop.remove_reader(self.sock.fileno())
        self.sock.close()
        self.sink.close()

    @property
    def port(self) -> int:
        """The bound UDP port."""
        return self.sock.getsockname()[1]


class _TcpProtocol(asyncio.Protocol):
    def __init__(self, sink: _Sink, server: "_TcpServer", max_message: int):
        self.sink = sink
        self.server = server
        self.framer = SyslogFramer(max_message)
        self.peer = (0, 0)
        self.transport = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        if len(self.server.connections) >= MAX_CONNECTIONS:
            self.sink.counters.inc("brokerwatch_syslog_listener_errors_total", ("too_many_connections",))
            transport.close()
            return
        self.server.connections.add(self)
        self.peer = _peer_words(transport.get_extra_info("peername") or ("",))
        self.sink.counters.inc("brokerwatch_syslog_connections_total", ("tcp",))

    def data_received(self, data: bytes) -> None:
        self._deliver(self.framer.feed(data))

    def _deliver(self, messages: list[bytes]) -> None:
        if self.framer.cut:
            self.sink.counters.inc("brokerwatch_syslog_oversized_total", ("tcp_frame",), self.framer.cut)
            self.framer.cut = 0
        if not messages:
            return
        now = time.time_ns()
        self.sink.counters.inc("brokerwatch_syslog_messages_total", ("tcp",), len(messages))
        self.sink.parser.feed_lines(self.sink.route(messages), self.peer, now, self.sink.builder)
        self.sink.rows_added()

    def eof_received(self):
        self._deliver(self.framer.flush())
        return None

    def connection_lost(self, exc) -> None:
        self._deliver(self.framer.flush())
        self.server.connections.discard(self)


class _TcpServer:
    """An asyncio server plus its open connections, closed together."""

    def __init__(self, sink: _Sink):
        self.sink = sink
        self.server: asyncio.base_events.Server | None = None
        self.connections: set[_TcpProtocol] = set()

    def close(self) -> None:
        """Stop accepting, close open connections, deliver what they had framed."""
        if self.server is not None:
            self.server.close()
        for c in list(self.connections):
            if c.transport is not None:
                c.transport.close()
            c._deliver(c.framer.flush())
        self.sink.close()

    @property
    def port(self) -> int:
        """The bound TCP port."""
        return self.server.sockets[0].getsockname()[1]


async def start_syslog_listeners(host: str, udp_port: int | None, tcp_port: int | None,
                                 on_rows: Callable[[FlowBatch], None], counters: Counters,
                                 tls_cert: str | None = None, tls_key: str | None = None,
                                 parser: SyslogParser | None = None,
                                 max_message: int = MAX_MESSAGE, reuse_port: bool = False, hostlogs=None,
                                 tls_client_ca: str | None = None, admission: Admission | None = None) -> list:
    """Start the UDP and TCP syslog servers (TCP over TLS when a cert and key are given; a port of None skips one).

    Returns the closeables (each with ``close()`` and ``port``), UDP first. ``on_rows(batch)`` gets a FlowBatch per
    event-loop pass in which rows were made. ``reuse_port`` sets SO_REUSEPORT (several receive workers).
    ``hostlogs`` (a SyslogHostLogRouter) takes the lines that are host-log records (syslog-wrapped JSON, auditd).
    ``tls_client_ca``: mutual TLS, clients must present a certificate that CA signed (others are refused and
    counted). ``admission``: senders the ``syslog`` listener kind does not admit are refused and counted.
    """
    if (tls_cert is None) != (tls_key is None):
        raise ValueError("TLS needs both a certificate and a key")
    if tls_client_ca and not tls_cert:
        raise ValueError("mutual TLS (a client CA) needs a server certificate and key")
    parser = parser if parser is not None else SyslogParser(counters)
    sink = _Sink(on_rows, counters, parser, hostlogs, admission)
    loop = asyncio.get_running_loop()
    out: list = []
    if udp_port is not None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        except OSError:
            pass
        sock.bind((host, udp_port))
        out.append(_UdpReader(sock, sink))
    if tcp_port is not None:
        srv = _TcpServer(sink)
        ctx = server_tls_context(tls_cert, tls_key, tls_client_ca) if tls_cert else None
        factory = tls_acceptor(lambda: _TcpProtocol(sink, srv, max_message), ctx, "syslog", counters,
                               sink.admission)
        srv.server = await loop.create_server(factory, host, tcp_port, reuse_address=True,
                                              reuse_port=reuse_port or None)
        out.append(srv)
    sink.users = len(out)
    return out
