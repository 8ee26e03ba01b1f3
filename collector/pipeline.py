"""The receive-side pipeline: datagrams decoded into a reusable builder, cut into batches by size and time."""

from __future__ import annotations

import time
from typing import Callable

import numpy as np

from analytics.schema import FlowBatch, FlowBatchBuilder, ip_to_words
from collector.admission import Admission
from collector.enrich.devices import SamplingOverride
from collector.flows.decoders import FlowDecoders
from collector.metrics import DECODE_BUCKETS, DECODE_SECONDS, Counters


class FlowPipeline:
    """Decodes datagrams from any exporter into FlowBatches handed to ``emit`` (the bus)."""

    def __init__(self, emit: Callable[[FlowBatch], object], counters: Counters | None = None,
                 batch_rows: int = 32768, emit_rows: Callable[[np.ndarray, list[str]], object] | None = None,
                 admission: Admission | None = None, sampling: SamplingOverride | None = None):
        """``emit`` takes FlowBatches; ``emit_rows`` (when given) takes the builder's rows and strings instead, for a
        transport that copies rows as they are (the analytics channel), saving the split into columns.
        ``admission``: senders the ``flows`` listener kind refuses are dropped (and counted) before decoding;
        ``sampling``: per-exporter sampling rates from the config rescale what was decoded."""
        self.counters = counters if counters is not None else Counters()
        self.admission = admission if admission is not None and not admission.open("flows") else None
        self.sampling = sampling if sampling else None
        self._emit_rows = emit_rows
        self.decoders = FlowDecoders(self.counters)
        self._emit = emit
        self._batch_rows = batch_rows
        self._builder = FlowBatchBuilder(batch_rows + 4096)
        self._exporters: dict[str, tuple[int, int]] = {}
        self._pending: list[bytes] = []
        self._pending_from: list[tuple[int, int]] = []
        self._pending_ts: list[int] = []
        self._pending_hint: str | None = None
        self.datagrams = 0
        self._decode_seconds = self.counters.histogram(
            DECODE_SECONDS, "Seconds to decode one block of datagrams (up to a receive's worth)", DECODE_BUCKETS)

    def exporter_words(self, host: str) -> tuple[int, int]:
        """The (hi, lo) words of an exporter address, cached per address text."""
        words = self._exporters.get(host)
        if words is None:
            if len(self._exporters) > 65536:
                self._exporters.clear()
            words = self._exporters[host] = ip_to_words(host.split("%", 1)[0])
        return words

    def on_datagram(self, data: bytes, host: str, hint: str | None = None) -> None:
        """Queue one datagram from host; they are decoded a batch at a time (the only work done per datagram)."""
        self.datagrams += 1
        if hint != self._pending_hint and self._pending:
            self._decode_pending()
        self._pending_hint = hint
        self._pending.append(data)
        self._pending_from.append(self.exporter_words(host))
        self._pending_ts.append(time.time_ns())
        if len(self._pending) >= self.DATAGRAMS_PER_DECODE:
            self._decode_pending()

    #: Datagrams decoded together: enough to pay the kernel dispatch once for many, few enough to stay in cache.
    DATAGRAMS_PER_DECODE = 512

    def _decode_pending(self) -> None:
        if not self._pending:
            return
        t0 = time.perf_counter()  # ~0.1 us a block of up to 512 datagrams
        before = len(self._builder)
        self.decoders.decode_many(self._pending, self._pending_from, self._pending_ts, self._builder,
                                  self._pending_hint)
        if self.sampling is not None:
            self.sampling.apply(self._builder.rows()[before:])
        self._decode_seconds.observe(time.perf_counter() - t0)
        self._pending = []
        self._pending_from = []
        self._pending_ts = []
        if len(self._builder) >= self._batch_rows:
            self._emit_builder()

    def decode_block(self, buf: np.ndarray, offs: list[int], lens: list[int], hosts: list[str],
                     times: list[int], hint: str | None = None) -> None:
        """Decode datagrams a listener received into one buffer (offsets, lengths, senders, receive times)."""
        self._decode_pending()  # keep arrival order with anything queued by on_datagram
        self.datagrams += len(offs)
        words = self._exporters
        ex = [words.get(h) or self.exporter_words(h) for h in hosts]
        exa = np.array(ex, np.uint64).reshape(len(ex), 2)
        self.decode_arrays(buf, np.array(offs, np.int64), np.array(lens, np.int64),
                           np.ascontiguousarray(exa[:, 0]), np.ascontiguousarray(exa[:, 1]),
                           np.array(times, np.int64), hint, counted=True)

    def decode_arrays(self, buf: np.ndarray, offs: np.ndarray, lens: np.ndarray, ex_hi: np.ndarray,
                      ex_lo: np.ndarray, times: np.ndarray, hint: str | None = None, counted: bool = False) -> None:
        """Decode datagrams described by arrays (the recvmmsg receiver's form)."""
        if not counted:
            self._decode_pending()
            self.datagrams += len(offs)
        if self.admission is not None:  # one vectorised test per block, before any byte is decoded
            ok = self.admission.mask("flows", ex_hi, ex_lo)
            if not ok.all():
                offs, lens, ex_hi, ex_lo, times = offs[ok], lens[ok], ex_hi[ok], ex_lo[ok], times[ok]
                if not len(offs):
                    return
        t0 = time.perf_counter()
        before = len(self._builder)
        self.decoders.decode_buffer(buf, offs, lens, ex_hi, ex_lo, times, self._builder, hint)
        if self.sampling is not None:
            self.sampling.apply(self._builder.rows()[before:])
        self._decode_seconds.observe(time.perf_counter() - t0)
        if len(self._builder) >= self._batch_rows:
            self._emit_builder()

    def on_rows(self, batch: FlowBatch) -> None:
        """Pass on a batch another parser (syslog) already built."""
        if len(batch):
            self._emit(batch)

    def flush(self) -> None:
        """Decode what is queued and emit whatever rows are waiting."""
        self._decode_pending()
        self._emit_builder()

    def _emit_builder(self) -> None:
        if len(self._builder) and self._emit_rows is not None:
            self._emit_rows(self._builder.rows(), self._builder.strings)
            self._builder.reset()
        elif len(self._builder):
            batch = self._builder.build()
            self._builder.reset()
            self._emit(batch)
