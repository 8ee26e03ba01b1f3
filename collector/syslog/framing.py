"""Incremental framing of syslog over a TCP byte stream: RFC 6587 octet counting and LF framing, told apart per frame.

A sender either prefixes each message with its length (``MSG-LEN SP SYSLOG-MSG``, RFC 6587 §3.4.1, also what
RFC 5425 TLS requires) or ends it with a newline (§3.4.2, "non-transparent framing", what most firewalls send).
Both arrive on the same port, so the method is decided at every frame start: digits, a space and then ``<`` (the
PRI every octet-counted message starts with) is a length prefix; anything else runs to the next LF. Requiring the
``<`` keeps a headerless line that happens to start with digits and a space (``2018 Apr 09 ...``) LF-framed.

Memory is bounded: a message longer than ``max_message`` is cut to that many bytes and counted, and the rest of it
is skipped as it arrives (an endless line never grows the buffer past ``max_message``). Pure: no sockets, no time.
"""

from __future__ import annotations

#: Default largest message kept whole (RFC 5425 asks receivers for at least 2048 octets, and recommends 8192).
MAX_MESSAGE = 16384
#: Digits accepted in an octet-count prefix (a 10-digit length is already > 4 GiB).
_MAX_LEN_DIGITS = 10


class SyslogFramer:
    """Splits a TCP stream into syslog messages; ``feed(data)`` returns the messages completed by data."""

    def __init__(self, max_message: int = MAX_MESSAGE):
        self.max_message = max_message
        self._buf = bytearray()
        self._skip = 0  # octet-counted bytes still to drop of a cut message
        self._discard_line = False  # dropping the rest of a cut LF-framed line
        #: Messages cut to max_message (their tail dropped).
        self.cut = 0
        #: Octet-counted frames and LF-framed lines delivered, for accounting.
        self.octet_counted = 0
        self.lf_framed = 0
        #: Bad length prefixes (zero length): the frame is read as LF-framed instead.
        self.bad_length = 0

    def feed(self, data: bytes) -> list[bytes]:
        """The complete messages in data together with what earlier calls left over (trailing CR/LF removed)."""
        out: list[bytes] = []
        if self._skip:
            n = min(self._skip, len(data))
            self._skip -= n
            data = data[n:]
        buf = self._buf
        buf += data
        pos = 0
        end = len(buf)
        while pos < end:
            if self._discard_line:
                nl = buf.find(b"\n", pos)
                if nl < 0:
                    pos = end
                    break
                pos = nl + 1
                self._discard_line = False
                continue
            c = buf[pos]
            if 0x30 <= c <= 0x39:  # a digit: maybe an octet count
                i = pos
                while i < end and i - pos <= _MAX_LEN_DIGITS and 0x30 <= buf[i] <= 0x39:
                    i += 1
                ndigits = i - pos
                if ndigits <= _MAX_LEN_DIGITS and (i == end or (buf[i] == 0x20 and i + 1 == end)):
                    break  # need more bytes to decide
                if ndigits <= _MAX_LEN_DIGITS and buf[i] == 0x20 and buf[i + 1] == 0x3C:  # "LEN <": octet counted
                    length = int(buf[pos:i])
                    start = i + 1
                    if length == 0:
                        self.bad_length += 1
                    elif length > self.max_message:
                        if end - start < self.max_message:
                            break
                        out.append(bytes(buf[start:start + self.max_message]))
                        self.cut += 1
                        self.octet_counted += 1
                        if length > end - start:
                            self._skip = length - (end - start)
                            pos = end
                        else:
                            pos = start + length
                        continue
                    else:
                        if end - start < length:
                            break
                        out.append(_strip(bytes(buf[start:start + length])))
                        self.octet_counted += 1
                        pos = start + length
                        continue
            # LF framing.
            nl = buf.find(b"\n", pos, min(end, pos + self.max_message + 1))
            if nl < 0:
                if end - pos > self.max_message:
                    out.append(bytes(buf[pos:pos + self.max_message]))
                    self.cut += 1
                    self.lf_framed += 1
                    self._discard_line = True
                    pos += self.max_message
                    continue
                break
            msg = _strip(bytes(buf[pos:nl]))
            if msg:
                out.append(msg)
                self.lf_framed += 1
            pos = nl + 1
        del buf[:pos]
        return out

    def flush(self) -> list[bytes]:
        """What is left when the connection closes: an unterminated last line is a message too."""
        if self._discard_line or not self._buf:
            self._buf.clear()
            self._discard_line = False
            return []
        rest = _strip(bytes(self._buf))
        self._buf.clear()
        if not rest:
            return []
        self.lf_framed += 1
        return [rest]

    @property
    def buffered(self) -> int:
        """Bytes held waiting for the rest of a message (never more than max_message + a length prefix)."""
        return len(self._buf)


def _strip(msg: bytes) -> bytes:
    return msg.rstrip(b"\r\n\x00")
