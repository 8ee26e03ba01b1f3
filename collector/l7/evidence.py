"""L7 evidence from the first bytes of each direction of a flow: what a flow record cannot say.

Pure functions over bytes that may be cut short (the meter keeps a bounded buffer per direction, an sFlow sample
~128 bytes of one packet); none raises on any input. ``flow_evidence(client_bytes, server_bytes)`` returns an
``Evidence``:

- the application protocol and MQTT topic (``collector/l7/appproto.py``, on the first segment of each direction, then
  on the whole buffer), and for MQTT 3.1-5.0 (also inside WebSocket frames) the CONNECT's client id, keepalive and
  whether a user name is present, every PUBLISH topic with its payload length and entropy, SUBSCRIBE topic filters;
- AMQP 0-9-1 ``basic.publish`` exchange/routing key, ``queue.declare``/``basic.consume`` queue; STOMP ``destination``;
  NATS ``PUB``/``SUB`` subjects; the XMPP stream's ``to`` domain: as ``destinations``;
- the TLS ClientHello's server name (SNI) and ALPN protocols (``mqtt``, ``x-amzn-mqtt-ca``: MQTT over 443);
- a cleartext HTTP request's method, Host and path, and ``Upgrade: websocket`` with its ``Sec-WebSocket-Protocol``;
- which side is the client, when a client message proves it (CONNECT, ClientHello, an HTTP request, a STOMP/NATS/
  AMQP/XMPP opening): the meter's direction when it saw no SYN.

``dns_answers(payload)`` reads a DNS response's A/AAAA answers (with CNAME chains followed back to the question) for
the passive-DNS map (``PassiveDns``, bounded, least recently used first out).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field

from collector.l7 import appproto
from collector.l7.appproto import AMQP, MQTT, MQTT_WS, NATS, STOMP, XMPP, _varint

#: Longest string kept (topics, names, paths): anything longer is cut.
MAX_TEXT = 1024
#: MQTT messages read from one buffer (the rest of a burst adds nothing the first ones did not say).
MAX_MESSAGES = 256


@dataclass
class Message:
    """One application message seen in a flow: an MQTT PUBLISH (or a publish of another protocol)."""

    topic: str
    length: int  # the whole packet, header included
    payload_length: int
    entropy: float  # bits per byte of the payload bytes present (0-8)
    from_client: bool
    offset: int  # byte offset of the packet in its direction's buffer


@dataclass
class Evidence:
    """What the first bytes of a flow say (empty fields: not seen)."""

    app_proto: int = 0
    client_side: int = -1  # 0: the side given as client_bytes really is the client; 1: it is the server; -1: unknown
    topic: str = ""
    client_id: str = ""
    keepalive: int = -1
    username: bool = False
    mqtt_level: int = 0
    subscriptions: list[str] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    destinations: list[str] = field(default_factory=list)
    sni: str = ""
    alpn: list[str] = field(default_factory=list)
    http_method: str = ""
    http_host: str = ""
    http_path: str = ""
    http_paths: list[str] = field(default_factory=list)  # every request's path in the buffer (keep-alive sessions)
    websocket_protocol: str = ""
    unsubscriptions: list[str] = field(default_factory=list)


def _text(b: bytes) -> str:
    return b[:MAX_TEXT].decode("utf-8", "replace")


def entropy(data: bytes) -> float:
    """Shannon entropy of the bytes, in bits per byte (0 for none)."""
    n = len(data)
    if not n:
        return 0.0
    counts = [0] * 256
    for c in data:
        counts[c] += 1
    return -sum(k / n * math.log2(k / n) for k in counts if k)


# ----------------------------------------------------------------------------------------------------- MQTT


def _str16(buf: bytes, pos: int, limit: int) -> tuple[bytes, int] | None:
    if pos + 2 > limit:
        return None
    n = buf[pos] << 8 | buf[pos + 1]
    if pos + 2 + n > limit:
        return None
    return buf[pos + 2:pos + 2 + n], pos + 2 + n


def mqtt_connect(buf: bytes, ev: Evidence) -> bool:
    """Read an MQTT CONNECT at the start of buf into ev (client id, keepalive, user name flag, level)."""
    if len(buf) < 2 or buf[0] != 0x10:
        return False
    vi = _varint(buf, 1)
    if vi is None:
        return False
    remaining, body = vi
    limit = min(len(buf), body + remaining)
    name = _str16(buf, body, limit)
    if name is None or name[0] not in (b"MQTT", b"MQIsdp"):
        return False
    pos = name[1]
    if pos + 4 > limit:
        return False
    level, flags = buf[pos], buf[pos + 1]
    keepalive = buf[pos + 2] << 8 | buf[pos + 3]
    pos += 4
    if level == 5:  # properties
        vi = _varint(buf, pos)
        if vi is None:
            return False
        pos = vi[1] + vi[0]
    cid = _str16(buf, pos, limit)
    ev.mqtt_level = level
    ev.keepalive = keepalive
    ev.username = bool(flags & 0x80)
    if cid is not None:
        ev.client_id = _text(cid[0])
    return True


def mqtt_packets(buf: bytes, from_client: bool, ev: Evidence) -> int:
    """Walk a run of MQTT packets (one direction of a session): CONNECT, PUBLISH and SUBSCRIBE into ev.

    Returns the offset where the walk stopped (a packet cut by the buffer's end, or bytes that are not MQTT).
    """
    pos = 0
    n = len(buf)
    while pos + 2 <= n and len(ev.messages) < MAX_MESSAGES:
        b0 = buf[pos]
        vi = _varint(buf, pos + 1)
        if vi is None or b0 < 0x10:
            break
        remaining, body = vi
        end = body + remaining
        kind = b0 >> 4
        if kind == 1:
            if not mqtt_connect(buf[pos:end], ev):
                break
            ev.client_side = 0 if from_client else 1
        elif kind == 3:
            t = _str16(buf, body, min(end, n))
            if t is None:
                break
            topic, at = t
            if b0 & 0x06:
                at += 2  # packet identifier (QoS 1/2)
            if ev.mqtt_level == 5 and at < min(end, n):
                vi5 = _varint(buf, at)
                if vi5 is None:
                    break
                at = vi5[1] + vi5[0]
            payload = buf[at:min(end, n)]
            ev.messages.append(Message(_text(topic), end - pos, max(0, end - at), entropy(payload), from_client, pos))
            if not ev.topic:
                ev.topic = _text(topic)
        elif kind in (8, 10) and (b0 & 0x0F) == 2:  # SUBSCRIBE (filters with options), UNSUBSCRIBE
            found = appproto._mqtt_subscribe(buf[:min(end, n)], body, remaining, kind == 8)
            if found:
                (ev.subscriptions if kind == 8 else ev.unsubscriptions).extend(found)
                if ev.client_side < 0:
                    ev.client_side = 0 if from_client else 1
        if end > n:
            break
        pos = end
    return pos


def websocket_payloads(buf: bytes) -> bytes:
    """The (unmasked) payloads of the WebSocket frames that follow an HTTP upgrade in buf, concatenated."""
    head = buf.find(b"\r\n\r\n")
    pos = head + 4 if head >= 0 and buf[:4] in (b"GET ", b"HTTP") else 0
    out = bytearray()
    n = len(buf)
    while pos + 2 <= n:
        b1 = buf[pos + 1]
        length = b1 & 0x7F
        at = pos + 2
        if length == 126:
            if at + 2 > n:
                break
            length = buf[at] << 8 | buf[at + 1]
            at += 2
        elif length == 127:
            if at + 8 > n:
                break
            length = int.from_bytes(buf[at:at + 8], "big")
            at += 8
        key = b""
        if b1 & 0x80:
            key = buf[at:at + 4]
            at += 4
            if len(key) < 4:
                break
        data = buf[at:min(n, at + length)]
        if key:
            data = bytes(c ^ key[i & 3] for i, c in enumerate(data))
        if buf[pos] & 0x0F in (0, 1, 2):  # continuation, text, binary (control frames carry no MQTT)
            out += data
        pos = at + length
    return bytes(out)


# ----------------------------------------------------------------------------------------------------- TLS


def tls_client_hello(buf: bytes, ev: Evidence) -> bool:
    """Read the SNI and ALPN of a TLS ClientHello at the start of buf (a cut hello yields what its bytes hold)."""
    if len(buf) < 9 or buf[0] != 0x16 or buf[1] != 3 or buf[5] != 1:
        return False
    pos = 9 + 2 + 32  # record header, handshake header, client version, random
    if pos >= len(buf):
        return True
    sid = buf[pos]
    pos += 1 + sid
    if pos + 2 > len(buf):
        return True
    pos += 2 + (buf[pos] << 8 | buf[pos + 1])  # cipher suites
    if pos >= len(buf):
        return True
    pos += 1 + buf[pos]  # compression methods
    if pos + 2 > len(buf):
        return True
    end = min(len(buf), pos + 2 + (buf[pos] << 8 | buf[pos + 1]))
    pos += 2
    while pos + 4 <= end:
        etype = buf[pos] << 8 | buf[pos + 1]
        elen = buf[pos + 2] << 8 | buf[pos + 3]
        body = buf[pos + 4:min(end, pos + 4 + elen)]
        if etype == 0 and len(body) >= 5 and body[2] == 0:  # server_name list, host_name entry
            nlen = body[3] << 8 | body[4]
            ev.sni = _text(body[5:5 + nlen])
        elif etype == 16 and len(body) >= 2:  # ALPN protocol name list
            at = 2
            while at < len(body):
                plen = body[at]
                ev.alpn.append(_text(body[at + 1:at + 1 + plen]))
                at += 1 + plen
        pos += 4 + elen
    return True


# ----------------------------------------------------------------------------------------------------- HTTP

_METHODS = (b"GET", b"POST", b"PUT", b"HEAD", b"DELETE", b"OPTIONS", b"PATCH", b"CONNECT")


def http_request(buf: bytes, ev: Evidence) -> bool:
    """Read a cleartext HTTP/1.x request line and headers (method, Host, path, WebSocket upgrade) into ev."""
    sp = buf.find(b" ", 0, 8)
    if sp < 0 or buf[:sp] not in _METHODS:
        return False
    eol = buf.find(b"\r\n", sp, 8192)
    line = buf[:eol if eol >= 0 else min(len(buf), 8192)]
    parts = line.split(b" ")
    if len(parts) < 2 or (eol >= 0 and not parts[-1].startswith(b"HTTP/1.")):
        return False  # (NATS's and STOMP's CONNECT lines are not HTTP)
    ev.http_method = _text(parts[0])
    target = parts[1]
    if target.startswith((b"http://", b"https://")):  # absolute form (to a proxy): the path follows the authority
        slash = target.find(b"/", target.find(b"//") + 2)
        target = target[slash:] if slash >= 0 else b"/"
    ev.http_path = ev.http_path or _text(target)
    ev.http_paths.append(_text(target))
    if eol >= 0:
        for header in buf[eol + 2:buf.find(b"\r\n\r\n", eol) if b"\r\n\r\n" in buf else len(buf)].split(b"\r\n"):
            name, sep, value = header.partition(b":")
            if not sep:
                continue
            name = name.strip().lower()
            if name == b"host" and not ev.http_host:
                ev.http_host = _text(value.strip())
            elif name == b"sec-websocket-protocol":
                ev.websocket_protocol = _text(value.strip())
    return True


# ----------------------------------------------------------------------------------------------------- the others


def amqp_destinations(buf: bytes) -> list[str]:
    """Exchange/routing key of basic.publish, queue of queue.declare/basic.consume in AMQP 0-9-1 frames of buf."""
    out: list[str] = []
    pos = 8 if buf.startswith(b"AMQP") else 0
    n = len(buf)
    while pos + 7 <= n and len(out) < 64:
        ftype = buf[pos]
        size = int.from_bytes(buf[pos + 3:pos + 7], "big")
        body = pos + 7
        if ftype not in (1, 2, 3, 8):
            break
        if ftype == 1 and body + 4 <= n:
            cls = buf[body] << 8 | buf[body + 1]
            meth = buf[body + 2] << 8 | buf[body + 3]
            at = body + 4 + 2  # reserved short
            if (cls, meth) == (60, 40):  # basic.publish: exchange, routing-key
                names = _shortstrs(buf, at, min(n, body + size), 2)
                if len(names) == 2:
                    out.append(f"{names[0]}/{names[1]}" if names[0] else names[1])
            elif (cls, meth) in ((50, 10), (60, 20)):  # queue.declare, basic.consume: queue
                names = _shortstrs(buf, at, min(n, body + size), 1)
                if names and names[0]:
                    out.append(names[0])
        pos = body + size + 1
    return out


def _shortstrs(buf: bytes, at: int, limit: int, k: int) -> list[str]:
    out = []
    for _ in range(k):
        if at >= limit:
            break
        ln = buf[at]
        if at + 1 + ln > limit:
            break
        out.append(_text(buf[at + 1:at + 1 + ln]))
        at += 1 + ln
    return out


def stomp_destinations(buf: bytes) -> list[str]:
    """``destination`` headers of the STOMP frames in buf."""
    out = []
    for line in buf[:8192].split(b"\n"):
        if line.startswith(b"destination:"):
            out.append(_text(line[12:].rstrip(b"\r")))
    return out[:64]


def nats_subjects(buf: bytes) -> list[str]:
    """Subjects of the NATS PUB/HPUB/SUB/MSG lines in buf."""
    out = []
    for line in buf[:8192].split(b"\r\n"):
        parts = line.split(b" ")
        if parts[0] in (b"PUB", b"HPUB", b"SUB", b"MSG", b"HMSG") and len(parts) >= 2:
            out.append(_text(parts[1]))
    return out[:64]


def xmpp_domain(buf: bytes) -> list[str]:
    """The ``to`` domain of an XMPP stream header in buf."""
    at = buf.find(b"<stream:stream")
    if at < 0:
        return []
    end = buf.find(b">", at)
    head = buf[at:end if end >= 0 else len(buf)]
    for quote in (b"'", b'"'):
        k = head.find(b" to=" + quote)
        if k >= 0:
            stop = head.find(quote, k + 5)
            return [_text(head[k + 5:stop if stop >= 0 else len(head)])]
    return []


# ----------------------------------------------------------------------------------------------------- a flow


def flow_evidence(client: bytes, server: bytes) -> Evidence:
    """Evidence from the first bytes each way of one flow (client as the meter believes it; see client_side)."""
    ev = Evidence()
    for buf, from_client in ((client, True), (server, False)):
        if not buf:
            continue
        app, topic = appproto.inspect(buf)
        if app and not ev.app_proto:
            ev.app_proto = app
        if topic and not ev.topic:
            ev.topic = topic[:MAX_TEXT]
        _opening(buf, from_client, ev, app)
    if ev.app_proto in (MQTT, MQTT_WS) or ev.websocket_protocol.lower().startswith("mqtt"):
        for buf, from_client in ((client, True), (server, False)):
            if buf[:4] in (b"GET ", b"HTTP") or (ev.app_proto == MQTT_WS):
                mqtt_packets(websocket_payloads(buf), from_client, ev)
            else:
                mqtt_packets(buf, from_client, ev)
    if ev.alpn and not ev.app_proto and any(a.startswith(("mqtt", "x-amzn-mqtt")) for a in ev.alpn):
        ev.app_proto = MQTT  # MQTT over TLS, named by ALPN (AWS IoT on 443)
    return ev


def _opening(buf: bytes, from_client: bool, ev: Evidence, app: int) -> None:
    """The client-side messages that prove the direction, and the destinations of the text protocols."""
    mine = 0 if from_client else 1
    if tls_client_hello(buf, ev) or http_request(buf, ev):
        ev.client_side = mine
        at = buf.find(b"\r\n\r\n")
        for _ in range(64):  # the other requests of a keep-alive session in the buffer
            if at < 0 or not http_request(buf[at + 4:], ev):
                break
            at = buf.find(b"\r\n\r\n", at + 4)
        if ev.websocket_protocol.lower().startswith("mqtt") and not ev.app_proto:
            ev.app_proto = MQTT_WS
        return
    if buf[:1] == b"\x10" and mqtt_connect(buf, ev):
        ev.client_side = mine
        return
    if app == AMQP:
        if buf.startswith(b"AMQP"):
            ev.client_side = mine
        ev.destinations += amqp_destinations(buf)
    elif app == STOMP:
        if buf.lstrip(b"\r\n").startswith((b"CONNECT", b"STOMP")):
            ev.client_side = mine
        ev.destinations += stomp_destinations(buf)
    elif app == NATS:
        if buf.startswith(b"CONNECT {"):
            ev.client_side = mine
        elif buf.startswith(b"INFO {"):
            ev.client_side = 1 - mine
        ev.destinations += nats_subjects(buf)
    elif app == XMPP:
        dom = xmpp_domain(buf)
        if dom and b" to=" in buf[:512]:
            ev.client_side = mine
        ev.destinations += dom
    if ev.destinations and not ev.topic:
        ev.topic = ev.destinations[0]


# ----------------------------------------------------------------------------------------------------- DNS


def _dns_name(msg: bytes, pos: int, depth: int = 0) -> tuple[str, int] | None:
    labels = []
    end = None
    for _ in range(128):
        if pos >= len(msg):
            return None
        ln = msg[pos]
        if ln == 0:
            pos += 1
            break
        if ln & 0xC0 == 0xC0:
            if pos + 1 >= len(msg) or depth > 8:
                return None
            ptr = (ln & 0x3F) << 8 | msg[pos + 1]
            if end is None:
                end = pos + 2
            sub = _dns_name(msg, ptr, depth + 1)
            if sub is None:
                return None
            if sub[0]:
                labels.append(sub[0])
            pos = None
            break
        if ln & 0xC0:
            return None
        labels.append(msg[pos + 1:pos + 1 + ln].decode("ascii", "replace"))
        pos += 1 + ln
    else:
        return None
    return ".".join(labels).lower(), (end if end is not None else pos)


def dns_answers(msg: bytes) -> list[tuple[str, bytes]]:
    """(question name, address bytes) for each A/AAAA answer of a DNS response (empty for anything else)."""
    if len(msg) < 12 or not msg[2] & 0x80:
        return []
    qd = msg[4] << 8 | msg[5]
    an = msg[6] << 8 | msg[7]
    pos = 12
    qname = ""
    for _ in range(min(qd, 4)):
        got = _dns_name(msg, pos)
        if got is None:
            return []
        qname = qname or got[0]
        pos = got[1] + 4
    out = []
    for _ in range(min(an, 64)):
        got = _dns_name(msg, pos)
        if got is None or got[1] + 10 > len(msg):
            break
        pos = got[1]
        rtype = msg[pos] << 8 | msg[pos + 1]
        rdlen = msg[pos + 8] << 8 | msg[pos + 9]
        data = msg[pos + 10:pos + 10 + rdlen]
        pos += 10 + rdlen
        if (rtype == 1 and len(data) == 4) or (rtype == 28 and len(data) == 16):
            out.append((qname or got[0], bytes(data)))
    return out


class PassiveDns:
    """Address → the name it was last given in a DNS answer; bounded, the least recently answered leave first."""

    def __init__(self, max_entries: int = 65536):
        self.max_entries = max_entries
        self._names: OrderedDict[tuple[int, int], str] = OrderedDict()

    def __len__(self) -> int:
        return len(self._names)

    def add(self, address: tuple[int, int], name: str) -> None:
        """Remember that name resolved to address (address as schema words)."""
        self._names[address] = name
        self._names.move_to_end(address)
        while len(self._names) > self.max_entries:
            self._names.popitem(last=False)

    def name(self, address: tuple[int, int]) -> str:
        """The name last answered for address, or ""."""
        return self._names.get(address, "")


# ----------------------------------------------------------------------------------------------------- sessions

#: Bytes of one direction held while an MQTT packet is incomplete; a longer packet is read from its first bytes
#: (header, topic, the start of the payload) and the rest of it skipped as it arrives.
STREAM_HOLD = 8192


class MqttStream:
    """One direction of an MQTT session, segment by segment: every PUBLISH with the time of its first byte.

    Memory is bounded (STREAM_HOLD bytes); bytes that are not MQTT stop the walk for good (``lost`` is set) rather
    than guessing where the next packet starts.
    """

    __slots__ = ("pending", "marks", "skip", "lost", "level")

    def __init__(self) -> None:
        self.pending = bytearray()
        self.marks: list[tuple[int, int]] = []  # (offset in pending, time of the segment that starts there)
        self.skip = 0
        self.lost = False
        self.level = 4

    def feed(self, data: bytes, ts_ns: int, out: list[tuple[int, Message]], from_client: bool) -> None:
        """Take the next segment; append (time, Message) for each PUBLISH that starts in what is now known."""
        if self.lost:
            return
        if self.skip:
            k = min(self.skip, len(data))
            self.skip -= k
            data = data[k:]
            if not data:
                return
        self.marks.append((len(self.pending), ts_ns))
        self.pending += data
        buf = self.pending
        pos = 0
        while len(buf) - pos >= 2:
            b0 = buf[pos]
            vi = _varint(buf, pos + 1)
            if b0 < 0x10 or (vi is None and len(buf) - pos >= 5):
                self.lost = True
                break
            if vi is None:
                break
            remaining, body = vi
            end = body + remaining
            complete = end <= len(buf)
            if not complete and len(buf) - pos < STREAM_HOLD:
                break
            kind = b0 >> 4
            if kind == 1 and complete:
                ev = Evidence()
                if mqtt_connect(bytes(buf[pos:end]), ev):
                    self.level = ev.mqtt_level
            elif kind == 3:
                msg = self._publish(buf, pos, body, end, b0, from_client)
                if msg is not None:
                    out.append((self._time(pos), msg))
            if not complete:
                self.skip = end - len(buf)
                pos = len(buf)
                break
            pos = end
        if pos:
            del buf[:pos]
            self.marks = [(max(0, o - pos), t) for o, t in self.marks if o + 0 >= pos] or \
                ([(0, self.marks[-1][1])] if buf else [])
        if len(buf) > STREAM_HOLD:
            self.lost = True

    def _time(self, pos: int) -> int:
        t = self.marks[0][1]
        for o, ts in self.marks:
            if o > pos:
                break
            t = ts
        return t

    def _publish(self, buf: bytearray, pos: int, body: int, end: int, b0: int, from_client: bool) -> Message | None:
        limit = min(end, len(buf))
        t = _str16(buf, body, limit)
        if t is None:
            return None
        topic, at = t
        if b0 & 0x06:
            at += 2
        if self.level == 5 and at < limit:
            vi = _varint(buf, at)
            if vi is None:
                return None
            at = vi[1] + vi[0]
        payload = bytes(buf[at:min(limit, at + 512)])
        return Message(_text(bytes(topic)), end - pos, max(0, end - at), entropy(payload), from_client, pos)


def sampled_evidence(payload: bytes) -> dict:
    """ECS fields beyond protocol and topic from ONE sampled TCP payload (an sFlow header): the TLS ClientHello's
    SNI/ALPN, an HTTP request's method/Host/path, an MQTT CONNECT's client id. Empty for anything else; cheap
    first-byte tests keep other payloads from being parsed at all."""
    if len(payload) < 6:
        return {}
    ev = Evidence()
    b0 = payload[0]
    out: dict = {}
    if b0 == 0x16 and payload[1] == 3 and tls_client_hello(payload, ev):
        tls: dict = {}
        if ev.sni:
            tls["client"] = {"server_name": ev.sni}
            out["destination"] = {"domain": ev.sni}
        if ev.alpn:
            tls["next_protocol"] = ev.alpn[0]
            tls.setdefault("client", {})["alpn"] = ev.alpn
        if tls:
            out["tls"] = tls
    elif 0x41 <= b0 <= 0x5A and http_request(payload, ev):
        out["http"] = {"request": {"method": ev.http_method}}
        out["url"] = {"path": ev.http_path}
        if ev.http_host:
            out["destination"] = {"domain": ev.http_host.split(":")[0]}
    elif b0 == 0x10 and mqtt_connect(payload, ev):
        out["mqtt"] = {"client_id": ev.client_id, "keepalive": ev.keepalive, "username_present": ev.username,
                       "protocol_level": ev.mqtt_level}
    return out
