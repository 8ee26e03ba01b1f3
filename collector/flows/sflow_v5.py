"""sFlow version 5 decoder: flow samples become flow rows, counter samples become interface counters.

sFlow (sflow.org, sflow_version_5.txt) samples 1 packet in N and exports the first bytes of it, plus periodic
interface counters. A datagram is an XDR header (version 5, agent address IPv4 or IPv6, sub-agent id, datagram
sequence, uptime, sample count) then samples, each ``(enterprise << 12 | format, length, data)``:

- flow sample (1) and expanded flow sample (3): sequence, source id, sampling rate N, sample pool, drops, input and
  output interface, then flow records. One row per flow sample: addresses, ports, protocol and TCP flags come from
  the raw packet header record (1: Ethernet with 802.1Q/QinQ/MPLS, raw IPv4, raw IPv6) or, without one, from the
  sampled IPv4/IPv6 records (3/4). ``packets = N`` and ``bytes = frame length x N`` (the estimate sFlow is built
  for), ``sampling_rate = N``. The application protocol and MQTT topic come from the sampled TCP payload bytes
  (``appproto``), on any port. A sample whose packet is not IP (ARP, LLDP, ...) gives no row and is counted.
- counter sample (2) and expanded counter sample (4): generic interface counters (record 1) are kept per
  (agent, ifIndex) in ``interface_counters`` (bounded; the latest values win) and counted; other counter records
  are counted by format and skipped.

Time: sFlow carries no flow start/end (a sample is one packet, and the header's uptime is the agent's, not wall
clock), so ``start_ns = end_ns = recv_ns``, the time the collector received the datagram (the capture time when
replaying a pcap).

Exporter: ``observer.ip`` is the agent address in the datagram (what SNMP enrichment queries; sFlow is often
relayed or NATed, so the UDP source can be another box); the UDP source is used only if the agent address is
unset (0.0.0.0 or ::).

Interfaces: the 2 top bits of a compact flow sample's interface (or the expanded sample's format word) give its
format: 0 = ifIndex, where 0x3FFFFFFF means the packet came from or went to the device itself ("local", stored as
0); 1 = the packet was discarded (value is the reason: output stored as 0, ``action`` = drop, counted by reason);
2 = multiple output interfaces (stored as 0, counted). When neither side is known the row has FLAG_NO_INTERFACES.

Accounting (``counters``): datagrams per agent; datagram sequence gaps/reorders per (agent, sub-agent); flow and
counter sample sequence gaps per (agent, sub-agent, source id); the agent's own drop counter (cumulative, counted
by its increase). A rejected datagram changes no state: it is parsed completely before anything is committed.

Malformed input: every count and length is checked against the bytes left before use; a datagram that fails is
rejected with ``DecodeError(reason)`` (short_header, bad_version, bad_address_type, bad_sample_count,
truncated_sample, bad_sample_length, bad_record_count, truncated_record, bad_record_length, bad_header_length).
"""

from __future__ import annotations

import struct

import numpy as np

from analytics.schema import (
    ACTION_ID,
    FLAG_NO_INTERFACES,
    FLAG_NO_PORTS,
    FLOW_DTYPE,
    FlowBatchBuilder,
    bytes_to_words,
    dataset_id,
)
from collector.flows.decoders import DecodeError
from collector.l7.appproto import inspect as inspect_payload
from collector.l7.evidence import sampled_evidence
from collector.metrics import Counters

#: Interfaces whose generic counters are kept; beyond this, new ones are counted as not stored.
MAX_INTERFACES = 65536
#: A flow or counter sample needs at least its data format and length words; a record too.
_MIN_SAMPLE = 8
#: Largest sampling rate taken at face value (sFlow agents use up to ~1:65536; larger is garbage).
MAX_SAMPLING_RATE = 1 << 24

_IF_LOCAL = 0x3FFFFFFF
_DROP = ACTION_ID["drop"]

_U32 = struct.Struct(">I")
_U32x2 = struct.Struct(">II")
_HDR4 = struct.Struct(">IIII")  # after version + address type + 4-byte agent: sub_agent, seq, uptime, n
_FLOW = struct.Struct(">IIIIIIII")  # seq, source id, rate, pool, drops, input, output, n records
_FLOW_X = struct.Struct(">IIIIIIIIIII")  # seq, id type, id index, rate, pool, drops, in fmt/val, out fmt/val, n
_COUNTERS = struct.Struct(">III")  # seq, source id, n records
_COUNTERS_X = struct.Struct(">IIII")  # seq, id type, id index, n records
_RAW = struct.Struct(">IIII")  # header protocol, frame length, stripped, header length
_SAMPLED_V4 = struct.Struct(">II4s4sIIII")  # length, protocol, src, dst, sport, dport, tcp flags, tos
_SAMPLED_V6 = struct.Struct(">II16s16sIIII")  # length, protocol, src, dst, sport, dport, tcp flags, priority
_GENERIC_IF = struct.Struct(">IIQIIQIIIIIIQIIIIII")  # generic interface counters (88 bytes)
assert _GENERIC_IF.size == 88

#: The generic interface counter fields kept per (agent, ifIndex), in record order.
GENERIC_IF_FIELDS = (
    "if_index", "if_type", "if_speed", "if_direction", "if_status",
    "in_octets", "in_ucast_pkts", "in_multicast_pkts", "in_broadcast_pkts", "in_discards", "in_errors",
    "in_unknown_protos", "out_octets", "out_ucast_pkts", "out_multicast_pkts", "out_broadcast_pkts",
    "out_discards", "out_errors", "promiscuous_mode",
)  # fmt: skip

_ETH_VLAN = (0x8100, 0x88A8, 0x9100)
_ETH_MPLS = (0x8847, 0x8848)
_PORT_PROTOS = (6, 17, 132)
_IPV6_EXT = (0, 43, 60, 51)  # hop-by-hop, routing, destination options, AH


class _Row:
    """One flow sample's values before they are committed to the builder (few per datagram)."""

    __slots__ = (
        "src", "dst", "sport", "dport", "proto", "flags", "length", "rate", "in_if", "out_if", "no_if",
        "action", "app", "topic", "no_ports", "extra",
    )  # fmt: skip


class SflowV5Decoder:
    """Decodes sFlow v5 datagrams into flow rows and keeps the agents' generic interface counters."""

    name = "sflow"

    def __init__(self, counters: Counters | None = None):
        self.counters = counters if counters is not None else Counters()
        self._dataset = dataset_id(self.name)
        self._next_dgram_seq: dict[tuple, int] = {}
        self._next_sample_seq: dict[tuple, int] = {}
        self._agent_drops: dict[tuple, int] = {}
        #: (agent hi, agent lo, ifIndex) -> (recv_ns, *GENERIC_IF_FIELDS values), latest sample wins.
        self.interface_counters: dict[tuple[int, int, int], tuple[int, ...]] = {}
        self._notes: list[tuple[str, tuple]] = []  # counts noted while parsing, committed with the datagram

    def _note(self, name: str, labels: tuple = ()) -> None:
        self._notes.append((name, labels))

    # -------------------------------------------------------------------------------------------- datagram

    def decode(self, data: bytes, exporter: tuple[int, int], recv_ns: int, builder: FlowBatchBuilder) -> int:
        """Append one row per IP flow sample to builder; raises DecodeError on a malformed datagram."""
        n = len(data)
        if n < 28:
            raise DecodeError("short_header", f"{n} bytes")
        version, atype = _U32x2.unpack_from(data, 0)
        if version != 5:
            raise DecodeError("bad_version", str(version))
        if atype == 1:
            alen = 4
        elif atype == 2:
            alen = 16
        else:
            raise DecodeError("bad_address_type", str(atype))
        if n < 8 + alen + 16:
            raise DecodeError("short_header", f"{n} bytes for a {'IPv6' if alen == 16 else 'IPv4'} agent")
        agent_raw = data[8 : 8 + alen]
        sub_agent, dgram_seq, _uptime, nsamples = _HDR4.unpack_from(data, 8 + alen)
        pos = 8 + alen + 16
        if nsamples > (n - pos) // _MIN_SAMPLE:
            raise DecodeError("bad_sample_count", f"{nsamples} samples in {n - pos} bytes")
        agent = bytes_to_words(agent_raw) if any(agent_raw) else (int(exporter[0]), int(exporter[1]))

        self._notes = []
        rows: list[_Row] = []
        seqs: list[tuple] = []  # (kind, source id, sequence, drops or None)
        ifaces: list[tuple] = []
        for _ in range(nsamples):
            if pos + 8 > n:
                raise DecodeError("truncated_sample", f"sample header at {pos} of {n}")
            fmt, slen = _U32x2.unpack_from(data, pos)
            body = pos + 8
            end = body + slen
            if end > n:
                raise DecodeError("truncated_sample", f"sample of {slen} bytes at {body} of {n}")
            if fmt >> 12:  # enterprise-specific sample: skipped by its length
                self._note("brokerwatch_sflow_samples_skipped_total", ("enterprise",))
            elif fmt == 1 or fmt == 3:
                rows.append(self._flow_sample(data, body, end, fmt == 3, seqs))
            elif fmt == 2 or fmt == 4:
                self._counter_sample(data, body, end, fmt == 4, seqs, ifaces)
            else:
                self._note("brokerwatch_sflow_samples_skipped_total", (f"format_{fmt}",))
            pos = end

        # the whole datagram parsed: commit state, counters and rows
        for name, labels in self._notes:
            self.counters.inc(name, labels)
        self._account(agent, sub_agent, dgram_seq, seqs)
        self._store_interfaces(agent, ifaces, recv_ns)
        return self._emit(rows, agent, recv_ns, builder)

    # ------------------------------------------------------------------------------------------ flow samples

    def _flow_sample(self, data: bytes, body: int, end: int, expanded: bool, seqs: list) -> _Row:
        if expanded:
            if end - body < _FLOW_X.size:
                raise DecodeError("bad_sample_length", f"expanded flow sample of {end - body} bytes")
            seq, id_type, id_index, rate, _pool, drops, in_fmt, in_val, out_fmt, out_val, nrec = _FLOW_X.unpack_from(
                data, body
            )
            source = (id_type, id_index)
            pos = body + _FLOW_X.size
        else:
            if end - body < _FLOW.size:
                raise DecodeError("bad_sample_length", f"flow sample of {end - body} bytes")
            seq, source_id, rate, _pool, drops, inp, outp, nrec = _FLOW.unpack_from(data, body)
            source = (source_id >> 24, source_id & 0xFFFFFF)
            in_fmt, in_val, out_fmt, out_val = inp >> 30, inp & 0x3FFFFFFF, outp >> 30, outp & 0x3FFFFFFF
            pos = body + _FLOW.size
        seqs.append(("flow", source, seq, drops))
        if nrec > (end - pos) // _MIN_SAMPLE:
            raise DecodeError("bad_record_count", f"{nrec} records in {end - pos} bytes")

        row = _Row()
        row.src = row.dst = None
        row.sport = row.dport = row.proto = row.flags = row.length = 0
        row.app = 0
        row.topic = None
        row.no_ports = True
        row.rate = rate if 0 < rate <= MAX_SAMPLING_RATE else 1
        if not 0 < rate <= MAX_SAMPLING_RATE:
            self._note("brokerwatch_sflow_bad_sampling_rate_total", ("zero" if rate == 0 else "too_large",))
        row.action = 0
        row.in_if = self._interface(in_fmt, in_val, "input", row)
        row.out_if = self._interface(out_fmt, out_val, "output", row)
        row.no_if = row.in_if == 0 and row.out_if == 0

        have_header = False
        eth_length = 0
        sampled_ip = None
        for _ in range(nrec):
            if pos + 8 > end:
                raise DecodeError("truncated_record", f"record header at {pos} of sample ending {end}")
            rfmt, rlen = _U32x2.unpack_from(data, pos)
            rbody = pos + 8
            rend = rbody + rlen
            if rend > end:
                raise DecodeError("truncated_record", f"record of {rlen} bytes at {rbody}, sample ends {end}")
            if rfmt == 1:  # raw packet header
                if rlen < _RAW.size:
                    raise DecodeError("bad_record_length", f"raw header record of {rlen} bytes")
                hproto, frame_len, _stripped, hlen = _RAW.unpack_from(data, rbody)
                if hlen > rlen - _RAW.size:
                    raise DecodeError("bad_header_length", f"header of {hlen} bytes in a {rlen}-byte record")
                if not have_header:
                    header = data[rbody + _RAW.size : rbody + _RAW.size + hlen]
                    if _parse_header(hproto, header, row):
                        have_header = True
                        row.length = frame_len
            elif rfmt == 2:  # sampled Ethernet frame: the MAC packet length
                if rlen < 4:
                    raise DecodeError("bad_record_length", f"sampled ethernet record of {rlen} bytes")
                eth_length = _U32.unpack_from(data, rbody)[0]
            elif rfmt == 3:
                if rlen < _SAMPLED_V4.size:
                    raise DecodeError("bad_record_length", f"sampled IPv4 record of {rlen} bytes")
                sampled_ip = _SAMPLED_V4.unpack_from(data, rbody)
            elif rfmt == 4:
                if rlen < _SAMPLED_V6.size:
                    raise DecodeError("bad_record_length", f"sampled IPv6 record of {rlen} bytes")
                sampled_ip = _SAMPLED_V6.unpack_from(data, rbody)
            pos = rend

        if not have_header and sampled_ip is not None:
            ip_len, proto, src, dst, sport, dport, tcp_flags, _tos = sampled_ip
            row.src, row.dst, row.proto = src, dst, proto & 0xFF
            row.length = eth_length or ip_len
            row.no_ports = proto not in _PORT_PROTOS
            if not row.no_ports:
                row.sport, row.dport = sport & 0xFFFF, dport & 0xFFFF
            row.flags = tcp_flags & 0xFF if proto == 6 else 0
        elif have_header and eth_length and not row.length:
            row.length = eth_length
        if row.src is None:
            self._note("brokerwatch_sflow_samples_skipped_total", ("not_ip",))
        return row

    def _interface(self, fmt: int, value: int, side: str, row: _Row) -> int:
        if fmt == 0:
            return 0 if value == _IF_LOCAL else value
        if fmt == 1:  # discarded: value is the reason code
            if side == "output":
                row.action = _DROP
            self._note("brokerwatch_sflow_discarded_total", (value,))
            return 0
        if fmt == 2:  # multiple output interfaces (value = how many, 0 unknown)
            self._note("brokerwatch_sflow_multiple_interfaces_total", (side,))
            return 0
        self._note("brokerwatch_sflow_bad_interface_format_total", (fmt,))
        return 0

    # --------------------------------------------------------------------------------------- counter samples

    def _counter_sample(self, data: bytes, body: int, end: int, expanded: bool, seqs: list, ifaces: list) -> None:
        if expanded:
            if end - body < _COUNTERS_X.size:
                raise DecodeError("bad_sample_length", f"expanded counter sample of {end - body} bytes")
            seq, id_type, id_index, nrec = _COUNTERS_X.unpack_from(data, body)
            source = (id_type, id_index)
            pos = body + _COUNTERS_X.size
        else:
            if end - body < _COUNTERS.size:
                raise DecodeError("bad_sample_length", f"counter sample of {end - body} bytes")
            seq, source_id, nrec = _COUNTERS.unpack_from(data, body)
            source = (source_id >> 24, source_id & 0xFFFFFF)
            pos = body + _COUNTERS.size
        seqs.append(("counter", source, seq, None))
        if nrec > (end - pos) // _MIN_SAMPLE:
            raise DecodeError("bad_record_count", f"{nrec} counter records in {end - pos} bytes")
        for _ in range(nrec):
            if pos + 8 > end:
                raise DecodeError("truncated_record", f"counter record header at {pos} of sample ending {end}")
            rfmt, rlen = _U32x2.unpack_from(data, pos)
            rbody = pos + 8
            if rbody + rlen > end:
                raise DecodeError("truncated_record", f"counter record of {rlen} bytes at {rbody}, sample ends {end}")
            if rfmt == 1:
                if rlen < _GENERIC_IF.size:
                    raise DecodeError("bad_record_length", f"generic interface counters of {rlen} bytes")
                ifaces.append(_GENERIC_IF.unpack_from(data, rbody))
            else:
                ifaces.append(rfmt)  # counted by format at commit
            pos = rbody + rlen

    # ------------------------------------------------------------------------------------------------ commit

    def _account(self, agent: tuple[int, int], sub_agent: int, dgram_seq: int, seqs: list) -> None:
        c = self.counters
        c.inc("brokerwatch_sflow_datagrams_total", (agent,))
        _gap(c, self._next_dgram_seq, (agent, sub_agent), dgram_seq, "brokerwatch_sflow_sequence", (agent,))
        for kind, source, seq, drops in seqs:
            key = (agent, sub_agent, kind, source)
            c.inc(f"brokerwatch_sflow_{kind}_samples_total", (agent,))
            _gap(c, self._next_sample_seq, key, seq, f"brokerwatch_sflow_{kind}_sample_sequence", (agent,))
            if drops is not None:
                last = self._agent_drops.get(key)
                self._agent_drops[key] = drops
                if last is not None and drops > last:
                    c.inc("brokerwatch_sflow_agent_drops_total", (agent,), drops - last)
        if len(self._next_sample_seq) > 4 * MAX_INTERFACES:  # bound the state a hostile sender can grow
            self._next_sample_seq.clear()
            self._agent_drops.clear()
        if len(self._next_dgram_seq) > MAX_INTERFACES:
            self._next_dgram_seq.clear()

    def _store_interfaces(self, agent: tuple[int, int], ifaces: list, recv_ns: int) -> None:
        table = self.interface_counters
        for rec in ifaces:
            if isinstance(rec, int):
                self.counters.inc("brokerwatch_sflow_counter_records_total", (f"format_{rec}",))
                continue
            self.counters.inc("brokerwatch_sflow_counter_records_total", ("generic_interface",))
            key = (agent[0], agent[1], rec[0])
            if key not in table and len(table) >= MAX_INTERFACES:
                self.counters.inc("brokerwatch_sflow_interface_table_full_total")
                continue
            table[key] = (recv_ns, *rec)

    def _emit(self, rows: list[_Row], agent: tuple[int, int], recv_ns: int, builder: FlowBatchBuilder) -> int:
        # one tuple per row in FLOW_DTYPE order, converted by numpy in one call (a datagram holds few samples)
        out = []
        extras = []
        ahi, alo, ds = agent[0], agent[1], self._dataset
        for r in rows:
            if r.src is None:
                continue
            shi, slo = bytes_to_words(r.src)
            dhi, dlo = bytes_to_words(r.dst)
            flags = (FLAG_NO_PORTS if r.no_ports else 0) | (FLAG_NO_INTERFACES if r.no_if else 0)
            topic_id = builder.intern(r.topic) if r.topic else 0
            if getattr(r, "extra", None):
                extras.append((len(out), r.extra))
            out.append((recv_ns, recv_ns, shi, slo, dhi, dlo, ahi, alo, r.length * r.rate, r.rate, 0, 0, r.rate,
                        r.in_if, r.out_if, topic_id, r.sport, r.dport, r.proto, r.flags, r.app, r.action, ds, flags))
        if out:
            mark = len(builder)
            builder.reserve(len(out))[:] = np.array(out, dtype=FLOW_DTYPE)
            for i, extra in extras:
                builder.annotate(mark + i, extra)
        return len(out)

    def interface(self, agent: tuple[int, int], if_index: int) -> dict[str, int] | None:
        """The latest generic counters of one interface of an agent, by field name (``recv_ns`` included)."""
        rec = self.interface_counters.get((agent[0], agent[1], if_index))
        if rec is None:
            return None
        return dict(zip(("recv_ns", *GENERIC_IF_FIELDS), rec))


def _gap(c: Counters, table: dict, key: tuple, seq: int, name: str, labels: tuple) -> None:
    """Count lost (gap) or reordered sequence numbers for one stream; sFlow sequences count up by one."""
    expected = table.get(key)
    table[key] = (seq + 1) & 0xFFFFFFFF
    if expected is None or seq == expected:
        return
    gap = (seq - expected) & 0xFFFFFFFF
    if gap < 0x80000000:
        c.inc(name + "_lost_total", labels, gap)
    else:  # late datagram or an agent restart
        c.inc(name + "_reordered_total", labels)


# ------------------------------------------------------------------------------------------ sampled header


def _parse_header(hproto: int, h: bytes, row: _Row, depth: int = 0) -> bool:
    """Fill row from a sampled packet header (Ethernet, IPv4, IPv6); False when it holds no IP packet.

    A VXLAN (UDP 4789) or GRE packet is read by its inner packet where the header reaches it: the tunnel endpoints
    only carry the flow that matters (akvorado_sflow_data-encap-vxlan.pcap)."""
    if hproto == 1:  # Ethernet (ISO 802.3)
        off = 12
        n = len(h)
        etype = -1
        while off + 2 <= n:
            etype = h[off] << 8 | h[off + 1]
            if etype in _ETH_VLAN:
                off += 4
                continue
            break
        off += 2
        if etype in _ETH_MPLS:
            while off + 4 <= n and not h[off + 2] & 0x01:  # labels until bottom of stack
                off += 4
            off += 4
            if off >= n:
                return False
            etype = {4: 0x0800, 6: 0x86DD}.get(h[off] >> 4, -1)
        if etype == 0x0800:
            return _parse_ipv4(h, off, row, depth)
        if etype == 0x86DD:
            return _parse_ipv6(h, off, row, depth)
        return False
    if hproto == 11:
        return _parse_ipv4(h, 0, row, depth)
    if hproto == 12:
        return _parse_ipv6(h, 0, row, depth)
    return False


#: VXLAN's UDP port (RFC 7348) and the tunnels nested at most this deep.
VXLAN_PORT = 4789
MAX_TUNNEL_DEPTH = 2
#: GRE protocol types -> sampled-header protocols of _parse_header (Ethernet, IPv4, IPv6).
_GRE_INNER = {0x6558: 1, 0x0800: 11, 0x86DD: 12}
#: Fields an inner packet replaces in the row.
_INNER_FIELDS = ("src", "dst", "proto", "sport", "dport", "no_ports", "flags", "app", "topic")


def _tunnel(h: bytes, pos: int, end: int, row: _Row, depth: int) -> bool:
    """Replace row's packet by the one a VXLAN or GRE payload at pos carries; False (row untouched) if there is
    none or it is cut off before its addresses."""
    if depth >= MAX_TUNNEL_DEPTH:
        return False
    if row.proto == 17:
        if row.dport != VXLAN_PORT or pos + 8 + 8 > end or not h[pos + 8] & 0x08:  # UDP, then VXLAN's I flag
            return False
        hproto, start = 1, pos + 16
    else:  # GRE (RFC 2784, RFC 2890 key and sequence)
        if pos + 4 > end or h[pos + 1] & 0x07:  # version 0 only (1 is PPTP's enhanced GRE)
            return False
        hproto = _GRE_INNER.get(h[pos + 2] << 8 | h[pos + 3])
        fl = h[pos]
        start = pos + 4 + (4 if fl & 0x80 else 0) + (4 if fl & 0x20 else 0) + (4 if fl & 0x10 else 0)
        if hproto is None or start >= end:
            return False
    inner = _Row()
    inner.src = inner.dst = inner.topic = None
    inner.sport = inner.dport = inner.proto = inner.flags = inner.app = 0
    inner.no_ports = True
    if not _parse_header(hproto, h[start:end], inner, depth + 1):
        return False
    for f in _INNER_FIELDS:
        setattr(row, f, getattr(inner, f))
    return True


def _parse_ipv4(h: bytes, off: int, row: _Row, depth: int = 0) -> bool:
    if off + 20 > len(h) or h[off] >> 4 != 4:
        return False
    ihl = (h[off] & 0x0F) * 4
    if ihl < 20:
        return False
    row.src = h[off + 12 : off + 16]
    row.dst = h[off + 16 : off + 20]
    row.proto = h[off + 9]
    total = h[off + 2] << 8 | h[off + 3]
    frag_offset = (h[off + 6] << 8 | h[off + 7]) & 0x1FFF
    ip_end = off + total if total >= ihl else len(h)
    if frag_offset == 0:  # later fragments carry no transport header
        _parse_l4(h, off + ihl, min(ip_end, len(h)), row, depth)
    return True


def _parse_ipv6(h: bytes, off: int, row: _Row, depth: int = 0) -> bool:
    if off + 40 > len(h) or h[off] >> 4 != 6:
        return False
    row.src = h[off + 8 : off + 24]
    row.dst = h[off + 24 : off + 40]
    plen = h[off + 4] << 8 | h[off + 5]
    ip_end = min(off + 40 + plen, len(h)) if plen else len(h)
    nxt = h[off + 6]
    pos = off + 40
    first_fragment = True
    for _ in range(8):  # a bounded walk of the extension headers
        if nxt in _IPV6_EXT and pos + 8 <= len(h):
            step = (h[pos + 1] + 2) * 4 if nxt == 51 else (h[pos + 1] + 1) * 8
            nxt, pos = h[pos], pos + step
        elif nxt == 44 and pos + 8 <= len(h):  # fragment header
            first_fragment = ((h[pos + 2] << 8 | h[pos + 3]) & 0xFFF8) == 0
            nxt, pos = h[pos], pos + 8
        else:
            break
    row.proto = nxt
    if first_fragment and nxt not in _IPV6_EXT and nxt != 44:
        _parse_l4(h, pos, ip_end, row, depth)
    return True


def _parse_l4(h: bytes, pos: int, end: int, row: _Row, depth: int = 0) -> None:
    proto = row.proto
    if proto == 47:
        _tunnel(h, pos, end, row, depth)
        return
    if proto in _PORT_PROTOS:
        if pos + 4 > end:
            return  # ports cut off: leave them unknown
        row.sport = h[pos] << 8 | h[pos + 1]
        row.dport = h[pos + 2] << 8 | h[pos + 3]
        row.no_ports = False
        if proto == 17 and row.dport == VXLAN_PORT:
            _tunnel(h, pos, end, row, depth)
            return
        if proto == 6 and pos + 14 <= end:
            row.flags = h[pos + 13]
            doff = (h[pos + 12] >> 4) * 4
            if doff >= 20 and pos + doff < end:
                row.app, row.topic = inspect_payload(h[pos + doff : end])
                row.extra = sampled_evidence(h[pos + doff : end])  # SNI, HTTP path, MQTT client id (decode prints them)
    elif proto in (1, 58) and pos + 2 <= end:  # ICMP / ICMPv6: type and code, the NetFlow way
        row.dport = h[pos] << 8 | h[pos + 1]
