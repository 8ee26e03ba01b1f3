"""IPFIX decoder (RFC 7011) and a framer for IPFIX over TCP.

Templates are scoped by (exporter, observation domain, template id); enterprise elements keep their PEN apart from
IANA ids; variable-length fields, reduced-size encoding, padding, withdrawal (one template or all of a kind) and
refresh are handled by ``templates.TemplateFlowDecoder``. The sequence number counts data records per
(exporter, observation domain), so the next message is expected at sequence + the data records of this one.
"""

from __future__ import annotations

import struct


from collector.flows.decoders import DecodeError
from collector.flows.templates import TemplateFlowDecoder, TemplateOp, parse_ipfix_template_set

IPFIX_HEADER = 16


class IpfixDecoder(TemplateFlowDecoder):
    """Decodes IPFIX messages; counts sequence gaps per (exporter, observation domain) in data records."""

    name = "ipfix"
    version = 10
    metric = "ipfix"

    def _parse_template_set(self, data: bytes, set_id: int) -> list[TemplateOp]:
        return parse_ipfix_template_set(data, set_id)

    def _account_sequences(self, ex_hi, ex_lo, hdr, records, unknown) -> None:
        # A message with records of an unknown template: their count is unknown, so expect nothing next.
        self._account(ex_hi, ex_lo, hdr, records, unknown)


class IpfixStreamFramer:
    """Splits an IPFIX-over-TCP byte stream into messages by the header's length field (RFC 7011 10.4.1).

    ``feed(chunk)`` returns the complete messages so far and keeps the rest. A header that is not IPFIX, a length
    below the header size, or more than ``max_buffer`` bytes waiting raises DecodeError: the stream cannot be
    resynchronised and the connection should be closed.
    """

    def __init__(self, max_message: int = 65535, max_buffer: int = 1 << 20):
        self.max_message = max_message
        self.max_buffer = max_buffer
        self._buf = bytearray()

    def feed(self, chunk: bytes) -> list[bytes]:
        """Messages completed by this chunk, in order."""
        self._buf += chunk
        out: list[bytes] = []
        while len(self._buf) >= 4:
            version, length = struct.unpack_from(">HH", self._buf, 0)
            if version != 10:
                raise DecodeError("bad_version", f"IPFIX stream: version {version}")
            if length < IPFIX_HEADER or length > self.max_message:
                raise DecodeError("bad_length", f"IPFIX stream: message length {length}")
            if len(self._buf) < length:
                break
            out.append(bytes(self._buf[:length]))
            del self._buf[:length]
        if len(self._buf) > self.max_buffer:
            raise DecodeError("oversized", f"IPFIX stream: {len(self._buf)} bytes buffered")
        return out

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete message waiting for the rest."""
        return len(self._buf)
