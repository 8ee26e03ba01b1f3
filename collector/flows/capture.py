"""Live capture for the flow meter: an AF_PACKET socket with a TPACKET_V3 receive ring (``run --interface IF``).

The kernel writes frames into blocks of a ring shared with this process (``mmap``); a block is handed over when it
is full or ``retire_ms`` after its first frame, so one wake-up reads thousands of frames with no copy and no system
call per frame. A numba kernel walks a block's ``tpacket3_hdr`` chain into the offsets, lengths and times a
``FrameBlock`` holds; the flow meter (``collector/flows/traffic.py``) reads the frames in place, and the block goes
back to the kernel. Frames the ring had no room for are counted by the kernel (``PACKET_STATISTICS``, read each
tick: ``brokerwatch_capture_drops_total``).

It needs CAP_NET_RAW (root, or ``setcap cap_net_raw+ep`` on the Python binary); without it ``start`` raises
PermissionError, which ``run`` reports as exit 2. The kernel strips 802.1Q tags into the frame header, so VLANs are
not seen here (they are not part of the flow key either).

``python -m collector.flows.capture IF --seconds S`` meters IF for S seconds and prints one JSON object (packets,
kernel drops, flows and their (client, server, port, protocol, bytes, packets) list): the live-capture test and
``bench/meter.py`` use it inside a network namespace.
"""

from __future__ import annotations

import argparse
import json
import mmap
import socket
import struct
import time

import numba
import numpy as np

from analytics.schema import FLAG_MESSAGE, FlowBatch, FlowBatchBuilder
from collector.flows.meter import MeterParams
from collector.flows.traffic import TrafficMeter
from collector.metrics import Counters
from collector.pcap import LINKTYPE_ETHERNET, FrameBlock

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_RX_RING = 5
PACKET_STATISTICS = 6
PACKET_VERSION = 10
TPACKET_V3 = 2
TP_STATUS_KERNEL = 0
TP_STATUS_USER = 1
#: Offsets in struct tpacket_block_desc (version, offset_to_priv, then tpacket_hdr_v1).
_BLOCK_STATUS, _BLOCK_NUM_PKTS, _BLOCK_FIRST = 8, 12, 16


@numba.njit(cache=True)
def _u32le(ring, o):
    return np.int64(ring[o]) | (np.int64(ring[o + 1]) << 8) | (np.int64(ring[o + 2]) << 16) | \
        (np.int64(ring[o + 3]) << 24)


@numba.njit(cache=True)
def walk_block(ring, block_off, block_size, offs, caplens, ts):
    """Frames of one retired TPACKET_V3 block: fills offs/caplens/ts, returns how many (a broken chain stops)."""
    n = _u32le(ring, block_off + _BLOCK_NUM_PKTS)
    p = block_off + _u32le(ring, block_off + _BLOCK_FIRST)
    end = block_off + block_size
    k = 0
    while k < n and k < len(offs) and p + 28 <= end:
        nxt = _u32le(ring, p)
        sec = _u32le(ring, p + 4)
        nsec = _u32le(ring, p + 8)
        snap = _u32le(ring, p + 12)
        mac = np.int64(ring[p + 24]) | (np.int64(ring[p + 25]) << 8)
        if p + mac + snap > end:
            break
        offs[k] = p + mac
        caplens[k] = snap
        ts[k] = sec * 1_000_000_000 + nsec
        k += 1
        if nxt == 0:
            break
        p += nxt
    return k


class PacketRing:
    """An AF_PACKET TPACKET_V3 receive ring on one interface."""

    def __init__(self, interface: str, block_size: int = 1 << 20, blocks: int = 64, retire_ms: int = 50):
        self.interface = interface
        self.block_size = block_size
        self.blocks = blocks
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        try:
            self.sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
            frame_size = 2048
            req = struct.pack("=7I", block_size, blocks, frame_size, block_size // frame_size * blocks, retire_ms, 0, 0)
            self.sock.setsockopt(SOL_PACKET, PACKET_RX_RING, req)
            self.sock.bind((interface, ETH_P_ALL))
            self.map = mmap.mmap(self.sock.fileno(), block_size * blocks, mmap.MAP_SHARED,
                                 mmap.PROT_READ | mmap.PROT_WRITE)
        except BaseException:
            self.sock.close()
            raise
        self.ring = np.frombuffer(self.map, np.uint8)
        self.status = [np.ndarray((1,), np.uint32, self.map, b * block_size + _BLOCK_STATUS) for b in range(blocks)]
        self.current = 0
        cap = block_size // 64
        self._offs = np.empty(cap, np.int64)
        self._lens = np.empty(cap, np.int64)
        self._ts = np.empty(cap, np.int64)

    def fileno(self) -> int:
        """The socket's descriptor (readable when a block is ready)."""
        return self.sock.fileno()

    def ready(self) -> FrameBlock | None:
        """The frames of the next retired block, or None; call ``release`` once they are read."""
        if not self.status[self.current][0] & TP_STATUS_USER:
            return None
        off = self.current * self.block_size
        n = walk_block(self.ring, off, self.block_size, self._offs, self._lens, self._ts)
        return FrameBlock(self.ring, self._offs[:n], self._lens[:n], np.full(n, LINKTYPE_ETHERNET, np.int64),
                          self._ts[:n])

    def release(self) -> None:
        """Hand the current block back to the kernel and move to the next."""
        self.status[self.current][0] = TP_STATUS_KERNEL
        self.current = (self.current + 1) % self.blocks

    def stats(self) -> tuple[int, int]:
        """(packets, drops) the kernel counted since the last call (reading resets them)."""
        raw = self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 12)
        packets, drops, _freeze = struct.unpack("=3I", raw)
        return packets, drops

    def close(self) -> None:
        """Unmap the ring and close the socket."""
        self.status = []
        self.ring = None
        try:
            self.map.close()
        except BufferError:  # a FrameBlock still refers to it: the socket closes anyway, the map with the last view
            pass
        self.sock.close()


def warm_up(meter: TrafficMeter) -> None:
    """Run the meter's kernels once on a made-up frame (a TCP SYN), so that compiling or loading them from the numba
    cache happens before the ring opens, not while its first blocks fill."""
    frame = np.zeros(54, np.uint8)
    frame[12:14] = (8, 0)
    frame[14], frame[17], frame[23], frame[47] = 0x45, 40, 6, 0x02
    block = FrameBlock(frame, np.zeros(1, np.int64), np.array([54], np.int64), np.ones(1, np.int64),
                       np.ones(1, np.int64))
    b = FlowBatchBuilder(16)
    meter.feed(block, b)
    meter.expire(1, b)
    meter.finish(b)


class LiveCapture:
    """``run --interface``: a PacketRing read on the event loop, metered, rows handed to ``on_rows``."""

    def __init__(self, interface: str, on_rows, counters: Counters, server_ports=(),
                 params: MeterParams = MeterParams()):
        self.interface = interface
        self.on_rows = on_rows
        self.counters = counters
        self.meter = TrafficMeter(counters, params, server_ports)
        self.builder = FlowBatchBuilder(65536)
        self.ring: PacketRing | None = None
        self._loop = None
        self._timer = None

    def start(self, loop) -> None:
        """Open the ring (PermissionError without CAP_NET_RAW, OSError for an unknown interface) and watch it."""
        warm_up(TrafficMeter(Counters(), self.meter.meter.params))
        self.ring = PacketRing(self.interface)
        self._loop = loop
        loop.add_reader(self.ring.fileno(), self._drain)
        self._timer = loop.call_later(1.0, self._tick)

    def _drain(self) -> None:
        try:
            while True:
                block = self.ring.ready()
                if block is None:
                    break
                try:
                    self.meter.feed(block, self.builder)
                finally:
                    self.ring.release()
            self._emit()
        except Exception:  # noqa: BLE001 - never raise into the event loop: count, log, keep capturing
            self.counters.inc("brokerwatch_capture_errors_total", ("drain",))
            import logging

            logging.getLogger("brokerwatch").exception("live capture on %s", self.interface)

    def _tick(self) -> None:
        """Once a second: expire idle flows by the clock (no packets may come to do it) and count kernel drops."""
        self.meter.expire(time.time_ns(), self.builder)
        self._emit()
        _, drops = self.ring.stats()
        self.counters.inc("brokerwatch_capture_drops_total", (self.interface,), drops)
        self._timer = self._loop.call_later(1.0, self._tick)

    def _emit(self) -> None:
        if len(self.builder):
            batch: FlowBatch = self.builder.build()
            self.builder.reset()
            self.on_rows(batch)

    def close(self) -> None:
        """Read what the ring holds, end every flow into on_rows, close the ring."""
        if self.ring is None:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._loop.remove_reader(self.ring.fileno())
        self._drain()
        self.meter.finish(self.builder)
        self._emit()
        _, drops = self.ring.stats()
        self.counters.inc("brokerwatch_capture_drops_total", (self.interface,), drops)
        self.ring.close()
        self.ring = None


def main(argv: list[str] | None = None) -> int:
    """Meter an interface for a while and print what was seen as one JSON object."""
    ap = argparse.ArgumentParser(description="meter an interface for a while (needs CAP_NET_RAW)")
    ap.add_argument("interface")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--ready", help="create this file once the ring is open")
    a = ap.parse_args(argv)
    warm_up(TrafficMeter(Counters(), MeterParams(expint=0)))
    ring = PacketRing(a.interface)
    counters = Counters()
    meter = TrafficMeter(counters, MeterParams(expint=0))
    builder = FlowBatchBuilder(65536)
    if a.ready:
        open(a.ready, "w").close()
    frames = kernel = drops = 0
    t_end = time.monotonic() + a.seconds
    import select

    while time.monotonic() < t_end:
        select.select([ring.fileno()], [], [], 0.05)
        while (block := ring.ready()) is not None:
            frames += len(block)
            meter.feed(block, builder)
            ring.release()
        p, d = ring.stats()
        kernel += p
        drops += d
    meter.finish(builder)
    b = builder.build()
    p, d = ring.stats()
    ring.close()
    flows = sorted([int(x) for x in (b.src_hi[i], b.src_lo[i], b.dst_hi[i], b.dst_lo[i], b.src_port[i], b.dst_port[i],
                                     b.proto[i], b.bytes[i], b.packets[i])] for i in range(len(b))
                   if not b.flags[i] & FLAG_MESSAGE)
    print(json.dumps({"frames": frames, "kernel_packets": kernel + p, "kernel_drops": drops + d,
                      "flows": len(flows), "messages": int((b.flags & FLAG_MESSAGE != 0).sum()), "records": flows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
