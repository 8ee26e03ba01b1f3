"""Host-log bytes into endpoint events: each record's format recognised by content, every rejection counted.

One ``HostLogDecoder`` per input stream (a file, a TCP connection): auditd events span several lines and are
assembled by serial, so the decoder keeps state between lines; ``finish()`` flushes what is pending.

Formats (each module under ``collector/hostlogs/`` decodes one family):
- JSON objects, one per line or one per file: Winlogbeat / Elastic Agent, Wazuh, NXLog / flat Sysmon JSON
  (``sysmon.py``), osquery result logs (``osquery.py``), macOS unified log ``--style ndjson``, eslogger and Elastic
  Endpoint (``macos.py``). The dialect of every object is decided by its keys (``JSON_DIALECTS``), so one listener
  takes a mix of forwarders.
- Rendered Windows event XML (``<Event>`` elements, alone or in ``<Events>``) and EVTX files (``sysmon.py``).
- Raw ``audit.log`` lines (``auditd.py``).
- macOS unified-log text (``log show``/``log stream`` default, syslog and compact styles; ``macos.py``), whose
  multi-line messages continue on tab-indented lines.
Any of them may arrive wrapped in a syslog header (forwarders such as rsyslog/audisp-syslog/NXLog om_udp): the
header is skipped up to the first ``{``, ``<Event`` or ``type=``/``node=``.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from typing import Callable

import orjson

from analytics.endpoint import EndpointBatchBuilder
from collector.hostlogs.errors import HostLogError, HostLogSkip
from collector.hostlogs.macos import TEXT_HEADERS, TEXT_LINE, TEXT_TRAILERS
from collector.metrics import Counters, RateLimitedLog

log = logging.getLogger("brokerwatch.hostlogs")

#: A line or JSON document longer than this is rejected unread (``too_large``).
MAX_RECORD_BYTES = 1 << 20

#: A decoder of one JSON dialect: appends the object's events to the builder and returns how many, or raises
#: HostLogError (a rejection) or HostLogSkip (a well-formed record of no use, counted apart). The dataset name it
#: reports is the registry key's dataset.
JsonDecode = Callable[[dict, EndpointBatchBuilder], int]

#: JSON dialects in the order they are tried: name -> (dataset, detect(obj) -> bool, decode). Filled below from the
#: format modules; an explicit table, no registration by import side effect.
JSON_DIALECTS: dict[str, tuple[str, Callable[[dict], bool], JsonDecode]] = {}

#: Fast paths tried on a JSON record's bytes before the generic parse: (marker, dataset, decode_bytes(data, b)).
#: A record holding the marker goes to decode_bytes, which appends its events and returns how many, raises as a
#: JsonDecode does, or returns None to hand the record to the generic path (for shapes it does not cover).
JSON_FAST_PATHS: list[tuple[bytes, str, Callable[[bytes, EndpointBatchBuilder], int | None]]] = []

#: Block forms of fast paths: decode_bytes -> decode_lines(data, b, decoder), which reads many newline-joined
#: records in one call and returns the indexes of those it hands on (or None: the block goes line by line).
JSON_BATCH_PATHS: dict[Callable, Callable] = {}

#: Lines a stream's block path takes at once.
BLOCK_LINES = 256


#: What a format module's decode may raise on a value it did not foresee: counted as ``bad_value``, never raised.
_VALUE_ERRORS = (KeyError, TypeError, ValueError, AttributeError, IndexError, OverflowError, RecursionError)


def _register_dialects() -> None:
    from collector.hostlogs import macos, osquery, sysmon  # noqa: F401  (each module holds detect/decode pairs)

    for module in (sysmon, osquery, macos):
        for name, entry in module.DIALECTS.items():
            JSON_DIALECTS[name] = entry
        JSON_FAST_PATHS.extend(getattr(module, "FAST_PATHS", ()))
        JSON_BATCH_PATHS.update(getattr(module, "BATCH_PATHS", {}))


def sniff(head: bytes) -> str:
    """The format of a host-log file from its first bytes: ``evtx``, ``xml``, ``auditd``, ``json``, ``macos_text``
    or ''."""
    if head.startswith(b"ElfFile\x00"):
        return "evtx"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if text.startswith((b"<?xml", b"<Events", b"<Event ", b"<Event>")):
        return "xml"
    if text.startswith((b"type=", b"node=")):
        return "auditd"
    if TEXT_LINE.match(text) or text.startswith(TEXT_HEADERS):
        return "macos_text"
    if text.startswith((b"{", b"[")):
        return "json"
    return ""


def _wraps_record(line: bytes) -> bool:
    """True when a line that begins with a date carries a JSON, auditd or XML record after it (a syslog file with
    ``YYYY-MM-DD HH:MM:SS.ffffff`` stamps), rather than being a unified-log text line."""
    return b'{"' in line or b"msg=audit(" in line or b"<Event" in line


def _strip_wrapper(line: bytes) -> bytes:
    """The record inside a syslog-wrapped line (everything from its first ``{``, ``<Event`` or ``type=``)."""
    if line.startswith((b"{", b"[", b"type=", b"node=", b"<Event", b"<?xml")):
        return line
    cuts = [i for i in (line.find(b"{"), line.find(b"<Event"), line.find(b"type="), line.find(b"node=")) if i >= 0]
    return line[min(cuts):] if cuts else line


class HostLogDecoder:
    """Decodes one stream of host-log records into an EndpointBatchBuilder, counting records and rejections."""

    #: What a format's decode may raise on a value it did not foresee (counted as ``bad_value``).
    VALUE_ERRORS = _VALUE_ERRORS

    def __init__(self, counters: Counters | None = None) -> None:
        if not JSON_DIALECTS:
            _register_dialects()
        self.counters = counters if counters is not None else Counters()
        self.records: Counter[str] = Counter()
        self.rejected: Counter[str] = Counter()
        self.skipped: Counter[tuple[str, str]] = Counter()
        self._log = RateLimitedLog(1.0, log)
        self._audit = None  # auditd.AuditAssembler, made on the first auditd line
        self._fast = None  # the JSON_FAST_PATHS entry that took the last JSON record
        self._mactext = None  # macos.MacTextAssembler, made on the first unified-log text line

    # -- counting ---------------------------------------------------------------------------------------------
    def count(self, dataset: str, n: int) -> None:
        """Count n events decoded from dataset."""
        if n:
            self.records[dataset] += n
            self.counters.inc("brokerwatch_hostlogs_events_total", (dataset,), n)

    def skip(self, dataset: str, what: str) -> None:
        """Count one well-formed record that carries nothing the analytics use (a Sysmon event 11, say)."""
        self.skipped[(dataset, what)] += 1
        self.counters.inc("brokerwatch_hostlogs_skipped_total", (dataset, what))

    def reject(self, reason: str, detail: str = "") -> None:
        """Count one rejected record (and log it, rate-limited)."""
        self.rejected[reason] += 1
        self.counters.inc("brokerwatch_hostlogs_rejected_total", (reason,))
        self._log.warning(reason, "host log record rejected (%s)%s", reason, f": {detail[:200]}" if detail else "")

    # -- JSON ----------------------------------------------------------------------------------------------------
    def decode_object(self, obj, b: EndpointBatchBuilder) -> None:
        """One parsed JSON value: an object of a known dialect, or a list of them (one level: a list nested in a
        list is rejected, so a hostile depth cannot recurse)."""
        if isinstance(obj, list):
            for item in obj:
                self._decode_one(item, b)
            return
        self._decode_one(obj, b)

    def _decode_one(self, obj, b: EndpointBatchBuilder) -> None:
        if not isinstance(obj, dict):
            self.reject("unknown_format", "not a JSON object")
            return
        for dataset, detect, decode in JSON_DIALECTS.values():
            if detect(obj):
                self.guarded(dataset, decode, obj, b)
                return
        self.reject("unknown_format", "JSON object of no known host-log dialect")

    def guarded(self, dataset: str, decode, *args):
        """Call a format's decode: count the events it returns, or the skip or rejection it raises (never raised
        on); returns what it returned (None from a fast path that hands the record on), 0 after a raise."""
        try:
            n = decode(*args)
        except HostLogSkip as e:
            self.skip(dataset, e.what)
            return 0
        except HostLogError as e:
            self.reject(e.reason, str(e))
            return 0
        except _VALUE_ERRORS as e:
            self.reject("bad_value", f"{type(e).__name__}: {e}")
            return 0
        if n:
            self.count(dataset, n)
        return n

    def _decode_fast(self, entry, data: bytes, b: EndpointBatchBuilder) -> bool:
        """True when a fast path took the record (decoded, skipped or rejected it); False hands it on."""
        return self.guarded(entry[1], entry[2], data, b) is not None

    def decode_json(self, data: bytes, b: EndpointBatchBuilder) -> None:
        """One JSON document (an object, or an array of objects)."""
        if len(data) > MAX_RECORD_BYTES:
            self.reject("too_large", f"{len(data)} bytes")
            return
        # A stream carries one forwarder's records, so the fast path that read the last record is tried first,
        # without looking for its marker (a search through the whole record).
        last = self._fast
        if last is not None:
            if self._decode_fast(last, data, b):
                return
            self._fast = None
        for entry in JSON_FAST_PATHS:
            if entry is not last and entry[0] in data and self._decode_fast(entry, data, b):
                self._fast = entry
                return
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError as e:
            self.reject("json", str(e))
            return
        self.decode_object(obj, b)

    def decode_documents(self, data: bytes, b: EndpointBatchBuilder) -> None:
        """A file of one JSON document, or of several pretty-printed ones one after another (Elasticsearch hits
        saved by hand); a document that does not parse is rejected and reading resumes at the next line that opens
        a document."""
        try:
            obj = orjson.loads(data)  # a file: its size is the user's choice, unlike a line from the network
        except orjson.JSONDecodeError:
            obj = None
        if obj is not None:
            self.decode_object(obj, b)
            return
        text = data.decode("utf-8", "replace")
        raw_decode = json.JSONDecoder().raw_decode
        pos, end = 0, len(text)
        while pos < end:
            while pos < end and text[pos] in " \t\r\n":
                pos += 1
            if pos >= end:
                break
            try:
                obj, stop = raw_decode(text, pos)
            except (ValueError, RecursionError) as e:
                self.reject("json", str(e)[:200])
                nxt = text.find("\n{", pos + 1)
                pos = end if nxt < 0 else nxt + 1
                continue
            self.decode_object(obj, b)
            pos = stop

    # -- lines (files, the TCP listener, syslog-wrapped records) -------------------------------------------------
    def feed_line(self, line: bytes, b: EndpointBatchBuilder) -> None:
        """One line of any supported text format (JSON, auditd, an XML event on one line, macOS unified-log text),
        syslog-wrapped or not."""
        if line[:1] == b"\t" and self._mactext is not None and self._mactext.pending:
            self._mactext.continuation(line, b)  # the next line of a multi-line unified-log message
            return
        line = line.strip()
        if not line:
            return
        if len(line) > MAX_RECORD_BYTES:
            self.reject("too_large", f"{len(line)} bytes")
            return
        if self._mactext is not None and self._mactext.pending:
            self._mactext.flush(b)
        if line[:1].isdigit() and TEXT_LINE.match(line) and not _wraps_record(line) or line.startswith(TEXT_HEADERS) or (
                self._mactext is not None and line.startswith(TEXT_TRAILERS)):
            self._mactext_line(line, b)
            return
        rec = _strip_wrapper(line)
        first = rec[:1]
        if first == b"{" or first == b"[":
            self.decode_json(rec, b)
        elif first == b"t" or first == b"n":
            self._auditd_line(rec, b)
        elif first == b"<":
            self.decode_xml(rec, b)
        else:
            self.reject("unknown_format", "line of no known host-log format")

    def feed_lines(self, lines, b: EndpointBatchBuilder) -> None:
        """Every line of an iterable of byte lines; blocks of them at once where the stream's fast path has a block
        form (one forwarder's JSON lines: the per-line dispatch is most of a small record's cost)."""
        chunk: list[bytes] = []
        for line in lines:
            chunk.append(line)
            if len(chunk) >= BLOCK_LINES:
                self._feed_block(chunk, b)
                chunk = []
        if chunk:
            self._feed_block(chunk, b)

    def _feed_block(self, chunk: list[bytes], b: EndpointBatchBuilder) -> None:
        fast = self._fast
        batch = JSON_BATCH_PATHS.get(fast[2]) if fast is not None else None
        if batch is not None:
            clean = [c for c in (line.strip() for line in chunk) if c]
            if all(c[:1] == b"{" and len(c) <= MAX_RECORD_BYTES for c in clean):
                rest = batch(b"\n".join(clean), b, self)
                if rest is not None:
                    for i in rest:
                        self.feed_line(clean[i], b)
                    return
        for line in chunk:
            self.feed_line(line, b)

    def _mactext_line(self, line: bytes, b: EndpointBatchBuilder) -> None:
        if self._mactext is None:
            from collector.hostlogs.macos import MacTextAssembler

            self._mactext = MacTextAssembler(self)
        self._mactext.feed(line, b)

    def _auditd_line(self, line: bytes, b: EndpointBatchBuilder) -> None:
        if self._audit is None:
            from collector.hostlogs.auditd import AuditAssembler

            self._audit = AuditAssembler(self)
        self._audit.feed(line, b)

    # -- XML and EVTX ----------------------------------------------------------------------------------------------
    def decode_xml(self, data: bytes, b: EndpointBatchBuilder) -> None:
        """Rendered Windows event XML: one ``<Event>`` or an ``<Events>`` document."""
        from collector.hostlogs import sysmon

        sysmon.decode_xml(data, b, self)

    def decode_evtx(self, path: str, b: EndpointBatchBuilder) -> None:
        """Every record of an EVTX file."""
        from collector.hostlogs import sysmon

        sysmon.decode_evtx(path, b, self)

    # -- whole files -----------------------------------------------------------------------------------------------
    def decode_file(self, path: str, b: EndpointBatchBuilder) -> str:
        """Every record of a host-log file, its format recognised by content; returns the format ('' if none)."""
        with open(path, "rb") as f:
            head = f.read(4096)
        kind = sniff(head)
        if kind == "evtx":
            self.decode_evtx(path, b)
        elif kind == "xml":
            with open(path, "rb") as f:
                self.decode_xml(f.read(), b)
        elif kind == "json" and head.lstrip().startswith(b"[") or kind == "json" and _one_document(path):
            with open(path, "rb") as f:
                self.decode_documents(f.read(), b)
        elif kind in ("json", "auditd", "macos_text"):
            with open(path, "rb") as f:
                self.feed_lines(f, b)
        self.finish(b)
        return kind

    def finish(self, b: EndpointBatchBuilder) -> None:
        """Flush records held for assembly (auditd events whose last record never came)."""
        if self._audit is not None:
            self._audit.flush(b)
        if self._mactext is not None:
            self._mactext.flush(b)


def _one_document(path: str) -> bool:
    """True when a JSON file is one (pretty-printed) document rather than JSON lines."""
    with open(path, "rb") as f:
        first = f.readline().strip()
    if first in (b"{", b"["):
        return True
    try:
        orjson.loads(first)
        return False
    except orjson.JSONDecodeError:
        return True
