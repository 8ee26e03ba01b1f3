"""A labelled day of raw traffic: a classic pcap of real TCP/UDP conversations and labels.json (issue #13's world).

``generate(out_dir, seed, hours=24.0, scale=1.0)`` writes ``out_dir/raw.pcap`` (microsecond pcap, Ethernet II,
IPv4, time-ordered, virtual time from ``T0``) and ``out_dir/labels.json`` (one entry per (source, destination,
destination port) pair: family, label, params, and per input class whether recall is asked on it); the same seed
gives the same bytes. See docs/architecture.md "The labelled raw-traffic world" for the model.

Speed: packets are never objects. Each family emits *columns* (connection id, time, direction, TCP flags, payload
pieces), vectorised over the connections or events of a pair; sequence/acknowledgement numbers and IP ids are
computed for all packets at once from per-connection cumulative sums (so every TCP connection is a consistent one,
SYN/SYN-ACK/ACK, segments, the peer's ACKs and replies, FIN or RST or still open), and the bytes are written in
chunks: headers as numpy structured arrays (IPv4 checksum vectorised), then one numba pass that lays headers and
payloads end to end and fills the TCP/UDP checksums. A payload is three pieces of one byte pool: a prefix (the
protocol's framing, built per message from small templates), a body (a slice of a seeded random region: message
contents, TLS ciphertext) and a suffix (AMQP's frame end, NATS' CRLF, STOMP's NUL).

    python -m bench.detection.pcapworld OUT_DIR [--seed N] [--hours H] [--scale X]
"""

from __future__ import annotations

import argparse
import json
import math
import struct
import sys
import time
from collections import Counter
from pathlib import Path

if __package__ in (None, ""):  # run as a script
    sys.path[0] = str(Path(__file__).resolve().parents[2])

import numba  # noqa: E402
import numpy as np  # noqa: E402

from bench.detection.raw_day import gt  # noqa: E402  (the MQTT 3.1.1 builders of fixtures/gen_traffic.py)

T0 = 1_767_225_600  # 2026-01-01 00:00:00 UTC
US = 1_000_000
C, S = 0, 1  # direction: client -> server, server -> client
FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10
MSS = 1448
RAND_POOL = 1 << 22  # seeded random bytes that message bodies and ciphertext are cut from
RESOLVER = "10.0.0.53"
MAC_CLIENT, MAC_GW = bytes.fromhex("020000000001"), bytes.fromhex("0200000000fe")

C2_FAMILIES = ("c2_reconnect", "c2_sleep_change", "c2_interleaved", "c2_bursty", "c2_exfil", "c2_persistent_cmd",
               "c2_nonstd_port", "c2_mqtt_443_alpn", "c2_dyndns")
PLAIN_PORTS = {"mqtt": 1883, "amqp": 5672, "xmpp": 5222, "stomp": 61613, "nats": 4222}
TLS_PORTS = {"mqtt": 8883, "amqp": 5671, "xmpp": 5223}
NONSTD_PORTS = (4444, 8080, 9001, 31337, 2883, 10443)
DYNDNS = ("duckdns.org", "no-ip.org", "ddns.net", "dynu.net", "freedns.afraid.org", "hopto.org")
#: C2 pairs per family at scale 1.0 (about 300 in all).
N_C2 = 33
#: Benign pairs at scale 1.0: fleets and broker groups as (groups, size range), the rest as pair counts.
BENIGN_GROUPS = {"internal_jobqueue": (3, (5, 20)), "internal_lab_broker": (3, (2, 6)),
                 "internal_sensor_fleet": (12, (20, 80)), "cloud_sensor_fleet": (10, (10, 50))}
BENIGN_PAIRS = {"chat_client": 350, "backup_sync": 20, "keepalive_session": 500, "ntp": 300, "dns": 300,
                "update_check": 250, "web": 200, "cdn_keepalive": 150}
#: Reconnecting beats a pair emits at most (fast periods keep their timing over a shorter active span).
MAX_BEATS = 2000
#: Events a long session emits at most per connection (the keepalive grid is clipped, not stretched).
MAX_SESSION_EVENTS = 6000


# ------------------------------------------------------------------------------------------- byte templates


def _str16(s: bytes) -> bytes:
    return struct.pack(">H", len(s)) + s


def mqtt_publish_prefix(topic: bytes, n: int) -> bytes:
    """An MQTT 3.1.1 QoS 0 PUBLISH's fixed header and topic, for a payload of n bytes that follows."""
    return b"\x30" + gt._remaining_length(2 + len(topic) + n) + _str16(topic)


def _amqp_method(channel: int, cls: int, meth: int, args: bytes) -> bytes:
    body = struct.pack(">HH", cls, meth) + args
    return struct.pack(">BHI", 1, channel, len(body)) + body + b"\xce"


def _shortstr(s: bytes) -> bytes:
    return bytes([len(s)]) + s


def _longstr(s: bytes) -> bytes:
    return struct.pack(">I", len(s)) + s


AMQP_HEADER = b"AMQP\x00\x00\x09\x01"
AMQP_START = _amqp_method(0, 10, 10, b"\x00\x09" + struct.pack(">I", 0) + _longstr(b"PLAIN AMQPLAIN")
                          + _longstr(b"en_US"))
AMQP_START_OK = _amqp_method(0, 10, 11, struct.pack(">I", 0) + _shortstr(b"PLAIN") + _longstr(b"\x00guest\x00guest")
                             + _shortstr(b"en_US"))
AMQP_TUNE = _amqp_method(0, 10, 30, struct.pack(">HIH", 2047, 131072, 60))
AMQP_TUNE_OK_OPEN = (_amqp_method(0, 10, 31, struct.pack(">HIH", 2047, 131072, 60))
                     + _amqp_method(0, 10, 40, _shortstr(b"/") + b"\x00\x00"))
AMQP_OPEN_OK = _amqp_method(0, 10, 41, b"\x00")
AMQP_CHANNEL_OPEN = _amqp_method(1, 20, 10, b"\x00")
AMQP_CHANNEL_OPEN_OK = _amqp_method(1, 20, 11, struct.pack(">I", 0))
AMQP_CLOSE = _amqp_method(0, 10, 50, struct.pack(">H", 200) + _shortstr(b"Goodbye") + b"\x00\x00\x00\x00")
AMQP_CLOSE_OK = _amqp_method(0, 10, 51, b"")
AMQP_HEARTBEAT = b"\x08\x00\x00\x00\x00\x00\x00\xce"
AMQP_FRAME_MAX = 131072


def amqp_publish_units(key: bytes, n: int, deliver: bool = False) -> list[tuple[bytes, int, bytes]]:
    """basic.publish (or basic.deliver) + content header + body frames of n random bytes, as (prefix, body, suffix)
    units; one body frame per frame_max."""
    if deliver:
        method = _amqp_method(1, 60, 60, _shortstr(b"ctag") + struct.pack(">QB", 1, 0) + _shortstr(b"")
                              + _shortstr(key))
    else:
        method = _amqp_method(1, 60, 40, b"\x00\x00" + _shortstr(b"") + _shortstr(key) + b"\x00")
    header_payload = struct.pack(">HHQH", 60, 0, n, 0)
    header = struct.pack(">BHI", 2, 1, len(header_payload)) + header_payload + b"\xce"
    units, first = [], method + header
    for k in range(0, max(n, 1), AMQP_FRAME_MAX - 8):
        m = min(AMQP_FRAME_MAX - 8, n - k)
        units.append((first + struct.pack(">BHI", 3, 1, m), m, b"\xce"))
        first = b""
    return units


def tls_client_hello(rng: np.random.Generator, sni: bytes, alpn: tuple[bytes, ...] = ()) -> bytes:
    """A TLS 1.3-style ClientHello record (SNI, supported_versions, key_share, ALPN when given)."""
    ext = b""
    host = _str16(b"\x00" + _str16(sni))
    ext += struct.pack(">H", 0) + _str16(host)
    ext += struct.pack(">H", 10) + _str16(_str16(b"\x00\x1d\x00\x17"))  # supported_groups x25519, secp256r1
    ext += struct.pack(">H", 13) + _str16(_str16(b"\x04\x03\x08\x04\x04\x01"))  # signature_algorithms
    if alpn:
        protos = b"".join(bytes([len(p)]) + p for p in alpn)
        ext += struct.pack(">H", 16) + _str16(_str16(protos))
    ext += struct.pack(">H", 43) + _str16(b"\x04\x03\x04\x03\x03")  # supported_versions 1.3, 1.2
    ext += struct.pack(">H", 51) + _str16(_str16(b"\x00\x1d" + _str16(rng.bytes(32))))  # key_share
    body = (b"\x03\x03" + rng.bytes(32) + b"\x20" + rng.bytes(32) + _str16(b"\x13\x01\x13\x02\xc0\x2f")
            + b"\x01\x00" + _str16(ext))
    hs = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + _str16(hs)


def tls_server_hello(rng: np.random.Generator) -> bytes:
    """ServerHello (TLS 1.3 supported_versions and key_share) + ChangeCipherSpec records; the rest (the chosen ALPN
    is in EncryptedExtensions) is opaque."""
    ext = (struct.pack(">H", 43) + _str16(b"\x03\x04")
           + struct.pack(">H", 51) + _str16(b"\x00\x1d" + _str16(rng.bytes(32))))
    body = b"\x03\x03" + rng.bytes(32) + b"\x20" + rng.bytes(32) + b"\x13\x01\x00" + _str16(ext)
    hs = b"\x02" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x03" + _str16(hs) + b"\x14\x03\x03\x00\x01\x01"


def tls_app_units(n: int) -> list[tuple[bytes, int, bytes]]:
    """Application-data records carrying n bytes of plaintext (opaque: random ciphertext, 17 bytes of tag/type)."""
    units = []
    for k in range(0, max(n, 1), 16384):
        m = min(16384, n - k) + 17
        units.append((b"\x17\x03\x03" + struct.pack(">H", m), m, b""))
    return units


def dns_message(qid: int, name: str, answer: str | None = None, ttl: int = 60) -> bytes:
    """A DNS query for the A record of name, or its answer with one address."""
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\x00"
    if answer is None:
        return struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + qname + b"\x00\x01\x00\x01"
    rr = b"\xc0\x0c\x00\x01\x00\x01" + struct.pack(">IH", ttl, 4) + bytes(int(x) for x in answer.split("."))
    return struct.pack(">HHHHHH", qid, 0x8180, 1, 1, 0, 0) + qname + b"\x00\x01\x00\x01" + rr


def _ntp(t: float, server: bool, frac: int) -> bytes:
    sec = int(T0 + t) + 2_208_988_800
    if server:
        return bytes([0x24, 2, 6, 0xE9]) + bytes(36) + struct.pack(">II", sec, frac)
    return bytes([0x23]) + bytes(39) + struct.pack(">II", sec, frac)


# ------------------------------------------------------------------------------------------- dialects


class Dialect:
    """How one pub/sub protocol opens, publishes, pings and closes, as (direction, [(prefix, body, suffix)]) steps."""

    name = "mqtt"

    def open(self, rng, ident: str) -> list[tuple[int, bytes]]:
        """The application handshake after TCP's."""
        return [(C, gt.mqtt_connect(ident, keepalive=60)), (S, gt.mqtt_connack())]

    def publish(self, topic: str, n: int, text: bytes | None = None, server: bool = False):
        """A message of n random bytes (or the given text) to topic, as (prefix, body, suffix) units."""
        t = topic.encode()
        if text is not None:
            return [(mqtt_publish_prefix(t, len(text)) + text, 0, b"")]
        return [(mqtt_publish_prefix(t, n), n, b"")]

    def ping(self) -> list[tuple[int, bytes]]:
        """A keepalive exchange."""
        return [(C, gt.MQTT_PINGREQ), (S, gt.MQTT_PINGRESP)]

    def close(self) -> list[tuple[int, bytes]]:
        """The application goodbye before FIN."""
        return [(C, gt.MQTT_DISCONNECT)]


class Amqp(Dialect):
    """AMQP 0-9-1."""

    name = "amqp"

    def open(self, rng, ident):
        return [(C, AMQP_HEADER), (S, AMQP_START), (C, AMQP_START_OK), (S, AMQP_TUNE), (C, AMQP_TUNE_OK_OPEN),
                (S, AMQP_OPEN_OK), (C, AMQP_CHANNEL_OPEN), (S, AMQP_CHANNEL_OPEN_OK)]

    def publish(self, topic, n, text=None, server=False):
        if text is not None:
            (pre, _, suf), = amqp_publish_units(topic.encode(), len(text), server)
            return [(pre + text + suf, 0, b"")]
        return amqp_publish_units(topic.encode(), n, server)

    def ping(self):
        return [(C, AMQP_HEARTBEAT), (S, AMQP_HEARTBEAT)]

    def close(self):
        return [(C, AMQP_CLOSE), (S, AMQP_CLOSE_OK)]


class Xmpp(Dialect):
    """XMPP client-to-server (plain stream; bodies as base64 text)."""

    name = "xmpp"
    domain = "chat.example.net"

    def open(self, rng, ident):
        head = (f"<?xml version='1.0'?><stream:stream to='{self.domain}' xmlns='jabber:client' "
                "xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>").encode()
        back = (f"<?xml version='1.0'?><stream:stream from='{self.domain}' id='{ident}' xmlns='jabber:client' "
                "xmlns:stream='http://etherx.jabber.org/streams' version='1.0'><stream:features><bind "
                "xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></stream:features>").encode()
        return [(C, head), (S, back)]

    def publish(self, topic, n, text=None, server=False):
        head = f"<message to='{topic}@{self.domain}' type='chat'><body>".encode()
        if text is None:  # opaque content (an implant's or a transfer's bytes)
            return [(head, n, b"</body></message>")]
        return [(head + text + b"</body></message>", 0, b"")]

    def ping(self):
        return [(C, b" ")]

    def close(self):
        return [(C, b"</stream:stream>"), (S, b"</stream:stream>")]


class Stomp(Dialect):
    """STOMP 1.2."""

    name = "stomp"

    def open(self, rng, ident):
        return [(C, b"CONNECT\naccept-version:1.2\nhost:/\nheart-beat:60000,60000\n\n\x00"),
                (S, b"CONNECTED\nversion:1.2\nheart-beat:60000,60000\nserver:ActiveMQ/5.18\n\n\x00")]

    def publish(self, topic, n, text=None, server=False):
        cmd = b"MESSAGE" if server else b"SEND"
        size = len(text) if text is not None else n
        head = cmd + f"\ndestination:/queue/{topic}\ncontent-length:{size}\n\n".encode()
        return [(head + text + b"\x00", 0, b"")] if text is not None else [(head, n, b"\x00")]

    def ping(self):
        return [(C, b"\n"), (S, b"\n")]

    def close(self):
        return [(C, b"DISCONNECT\nreceipt:77\n\n\x00"), (S, b"RECEIPT\nreceipt-id:77\n\n\x00")]


class Nats(Dialect):
    """NATS (the server speaks first)."""

    name = "nats"

    def open(self, rng, ident):
        info = (b'INFO {"server_id":"NB3S","version":"2.10.7","proto":1,"headers":true,"max_payload":1048576}\r\n')
        conn = f'CONNECT {{"verbose":false,"pedantic":false,"name":"{ident}","lang":"go","version":"1.31.0"}}\r\n'
        return [(S, info), (C, conn.encode() + b"PING\r\n"), (S, b"PONG\r\n")]

    def publish(self, topic, n, text=None, server=False):
        size = len(text) if text is not None else n
        head = (f"MSG {topic} 1 {size}\r\n" if server else f"PUB {topic} {size}\r\n").encode()
        return [(head + text + b"\r\n", 0, b"")] if text is not None else [(head, n, b"\r\n")]

    def ping(self):
        return [(C, b"PING\r\n"), (S, b"PONG\r\n")]

    def close(self):
        return []


class Tls(Dialect):
    """Any of the above inside TLS: ClientHello (SNI, ALPN) and ServerHello in clear, then opaque records."""

    def __init__(self, inner: Dialect, sni: str, alpn: tuple[bytes, ...] = ()):
        self.inner, self.sni, self.alpn = inner, sni.encode(), alpn
        self.name = inner.name + "-tls"

    def open(self, rng, ident):
        if not hasattr(self, "_hellos"):  # a few ClientHello/ServerHello variants per endpoint (randoms differ)
            self._hellos = [(tls_client_hello(rng, self.sni, self.alpn),
                             tls_server_hello(rng)) for _ in range(4)]
        hello, server = self._hellos[int(rng.integers(4))]
        return [(C, hello), (S, server), (C, 80)] + [(d, len(m)) for d, m in self.inner.open(rng, ident)]

    def publish(self, topic, n, text=None, server=False):
        size = sum(len(p) + b + len(s) for p, b, s in self.inner.publish(topic, n, text, server))
        return tls_app_units(size)

    def ping(self):
        return [(d, len(m)) for d, m in self.inner.ping()]

    def close(self):
        return [(d, len(m)) for d, m in self.inner.close()] + [(C, 2)]


DIALECTS = {"mqtt": Dialect(), "amqp": Amqp(), "xmpp": Xmpp(), "stomp": Stomp(), "nats": Nats()}


# ------------------------------------------------------------------------------------------- packet columns


class Builder:
    """Connections and packet columns of a world under construction."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.pool = bytearray(rng.bytes(RAND_POOL))
        self._interned: dict[bytes, int] = {}
        self.conn_cols: dict[str, list] = {k: [] for k in ("src", "dst", "sport", "dport", "proto", "pair")}
        self.n_conns = 0
        self.chunks: list[tuple[np.ndarray, ...]] = []
        self._next_port: dict[int, int] = {}
        self._rtt = np.zeros(1024)

    # --- bytes
    def add(self, data: bytes) -> int:
        """Offset of data in the pool (templates are interned: the same bytes are stored once)."""
        off = self._interned.get(data)
        if off is None:
            off = len(self.pool)
            self.pool += data
            if len(data) <= 128:
                self._interned[data] = off
        return off

    def tls_len(self, n: int) -> tuple[int, int]:
        """(offset, length) of a TLS application-data record header for n opaque bytes."""
        return self.add(b"\x17\x03\x03" + struct.pack(">H", n)), 5

    # --- connections
    def conns(self, pair: int, src: int, dst: int, dport: int, n: int, proto: int = 6, rtt: float | np.ndarray = 0.03,
              sport: int | None = None) -> np.ndarray:
        """n new connections of a pair; ephemeral source ports step up per connection (no 5-tuple reused)."""
        if sport is None:
            base = self._next_port.get(src, int(self.rng.integers(32768, 40000)))
            ports = base + np.cumsum(self.rng.integers(1, 10, n))
            ports = 32768 + (ports - 32768) % (61000 - 32768)
            self._next_port[src] = int(ports[-1]) if n else base
        else:
            ports = np.full(n, sport)
        ids = np.arange(self.n_conns, self.n_conns + n)
        self.n_conns += n
        cc = self.conn_cols
        cc["src"].append(np.full(n, src, np.uint32))
        cc["dst"].append(np.full(n, dst, np.uint32))
        cc["sport"].append(ports.astype(np.uint16))
        cc["dport"].append(np.full(n, dport, np.uint16))
        cc["proto"].append(np.full(n, proto, np.uint8))
        if self.n_conns > len(self._rtt):
            self._rtt = np.concatenate([self._rtt, np.zeros(max(self.n_conns, 2 * len(self._rtt)))])
        self._rtt[ids] = rtt
        cc["pair"].append(np.full(n, pair, np.int32))
        return ids

    def rtt_of(self, ids: np.ndarray) -> np.ndarray:
        """Round-trip times of connections (seconds)."""
        return self._rtt[ids]

    # --- packets
    def emit(self, conn, t, d, flags, pre=(0, 0), body=0, suf=(0, 0)) -> None:
        """Packets (columns or scalars broadcast): connection, time (s), direction, flags, payload pieces."""
        conn = np.asarray(conn)
        t = np.asarray(t, float)
        n = max(conn.size, t.size)
        if n == 0:
            return

        def col(v, dt):
            return np.full(n, v, dt) if np.ndim(v) == 0 else np.asarray(v).astype(dt)

        blen = col(body, np.uint16)
        boff = self.rng.integers(0, RAND_POOL - MSS - 16384, n, dtype=np.uint32)
        boff[blen == 0] = 0
        self.chunks.append((col(conn, np.int32), np.round(np.broadcast_to(t, (n,)) * US).astype(np.int64),
                            col(d, np.uint8), col(flags, np.uint8), col(pre[0], np.uint32), col(pre[1], np.uint16),
                            boff, blen, col(suf[0], np.uint32), col(suf[1], np.uint8)))

    def emit_msgs(self, conn, t, d, msgs: list[list[tuple[bytes, int, bytes]]], peer_ack: float | None) -> np.ndarray:
        """Messages (one list of units each, any size) sent from d at times t, cut into MSS segments (paced at
        ~10 MB/s), the peer ACKing every second segment and the last one peer_ack seconds after it (None: no ACK).
        Returns the time of each message's last segment."""
        conn = np.broadcast_to(np.asarray(conn), (len(msgs),))
        t = np.broadcast_to(np.asarray(t, float), (len(msgs),))
        mi, po, pl, bl, so, sl = [], [], [], [], [], []
        big = 64 * MSS  # a long body is cut from the random region in MSS-aligned slices of up to 92 KiB
        for k, units in enumerate(msgs):
            for pre, body, suf in units:
                while len(pre) + body + len(suf) > big and body > big:
                    mi.append(k)
                    po.append(self.add(pre) if pre else 0)
                    pl.append(len(pre))
                    bl.append(big - len(pre))
                    so.append(0)
                    sl.append(0)
                    body -= big - len(pre)
                    pre = b""
                mi.append(k)
                po.append(self.add(pre) if pre else 0)
                pl.append(len(pre))
                bl.append(body)
                so.append(self.add(suf) if suf else 0)
                sl.append(len(suf))
        if not mi:
            return t.copy()
        mi, po, pl, bl, so, sl = (np.asarray(x, np.int64) for x in (mi, po, pl, bl, so, sl))
        total = pl + bl + sl
        nseg = np.maximum(1, -(-total // MSS))
        u = np.repeat(np.arange(len(total)), nseg)
        first = np.repeat(np.cumsum(nseg) - nseg, nseg)
        k = np.arange(len(u)) - first  # segment number within its unit
        lo = k * MSS
        hi = np.minimum(lo + MSS, total[u])
        p_lo, p_hi = np.minimum(lo, pl[u]), np.minimum(hi, pl[u])
        b_lo, b_hi = np.clip(lo - pl[u], 0, bl[u]), np.clip(hi - pl[u], 0, bl[u])
        s_lo, s_hi = np.clip(lo - pl[u] - bl[u], 0, sl[u]), np.clip(hi - pl[u] - bl[u], 0, sl[u])
        msg = mi[u]
        seg_in_msg = np.arange(len(u)) - np.repeat(np.searchsorted(msg, np.arange(len(msgs))),
                                                   np.bincount(msg, minlength=len(msgs)))
        ts = t[msg] + seg_in_msg * 0.00015
        cs = conn[msg]
        boff = self.rng.integers(0, RAND_POOL - bl)[u]  # each unit's body is one contiguous slice of the region
        last = np.r_[msg[1:] != msg[:-1], True]
        fl = np.where(last, PSH | ACK, ACK)
        self.chunks.append((cs.astype(np.int32), np.round(ts * US).astype(np.int64), np.full(len(u), d, np.uint8),
                            fl.astype(np.uint8), (po[u] + p_lo).astype(np.uint32), (p_hi - p_lo).astype(np.uint16),
                            (boff + b_lo).astype(np.uint32), (b_hi - b_lo).astype(np.uint16),
                            (so[u] + s_lo).astype(np.uint32), (s_hi - s_lo).astype(np.uint8)))
        if peer_ack is not None:
            want = last | (seg_in_msg % 2 == 1)
            delay = self.rtt_of(cs[want]) if d == C else peer_ack
            self.emit(cs[want], ts[want] + delay + 1e-6, 1 - d, ACK)
        ends = t.copy()
        ends[msg[last]] = ts[last]
        return ends

    def handshake(self, conn: np.ndarray, t: np.ndarray) -> np.ndarray:
        """SYN, SYN-ACK one RTT later, ACK; returns when the client may send."""
        rtt = self.rtt_of(conn)
        self.emit(conn, t, C, SYN)
        self.emit(conn, t + rtt, S, SYN | ACK)
        self.emit(conn, t + rtt + 0.0001, C, ACK)
        return t + rtt + 0.0002

    def exchange(self, conn: np.ndarray, t: np.ndarray, steps: list[tuple[int, object]]) -> np.ndarray:
        """Single-segment messages in turn, per connection: steps are (direction, message), a message being bytes,
        an int (an opaque TLS record of that many plaintext bytes) or a list of those, one per connection. A reply
        comes one RTT after what it answers, a message from the same side follows at once (the peer ACKs it).
        Returns the time after the last step."""
        rtt = self.rtt_of(conn)
        prev = None
        for k, (d, data) in enumerate(steps):
            if prev is not None:
                t = t + (rtt if (d == S and prev != d) else 0.0002)
            if isinstance(data, tuple):  # (offsets, lengths, bodies) already in the pool
                offs, lens, body = data
            elif isinstance(data, list):
                pieces = np.array([self._piece(m) for m in data], np.int64).reshape(len(data), 3)
                offs, lens, body = pieces[:, 0], pieces[:, 1], pieces[:, 2]
            else:
                offs, lens, body = self._piece(data)
            self.emit(conn, t, d, PSH | ACK, (offs, lens), body)
            nxt = steps[k + 1][0] if k + 1 < len(steps) else None
            if nxt is None or nxt == d:  # nothing answers it: the peer ACKs
                self.emit(conn, t + (rtt if d == C else 0.04), 1 - d, ACK)
            prev = d
        return t + 0.0002

    def _piece(self, m) -> tuple[int, int, int]:
        if isinstance(m, (int, np.integer)):  # an opaque TLS record of m plaintext bytes
            off, ln = self.tls_len(int(m) + 17)
            return off, ln, int(m) + 17
        return self.add(m), len(m), 0

    def teardown(self, conn: np.ndarray, t: np.ndarray, how: np.ndarray) -> None:
        """how per connection: 0 FIN from the client, 1 FIN from the server, 2 RST from the client, 3 none (open)."""
        rtt = self.rtt_of(conn)
        for who in (C, S):
            m = how == who
            if m.any():
                first = t[m] if who == C else t[m] + rtt[m]
                self.emit(conn[m], first, who, FIN | ACK)
                self.emit(conn[m], first + (rtt[m] if who == C else 0.0003), 1 - who, FIN | ACK)
                self.emit(conn[m], first + (rtt[m] if who == C else 0.0003) + (0.0002 if who == C else rtt[m]),
                          who, ACK)
        m = how == 2
        if m.any():
            self.emit(conn[m], t[m], C, RST | ACK)


# ------------------------------------------------------------------------------------------- addresses, beats


def ip(s: str) -> int:
    """Dotted quad to integer."""
    a, b, c, d = (int(x) for x in s.split("."))
    return (a << 24) | (b << 16) | (c << 8) | d


def dotted(v: int) -> str:
    """Integer to dotted quad."""
    return f"{v >> 24 & 255}.{v >> 16 & 255}.{v >> 8 & 255}.{v & 255}"


def beats(rng, start, end, period, jitter, missed, cap: int = MAX_BEATS) -> np.ndarray:
    """Beat times: intervals uniform in [S(1-j), S], each beat missed with probability `missed` (scenarios.py's
    model), at most `cap` of them (a fast beacon keeps its timing over a shorter span)."""
    n = min(int((end - start) / (period * (1 - jitter / 2))) + 2, cap + 1)
    t = start + rng.uniform(0, period) + np.cumsum(rng.uniform(period * (1 - jitter), period, n))
    t = t[t < end]
    return t[rng.random(len(t)) >= missed]


_ALNUM = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz0123456789", np.uint8)


def _token(rng, n: int) -> str:
    return _ALNUM[rng.integers(0, len(_ALNUM), n)].tobytes().decode()


def _tokens(rng, count: int, n: int, sep_at: int = 0) -> list[str]:
    """count random lower-case/digit strings of n characters ('/' at sep_at when given), in one draw."""
    raw = _ALNUM[rng.integers(0, len(_ALNUM), (count, n))]
    if sep_at:
        raw[:, sep_at] = ord("/")
    flat = raw.tobytes().decode()
    return [flat[i * n:(i + 1) * n] for i in range(count)]


# ------------------------------------------------------------------------------------------- the world


class World:
    """The generator's state: builder, labelled pairs, address allocators."""

    def __init__(self, seed: int, hours: float, scale: float):
        self.rng = np.random.default_rng(seed)
        self.b = Builder(np.random.default_rng(self.rng.integers(1 << 62)))
        self.seed, self.hours, self.scale = seed, hours, scale
        self.dur = hours * 3600.0
        self.pairs: list[dict] = []
        self._int = iter(range(1, 1 << 22))
        self._srv = iter(range(1, 1 << 22))
        self._ext = iter(self.rng.permutation(np.arange(256, 1 << 17)))

    def internal_host(self) -> int:
        """A new internal client address (10.1.0.0/16 up)."""
        h = next(self._int)
        return ip("10.1.0.0") + ((h // 250) << 8) + h % 250 + 1

    def internal_server(self) -> int:
        """A new internal server address (10.20.0.0/16)."""
        h = next(self._srv)
        return ip("10.20.0.0") + ((h // 250) << 8) + h % 250 + 1

    def external(self) -> int:
        """A new outside address in 198.18.0.0/15."""
        return ip("198.18.0.0") + int(next(self._ext))

    def pair(self, family: str, label: str, src: int, dst: int, dport: int, proto: int, pubsub: bool,
             params: dict, limits: dict | None = None) -> int:
        """Register a labelled pair; returns its index."""
        lim = {"raw": False, "flow": False, "flow_active": False, "sflow": False}
        lim.update(limits or {})
        self.pairs.append({"src": dotted(src), "dst": dotted(dst), "dport": dport, "proto": proto, "family": family,
                           "label": label, "pubsub": pubsub, "params": params, "limits": lim})
        return len(self.pairs) - 1

    def count(self, n: float) -> int:
        """A count at this world's scale (at least 1)."""
        return max(1, int(round(n * self.scale)))

    # --- connection shapes
    def short_conns(self, pid, src, dst, dport, times, dialect: Dialect, idents, topics, sizes, texts=None,
                    rtt=0.03, how=None) -> None:
        """One connection per time: handshake, the dialect's opening, one message, its goodbye, teardown."""
        times = np.asarray(times, float)
        n = len(times)
        if n == 0:
            return
        b = self.b
        conn = b.conns(pid, src, dst, dport, n, rtt=rtt)
        t = b.handshake(conn, times)
        memo: dict = {}
        if isinstance(dialect, Tls) or (isinstance(dialect, (_Web, _Probe)) and isinstance(dialect.inner, Tls)):
            # ClientHellos differ between connections (one of a few variants each, picked in one draw)
            variants = [dialect.open(b.rng, idents[0]) for _ in range(4)]
            pick = b.rng.integers(0, 4, n)
            steps = []
            for k in range(len(variants[0])):
                pieces = np.array([b._piece(v[k][1]) for v in variants], np.int64)[pick]
                steps.append((variants[0][k][0], (pieces[:, 0], pieces[:, 1], pieces[:, 2])))
            t = b.exchange(conn, t, steps)
        else:
            opens = [memo.get(x) or memo.setdefault(x, dialect.open(b.rng, x)) for x in idents]
            if opens[0]:
                t = b.exchange(conn, t, [(opens[0][k][0], [o[k][1] for o in opens]) for k in range(len(opens[0]))])
        memo.clear()
        msgs = []
        for i in range(n):
            key = (topics[i], int(sizes[i]), None if texts is None else texts[i])
            m = memo.get(key)
            if m is None:
                m = memo[key] = dialect.publish(*key)
            msgs.append(m)
        ends = b.emit_msgs(conn, t + 0.0002, C, msgs, peer_ack=0.0)
        if getattr(dialect, "response", False):  # the server answers with sizes[i] bytes
            ends = b.emit_msgs(conn, ends + b.rtt_of(conn), S, [tls_app_units(int(x)) for x in sizes], peer_ack=0.04)
        t = ends + 0.001
        if dialect.close():
            t = b.exchange(conn, t, dialect.close())
        if how is None:
            how = np.where(b.rng.random(n) < 0.05, 2, np.where(b.rng.random(n) < 0.1, 1, 0))
        b.teardown(conn, t + 0.0005, how)

    def session(self, pid, src, dst, dport, t_open, t_close, dialect: Dialect, ident: str, keepalive: float,
                client_msgs=((), ()), server_msgs=((), ()), rtt=0.03, closed=True) -> None:
        """One long connection: opening, keepalive exchanges when idle for `keepalive` s, messages from the client
        (times, [units]) and from the server (times, [units]) each ACKed by the peer, then goodbye and FIN
        (or still open at the end when not closed)."""
        b = self.b
        conn = b.conns(pid, src, dst, dport, 1, rtt=rtt)
        t = b.handshake(conn, np.array([t_open]))
        opening = dialect.open(b.rng, ident)
        if opening:
            t = b.exchange(conn, t, opening)
        lo, hi = float(t[0]) + 0.01, t_close - 1.0
        busy = []
        for d, (times, msgs) in ((C, client_msgs), (S, server_msgs)):
            times = np.asarray(times, float)
            keep = (times > lo) & (times < hi)
            if keep.any():
                sel = [m for m, k in zip(msgs, keep) if k]
                b.emit_msgs(np.full(int(keep.sum()), conn[0]), times[keep], d, sel, peer_ack=0.04)
                busy.append(times[keep])
        busy_t = np.sort(np.concatenate(busy)) if busy else np.zeros(0)
        grid = np.arange(lo + keepalive, hi, keepalive)[:MAX_SESSION_EVENTS]
        if len(busy_t) and len(grid):  # keepalives only when nothing was sent for a keepalive interval
            prev = np.searchsorted(busy_t, grid) - 1
            grid = grid[(prev < 0) | (grid - busy_t[np.maximum(prev, 0)] >= keepalive * 0.9)]
        if len(grid) and dialect.ping():
            b.exchange(np.full(len(grid), conn[0]), grid, dialect.ping())
        if closed:
            t = np.array([hi + 0.5])
            if dialect.close():
                t = b.exchange(conn, t, dialect.close())
            b.teardown(conn, t + 0.0005, np.array([0]))

    def udp(self, pid, src, dst, dport, times, queries: list[bytes], answers: list[bytes], delay, sport=None,
            per_query_conn=True) -> None:
        """UDP request/answer pairs (a new source port each when per_query_conn, else one 'connection')."""
        b = self.b
        n = len(times)
        if n == 0:
            return
        conn = b.conns(pid, src, dst, dport, n if per_query_conn else 1, proto=17, sport=sport)
        cq = conn if per_query_conn else np.full(n, conn[0])
        b.emit(cq, times, C, 0, (np.array([b.add(q) for q in queries]), np.array([len(q) for q in queries])))
        b.emit(cq, np.asarray(times) + delay, S, 0,
               (np.array([b.add(a) for a in answers]), np.array([len(a) for a in answers])))


# --- C2 families


def _c2_params(rng) -> dict:
    return {"period_s": float(np.exp(rng.uniform(np.log(5.0), np.log(3600.0)))),
            "jitter": float(rng.uniform(0, 0.5)), "missed": float(rng.uniform(0, 0.3))}


def _rand_topic(rng) -> str:
    return _token(rng, 12) + "/" + _token(rng, 16)


def c2_family(w: World, fam: str) -> None:
    """One C2 pair of the family (and the implant's DNS pair for c2_dyndns)."""
    rng, b = w.rng, w.b
    q = _c2_params(rng)
    src, dst = w.internal_host(), w.external()
    proto = str(rng.choice(list(PLAIN_PORTS)))
    tls = proto in TLS_PORTS and rng.random() < 0.25
    dport = TLS_PORTS[proto] if tls else PLAIN_PORTS[proto]
    dialect = DIALECTS[proto]
    if tls:
        dialect = Tls(dialect, f"{_token(rng, 10)}.{_token(rng, 6)}.net")
    lim = {"raw": True, "flow": True, "flow_active": True, "sflow": True}
    if fam == "c2_nonstd_port":
        proto, dialect, dport = "mqtt", DIALECTS["mqtt"], int(rng.choice(NONSTD_PORTS))
        lim = {"raw": True}
    elif fam == "c2_mqtt_443_alpn":
        proto, dport = "mqtt", 443
        dialect = Tls(DIALECTS["mqtt"], f"{_token(rng, 8)}.{_token(rng, 5)}.com", (b"mqtt",))
        lim = {"raw": True}
    elif fam in ("c2_dyndns", "c2_persistent_cmd"):
        # persistent: the commands are visible as messages only where the meter follows the session (plain MQTT)
        proto, dialect, dport = "mqtt", DIALECTS["mqtt"], 1883
    S_, j, m = q["period_s"], q["jitter"], q["missed"]
    q.update(protocol=dialect.name)
    cap = max(200, int(MAX_BEATS * w.dur / 86400))
    if fam == "c2_bursty":
        per_beat = int(rng.integers(2, 4))
        cap //= per_beat
    elif fam in ("c2_sleep_change", "c2_interleaved"):
        cap //= 2
    rtt = float(rng.uniform(0.02, 0.15))
    if fam == "c2_persistent_cmd":
        keepalive = float(rng.choice([15.0, 30.0, 60.0, 120.0]))
        q["keepalive_s"] = keepalive
        lim = {"raw": True, "flow": False, "flow_active": S_ * (1 - j) >= 2 * 300.0, "sflow": True}
        pid = w.pair(fam, "c2", src, dst, dport, 6, True, q, lim)
        cmd = beats(rng, 60.0, w.dur - 60, S_, j, m, cap)
        q["beats"] = len(cmd)
        res = cmd + rng.uniform(0.5, 3.0, len(cmd))
        job = _tokens(rng, len(cmd), 8)
        w.session(pid, src, dst, dport, float(rng.uniform(0, 30)), w.dur, dialect, _token(rng, 23), keepalive,
                  client_msgs=(res, [dialect.publish(f"res/{k}", int(rng.integers(200, 600))) for k in job]),
                  server_msgs=(cmd, [dialect.publish(f"cmd/{k[:4]}", int(rng.integers(40, 120)), server=True)
                                     for k in job]), rtt=rtt, closed=False)
        return
    if fam == "c2_sleep_change":
        cut = float(rng.uniform(0.3, 0.7)) * w.dur
        S2 = min(3600.0, max(5.0, S_ * float(rng.choice([1 / 8, 1 / 4, 4, 8]))))
        q.update(period2_s=S2, change_at_s=cut)
        t = np.concatenate([beats(rng, 0, cut, S_, j, m, cap), beats(rng, cut, w.dur - 5, S2, j, m, cap)])
    elif fam == "c2_interleaved":
        S2 = min(3600.0, S_ * float(rng.uniform(2.5, 6.0)))
        q["period2_s"] = S2
        t = np.sort(np.concatenate([beats(rng, 0, w.dur - 5, S_, j, m, cap), beats(rng, 0, w.dur - 5, S2, j, m, cap)]))
    else:
        t = beats(rng, 0, w.dur - 5, S_, j, m, cap)
    q["beats"] = len(t)
    if fam == "c2_bursty":
        k = per_beat
        q["per_beat"] = k
        t = np.sort(np.concatenate([t] + [t + rng.uniform(0.2, min(3.0, S_ * 0.1), len(t)) for _ in range(k - 1)]))
    if fam == "c2_dyndns":
        name = f"{_token(rng, 9)}.{rng.choice(DYNDNS)}"
        q["name"] = name
    pid = w.pair(fam, "c2", src, dst, dport, 6, True, q, lim)
    if fam == "c2_dyndns":
        dpid = w.pair("c2_dyndns_lookup", "c2", src, ip(RESOLVER), 53, 17, False, {"name": name})
        qids = rng.integers(0, 1 << 16, len(t))
        tq = t - rng.uniform(0.01, 0.05, len(t))
        w.udp(dpid, src, ip(RESOLVER), 53, tq, [dns_message(int(x), name) for x in qids],
              [dns_message(int(x), name, dotted(dst)) for x in qids], 0.004)
    n = len(t)
    w.short_conns(pid, src, dst, dport, t, dialect, _tokens(rng, n, 23), _tokens(rng, n, 29, 12),
                  rng.integers(24, 64, n), rtt=rtt)
    if fam == "c2_exfil":
        k = int(rng.integers(1, 4))
        tx = np.sort(rng.uniform(0, w.dur - 600, k))
        sizes = np.exp(rng.uniform(np.log(0.5e6), np.log(5e6), k)).astype(int)
        q["uploads_bytes"] = sizes.tolist()
        w.short_conns(pid, src, dst, dport, tx, dialect, [_token(rng, 23) for _ in range(k)],
                      [_rand_topic(rng) for _ in range(k)], sizes, rtt=rtt)


# --- benign families


def _json_texts(rng, n=6) -> list[bytes]:
    keys = ("temperature", "humidity", "power", "pressure", "co2", "battery")
    return [json.dumps({keys[i % len(keys)]: round(float(rng.uniform(0, 100)), 1), "unit": "auto"}).encode()
            for i in range(n)]


def _fleet(w: World, family: str, broker: int, dport: int, dialect: Dialect, n: int, internal: bool) -> None:
    rng, b = w.rng, w.b
    mode = "session" if rng.random() < 0.67 else "reconnect"
    # reconnecting sensors come back every minute; a session publishes at its own rhythm between keepalives
    period = 60.0 if mode == "reconnect" else float(rng.choice([60.0, 60.0, 120.0, 300.0]))
    site = _token(rng, 4)
    texts = _json_texts(rng)
    for i in range(n):
        src = w.internal_host()
        params = {"protocol": dialect.name, "mode": mode, "period_s": period, "fleet_size": n, "site": site}
        pid = w.pair(family, "benign", src, broker, dport, 6, True, params)
        cid = f"sensor-{site}-{i:03d}"
        topic = f"site/{site}/sensor/{i:03d}/state"
        rtt = float(rng.uniform(0.001, 0.004)) if internal else float(rng.uniform(0.02, 0.08))
        start = float(rng.uniform(0, period))
        if mode == "reconnect":
            t = beats(b.rng, start, w.dur - 5, period, 0.03, 0.01)
            pick = b.rng.integers(0, len(texts), len(t))
            w.short_conns(pid, src, broker, dport, t, dialect, [cid] * len(t), [topic] * len(t),
                          np.zeros(len(t), int), [texts[k] for k in pick], rtt=rtt, how=np.zeros(len(t), int))
        else:
            keepalive = float(rng.uniform(30, 60))
            params["keepalive_s"] = round(keepalive, 1)
            pubs = beats(b.rng, start, w.dur - 5, period, 0.02, 0.0)
            pick = b.rng.integers(0, len(texts), len(pubs))
            w.session(pid, src, broker, dport, start, w.dur, dialect, cid, keepalive,
                      client_msgs=(pubs, [dialect.publish(topic, 0, texts[k]) for k in pick]), rtt=rtt, closed=False)


def benign_groups(w: World) -> None:
    """Fleets and broker groups: job queues, lab brokers, sensor fleets (internal and cloud)."""
    rng, b = w.rng, w.b
    shrink = min(1.0, math.sqrt(w.scale))  # a CI-sized world keeps fewer members per group
    internal_brokers: list[tuple[int, int, Dialect]] = []
    for fam, (groups, (lo, hi)) in BENIGN_GROUPS.items():
        for _ in range(w.count(groups)):
            n = max(2, int(round(rng.integers(lo, hi + 1) * shrink)))
            if fam == "internal_sensor_fleet":
                broker, proto = w.internal_server(), str(rng.choice(["mqtt", "mqtt", "mqtt", "amqp", "nats"]))
                internal_brokers.append((broker, PLAIN_PORTS[proto], DIALECTS[proto]))
                _fleet(w, fam, broker, PLAIN_PORTS[proto], DIALECTS[proto], n, True)
            elif fam == "cloud_sensor_fleet":
                broker = w.external()
                _fleet(w, fam, broker, 8883, Tls(DIALECTS["mqtt"], f"iot-{_token(rng, 6)}.cloud.example"), n, False)
            elif fam == "internal_jobqueue":
                broker = w.internal_server()
                internal_brokers.append((broker, 5672, DIALECTS["amqp"]))
                _jobqueue(w, broker, n)
            else:
                broker = w.internal_server()
                internal_brokers.append((broker, 1883, DIALECTS["mqtt"]))
                _lab(w, broker, n)
    # monitoring: one or two hosts poll every internal broker's port
    for _ in range(max(1, w.count(2))):
        mon = w.internal_host()
        for broker, dport, dialect in internal_brokers:
            period = float(rng.choice([60.0, 120.0, 300.0]))
            pid = w.pair("monitoring_poll", "benign", mon, broker, dport, 6, True,
                         {"protocol": dialect.name, "period_s": period})
            t = beats(b.rng, 0, w.dur - 5, period, 0.01, 0.0)
            n = len(t)
            w.short_conns(pid, mon, broker, dport, t, _Probe(dialect), ["nagios-check"] * n, ["-"] * n,
                          np.zeros(n, int), rtt=0.001, how=np.zeros(n, int))


class _Probe(Dialect):
    """A monitoring check: the dialect's opening and goodbye, no message."""

    def __init__(self, inner: Dialect):
        self.inner, self.name = inner, inner.name

    def open(self, rng, ident):
        return self.inner.open(rng, ident)

    def publish(self, topic, n, text=None, server=False):
        return []

    def close(self):
        return self.inner.close()


def _jobqueue(w: World, broker: int, n: int) -> None:
    """App servers with long AMQP connections (heartbeats 60 s) publishing bursts of 0.5-5 MB job messages."""
    rng, b = w.rng, w.b
    dialect = DIALECTS["amqp"]
    for i in range(n):
        src = w.internal_host()
        pid = w.pair("internal_jobqueue", "benign", src, broker, 5672, 6, True,
                     {"protocol": "amqp", "app_servers": n})
        bursts = np.sort(rng.uniform(0, w.dur, rng.integers(1, 5)))
        t = np.sort(np.concatenate([s + np.cumsum(rng.exponential(20.0, rng.integers(1, 4))) for s in bursts]))
        sizes = np.exp(rng.uniform(np.log(0.5e6), np.log(5e6), len(t))).astype(int)
        w.pairs[pid]["params"].update(jobs=len(t), job_bytes=int(sizes.sum()))
        cuts = np.sort(np.concatenate([[0.0, w.dur], rng.uniform(0, w.dur, rng.integers(0, 3))]))
        for a, z in zip(cuts[:-1], cuts[1:]):
            sel = (t > a + 5) & (t < z - 5)
            msgs = [dialect.publish(f"jobs.{_token(rng, 5)}", int(s)) for s in sizes[sel]]
            w.session(pid, src, broker, 5672, float(a + rng.uniform(0, 2)), float(z), dialect, "", 60.0,
                      client_msgs=(t[sel], msgs), rtt=0.0015, closed=z < w.dur)


def _lab(w: World, broker: int, n: int) -> None:
    """People running mosquitto_pub by hand: clusters of one-shot connections in working hours."""
    rng = w.rng
    for i in range(n):
        src = w.internal_host()
        pid = w.pair("internal_lab_broker", "benign", src, broker, 1883, 6, True, {"protocol": "mqtt", "people": n})
        # sessions of work spread over the span (a short world still has some)
        starts = rng.uniform(0, w.dur - 600, max(1, rng.poisson(4 * w.dur / 86400)))
        t = np.sort(np.concatenate([[0.0]] + [s + np.cumsum(rng.exponential(rng.uniform(3, 90),
                                                                             rng.integers(1, 12))) for s in starts]))
        t = t[(t > 1) & (t < w.dur - 5)]
        k = len(t)
        texts = [f"test {i} {_token(rng, 4)}".encode() for i in range(k)]
        w.short_conns(pid, src, broker, 1883, t, DIALECTS["mqtt"],
                      [f"mosq-{x}" for x in _tokens(rng, k, 16)], [f"lab/{_token(rng, 3)}/test"] * k,
                      np.zeros(k, int), texts, rtt=0.001, how=np.zeros(k, int))


def benign_pairs(w: World) -> None:
    """The per-pair benign families: chat, backups, push sessions, NTP, DNS, updates, web, CDN keepalives."""
    rng, b = w.rng, w.b
    chat_servers = [w.external() for _ in range(w.count(5))]
    push_brokers = [(w.external(), int(rng.choice([1883, 8883]))) for _ in range(w.count(20))]
    ntp_servers = [w.external() for _ in range(w.count(4))]
    web_servers = [w.external() for _ in range(w.count(200))]
    for fam, n_pairs in BENIGN_PAIRS.items():
        for _ in range(w.count(n_pairs)):
            src = w.internal_host()
            if fam == "chat_client":
                dst = chat_servers[int(rng.integers(len(chat_servers)))]
                pid = w.pair(fam, "benign", src, dst, 5222, 6, True, {"protocol": "xmpp"})
                conv = rng.uniform(0, w.dur, rng.poisson(w.dur / 3600 * rng.uniform(0.3, 3)))
                msgs = [c + np.cumsum(rng.exponential(rng.uniform(5, 60), rng.integers(2, 20))) for c in conv]
                tt = np.sort(np.concatenate(msgs)) if msgs else np.zeros(0)
                mine = rng.random(len(tt)) < 0.5
                words = [b"ok", b"see you at 3", b"lunch?", b"pushed the fix", b"can you review", b"thanks!"]
                def mk(k):
                    return DIALECTS["xmpp"].publish("friend", 0, words[k % len(words)] * int(1 + k % 4))
                w.session(pid, src, dst, 5222, float(rng.uniform(0, 600)), w.dur, DIALECTS["xmpp"], _token(rng, 8),
                          float(rng.choice([60.0, 90.0, 300.0])),
                          client_msgs=(tt[mine], [mk(k) for k in range(int(mine.sum()))]),
                          server_msgs=(tt[~mine], [mk(k) for k in range(int((~mine).sum()))]), closed=False)
            elif fam == "backup_sync":
                internal = rng.random() < 0.5
                dst = w.internal_server() if internal else w.external()
                proto = str(rng.choice(["amqp", "mqtt"]))
                dport = PLAIN_PORTS[proto]
                hourly = rng.random() < 0.5
                t = (np.arange(float(rng.uniform(0, 3600)), w.dur - 600, 3600.0) if hourly
                     else np.arange(float(rng.uniform(3600, 4 * 3600)), w.dur - 600, 86400.0))
                sizes = np.exp(rng.uniform(np.log(1e5 if hourly else 2e6), np.log(1e6 if hourly else 2e7),
                                           len(t))).astype(int)
                pid = w.pair(fam, "benign", src, dst, dport, 6, True,
                             {"protocol": proto, "schedule": "hourly" if hourly else "nightly"})
                w.short_conns(pid, src, dst, dport, t, DIALECTS[proto], [f"backup-{_token(rng, 6)}"] * len(t),
                              ["backup/archive"] * len(t), sizes, rtt=0.002 if internal else 0.04)
            elif fam == "keepalive_session":
                dst, dport = push_brokers[int(rng.integers(len(push_brokers)))]
                d = DIALECTS["mqtt"] if dport == 1883 else Tls(DIALECTS["mqtt"], "push.example.com")
                keepalive = float(rng.choice([30.0, 60.0, 120.0, 240.0, 300.0]))
                pid = w.pair(fam, "benign", src, dst, dport, 6, True, {"protocol": d.name, "keepalive_s": keepalive})
                cuts = np.sort(np.concatenate([[0.0, w.dur],
                                               rng.uniform(0, w.dur, rng.poisson(w.dur / rng.uniform(7200, 43200)))]))
                pushes = np.sort(rng.uniform(0, w.dur, rng.poisson(rng.uniform(0, 2.0) * w.dur / 3600)))
                for a, z in zip(cuts[:-1], cuts[1:]):
                    if z - a < 5:
                        continue
                    sel = pushes[(pushes > a) & (pushes < z)]
                    w.session(pid, src, dst, dport, float(a + rng.uniform(0, 1)), float(z), d, _token(rng, 12),
                              keepalive, server_msgs=(sel, [d.publish("push/notify", int(rng.integers(80, 400)),
                                                                      server=True) for _ in sel]),
                              rtt=float(rng.uniform(0.04, 0.2)), closed=z < w.dur)
            elif fam == "ntp":
                dst = ntp_servers[int(rng.integers(len(ntp_servers)))]
                period = float(rng.choice([64.0, 128.0, 256.0, 1024.0]))
                pid = w.pair(fam, "benign", src, dst, 123, 17, False, {"period_s": period})
                t = np.arange(float(rng.uniform(0, period)), w.dur - 1, period)
                fr = rng.integers(0, 1 << 32, len(t))
                w.udp(pid, src, dst, 123, t, [_ntp(x, False, int(f)) for x, f in zip(t, fr)],
                      [_ntp(x, True, int(f) ^ 0x5A5A) for x, f in zip(t, fr)], 0.012, sport=123, per_query_conn=False)
            elif fam == "dns":
                pid = w.pair(fam, "benign", src, ip(RESOLVER), 53, 17, False, {})
                t = np.sort(rng.uniform(0, w.dur - 1, max(1, rng.poisson(w.dur / rng.uniform(60, 900)))))
                names = [f"{_token(rng, 5)}.example.com" for _ in range(8)]
                qids = rng.integers(0, 1 << 16, len(t))
                pick = rng.integers(0, len(names), len(t))
                w.udp(pid, src, ip(RESOLVER), 53, t, [dns_message(int(x), names[k]) for x, k in zip(qids, pick)],
                      [dns_message(int(x), names[k], dotted(web_servers[k % len(web_servers)]))
                       for x, k in zip(qids, pick)], 0.003)
            else:
                _tls_family(w, fam, src, web_servers)


def _tls_family(w: World, fam: str, src: int, web_servers: list[int]) -> None:
    """update_check (hourly-ish short HTTPS), web (bursty browsing), cdn_keepalive (long 443 sessions, pings)."""
    rng = w.rng
    dst = web_servers[int(rng.integers(len(web_servers)))]
    pid = w.pair(fam, "benign", src, dst, 443, 6, False, {})
    tls = Tls(_Empty(), f"{_token(rng, 6)}.example.com", (b"h2", b"http/1.1"))
    if fam == "update_check":
        period = float(rng.choice([1800.0, 3600.0, 14400.0]))
        w.pairs[pid]["params"]["period_s"] = period
        t = beats(rng, 0, w.dur - 5, period, 0.05, 0.0)
        t = t if len(t) else np.array([float(rng.uniform(0, w.dur - 60))])  # a world shorter than the period
        n = len(t)
        w.short_conns(pid, src, dst, 443, t, _Web(tls), [""] * n, ["/"] * n, rng.integers(2000, 9000, n), rtt=0.03)
    elif fam == "web":
        visits = rng.uniform(0, w.dur - 120, max(1, rng.poisson(w.dur / 3600 * rng.uniform(0.5, 4))))
        t = np.sort(np.concatenate([v + np.cumsum(rng.exponential(2.0, rng.integers(1, 7))) for v in visits])) \
            if len(visits) else np.zeros(0)
        t = t[t < w.dur - 5] if len(t) else np.array([float(rng.uniform(0, w.dur - 120))])
        w.short_conns(pid, src, dst, 443, t, _Web(tls), [""] * len(t), ["/"] * len(t),
                      rng.integers(500, 8000, len(t)), rtt=float(rng.uniform(0.01, 0.08)))
    else:
        ping = float(rng.choice([45.0, 60.0, 90.0]))
        w.pairs[pid]["params"]["ping_s"] = ping
        a = 0.0
        while a < w.dur - 10:
            z = min(w.dur, a + float(rng.uniform(600, 3600)))
            w.session(pid, src, dst, 443, a + float(rng.uniform(0, 5)), z, _TlsPing(tls), "", ping,
                      rtt=0.02, closed=z < w.dur)
            a = z + float(rng.uniform(1, 120))


class _Empty(Dialect):
    """No application handshake, keepalive or goodbye (TLS carries an opaque protocol)."""

    def open(self, rng, ident):
        return []

    def ping(self):
        return []

    def close(self):
        return []


class _Web(Dialect):
    """An HTTPS exchange: the TLS handshake, a request record, the server's response of n bytes, close_notify."""

    response = True

    def __init__(self, tls: Tls):
        self.inner, self.name = tls, "https"

    def open(self, rng, ident):
        return self.inner.open(rng, ident)

    def publish(self, topic, n, text=None, server=False):
        return tls_app_units(300)

    def close(self):
        return [(C, 2)]


class _TlsPing(_Web):
    """HTTP/2 PING frames inside TLS (a CDN connection kept open)."""

    def open(self, rng, ident):
        return self.inner.open(rng, ident) + [(C, 200), (S, 3000)]

    def ping(self):
        return [(C, 17), (S, 17)]


# ------------------------------------------------------------------------------------------- writing


HDR = np.dtype([("ts_sec", "<u4"), ("ts_usec", "<u4"), ("incl", "<u4"), ("orig", "<u4"),
                ("eth_dst", "u1", 6), ("eth_src", "u1", 6), ("eth_type", ">u2"),
                ("vihl", "u1"), ("tos", "u1"), ("tot_len", ">u2"), ("ip_id", ">u2"), ("frag", ">u2"), ("ttl", "u1"),
                ("proto", "u1"), ("ip_csum", ">u2"), ("ip_src", ">u4"), ("ip_dst", ">u4"),
                ("sport", ">u2"), ("dport", ">u2"), ("seq", ">u4"), ("ack", ">u4"), ("off", "u1"), ("flags", "u1"),
                ("win", ">u2"), ("l4_csum", ">u2"), ("urg", ">u2")])
assert HDR.itemsize == 70


def ipv4_checksum(hdr: np.ndarray) -> np.ndarray:
    """IPv4 header checksums of structured headers (HDR), vectorised: one's complement sum of the 10 words."""
    raw = hdr.view(np.uint8).reshape(len(hdr), HDR.itemsize)[:, 30:50]
    words = np.ascontiguousarray(raw).view(">u2").astype(np.uint32).sum(axis=1)
    words = (words & 0xFFFF) + (words >> 16)
    words = (words & 0xFFFF) + (words >> 16)
    return (~words & 0xFFFF).astype(np.uint16)


@numba.njit(cache=True)
def assemble(out, hdr, hlen, pool, pre_off, pre_len, body_off, body_len, suf_off, suf_len, at):
    """Lay each packet's header and payload pieces at `at` in out, and fill its TCP/UDP checksum (RFC 1071)."""
    for i in range(hdr.shape[0]):
        o = at[i]
        h = hlen[i]
        out[o:o + h] = hdr[i, :h]
        p = o + h
        out[p:p + pre_len[i]] = pool[pre_off[i]:pre_off[i] + pre_len[i]]
        p += pre_len[i]
        out[p:p + body_len[i]] = pool[body_off[i]:body_off[i] + body_len[i]]
        p += body_len[i]
        out[p:p + suf_len[i]] = pool[suf_off[i]:suf_off[i] + suf_len[i]]
        p += suf_len[i]
        l4 = o + 50  # pcap record header 16 + Ethernet 14 + IPv4 20
        n = p - l4
        proto = np.int64(hdr[i, 39])
        s = proto + n  # pseudo-header: protocol, L4 length, then the addresses
        for k in range(42, 50, 2):
            s += (np.int64(hdr[i, k]) << 8) | np.int64(hdr[i, k + 1])
        hi = np.int64(0)  # bytes at even offsets are the words' high bytes: two plain sums vectorise
        lo = np.int64(0)
        for k in range(l4, l4 + n - 1, 2):
            hi += out[k]
            lo += out[k + 1]
        if n % 2:
            hi += out[l4 + n - 1]
        s += (hi << 8) + lo
        while s >> 16:
            s = (s & 0xFFFF) + (s >> 16)
        c = 0xFFFF - s
        if proto == 17 and c == 0:
            c = 0xFFFF  # UDP: 0 means "no checksum"
        pos = l4 + (16 if proto == 6 else 6)
        out[pos] = np.uint8(c >> 8)
        out[pos + 1] = np.uint8(c & 0xFF)


class Packets:
    """All packets of a world, sorted by time, with their TCP numbers, ready to write in chunks."""

    def __init__(self, b: Builder):
        cols = list(zip(*b.chunks))
        (self.conn, self.t, self.dir, self.flags, self.pre_off, self.pre_len, self.body_off, self.body_len,
         self.suf_off, self.suf_len) = (np.concatenate(c) for c in cols)
        b.chunks.clear()
        cc = {k: np.concatenate(v) for k, v in b.conn_cols.items() if v}
        cc["rtt"] = b._rtt[:b.n_conns]
        self.cc = cc
        rng = b.rng
        nconn = b.n_conns
        isn = rng.integers(0, 1 << 32, (nconn, 2), dtype=np.uint64)
        ipid0 = rng.integers(0, 1 << 16, (nconn, 2), dtype=np.int64)
        span = int(self.t.max()) + 10 * US + 1 if len(self.t) else 1
        assert nconn * span < (1 << 62)
        key = self.conn.astype(np.int64) * span + self.t
        order = np.argsort(key, kind="stable")
        for name in ("conn", "t", "dir", "flags", "pre_off", "pre_len", "body_off", "body_len", "suf_off", "suf_len"):
            setattr(self, name, getattr(self, name)[order])
        key = key[order]
        plen = self.pre_len.astype(np.int64) + self.body_len + self.suf_len
        cons = plen + ((self.flags & SYN) > 0) + ((self.flags & FIN) > 0)
        conn = self.conn.astype(np.int64)
        starts = np.searchsorted(key, np.arange(nconn, dtype=np.int64) * span)
        seq = np.zeros(len(conn), np.uint64)
        ackv = np.zeros(len(conn), np.uint64)
        ipid = np.zeros(len(conn), np.int64)
        rtt_us = np.round(cc["rtt"] * US).astype(np.int64)
        for d in (C, S):
            m = self.dir == d
            inc = np.cumsum(cons * m)
            ex = inc - cons * m
            seq[m] = (isn[conn[m], d] + (ex[m] - ex[starts[conn[m]]]).astype(np.uint64)) & 0xFFFFFFFF
            cnt = np.cumsum(m) - m
            ipid[m] = (ipid0[conn[m], d] + cnt[m] - cnt[starts[conn[m]]]) & 0xFFFF
            # what the other side acknowledges: d's bytes captured before it sent (client: before now; the server
            # answers one RTT after the capture point saw the client's packet)
            o = ~m & ((self.flags & ACK) > 0)
            kd = key[m]
            cum = np.cumsum(cons[m])
            delay = np.where(d == C, rtt_us[conn[o]] - 1, 0)
            q = np.searchsorted(kd, key[o] - delay, side="right")
            base = np.searchsorted(kd, conn[o] * span, side="left")
            got = np.where(q > 0, cum[np.maximum(q - 1, 0)], 0) - np.where(base > 0, cum[np.maximum(base - 1, 0)], 0)
            ackv[o] = (isn[conn[o], d] + np.maximum(got, 0).astype(np.uint64)) & 0xFFFFFFFF
        final = np.argsort(self.t, kind="stable")
        self.order = final
        self.seq, self.ack, self.ipid = seq, ackv, ipid

    def __len__(self) -> int:
        return len(self.t)

    def chunk(self, lo: int, hi: int) -> tuple:
        """The arguments of `assemble` for packets lo..hi in time order (headers built and IPv4-checksummed)."""
        cc = self.cc
        ix = self.order[lo:hi]
        n = len(ix)
        conn = self.conn[ix]
        d = self.dir[ix]
        proto = cc["proto"][conn]
        tcp = proto == 6
        plen = self.pre_len[ix].astype(np.int64) + self.body_len[ix] + self.suf_len[ix]
        l4 = np.where(tcp, 20, 8)
        h = np.zeros(n, HDR)
        t = self.t[ix] + T0 * US
        h["ts_sec"], h["ts_usec"] = t // US, t % US
        frame = 34 + l4 + plen
        h["incl"] = h["orig"] = frame
        out = d == C
        h["eth_dst"] = np.where(out[:, None], np.frombuffer(MAC_GW, np.uint8), np.frombuffer(MAC_CLIENT, np.uint8))
        h["eth_src"] = np.where(out[:, None], np.frombuffer(MAC_CLIENT, np.uint8), np.frombuffer(MAC_GW, np.uint8))
        h["eth_type"] = 0x0800
        h["vihl"] = 0x45
        h["tot_len"] = 20 + l4 + plen
        h["ip_id"] = self.ipid[ix]
        h["frag"] = 0x4000  # DF
        h["ttl"] = np.where(out, 64, 57)
        h["proto"] = proto
        src, dst = cc["src"][conn], cc["dst"][conn]
        sp, dp = cc["sport"][conn], cc["dport"][conn]
        h["ip_src"], h["ip_dst"] = np.where(out, src, dst), np.where(out, dst, src)
        h["sport"], h["dport"] = np.where(out, sp, dp), np.where(out, dp, sp)
        flags = self.flags[ix]
        # UDP: its length and a zero checksum (filled by assemble) sit where TCP's sequence number is
        h["seq"] = np.where(tcp, self.seq[ix], ((8 + plen) << 16).astype(np.uint64))
        h["ack"] = np.where(tcp & ((flags & ACK) > 0), self.ack[ix], 0)
        h["off"] = np.where(tcp, 0x50, 0)
        h["flags"] = flags
        h["win"] = np.where(tcp, np.where(out, 64240, 65160), 0)
        h["ip_csum"] = ipv4_checksum(h)
        rec = 16 + frame
        at = np.zeros(n, np.int64)
        at[1:] = np.cumsum(rec)[:-1]
        return (np.empty(int(rec.sum()), np.uint8), h.view(np.uint8).reshape(n, HDR.itemsize),
                (16 + 34 + l4).astype(np.int64), self.pre_off[ix].astype(np.int64),
                self.pre_len[ix].astype(np.int64), self.body_off[ix].astype(np.int64),
                self.body_len[ix].astype(np.int64), self.suf_off[ix].astype(np.int64),
                self.suf_len[ix].astype(np.int64), at)

    def write(self, path: Path, pool: np.ndarray, chunk: int = 1 << 20) -> int:
        """Write the pcap (classic, microseconds, Ethernet); returns its size in bytes."""
        size = 24
        with open(path, "wb") as f:
            f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
            for lo in range(0, len(self.order), chunk):
                buf, hdr, hlen, *pieces, at = self.chunk(lo, lo + chunk)
                assemble(buf, hdr, hlen, pool, *pieces, at)
                f.write(buf.data)
                size += len(buf)
        return size


def generate(out_dir, seed: int, hours: float = 24.0, scale: float = 1.0) -> dict:
    """Write out_dir/raw.pcap and out_dir/labels.json for one seeded world; returns the labels document."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    w = World(seed, hours, scale)
    for fam in C2_FAMILIES:
        for _ in range(w.count(N_C2)):
            c2_family(w, fam)
    benign_groups(w)
    benign_pairs(w)
    pk = Packets(w.b)
    pool = np.frombuffer(bytes(w.b.pool), np.uint8)
    size = pk.write(out / "raw.pcap", pool)
    pair_of = pk.cc["pair"][pk.conn]
    per_pair = np.bincount(pair_of, minlength=len(w.pairs))
    ip_bytes = (pk.pre_len.astype(np.int64) + pk.body_len + pk.suf_len + 20
                + np.where(pk.cc["proto"][pk.conn] == 6, 20, 8))
    per_pair_bytes = np.bincount(pair_of, weights=ip_bytes, minlength=len(w.pairs))
    for p, n, nb in zip(w.pairs, per_pair, per_pair_bytes):
        p["packets"], p["ip_bytes"] = int(n), int(nb)
    doc = {"seed": seed, "t0": T0, "hours": hours, "scale": scale, "packets": len(pk), "bytes": size,
           "pairs": w.pairs}
    with open(out / "labels.json", "w") as f:
        json.dump(doc, f, indent=0, default=float)
    return doc


def summary(doc: dict) -> str:
    """Per-family table: pairs, label, packets, and how many pairs each input class is asked recall on."""
    fam: dict[str, Counter] = {}
    for p in doc["pairs"]:
        c = fam.setdefault(p["family"], Counter())
        c["pairs"] += 1
        c["packets"] += p["packets"]
        c["ip_bytes"] += p["ip_bytes"]
        c["label:" + p["label"]] += 1
        for k, v in p["limits"].items():
            c[k] += bool(v)
    lines = [f"{'family':24} {'label':7} {'pairs':>6} {'packets':>10} {'MiB':>7} {'raw':>5} {'flow':>5} "
             f"{'fl_act':>6} {'sflow':>5}"]
    for name, c in sorted(fam.items(), key=lambda kv: (not kv[0].startswith("c2"), kv[0])):
        label = "c2" if c["label:c2"] else "benign"
        lines.append(f"{name:24} {label:7} {c['pairs']:6d} {c['packets']:10d} {c['ip_bytes'] / 2**20:7.1f} "
                     f"{c['raw']:5d} {c['flow']:5d} "
                     f"{c['flow_active']:6d} {c['sflow']:5d}")
    c2 = sum(1 for p in doc["pairs"] if p["label"] == "c2")
    lines.append(f"{len(doc['pairs'])} pairs ({c2} c2), {doc['packets']} packets, {doc['bytes'] / 2**20:.1f} MiB")
    return "\n".join(lines)


def main() -> None:
    """Command line: write one world and print its per-family summary."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--hours", type=float, default=24.0)
    ap.add_argument("--scale", type=float, default=1.0, help="1.0: ~300 C2 and ~3500 benign pairs")
    a = ap.parse_args()
    t = time.perf_counter()
    doc = generate(a.out_dir, a.seed, a.hours, a.scale)
    dt = time.perf_counter() - t
    print(summary(doc))
    print(f"written in {dt:.1f} s: {doc['packets'] / dt / 1e6:.2f} M packets/s, {doc['bytes'] / dt / 2**20:.0f} MiB/s")


if __name__ == "__main__":
    main()
