"""Pure, synchronous decoders from exported datagrams to FlowBatch rows, and the dispatcher that picks one by content.

A decoder is an object with a ``name`` (its ``event.dataset``) and
``decode(data, exporter, recv_ns, builder) -> int`` that appends rows to a ``FlowBatchBuilder`` and returns how
many it appended, or raises ``DecodeError(reason)``. Decoders hold per-exporter state (templates, sequence numbers)
but do no I/O. ``FlowDecoders`` is the one boundary where decode errors are caught, counted by reason and logged
at a limited rate; rows of a rejected datagram are taken back out of the builder.
"""

from __future__ import annotations

import struct
from typing import Callable, Protocol

import numpy as np

from analytics.schema import FlowBatchBuilder
from collector.metrics import Counters, RateLimitedLog

#: Largest datagram any decoder accepts (checked before parsing). UDP cannot carry more.
MAX_DATAGRAM = 65535


class DecodeError(Exception):
    """A datagram a decoder rejects; ``reason`` is a short snake_case label for the counter."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class FlowDecoder(Protocol):
    """What every flow decoder offers."""

    name: str

    def decode(self, data: bytes, exporter: tuple[int, int], recv_ns: int, builder: FlowBatchBuilder) -> int: ...


#: The exceptions a decoder may leak on hostile input besides DecodeError; caught at the one boundary.
DECODE_EXCEPTIONS = (DecodeError, struct.error, ValueError, IndexError, KeyError, OverflowError, TypeError)


def sniff(data: bytes) -> str | None:
    """The decoder name that fits a datagram by its first bytes, or None."""
    if len(data) < 4:
        return None
    head = data[0] << 8 | data[1]
    if head == 5:
        return "netflow.v5"
    if head == 9:
        return "netflow.v9"
    if head == 10:
        return "ipfix"
    if data[:4] == b"\x00\x00\x00\x05":
        return "sflow"
    if data[0] == 0x3C:  # '<' PRI of a syslog message
        return "syslog"
    return None


def _factories() -> dict[str, Callable[[Counters], FlowDecoder]]:
    """The explicit registry of flow decoders by name (imports deferred so a missing one fails loudly at use)."""
    from collector.decoders import netflow_v5

    registry: dict[str, Callable[[Counters], FlowDecoder]] = {"netflow.v5": netflow_v5.NetflowV5Decoder}
    try:
        from collector.decoders import netflow_v9

        registry["netflow.v9"] = netflow_v9.NetflowV9Decoder
    except ImportError:
        pass
    try:
        from collector.decoders import ipfix

        registry["ipfix"] = ipfix.IpfixDecoder
    except ImportError:
        pass
    try:
        from collector.decoders import sflow_v5

        registry["sflow"] = sflow_v5.SflowV5Decoder
    except ImportError:
        pass
    return registry


class FlowDecoders:
    """All flow decoders with their state, behind one ``decode`` that never raises on bad input."""

    def __init__(self, counters: Counters | None = None):
        self.counters = counters if counters is not None else Counters()
        self._decoders: dict[str, FlowDecoder] = {name: make(self.counters) for name, make in _factories().items()}
        self._log = RateLimitedLog()

    def get(self, name: str) -> FlowDecoder | None:
        """The decoder registered under name, if any."""
        return self._decoders.get(name)

    def reject(self, decoder: str, reason: str, exporter: tuple[int, int] | None = None, detail: str = "") -> None:
        """Count one rejected datagram and log it at a limited rate."""
        self.counters.inc("brokerwatch_decoder_errors_total", (decoder, reason))
        self._log.warning(f"{decoder}:{reason}", "rejected %s datagram: %s %s", decoder, reason, detail)

    def decode(self, data: bytes, exporter: tuple[int, int], recv_ns: int, builder: FlowBatchBuilder,
               hint: str | None = None) -> int:
        """Decode one datagram into builder; returns rows appended (0 when rejected, with the reason counted)."""
        if len(data) > MAX_DATAGRAM:
            self.reject("unknown", "oversized", exporter)
            return 0
        name = hint or sniff(data)
        decoder = self._decoders.get(name) if name else None
        if decoder is None:
            self.reject(name or "unknown", "unknown_format" if name is None else "no_decoder", exporter)
            return 0
        mark = len(builder)
        try:
            n = decoder.decode(data, exporter, recv_ns, builder)
        except DecodeError as exc:
            builder.truncate(mark)
            self.reject(decoder.name, exc.reason, exporter, exc.detail)
            return 0
        except DECODE_EXCEPTIONS as exc:  # a decoder bug on hostile input: still counted, never fatal
            builder.truncate(mark)
            self.reject(decoder.name, "malformed", exporter, repr(exc))
            return 0
        self.counters.inc("brokerwatch_decoder_records_total", (decoder.name,), n)
        return n

    def decode_many(self, datagrams: list[bytes], exporters: list[tuple[int, int]], recv_ns: int,
                    builder: FlowBatchBuilder, hint: str | None = None) -> int:
        """Decode a batch of datagrams (the receive path); decoders with ``decode_many`` take their share at once.

        Datagrams of one decoder keep their relative order, so templates still precede the data that needs them.
        """
        groups: dict[str, list[int]] = {}
        for i, data in enumerate(datagrams):
            name = hint or sniff(data)
            decoder = self._decoders.get(name) if name else None
            if decoder is None or len(data) > MAX_DATAGRAM or not hasattr(decoder, "decode_many"):
                continue
            groups.setdefault(name, []).append(i)
        batched = {i for idx in groups.values() for i in idx}
        total = 0
        for i, data in enumerate(datagrams):
            if i not in batched:
                total += self.decode(data, exporters[i], recv_ns, builder, hint)
        for name, idx in groups.items():
            decoder = self._decoders[name]
            n, status = decoder.decode_many([datagrams[i] for i in idx], [exporters[i] for i in idx], builder)
            total += n
            self.counters.inc("brokerwatch_decoder_records_total", (name,), n)
            if status.any():
                for code, k in zip(*np.unique(status[status != 0], return_counts=True)):
                    reason = decoder.REASONS[int(code)]
                    self.counters.inc("brokerwatch_decoder_errors_total", (name, reason), int(k))
                    self._log.warning(f"{name}:{reason}", "rejected %d %s datagrams: %s", int(k), name, reason)
        return total

    def rejected(self) -> dict[str, int]:
        """Rejections summed by reason (``decoder.reason`` keys) for ``decode --count``."""
        out: dict[str, int] = {}
        for (decoder, reason), value in self.counters.series("brokerwatch_decoder_errors_total").items():
            key = f"{decoder}.{reason}"
            out[key] = out.get(key, 0) + value
        return out
