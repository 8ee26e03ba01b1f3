"""Offline inputs for ``decode`` and ``replay``: captures of exported datagrams, raw payload files, and text logs.

Each input is recognised by content, not by name or port: a pcap/pcapng file whose first frames are mostly exported
datagrams is a capture of exports, and its UDP payloads are sniffed one by one (NetFlow v5/v9, IPFIX, sFlow, syslog);
any other capture is raw traffic, built into flows by the flow meter (``collector/flows/traffic.py``, event.dataset
``pcap``; its DNS answers become endpoint ``dns_query`` events, ``take_endpoint_events``); a file whose first bytes are a flow export header is one raw datagram
(the ``.dat`` payloads other projects keep as test data); anything else is read as text lines (syslog) by the
syslog parser when it is present. All inputs share one ``FlowDecoders`` so templates carry across files.

Host-log files (Sysmon JSON/XML/EVTX, auditd, macOS, osquery; ``collector/hostlogs/``) are recognised by content too
(``is_hostlog``) and read into EndpointBatches by ``endpoint_batches``.
"""

from __future__ import annotations

import os
from collections import Counter
from itertools import islice
from dataclasses import dataclass, field
from typing import Callable, Iterator

from analytics.endpoint import EndpointBatch, EndpointBatchBuilder
from analytics.schema import FlowBatch, FlowBatchBuilder, bytes_to_words
from collector.enrich.devices import SamplingOverride
from collector.flows.decoders import FlowDecoders, sniff
from collector.metrics import Counters
from collector.pcap import PcapError, datagrams, frame_blocks, is_capture, is_raw_traffic


class InputError(Exception):
    """An input that cannot be read at all (missing, unreadable, not a known format)."""


@dataclass
class OfflineSource:
    """Reads inputs in order into FlowBatches of at most ``batch_rows`` rows, with one decoder state."""

    counters: Counters = field(default_factory=Counters)
    batch_rows: int = 65536
    progress: Callable[[str, int, int], None] | None = None  # (path, bytes done, bytes total)
    sampling: SamplingOverride | None = None  # per-exporter sampling rates from the config (Exporters)
    server_ports: tuple[int, ...] = ()  # the flow meter's server ports beside its own list (ProtocolPortList's)

    def __post_init__(self) -> None:
        self.decoders = FlowDecoders(self.counters)
        self._builder = FlowBatchBuilder(self.batch_rows + 4096)
        self._syslog = None
        self.hostlog_rejected: Counter[str] = Counter()
        self._syslog_now = -(2**63)  # the newest record time syslog gave: the data time sessions expire by
        self._traffic = None

    @staticmethod
    def check(paths: list[str]) -> None:
        """Raise InputError for the first input that is missing or unreadable."""
        for p in paths:
            if not os.path.isfile(p):
                raise InputError(f"{p}: no such file")
            if not os.access(p, os.R_OK):
                raise InputError(f"{p}: not readable")

    def endpoint_batches(self, paths: list[str], batch_events: int = 65536) -> Iterator[EndpointBatch]:
        """EndpointBatches from host-log files in order (one decoder per file: auditd state is per stream)."""
        from collector.hostlogs.decoder import HostLogDecoder

        self.check(paths)
        b = EndpointBatchBuilder()
        for p in paths:
            dec = HostLogDecoder(self.counters)
            dec.decode_file(p, b)
            self.hostlog_rejected.update(dec.rejected)
            if len(b) >= batch_events:
                yield b.build()
                b.reset()
        if len(b):
            yield b.build()

    def batches(self, paths: list[str]) -> Iterator[FlowBatch]:
        """FlowBatches from every input in order; raises InputError for an unreadable input before reading any."""
        self.check(paths)
        for p in paths:
            yield from self._one(p)
        if self._syslog is not None:  # the input ended: session starts still waiting for their end are records
            self._syslog.close_sessions(self._builder)
        if self._traffic is not None:  # the inputs ended: the flows still in the meter's table
            self._traffic.finish(self._builder)
        if len(self._builder):
            yield self._flush()

    def _flush(self) -> FlowBatch:
        if self.sampling:
            self.sampling.apply(self._builder.rows())  # flow rows only, each once: the builder is reset below
        batch = self._builder.build()
        self._builder.reset()
        return batch

    def _one(self, path: str) -> Iterator[FlowBatch]:
        if is_capture(path):
            yield from self._capture(path)
            return
        with open(path, "rb") as f:
            head = f.read(65536 + 1)
        if len(head) <= 65535 and sniff(head) in ("netflow.v5", "netflow.v9", "ipfix", "sflow"):
            self.decoders.decode(head, (0, 0), 0, self._builder)
            return
        yield from self._text(path)

    #: Datagrams decoded together from a capture (one kernel dispatch for many).
    DATAGRAMS_PER_DECODE = 1024

    def take_endpoint_events(self) -> list[EndpointBatch]:
        """Endpoint events the raw-traffic inputs produced since the last call (DNS answers seen on the wire)."""
        if self._traffic is None:
            return []
        eb = self._traffic.take_dns_events()
        return [eb] if eb is not None else []

    def _raw_traffic(self, path: str) -> Iterator[FlowBatch]:
        from collector.flows.traffic import TrafficMeter

        if self._traffic is None:  # one meter across inputs: a capture split in files meters as one
            self._traffic = TrafficMeter(self.counters, server_ports=self.server_ports)
        total = os.path.getsize(path)
        done = 0
        for block in frame_blocks(path):
            self._traffic.feed(block, self._builder)
            done += int(block.caplens.sum()) + 16 * len(block)
            if self.progress is not None:
                self.progress(path, done, total)
            if len(self._builder) >= self.batch_rows:
                yield self._flush()

    def _capture(self, path: str) -> Iterator[FlowBatch]:
        try:
            raw = is_raw_traffic(path)
        except PcapError as exc:
            self.counters.inc("brokerwatch_pcap_errors_total", ("broken_capture",))
            raise InputError(f"{path}: {exc}") from None
        if raw:
            try:
                yield from self._raw_traffic(path)
            except PcapError as exc:
                self.counters.inc("brokerwatch_pcap_errors_total", ("broken_capture",))
                raise InputError(f"{path}: {exc}") from None
            return
        total = os.path.getsize(path)
        done = 0
        pending: list[bytes] = []
        pending_from: list[tuple[int, int]] = []
        pending_ts: list[int] = []

        def decode_pending() -> None:
            if pending:
                self.decoders.decode_many(pending, pending_from, pending_ts, self._builder)
                pending.clear()
                pending_from.clear()
                pending_ts.clear()

        try:
            for i, d in enumerate(datagrams(path, self.counters)):
                done += len(d.payload) + 42
                if d.payload[:1] == b"<":  # syslog inside a capture
                    decode_pending()
                    self._syslog_parser().feed_datagram(d.payload, bytes_to_words(d.src), d.ts_ns, self._builder)
                    continue
                pending.append(d.payload)
                pending_from.append(bytes_to_words(d.src))
                pending_ts.append(d.ts_ns)
                if len(pending) >= self.DATAGRAMS_PER_DECODE:
                    decode_pending()
                    if len(self._builder) >= self.batch_rows:
                        yield self._flush()
                if self.progress is not None and i % 4096 == 0:
                    self.progress(path, done, total)
            decode_pending()
            if self.progress is not None:
                self.progress(path, total, total)
        except PcapError as exc:
            self.counters.inc("brokerwatch_pcap_errors_total", ("broken_capture",))
            raise InputError(f"{path}: {exc}") from None

    def _syslog_parser(self):
        if self._syslog is None:
            from collector.syslog.parser import SyslogParser

            self._syslog = SyslogParser(self.counters)
        return self._syslog

    def _text(self, path: str) -> Iterator[FlowBatch]:
        parser = self._syslog_parser()
        # A file has no receive times: its modification time stands in (year-less stamps are placed near it, and
        # a line with no time at all gets it), so replay never depends on the wall clock.
        mtime = os.stat(path).st_mtime_ns
        parser.reference_ns = mtime
        total = os.path.getsize(path)
        with open(path, "rb") as f:
            lines = _bounded_lines(f, parser.max_line)
            while True:
                # blocks of lines: the parser's block path (numba kernels) takes them many at a time
                block = list(islice(lines, 1024))
                if not block:
                    break
                mark = len(self._builder)
                parser.feed_lines(block, (0, 0), mtime, self._builder)
                if len(self._builder) > mark:
                    self._syslog_now = max(self._syslog_now, int(self._builder.rows()["end_ns"][mark:].max()))
                    parser.expire_sessions(self._syslog_now, self._builder)
                if self.progress is not None:
                    self.progress(path, f.tell(), total)
                if len(self._builder) >= self.batch_rows:
                    yield self._flush()


def _bounded_lines(f, limit: int) -> Iterator[bytes]:
    """The lines of a binary file, each read up to limit + 1 bytes: a longer line is handed on cut (the parser
    counts it as oversized) and the rest of it skipped, so one endless line never sits in memory whole."""
    while True:
        line = f.readline(limit + 1)
        if not line:
            return
        if len(line) > limit and not line.endswith(b"\n"):
            while True:  # skip to the end of this line
                rest = f.readline(1 << 16)
                if not rest or rest.endswith(b"\n"):
                    break
        yield line


def is_hostlog(path: str) -> bool:
    """True when a file is a host log (Sysmon, auditd, macOS, osquery), by content: an EVTX or event XML file, or
    first lines that the host-log decoder reads as records of a known format (syslog-wrapped or not)."""
    from collector.hostlogs.decoder import HostLogDecoder, sniff

    if is_capture(path):
        return False
    with open(path, "rb") as f:
        head = f.read(65536)
    kind = sniff(head)
    if kind in ("evtx", "xml"):
        return True
    if kind == "json":
        body = head.lstrip(b"\xef\xbb\xbf \t\r\n")
        if body[:1] == b"[" or body.split(b"\n", 1)[0].strip() == b"{":
            return True  # one JSON document (an array of events, a pretty-printed Elasticsearch hit)
    lines = [ln for ln in head.split(b"\n")[:8] if ln.strip()]
    if len(lines) > 1 and len(head) == 65536:
        lines = lines[:-1]  # the last line may be cut by the read
    if not lines:
        return False
    probe = HostLogDecoder()
    b = EndpointBatchBuilder()
    for ln in lines:
        probe.feed_line(ln, b)
    probe.finish(b)
    decoded = sum(probe.records.values()) + sum(probe.skipped.values())
    return decoded > 0 and sum(probe.rejected.values()) < len(lines)
