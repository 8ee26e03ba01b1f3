"""Recognising pub/sub application protocols from the first bytes of one TCP payload.

Pure functions over bytes, for payloads that may be cut short (an sFlow sampled header keeps ~60-200 bytes of a
packet). ``inspect(payload)`` returns ``(app_proto, topic)``: an ``APP_PROTOCOLS`` id (0 when nothing is
recognised) and, for an MQTT PUBLISH or SUBSCRIBE whose topic lies inside the bytes, the topic (else None).

The tests are conservative on purpose: a false "mqtt" on an HTTP, TLS or random payload would feed the beacon and
topic analytics with noise, while a missed segment costs little (other segments of the same flow are sampled).
So each protocol needs a structural proof, not a port:

- MQTT (3.1, 3.1.1, 5.0): CONNECT with protocol name ``MQIsdp``/``MQTT`` and a matching level; PUBLISH whose topic
  length fits the remaining length and whose topic is clean UTF-8 without wildcards; SUBSCRIBE/UNSUBSCRIBE
  (flags 0b0010) with a valid topic filter (3.x layout or 5.0 layout with properties); the short control packets
  (CONNACK, PUBACK..PUBCOMP, SUBACK, UNSUBACK, PINGREQ/RESP, DISCONNECT) only when the payload is exactly a run
  of well-formed packets. A text byte can never start a valid PUBLISH (its topic length would exceed the
  remaining length), so line protocols do not collide with it.
- MQTT over WebSocket: an HTTP ``GET`` upgrade whose ``Sec-WebSocket-Protocol`` names mqtt, or whose path is
  ``/mqtt`` with ``Upgrade: websocket`` (or with the header block cut off by sampling); the ``101`` answer that
  names mqtt; and, mid-session, a WebSocket binary frame whose (unmasked) payload passes the MQTT checks above
  (topic extracted too).
- AMQP: the ``AMQP`` protocol header (0-9-1, 0-8, 1.0 and its TLS/SASL variants); 0-9-1 frames (method frames
  with a known class/method, content headers, heartbeats) checked against the ``0xCE`` frame end when it is in
  the bytes; AMQP 1.0 frames with a described performative.
- XMPP: ``<?xml`` followed by ``<stream:stream`` or an XMPP namespace, stream elements, and the ``iq``/``message``/
  ``presence`` stanzas at the start of a segment.
- STOMP: a client or server command line followed by a header line or the blank line ending the headers
  (lower-case commands, which some brokers send, only with a header line).
- NATS: ``INFO {``/``CONNECT {`` JSON, ``PUB``/``HPUB``/``SUB``/``UNSUB``/``MSG``/``HMSG`` lines with the right
  token count and numeric sizes, ``-ERR '...'``, and a payload that is exactly ``PING``/``PONG``.
"""

from __future__ import annotations

from analytics.schema import APP_PROTOCOL_ID

MQTT = APP_PROTOCOL_ID["mqtt"]
AMQP = APP_PROTOCOL_ID["amqp"]
XMPP = APP_PROTOCOL_ID["xmpp"]
STOMP = APP_PROTOCOL_ID["stomp"]
NATS = APP_PROTOCOL_ID["nats"]
MQTT_WS = APP_PROTOCOL_ID["mqtt-over-websocket"]

#: Longest topic kept (MQTT allows 65535 bytes; anything this long is already anomalous and is cut).
MAX_TOPIC = 1024

_NONE: tuple[int, str | None] = (0, None)


def inspect(payload: bytes) -> tuple[int, str | None]:
    """(APP_PROTOCOLS id, MQTT topic or None) for the first bytes of a TCP payload; (0, None) when unrecognised."""
    if len(payload) < 2:
        return _NONE
    b0 = payload[0]
    # MQTT first: several of its first bytes are printable (PUBLISH 0x30-0x3D, CONNACK ' ', PUBREC 'P', ...),
    # and its checks reject text (a text length byte never fits the remaining length).
    if b0 >= 0x10:
        topic_or_ok = _mqtt(payload)
        if topic_or_ok is not None:
            return MQTT, topic_or_ok or None
    if b0 == 0x82 or b0 == 0x02:  # a WebSocket binary frame (final or first fragment) carrying MQTT
        topic_or_ok = _websocket_mqtt(payload)
        if topic_or_ok is not None:
            return MQTT_WS, topic_or_ok or None
    if b0 < 0x20:  # AMQP 0-9-1 frame types 1, 2, 3, 8; AMQP 1.0 frame size high byte
        if _amqp_frame(payload) or _amqp10_frame(payload):
            return AMQP, None
        return _NONE
    if b0 >= 0x80:
        return _NONE
    if b0 == 0x41 and payload.startswith(b"AMQP"):  # 'A'
        return (AMQP, None) if _amqp_header(payload) else _NONE
    return _text(payload), None


def app_proto(payload: bytes) -> int:
    """The APP_PROTOCOLS id recognised in a TCP payload's first bytes (0 when none)."""
    return inspect(payload)[0]


def mqtt_topic(payload: bytes) -> str | None:
    """The topic of a cleartext MQTT PUBLISH (or first filter of a (UN)SUBSCRIBE) in the payload, if present."""
    return inspect(payload)[1]


# --- MQTT ---


def mqtt_topics(payload: bytes, limit: int = 64) -> list[str]:
    """Topics of every MQTT PUBLISH and filters of every (UN)SUBSCRIBE coalesced in the payload (at most limit).

    Walks packet by packet while each one passes the checks of ``inspect``; stops at the first that does not.
    """
    out: list[str] = []
    n = len(payload)
    pos = 0
    while pos + 2 <= n and len(out) < limit:
        vi = _varint(payload, pos + 1)
        if vi is None:
            break
        end = vi[1] + vi[0]
        packet = payload[pos : min(end, n)]
        found = _mqtt(packet) if payload[pos] >= 0x10 else None
        if found is None:
            break
        if payload[pos] in (0x82, 0xA2):
            out.extend(_mqtt_subscribe(packet, vi[1] - pos, vi[0], payload[pos] == 0x82) or ())
        elif found:
            out.append(found)
        pos = end
    return out


def _varint(buf: bytes, pos: int) -> tuple[int, int] | None:
    """(value, next position) of an MQTT variable byte integer at pos, None if cut short or over 4 bytes."""
    value = 0
    for i in range(4):
        if pos + i >= len(buf):
            return None
        b = buf[pos + i]
        value |= (b & 0x7F) << (7 * i)
        if not b & 0x80:
            if i and b == 0:  # non-minimal encoding is a protocol error
                return None
            return value, pos + i + 1
    return None


def _clean_topic(raw: bytes, wildcards: bool) -> str | None:
    """The topic as text if it is valid UTF-8 without control characters (and wildcards only when allowed)."""
    if not raw:
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    for ch in text:
        o = ord(ch)
        if o < 0x20 or 0x7F <= o <= 0x9F or o == 0xFFFE or o == 0xFFFF:
            return None
    if not wildcards and ("+" in text or "#" in text):
        return None
    return text[:MAX_TOPIC]


#: First bytes of the short control packets (fixed flags included).
_CONNACK, _PUBACK, _PUBREC, _PUBREL, _PUBCOMP, _SUBACK, _UNSUBACK = 0x20, 0x40, 0x50, 0x62, 0x70, 0x90, 0xB0
_PINGREQ, _PINGRESP, _DISCONNECT, _AUTH = 0xC0, 0xD0, 0xE0, 0xF0
_SHORT_PACKETS = frozenset(
    (_CONNACK, _PUBACK, _PUBREC, _PUBREL, _PUBCOMP, _SUBACK, _UNSUBACK, _PINGREQ, _PINGRESP, _DISCONNECT, _AUTH)
)
#: SUBACK return codes: 3.x granted QoS / failure, and the 5.0 reason codes.
_SUBACK_CODES = frozenset((0, 1, 2, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2))
#: UNSUBACK reason codes (5.0).
_UNSUBACK_CODES = frozenset((0, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91))


def _mqtt(buf: bytes) -> str | None:
    """The topic ("" when none) if buf starts with a convincing MQTT control packet, else None."""
    b0 = buf[0]
    typ = b0 >> 4
    vi = _varint(buf, 1)
    if vi is None:
        return None
    remaining, pos = vi
    if b0 == 0x10:
        return "" if _mqtt_connect(buf, pos, remaining) else None
    if typ == 3:
        return _mqtt_publish(buf, b0, pos, remaining)
    if b0 == 0x82 or b0 == 0xA2:
        filters = _mqtt_subscribe(buf, pos, remaining, b0 == 0x82)
        return filters[0] if filters else None
    if b0 in _SHORT_PACKETS:
        return _mqtt_run(buf)
    return None


def _mqtt_connect(buf: bytes, pos: int, remaining: int) -> bool:
    """CONNECT: protocol name MQIsdp (level 3) or MQTT (level 4/5), reserved flag bit clear."""
    if remaining < 10:
        return False
    name = buf[pos : pos + 8]
    if name[:6] == b"\x00\x04MQTT":
        level_at = pos + 6
        levels = (4, 5)
    elif name[:8] == b"\x00\x06MQIsdp":
        level_at = pos + 8
        levels = (3,)
    else:
        return False
    if level_at >= len(buf):
        return True  # the name alone is proof enough when sampling cut the rest
    if buf[level_at] & 0x7F not in levels:  # 0x80 bit: bridge flag some brokers set
        return False
    if level_at + 1 < len(buf) and buf[level_at + 1] & 0x01:  # reserved connect flag must be 0
        return False
    return True


def _mqtt_publish(buf: bytes, b0: int, pos: int, remaining: int) -> str | None:
    """PUBLISH: QoS 0-2, topic length within the remaining length, clean topic, present in the bytes."""
    qos = (b0 >> 1) & 3
    if qos == 3 or pos + 2 > len(buf):
        return None
    tlen = buf[pos] << 8 | buf[pos + 1]
    need = 2 + tlen + (2 if qos else 0)
    if tlen == 0 or need > remaining:
        # 5.0 allows an empty topic with a topic alias, but that is indistinguishable from noise: not claimed
        return None
    end = pos + 2 + tlen
    if end > len(buf):
        return None  # topic cut by the capture: no proof
    topic = _clean_topic(buf[pos + 2 : end], wildcards=False)
    if topic is None:
        return None
    if qos and end + 2 <= len(buf) and buf[end] == 0 and buf[end + 1] == 0:
        return None  # packet identifier 0 is invalid for QoS > 0
    return topic


def _mqtt_subscribe(buf: bytes, pos: int, remaining: int, with_options: bool) -> list[str] | None:
    """SUBSCRIBE/UNSUBSCRIBE: packet id, then topic filters in the 3.x or the 5.0 (properties) layout.

    Returns the filters present in the bytes (at least one), or None when the packet does not check out.
    """
    if remaining < 5 or pos + 2 > len(buf):
        return None
    if buf[pos] == 0 and buf[pos + 1] == 0:
        return None  # packet identifier 0 is invalid
    body = pos + 2
    limit = pos + remaining
    # 3.x: the filters follow the packet identifier; 5.0: a property length (variable byte integer) comes first
    starts = [body]
    vi = _varint(buf, body)
    if vi is not None:
        starts.append(vi[1] + vi[0])
    for at in starts:
        filters: list[str] = []
        while at < limit:
            found = _mqtt_filter(buf, at, limit, with_options)
            if found is None:
                break
            filters.append(found)
            at += 2 + len(found.encode("utf-8")) + (1 if with_options else 0)
        if filters:
            return filters
    return None


def _mqtt_filter(buf: bytes, at: int, limit: int, with_options: bool) -> str | None:
    if at + 2 > len(buf):
        return None
    flen = buf[at] << 8 | buf[at + 1]
    end = at + 2 + flen
    if flen == 0 or end + (1 if with_options else 0) > limit or end > len(buf):
        return None
    topic = _clean_topic(buf[at + 2 : end], wildcards=True)
    if topic is None:
        return None
    if with_options and end < len(buf) and buf[end] & 0xC0:  # reserved option bits
        return None
    return topic


def _props_end(buf: bytes, at: int, end: int) -> bool:
    """Whether a 5.0 property length at ``at`` makes the properties end exactly at ``end``."""
    vi = _varint(buf, at)
    return vi is not None and vi[1] + vi[0] == end


def _short_packet(buf: bytes, b0: int, body: int, end: int) -> bool:
    """A complete short control packet buf[body:end] of type b0, in the 3.x or the 5.0 layout."""
    n = end - body
    if b0 in (_PINGREQ, _PINGRESP):
        return n == 0
    if b0 in (_DISCONNECT, _AUTH):  # 5.0: optional reason code, then properties
        return n == 0 or (n == 1 and b0 == _DISCONNECT) or (n >= 2 and _props_end(buf, body + 1, end))
    if b0 == _CONNACK:  # acknowledge flags (bit 0 only), return/reason code, 5.0 properties
        if n < 2 or buf[body] > 1:
            return False
        return (n == 2 and buf[body + 1] <= 5) or (n >= 3 and _props_end(buf, body + 2, end))
    if b0 in (_PUBACK, _PUBREC, _PUBREL, _PUBCOMP):  # packet id, 5.0 reason code and properties
        if n < 2 or (buf[body] == 0 and buf[body + 1] == 0):
            return False
        return n in (2, 3) or _props_end(buf, body + 3, end)
    if b0 == _UNSUBACK:
        if n < 2 or (buf[body] == 0 and buf[body + 1] == 0):
            return False
        if n == 2:
            return True
        vi = _varint(buf, body + 2)
        if vi is None or vi[1] + vi[0] >= end:
            return False
        return all(c in _UNSUBACK_CODES for c in buf[vi[1] + vi[0] : end])
    if b0 == _SUBACK:
        if n < 3 or (buf[body] == 0 and buf[body + 1] == 0):
            return False
        if all(c in _SUBACK_CODES for c in buf[body + 2 : end]):
            return True
        vi = _varint(buf, body + 2)
        if vi is None or vi[1] + vi[0] >= end:
            return False
        return all(c in _SUBACK_CODES for c in buf[vi[1] + vi[0] : end])
    return False


def _mqtt_run(buf: bytes) -> str | None:
    """Topic ("" if none) when buf is a run of well-formed MQTT control packets (keepalives, acks, ...), else None.

    Every packet must be complete, except a last PUBLISH/SUBSCRIBE/CONNECT cut by the capture, which must then
    pass its own checks on the bytes present.
    """
    pos = 0
    n = len(buf)
    topic = ""
    while pos < n:
        b0 = buf[pos]
        long_packet = b0 >> 4 == 3 or b0 in (0x82, 0xA2, 0x10)
        vi = _varint(buf, pos + 1)
        if vi is None:
            return _mqtt(buf[pos:]) if long_packet and pos else None
        remaining, body = vi
        end = body + remaining
        if b0 in _SHORT_PACKETS:
            if end > n or not _short_packet(buf, b0, body, end):
                return None
        elif long_packet:
            found = _mqtt(buf[pos : min(end, n)])
            if found is None:
                return None
            topic = topic or found
        else:
            return None
        pos = end
    return topic


# --- AMQP ---

# AMQP 0-9-1 class id -> valid method ids
_AMQP_METHODS = {
    10: {10, 11, 20, 21, 30, 31, 40, 41, 50, 51, 60, 61},  # connection (60/61 blocked/unblocked)
    20: {10, 11, 20, 21, 40, 41},  # channel
    30: {10, 11},  # access (0-8)
    40: {10, 11, 20, 21, 30, 31, 40, 51},  # exchange
    50: {10, 11, 20, 21, 30, 31, 40, 41, 50, 51},  # queue
    60: {10, 11, 20, 21, 30, 31, 40, 50, 51, 60, 70, 71, 72, 80, 90, 100, 110, 111, 120},  # basic
    85: {10, 11},  # confirm
    90: {10, 11, 20, 21, 30, 31},  # tx
}
_AMQP_FRAME_END = 0xCE
_AMQP_MAX_FRAME = 1 << 24  # far above any negotiated frame_max in practice


def _amqp_header(buf: bytes) -> bool:
    """The 8-byte protocol header: AMQP + protocol id (0 AMQP, 2 TLS, 3 SASL; 1 for 0-8/0-9) + version bytes."""
    if len(buf) < 5:
        return len(buf) == 4
    if buf[4] not in (0, 1, 2, 3):
        return False
    if len(buf) >= 8:
        tail = bytes(buf[4:8])
        return tail in (b"\x00\x00\x09\x01", b"\x01\x01\x00\x09", b"\x01\x01\x09\x01", b"\x01\x01\x08\x00") or (
            tail[0] in (0, 2, 3) and tail[1:3] == b"\x01\x00"
        )
    return True


def _amqp_frame(buf: bytes) -> bool:
    """Whether buf starts with a convincing AMQP 0-9-1 frame (or is exactly a run of complete frames)."""
    pos = 0
    n = len(buf)
    seen = 0
    while pos + 7 <= n:
        ftype = buf[pos]
        size = int.from_bytes(buf[pos + 3 : pos + 7], "big")
        if ftype not in (1, 2, 3, 8) or size >= _AMQP_MAX_FRAME:
            return False
        end = pos + 7 + size
        body = pos + 7
        complete = end < n
        if complete and buf[end] != _AMQP_FRAME_END:
            return False
        if ftype == 1:
            if size < 4 or body + 4 > n:
                return False
            cls = buf[body] << 8 | buf[body + 1]
            meth = buf[body + 2] << 8 | buf[body + 3]
            if meth not in _AMQP_METHODS.get(cls, ()):
                return False
            if not complete:
                return True  # a known method with a plausible size, cut by the capture
        elif ftype == 2:
            if size < 14 or body + 4 > n:
                return False
            cls = buf[body] << 8 | buf[body + 1]
            if cls not in _AMQP_METHODS or buf[body + 2] or buf[body + 3]:  # weight must be 0
                return False
            if not complete:
                return True
        elif ftype == 8:
            if size or (buf[pos + 1] or buf[pos + 2]):  # heartbeats are empty, on channel 0
                return False
        elif not complete:
            return seen > 0  # a body frame cut short proves nothing by itself
        seen += 1
        pos = end + 1
    return seen > 0 and pos == n


_AMQP10_PERFORMATIVES = set(range(0x10, 0x19)) | set(range(0x40, 0x45))


def _amqp10_frame(buf: bytes) -> bool:
    """An AMQP 1.0 frame: size, data offset >= 2, type 0 (AMQP) or 1 (SASL), a described performative."""
    if len(buf) < 8:
        return False
    size = int.from_bytes(buf[0:4], "big")
    doff = buf[4]
    ftype = buf[5]
    if size < 8 or size >= _AMQP_MAX_FRAME or doff < 2 or ftype > 1 or doff * 4 > size:
        return False
    if size == 8:  # empty frame (heartbeat): only when that is the whole payload
        return len(buf) == 8 and doff == 2 and ftype == 0
    at = doff * 4
    if at + 3 > len(buf) or buf[at] != 0x00:
        return False
    if buf[at + 1] == 0x53:  # smallulong descriptor
        code = buf[at + 2]
    elif buf[at + 1] == 0x80 and at + 10 <= len(buf):  # ulong descriptor
        if buf[at + 2 : at + 9] != b"\x00" * 7:
            return False
        code = buf[at + 9]
    else:
        return False
    if code not in _AMQP10_PERFORMATIVES:
        return False
    return (code >= 0x40) == (ftype == 1)  # SASL performatives only in SASL frames


# --- text ---

_STOMP_COMMANDS = frozenset(
    b"CONNECT STOMP SEND SUBSCRIBE UNSUBSCRIBE ACK NACK BEGIN COMMIT ABORT DISCONNECT "
    b"CONNECTED MESSAGE RECEIPT ERROR".split()
)
_XMPP_STREAM = (b"<stream:stream", b"<stream:features", b"</stream:stream", b"<stream:error")
_XMPP_STANZAS = (b"<iq", b"<message", b"<presence")
_XMPP_NS = (b"jabber:", b"urn:ietf:params:xml:ns:xmpp", b"http://etherx.jabber.org/streams")


def _text(buf: bytes) -> int:
    """Recognise the line/XML protocols (NATS, STOMP, XMPP) and the MQTT WebSocket upgrade."""
    c = buf[0]
    if c == 0x3C:  # '<'
        return XMPP if _xmpp(buf) else 0
    if c == 0x47 or c == 0x48:  # 'G' / 'H'
        if _mqtt_websocket(buf):
            return MQTT_WS
    nats = _nats(buf)
    if nats:
        return NATS
    return STOMP if _stomp(buf) else 0


def _xmpp(buf: bytes) -> bool:
    head = buf[:512]
    if head.startswith(b"<?xml"):
        return any(m in head for m in _XMPP_STREAM) or any(m in head for m in _XMPP_NS)
    if head.startswith(_XMPP_STREAM):
        return True
    for tag in _XMPP_STANZAS:
        if head.startswith(tag) and len(head) > len(tag) and head[len(tag)] in b" >/\t\r\n":
            return True
    if head[:1] == b"<" and any(m in head for m in _XMPP_NS[1:]):  # starttls, sasl, bind, session elements
        return True
    return False


def _lines(buf: bytes, limit: int = 2048) -> list[bytes]:
    return buf[:limit].split(b"\n")


def _mqtt_websocket(buf: bytes) -> bool:
    """An HTTP upgrade to WebSocket for MQTT (request or 101 answer)."""
    head = buf[:4096]
    lines = head.split(b"\r\n")
    first = lines[0]
    headers = {}
    complete = b"\r\n\r\n" in head
    for line in lines[1:]:
        if not line:
            break
        name, sep, value = line.partition(b":")
        if sep:
            headers[name.strip().lower()] = value.strip().lower()
    proto = headers.get(b"sec-websocket-protocol", b"")
    names_mqtt = any(p.strip().startswith(b"mqtt") for p in proto.split(b","))
    if first.startswith(b"HTTP/1.1 101"):
        return names_mqtt
    if not first.startswith(b"GET "):
        return False
    if len(lines) > 1 and not first.endswith((b" HTTP/1.1", b" HTTP/1.0")):
        return False
    parts = first.split(b" ")
    if len(parts) < 2:
        return False
    upgrade = headers.get(b"upgrade", b"") == b"websocket"
    if names_mqtt and (upgrade or not complete or b"sec-websocket-key" in headers):
        return True
    path = parts[1].split(b"?", 1)[0]
    return path == b"/mqtt" and (upgrade or not complete)


#: Bytes of a WebSocket frame's payload unmasked and checked (enough for an MQTT fixed header and topic).
_WS_PEEK = 512


def _websocket_mqtt(buf: bytes) -> str | None:
    """Topic ("" if none) when buf is a WebSocket binary frame whose (unmasked) payload starts an MQTT packet.

    MQTT over WebSocket (MQTT 5.0 section 6) sends MQTT packets in binary frames; clients mask their frames, so
    the payload is XORed with the 4-byte key before the MQTT checks. Extensions (RSV bits) are not expected.
    """
    n = len(buf)
    if n < 4 or buf[0] & 0x70:
        return None
    masked = buf[1] & 0x80
    length = buf[1] & 0x7F
    pos = 2
    if length == 126:
        if n < 4:
            return None
        length = buf[2] << 8 | buf[3]
        pos = 4
        if length < 126:
            return None  # non-minimal length encoding
    elif length == 127:
        if n < 10 or buf[2] & 0x80:
            return None
        length = int.from_bytes(buf[2:10], "big")
        pos = 10
        if length < 65536:
            return None
    if length < 2:
        return None
    if masked:
        if pos + 4 > n:
            return None
        key = buf[pos : pos + 4]
        pos += 4
        data = buf[pos : pos + min(length, _WS_PEEK)]
        data = bytes(c ^ key[i & 3] for i, c in enumerate(data))
    else:
        data = buf[pos : pos + min(length, _WS_PEEK)]
    if len(data) < 2 or data[0] < 0x10:
        return None
    return _mqtt(data)


def _nats(buf: bytes) -> bool:
    """A NATS protocol line (client or server) at the start of the payload."""
    if buf.startswith((b"INFO {\"", b"CONNECT {\"")):
        return True
    if buf in (b"PING\r\n", b"PONG\r\n"):
        return True
    if buf.startswith(b"-ERR '"):
        return True
    if buf.startswith((b"PING\r\n", b"PONG\r\n", b"+OK\r\n")):
        # keepalives/acks coalesced with a following line: judge the next line
        rest = buf[buf.index(b"\n") + 1 :]
        return bool(rest) and _nats(rest)
    eol = buf.find(b"\r\n", 0, 1024)
    if eol < 0:
        return False
    tokens = buf[:eol].split(b" ")
    op = tokens[0]
    args = [t for t in tokens[1:] if t]
    if len(args) + 1 != len(tokens):
        return False  # NATS clients separate with single spaces; doubled spaces are something else
    if not all(_nats_token(t) for t in args):
        return False
    if op == b"PUB":
        return len(args) in (2, 3) and args[-1].isdigit()
    if op == b"HPUB":
        return len(args) in (3, 4) and args[-1].isdigit() and args[-2].isdigit()
    if op == b"SUB":
        return len(args) in (2, 3)
    if op == b"UNSUB":
        return len(args) in (1, 2) and (len(args) == 1 or args[1].isdigit())
    if op == b"MSG":
        return len(args) in (3, 4) and args[-1].isdigit()
    if op == b"HMSG":
        return len(args) in (4, 5) and args[-1].isdigit() and args[-2].isdigit()
    return False


def _nats_token(tok: bytes) -> bool:
    return all(0x21 <= c <= 0x7E for c in tok)


def _stomp(buf: bytes) -> bool:
    """A STOMP frame: command line, then a header line (name:value) or the blank line ending the headers."""
    pos = 0
    while pos < 8 and pos < len(buf) and buf[pos] in b"\r\n":  # heart-beat EOLs between frames
        pos += 1
    eol = buf.find(b"\n", pos, pos + 16)
    if eol < 0:
        return False
    command = buf[pos:eol].rstrip(b"\r")
    exact = command in _STOMP_COMMANDS
    if not exact and command.upper() not in _STOMP_COMMANDS:
        return False
    nxt_end = buf.find(b"\n", eol + 1, eol + 1 + 1024)
    nxt = buf[eol + 1 : nxt_end if nxt_end >= 0 else len(buf)].rstrip(b"\r")
    if nxt_end >= 0 and nxt == b"":
        return exact  # no headers (allowed for a few commands); a lower-case command needs a header as proof
    name, sep, _ = nxt.partition(b":")
    return bool(sep) and bool(name) and all(0x21 <= c <= 0x7E and c != 0x3A for c in name)
