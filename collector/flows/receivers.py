"""UDP listeners that receive straight into a preallocated buffer and hand it to the pipeline in blocks.

The receive loop is the only per-datagram Python: ``recvfrom_into`` at the next free offset of one large buffer,
and the sender's address kept. When the buffer fills or a budget of datagrams is reached, and on the pipeline's
tick (every 0.2 s), the block goes to ``FlowPipeline.decode_block`` (format told apart with array operations, v5 decoded by one numba
call). No bytes object is made per datagram and nothing is decoded on the readiness callback's critical path
beyond that block.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import errno
import os
import socket
import sys
import time

import logging

import numpy as np

from collector.pipeline import FlowPipeline

log = logging.getLogger("brokerwatch.listeners")

#: Kernel receive buffer asked for on each UDP socket: bursts from many exporters must not overflow it.
RCVBUF = 32 << 20
#: Largest UDP payload.
MAX_DATAGRAM = 65535


def udp_socket(host: str, port: int, reuse_port: bool = False) -> socket.socket:
    """A bound, non-blocking UDP socket with a large receive buffer (SO_REUSEPORT for several receive workers)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:  # FORCE passes net.core.rmem_max when we have CAP_NET_ADMIN; otherwise the sysctl caps it
        sock.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_RCVBUFFORCE", 33), RCVBUF)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
    sock.bind((host, port))
    sock.setblocking(False)
    return sock


def kernel_drops(sock: socket.socket) -> int:
    """Datagrams the kernel dropped on this socket because its buffer was full (the ``drops`` column of
    /proc/net/udp or udp6 for the socket's inode); -1 where that is not readable."""
    try:
        inode = str(os.fstat(sock.fileno()).st_ino)
        for table in ("/proc/net/udp", "/proc/net/udp6"):
            with open(table) as f:
                next(f)
                for line in f:
                    cols = line.split()
                    if cols[9] == inode:
                        return int(cols[-1])
    except (OSError, ValueError, IndexError, StopIteration):
        pass
    return -1


class UdpReceiver:
    """Reads a UDP socket into one reusable buffer; ``drain()`` reads until the socket is empty, ``flush()`` decodes."""

    def __init__(self, sock: socket.socket, pipeline: FlowPipeline, hint: str | None = None,
                 capacity: int = 4 << 20, max_datagrams: int = 2048):
        self.sock = sock
        self.hint = hint
        self._pipeline = pipeline
        self._buf = np.zeros(capacity + MAX_DATAGRAM, np.uint8)
        self._view = memoryview(self._buf)
        self._capacity = capacity
        self._max = max_datagrams
        self._off = 0
        self._offs: list[int] = []
        self._lens: list[int] = []
        self._hosts: list[str] = []
        self._times: list[int] = []
        self.datagrams = 0

    #: After a read, wait this long before watching the socket again, so that under load each wake-up finds many
    #: datagrams (interrupt coalescing); the kernel buffer holds far more than arrives in that time.
    COALESCE_S = 0.01

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start reading whenever the socket is readable."""
        self._loop = loop
        self._attached = True
        loop.add_reader(self.sock.fileno(), self._readable)

    def _readable(self) -> None:
        try:
            self.drain()
        except Exception:  # noqa: BLE001 - the receive loop must survive anything; counted and logged, re-armed
            self._pipeline.counters.inc("brokerwatch_listener_errors_total", ("drain",))
            log.exception("receive loop error (the listener keeps running)")
        finally:
            self._loop.remove_reader(self.sock.fileno())
            self._rearm = self._loop.call_later(self.COALESCE_S, self._watch)

    def _watch(self) -> None:
        self._rearm = None
        if self._attached:
            self._loop.add_reader(self.sock.fileno(), self._readable)

    def detach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Stop reading (the socket stays open until close)."""
        self._attached = False
        if getattr(self, "_rearm", None) is not None:
            self._rearm.cancel()
        loop.remove_reader(self.sock.fileno())

    def drain(self, max_fills: int | None = None) -> None:
        """Read every queued datagram into the buffer, decoding a block whenever the buffer or the budget is full.

        (max_fills is for the recvmmsg receiver's per-wake-up limit; this one always reads until the socket is empty.)
        """
        recv = self.sock.recvfrom_into
        view = self._view
        offs, lens, hosts, times = self._offs, self._lens, self._hosts, self._times
        off = self._off
        now = time.time_ns()  # one receive time per readiness event: the datagrams arrived together
        while True:
            if off >= self._capacity or len(offs) >= self._max:
                self._off = off
                self.flush()
                off = 0
                offs, lens, hosts, times = self._offs, self._lens, self._hosts, self._times
            try:
                n, addr = recv(view[off:off + MAX_DATAGRAM])
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self._pipeline.counters.inc("brokerwatch_listener_errors_total", ("recv",))
                break
            offs.append(off)
            lens.append(n)
            hosts.append(addr[0])
            times.append(now)
            off += n
        self._off = off

    def flush(self) -> None:
        """Decode the datagrams waiting in the buffer (called when it is full, and on the pipeline's tick)."""
        if self._offs:
            self.datagrams += len(self._offs)
            self._pipeline.decode_block(self._buf, self._offs, self._lens, self._hosts, self._times, self.hint)
        self._off = 0
        self._offs, self._lens, self._hosts, self._times = [], [], [], []

    def close(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Drain what is queued, stop reading and close the socket (its kernel drops are counted first)."""
        if loop is not None:
            self.detach(loop)
        self.drain(max_fills=1 << 62)  # everything the kernel holds, however much
        self.flush()
        drops = kernel_drops(self.sock)
        if drops > 0:
            self._pipeline.counters.inc("brokerwatch_listener_kernel_drops_total", (self.hint or "flows",), drops)
        self.sock.close()


class _IoVec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class _MsgHdr(ctypes.Structure):
    _fields_ = [("msg_name", ctypes.c_void_p), ("msg_namelen", ctypes.c_uint32), ("msg_iov", ctypes.c_void_p),
                ("msg_iovlen", ctypes.c_size_t), ("msg_control", ctypes.c_void_p), ("msg_controllen", ctypes.c_size_t),
                ("msg_flags", ctypes.c_int)]


class _MMsgHdr(ctypes.Structure):
    _fields_ = [("msg_hdr", _MsgHdr), ("msg_len", ctypes.c_uint)]


_SOCKADDR_LEN = 28  # sockaddr_in6, the larger of the two
_MSG_DONTWAIT = 0x40
_MSG_TRUNC = 0x20


def _load_recvmmsg():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.recvmmsg
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p]
    fn.restype = ctypes.c_int
    return fn


_recvmmsg = _load_recvmmsg() if sys.platform.startswith("linux") else None


class MmsgUdpReceiver(UdpReceiver):
    """A UdpReceiver that takes up to ``slots`` datagrams per recvmmsg(2) call into fixed slots of one buffer.

    Lengths, sender addresses and truncation flags are read back from the message headers with array operations,
    so there is no per-datagram Python at all. Slots fill across readiness events and are decoded together when
    all are full or on the pipeline's tick. Linux only; ``make_receiver`` falls back to UdpReceiver elsewhere.
    """

    def __init__(self, sock: socket.socket, pipeline: FlowPipeline, hint: str | None = None, slots: int = 512,
                 slot_size: int = MAX_DATAGRAM):
        super().__init__(sock, pipeline, hint, capacity=0, max_datagrams=slots)
        self._slots = slots
        self._slot = slot_size
        self._buf = np.zeros(slots * slot_size, np.uint8)
        self._names = np.zeros((slots, _SOCKADDR_LEN), np.uint8)
        self._iov = (_IoVec * slots)()
        self._msgs = (_MMsgHdr * slots)()
        base = self._buf.ctypes.data
        names = self._names.ctypes.data
        for i in range(slots):
            self._iov[i].iov_base = base + i * slot_size
            self._iov[i].iov_len = slot_size
            h = self._msgs[i].msg_hdr
            h.msg_name = names + i * _SOCKADDR_LEN
            h.msg_iov = ctypes.addressof(self._iov[i])
            h.msg_iovlen = 1
        raw = np.frombuffer(self._msgs, np.uint8).reshape(slots, ctypes.sizeof(_MMsgHdr))
        f = _MMsgHdr.msg_len.offset
        self._msg_len = raw[:, f:f + 4].view(np.uint32)[:, 0]
        f = _MMsgHdr.msg_hdr.offset + _MsgHdr.msg_namelen.offset
        self._namelen = raw[:, f:f + 4].view(np.uint32)[:, 0]
        f = _MMsgHdr.msg_hdr.offset + _MsgHdr.msg_flags.offset
        self._flags = raw[:, f:f + 4].view(np.int32)[:, 0]
        self._offs = np.arange(slots, dtype=np.int64) * slot_size
        self._times = np.zeros(slots, np.int64)
        self._k = 0  # slots filled and not yet decoded
        self._fd = sock.fileno()

    #: Slot sets read per wake-up at most, so a flood cannot starve the rest of the event loop.
    MAX_FILLS_PER_WAKEUP = 16

    def drain(self, max_fills: int | None = None) -> None:
        """recvmmsg into the free slots until the socket is empty; a full set of slots is decoded at once."""
        size = ctypes.sizeof(_MMsgHdr)
        base = ctypes.addressof(self._msgs)
        fills = 0
        limit = self.MAX_FILLS_PER_WAKEUP if max_fills is None else max_fills
        while fills < limit:
            k = self._k
            self._namelen[k:] = _SOCKADDR_LEN
            n = _recvmmsg(self._fd, base + k * size, self._slots - k, _MSG_DONTWAIT, None)
            if n <= 0:
                if n < 0 and ctypes.get_errno() not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR):
                    self._pipeline.counters.inc("brokerwatch_listener_errors_total", ("recvmmsg",))
                return
            self._times[k:k + n] = time.time_ns()
            self._k = k + n
            if self._k == self._slots:
                self.flush()
                fills += 1

    def flush(self) -> None:
        """Decode the filled slots (when all are full, and on the pipeline's tick)."""
        n = self._k
        if not n:
            return
        self._k = 0
        self.datagrams += n
        lens = self._msg_len[:n].astype(np.int64)
        truncated = (self._flags[:n] & _MSG_TRUNC) != 0
        if truncated.any():
            self._pipeline.counters.inc("brokerwatch_listener_truncated_total", (), int(truncated.sum()))
            lens[truncated] = MAX_DATAGRAM + 1  # rejected as oversized by the decoders, counted there
        ex_hi, ex_lo = sockaddr_words(self._names[:n])
        self._pipeline.decode_arrays(self._buf, self._offs[:n], lens, ex_hi, ex_lo, self._times[:n].copy(),
                                     self.hint)


def sockaddr_words(names: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(hi, lo) address words of sockaddr_in / sockaddr_in6 rows (native-endian family), vectorised."""
    family = names[:, 0].astype(np.uint16) | (names[:, 1].astype(np.uint16) << 8)
    if sys.byteorder == "big":
        family = (names[:, 0].astype(np.uint16) << 8) | names[:, 1]
    v4 = np.ascontiguousarray(names[:, 4:8]).view(">u4")[:, 0].astype(np.uint64)
    hi6 = np.ascontiguousarray(names[:, 8:16]).view(">u8")[:, 0]
    lo6 = np.ascontiguousarray(names[:, 16:24]).view(">u8")[:, 0]
    is6 = family == socket.AF_INET6
    hi = np.where(is6, hi6, np.uint64(0)).astype(np.uint64)
    lo = np.where(is6, lo6, np.uint64(0x0000FFFF00000000) | v4).astype(np.uint64)
    return hi, lo


def make_receiver(sock: socket.socket, pipeline: FlowPipeline, hint: str | None = None) -> UdpReceiver:
    """The fastest receiver this platform has: recvmmsg on Linux, recvfrom_into elsewhere."""
    if _recvmmsg is not None:
        return MmsgUdpReceiver(sock, pipeline, hint)
    return UdpReceiver(sock, pipeline, hint)


class IpfixTcpServer:
    """IPFIX over TCP (RFC 7011 §10.4): each connection's byte stream cut into messages by the header length.

    A stream that cannot be framed (not IPFIX, impossible length, too much buffered) is closed and counted; the
    exporter reconnects and resends templates, as RFC 7011 expects.
    """

    def __init__(self, pipeline: FlowPipeline, max_connections: int = 1024):
        self._pipeline = pipeline
        self._max = max_connections
        self._conns: set[asyncio.Task] = set()
        self.server: asyncio.AbstractServer | None = None

    async def start(self, host: str, port: int, reuse_port: bool = False) -> None:
        """Listen on host:port (SO_REUSEPORT when several receive workers share it)."""
        self.server = await asyncio.start_server(self._handle, host, port, reuse_address=True,
                                                 reuse_port=reuse_port or None)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        from collector.flows.decoders import DecodeError
        from collector.flows.ipfix import IpfixStreamFramer

        counters = self._pipeline.counters
        if len(self._conns) >= self._max:
            counters.inc("brokerwatch_ipfix_tcp_refused_total", ("too_many_connections",))
            writer.close()
            return
        peer = writer.get_extra_info("peername")[0]
        admission = self._pipeline.admission
        if admission is not None and not admission.admits("flows", peer):
            writer.close()  # refused (and counted) before a byte is read
            return
        task = asyncio.current_task()
        self._conns.add(task)
        framer = IpfixStreamFramer()
        counters.inc("brokerwatch_ipfix_tcp_connections_total")
        try:
            while True:
                chunk = await reader.read(1 << 16)
                if not chunk:
                    break
                for message in framer.feed(chunk):
                    self._pipeline.on_datagram(message, peer, "ipfix")
        except DecodeError as exc:
            self._pipeline.decoders.reject("ipfix", f"tcp_{exc.reason}", None, exc.detail)
        except (ConnectionError, OSError):
            counters.inc("brokerwatch_ipfix_tcp_errors_total", ("connection",))
        finally:
            self._conns.discard(task)
            writer.close()

    async def close(self) -> None:
        """Stop accepting, end open connections, and let what they delivered be decoded."""
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
        for t in list(self._conns):
            t.cancel()
