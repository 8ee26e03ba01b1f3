"""Admission: which senders a listener takes, decided before decoding, and mutual TLS for the TLS listeners.

A collector on the network edge receives whatever anyone sends to its ports. Per listener kind (``flows``,
``syslog``, ``hostlogs``) the ``Exporters`` config key may name the sender CIDRs admitted; a device entry's
``admit: false`` refuses an exporter on every listener and ``admit: true`` admits it on every listener. The
default admits every sender, as collectors do. Whatever is refused is counted by listener and sender
(``brokerwatch_admission_refused_total``) and dropped before a byte of it is decoded.

For a listener (the API the flow receivers, the syslog listeners and the host-log listener share)::

    admission = Admission(config.Exporters, counters)
    admission.mask("flows", ex_hi, ex_lo)        # a block of datagrams: bool per datagram, refused ones counted
    admission.admits("syslog", "192.0.2.7")      # one sender (a TCP connection, a UDP sender's datagrams)
    ctx = server_tls_context(cert, key, client_ca="ca.pem")        # CERT_REQUIRED: mutual TLS
    factory = tls_acceptor(lambda: MyProtocol(), ctx, "hostlogs", counters, admission)
    await loop.create_server(factory, host, port)                  # no ssl= here: the acceptor does the handshake
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Callable

import numpy as np

from analytics.config import AddressSet
from analytics.exporters import LISTENER_KINDS, ExportersConfig
from analytics.schema import ip_to_words, words_to_ip
from collector.metrics import Counters, RateLimitedLog

log = logging.getLogger("brokerwatch.admission")
_ratelog = RateLimitedLog(1.0, log)

#: Refused senders counted by address per listener kind at most; past this they are counted as "other", so a
#: spoofed flood cannot grow the counters without bound.
MAX_SENDER_LABELS = 1024
#: Seconds a TLS client has to finish its handshake.
HANDSHAKE_TIMEOUT_S = 10.0


class Admission:
    """Per listener kind, the rules that admit or refuse a sender, applied vectorised to blocks of senders."""

    def __init__(self, config: ExportersConfig | None = None, counters: Counters | None = None):
        config = config if config is not None else ExportersConfig()
        self.counters = counters if counters is not None else Counters()
        self._labels: dict[str, set[str]] = {k: set() for k in LISTENER_KINDS}
        self._rules: dict[str, tuple[AddressSet, np.ndarray, bool] | None] = {}
        decided = [d for d in config.devices if d.admit is not None]  # longest prefix first
        for kind in LISTENER_KINDS:
            allow = config.admission.get(kind)
            if allow is None and not any(d.admit is False for d in decided):
                self._rules[kind] = None  # admits everyone: nothing to check on the hot path
                continue
            entries = [(d.cidr, 0, -1, d.cidr) for d in decided] + [(c, 0, -1, c) for c in (allow or ())]
            decision = np.array([bool(d.admit) for d in decided] + [True] * len(allow or ()), bool)
            self._rules[kind] = (AddressSet.build(entries), decision, allow is None)

    def open(self, kind: str) -> bool:
        """Whether the listener kind admits every sender (then nothing need be checked)."""
        return self._rules[kind] is None

    def mask(self, kind: str, hi: np.ndarray, lo: np.ndarray) -> np.ndarray | None:
        """Per sender (address words), whether it is admitted; refused ones counted. None means all admitted."""
        rules = self._rules[kind]
        if rules is None:
            return None
        addrs, decision, default = rules
        idx = addrs.match(hi, lo)
        ok = np.where(idx >= 0, decision[np.maximum(idx, 0)], default)
        if not ok.all():
            pairs, counts = np.unique(np.stack([hi[~ok], lo[~ok]], axis=1), axis=0, return_counts=True)
            for (h, l), n in zip(pairs.tolist(), counts.tolist()):  # per distinct refused sender, not per datagram
                self._count(kind, words_to_ip(h, l), n)
        return ok

    def admits(self, kind: str, host: str, n: int = 1) -> bool:
        """Whether one sender (address text) is admitted by the listener kind; a refusal counts ``n`` messages."""
        rules = self._rules[kind]
        if rules is None:
            return True
        try:
            hi, lo = ip_to_words(host.split("%", 1)[0])
        except ValueError:
            hi, lo = 0, 0
        addrs, decision, default = rules
        i = int(addrs.match(np.array([hi], np.uint64), np.array([lo], np.uint64))[0])
        ok = bool(decision[i]) if i >= 0 else default
        if not ok:
            self._count(kind, words_to_ip(hi, lo), n)
        return ok

    def _count(self, kind: str, sender: str, n: int) -> None:
        seen = self._labels[kind]
        if sender not in seen:
            if len(seen) >= MAX_SENDER_LABELS:
                sender = "other"
            else:
                seen.add(sender)
        self.counters.inc("brokerwatch_admission_refused_total", (kind, sender), n)
        _ratelog.warning(f"refused-{kind}", "%s listener: refused %d message(s) from %s (not admitted)",
                         kind, n, sender)


def server_tls_context(cert: str, key: str, client_ca: str | None = None) -> ssl.SSLContext:
    """A server TLS context (TLS 1.2+); with ``client_ca`` clients must present a certificate that CA signed."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    if client_ca:
        ctx.load_verify_locations(cafile=client_ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def tls_acceptor(protocol_factory: Callable[[], asyncio.Protocol], ctx: ssl.SSLContext | None, kind: str,
                 counters: Counters, admission: Admission | None = None,
                 timeout: float = HANDSHAKE_TIMEOUT_S) -> Callable[[], asyncio.Protocol]:
    """A protocol factory for ``loop.create_server`` (without ``ssl=``) that admits the peer, then does the TLS
    handshake itself, so that a refused sender or a failed handshake (no client certificate, one signed by another
    CA) is counted: ``brokerwatch_admission_refused_total{listener,sender}`` and
    ``brokerwatch_tls_refused_total{listener,reason}``. ``ctx`` None: plain TCP, admission only."""
    if ctx is None and (admission is None or admission.open(kind)):
        return protocol_factory  # nothing to check: the connection goes straight to the protocol
    return lambda: _Acceptor(protocol_factory, ctx, kind, counters, admission, timeout)


def _log_failure(task: asyncio.Task) -> None:
    # the handshake task catches what a client can cause; anything else is a bug, and must not pass unseen
    if not task.cancelled() and task.exception() is not None:
        log.error("TLS acceptor failed: %r", task.exception(), exc_info=task.exception())


class _Acceptor(asyncio.Protocol):
    """Holds a new connection until it is admitted and (for TLS) handshaken, then hands it to the real protocol."""

    def __init__(self, factory, ctx, kind, counters, admission, timeout):
        self._factory, self._ctx, self._kind = factory, ctx, kind
        self._counters, self._admission, self._timeout = counters, admission, timeout
        self._inner: asyncio.Protocol | None = None

    def connection_made(self, transport) -> None:
        peer = (transport.get_extra_info("peername") or ("",))[0]
        if self._admission is not None and not self._admission.admits(self._kind, peer):
            transport.abort()
            return
        if self._ctx is None:
            self._inner = self._factory()
            self._inner.connection_made(transport)
            return
        # Reading stops until the handshake starts, so the ClientHello stays in the kernel for start_tls.
        transport.pause_reading()
        task = asyncio.get_running_loop().create_task(self._handshake(transport, peer))
        task.add_done_callback(_log_failure)

    async def _handshake(self, transport, peer: str) -> None:
        loop = asyncio.get_running_loop()
        inner = self._factory()
        try:
            tls = await loop.start_tls(transport, inner, self._ctx, server_side=True,
                                       ssl_handshake_timeout=self._timeout)
        except (ssl.SSLError, ConnectionError, OSError, asyncio.TimeoutError) as exc:
            reason = getattr(exc, "reason", None) or type(exc).__name__
            self._counters.inc("brokerwatch_tls_refused_total", (self._kind, str(reason).lower()))
            _ratelog.warning(f"tls-{self._kind}", "%s listener: TLS handshake from %s refused: %s", self._kind,
                             peer, reason)
            transport.abort()
            return
        self._inner = inner
        inner.connection_made(tls)

    # Before the handoff nothing reaches here for TLS; for plain TCP every call is passed on.
    def data_received(self, data: bytes) -> None:
        if self._inner is not None:
            self._inner.data_received(data)

    def eof_received(self):
        return self._inner.eof_received() if self._inner is not None else None

    def connection_lost(self, exc) -> None:
        if self._inner is not None and self._ctx is None:
            self._inner.connection_lost(exc)
