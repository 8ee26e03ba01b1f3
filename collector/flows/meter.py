"""The built-in flow meter: raw packets (a capture or a live interface) into bidirectional flows, in blocks.

Two numba kernels do the work per block of packets, with no Python object per packet:

- ``parse_packets``: link layer (Ethernet with 802.1Q/QinQ tags and MPLS labels, Linux SLL/SLL2, BSD loopback, raw
  IP), IPv4 (fragments: the first keeps its ports, the others have none, as softflowd does) and IPv6 (extension
  headers), and the inner headers of tunnels: GRE (IPv4/IPv6 or transparent Ethernet inside), VXLAN (UDP 4789),
  IP-in-IP and IPv6-in-IPv4. A tunnelled packet is metered by its innermost header: the flow is the conversation
  inside the tunnel, which is what a pub/sub analysis needs, while softflowd meters the tunnel itself. Bytes are
  the (innermost) IP packet's own length; softflowd counts the frame less its link header, which adds the Ethernet
  padding of frames shorter than 60 bytes.
- ``meter_packets``: a flow table (open addressing over a slot pool) keyed by the unordered pair of endpoints and
  the protocol, so both directions of a conversation meet in one flow. The initiator (the client) is, by strength:
  the sender of a SYN without ACK (or the receiver of a SYN+ACK); the side that sent a known protocol's client
  message (MQTT CONNECT, TLS ClientHello, an HTTP request: set by the L7 stage after the kernel); the side whose port
  is not in the server port list while the other's is; the side with the higher port when the other is a well-known
  one (< 1024); else the sender of the first packet. Timeouts are softflowd's (``MeterParams``): per flow an expiry
  time recomputed on every packet (RST, FIN both ways, TCP, UDP, ICMP, general; capped by the maximum life), checked
  every ``expint`` seconds of packet time; what is left leaves at ``flush``. A full table force-expires the flows
  that would expire first (an eighth of the table), as softflowd does.

Each expired flow becomes one ``FLOW_RECORD`` (both directions' bytes, packets and TCP flags, which side is the
client), and ``flows_to_rows`` turns them into FLOW_DTYPE rows oriented client → server: ``bytes``/``packets`` are
the client's, the server's direction is kept in the same flow (``reverse_bytes``/``reverse_packets`` of the record;
in the row when the schema carries reverse counters), TCP flags are both directions'.

The kernel also marks, per packet, whether its payload should go to the L7 stage: the first ``l7_packets`` payload
packets of each direction of a flow (the L7 stage reassembles them, bounded, per flow: collector/l7/evidence.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from analytics.schema import FLOW_DTYPE

#: Per-packet status of ``parse_packets`` → the reason counted (0 = metered).
PARSE_REASONS = ("", "not_ip", "truncated", "bad_ip_header", "unknown_link_type")
#: Tunnel kinds recorded per packet (0 = none).
TUNNELS = ("", "gre", "vxlan", "ipip", "mpls")

#: Linux "cooked" and other link types (pcap LINKTYPE_* values).
_LT_NULL, _LT_ETH, _LT_RAW, _LT_LOOP, _LT_SLL, _LT_IPV4, _LT_IPV6, _LT_SLL2 = 0, 1, 101, 108, 113, 228, 229, 276
_VXLAN_PORT = 4789
_MAX_DEPTH = 4  # encapsulation levels followed (a packet nesting deeper is metered at the 4th)

#: One parsed packet (the columns ``parse_packets`` fills).
PACKET_DTYPE = np.dtype([
    ("src_hi", np.uint64), ("src_lo", np.uint64), ("dst_hi", np.uint64), ("dst_lo", np.uint64),
    ("ts_ns", np.int64), ("bytes", np.uint32), ("pay_off", np.int64), ("pay_len", np.int32),
    ("sport", np.uint16), ("dport", np.uint16), ("proto", np.uint8), ("tcp_flags", np.uint8),
    ("status", np.uint8), ("tunnel", np.uint8),
])

#: One flow leaving the meter; side 0 is the endpoint that sorts first (address, then port).
FLOW_RECORD = np.dtype([
    ("start_ns", np.int64), ("end_ns", np.int64),
    ("a_hi", np.uint64), ("a_lo", np.uint64), ("b_hi", np.uint64), ("b_lo", np.uint64),
    ("bytes_a", np.uint64), ("bytes_b", np.uint64), ("packets_a", np.uint64), ("packets_b", np.uint64),
    ("seq", np.uint64), ("expires_ns", np.int64),
    ("a_port", np.uint16), ("b_port", np.uint16), ("proto", np.uint8),
    ("flags_a", np.uint8), ("flags_b", np.uint8),
    ("client", np.uint8),  # 0: side a initiated, 1: side b
    ("strength", np.uint8),  # evidence for the client: see CLIENT_BY
    ("reason", np.uint8),  # EXPIRY_REASONS
    ("l7_a", np.uint8), ("l7_b", np.uint8),  # payload packets handed to the L7 stage per direction
    ("follow", np.uint8),  # set by the L7 stage: hand over every payload packet (an MQTT session's messages)
])

#: What decided the client side (the ``strength`` of a flow; higher wins).
CLIENT_BY = ("first_packet", "port_range", "server_port", "l7", "syn")
S_FIRST, S_RANGE, S_PORT, S_L7, S_SYN = range(5)

#: Why a flow left the table (softflowd's expiry reasons).
EXPIRY_REASONS = ("", "tcp_rst", "tcp_fin", "tcp_idle", "udp_idle", "icmp_idle", "general_idle", "maxlife",
                  "overbytes", "table_full", "end")
R_RST, R_FIN, R_TCP, R_UDP, R_ICMP, R_GENERAL, R_MAXLIFE, R_OVERBYTES, R_FULL, R_END = range(1, 11)

NS = 1_000_000_000
#: Bits of the kernel's per-packet L7 marks (see meter_packets).
TAKE_FOLLOWED = 4
TAKE_FROM_CLIENT = 8
TAKE_SLOT_SHIFT = 4


@dataclass(frozen=True)
class MeterParams:
    """Timeouts in seconds (softflowd's ``-t`` names and defaults) and the table size."""

    tcp: float = 3600.0  # idle timeout of a TCP flow
    tcp_rst: float = 120.0  # after a RST
    tcp_fin: float = 300.0  # after a FIN in both directions
    udp: float = 300.0
    icmp: float = 300.0
    general: float = 3600.0
    maxlife: float = 604800.0  # active timeout: a flow older than this leaves at the next check
    expint: float = 60.0  # how often expiry is checked (packet time); 0: never on time (softflowd reading a file)
    max_flows: int = 262144  # table size; a full table force-expires the earliest-expiring eighth
    l7_packets: int = 4  # payload packets per direction handed to the L7 stage

    def timeouts_ns(self) -> np.ndarray:
        """The timeouts as int64 ns in the kernel's order."""
        return np.array([self.tcp, self.tcp_rst, self.tcp_fin, self.udp, self.icmp, self.general, self.maxlife,
                         self.expint], dtype=np.float64).__mul__(NS).astype(np.int64)


# ----------------------------------------------------------------------------------------------- packet parsing


@numba.njit(cache=True, inline="always")
def _u16(b, o):
    return (np.uint32(b[o]) << np.uint32(8)) | np.uint32(b[o + 1])


@numba.njit(cache=True, inline="always")
def _word(b, o):
    v = np.uint64(0)
    for k in range(8):
        v = (v << np.uint64(8)) | np.uint64(b[o + k])
    return v


@numba.njit(cache=True, inline="always")
def _v4(b, o):
    return np.uint64(0x0000FFFF00000000) | (np.uint64(b[o]) << np.uint64(24)) | (np.uint64(b[o + 1]) << np.uint64(16)) \
        | (np.uint64(b[o + 2]) << np.uint64(8)) | np.uint64(b[o + 3])


@numba.njit(cache=True)
def _parse_one(buf, p, end, linktype, out):
    """Fill out (a PACKET_DTYPE record) from the frame buf[p:end]; returns the status code."""
    eth = False
    if linktype == _LT_ETH:
        eth = True
    elif linktype == _LT_RAW or linktype == _LT_IPV4 or linktype == _LT_IPV6:
        pass
    elif linktype == _LT_NULL or linktype == _LT_LOOP:
        p += 4
    elif linktype == _LT_SLL:
        if end - p < 16:
            return 2
        et = _u16(buf, p + 14)
        if et != 0x0800 and et != 0x86DD:
            return 1
        p += 16
    elif linktype == _LT_SLL2:
        if end - p < 20:
            return 2
        et = _u16(buf, p)
        if et != 0x0800 and et != 0x86DD:
            return 1
        p += 20
    else:
        return 4
    for depth in range(_MAX_DEPTH):
        if eth:
            if end - p < 14:
                return 2
            et = _u16(buf, p + 12)
            p += 14
            while (et == 0x8100 or et == 0x88A8 or et == 0x9100) and p + 4 <= end:
                et = _u16(buf, p + 2)
                p += 4
            if et == 0x8847 or et == 0x8848:  # MPLS: labels to the bottom of the stack, then IP by version
                while p + 4 <= end and not (buf[p + 2] & 1):
                    p += 4
                p += 4
                out["tunnel"] = 4
                if p >= end:
                    return 2
                v = buf[p] >> 4
                et = 0x0800 if v == 4 else (0x86DD if v == 6 else 0)
            if et != 0x0800 and et != 0x86DD:
                return 1
            eth = False
        if end - p < 1:
            return 2
        ver = buf[p] >> 4
        first = True
        if ver == 4:
            if end - p < 20:
                return 2
            ihl = (buf[p] & 0x0F) * 4
            total = _u16(buf, p + 2)
            if ihl < 20 or total < ihl:
                return 3
            if end - p < ihl:
                return 2
            frag = _u16(buf, p + 6)
            first = (frag & 0x1FFF) == 0
            proto = buf[p + 9]
            out["src_hi"] = 0
            out["src_lo"] = _v4(buf, p + 12)
            out["dst_hi"] = 0
            out["dst_lo"] = _v4(buf, p + 16)
            out["bytes"] = total
            l4 = p + ihl
            l4_end = min(p + total, end)
        elif ver == 6:
            if end - p < 40:
                return 2
            plen = _u16(buf, p + 4)
            proto = buf[p + 6]
            out["src_hi"] = _word(buf, p + 8)
            out["src_lo"] = _word(buf, p + 16)
            out["dst_hi"] = _word(buf, p + 24)
            out["dst_lo"] = _word(buf, p + 32)
            out["bytes"] = 40 + plen
            l4 = p + 40
            l4_end = min(p + 40 + plen, end) if plen else end
            while (proto == 0 or proto == 43 or proto == 60 or proto == 44 or proto == 51) and l4 + 8 <= l4_end:
                if proto == 44:  # fragment header: a later fragment has no transport header
                    first = first and (_u16(buf, l4 + 2) & 0xFFF8) == 0
                    proto = buf[l4]
                    l4 += 8
                elif proto == 51:  # authentication header: length in 4-byte units, minus 2
                    nxt = buf[l4]
                    l4 += (buf[l4 + 1] + 2) * 4
                    proto = nxt
                else:
                    nxt = buf[l4]
                    l4 += (buf[l4 + 1] + 1) * 8
                    proto = nxt
        else:
            return 3 if depth else 1
        out["proto"] = proto
        out["sport"] = 0
        out["dport"] = 0
        out["tcp_flags"] = 0
        out["pay_off"] = l4_end
        out["pay_len"] = 0
        if not first:
            return 0
        if proto == 6:
            if l4_end - l4 < 20:
                return 0  # a runt: addresses and protocol only (softflowd keeps it the same way)
            out["sport"] = _u16(buf, l4)
            out["dport"] = _u16(buf, l4 + 2)
            out["tcp_flags"] = buf[l4 + 13]
            doff = (buf[l4 + 12] >> 4) * 4
            if doff >= 20 and l4 + doff <= l4_end:
                out["pay_off"] = l4 + doff
                out["pay_len"] = l4_end - l4 - doff
            return 0
        if proto == 17:
            if l4_end - l4 < 8:
                return 0
            sport = _u16(buf, l4)
            dport = _u16(buf, l4 + 2)
            out["sport"] = sport
            out["dport"] = dport
            out["pay_off"] = l4 + 8
            out["pay_len"] = l4_end - l4 - 8
            if dport == _VXLAN_PORT and l4_end - l4 >= 8 + 8 + 14 and (buf[l4 + 8] & 0x08) and depth + 1 < _MAX_DEPTH:
                out["tunnel"] = 2
                p = l4 + 16
                end = l4_end
                eth = True
            else:
                return 0
        elif proto == 47:  # GRE (RFC 2784/2890): optional checksum, key and sequence words
            if l4_end - l4 < 4 or depth + 1 >= _MAX_DEPTH:
                return 0
            gflags = buf[l4]
            ptype = _u16(buf, l4 + 2)
            hl = 4 + (4 if gflags & 0x80 else 0) + (4 if gflags & 0x20 else 0) + (4 if gflags & 0x10 else 0)
            if (buf[l4 + 1] & 7) != 0 or l4 + hl > l4_end:
                return 0  # GRE version 1 (PPTP) or a cut header: meter the tunnel itself
            if ptype == 0x0800 or ptype == 0x86DD:
                out["tunnel"] = 1
                p = l4 + hl
                end = l4_end
            elif ptype == 0x6558:
                out["tunnel"] = 1
                p = l4 + hl
                end = l4_end
                eth = True
            else:
                return 0
        elif proto == 4 or proto == 41:  # IPv4 / IPv6 inside IP
            if depth + 1 >= _MAX_DEPTH:
                return 0
            out["tunnel"] = 3
            p = l4
            end = l4_end
        elif proto == 1 or proto == 58:
            if l4_end - l4 >= 2:  # ICMP type and code as the destination port, as Cisco and softflowd do
                out["dport"] = buf[l4] * 256 + buf[l4 + 1]
            return 0
        else:
            return 0
    return 0


@numba.njit(cache=True)
def parse_packets(buf, offs, caplens, linktypes, ts_ns, out):
    """Parse every frame buf[offs[i]:offs[i]+caplens[i]] into out[i] (PACKET_DTYPE)."""
    for i in range(len(offs)):
        r = out[i]
        r["tunnel"] = 0
        r["ts_ns"] = ts_ns[i]
        r["status"] = _parse_one(buf, offs[i], offs[i] + caplens[i], linktypes[i], r)


# ----------------------------------------------------------------------------------------------- the flow table


@numba.njit(cache=True, inline="always")
def _mix(x):
    x ^= x >> np.uint64(33)
    x *= np.uint64(0xFF51AFD7ED558CCD)
    x ^= x >> np.uint64(33)
    return x


@numba.njit(cache=True, inline="always")
def _hash(a_hi, a_lo, b_hi, b_lo, ports, proto):
    h = _mix(a_hi ^ np.uint64(0x9E3779B97F4A7C15))
    h = _mix(h ^ a_lo)
    h = _mix(h ^ b_hi)
    h = _mix(h ^ b_lo)
    return _mix(h ^ (ports << np.uint64(8)) ^ np.uint64(proto))


@numba.njit(cache=True)
def _expiry(f, _TO):
    """softflowd's flow_update_expiry: (the time this flow leaves the table, why); -1: at the next check."""
    if f["bytes_a"] > np.uint64(1 << 31) or f["bytes_b"] > np.uint64(1 << 31):
        return -1, R_OVERBYTES
    life = f["end_ns"] - f["start_ns"]
    if _TO[6] > 0 and life > _TO[6]:
        return -1, R_MAXLIFE
    proto = f["proto"]
    flags = f["flags_a"] | f["flags_b"]
    if proto == 6 and _TO[1] > 0 and flags & 0x04:
        at, why = f["end_ns"] + _TO[1], R_RST
    elif proto == 6 and _TO[2] > 0 and (f["flags_a"] & 0x01) and (f["flags_b"] & 0x01):
        at, why = f["end_ns"] + _TO[2], R_FIN
    elif proto == 6 and _TO[0] > 0:
        at, why = f["end_ns"] + _TO[0], R_TCP
    elif proto == 17 and _TO[3] > 0:
        at, why = f["end_ns"] + _TO[3], R_UDP
    elif (proto == 1 or proto == 58) and _TO[4] > 0:
        at, why = f["end_ns"] + _TO[4], R_ICMP
    else:
        at, why = f["end_ns"] + _TO[5], R_GENERAL
    if _TO[6] > 0 and f["start_ns"] + _TO[6] < at:
        at = f["start_ns"] + _TO[6]
        why = R_MAXLIFE
    return at, why


@numba.njit(cache=True)
def _client_by_ports(pa, pb, server_ports):
    """(client side, strength) from the ports alone."""
    sa = server_ports[pa]
    sb = server_ports[pb]
    if sa and not sb:
        return 1, S_PORT
    if sb and not sa:
        return 0, S_PORT
    if pa < 1024 and pb >= 1024:
        return 1, S_RANGE
    if pb < 1024 and pa >= 1024:
        return 0, S_RANGE
    return -1, S_FIRST


@numba.njit(cache=True)
def _emit(table, slot, out, n_out, reason):
    out[n_out] = table[slot]
    out[n_out]["reason"] = reason
    return n_out + 1


@numba.njit(cache=True)
def _insert_index(index, mask, table, slot):
    f = table[slot]
    h = _hash(f["a_hi"], f["a_lo"], f["b_hi"], f["b_lo"],
              (np.uint64(f["a_port"]) << np.uint64(16)) | np.uint64(f["b_port"]), f["proto"])
    j = np.int64(h & np.uint64(mask))
    while index[j] != 0:
        j = (j + 1) & mask
    index[j] = slot + 1


@numba.njit(cache=True)
def _rebuild(index, mask, table, used):
    index[:] = 0
    for s in range(len(table)):
        if used[s]:
            _insert_index(index, mask, table, s)


@numba.njit(cache=True)
def _sweep(table, used, free, st, out, n_out, now, everything, reason_all):
    """Emit the flows whose expiry is due at now (all of them when everything); returns the new n_out."""
    for s in range(len(table)):
        if used[s] and (everything or table[s]["expires_ns"] <= now):
            n_out = _emit(table, s, out, n_out, reason_all if everything else table[s]["reason"])
            used[s] = False
            free[st[1]] = s
            st[1] += 1
    return n_out


@numba.njit(cache=True)
def _force_expire(table, used, free, st, out, n_out):
    """A full table: emit the eighth of the flows that would expire first (softflowd's force_expire)."""
    live = np.flatnonzero(used)
    k = max(1, len(live) // 8)
    order = np.argsort(table["expires_ns"][live], kind="mergesort")[:k]
    for q in range(k):
        s = live[order[q]]
        n_out = _emit(table, s, out, n_out, R_FULL)
        used[s] = False
        free[st[1]] = s
        st[1] += 1
    return n_out


@numba.njit(cache=True)
def _mqtt_connect(buf, off, n):
    """Whether buf[off:off+n] starts with an MQTT CONNECT (protocol name MQTT or MQIsdp after the fixed header)."""
    if n < 8 or buf[off] != 0x10:
        return False
    k = 1
    while k < 5 and k < n and buf[off + k] & 0x80:
        k += 1
    k += 1
    if off + k + 8 > off + n:
        return False
    if buf[off + k] != 0:
        return False
    ln = buf[off + k + 1]
    q = off + k + 2
    if ln == 4:
        return buf[q] == 77 and buf[q + 1] == 81 and buf[q + 2] == 84 and buf[q + 3] == 84  # MQTT
    if ln == 6 and off + k + 8 <= off + n:
        return buf[q] == 77 and buf[q + 1] == 81 and buf[q + 2] == 73 and buf[q + 3] == 115  # MQIs(dp)
    return False


@numba.njit(cache=True)
def meter_packets(pk, start, table, used, index, free, st, server_ports, timeouts, l7_packets, out, take, take_seq,
                  buf):
    """Meter packets pk[start:] into the table; expired flows go to out. Returns (next packet, flows in out).

    Stops early (before a packet or a sweep) when out could overflow; the caller empties out and calls again.
    st: int64 state [next sequence, free count, next check time ns, live flows]. take[i]: when packet i's payload
    goes to the L7 stage: 1 + the side (0/1) that sent it | TAKE_FOLLOWED if the flow is followed then |
    TAKE_FROM_CLIENT if its sender is the client then | the flow's table slot << TAKE_SLOT_SHIFT (else 0), so that the
    L7 stage needs no table state (the flow may have left the table within the same block); take_seq[i]: the flow's
    sequence number.
    """
    _TO = timeouts
    mask = np.int64(len(index) - 1)
    cap = len(table)
    n_out = 0
    i = start
    n = len(pk)
    while i < n:
        p = pk[i]
        take[i] = 0
        if p["status"] != 0:
            i += 1
            continue
        t = p["ts_ns"]
        if _TO[7] > 0 and t >= st[2]:
            if n_out + st[3] > len(out):
                return i, n_out
            if st[2] != 0:
                before = st[1]
                n_out = _sweep(table, used, free, st, out, n_out, t, False, 0)
                st[3] -= st[1] - before
                if st[1] != before:
                    _rebuild(index, mask, table, used)
            st[2] = t + _TO[7]
        if n_out + cap // 8 + 2 > len(out):
            return i, n_out
        # canonical side order: by address, then by port
        s_hi, s_lo, d_hi, d_lo = p["src_hi"], p["src_lo"], p["dst_hi"], p["dst_lo"]
        sp, dp = p["sport"], p["dport"]
        swap = s_hi > d_hi or (s_hi == d_hi and (s_lo > d_lo or (s_lo == d_lo and sp > dp)))
        if swap:
            a_hi, a_lo, b_hi, b_lo, pa, pb, side = d_hi, d_lo, s_hi, s_lo, dp, sp, 1
        else:
            a_hi, a_lo, b_hi, b_lo, pa, pb, side = s_hi, s_lo, d_hi, d_lo, sp, dp, 0
        proto = p["proto"]
        h = _hash(a_hi, a_lo, b_hi, b_lo, (np.uint64(pa) << np.uint64(16)) | np.uint64(pb), proto)
        j = np.int64(h & np.uint64(mask))
        slot = -1
        while index[j] != 0:
            c = index[j] - 1
            f = table[c]
            if f["a_lo"] == a_lo and f["b_lo"] == b_lo and f["a_hi"] == a_hi and f["b_hi"] == b_hi and \
                    f["a_port"] == pa and f["b_port"] == pb and f["proto"] == proto:
                slot = c
                break
            j = (j + 1) & mask
        fl = p["tcp_flags"]
        if slot < 0:
            if st[1] == 0:
                before = st[1]
                n_out = _force_expire(table, used, free, st, out, n_out)
                st[3] -= st[1] - before
                _rebuild(index, mask, table, used)
                continue  # look the packet up again in the rebuilt index
            st[1] -= 1
            slot = free[st[1]]
            used[slot] = True
            st[3] += 1
            f = table[slot]
            f["start_ns"] = t
            f["end_ns"] = t
            f["a_hi"] = a_hi
            f["a_lo"] = a_lo
            f["b_hi"] = b_hi
            f["b_lo"] = b_lo
            f["a_port"] = pa
            f["b_port"] = pb
            f["proto"] = proto
            f["expires_ns"] = 0
            f["bytes_a"] = 0
            f["bytes_b"] = 0
            f["packets_a"] = 0
            f["packets_b"] = 0
            f["flags_a"] = 0
            f["flags_b"] = 0
            f["l7_a"] = 0
            f["l7_b"] = 0
            f["follow"] = 0
            f["seq"] = st[0]
            st[0] += 1
            client, strength = _client_by_ports(pa, pb, server_ports)
            if client < 0:
                client = side
            f["client"] = client
            f["strength"] = strength
            index[j] = slot + 1
        f = table[slot]
        if side == 0:
            f["bytes_a"] += p["bytes"]
            f["packets_a"] += 1
            f["flags_a"] |= fl
        else:
            f["bytes_b"] += p["bytes"]
            f["packets_b"] += 1
            f["flags_b"] |= fl
        if t < f["start_ns"]:
            f["start_ns"] = t
        if t > f["end_ns"]:
            f["end_ns"] = t
        if proto == 6 and (fl & 0x02) and f["strength"] < S_SYN:  # SYN: its sender is the client, SYN+ACK's not
            f["client"] = side if not (fl & 0x10) else 1 - side
            f["strength"] = S_SYN
        if p["pay_len"] > 0:
            if proto == 6 and not f["follow"] and _mqtt_connect(buf, p["pay_off"], p["pay_len"]):
                f["follow"] = 1  # an MQTT session: every message of it goes to the L7 stage
            if side == 0 and (f["l7_a"] < l7_packets or f["follow"]):
                if f["l7_a"] < 255:
                    f["l7_a"] += 1
                take[i] = 1
            elif side == 1 and (f["l7_b"] < l7_packets or f["follow"]):
                if f["l7_b"] < 255:
                    f["l7_b"] += 1
                take[i] = 2
        if f["expires_ns"] != -1:  # softflowd leaves a flow due at the next check as it is
            at, why = _expiry(f, _TO)
            f["expires_ns"] = at
            f["reason"] = why
        if take[i]:
            if f["follow"]:
                take[i] |= TAKE_FOLLOWED
            if side == f["client"]:
                take[i] |= TAKE_FROM_CLIENT
            take[i] |= np.int64(slot) << TAKE_SLOT_SHIFT
            take_seq[i] = f["seq"]
        i += 1
    return i, n_out


@numba.njit(cache=True)
def expire_table(table, used, index, free, st, out, now):
    """Emit the flows due at now (a clock tick when no packet came to check); returns how many went to out."""
    mask = np.int64(len(index) - 1)
    before = st[1]
    n_out = _sweep(table, used, free, st, out, 0, now, False, 0)
    st[3] -= st[1] - before
    if st[1] != before:
        _rebuild(index, mask, table, used)
    return n_out


@numba.njit(cache=True)
def flush_table(table, used, free, st, out, reason):
    """Emit every flow left in the table (end of input); out must hold st[3] more flows."""
    before = st[1]
    n_out = _sweep(table, used, free, st, out, 0, 0, True, reason)
    st[3] -= st[1] - before
    return n_out


# ----------------------------------------------------------------------------------------------- the meter


#: Ports on which the server side is taken for granted when no SYN was seen (beside ProtocolPortList's).
WELL_KNOWN_SERVER_PORTS = (20, 21, 22, 23, 25, 53, 67, 80, 110, 123, 143, 161, 389, 443, 465, 514, 587, 636, 853,
                           993, 995, 1194, 1883, 3306, 3389, 4222, 5222, 5223, 5269, 5432, 5671, 5672, 6379, 8080,
                           8083, 8084, 8443, 8883, 9092, 61613, 61614)


class FlowMeter:
    """Raw packets into bidirectional flows (FLOW_RECORD arrays), block by block; state kept between blocks."""

    def __init__(self, params: MeterParams = MeterParams(), server_ports=()):
        self.params = params
        cap = int(params.max_flows)
        self.table = np.zeros(cap, FLOW_RECORD)
        self.used = np.zeros(cap, np.bool_)
        size = 1
        while size < 2 * cap:
            size *= 2
        self.index = np.zeros(size, np.int64)
        self.free = np.arange(cap - 1, -1, -1, dtype=np.int64)
        self.st = np.array([1, cap, 0, 0], np.int64)  # next seq, free count, next check, live flows
        self.server_ports = np.zeros(65536, np.bool_)
        self.server_ports[list(WELL_KNOWN_SERVER_PORTS)] = True
        for p in server_ports:
            if 0 < int(p) < 65536:
                self.server_ports[int(p)] = True
        self.timeouts = params.timeouts_ns()
        self.out = np.zeros(max(65536, cap + cap // 8 + 16), FLOW_RECORD)
        self.parse_counts = np.zeros(len(PARSE_REASONS), np.int64)
        self.tunnel_counts = np.zeros(len(TUNNELS), np.int64)
        self.packets = 0

    @property
    def live_flows(self) -> int:
        """Flows in the table now."""
        return int(self.st[3])

    def parse(self, buf: np.ndarray, offs: np.ndarray, caplens: np.ndarray, linktypes: np.ndarray,
              ts_ns: np.ndarray) -> np.ndarray:
        """The PACKET_DTYPE records of a block of frames, counting each status and tunnel kind."""
        pk = np.empty(len(offs), PACKET_DTYPE)
        parse_packets(buf, offs, caplens, linktypes, ts_ns, pk)
        self.parse_counts += np.bincount(pk["status"], minlength=len(PARSE_REASONS))[: len(PARSE_REASONS)]
        self.tunnel_counts += np.bincount(pk["tunnel"], minlength=len(TUNNELS))[: len(TUNNELS)]
        return pk

    def meter(self, pk: np.ndarray, buf: np.ndarray) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
        """Meter parsed packets: (arrays of the flows that expired, per-packet L7 marks, their flows' sequences)."""
        take = np.zeros(len(pk), np.int64)
        take_seq = np.zeros(len(pk), np.int64)
        done = []
        i = 0
        while i < len(pk):
            i, n = meter_packets(pk, i, self.table, self.used, self.index, self.free, self.st, self.server_ports,
                                 self.timeouts, self.params.l7_packets, self.out, take, take_seq, buf)
            if n:
                done.append(self.out[:n].copy())
        self.packets += len(pk)
        return done, take, take_seq

    def follow(self, slot: int, seq: int) -> None:
        """Hand over every payload packet of the flow (slot, seq) from now on (no-op if the flow already left)."""
        if self.used[slot] and int(self.table[slot]["seq"]) == seq:
            self.table[slot]["follow"] = 1

    def expire(self, now_ns: int) -> np.ndarray:
        """The flows whose expiry is due at now_ns (live capture: time passes without packets)."""
        if self.timeouts[7] <= 0:
            return self.out[:0].copy()
        n = expire_table(self.table, self.used, self.index, self.free, self.st, self.out, np.int64(now_ns))
        return self.out[:n].copy()

    def flush(self) -> np.ndarray:
        """Every flow still in the table (the input ended)."""
        n = flush_table(self.table, self.used, self.free, self.st, self.out, R_END)
        self.index[:] = 0
        return self.out[:n].copy()


def client_view(flows: np.ndarray) -> dict[str, np.ndarray]:
    """Columns of flows oriented client → server: src/dst words and ports, bytes/packets each way, TCP flags."""
    b = flows["client"] == 1
    col = {}
    for mine, theirs, name in (("a_hi", "b_hi", "src_hi"), ("a_lo", "b_lo", "src_lo"), ("a_port", "b_port", "src_port"),
                               ("bytes_a", "bytes_b", "bytes"), ("packets_a", "packets_b", "packets")):
        col[name] = np.where(b, flows[theirs], flows[mine])
        other = {"src_hi": "dst_hi", "src_lo": "dst_lo", "src_port": "dst_port", "bytes": "reverse_bytes",
                 "packets": "reverse_packets"}[name]
        col[other] = np.where(b, flows[mine], flows[theirs])
    col["tcp_flags"] = flows["flags_a"] | flows["flags_b"]
    return col


def flows_to_rows(flows: np.ndarray, rows: np.ndarray, dataset: int) -> dict[str, np.ndarray]:
    """Fill FLOW_DTYPE rows (already reserved, zeroed) from flows, client → server; returns the client view."""
    col = client_view(flows)
    rows["start_ns"] = flows["start_ns"]
    rows["end_ns"] = flows["end_ns"]
    for name in ("src_hi", "src_lo", "dst_hi", "dst_lo", "src_port", "dst_port", "bytes", "packets", "tcp_flags"):
        rows[name] = col[name]
    for name in ("reverse_bytes", "reverse_packets", "rev_bytes", "rev_packets"):
        if name in FLOW_DTYPE.names:  # the schema carries the server's direction: fill it
            rows[name] = col["reverse_" + name.split("_", 1)[1]]
    rows["proto"] = flows["proto"]
    rows["sampling_rate"] = 1
    rows["dataset"] = dataset
    return col


def meter_file(path: str, params: MeterParams = MeterParams(), server_ports=()) -> tuple[np.ndarray, FlowMeter]:
    """Every flow of a raw-traffic capture (no L7 stage): (FLOW_RECORD array in expiry order, the meter)."""
    from collector.pcap import frame_blocks

    meter = FlowMeter(params, server_ports)
    parts = []
    for block in frame_blocks(path):
        done, _, _ = meter.meter(meter.parse(block.buf, block.offs, block.caplens, block.linktypes, block.ts_ns),
                                 block.buf)
        parts += done
    parts.append(meter.flush())
    return np.concatenate(parts), meter
