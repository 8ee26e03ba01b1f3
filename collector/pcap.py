"""A plain reader of pcap and pcapng files and a link/IP/UDP/TCP unwrapper, with no per-packet objects.

scapy builds a Python object tree per packet (tens of microseconds each); this reader slices frames out of the
file with ``struct`` and yields (timestamp ns, link type, frame bytes). ``datagrams()`` turns the frames into UDP
datagrams (source/destination address and port, payload) for the decoders; ``segments()`` does the same for TCP.
IPv4 fragments are not reassembled (exporters do not fragment in practice); they are counted.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import BinaryIO, Iterator

from collector.metrics import Counters

LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276

_PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": ("<", 1_000),  # little-endian, microseconds
    b"\xa1\xb2\xc3\xd4": (">", 1_000),
    b"\x4d\x3c\xb2\xa1": ("<", 1),  # nanoseconds
    b"\xa1\xb2\x3c\x4d": (">", 1),
}
_PCAPNG_SHB = b"\x0a\x0d\x0d\x0a"
#: A frame larger than this is not a frame (guards against a hostile length field).
MAX_FRAME = 262_144


class PcapError(Exception):
    """The file is not a pcap/pcapng capture, or its structure is broken."""


@dataclass(slots=True)
class Datagram:
    """One UDP datagram (or TCP segment) taken out of a captured frame."""

    ts_ns: int
    src: bytes  # 4 or 16 bytes, network order
    dst: bytes
    sport: int
    dport: int
    payload: bytes
    proto: int = 17
    tcp_flags: int = 0
    tcp_seq: int = 0


def is_capture(path: str) -> bool:
    """Whether the file starts like a pcap or pcapng capture."""
    with open(path, "rb") as f:
        magic = f.read(4)
    return magic in _PCAP_MAGICS or magic == _PCAPNG_SHB


#: Frames looked at to tell a capture of exported datagrams from raw traffic.
SNIFF_FRAMES = 256


def is_raw_traffic(path: str) -> bool:
    """Whether a capture holds raw traffic rather than exported datagrams (NetFlow/IPFIX/sFlow/syslog over UDP).

    By content: of the first SNIFF_FRAMES IP frames, an export capture has at least half that are UDP datagrams
    whose payload starts like an export or a syslog message; raw traffic (TCP sessions, DNS, ...) has fewer.
    """
    from collector.flows.decoders import sniff

    seen = exports = 0
    for ts_ns, linktype, frame in frames(path):
        pkt = ip_packet(linktype, frame)
        l4 = transport(pkt) if pkt is not None else None
        if l4 is None:
            continue
        seen += 1
        proto, _src, _dst, body = l4
        if proto == 17 and len(body) > 8 and sniff(body[8:]) is not None:
            exports += 1
        if seen >= SNIFF_FRAMES:
            break
    return seen > 0 and 2 * exports < seen


def frames(path: str) -> Iterator[tuple[int, int, bytes]]:
    """Yield (timestamp ns, link type, frame) for every packet of a pcap or pcapng file."""
    with open(path, "rb") as f:
        magic = f.read(4)
        if magic in _PCAP_MAGICS:
            yield from _pcap_frames(f, magic)
        elif magic == _PCAPNG_SHB:
            yield from _pcapng_frames(f)
        else:
            raise PcapError(f"{path}: not a pcap or pcapng file (magic {magic.hex()})")


def _pcap_frames(f: BinaryIO, magic: bytes) -> Iterator[tuple[int, int, bytes]]:
    endian, unit = _PCAP_MAGICS[magic]
    rest = f.read(20)
    if len(rest) < 20:
        raise PcapError("truncated pcap global header")
    linktype = struct.unpack(endian + "HHiIII", rest)[5] & 0x0FFFFFFF
    rec = struct.Struct(endian + "IIII")
    while True:
        hdr = f.read(16)
        if len(hdr) < 16:
            return  # a truncated last record header ends the capture, as tcpdump does
        sec, frac, incl, _orig = rec.unpack(hdr)
        if incl > MAX_FRAME:
            raise PcapError(f"frame of {incl} bytes exceeds {MAX_FRAME}")
        data = f.read(incl)
        if len(data) < incl:
            return
        yield sec * 1_000_000_000 + frac * unit, linktype, data


def _pcapng_frames(f: BinaryIO) -> Iterator[tuple[int, int, bytes]]:
    f.seek(0)
    endian = "<"
    interfaces: list[tuple[int, int]] = []  # (linktype, ticks per second)
    while True:
        head = f.read(8)
        if len(head) < 8:
            return
        if head[:4] == _PCAPNG_SHB:
            bom = f.read(4)
            endian = "<" if bom == b"\x4d\x3c\x2b\x1a" else ">"
            if bom not in (b"\x4d\x3c\x2b\x1a", b"\x1a\x2b\x3c\x4d"):
                raise PcapError("bad pcapng byte-order magic")
            length = struct.unpack(endian + "I", head[4:])[0]
            body = f.read(length - 12) if length >= 12 else b""
            interfaces = []
            continue
        btype, length = struct.unpack(endian + "II", head)
        if length < 12 or length > MAX_FRAME + 64 or length % 4:
            raise PcapError(f"bad pcapng block length {length}")
        body = f.read(length - 8)
        if len(body) < length - 8:
            return
        if btype == 1:  # Interface Description Block
            linktype = struct.unpack(endian + "H", body[:2])[0]
            interfaces.append((linktype, _if_tsresol(body[8:-4], endian)))
        elif btype == 6:  # Enhanced Packet Block
            ifid, ts_hi, ts_lo, cap = struct.unpack(endian + "IIII", body[:16])
            if ifid >= len(interfaces):
                raise PcapError(f"packet on undeclared interface {ifid}")
            linktype, tps = interfaces[ifid]
            ticks = (ts_hi << 32) | ts_lo
            yield ticks * 1_000_000_000 // tps, linktype, body[20 : 20 + cap]
        elif btype == 3:  # Simple Packet Block: no timestamp
            if not interfaces:
                raise PcapError("simple packet before any interface")
            yield 0, interfaces[0][0], body[4:-4]


def _if_tsresol(options: bytes, endian: str) -> int:
    """Ticks per second from an IDB's if_tsresol option (default microseconds)."""
    pos = 0
    while pos + 4 <= len(options):
        code, olen = struct.unpack(endian + "HH", options[pos : pos + 4])
        if code == 0:
            break
        if code == 9 and olen >= 1:
            v = options[pos + 4]
            return 2 ** (v & 0x7F) if v & 0x80 else 10 ** v
        pos += 4 + ((olen + 3) & ~3)
    return 1_000_000


def ip_packet(linktype: int, frame: bytes) -> bytes | None:
    """The IP packet inside a link-layer frame (Ethernet with VLAN tags, SLL/SLL2, loopback, raw), or None."""
    if linktype == LINKTYPE_ETHERNET:
        off, etype = 12, None
        while off + 2 <= len(frame):
            etype = frame[off] << 8 | frame[off + 1]
            if etype in (0x8100, 0x88A8, 0x9100):
                off += 4
                continue
            break
        if etype in (0x0800, 0x86DD):
            return frame[off + 2 :]
        return None
    if linktype in (LINKTYPE_RAW, LINKTYPE_IPV4, LINKTYPE_IPV6):
        return frame
    if linktype in (LINKTYPE_NULL, LINKTYPE_LOOP):
        return frame[4:]
    if linktype == LINKTYPE_LINUX_SLL:
        return frame[16:] if len(frame) >= 16 and frame[14:16] in (b"\x08\x00", b"\x86\xdd") else None
    if linktype == LINKTYPE_LINUX_SLL2:
        return frame[20:] if len(frame) >= 20 and frame[0:2] in (b"\x08\x00", b"\x86\xdd") else None
    return None


def transport(packet: bytes) -> tuple[int, bytes, bytes, bytes] | None:
    """(IP protocol, source, destination, L4 bytes) of an IPv4/IPv6 packet, or None (fragments included)."""
    if len(packet) < 20:
        return None
    version = packet[0] >> 4
    if version == 4:
        ihl = (packet[0] & 0x0F) * 4
        total = packet[2] << 8 | packet[3]
        frag = (packet[6] << 8 | packet[7]) & 0x3FFF
        if ihl < 20 or frag:
            return None
        end = min(total, len(packet)) if total >= ihl else len(packet)
        return packet[9], packet[12:16], packet[16:20], packet[ihl:end]
    if version == 6 and len(packet) >= 40:
        nxt, off = packet[6], 40
        # skip hop-by-hop, routing and destination options headers
        while nxt in (0, 43, 60) and off + 8 <= len(packet):
            nxt, off = packet[off], off + (packet[off + 1] + 1) * 8
        if nxt == 44:
            return None
        plen = packet[4] << 8 | packet[5]
        end = min(40 + plen, len(packet)) if plen else len(packet)
        return nxt, packet[8:24], packet[24:40], packet[off:end]
    return None


def datagrams(path: str, counters: Counters | None = None, tcp: bool = False) -> Iterator[Datagram]:
    """Every UDP datagram (and, with tcp=True, every TCP segment) in a capture, in file order."""
    for ts_ns, linktype, frame in frames(path):
        pkt = ip_packet(linktype, frame)
        l4 = transport(pkt) if pkt is not None else None
        if l4 is None:
            if counters is not None:
                counters.inc("brokerwatch_pcap_frames_skipped_total", ("not_ip",))
            continue
        proto, src, dst, body = l4
        if proto == 17 and len(body) >= 8:
            ulen = body[4] << 8 | body[5]
            payload = body[8:ulen] if 8 <= ulen <= len(body) else body[8:]
            yield Datagram(ts_ns, src, dst, body[0] << 8 | body[1], body[2] << 8 | body[3], payload)
        elif tcp and proto == 6 and len(body) >= 20:
            doff = (body[12] >> 4) * 4
            yield Datagram(ts_ns, src, dst, body[0] << 8 | body[1], body[2] << 8 | body[3], body[doff:], 6,
                           body[13], int.from_bytes(body[4:8], "big"))
        elif counters is not None:
            counters.inc("brokerwatch_pcap_frames_skipped_total", ("not_udp",))


# ---------------------------------------------------------------------------------------------- blocks of frames


@dataclass(slots=True)
class FrameBlock:
    """Frames of a capture as arrays: one buffer, and per frame its offset, captured length, link type and time."""

    buf: "np.ndarray"  # uint8
    offs: "np.ndarray"  # int64
    caplens: "np.ndarray"  # int64
    linktypes: "np.ndarray"  # int64
    ts_ns: "np.ndarray"  # int64

    def __len__(self) -> int:
        return len(self.offs)

    def frame(self, i: int) -> bytes:
        """The bytes of frame i."""
        o = int(self.offs[i])
        return self.buf[o:o + int(self.caplens[i])].tobytes()


#: Bytes of a pcap file read at a time for the block reader.
CHUNK = 8 << 20


def frame_blocks(path: str, max_frames: int = 65536) -> Iterator[FrameBlock]:
    """The frames of a pcap or pcapng capture in blocks of at most max_frames (pcap: indexed by a numba kernel)."""
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic in _PCAP_MAGICS:
        yield from _pcap_blocks(path, magic, max_frames)
    elif magic == _PCAPNG_SHB:
        yield from _framed_blocks(_pcapng_frames(open(path, "rb")), max_frames)
    else:
        raise PcapError(f"{path}: not a pcap or pcapng file (magic {magic.hex()})")


def _framed_blocks(it: Iterator[tuple[int, int, bytes]], max_frames: int) -> Iterator[FrameBlock]:
    import numpy as np

    def block(parts, lts, tss):
        lens = np.fromiter((len(p) for p in parts), np.int64, len(parts))
        offs = np.zeros(len(parts), np.int64)
        np.cumsum(lens[:-1], out=offs[1:])
        return FrameBlock(np.frombuffer(b"".join(parts), np.uint8), offs, lens, np.array(lts, np.int64),
                          np.array(tss, np.int64))

    parts: list[bytes] = []
    lts: list[int] = []
    tss: list[int] = []
    try:
        for ts, lt, frame in it:
            parts.append(frame)
            lts.append(lt)
            tss.append(ts)
            if len(parts) >= max_frames:
                yield block(parts, lts, tss)
                parts, lts, tss = [], [], []
    finally:
        close = getattr(it, "close", None)
        if close is not None:
            close()
    if parts:
        yield block(parts, lts, tss)


def _pcap_blocks(path: str, magic: bytes, max_frames: int) -> Iterator[FrameBlock]:
    import numpy as np

    endian, unit = _PCAP_MAGICS[magic]
    with open(path, "rb") as f:
        head = f.read(24)
        if len(head) < 24:
            raise PcapError("truncated pcap global header")
        linktype = struct.unpack(endian + "HHiIII", head[4:])[5] & 0x0FFFFFFF
        carry = b""
        while True:
            chunk = f.read(CHUNK)
            data = carry + chunk if carry else chunk
            if not data:
                return
            buf = np.frombuffer(data, np.uint8)
            offs = np.empty(len(data) // 16 + 1, np.int64)
            lens = np.empty_like(offs)
            ts = np.empty_like(offs)
            n, used, bad = _index_pcap(buf, endian == ">", unit, MAX_FRAME, offs, lens, ts)
            if bad:
                raise PcapError(f"frame of more than {MAX_FRAME} bytes")
            for s in range(0, n, max_frames):
                e = min(n, s + max_frames)
                yield FrameBlock(buf, offs[s:e], lens[s:e], np.full(e - s, linktype, np.int64), ts[s:e])
            carry = data[used:]
            if not chunk:
                return  # a truncated last record ends the capture, as tcpdump does


def _index_pcap_py(buf, big, unit, max_frame, offs, lens, ts):
    """Walk pcap record headers in buf: (records found, bytes consumed, whether a record was oversized)."""
    pos = 0
    n = 0
    size = len(buf)
    while pos + 16 <= size:
        if big:
            sec = (int(buf[pos]) << 24) | (int(buf[pos + 1]) << 16) | (int(buf[pos + 2]) << 8) | int(buf[pos + 3])
            frac = (int(buf[pos + 4]) << 24) | (int(buf[pos + 5]) << 16) | (int(buf[pos + 6]) << 8) | int(buf[pos + 7])
            incl = (int(buf[pos + 8]) << 24) | (int(buf[pos + 9]) << 16) | (int(buf[pos + 10]) << 8) | int(buf[pos + 11])
        else:
            sec = (int(buf[pos + 3]) << 24) | (int(buf[pos + 2]) << 16) | (int(buf[pos + 1]) << 8) | int(buf[pos])
            frac = (int(buf[pos + 7]) << 24) | (int(buf[pos + 6]) << 16) | (int(buf[pos + 5]) << 8) | int(buf[pos + 4])
            incl = (int(buf[pos + 11]) << 24) | (int(buf[pos + 10]) << 16) | (int(buf[pos + 9]) << 8) | int(buf[pos + 8])
        if incl > max_frame:
            return n, pos, True
        if pos + 16 + incl > size:
            break
        offs[n] = pos + 16
        lens[n] = incl
        ts[n] = sec * 1_000_000_000 + frac * unit
        n += 1
        pos += 16 + incl
    return n, pos, False


try:
    import numba as _numba

    _index_pcap = _numba.njit(cache=True)(_index_pcap_py)
except ImportError:  # pragma: no cover - numba is a dependency
    _index_pcap = _index_pcap_py
