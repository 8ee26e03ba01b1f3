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


#: Format ids used by ``sniff_many`` (index into KINDS); 0 = not recognised.
KINDS = (None, "netflow.v5", "netflow.v9", "ipfix", "sflow", "syslog")
KIND_IDS = {name: i for i, name in enumerate(KINDS) if name}


def sniff_many(buf: np.ndarray, offs: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """``sniff`` for many datagrams in one buffer at once: a KINDS index per datagram."""
    kinds = np.zeros(len(offs), np.int8)
    ok = lens >= 4
    if not ok.any():
        return kinds
    o = offs[ok]
    b0, b1, b2, b3 = buf[o], buf[o + 1], buf[o + 2], buf[o + 3]
    head = (b0.astype(np.uint16) << 8) | b1
    k = np.zeros(len(o), np.int8)
    k[head == 5] = 1
    k[head == 9] = 2
    k[head == 10] = 3
    k[(head == 0) & (b2 == 0) & (b3 == 5)] = 4
    k[b0 == 0x3C] = 5
    kinds[ok] = k
    return kinds


def _factories() -> dict[str, Callable[[Counters], FlowDecoder]]:
    """The explicit registry of flow decoders by name (imported here, not registered by import side effect)."""
    from collector.flows import ipfix, netflow_v5, netflow_v9, sflow_v5

    return {
        "netflow.v5": netflow_v5.NetflowV5Decoder,
        "netflow.v9": netflow_v9.NetflowV9Decoder,
        "ipfix": ipfix.IpfixDecoder,
        "sflow": sflow_v5.SflowV5Decoder,
    }


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

    def decode_many(self, datagrams: list[bytes], exporters: list[tuple[int, int]], recv_ns: int | list[int],
                    builder: FlowBatchBuilder, hint: str | None = None) -> int:
        """Decode a batch of datagrams given as bytes objects; same result as one ``decode`` call each.

        recv_ns is one receive time for all, or one per datagram (sFlow takes its flow times from it).
        """
        k = len(datagrams)
        if not k:
            return 0
        lens = np.fromiter((len(d) for d in datagrams), np.int64, k)
        offs = np.zeros(k, np.int64)
        np.cumsum(lens[:-1], out=offs[1:])
        ex = np.array(exporters, np.uint64).reshape(k, 2)
        times = np.broadcast_to(np.asarray(recv_ns, np.int64), (k,))
        return self.decode_buffer(np.frombuffer(b"".join(datagrams), np.uint8), offs, lens,
                                  np.ascontiguousarray(ex[:, 0]), np.ascontiguousarray(ex[:, 1]), times, builder,
                                  hint)

    def decode_buffer(self, buf: np.ndarray, offs: np.ndarray, lens: np.ndarray, ex_hi: np.ndarray,
                      ex_lo: np.ndarray, recv_ns: np.ndarray, builder: FlowBatchBuilder,
                      hint: str | None = None) -> int:
        """Decode datagrams laid out in one receive buffer (the listener's hot path).

        Formats are told apart with array operations; decoders that offer ``decode_buffer`` take all their datagrams
        in one call, the others one datagram at a time. Datagrams of one decoder keep their relative order, so
        templates still precede the data that needs them.
        """
        kinds = sniff_many(buf, offs, lens) if hint is None else np.full(len(offs), KIND_IDS.get(hint, 0), np.int8)
        oversized = lens > MAX_DATAGRAM
        total = 0
        for kind in np.unique(kinds):
            name = KINDS[kind]
            sel = np.flatnonzero((kinds == kind) & ~oversized)
            decoder = self._decoders.get(name) if name else None
            if decoder is not None and hasattr(decoder, "decode_buffer"):
                mark = len(builder)
                try:
                    n, status = decoder.decode_buffer(buf, offs[sel], lens[sel], ex_hi[sel], ex_lo[sel], builder)
                except DECODE_EXCEPTIONS:  # a block-path bug on hostile input: redo it one datagram at a time
                    builder.truncate(mark)
                    for i in sel:
                        o, k = int(offs[i]), int(lens[i])
                        total += self.decode(buf[o:o + k].tobytes(), (int(ex_hi[i]), int(ex_lo[i])),
                                             int(recv_ns[i]), builder, name)
                    continue
                total += n
                self.counters.inc("brokerwatch_decoder_records_total", (name,), n)
                if status.any():
                    for code, count in zip(*np.unique(status[status != 0], return_counts=True)):
                        reason = decoder.REASONS[int(code)]
                        self.counters.inc("brokerwatch_decoder_errors_total", (name, reason), int(count))
                        self._log.warning(f"{name}:{reason}", "rejected %d %s datagrams: %s", int(count), name,
                                          reason)
                continue
            for i in sel:
                o, n = int(offs[i]), int(lens[i])
                total += self.decode(buf[o:o + n].tobytes(), (int(ex_hi[i]), int(ex_lo[i])), int(recv_ns[i]),
                                     builder, hint)
        for i in np.flatnonzero(oversized):
            self.reject("unknown", "oversized", (int(ex_hi[i]), int(ex_lo[i])))
        return total

    def rejected(self) -> dict[str, int]:
        """Rejections summed by reason (``decoder.reason`` keys) for ``decode --count``."""
        out: dict[str, int] = {}
        for (decoder, reason), value in self.counters.series("brokerwatch_decoder_errors_total").items():
            key = f"{decoder}.{reason}"
            out[key] = out.get(key, 0) + value
        return out
