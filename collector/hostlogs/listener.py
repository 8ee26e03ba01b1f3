"""Host logs on the wire: the TCP listener for JSON lines (5515, optionally TLS) and the router that takes
syslog-wrapped host-log records off the syslog listeners.

Forwarders send one record a line: Winlogbeat/Elastic Agent/NXLog/Wazuh JSON, osquery result lines, eslogger JSON,
raw audit.log lines (audisp/rsyslog), rendered event XML on one line. Each TCP connection has its own
``HostLogDecoder`` (auditd events span lines). Events are gathered into one EndpointBatch per event-loop pass and
handed to ``on_batch`` (the channel to the analytics process). A line longer than ``MAX_RECORD_BYTES`` is
discarded up to its end and counted; nothing a sender writes can raise into the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Callable

from analytics.endpoint import EndpointBatch, EndpointBatchBuilder
from collector.admission import Admission, server_tls_context, tls_acceptor
from collector.hostlogs.decoder import MAX_RECORD_BYTES, HostLogDecoder
from collector.metrics import Counters

log = logging.getLogger("brokerwatch.hostlogs")

#: Open connections a listener keeps; more are refused and counted.
MAX_CONNECTIONS = 4096


class _Batcher:
    """One builder shared by every connection, flushed once per event-loop pass in which events were added."""

    def __init__(self, on_batch: Callable[[EndpointBatch], object], counters: Counters) -> None:
        self.on_batch = on_batch
        self.counters = counters
        self.builder = EndpointBatchBuilder()
        self._scheduled = False

    def added(self) -> None:
        if len(self.builder) and not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        if len(self.builder):
            batch = self.builder.build()
            self.builder.reset()
            self.on_batch(batch)


class _LineProtocol(asyncio.Protocol):
    def __init__(self, server: "HostLogListener") -> None:
        self.server = server
        self.decoder = HostLogDecoder(server.counters)
        self.buf = bytearray()
        self.skipping = False  # inside an oversized line: discard up to its newline
        self.transport = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        if len(self.server.connections) >= MAX_CONNECTIONS:
            self.server.counters.inc("brokerwatch_hostlogs_listener_errors_total", ("too_many_connections",))
            transport.close()
            return
        self.server.connections.add(self)
        self.server.counters.inc("brokerwatch_hostlogs_connections_total", ("tls" if self.server.tls else "tcp",))

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        b = self.server.batcher.builder
        start = 0
        while True:
            nl = buf.find(b"\n", start)
            if nl < 0:
                break
            if self.skipping:
                self.skipping = False
            else:
                self.decoder.feed_line(bytes(buf[start:nl]), b)
            start = nl + 1
        del buf[:start]
        if len(buf) > MAX_RECORD_BYTES:
            if not self.skipping:
                self.decoder.reject("too_large", f"line over {MAX_RECORD_BYTES} bytes")
            self.skipping = True
            buf.clear()
        self.server.batcher.added()

    def eof_received(self):
        self._finish()
        return None

    def connection_lost(self, exc) -> None:
        self._finish()
        self.server.connections.discard(self)

    def _finish(self) -> None:
        b = self.server.batcher.builder
        if self.buf and not self.skipping:
            self.decoder.feed_line(bytes(self.buf), b)
        self.buf.clear()
        self.decoder.finish(b)
        self.server.batcher.flush()


class HostLogListener:
    """The TCP (or TLS) listener for host logs as lines."""

    def __init__(self, on_batch: Callable[[EndpointBatch], object], counters: Counters) -> None:
        self.counters = counters
        self.batcher = _Batcher(on_batch, counters)
        self.connections: set[_LineProtocol] = set()
        self.server: asyncio.base_events.Server | None = None
        self.tls = False

    async def start(self, host: str, port: int, ssl_context: ssl.SSLContext | None = None,
                    reuse_port: bool = False, admission: Admission | None = None) -> "HostLogListener":
        """Bind and serve; raises OSError when the port cannot be bound. Senders the ``hostlogs`` listener kind does
        not admit, and TLS clients that fail the handshake (mutual TLS: no certificate from the configured CA), are
        refused and counted (collector/admission.py)."""
        self.tls = ssl_context is not None
        loop = asyncio.get_running_loop()
        factory = tls_acceptor(lambda: _LineProtocol(self), ssl_context, "hostlogs", self.counters, admission)
        self.server = await loop.create_server(factory, host, port, reuse_address=True,
                                               reuse_port=reuse_port or None)
        return self

    @property
    def port(self) -> int:
        """The bound TCP port."""
        return self.server.sockets[0].getsockname()[1]

    def close(self) -> None:
        """Stop accepting, finish open connections (their pending auditd events too), flush."""
        if self.server is not None:
            self.server.close()
        for c in list(self.connections):
            if c.transport is not None:
                c.transport.close()
            c._finish()
        self.batcher.flush()


def tls_context(cert: str, key: str, client_ca: str | None = None) -> ssl.SSLContext:
    """A server TLS context (TLS 1.2 or later) from a certificate chain and key file; with ``client_ca`` clients
    must present a certificate that CA signed (mutual TLS)."""
    return server_tls_context(cert, key, client_ca)


class SyslogHostLogRouter:
    """Takes the host-log records out of lines that reached a syslog listener (audisp-syslog, NXLog om_udp,
    rsyslog forwarding JSON) and leaves the firewall lines to the syslog parser."""

    MARKERS = (b'{"', b"msg=audit(", b"<Event xmlns")

    def __init__(self, on_batch: Callable[[EndpointBatch], object], counters: Counters) -> None:
        self.batcher = _Batcher(on_batch, counters)
        self.decoder = HostLogDecoder(counters)  # one stream: a syslog relay forwards auditd lines in order

    def route(self, lines: list[bytes]) -> list[bytes]:
        """The lines that are not host-log records (decoded here when they are)."""
        markers = self.MARKERS
        if not any(m in line for line in lines for m in markers):
            return lines
        rest = []
        b = self.batcher.builder
        for line in lines:
            if any(m in line for m in markers):
                self.decoder.feed_line(line, b)
            else:
                rest.append(line)
        self.batcher.flush()
        return rest

    def close(self) -> None:
        """Flush events still being assembled."""
        self.decoder.finish(self.batcher.builder)
        self.batcher.flush()
