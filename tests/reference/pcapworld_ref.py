"""Plain-Python twin of bench/detection/pcapworld.py's `assemble` kernel: headers, payload pieces, L4 checksum."""

from __future__ import annotations


def checksum(data: bytes) -> int:
    """RFC 1071 Internet checksum of data."""
    if len(data) % 2:
        data += b"\x00"
    s = sum(int.from_bytes(data[k:k + 2], "big") for k in range(0, len(data), 2))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return 0xFFFF - s


def assemble(hdr, hlen, pool, pre_off, pre_len, body_off, body_len, suf_off, suf_len) -> bytes:
    """The pcap records (record header, frame) of each packet, concatenated."""
    pool = bytes(pool)
    out = bytearray()
    for i in range(len(hlen)):
        rec = bytearray(bytes(hdr[i][:hlen[i]]))
        rec += pool[pre_off[i]:pre_off[i] + pre_len[i]] + pool[body_off[i]:body_off[i] + body_len[i]]
        rec += pool[suf_off[i]:suf_off[i] + suf_len[i]]
        ip_hdr, l4 = rec[30:50], bytes(rec[50:])
        proto = ip_hdr[9]
        pseudo = ip_hdr[12:20] + bytes([0, proto]) + len(l4).to_bytes(2, "big")
        c = checksum(pseudo + l4)
        if proto == 17 and c == 0:
            c = 0xFFFF
        at = 50 + (16 if proto == 6 else 6)
        rec[at:at + 2] = c.to_bytes(2, "big")
        out += rec
    return bytes(out)
