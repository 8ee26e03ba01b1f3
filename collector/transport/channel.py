"""The bounded channel between a receiving process and the analytics process (the embedded default).

A message is a fixed header and a body: the batch's FLOW_DTYPE rows as raw bytes, then its string table (topic
names) as uint32 lengths and UTF-8 text. Nothing is pickled per row; a batch is one copy into the queue, one
write into a pipe and one read out of it.

The receive side never waits: ``ChannelWriter.publish`` copies the rows into a queue bounded in bytes and returns;
a thread writes the queue into the pipe (blocking there, with the GIL released, while the analytics process is busy
with a pass). When the queue is full the batch is dropped and its rows counted
(``brokerwatch_channel_dropped_rows_total``). At stop, ``close`` writes out everything queued, so nothing received
before the stop is lost. ``ChannelReader`` turns messages back into FlowBatches on the analytics side.
"""

from __future__ import annotations

import collections
import logging
import os
import struct
import threading

import numpy as np

from analytics.endpoint import ENDPOINT_DTYPE, EndpointBatch
from analytics.schema import FLOW_DTYPE, FlowBatch

log = logging.getLogger("brokerwatch.channel")

#: kind, rows, string-table bytes, string count.
HEADER = struct.Struct("<IIII")
KIND_ROWS = 1
#: A message of endpoint events (ENDPOINT_DTYPE rows) from the host-log listeners.
KIND_ENDPOINT = 2
ROW_BYTES = FLOW_DTYPE.itemsize
_ROW_DTYPES = {KIND_ROWS: FLOW_DTYPE, KIND_ENDPOINT: ENDPOINT_DTYPE}
#: Pipe capacity asked for (Linux caps it at /proc/sys/fs/pipe-max-size, 1 MiB by default).
PIPE_BYTES = 1 << 20
#: Largest body a reader accepts: a corrupt header must not make it allocate without bound.
MAX_BODY = 1 << 30


class ChannelError(Exception):
    """A message that cannot be read (a torn or corrupt stream)."""


def encode_strings(strings: list[str]) -> tuple[bytes, int]:
    """A string table as uint32 lengths followed by the UTF-8 text; returns (blob, count)."""
    if len(strings) <= 1:
        return b"", 0
    parts = [s.encode("utf-8", "surrogatepass") for s in strings[1:]]  # strings[0] is always ""
    lengths = np.fromiter((len(p) for p in parts), np.uint32, len(parts))
    return lengths.tobytes() + b"".join(parts), len(parts)


def decode_strings(blob: memoryview, count: int) -> list[str]:
    """The inverse of encode_strings (with the leading "" restored)."""
    if count == 0:
        if len(blob):
            raise ChannelError("string bytes without strings")
        return [""]
    if 4 * count > len(blob):
        raise ChannelError("string table shorter than its lengths")
    lengths = np.frombuffer(blob, np.uint32, count)
    ends = np.cumsum(lengths, dtype=np.int64) + 4 * count
    if ends[-1] != len(blob):
        raise ChannelError("string table does not match its lengths")
    text = bytes(blob)
    out = [""]
    start = 4 * count
    try:
        for end in ends.tolist():
            out.append(text[start:end].decode("utf-8", "surrogatepass"))
            start = end
    except UnicodeDecodeError as exc:
        raise ChannelError(f"string table is not UTF-8: {exc}") from None
    return out


def make_pipe() -> tuple[int, int]:
    """A pipe (read fd, write fd) with a larger buffer where the kernel allows it."""
    r, w = os.pipe()
    try:
        import fcntl

        fcntl.fcntl(w, getattr(fcntl, "F_SETPIPE_SZ", 1031), PIPE_BYTES)
    except OSError:
        pass
    return r, w


class ChannelWriter:
    """Receive side of the channel: ``publish`` queues a batch (or drops and counts it) and never blocks."""

    def __init__(self, fd: int, counters, max_bytes: int = 256 << 20):
        self._fd = fd
        self._counters = counters
        self.max_bytes = int(max_bytes)
        self._queue: collections.deque[bytes] = collections.deque()
        self._queued = 0
        self._cond = threading.Condition()
        self._closing = False
        self.broken = False
        self._thread = threading.Thread(target=self._run, name="brokerwatch-channel", daemon=True)
        self._thread.start()

    @property
    def queued_bytes(self) -> int:
        """Bytes waiting to be written to the pipe."""
        return self._queued

    def publish(self, batch: FlowBatch) -> bool:
        """Queue a FlowBatch; False (its rows counted as dropped) when the queue is full or the reader is gone."""
        if not len(batch):
            return True
        return self.publish_rows(batch.to_rows(), batch.strings)

    def publish_endpoint(self, batch: EndpointBatch) -> bool:
        """Queue a batch of endpoint events; False (counted as dropped) when the queue is full or the reader gone."""
        return self.publish_rows(batch.rows, batch.strings, KIND_ENDPOINT)

    def publish_rows(self, rows: np.ndarray, strings: list[str], kind: int = KIND_ROWS) -> bool:
        """Queue FLOW_DTYPE rows (ENDPOINT_DTYPE for KIND_ENDPOINT) with their string table (copied: the caller may
        reuse its buffer)."""
        n = len(rows)
        if n == 0:
            return True
        blob, count = encode_strings(strings)
        size = HEADER.size + n * rows.dtype.itemsize + len(blob)
        with self._cond:
            if self.broken or self._closing or self._queued + size > self.max_bytes:
                reason = "closed" if self.broken or self._closing else "full"
                self._counters.inc("brokerwatch_channel_dropped_rows_total", (reason,), n)
                return False
            msg = b"".join((HEADER.pack(kind, n, len(blob), count),
                            np.ascontiguousarray(rows).view(np.uint8), blob))
            self._queue.append(msg)
            self._queued += size
            self._cond.notify()
        self._counters.inc("brokerwatch_channel_published_rows_total",
                           ("flows" if kind == KIND_ROWS else "endpoint",), n)
        return True

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue:
                    return
                msg = self._queue[0]
            try:
                view = memoryview(msg)
                while view:
                    written = os.write(self._fd, view)
                    view = view[written:]
            except OSError as exc:  # the analytics process is gone: count what can no longer be delivered
                with self._cond:
                    self.broken = True
                    lost = sum(HEADER.unpack_from(m)[1] for m in self._queue)
                    self._queue.clear()
                    self._queued = 0
                self._counters.inc("brokerwatch_channel_dropped_rows_total", ("closed",), lost)
                log.error("analytics channel closed (%s): %d rows could not be delivered", exc, lost)
                return
            with self._cond:
                self._queue.popleft()
                self._queued -= len(msg)

    def close(self, timeout: float | None = None) -> None:
        """Write out everything queued, then close the pipe (the reader sees the end of the stream)."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join(timeout)
        try:
            os.close(self._fd)
        except OSError:
            pass


class ChannelReader:
    """Analytics side of the channel: reads messages from one pipe and returns FlowBatches."""

    def __init__(self, fd: int):
        self.fd = fd
        self._file = os.fdopen(fd, "rb", buffering=0)
        self.rows = 0
        self.endpoint_rows = 0

    def fileno(self) -> int:
        """The pipe's descriptor (for selectors)."""
        return self.fd

    def _read_exact(self, n: int) -> bytearray | None:
        buf = bytearray(n)
        view = memoryview(buf)
        got = 0
        while got < n:
            k = self._file.readinto(view[got:])
            if not k:
                if got:
                    raise ChannelError(f"stream ended inside a message ({got} of {n} bytes)")
                return None
            got += k
        return buf

    def read(self) -> FlowBatch | EndpointBatch | None:
        """The next batch, flows or endpoint events (blocking until it is whole); None at the end of the stream."""
        head = self._read_exact(HEADER.size)
        if head is None:
            return None
        kind, n, sbytes, count = HEADER.unpack(head)
        dtype = _ROW_DTYPES.get(kind)
        body_len = n * (dtype.itemsize if dtype is not None else 0) + sbytes
        if dtype is None or body_len > MAX_BODY:
            raise ChannelError(f"bad message header (kind {kind}, {n} rows, {sbytes} string bytes)")
        body = self._read_exact(body_len)
        if body is None:
            raise ChannelError("stream ended after a header")
        rows = np.frombuffer(body, dtype, n)
        strings = decode_strings(memoryview(body)[n * dtype.itemsize:], count)
        if kind == KIND_ENDPOINT:
            self.endpoint_rows += n
            return EndpointBatch(rows.copy(), strings)
        self.rows += n
        return FlowBatch.from_rows(rows, strings)

    def close(self) -> None:
        """Close the pipe."""
        self._file.close()
