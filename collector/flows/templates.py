"""Template-based flow export (NetFlow v9, IPFIX): template compiler, template state, and the batch decoder both share.

How a block of datagrams is decoded:

1. ``_walk`` (numba) checks every datagram's header and set boundaries and lists its sets (datagram, set id, offset,
   length) with no Python per datagram; a structurally broken datagram is rejected whole before anything is decoded.
2. Template and options-template sets (rare: exporters refresh every few seconds) are parsed in Python and checked
   first, so that a hostile template rejects its datagram before any of its rows exist.
3. Data sets are grouped by their template, scoped by (exporter, source id / observation domain, template id). A
   fixed-length template is compiled once into a big-endian numpy structured dtype and a plan of (role -> field)
   picks: ``_gather`` (numba) copies the records of all the group's sets into one contiguous buffer, it is read with
   one ``np.frombuffer`` and every FLOW_DTYPE column is filled by one array operation. Templates with
   variable-length fields take ``_walk_varlen`` (numba), which finds each record's field offsets, then the same plan.
4. A template set that changes the state (a new or different layout, a withdrawal) splits the block: data before
   it is decoded with the state before it. A refresh of an identical template changes nothing and splits nothing.
5. Data sets whose template is unknown are held (bounded per exporter, counted) and decoded when it arrives.

Sampling: options data gives a rate per (exporter, domain, sampler id), per (exporter, domain, ingress interface)
when the options record is scoped to an interface, or per (exporter, domain); a record's own sampling fields win. Times: every form listed in device_profiles/ipfix_elements.yaml (uptime-relative,
seconds, milli/micro/nanoseconds, deltas), else the export time.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numba
import numpy as np
import yaml

from analytics.schema import (FLAG_NO_COUNTERS, FLAG_NO_INTERFACES, FLAG_NO_PACKETS, FLAG_NO_PORTS, FLAG_ORIENTED,
                              FLAG_REVERSE, FlowBatchBuilder, dataset_id)
from collector.flows.decoders import DECODE_EXCEPTIONS, DecodeError
from collector.metrics import Counters

ELEMENTS_FILE = Path(__file__).resolve().parents[2] / "device_profiles" / "ipfix_elements.yaml"

#: Field length that announces a variable-length field (RFC 7011 section 7).
VARLEN = 65535
#: Hostile-input caps, checked before anything is stored.
MAX_FIELDS = 512  # fields in one template
MAX_TEMPLATES_PER_EXPORTER = 4096
MAX_TEMPLATES_TOTAL = 1 << 18  # spoofed sources cannot grow the state without bound either
MAX_PENDING_EXPORTERS = 4096
MAX_PENDING_SETS_PER_EXPORTER = 256
MAX_PENDING_BYTES_PER_EXPORTER = 1 << 20
MAX_SAMPLERS_PER_EXPORTER = 4096
MAX_SETS_PER_DATAGRAM = 4096
#: Rows one datagram may yield (a 9000-byte jumbo of 5-byte NAT records is 1800).
MAX_RECORDS_PER_DATAGRAM = 8192

#: ``_walk`` status codes -> rejection reasons (0 = fine); template reasons are raised by name.
REASONS = ("", "short_header", "bad_version", "bad_length", "bad_set_length", "set_overflow", "too_many_sets",
           "template_malformed", "template_field_count", "template_id", "template_length", "template_scope",
           "template_cap", "varlen_overflow", "too_many_records", "malformed")
REASON_CODE = {r: i for i, r in enumerate(REASONS) if r}

NTP_EPOCH_OFFSET = 2_208_988_800  # seconds from 1900-01-01 to 1970-01-01


# --------------------------------------------------------------------------------------------------------------
# Information elements (data, loaded once)

_ELEMENTS: dict | None = None


def elements() -> dict:
    """``{"names": {(pen, id): name}, "roles": {role: [(pen, id), ...] in priority order}}`` from the YAML file."""
    global _ELEMENTS
    if _ELEMENTS is None:
        with open(ELEMENTS_FILE, encoding="utf-8") as f:
            doc = yaml.safe_load(f)
        names: dict[tuple[int, int], str] = {}
        roles: dict[str, list[tuple[int, int]]] = {}
        for e in doc["elements"]:
            key = (int(e["pen"]), int(e["id"]))
            names[key] = str(e["name"])
            if e.get("role"):
                roles.setdefault(str(e["role"]), []).append(key)
        _ELEMENTS = {"names": names, "roles": roles}
    return _ELEMENTS


#: Roles whose value is an address of a fixed width.
_ADDR_ROLES = {"src_v4": 4, "dst_v4": 4, "src_v6": 16, "dst_v6": 16}
#: Roles read as 64-bit NTP timestamps (RFC 7011 dateTimeMicroseconds / dateTimeNanoseconds).
_NTP_ROLES = {"start_us", "end_us", "start_ns", "end_ns"}
#: v9 options scope fields live in their own namespace (System, Interface, ...); they never take a role.
SCOPE_PEN = -1


# --------------------------------------------------------------------------------------------------------------
# Compiled templates

@dataclass(eq=False)
class Template:
    """A template compiled for decoding: layout, record length, structured dtype and the role -> field plan."""

    fields: tuple  # ((pen, id, length), ...); pen SCOPE_PEN for v9 options scope fields
    scope_count: int
    options: bool
    fixed: bool
    length: int  # record length (fixed), or the minimum (variable: 1 byte per variable field)
    plan: dict  # role -> (field index, length)
    offsets: tuple  # byte offset of each field (fixed templates only)
    dtype: np.dtype | None  # structured dtype over the used fields (fixed templates only)
    flen: np.ndarray  # field lengths (VARLEN for variable ones), for the numba walker

    @property
    def layout(self) -> tuple:
        """What identifies the layout (a refresh with the same layout changes nothing)."""
        return (self.fields, self.scope_count, self.options)


_compiled: dict[tuple, Template] = {}


def compile_template(fields: tuple, scope_count: int, options: bool) -> Template:
    """The compiled form of a layout; shared by every exporter sending the same layout (cached)."""
    key = (fields, scope_count, options)
    t = _compiled.get(key)
    if t is not None:
        return t
    roles = elements()["roles"]
    where: dict[tuple[int, int], int] = {}
    for i, (pen, fid, _length) in enumerate(fields):
        if pen != SCOPE_PEN:
            where.setdefault((pen, fid), i)
    plan: dict[str, tuple[int, int]] = {}
    for role, candidates in roles.items():
        for cand in candidates:
            i = where.get(cand)
            if i is None:
                continue
            length = fields[i][2]
            if role in _ADDR_ROLES:
                ok = length == _ADDR_ROLES[role]
            elif role in _NTP_ROLES:
                ok = length == 8
            else:
                ok = 1 <= length <= 8
            if ok:
                plan[role] = (i, length)
                break
    if options:  # an options record scoped to an interface (v9 scope type 2, IPFIX ingressInterface) samples it
        for i in range(scope_count):
            pen, fid, length = fields[i]
            if ((pen == SCOPE_PEN and fid == 2) or (pen == 0 and fid in (10, 252))) and 1 <= length <= 8:
                plan["scope_interface"] = (i, length)
                break
    fixed = all(f[2] != VARLEN for f in fields)
    offsets: list[int] = []
    pos = 0
    for _pen, _fid, length in fields:
        offsets.append(pos)
        pos += length if length != VARLEN else 1
    dtype = None
    if fixed:
        names, formats, offs = [], [], []
        for role, (i, length) in plan.items():
            name = f"f{i}"
            if name in names:
                continue
            names.append(name)
            formats.append(_field_format(length))
            offs.append(offsets[i])
        dtype = np.dtype({"names": names, "formats": formats, "offsets": offs, "itemsize": max(pos, 1)})
    t = Template(fields, scope_count, options, fixed, pos, plan, tuple(offsets), dtype,
                 np.array([f[2] for f in fields], np.int64))
    if len(_compiled) > 65536:  # bounded: hostile exporters cannot grow it without limit
        _compiled.clear()
    _compiled[key] = t
    return t


def _address(plan: dict, side: str, get, get_addr16, mapped: np.uint64) -> tuple[np.ndarray, np.ndarray]:
    """(hi, lo) words of one side's address per record. A template may carry both the IPv4 and the IPv6 element
    (Procera does, ipfix_test_procera_*.dat): the one that is set wins, the IPv4 one where both are."""
    v4, v6 = f"{side}_v4", f"{side}_v6"
    if v4 in plan:
        a4 = get(v4)
        lo = mapped | a4
        if v6 not in plan:
            return _ZERO_U64, lo
        hi6, lo6 = get_addr16(v6)
        use6 = (a4 == 0) & ((hi6 | lo6) != 0)
        if not use6.any():
            return _ZERO_U64, lo
        return np.where(use6, hi6, np.uint64(0)), np.where(use6, lo6, lo)
    if v6 in plan:
        return get_addr16(v6)
    return _ZERO_U64, _ZERO_U64


def _field_format(length: int):
    if length == 1:
        return "u1"
    if length in (2, 4, 8):
        return f">u{length}"
    if length == 16:
        return (">u8", (2,))
    return ("u1", (length,))


def _as_u64(col: np.ndarray, length: int) -> np.ndarray:
    """A structured-view column of a field of any length (1-8 bytes, reduced-size encoding) as uint64."""
    if length in (1, 2, 4, 8):
        return col.astype(np.uint64)
    out = np.zeros(len(col), np.uint64)
    for b in range(length):
        out = (out << np.uint64(8)) | col[:, b].astype(np.uint64)
    return out


# --------------------------------------------------------------------------------------------------------------
# numba kernels

@numba.njit(cache=True, inline="always")
def _u16(b, o):
    return (np.int64(b[o]) << 8) | np.int64(b[o + 1])


@numba.njit(cache=True, inline="always")
def _u32(b, o):
    return (np.int64(b[o]) << 24) | (np.int64(b[o + 1]) << 16) | (np.int64(b[o + 2]) << 8) | np.int64(b[o + 3])


@numba.njit(cache=True)
def _walk(buf, offs, lens, version, hdr, status, set_dg, set_id, set_off, set_len):  # pragma: no cover - compiled
    """Check headers and set boundaries of every datagram; list the sets of the good ones. Returns the set count.

    hdr[d] = (export seconds, uptime ms (v9), sequence, source id / domain). Set offsets point past the 4-byte
    set header. v9 allows zero padding after the last flowset (PAN-OS fills packets with zeros); IPFIX ignores
    bytes after the message length.
    """
    ns = 0
    hl = 20 if version == 9 else 16
    for d in range(len(offs)):
        o = offs[d]
        n = lens[d]
        if n < hl:
            status[d] = 1
            continue
        if _u16(buf, o) != version:
            status[d] = 2
            continue
        if version == 9:
            hdr[d, 0] = _u32(buf, o + 8)
            hdr[d, 1] = _u32(buf, o + 4)
            hdr[d, 2] = _u32(buf, o + 12)
            hdr[d, 3] = _u32(buf, o + 16)
            end = o + n
        else:
            mlen = _u16(buf, o + 2)
            if mlen < hl or mlen > n:
                status[d] = 3
                continue
            hdr[d, 0] = _u32(buf, o + 4)
            hdr[d, 1] = 0
            hdr[d, 2] = _u32(buf, o + 8)
            hdr[d, 3] = _u32(buf, o + 12)
            end = o + mlen
        p = o + hl
        first = ns
        k = 0
        while end - p >= 4:
            sid = _u16(buf, p)
            slen = _u16(buf, p + 2)
            if slen < 4:
                if version == 9:
                    zero = True
                    for q in range(p, end):
                        if buf[q] != 0:
                            zero = False
                            break
                    if zero:
                        break
                status[d] = 4
                break
            if p + slen > end:
                status[d] = 5
                break
            if k >= 4096:
                status[d] = 6
                break
            set_dg[ns] = d
            set_id[ns] = sid
            set_off[ns] = p + 4
            set_len[ns] = slen - 4
            ns += 1
            k += 1
            p += slen
        if status[d] != 0:
            ns = first
    return ns


@numba.njit(cache=True)
def _gather(buf, set_off, set_nrec, reclen, out):  # pragma: no cover - compiled
    """Copy the records of many sets (set_nrec[i] records of reclen bytes at set_off[i]) back to back into out."""
    q = 0
    for i in range(len(set_off)):
        n = set_nrec[i] * reclen
        p = set_off[i]
        out[q:q + n] = buf[p:p + n]
        q += n
    return q


@numba.njit(cache=True)
def _walk_varlen(buf, set_off, set_len, flen, col_of, ncol, minlen, rec_set, fld_off, set_bad, cap):  # pragma: no cover
    """Records of variable-length-template sets: offsets/lengths of the fields the plan reads (col_of[f] >= 0).

    A field of length 65535 carries its length in 1 byte, or 255 then 2 bytes (RFC 7011 7). Bytes after the
    last record that cannot hold one more record are padding; a record running past its set marks the set bad
    (its records are dropped) and the walk goes on with the next set. Returns the number of records.
    """
    n = 0
    nf = len(flen)
    for s in range(len(set_off)):
        p = set_off[s]
        end = p + set_len[s]
        first = n
        bad = False
        while end - p >= minlen and n < cap:
            q = p
            for f in range(nf):
                length = flen[f]
                if length == 65535:
                    if q >= end:
                        bad = True
                        break
                    length = np.int64(buf[q])
                    q += 1
                    if length == 255:
                        if q + 2 > end:
                            bad = True
                            break
                        length = _u16(buf, q)
                        q += 2
                c = col_of[f]
                if c >= 0:
                    fld_off[n, c] = q
                    fld_off[n, ncol + c] = length
                q += length
                if q > end:
                    bad = True
                    break
            if bad:
                break
            rec_set[n] = s
            n += 1
            p = q
        if bad:
            set_bad[s] = 1
            n = first
    return n


@numba.njit(cache=True)
def _read_be(buf, offs, lens, width):  # pragma: no cover - compiled
    """Big-endian unsigned values of up to 8 bytes at offs (0 where a record's field is not exactly width)."""
    out = np.zeros(len(offs), np.uint64)
    for i in range(len(offs)):
        if lens[i] != width:
            continue
        v = np.uint64(0)
        o = offs[i]
        for b in range(width):
            v = (v << np.uint64(8)) | np.uint64(buf[o + b])
        out[i] = v
    return out


_ZERO_U64 = np.zeros(1, np.uint64)
_INT63 = (1 << 63) - 1


@numba.njit(cache=True)
def _fill_rows(rows, start, end, src_hi, src_lo, dst_hi, dst_lo, ex_hi, ex_lo, octets, packets, rev_octets, rev_packets,
               rate, in_if, out_if, sport, dport, proto, tcp_flags, dataset, flags, has_proto):  # pragma: no cover - compiled
    """Write every field of rows[i] from column arrays (length n, or length 1 for a column the template lacks)."""
    n = len(rows)
    for i in range(n):
        r = rows[i]
        r["start_ns"] = start[i]
        r["end_ns"] = end[i]
        r["src_hi"] = src_hi[i if len(src_hi) > 1 else 0]
        r["src_lo"] = src_lo[i if len(src_lo) > 1 else 0]
        r["dst_hi"] = dst_hi[i if len(dst_hi) > 1 else 0]
        r["dst_lo"] = dst_lo[i if len(dst_lo) > 1 else 0]
        r["exporter_hi"] = ex_hi
        r["exporter_lo"] = ex_lo
        r["bytes"] = octets[i if len(octets) > 1 else 0]
        r["packets"] = packets[i if len(packets) > 1 else 0]
        r["rev_bytes"] = rev_octets[i if len(rev_octets) > 1 else 0]
        r["rev_packets"] = rev_packets[i if len(rev_packets) > 1 else 0]
        rt = rate[i if len(rate) > 1 else 0]
        r["sampling_rate"] = rt if rt < np.uint64(0xFFFFFFFF) else np.uint64(0xFFFFFFFF)
        r["in_if"] = in_if[i if len(in_if) > 1 else 0]
        r["out_if"] = out_if[i if len(out_if) > 1 else 0]
        r["topic_id"] = 0
        r["src_port"] = sport[i if len(sport) > 1 else 0]
        r["dst_port"] = dport[i if len(dport) > 1 else 0]
        p = proto[i if len(proto) > 1 else 0]
        r["proto"] = p
        r["tcp_flags"] = tcp_flags[i if len(tcp_flags) > 1 else 0] & np.uint64(0xFF)
        r["app_proto"] = 0
        r["action"] = 0
        r["dataset"] = dataset
        f = flags
        if has_proto and not (p == 6 or p == 17 or p == 132):
            f |= FLAG_NO_PORTS
        r["flags"] = f


# --------------------------------------------------------------------------------------------------------------
# Template set parsing (pure, no state)

#: Template sets whose parse is remembered (by their exact bytes), per decoder.
PARSED_SET_CACHE = 4096


@dataclass(frozen=True)
class TemplateOp:
    """One template record: a definition (fields) or a withdrawal (fields None; tid == set id withdraws all)."""

    tid: int
    options: bool
    fields: tuple | None
    scope_count: int = 0


def parse_v9_template_set(data: bytes, set_id: int) -> list[TemplateOp]:
    """NetFlow v9 flowset 0 (templates) or 1 (options templates); raises DecodeError on a hostile template."""
    ops: list[TemplateOp] = []
    p, end = 0, len(data)
    if set_id == 0:
        while end - p >= 4:
            tid, count = struct.unpack_from(">HH", data, p)
            if tid == 0 and count == 0 and not any(data[p:]):
                break  # padding
            p += 4
            if count == 0 or count > MAX_FIELDS:
                raise DecodeError("template_field_count", f"template {tid} with {count} fields")
            if tid < 256:
                raise DecodeError("template_id", f"template id {tid}")
            if p + 4 * count > end:
                raise DecodeError("template_malformed", f"template {tid} runs past its flowset")
            raw = struct.unpack_from(f">{2 * count}H", data, p)
            p += 4 * count
            fields = tuple((0, raw[2 * i], raw[2 * i + 1]) for i in range(count))
            ops.append(TemplateOp(tid, False, _check_fields(tid, fields), 0))
        return ops
    while end - p >= 6:
        tid, scope_len, opt_len = struct.unpack_from(">HHH", data, p)
        if tid == 0 and not any(data[p:]):
            break
        p += 6
        if tid < 256:
            raise DecodeError("template_id", f"options template id {tid}")
        if scope_len % 4 or opt_len % 4:
            raise DecodeError("template_malformed", "options scope/option length not a multiple of 4")
        ns, no = scope_len // 4, opt_len // 4
        if ns + no == 0 or ns + no > MAX_FIELDS:
            raise DecodeError("template_field_count", f"options template {tid} with {ns + no} fields")
        if p + scope_len + opt_len > end:
            raise DecodeError("template_malformed", f"options template {tid} runs past its flowset")
        raw = struct.unpack_from(f">{2 * (ns + no)}H", data, p)
        p += scope_len + opt_len
        fields = tuple((SCOPE_PEN if i < ns else 0, raw[2 * i], raw[2 * i + 1]) for i in range(ns + no))
        ops.append(TemplateOp(tid, True, _check_fields(tid, fields), ns))
        pad = (4 - p % 4) % 4  # each options template is padded to 32 bits
        if pad and end - p >= pad and not any(data[p:p + pad]):
            p += pad
    return ops


def parse_ipfix_template_set(data: bytes, set_id: int) -> list[TemplateOp]:
    """IPFIX set 2 (templates) or 3 (options templates), withdrawals included; raises DecodeError when hostile."""
    ops: list[TemplateOp] = []
    options = set_id == 3
    p, end = 0, len(data)
    while end - p >= 4:
        tid, count = struct.unpack_from(">HH", data, p)
        p += 4
        if count == 0:  # withdrawal (RFC 7011 8.1); tid == set id withdraws every template of the kind
            if tid != set_id and tid < 256:
                raise DecodeError("template_id", f"withdrawal of template id {tid}")
            ops.append(TemplateOp(tid, options, None))
            continue
        if tid < 256:
            if not any(data[p - 4:]):
                break  # padding
            raise DecodeError("template_id", f"template id {tid}")
        if count > MAX_FIELDS:
            raise DecodeError("template_field_count", f"template {tid} with {count} fields")
        scope = 0
        if options:
            if end - p < 2:
                raise DecodeError("template_malformed", "options template without scope count")
            scope = struct.unpack_from(">H", data, p)[0]
            p += 2
            if scope == 0 or scope > count:
                raise DecodeError("template_scope", f"options template {tid}: scope count {scope} of {count}")
        fields = []
        for _ in range(count):
            if end - p < 4:
                raise DecodeError("template_malformed", f"template {tid} runs past its set")
            fid, length = struct.unpack_from(">HH", data, p)
            p += 4
            pen = 0
            if fid & 0x8000:
                if end - p < 4:
                    raise DecodeError("template_malformed", f"template {tid} enterprise field runs past its set")
                pen = struct.unpack_from(">I", data, p)[0]
                p += 4
                fid &= 0x7FFF
            fields.append((pen, fid, length))
        ops.append(TemplateOp(tid, options, _check_fields(tid, tuple(fields)), scope))
    return ops


def _check_fields(tid: int, fields: tuple) -> tuple:
    fixed_len = sum(f[2] for f in fields if f[2] != VARLEN)
    nvar = sum(1 for f in fields if f[2] == VARLEN)
    if fixed_len + nvar == 0:
        raise DecodeError("template_length", f"template {tid} has records of 0 bytes")
    if fixed_len + nvar > 65535 - 20:
        raise DecodeError("template_length", f"template {tid} records of {fixed_len} bytes cannot fit a datagram")
    return fields


# --------------------------------------------------------------------------------------------------------------
# The decoder both formats share

class TemplateFlowDecoder:
    """Template state and batch decoding for NetFlow v9 (version 9) and IPFIX (version 10); see the module doc."""

    name = ""
    version = 0
    metric = ""  # brokerwatch_<metric>_... counter prefix
    REASONS = REASONS

    def __init__(self, counters: Counters | None = None):
        self.counters = counters if counters is not None else Counters()
        self._dataset = np.uint8(dataset_id(self.name))
        # (ex_hi, ex_lo, domain, tid) -> Template
        self.templates: dict[tuple[int, int, int, int], Template] = {}
        self._per_exporter: dict[tuple[int, int], int] = {}
        # (ex_hi, ex_lo, domain, sampler id or -1) -> rate
        self.samplers: dict[tuple[int, int, int, int], int] = {}
        # (ex_hi, ex_lo, domain) -> systemInitTimeMilliseconds
        self.system_init: dict[tuple[int, int, int], int] = {}
        # (ex_hi, ex_lo) -> list of held sets (key, bytes, secs, uptime, domain)
        self.pending: dict[tuple[int, int], list] = {}
        self._next_seq: dict[tuple[int, int, int], int] = {}
        self._parsed_sets: dict[tuple[int, bytes], list[TemplateOp]] = {}
        self._scratch = np.empty(1 << 16, np.uint8)  # gathered records of one template group (reused)
        self._if_sampled: set[tuple[int, int, int]] = set()  # (exporter, domain) with per-interface sampling

    # ---- public API ----------------------------------------------------------------------------------------

    def decode(self, data: bytes, exporter: tuple[int, int], recv_ns: int, builder: FlowBatchBuilder) -> int:
        """Append one datagram's flows to builder; raises DecodeError with a specific reason when malformed."""
        buf = np.frombuffer(data, np.uint8)
        n, status = self.decode_buffer(buf, np.zeros(1, np.int64), np.array([len(data)], np.int64),
                                       np.array([exporter[0]], np.uint64), np.array([exporter[1]], np.uint64),
                                       builder)
        if status[0]:
            raise DecodeError(REASONS[status[0]], self._last_detail or f"{len(data)} bytes")
        return n

    def decode_buffer(self, buf: np.ndarray, offs: np.ndarray, lens: np.ndarray, ex_hi: np.ndarray,
                      ex_lo: np.ndarray, builder: FlowBatchBuilder) -> tuple[int, np.ndarray]:
        """Decode datagrams laid out in one buffer; returns (rows appended, per-datagram status index of REASONS).

        Never raises: FlowDecoders calls this path without a guard. Should a decoder bug surface on hostile input,
        the block's rows are taken back and its datagrams decoded one at a time, the culprit counted ``malformed``.
        """
        mark = len(builder)
        try:
            return self._decode_block(buf, offs, lens, ex_hi, ex_lo, builder)
        except DECODE_EXCEPTIONS:
            builder.truncate(mark)
            if len(offs) == 1:
                self._last_detail = "decoder error on hostile input"
                return 0, np.array([REASON_CODE["malformed"]], np.int8)
        status = np.zeros(len(offs), np.int8)
        total = 0
        for i in range(len(offs)):
            m = len(builder)
            try:
                n, st = self._decode_block(buf, offs[i:i + 1], lens[i:i + 1], ex_hi[i:i + 1], ex_lo[i:i + 1],
                                           builder)
                status[i] = st[0]
                total += n
            except DECODE_EXCEPTIONS:
                builder.truncate(m)
                status[i] = REASON_CODE["malformed"]
        return total, status

    def _decode_block(self, buf, offs, lens, ex_hi, ex_lo, builder: FlowBatchBuilder) -> tuple[int, np.ndarray]:
        k = len(offs)
        status = np.zeros(k, np.int8)
        self._last_detail = ""
        if k == 0:
            return 0, status
        offs = np.ascontiguousarray(offs, np.int64)
        lens = np.ascontiguousarray(lens, np.int64)
        hdr = np.zeros((k, 4), np.int64)
        cap = int(lens.sum()) // 4 + k
        set_dg = np.empty(cap, np.int64)
        set_id = np.empty(cap, np.int64)
        set_off = np.empty(cap, np.int64)
        set_len = np.empty(cap, np.int64)
        ns = _walk(buf, offs, lens, self.version, hdr, status, set_dg, set_id, set_off, set_len)
        set_dg, set_id, set_off, set_len = set_dg[:ns], set_id[:ns], set_off[:ns], set_len[:ns]
        ex_hi = np.asarray(ex_hi, np.uint64)
        ex_lo = np.asarray(ex_lo, np.uint64)
        # Template sets first: parse and check them so a hostile one rejects its datagram before any rows exist.
        tsets = np.flatnonzero(set_id < (2 if self.version == 9 else 4))
        ops: dict[int, list[TemplateOp]] = {}
        for j in tsets:
            sid = int(set_id[j])
            if self.version == 10 and sid < 2:
                continue  # IPFIX set ids 0, 1: reserved, ignored
            d = int(set_dg[j])
            if status[d]:
                continue
            o = int(set_off[j])
            raw = buf[o:o + int(set_len[j])].tobytes()
            cached = self._parsed_sets.get((sid, raw))
            if cached is not None:  # exporters resend the same template sets over and over: parse each once
                ops[int(j)] = cached
                continue
            try:
                ops[int(j)] = parsed = self._parse_template_set(raw, sid)
                if len(self._parsed_sets) >= PARSED_SET_CACHE:
                    self._parsed_sets.clear()
                self._parsed_sets[(sid, raw)] = parsed
            except DecodeError as exc:
                status[d] = REASON_CODE[exc.reason]
                self._last_detail = exc.detail
        keep = status[set_dg] == 0
        mark = len(builder)
        self._rows_dg: list[np.ndarray] = []
        self._records_in: np.ndarray = np.zeros(k, np.int64)
        self._unknown_in: np.ndarray = np.zeros(k, bool)
        ctx = (buf, set_dg, set_id, set_off, set_len, hdr, ex_hi, ex_lo, status)
        start = 0
        for j in sorted(ops):
            d = int(set_dg[j])
            if status[d]:
                continue
            changes = [op for op in ops[j] if self._changes_state(op, ex_hi[d], ex_lo[d], hdr[d, 3])]
            if not changes:
                continue
            self._decode_data(ctx, np.arange(start, j), keep, builder)
            start = j + 1
            try:
                self._apply(changes, int(ex_hi[d]), int(ex_lo[d]), int(hdr[d, 3]), d, builder)
            except DecodeError as exc:
                status[d] = REASON_CODE[exc.reason]
                self._last_detail = exc.detail
                keep = status[set_dg] == 0
        self._decode_data(ctx, np.arange(start, ns), keep, builder)
        n = len(builder) - mark
        if n and (status != 0).any() and self._rows_dg:
            # A datagram failed after some of its rows were written (a later set broke): take them back out.
            rows_dg = np.concatenate(self._rows_dg)
            good = status[rows_dg] == 0
            if not good.all():
                n = builder.keep(mark, good)
        ok = status == 0
        if ok.any():
            self._account_sequences(ex_hi[ok], ex_lo[ok], hdr[ok], self._records_in[ok], self._unknown_in[ok])
        return n, status

    def export_state(self) -> dict:
        """Templates, sampling rates and sequence expectations as a JSON-able dict (persisted across restarts)."""
        return {
            "format": self.name,
            "version": 1,
            "templates": [
                {"exporter": [hi, lo], "domain": dom, "id": tid, "options": t.options, "scope_count": t.scope_count,
                 "fields": [list(f) for f in t.fields]}
                for (hi, lo, dom, tid), t in self.templates.items()
            ],
            "samplers": [{"exporter": [hi, lo], "domain": dom, "sampler": sid, "rate": rate}
                         for (hi, lo, dom, sid), rate in self.samplers.items()],
            "system_init": [{"exporter": [hi, lo], "domain": dom, "ms": ms}
                            for (hi, lo, dom), ms in self.system_init.items()],
            "sequence": [{"exporter": [hi, lo], "domain": dom, "next": nxt}
                         for (hi, lo, dom), nxt in self._next_seq.items()],
        }

    def import_state(self, state: dict) -> None:
        """Load what ``export_state`` produced (templates are recompiled); raises ValueError when it does not fit."""
        if state.get("format") != self.name or state.get("version") != 1:
            raise ValueError(f"state of {state.get('format')!r} v{state.get('version')} is not {self.name} v1")
        for t in state.get("templates", []):
            hi, lo = (int(x) for x in t["exporter"])
            fields = tuple((int(p), int(i), int(n)) for p, i, n in t["fields"])
            scope = int(t["scope_count"])
            try:
                _check_fields(int(t["id"]), fields)
            except DecodeError as exc:
                raise ValueError(str(exc)) from None
            self._store(hi, lo, int(t["domain"]), int(t["id"]), compile_template(fields, scope, bool(t["options"])))
        for s in state.get("samplers", []):
            hi, lo = (int(x) for x in s["exporter"])
            self.samplers[(hi, lo, int(s["domain"]), int(s["sampler"]))] = int(s["rate"])
            if int(s["sampler"]) < -1:
                self._if_sampled.add((hi, lo, int(s["domain"])))
        for s in state.get("system_init", []):
            hi, lo = (int(x) for x in s["exporter"])
            self.system_init[(hi, lo, int(s["domain"]))] = int(s["ms"]) & _INT63
        for s in state.get("sequence", []):
            hi, lo = (int(x) for x in s["exporter"])
            self._next_seq[(hi, lo, int(s["domain"]))] = int(s["next"])

    # ---- templates -----------------------------------------------------------------------------------------

    def _parse_template_set(self, data: bytes, set_id: int) -> list[TemplateOp]:
        raise NotImplementedError

    def _changes_state(self, op: TemplateOp, hi, lo, dom) -> bool:
        if op.fields is None:
            return True
        t = self.templates.get((int(hi), int(lo), int(dom), op.tid))
        return t is None or t.layout != (op.fields, op.scope_count, op.options)

    def _apply(self, ops: list[TemplateOp], hi: int, lo: int, dom: int, d: int, builder: FlowBatchBuilder) -> None:
        for op in ops:
            if op.fields is None:
                self._withdraw(hi, lo, dom, op)
                continue
            key = (hi, lo, dom, op.tid)
            if key not in self.templates and (self._per_exporter.get((hi, lo), 0) >= MAX_TEMPLATES_PER_EXPORTER
                                              or len(self.templates) >= MAX_TEMPLATES_TOTAL):
                self.counters.inc(f"brokerwatch_{self.metric}_templates_refused_total", ((hi, lo),))
                raise DecodeError("template_cap", f"exporter already has {MAX_TEMPLATES_PER_EXPORTER} templates")
            self._store(hi, lo, dom, op.tid, compile_template(op.fields, op.scope_count, op.options))
            self.counters.inc(f"brokerwatch_{self.metric}_templates_total", ((hi, lo),))
            self._release_pending(key, d, builder)

    def _store(self, hi: int, lo: int, dom: int, tid: int, t: Template) -> None:
        key = (hi, lo, dom, tid)
        if key not in self.templates:
            self._per_exporter[(hi, lo)] = self._per_exporter.get((hi, lo), 0) + 1
        self.templates[key] = t

    def _withdraw(self, hi: int, lo: int, dom: int, op: TemplateOp) -> None:
        if op.tid >= 256:
            victims = [(hi, lo, dom, op.tid)]
        else:  # all data templates (set 2) or all options templates (set 3) of this domain
            victims = [key for key, t in self.templates.items()
                       if key[:3] == (hi, lo, dom) and t.options == op.options]
        for key in victims:
            if self.templates.pop(key, None) is not None:
                self._per_exporter[(hi, lo)] -= 1
                self.counters.inc(f"brokerwatch_{self.metric}_templates_withdrawn_total", ((hi, lo),))

    # ---- data ----------------------------------------------------------------------------------------------

    def _decode_data(self, ctx, idx: np.ndarray, keep: np.ndarray, builder: FlowBatchBuilder) -> None:
        """Decode the data sets idx (in block order) with the current templates; hold those without one."""
        buf, set_dg, set_id, set_off, set_len, hdr, ex_hi, ex_lo, status = ctx
        if not len(idx):
            return
        idx = idx[(set_id[idx] >= 256) & keep[idx]]
        if not len(idx):
            return
        dg = set_dg[idx]
        dom = hdr[dg, 3]
        tid = set_id[idx]
        # Group sets by scope key (few distinct keys per block): (exporter, domain) factorised, then template id.
        gid, scopes = _factorise(ex_hi[dg], ex_lo[dg], dom)
        code = gid * 65536 + tid
        first = code[0]
        if (code == first).all():
            groups = [(first, np.arange(len(idx)))]
        else:
            order = np.argsort(code, kind="stable")
            sc = code[order]
            cuts = np.flatnonzero(sc[1:] != sc[:-1]) + 1
            starts = np.concatenate(([0], cuts))
            ends = np.concatenate((cuts, [len(sc)]))
            groups = [(sc[a], order[a:b]) for a, b in zip(starts.tolist(), ends.tolist())]
        for key, members in groups:
            k = scopes[int(key) >> 16] + (int(key) & 0xFFFF,)
            sel = idx[members]
            t = self.templates.get(k)
            sdg = set_dg[sel]
            if t is None:
                for j in sel:
                    d = int(set_dg[j])
                    o = int(set_off[j])
                    self._hold(k, buf[o:o + int(set_len[j])].tobytes(), int(hdr[d, 0]), int(hdr[d, 1]))
                    self._unknown_in[d] = True
                continue
            rec_dg, nrec = self._decode_group(t, k, buf, set_off[sel], set_len[sel], sdg, hdr[sdg, 0], hdr[sdg, 1],
                                              builder, status)
            if rec_dg is not None:
                self._rows_dg.append(rec_dg)
            self._records_in += np.bincount(sdg, weights=nrec, minlength=len(self._records_in)).astype(np.int64)

    def _decode_group(self, t: Template, key, buf, soff, slen, sdg, secs, uptime, builder, status):
        """Records of the sets (soff, slen) of one template: rows (flow templates) or sampler/init-time state."""
        nsets = len(soff)
        if t.fixed:
            nrec = self._cap_records(sdg, slen // t.length, status)
            total = int(nrec.sum())
            if total == 0:
                return None, nrec
            need = total * t.length
            if len(self._scratch) < need:  # reused: a fresh large array page-faults on every block
                self._scratch = np.empty(max(need, 2 * len(self._scratch)), np.uint8)
            raw = self._scratch[:need]
            _gather(buf, soff, nrec, t.length, raw)
            rec = np.frombuffer(raw, t.dtype, total)
            set_of_rec = np.repeat(np.arange(nsets), nrec)

            def get(role):
                i, length = t.plan[role]
                return _as_u64(rec[f"f{i}"], length)

            def get_addr16(role):
                i, _ = t.plan[role]
                col = rec[f"f{i}"]
                return col[:, 0].astype(np.uint64), col[:, 1].astype(np.uint64)
        else:
            minlen = max(1, sum(f[2] if f[2] != VARLEN else 1 for f in t.fields))
            cap = min(int(slen.sum()) // minlen + 1, MAX_RECORDS_PER_DATAGRAM * len(soff) + 1)
            used = sorted({i for i, _ in t.plan.values()})
            col_of = np.full(len(t.fields), -1, np.int64)
            col_of[used] = np.arange(len(used))
            nc = max(1, len(used))
            rec_set = np.empty(cap, np.int64)
            fld = np.empty((cap, 2 * nc), np.int64)  # only the fields the plan reads: memory is bounded
            set_bad = np.zeros(len(soff), np.int8)
            total = _walk_varlen(buf, soff, slen, t.flen, col_of, nc, minlen, rec_set, fld, set_bad, cap)
            rec_set, fld = rec_set[:total], fld[:total]
            if set_bad.any():
                hit = sdg[set_bad != 0]
                status[hit[status[hit] == 0]] = REASON_CODE["varlen_overflow"]
                self._last_detail = f"variable-length record of template {key[3]} runs past its set"
                ok = status[sdg[rec_set]] == 0
                rec_set, fld = rec_set[ok], fld[ok]
                total = len(rec_set)
            nrec = np.bincount(rec_set, minlength=nsets)
            nrec = self._cap_records(sdg, nrec, status)
            keep = nrec[rec_set] > 0 if total else np.zeros(0, bool)
            if total and not keep.all():
                rec_set, fld = rec_set[keep], fld[keep]
                total = len(rec_set)
            if total == 0:
                return None, nrec
            set_of_rec = rec_set

            def get(role):
                i, length = t.plan[role]
                c = col_of[i]
                return _read_be(buf, np.ascontiguousarray(fld[:, c]), np.ascontiguousarray(fld[:, nc + c]), length)

            def get_addr16(role):
                i, _ = t.plan[role]
                c = col_of[i]
                o = np.ascontiguousarray(fld[:, c])
                n16 = np.ascontiguousarray(fld[:, nc + c])
                hi = _read_be(buf, o, np.where(n16 == 16, 8, 0), 8)
                lo = _read_be(buf, o + 8, np.where(n16 == 16, 8, 0), 8)
                return hi, lo

        rec_secs = secs[set_of_rec]
        rec_uptime = uptime[set_of_rec]
        if t.options:
            self._options_records(t, key, get, total)
            return None, nrec
        self._flow_rows(t, key, get, get_addr16, total, rec_secs, rec_uptime, builder)
        return sdg[set_of_rec], nrec

    def _cap_records(self, sdg, nrec, status):
        """Reject datagrams that would yield more than MAX_RECORDS_PER_DATAGRAM rows (tiny hostile records would
        turn one 64 KiB datagram into 65535 rows of 88 bytes); their sets then yield nothing."""
        per = self._records_in + np.bincount(sdg, weights=nrec, minlength=len(self._records_in)).astype(np.int64)
        over = per > MAX_RECORDS_PER_DATAGRAM
        if not over.any():
            return nrec
        hit = np.flatnonzero(over)
        hit = hit[hit < len(status)]
        status[hit[status[hit] == 0]] = REASON_CODE["too_many_records"]
        self._last_detail = f"more than {MAX_RECORDS_PER_DATAGRAM} records in one datagram"
        return np.where(over[sdg], 0, nrec)

    def _flow_rows(self, t: Template, key, get, get_addr16, n, rec_secs, rec_uptime, builder) -> None:
        """FLOW_DTYPE rows: each column computed by one array operation from the plan, then one pass writes the rows
        (24 strided column stores into 122-byte rows cost more than the decoding)."""
        plan = t.plan
        hi, lo, dom, _tid = key
        zero = _ZERO_U64
        mapped = np.uint64(0x0000FFFF00000000)
        src_hi, src_lo = _address(plan, "src", get, get_addr16, mapped)
        dst_hi, dst_lo = _address(plan, "dst", get, get_addr16, mapped)
        col = {role: (get(role) if role in plan else zero)
               for role in ("src_port", "dst_port", "proto", "in_if", "out_if", "tcp_flags")}
        rate = self._rates(t, key, get, n)
        octets = get("bytes") * rate if "bytes" in plan else zero
        packets = get("packets") * rate if "packets" in plan else zero
        rev_octets = get("rev_bytes") * rate if "rev_bytes" in plan else zero
        rev_packets = get("rev_packets") * rate if "rev_packets" in plan else zero
        export_ns = rec_secs * 1_000_000_000
        start, end = self._times(t, key, get, export_ns, rec_uptime)
        flags = 0
        if "bytes" not in plan and "packets" not in plan:
            flags |= FLAG_NO_COUNTERS
        elif "packets" not in plan:
            flags |= FLAG_NO_PACKETS  # NSEL initiatorOctets without packets: not "0 packets"
        if "in_if" not in plan and "out_if" not in plan:
            flags |= FLAG_NO_INTERFACES
        if "rev_bytes" in plan or "rev_packets" in plan:  # a biflow / NSEL event: the source is the initiator
            flags |= FLAG_REVERSE | FLAG_ORIENTED
        no_ports = 0 if ("proto" in plan or "src_port" in plan) else FLAG_NO_PORTS
        rows = builder.reserve(n, zero=False)  # _fill_rows writes every field
        _fill_rows(rows, np.ascontiguousarray(start, np.int64), np.ascontiguousarray(end, np.int64), src_hi, src_lo,
                   dst_hi, dst_lo, np.uint64(hi), np.uint64(lo), octets, packets, rev_octets, rev_packets, rate, col["in_if"], col["out_if"],
                   col["src_port"], col["dst_port"], col["proto"], col["tcp_flags"], self._dataset,
                   np.uint8(flags | no_ports), "proto" in plan)

    def _rates(self, t: Template, key, get, n) -> np.ndarray:
        """Sampling rate per record: the record's own fields, else its sampler's, else its domain's, else 1."""
        plan = t.plan
        if "sampling_interval" in plan:
            rate = get("sampling_interval")
        elif "sampling_packet_interval" in plan:
            rate = _packet_rate(get("sampling_packet_interval"),
                                get("sampling_packet_space") if "sampling_packet_space" in plan else None)
        else:
            hi, lo, dom, _ = key
            default = self.samplers.get((hi, lo, dom, -1), 1)
            if "sampler_id" in plan and self.samplers:
                sid = get("sampler_id")
                uniq, inv = np.unique(sid, return_inverse=True)
                table = np.array([self.samplers.get((hi, lo, dom, int(s)), default) for s in uniq], np.uint64)
                rate = table[inv.ravel()]
            elif "in_if" in plan and (hi, lo, dom) in self._if_sampled:
                ifx = get("in_if")
                uniq, inv = np.unique(ifx, return_inverse=True)
                table = np.array([self.samplers.get((hi, lo, dom, -2 - int(i)), default) for i in uniq], np.uint64)
                rate = table[inv.ravel()]
            else:
                return np.full(1, max(default, 1), np.uint64)  # one rate for all: broadcast
        return np.maximum(rate, np.uint64(1))

    def _times(self, t: Template, key, get, export_ns: np.ndarray, uptime: np.ndarray):
        plan = t.plan
        hi, lo, dom, _ = key
        init_ms = self.system_init.get((hi, lo, dom))

        def one(which):
            if f"{which}_s" in plan:
                return get(f"{which}_s").astype(np.int64) * 1_000_000_000
            if f"{which}_ms" in plan:
                return get(f"{which}_ms").astype(np.int64) * 1_000_000
            if f"{which}_us" in plan:
                return _ntp_ns(get(f"{which}_us"), micro=True)
            if f"{which}_ns" in plan:
                return _ntp_ns(get(f"{which}_ns"), micro=False)
            if f"{which}_delta_us" in plan:
                return export_ns - get(f"{which}_delta_us").astype(np.int64) * 1_000
            if f"{which}_uptime" in plan:
                v = get(f"{which}_uptime").astype(np.int64)
                if self.version == 9:
                    # (uptime - v) mod 2**32 ms before export: right across a 32-bit uptime wrap.
                    return export_ns - ((uptime - v) & 0xFFFFFFFF) * 1_000_000
                if init_ms is not None:
                    return (np.int64(init_ms) + v) * 1_000_000  # wraps on hostile values instead of raising
            return None

        start, end = one("start"), one("end")
        if end is None:
            end = start if start is not None else export_ns
        if start is None:
            start = end
        return start, end

    def _options_records(self, t: Template, key, get, n) -> None:
        """Options data: sampling rates per (exporter, domain, sampler) and the exporter's init time."""
        hi, lo, dom, _ = key
        plan = t.plan
        rate = None
        if "sampling_interval" in plan:
            rate = get("sampling_interval")
        elif "sampling_packet_interval" in plan:
            rate = _packet_rate(get("sampling_packet_interval"),
                                get("sampling_packet_space") if "sampling_packet_space" in plan else None)
        if rate is not None:
            if "sampler_id" in plan:
                sid = get("sampler_id").astype(np.int64)
            elif "scope_interface" in plan:
                # Per-interface sampling: key -2 - ifIndex (interface 0 means the whole device: the domain default).
                ifx = get("scope_interface").astype(np.int64)
                sid = np.where(ifx == 0, -1, -2 - ifx)
                if (ifx != 0).any():
                    self._if_sampled.add((hi, lo, dom))
            else:
                sid = np.full(n, -1, np.int64)
            for s, r in zip(sid.tolist(), rate.tolist()):
                k = (hi, lo, dom, int(s))
                if k not in self.samplers and len(self.samplers) >= MAX_SAMPLERS_PER_EXPORTER * 16:
                    continue
                self.samplers[k] = max(int(r), 1)
            self.counters.inc(f"brokerwatch_{self.metric}_sampling_options_total", ((hi, lo),), n)
        if "system_init_ms" in plan:
            self.system_init[(hi, lo, dom)] = int(get("system_init_ms")[-1]) & _INT63  # int64 arithmetic later

    # ---- data before its template ---------------------------------------------------------------------------

    def _hold(self, key, data: bytes, secs: int, uptime: int) -> None:
        exporter = key[:2]
        if exporter not in self.pending and len(self.pending) >= MAX_PENDING_EXPORTERS:
            oldest = next(iter(self.pending))  # dicts keep insertion order: drop the longest-waiting exporter's
            self.counters.inc(f"brokerwatch_{self.metric}_pending_dropped_total", (oldest,),
                              len(self.pending.pop(oldest)))
        held = self.pending.setdefault(exporter, [])
        held.append((key, data, secs, uptime))
        self.counters.inc(f"brokerwatch_{self.metric}_data_before_template_total", (exporter,))
        size = sum(len(h[1]) for h in held)
        while len(held) > MAX_PENDING_SETS_PER_EXPORTER or size > MAX_PENDING_BYTES_PER_EXPORTER:
            size -= len(held.pop(0)[1])
            self.counters.inc(f"brokerwatch_{self.metric}_pending_dropped_total", (exporter,))

    def _release_pending(self, key, d: int, builder: FlowBatchBuilder) -> None:
        held = self.pending.get(key[:2])
        if not held:
            return
        mine = [h for h in held if h[0] == key]
        if not mine:
            return
        rest = [h for h in held if h[0] != key]
        if rest:
            self.pending[key[:2]] = rest
        else:
            del self.pending[key[:2]]
        t = self.templates[key]
        buf = np.frombuffer(b"".join(h[1] for h in mine), np.uint8)
        slen = np.array([len(h[1]) for h in mine], np.int64)
        soff = np.zeros(len(mine), np.int64)
        np.cumsum(slen[:-1], out=soff[1:])
        secs = np.array([h[2] for h in mine], np.int64)
        uptime = np.array([h[3] for h in mine], np.int64)
        sdg = np.full(len(mine), d, np.int64)
        fake_status = np.zeros(len(self._records_in), np.int8)  # a broken held set is dropped, not blamed on this datagram
        rec_dg, _nrec = self._decode_group(t, key, buf, soff, slen, sdg, secs, uptime, builder, fake_status)
        if rec_dg is not None:
            self._rows_dg.append(rec_dg)
        self.counters.inc(f"brokerwatch_{self.metric}_pending_decoded_total", (key[:2],), len(mine))

    # ---- sequence numbers -----------------------------------------------------------------------------------

    def _account_sequences(self, ex_hi, ex_lo, hdr, records, unknown) -> None:
        raise NotImplementedError

    def _account(self, ex_hi, ex_lo, hdr, advance, reset) -> None:
        """Gaps per (exporter, domain) given how far each datagram moves the sequence (reset: no expectation next).

        Vectorised per (exporter, domain) over the block's datagrams in arrival order."""
        gid, scopes = _factorise(ex_hi, ex_lo, hdr[:, 3])
        seq_all = hdr[:, 2]
        advance = np.asarray(advance, np.int64)
        reset = np.asarray(reset, bool)
        for g, key in enumerate(scopes):
            sel = np.flatnonzero(gid == g) if len(scopes) > 1 else slice(None)
            seq, adv, rst = seq_all[sel], advance[sel], reset[sel]
            expected = np.empty_like(seq)
            known = np.ones(len(seq), bool)
            expected[1:] = (seq[:-1] + adv[:-1]) & 0xFFFFFFFF
            known[1:] = ~rst[:-1]
            prev = self._next_seq.get(key)
            expected[0] = prev if prev is not None else 0
            known[0] = prev is not None
            gap = (seq - expected) & 0xFFFFFFFF
            lost = known & (gap > 0) & (gap < 0x80000000)
            if lost.any():
                self.counters.inc(f"brokerwatch_{self.metric}_sequence_lost_total", (key[:2],), int(gap[lost].sum()))
            behind = known & (gap >= 0x80000000)  # a late datagram or an exporter restart
            if behind.any():
                self.counters.inc(f"brokerwatch_{self.metric}_sequence_reordered_total", (key[:2],), int(behind.sum()))
            if rst[-1]:
                self._next_seq.pop(key, None)
            else:
                self._next_seq[key] = int((seq[-1] + adv[-1]) & 0xFFFFFFFF)
        self.counters.inc(f"brokerwatch_{self.metric}_datagrams_total", (), len(ex_hi))


def _factorise(hi: np.ndarray, lo: np.ndarray, dom: np.ndarray) -> tuple[np.ndarray, list[tuple[int, int, int]]]:
    """Small ids for (exporter hi, exporter lo, domain) rows, and the distinct keys in id order."""
    if len(hi) == 0:
        return np.zeros(0, np.int64), []
    if (hi == hi[0]).all() and (lo == lo[0]).all() and (dom == dom[0]).all():
        return np.zeros(len(hi), np.int64), [(int(hi[0]), int(lo[0]), int(dom[0]))]
    # Exact, and 1-D sorts only (np.unique(axis=0) sorts void views, ~50x slower): factorise each column, combine.
    uh, ih = np.unique(hi, return_inverse=True)
    ul, il = np.unique(lo, return_inverse=True)
    ud, idm = np.unique(dom, return_inverse=True)
    combined = (ih.ravel().astype(np.int64) * len(ul) + il.ravel()) * len(ud) + idm.ravel()
    uc, inverse = np.unique(combined, return_inverse=True)
    keys = []
    for c in uc.tolist():
        c, d = divmod(c, len(ud))
        h, lo_i = divmod(c, len(ul))
        keys.append((int(uh[h]), int(ul[lo_i]), int(ud[d])))
    return inverse.ravel().astype(np.int64), keys


def _packet_rate(interval: np.ndarray, space: np.ndarray | None) -> np.ndarray:
    """PSAMP count-based sampling: select ``interval`` packets, skip ``space``: 1 in (interval + space) / interval."""
    if space is None:
        return interval
    iv = np.maximum(interval, np.uint64(1))
    return (iv + space) // iv


def _ntp_ns(v: np.ndarray, micro: bool) -> np.ndarray:
    """64-bit NTP timestamps (seconds since 1900 . 2**-32 fraction) to Unix ns; microsecond form drops 11 bits."""
    secs = (v >> np.uint64(32)).astype(np.int64) - NTP_EPOCH_OFFSET
    frac = v & np.uint64(0xFFFFFFFF)
    if micro:
        frac = frac & np.uint64(0xFFFFF800)
    return secs * 1_000_000_000 + ((frac * np.uint64(1_000_000_000)) >> np.uint64(32)).astype(np.int64)
