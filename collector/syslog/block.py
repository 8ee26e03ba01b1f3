"""Firewall syslog in blocks: numba kernels for headers, tokens and values; Python only where a regex must run.

``SyslogParser.feed_lines`` (a TCP read, a file chunk, a multi-line datagram) comes here. The reference is the
parser's line-at-a-time path in ``parser.py``; a block through here gives the same rows in the same order, the same
counters and the same open-session table as its lines fed one by one (``tests/collector/syslog/
test_block.py`` compares them on every fixture and corpus line and on hypothesis-made blocks).

The steps over a block of n lines, joined into one buffer:

1. ``scan_headers`` (numba): every line's syslog header as spans and stamp numbers.
2. Detection, per line in Python: the profile's ``recognise`` tests and regex, exactly as ``SyslogParser._detect``
   (the same per-sender memory of the last profile).
3. ``kv_spans`` / ``csv_spans`` (numba), per profile over its lines: the values of every key or column its
   messages name.
4. Per line in Python: the message's ``when`` and its regex extraction steps (their match spans are kept, not
   their strings).
5. ``_emit_block`` (numba): each line's record from the spans, as ``SyslogParser._emit`` makes it: the field
   getters (alternatives, ``a+b``, constants, unquoting), addresses, protocol, ports, counters, interfaces,
   application and action maps, times and durations, orientation; or a rejection reason.
6. In line order: rows out; session starts held and ends joined in the parser's session table.

A line this path is not sure of — a header the kernel does not take, a quoted CSV, an address form or a number
the value kernels leave to Python, a profile feature this compiler does not handle, a time zone other than UTC —
goes through the reference path at its place in the block, so nothing depends on which path a line took.
"""

from __future__ import annotations

import gc
import re
from collections import Counter
from dataclasses import dataclass, field
from itertools import chain
from operator import itemgetter

import numba
import numpy as np

from analytics.schema import (
    ACTION_ID,
    FLAG_NO_COUNTERS,
    FLAG_NO_INTERFACES,
    FLAG_NO_PACKETS,
    FLAG_NO_PORTS,
    FLAG_ORIENTED,
    FLOW_DTYPE,
)
from collector.syslog import header_kernel as hk
from collector.syslog.parser import _Record, _update_groups, parse_header
from collector.syslog.header_kernel import scan_headers
from collector.syslog.tokens import csv_spans, kv_spans, pack_keys
from collector.syslog.values import (
    bsd_span,
    clf_span,
    duration_span,
    epoch_span,
    ip_span,
    pack_protocols,
    proto_span,
    stamp_ns_utc,
    uint_span,
    ymd_span,
)

# Provider kinds: where a named field's value may come from on a line.
_P_GROUP, _P_KV, _P_CSV = 0, 1, 2
# Getter alternative kinds.
_A_CONST, _A_SLOT, _A_SUM = 0, 1, 2
# Targets read through one getter each, in the order of a message row's first columns (_M_SRC ...).
_TARGETS = ("src_ip", "dst_ip", "proto", "src_port", "dst_port", "bytes", "packets", "in_if", "out_if", "duration")
_TIME_GROUPS = ("start", "end", "time")
_TIME_CODES = {"ymd_hms": 0, "clf": 1, "bsd": 2, "epoch": 3}
_DURATION_CODES = {"seconds": 0, "milliseconds": 1, "hms": 2}
_KIND_CODES = {"flow": 0, "open": 1, "close": 2}
_KINDS = ("flow", "open", "close")
# Rejection reasons (status codes > 0 of the kernel), as the reference names them.
REASONS = ("", "bad_address", "bad_protocol", "bad_port", "bad_counter", "bad_duration")
# Output columns of _emit_block (int64 array).
(_O_STATUS, _O_KIND, _O_ORIENTED, _O_HASDUR, _O_START, _O_END, _O_SRC_HI, _O_SRC_LO, _O_DST_HI, _O_DST_LO,
 _O_SPORT, _O_DPORT, _O_PROTO, _O_BYTES, _O_PACKETS, _O_APP, _O_ACTION, _O_IN, _O_OUT, _O_FLAGS) = range(20)
_O_SESSION = 20  # then (s, e) per session field, up to MAX_SESSION_FIELDS
MAX_SESSION_FIELDS = 4
_O_WIDTH = _O_SESSION + 2 * MAX_SESSION_FIELDS
_KV_NAME = re.compile(r"[A-Za-z_][\w.\-]*")


class NotCompiled(Exception):
    """A profile feature the block compiler does not handle: that profile's lines take the reference path."""


class _H:
    """The header parts a message's compiled ``when`` reads, as strings."""

    __slots__ = ("body", "msgid")


# ---------------------------------------------------------------------------------------------------------------
# Compiling profiles into tables
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class _Step:
    """One extraction step of a profile or message: kv, csv or regex over a header part."""

    kind: str
    source: str
    first: bool = True  # kv
    delim: int = 44  # csv
    op: object = None  # regex: the bound search/match
    groups: dict = field(default_factory=dict)  # regex: name -> group number
    ngroups: int = 0
    keys: list = field(default_factory=list)  # kv: wanted keys; csv: wanted columns
    col0: int = 0  # first column of this step in the block's KV or CSV array
    slot: int = -1  # regex: index of its match among the message's matches
    keys_packed: tuple = ()


@dataclass
class _MsgPlan:
    """A message kind compiled for the block kernel."""

    gid: int
    message: object
    steps: list = field(default_factory=list)  # message-level steps
    #: Per match slot (recognise, profile regex steps, message regex steps): offset in the line's regs segment.
    match_off: list = field(default_factory=list)
    regs_width: int = 0
    #: Per match slot: a function from m.regs to the (start, end) pairs of the groups read, or None.
    pick: list = field(default_factory=list)
    none_regs: list = field(default_factory=list)  # per match slot: the segment of a match that did not happen
    session_keyed: bool = False
    n_session: int = 0
    #: The message's ``when`` is only the dispatch field's equality test (so dispatch alone decides it).
    only_x: bool = False
    #: The rest of its ``when`` besides that test: (field, values) tests, body regex searches, MSGID fullmatches.
    rest_fields: list = field(default_factory=list)
    rest_body: list = field(default_factory=list)
    rest_msgid: list = field(default_factory=list)
    #: (step, source start column, source end column) of its regex steps, for _choose_simple.
    regex_steps: list = field(default_factory=list)
    profile: object = None


@dataclass
class _ProfPlan:
    """A profile compiled for the block path."""

    profile: object
    fast: bool
    steps: list = field(default_factory=list)
    messages: list = field(default_factory=list)
    rec_groups: dict = field(default_factory=dict)
    rec_ngroups: int = 0
    #: Per profile-level kv/csv step: the when-names it may give, as (name, column in KV/CSV).
    when_cols: list = field(default_factory=list)
    #: The kv/csv steps sized so far, by (type, source, duplicates, delimiter).
    token_steps: dict = field(default_factory=dict)
    why: str = ""
    #: The recognising regex's groups that ``when`` conditions read.
    rec_when: list = field(default_factory=list)
    #: (step, the when-names it may give: group names for a regex step, (name, column) for kv/csv).
    step_when: list = field(default_factory=list)
    #: When every message's ``when`` tests one field for equality (ASA msgnum, FortiGate type, ...): that field,
    #: and its lower-cased value -> the messages, in order, whose test it passes (``others`` for any other value).
    dispatch_field: object = None
    dispatch: dict | None = None
    others: list = field(default_factory=list)
    #: No profile-level steps, the message chosen by a recognising group alone, regex steps only (_choose_simple).
    simple: bool = False


class _Tables:
    """Growing lists that become the kernel's flat int64 tables."""

    def __init__(self) -> None:
        self.consts = bytearray()
        self.const_at: dict[bytes, tuple[int, int]] = {}
        # slots: provider lists
        self.prov_off = [0]
        self.prov_kind: list[int] = []
        self.prov_a: list[int] = []
        self.prov_b: list[int] = []
        # getters: alternative lists; alternatives: part lists
        self.alt_off = [0]
        self.alt_kind: list[int] = []
        self.part_off = [0]
        self.part: list[int] = []  # slot ids, or for a constant (start, end) in the const area
        # maps (lower-cased key -> value), as const spans
        self.map_off = [0]
        self.map_key_s: list[int] = []
        self.map_key_e: list[int] = []
        self.map_val: list[int] = []
        # time candidate lists: (format, getter, second getter or -1)
        self.time_off = [0]
        self.time_fmt: list[int] = []
        self.time_g1: list[int] = []
        self.time_g2: list[int] = []
        # per message rows
        self.msg_rows: list[list[int]] = []
        self.app_off = [0]
        self.app_getters: list[int] = []

    def const(self, text: str) -> tuple[int, int]:
        b = text.encode("latin-1")
        at = self.const_at.get(b)
        if at is None:
            at = (len(self.consts), len(self.consts) + len(b))
            self.consts += b
            self.const_at[b] = at
        return at

    def map(self, entries: dict[str, int]) -> int:
        for k, v in entries.items():
            if k == "" or not k.isascii():
                raise NotCompiled(f"map key {k!r}")
            s, e = self.const(k.lower())
            self.map_key_s.append(s)
            self.map_key_e.append(e)
            self.map_val.append(v)
        self.map_off.append(len(self.map_val))
        return len(self.map_off) - 2


def _picker(groups: list[int]):
    """m.regs -> the (start, end) pairs of these groups, as a tuple (operator.itemgetter, in C)."""
    if len(groups) == 1:
        g = groups[0]
        return lambda regs: (regs[g],)
    return itemgetter(*groups)


def _flat_alternatives(spec) -> list:
    if isinstance(spec, list):
        return [a for s in spec for a in _flat_alternatives(s)]
    return [spec]


class _MsgCompiler:
    """Compiles one message's getters into the tables (slots are per message)."""

    def __init__(self, t: _Tables, providers) -> None:
        self.t = t
        self.providers = providers  # name -> [(kind, a, b)] in update order
        self.slots: dict = {}

    def slot(self, name) -> int:
        sid = self.slots.get(name)
        if sid is None:
            t = self.t
            for kind, a, b in self.providers(name):
                t.prov_kind.append(kind)
                t.prov_a.append(a)
                t.prov_b.append(b)
            t.prov_off.append(len(t.prov_kind))
            sid = self.slots[name] = len(t.prov_off) - 2
        return sid

    def getter(self, spec, sums: bool = False) -> int:
        t = self.t
        for alt in _flat_alternatives(spec):
            if isinstance(alt, dict):
                s, e = t.const(str(alt["const"]))
                t.alt_kind.append(_A_CONST)
                t.part += [s, e]
            elif isinstance(alt, str) and "+" in alt:
                if not sums:
                    raise NotCompiled("a sum outside bytes/packets")
                t.alt_kind.append(_A_SUM)
                for p in alt.split("+"):
                    t.part.append(self.slot(int(p) if p.strip().isdigit() else p.strip()))
            elif isinstance(alt, (int, str)) and not isinstance(alt, bool):
                t.alt_kind.append(_A_SLOT)
                t.part.append(self.slot(alt))
            else:
                raise NotCompiled(f"getter {alt!r}")
            t.part_off.append(len(t.part))
        t.alt_off.append(len(t.alt_kind))
        return len(t.alt_off) - 2

    def plain(self, spec) -> int:
        """A session field: a plain name or column (so that None and "" stay apart, as in the reference key)."""
        if isinstance(spec, bool) or not isinstance(spec, (int, str)) or (isinstance(spec, str) and "+" in spec):
            raise NotCompiled(f"session field {spec!r}")
        return self.slot(spec)


def _names_in(spec) -> list:
    """Field names and columns a getter spec reads."""
    out = []
    for alt in _flat_alternatives(spec):
        if isinstance(alt, dict):
            continue
        if isinstance(alt, str) and "+" in alt:
            out += [int(p) if p.strip().isdigit() else p.strip() for p in alt.split("+")]
        else:
            out.append(alt)
    return out


def _when_names(spec) -> list:
    if spec is None:
        return []
    if isinstance(spec, list):
        return [n for s in spec for n in _when_names(s)]
    return [spec["field"]] if "field" in spec else []


def _step_of(spec: dict) -> _Step:
    kind = spec.get("type")
    source = spec.get("source", "body")
    if kind == "kv":
        return _Step("kv", source, first=spec.get("duplicates", "first") == "first")
    if kind == "csv":
        d = spec.get("delimiter", ",")
        if not d.isascii():
            raise NotCompiled("a non-ASCII delimiter")
        return _Step("csv", source, delim=ord(d))
    rx = re.compile(spec["pattern"])
    return _Step("regex", source, op=rx.search if spec.get("search", True) else rx.match, groups=dict(rx.groupindex),
                 ngroups=rx.groups)


class BlockCompiler:
    """Every profile of a parser compiled into the tables of one block kernel."""

    def __init__(self, profiles: list) -> None:
        self.t = _Tables()
        self.plans: list[_ProfPlan] = []
        self.by_profile: dict[int, _ProfPlan] = {}
        self.messages: list[_MsgPlan] = []
        self.kv_cols = 0
        self.csv_cols = 0
        #: (plan, step) of every kv/csv step with columns of its own, each run once per block over its profile's lines
        self.token_steps: list[tuple[_ProfPlan, _Step]] = []
        self._pending: list = []
        for p in profiles:
            plan = self._profile(p)
            self.plans.append(plan)
            self.by_profile[id(p)] = plan
        self._finish_providers()
        t = self.t
        self.consts = bytes(t.consts)
        #: The constants area put before a block's lines (their spans are offsets from the buffer's start).
        self.consts_head = self.consts + b"\n"
        a = lambda x: np.asarray(x, np.int64)  # noqa: E731
        parts = (a(t.prov_off), a(t.prov_kind), a(t.prov_a), a(t.prov_b), a(t.alt_off), a(t.alt_kind),
                 a(t.part_off), a(t.part), a(t.map_off), a(t.map_key_s), a(t.map_key_e), a(t.map_val),
                 a(t.time_off), a(t.time_fmt), a(t.time_g1), a(t.time_g2), a(t.app_off), a(t.app_getters))
        # One array for all the tables (table k starts at tables[k]): a kernel call passes one array, not 18.
        heads = np.cumsum([len(parts)] + [len(x) for x in parts])[:-1]
        self.tables = np.concatenate([heads.astype(np.int64), *parts])
        width = max((len(r) for r in t.msg_rows), default=1)
        rows = np.full((max(len(t.msg_rows), 1), width), -1, np.int64)
        for i, r in enumerate(t.msg_rows):
            rows[i, :len(r)] = r
        self.msg_table = rows
        self.protocols = pack_protocols()
        #: Some message makes session starts or ends (its lines need their session fields in Python).
        self.has_sessions = any(row[_M_KIND_G] >= 0 or row[_M_KIND_DEF] != 0 for row in t.msg_rows)

    # -- profiles -----------------------------------------------------------------------------------------------

    def _profile(self, p) -> _ProfPlan:
        spec = p.spec or {}
        plan = _ProfPlan(p, True)
        if p.timezone.upper() not in ("UTC", "Z", "GMT"):
            plan.fast, plan.why = False, f"time zone {p.timezone}"
            return plan
        if p.recognise_re is not None:
            plan.rec_groups = dict(p.recognise_re.groupindex)
            plan.rec_ngroups = p.recognise_re.groups
        try:
            plan.steps = [_step_of(s) for s in spec.get("extract", [])]
            for ms in p.messages:
                plan.messages.append(self._message(plan, ms))
        except NotCompiled as exc:
            plan.fast, plan.why = False, str(exc)
            plan.messages = []
            return plan
        # The names each kv step must look up and the columns each csv step must cut: all the messages read.
        names: set = set()
        for ms in p.messages:
            names.update(self._names_read(ms))
        for st in plan.steps + [s for m in plan.messages for s in m.steps]:
            self._size_step(plan, st, names)
        when = set()
        for ms in p.messages:
            when.update(_when_names(ms.spec.get("when")))
        for st in plan.steps:
            if st.kind in ("kv", "csv"):
                plan.when_cols.append([(k, st.col0 + j) for j, k in enumerate(st.keys) if k in when])
            else:
                plan.when_cols.append(sorted(k for k in st.groups if k in when))
        plan.step_when = list(zip(plan.steps, plan.when_cols))
        plan.rec_when = sorted(k for k in plan.rec_groups if k in when)
        self._dispatch(plan)
        return plan

    @staticmethod
    def _dispatch(plan: _ProfPlan) -> None:
        """Message choice by one field's value, when every message's ``when`` tests that field for equality."""
        conds = []
        for mp in plan.messages:
            w = mp.message.spec.get("when")
            parts = w if isinstance(w, list) else [w]
            conds.append([c for c in parts if isinstance(c, dict)])
        fields = None
        for cs in conds:
            names = {c["field"] for c in cs if "field" in c and ("equals" in c or "in" in c)}
            fields = names if fields is None else fields & names
        if not fields:
            return
        x = sorted(fields, key=str)[0]
        plan.dispatch_field = x
        plan.dispatch = {}
        plan.others = []
        wants = []
        for mp, cs in zip(plan.messages, conds):
            c = next(c for c in cs if c.get("field") == x and ("equals" in c or "in" in c))
            want = {str(c["equals"]).lower()} if "equals" in c else {str(v).lower() for v in c["in"]}
            wants.append(want)
            # the rest of the when, as tests on the fields, the body and the MSGID (what _when compiles)
            for d in cs:
                if "field" in d and d is not c:
                    mp.rest_fields.append((d["field"], {str(d["equals"]).lower()} if "equals" in d
                                           else {str(v).lower() for v in d["in"]}))
                if "regex" in d:
                    mp.rest_body.append(re.compile(d["regex"]).search)
                if "msgid" in d:
                    mp.rest_msgid.append(re.compile(d["msgid"]).fullmatch)
            mp.only_x = not (mp.rest_fields or mp.rest_body or mp.rest_msgid)
        for v in set().union(*wants):
            plan.dispatch[v] = [mp for mp, want in zip(plan.messages, wants) if v in want]
        for mp in plan.messages:
            mp.regex_steps = [(st, *_SOURCES[st.source]) for st in mp.steps if st.kind == "regex"]
        plan.simple = (not plan.steps and x in plan.rec_groups and all(mp.only_x for mp in plan.messages)
                       and all(st.kind == "regex" for mp in plan.messages for st in mp.steps))

    def _names_read(self, ms) -> set:
        spec = ms.spec or {}
        names = set()
        for key, fs in (ms.fields or {}).items():
            if key in ("start", "end", "time"):
                for item in (fs if isinstance(fs, list) else [fs]):
                    for g in (item.get("fields") or [item.get("field")]):
                        names.update(_names_in(g))
            elif key == "duration":
                names.update(_names_in(fs["field"]))
            elif key == "action":
                continue
            else:
                names.update(_names_in(fs))
        for k in ("action", "kind", "swap"):
            v = spec.get(k, (ms.fields or {}).get(k) if k == "action" else None)
            if isinstance(v, dict) and "field" in v:
                names.update(_names_in(v["field"]))
        for s in spec.get("session", []):
            names.update(_names_in(s))
        names.update(_when_names(spec.get("when")))
        return names

    def _size_step(self, plan: _ProfPlan, st: _Step, names: set) -> None:
        """Columns for a kv/csv step; a step the same as one already sized in this profile (the same type, source,
        duplicates or delimiter: message steps often repeat the profile's) shares its columns and its kernel run."""
        if st.kind not in ("kv", "csv"):
            return
        same = (st.kind, st.source, st.first, st.delim)
        twin = plan.token_steps.get(same)
        if twin is not None:
            st.keys, st.col0, st.keys_packed = twin.keys, twin.col0, twin.keys_packed
            return
        plan.token_steps[same] = st
        if st.kind == "kv":
            st.keys = sorted(n for n in names if isinstance(n, str) and _KV_NAME.fullmatch(n))
            st.col0 = self.kv_cols
            self.kv_cols += len(st.keys)
            st.keys_packed = pack_keys(st.keys)
        else:
            if "_ncols" in names:
                raise NotCompiled("_ncols")
            st.keys = sorted(n for n in names if isinstance(n, int))
            st.col0 = self.csv_cols
            self.csv_cols += len(st.keys)
        self.token_steps.append((plan, st))

    # -- messages -----------------------------------------------------------------------------------------------

    def _message(self, plan: _ProfPlan, ms) -> _MsgPlan:
        spec = ms.spec or {}
        gid = len(self.messages)
        mp = _MsgPlan(gid, ms, profile=plan.profile)
        self.messages.append(mp)
        mp.steps = [_step_of(s) for s in spec.get("extract", [])]
        # Match slots: the recognise regex, then the profile's regex steps, then the message's. Of each match only
        # the groups some field reads are handed to the kernel (their spans, after the source's offset); the
        # layout is known once every getter is compiled, so group providers are patched at the end.
        exists = [plan.profile.recognise_re is not None]
        exists += [True for st in plan.steps if st.kind == "regex"]
        exists += [True for st in mp.steps if st.kind == "regex"]
        k = 1
        for st in plan.steps + mp.steps:
            if st.kind == "regex":
                st.slot = k
                k += 1
        steps = plan.steps + mp.steps
        pending: list = []  # kv/csv providers: their columns are known once the profile's steps are sized
        groups: list = []  # group providers: (position in the provider table, match slot, group number)

        def providers(name):
            out = []
            base = len(self.t.prov_kind)
            if isinstance(name, str) and name in plan.rec_groups:
                out.append((_P_GROUP, -1, -1))
                groups.append((base + len(out) - 1, 0, plan.rec_groups[name]))
            for st in steps:
                if st.kind == "regex" and isinstance(name, str) and name in st.groups:
                    out.append((_P_GROUP, -1, -1))
                    groups.append((base + len(out) - 1, st.slot, st.groups[name]))
                elif st.kind == "kv" and isinstance(name, str) and _KV_NAME.fullmatch(name):
                    out.append((_P_KV, -1, 0))
                    pending.append((base + len(out) - 1, st, name))
                elif st.kind == "csv" and isinstance(name, int):
                    out.append((_P_CSV, -1, 0))
                    pending.append((base + len(out) - 1, st, name))
            return out

        c = _MsgCompiler(self.t, providers)
        fields = ms.fields or {}
        row = []
        for target in _TARGETS:
            if target == "duration":
                row.append(c.getter(fields["duration"]["field"]) if "duration" in fields else -1)
            else:
                row.append(c.getter(fields[target], sums=target in ("bytes", "packets")) if target in fields else -1)
        row.append(_DURATION_CODES[fields["duration"].get("format", "seconds")] if "duration" in fields else -1)
        # Application id: each alternative is tried until one maps; the profile's app_protocols map.
        t = self.t
        if "app" in fields and plan.profile.app_protocols:
            for s in (fields["app"] if isinstance(fields["app"], list) else [fields["app"]]):
                t.app_getters.append(c.getter(s))
        t.app_off.append(len(t.app_getters))
        row.append(len(t.app_off) - 2)
        row.append(t.map(plan.profile.app_protocols))
        # Action and kind: a constant, or a field through a map with a default.
        for key, names in (("action", ACTION_ID), ("kind", _KIND_CODES)):
            sp = spec.get(key, fields.get("action") if key == "action" else None)
            if key == "kind" and sp is None:
                sp = "flow"
            if sp is None:
                row += [-1, -1, 0]
            elif isinstance(sp, str):
                row += [-1, -1, names[sp]]
            else:
                default = "" if sp.get("default") is None else str(sp.get("default"))
                if key == "kind":
                    default = default or "flow"
                mapping = {str(k).lower(): ("" if v is None else str(v)) for k, v in (sp.get("map") or {}).items()}
                if key == "kind":
                    mapping = {k: (v or "flow") for k, v in mapping.items()}
                g = c.getter(sp["field"]) if "field" in sp else -1
                row += [g, t.map({k: names[v] for k, v in mapping.items()}), names[default]]
        # Swap: the values that mean the message names the responder first.
        sw = spec.get("swap")
        if sw is not None:
            row += [c.getter(sw["field"]), t.map({str(x).lower(): 1 for x in sw["in"]})]
        else:
            row += [-1, -1]
        row.append(1 if plan.profile.orient_unknown == "lower_port_is_destination" else 0)
        # Times: candidate lists for start, end, time.
        for grp in _TIME_GROUPS:
            if grp in fields:
                for item in (fields[grp] if isinstance(fields[grp], list) else [fields[grp]]):
                    t.time_fmt.append(_TIME_CODES[item["format"]])
                    if "fields" in item:
                        parts = item["fields"]
                        if len(parts) != 2:
                            raise NotCompiled("a time of other than two fields")
                        t.time_g1.append(c.getter(parts[0]))
                        t.time_g2.append(c.getter(parts[1]))
                    else:
                        t.time_g1.append(c.getter(item["field"]))
                        t.time_g2.append(-1)
            t.time_off.append(len(t.time_fmt))
            row.append(len(t.time_off) - 2)
        # Session fields.
        session = spec.get("session", [])
        if len(session) > MAX_SESSION_FIELDS:
            raise NotCompiled("more than four session fields")
        mp.session_keyed = bool(session)
        mp.n_session = len(session)
        row.append(len(session))
        row += [c.plain(s) for s in session]
        row += [-1] * (MAX_SESSION_FIELDS - len(session))
        # The regs layout: per match slot that exists, [source offset, (start, end) of each group read], in the
        # order of mp.pick (the groups, sorted); a slot no field reads takes no room.
        off = 0
        for j, ok in enumerate(exists):
            needed = sorted({g for _, jj, g in groups if jj == j}) if ok else []
            mp.match_off.append(off if needed else -1)
            mp.pick.append(_picker(needed) if needed else None)
            width = 1 + 2 * len(needed) if needed else 0
            mp.none_regs.append([-1] * width)
            off += width
            for at, jj, g in groups:
                if jj == j:
                    self.t.prov_a[at] = mp.match_off[j]
                    self.t.prov_b[at] = needed.index(g)
        mp.regs_width = off
        # Resolve kv/csv provider columns once the steps are sized (after the whole profile is compiled).
        self._pending += [(plan, at, st, name) for at, st, name in pending]
        t.msg_rows.append(row)
        return mp

    def _finish_providers(self) -> None:
        """Kv/csv providers get their column numbers (known once every message of a profile is compiled)."""
        for plan, at, st, name in self._pending:
            if plan.fast:
                self.t.prov_a[at] = st.col0 + st.keys.index(name)


# Columns of a message row (msg_table).
(_M_SRC, _M_DST, _M_PROTO, _M_SPORT, _M_DPORT, _M_BYTES, _M_PACKETS, _M_IN, _M_OUT, _M_DUR, _M_DURFMT, _M_APPS,
 _M_APPMAP, _M_ACT_G, _M_ACT_MAP, _M_ACT_DEF, _M_KIND_G, _M_KIND_MAP, _M_KIND_DEF, _M_SWAP_G, _M_SWAP_MAP,
 _M_ORIENT_PORT, _M_T_START, _M_T_END, _M_T_TIME, _M_NSESS, _M_SESS) = range(27)


# ---------------------------------------------------------------------------------------------------------------
# The record kernel
# ---------------------------------------------------------------------------------------------------------------


# The small helpers below take arrays they only read and never make one: compiled without numba's reference
# counting (_nrt=False), which otherwise costs an atomic increment and decrement per array per call, about half of
# the record kernel's time (measured: 2.0-2.5 -> 1.2-1.7 us/line on ASA lines).
@numba.njit(cache=True, _nrt=False)
def _slot_span(i, sl, regs, roff, kv, cv, tb):
    """(present, s, e) of a named field on line i: the last provider that has it (dict-update order)."""
    b0 = tb[0]
    for p in range(tb[b0 + sl + 1] - 1, tb[b0 + sl] - 1, -1):
        k = tb[tb[1] + p]
        a = tb[tb[2] + p]
        if k == 0:
            base = regs[roff + a]
            if base < 0:
                continue
            g = tb[tb[3] + p]
            s = regs[roff + a + 1 + 2 * g]
            if s < 0:
                continue
            return True, base + s, base + regs[roff + a + 2 + 2 * g]
        elif k == 1:
            s = kv[i, a, 0]
            if s < 0:
                continue
            return True, s, kv[i, a, 1]
        else:
            s = cv[i, a, 0]
            if s < 0:
                continue
            return True, s, cv[i, a, 1]
    return False, 0, 0


@numba.njit(cache=True, _nrt=False)
def _getter(i, g, buf, regs, roff, kv, cv, tb):
    """Value of getter g on line i: (status, s, e, number); status 0 none, 1 text span, 2 number, -1 undecided."""
    if g < 0:  # the message does not map this field
        return 0, 0, 0, 0
    part = tb[7]
    for a in range(tb[tb[4] + g], tb[tb[4] + g + 1]):
        k = tb[tb[5] + a]
        p0 = tb[tb[6] + a]
        if k == 0:
            if tb[part + p0 + 1] > tb[part + p0]:
                return 1, tb[part + p0], tb[part + p0 + 1], 0
        elif k == 1:
            ok, s, e = _slot_span(i, tb[part + p0], regs, roff, kv, cv, tb)
            if ok:
                if e - s > 1 and buf[s] == 34 and buf[e - 1] == 34:
                    s += 1
                    e -= 1
                if e > s:
                    return 1, s, e, 0
        else:
            total = -1
            for q in range(p0, tb[tb[6] + a + 1]):
                ok, s, e = _slot_span(i, tb[part + q], regs, roff, kv, cv, tb)
                if not ok or e == s:
                    continue
                if e - s > 1 and buf[s] == 34 and buf[e - 1] == 34:
                    s += 1
                    e -= 1
                    if e == s:
                        continue
                st, v = uint_span(buf, s, e)
                if st != 1 or v > 4611686018427387903 or total > 4611686018427387903:
                    return -1, 0, 0, 0  # int() may take it (sign, spaces), or the sum may not fit: Python decides
                total = v if total < 0 else total + v
            if total >= 0:
                return 2, 0, 0, total
    return 0, 0, 0, 0


@numba.njit(cache=True, _nrt=False)
def _lookup(buf, s, e, mp, tb):
    """Map mp's value for buf[s:e] compared case-insensitively; -1 when absent."""
    n = e - s
    for j in range(tb[tb[8] + mp], tb[tb[8] + mp + 1]):
        ks = tb[tb[9] + j]
        if tb[tb[10] + j] - ks != n:
            continue
        same = True
        for q in range(n):
            c = buf[s + q]
            if 65 <= c <= 90:
                c += 32
            if c != buf[ks + q]:
                same = False
                break
        if same:
            return tb[tb[11] + j]
    return -1


@numba.njit(cache=True, _nrt=False)
def _mapped(i, g, mp, default, buf, regs, roff, kv, cv, tb):
    """A {field, map, default} value: (status, value); status -1 when undecided."""
    if g < 0:
        return 1, default
    st, s, e, num = _getter(i, g, buf, regs, roff, kv, cv, tb)
    if st < 0 or st == 2:
        return -1, 0
    if st == 0:
        return 1, default
    v = _lookup(buf, s, e, mp, tb)
    return 1, (default if v < 0 else v)


@numba.njit(cache=True, _nrt=False)
def _number(st, s, e, num, buf):
    """A getter's value read as str.isdigit() + int(): (status, value); 0 not digits, -1 undecided."""
    if st == 2:
        return 1, num
    return uint_span(buf, s, e)


@numba.njit(cache=True, _nrt=False)
def _count(i, g, buf, regs, roff, kv, cv, tb):
    """A counter field (bytes, packets): (0 absent, 1 a value, 2 not a number, -1 undecided), value."""
    st, s, e, num = _getter(i, g, buf, regs, roff, kv, cv, tb)
    if st < 0:
        return -1, 0
    if st == 0:
        return 0, 0
    a, v = _number(st, s, e, num, buf)
    if a < 0:
        return -1, 0
    if a == 0:
        return 2, 0
    return 1, v


@numba.njit(cache=True)
def _time(i, grp, ref, buf, scratch, regs, roff, kv, cv, tb):
    """SyslogParser._time over a candidate list: (status, ns); status 0 when none parses, -1 undecided."""
    for c in range(tb[tb[12] + grp], tb[tb[12] + grp + 1]):
        st, s, e, num = _getter(i, tb[tb[14] + c], buf, regs, roff, kv, cv, tb)
        if st < 0 or st == 2:
            return -1, 0
        if st == 0:
            continue
        src = buf
        g2 = tb[tb[15] + c]
        if g2 >= 0:  # two fields joined by a space ("date" "time")
            st2, s2, e2, num2 = _getter(i, g2, buf, regs, roff, kv, cv, tb)
            if st2 < 0 or st2 == 2:
                return -1, 0
            if st2 == 0:
                continue
            n1 = e - s
            n2 = e2 - s2
            if n1 + n2 + 1 > scratch.shape[0]:
                return -1, 0
            scratch[:n1] = buf[s:e]
            scratch[n1] = 32
            scratch[n1 + 1:n1 + 1 + n2] = buf[s2:e2]
            src = scratch
            s = 0
            e = n1 + 1 + n2
        fmt = tb[tb[13] + c]
        if fmt == 3:
            st, ns = epoch_span(src, s, e)
            if st < 0:
                return -1, 0
            if st == 1:
                return 1, ns
            continue
        if fmt == 0:
            st, y, mo, d, hh, mi, ss, fr, ho, off = ymd_span(src, s, e)
        elif fmt == 1:
            st, y, mo, d, hh, mi, ss, fr, ho, off = clf_span(src, s, e)
        else:
            st, y, mo, d, hh, mi, ss, fr, ho, off = bsd_span(src, s, e)
        if st < 0:
            return -1, 0
        if st == 0:
            continue
        if y > 2200 or (y >= 0 and y < 1700):
            return -1, 0  # far from now: ns may not fit int64 (Python rejects the line on overflow)
        st, ns = stamp_ns_utc(y, mo, d, hh, mi, ss, fr, ho, off, ref)
        if st < 0:
            return -1, 0
        if st == 1:
            return 1, ns
    return 0, 0


@numba.njit(cache=True)
def _emit_block(buf, n, msg_ids, roffs, regs, kv, cv, hdr, recv_ns, ref, msg_table, tb, pn_buf, pn_off, pn_num,
                out):
    """Each line's record (SyslogParser._emit up to the session table) into out; status -1 leaves it to Python."""
    scratch = np.empty(256, np.uint8)
    for i in range(n):
        m = msg_ids[i]
        o = out[i]
        if m < 0:
            o[_O_STATUS] = -1
            continue
        row = msg_table[m]
        roff = roffs[i]
        o[_O_STATUS] = -1
        # kind
        st, kind = _mapped(i, row[_M_KIND_G], row[_M_KIND_MAP], row[_M_KIND_DEF], buf, regs, roff, kv, cv, tb)
        if st < 0:
            continue
        # addresses
        st, s, e, num = _getter(i, row[_M_SRC], buf, regs, roff, kv, cv, tb)
        if st < 0 or st == 2:
            continue
        ss_, sh, sl = ip_span(buf, s, e)  # "" (absent) is not an address, as in the reference
        st, s, e, num = _getter(i, row[_M_DST], buf, regs, roff, kv, cv, tb)
        if st < 0 or st == 2:
            continue
        ds_, dh, dl = ip_span(buf, s, e)
        if ss_ < 0 or ds_ < 0:
            continue
        if ss_ == 0 or ds_ == 0:
            o[_O_STATUS] = 1
            continue
        # protocol
        st, s, e, num = _getter(i, row[_M_PROTO], buf, regs, roff, kv, cv, tb)
        if st < 0 or st == 2:
            continue
        if st == 0:
            o[_O_STATUS] = 2
            continue
        ps, proto = proto_span(buf, s, e, pn_buf, pn_off, pn_num)
        if ps < 0:
            continue
        if ps == 0:
            o[_O_STATUS] = 2
            continue
        flags = 0
        sport = 0
        dport = 0
        if proto == 6 or proto == 17 or proto == 33 or proto == 132 or proto == 136:
            st1, s1, e1, n1 = _getter(i, row[_M_SPORT], buf, regs, roff, kv, cv, tb)
            st2, s2, e2, n2 = _getter(i, row[_M_DPORT], buf, regs, roff, kv, cv, tb)
            if st1 < 0 or st2 < 0:
                continue
            if st1 == 0 or st2 == 0:
                flags |= FLAG_NO_PORTS
            else:
                a1, sport = _number(st1, s1, e1, n1, buf)
                a2, dport = _number(st2, s2, e2, n2, buf)
                # not digits, or more digits than fit (-1): either way the reference rejects the port
                if a1 != 1 or a2 != 1 or sport > 65535 or dport > 65535:
                    o[_O_STATUS] = 3
                    continue
        else:
            flags |= FLAG_NO_PORTS
        # counters
        npackets = 0
        a, nbytes = _count(i, row[_M_BYTES], buf, regs, roff, kv, cv, tb)
        if a < 0:
            continue
        if a == 2:
            o[_O_STATUS] = 4
            continue
        if a == 0:
            flags |= FLAG_NO_COUNTERS
        else:
            a, npackets = _count(i, row[_M_PACKETS], buf, regs, roff, kv, cv, tb)
            if a < 0:
                continue
            if a == 2:
                o[_O_STATUS] = 4
                continue
            if a == 0:
                flags |= FLAG_NO_PACKETS  # bytes known, packets not
        # interfaces: numeric ids only
        in_if = 0
        out_if = 0
        st1, s1, e1, n1 = _getter(i, row[_M_IN], buf, regs, roff, kv, cv, tb)
        st2, s2, e2, n2 = _getter(i, row[_M_OUT], buf, regs, roff, kv, cv, tb)
        if st1 < 0 or st2 < 0:
            continue
        good = False
        if st1 > 0 and st2 > 0:
            a1, v1 = _number(st1, s1, e1, n1, buf)
            a2, v2 = _number(st2, s2, e2, n2, buf)
            if a1 == 1 and a2 == 1 and v1 < 4294967296 and v2 < 4294967296:
                good = True
                in_if = v1
                out_if = v2
        if not good:
            flags |= FLAG_NO_INTERFACES
        # application id
        app = 0
        undecided = False
        for q in range(tb[tb[16] + row[_M_APPS]], tb[tb[16] + row[_M_APPS] + 1]):
            st, s, e, num = _getter(i, tb[tb[17] + q], buf, regs, roff, kv, cv, tb)
            if st < 0 or st == 2:
                undecided = True
                break
            if st == 1:
                v = _lookup(buf, s, e, row[_M_APPMAP], tb)
                if v > 0:
                    app = v
                    break
        if undecided:
            continue
        # action
        st, action = _mapped(i, row[_M_ACT_G], row[_M_ACT_MAP], row[_M_ACT_DEF], buf, regs, roff, kv, cv, tb)
        if st < 0:
            continue
        # duration
        has_dur = False
        duration = 0
        if row[_M_DUR] >= 0:
            st, s, e, num = _getter(i, row[_M_DUR], buf, regs, roff, kv, cv, tb)
            if st < 0 or st == 2:
                continue
            if st == 1:
                a, duration = duration_span(buf, s, e, row[_M_DURFMT])
                if a < 0:
                    continue
                if a == 0:
                    o[_O_STATUS] = 5
                    continue
                has_dur = True
        # times
        has_start = False
        start = 0
        has_end = False
        end = 0
        a, v = _time(i, row[_M_T_START], ref, buf, scratch, regs, roff, kv, cv, tb)
        if a < 0:
            continue
        if a == 1:
            has_start = True
            start = v
        a, v = _time(i, row[_M_T_END], ref, buf, scratch, regs, roff, kv, cv, tb)
        if a < 0:
            continue
        if a == 1:
            has_end = True
            end = v
        if not has_end and has_start and has_dur:
            if start > 9223372036854775807 - duration:
                continue  # past int64: the reference rejects the line when it stores the row
            has_end = True
            end = start + duration
        if not has_end:
            a, v = _time(i, row[_M_T_TIME], ref, buf, scratch, regs, roff, kv, cv, tb)
            if a < 0:
                continue
            if a == 1:
                has_end = True
                end = v
        if not has_end and hdr[i, hk.H_HAS_STAMP] == 1:
            y = hdr[i, hk.H_YEAR]
            if y > 2200 or (y >= 0 and y < 1700):
                continue
            a, v = stamp_ns_utc(y, hdr[i, hk.H_MON], hdr[i, hk.H_DAY], hdr[i, hk.H_HOUR], hdr[i, hk.H_MINUTE],
                                hdr[i, hk.H_SECOND], hdr[i, hk.H_NANOS], hdr[i, hk.H_HAS_OFFSET],
                                hdr[i, hk.H_OFFSET], ref)
            if a < 0:
                continue
            if a == 1:
                has_end = True
                end = v
        if not has_end:
            end = recv_ns
        if not has_start:
            if has_dur and end < -9223372036854775807 + duration:
                continue
            start = end - duration if has_dur else end
        # orientation
        oriented = 1
        if row[_M_SWAP_G] >= 0:
            st, s, e, num = _getter(i, row[_M_SWAP_G], buf, regs, roff, kv, cv, tb)
            if st < 0 or st == 2:
                continue
            if st == 1 and _lookup(buf, s, e, row[_M_SWAP_MAP], tb) == 1:
                sh, sl, dh, dl = dh, dl, sh, sl
                sport, dport = dport, sport
                in_if, out_if = out_if, in_if
        elif kind == 2 and row[_M_ORIENT_PORT] == 1:
            oriented = 0
        # session fields: raw presence kept apart from "" (the reference key has None for an absent field)
        for q in range(row[_M_NSESS]):
            ok, s, e = _slot_span(i, row[_M_SESS + q], regs, roff, kv, cv, tb)
            if ok:
                if e - s > 1 and buf[s] == 34 and buf[e - 1] == 34:
                    s += 1
                    e -= 1
                o[_O_SESSION + 2 * q] = s
                o[_O_SESSION + 2 * q + 1] = e
            else:
                o[_O_SESSION + 2 * q] = -1
                o[_O_SESSION + 2 * q + 1] = -1
        o[_O_KIND] = kind
        o[_O_ORIENTED] = oriented
        o[_O_HASDUR] = 1 if has_dur else 0
        o[_O_START] = start
        o[_O_END] = end
        # address words are uint64: stored as their int64 bit patterns (read back through a uint64 view)
        o[_O_SRC_HI] = np.int64(np.uint64(sh))
        o[_O_SRC_LO] = np.int64(np.uint64(sl))
        o[_O_DST_HI] = np.int64(np.uint64(dh))
        o[_O_DST_LO] = np.int64(np.uint64(dl))
        o[_O_SPORT] = sport
        o[_O_DPORT] = dport
        o[_O_PROTO] = proto
        o[_O_BYTES] = nbytes
        o[_O_PACKETS] = npackets
        o[_O_APP] = app
        o[_O_ACTION] = action
        o[_O_IN] = in_if
        o[_O_OUT] = out_if
        o[_O_FLAGS] = flags
        o[_O_STATUS] = 0


@numba.njit(cache=True)
def _join_ends(out, held, ends, sources):
    """SyslogParser._close over a block's session ends: sources[k] is the line of the end's start in this block,
    -2 - slot for a start held from an earlier block, -1 for none."""
    for k in range(len(ends)):
        i = ends[k]
        s = sources[k]
        e = out[i]
        if s != -1:
            o = out[s] if s >= 0 else held[-2 - s]
            # the start knows who initiated the connection; the end knows bytes and duration
            for c in range(_O_SRC_HI, _O_DPORT + 1):
                e[c] = o[c]
            if (e[_O_FLAGS] & FLAG_NO_INTERFACES) != 0 and (o[_O_FLAGS] & FLAG_NO_INTERFACES) == 0:
                e[_O_IN] = o[_O_IN]
                e[_O_OUT] = o[_O_OUT]
                e[_O_FLAGS] &= ~FLAG_NO_INTERFACES
            if e[_O_APP] == 0:
                e[_O_APP] = o[_O_APP]
            if e[_O_HASDUR] == 0:
                e[_O_START] = min(o[_O_START], e[_O_END])
            e[_O_ORIENTED] = 1
        if e[_O_ORIENTED] == 0 and e[_O_SPORT] < e[_O_DPORT]:
            # an end whose start was not seen and that does not say who initiated: the lower port is the service
            for a, b in ((_O_SRC_HI, _O_DST_HI), (_O_SRC_LO, _O_DST_LO), (_O_SPORT, _O_DPORT), (_O_IN, _O_OUT)):
                t = e[a]
                e[a] = e[b]
                e[b] = t
        if e[_O_ORIENTED] != 0:  # a session log names the initiator first (or its start did)
            e[_O_FLAGS] |= FLAG_ORIENTED


@numba.njit(cache=True)
def _rows_out(out, take, msg_ids, datasets, exporter_hi, exporter_lo, rows):
    """FlowBatch rows (FLOW_DTYPE records) from the kernel's output lines take, in that order."""
    for k in range(len(take)):
        o = out[take[k]]
        r = rows[k]
        r["start_ns"] = o[_O_START]
        r["end_ns"] = o[_O_END]
        r["src_hi"] = np.uint64(o[_O_SRC_HI])
        r["src_lo"] = np.uint64(o[_O_SRC_LO])
        r["dst_hi"] = np.uint64(o[_O_DST_HI])
        r["dst_lo"] = np.uint64(o[_O_DST_LO])
        r["exporter_hi"] = exporter_hi
        r["exporter_lo"] = exporter_lo
        r["bytes"] = np.uint64(o[_O_BYTES])
        r["packets"] = np.uint64(o[_O_PACKETS])
        r["rev_bytes"] = 0
        r["rev_packets"] = 0
        r["sampling_rate"] = 1
        r["in_if"] = o[_O_IN]
        r["out_if"] = o[_O_OUT]
        r["topic_id"] = 0
        r["src_port"] = o[_O_SPORT]
        r["dst_port"] = o[_O_DPORT]
        r["proto"] = o[_O_PROTO]
        r["tcp_flags"] = 0
        r["app_proto"] = o[_O_APP]
        r["action"] = o[_O_ACTION]
        r["dataset"] = datasets[msg_ids[take[k]]]
        r["flags"] = o[_O_FLAGS]


# ---------------------------------------------------------------------------------------------------------------
# The block driver
# ---------------------------------------------------------------------------------------------------------------

#: The header columns the Python passes read, in the order of their rows (``R_*`` indexes).
_PY_COLS = [hk.H_OK, hk.H_BODY_S, hk.H_BODY_E, hk.H_HOST_S, hk.H_HOST_E, hk.H_APP_S, hk.H_APP_E, hk.H_MSGID_S,
            hk.H_MSGID_E, hk.H_MSG_S, hk.H_MSG_E, hk.H_SD_S, hk.H_SD_E, hk.H_TEXT_S, hk.H_TEXT_E]
(R_OK, R_BODY_S, R_BODY_E, R_HOST_S, R_HOST_E, R_APP_S, R_APP_E, R_MSGID_S, R_MSGID_E, R_MSG_S, R_MSG_E, R_SD_S,
 R_SD_E, R_TEXT_S, R_TEXT_E) = range(len(_PY_COLS))
_SOURCES = {"body": (R_BODY_S, R_BODY_E), "msg": (R_MSG_S, R_MSG_E), "sd": (R_SD_S, R_SD_E)}


def _recognise(p, h: _H):
    """Profile.recognises without filling a dict: False, or (True, the recognising regex's match or None)."""
    if p.contains:
        body = h.body
        for c in p.contains:
            if c in body:
                break
        else:
            return None
    if p.app_re is not None and not p.app_re.fullmatch(h.app):
        return None
    if p.msgid_re is not None and not p.msgid_re.fullmatch(h.msgid):
        return None
    if p.recognise_re is not None:
        m = p.recognise_re.search(h.body)
        if m is None:
            return None
        return m
    return True


def _recogniser(p):
    """Profile.recognises as one function of (body, block text, header row) that returns the recognising regex's
    match (True when the profile has none) or None, reading APP-NAME and MSGID from the block text only if asked."""
    contains = p.contains
    app = p.app_re.fullmatch if p.app_re is not None else None
    msgid = p.msgid_re.fullmatch if p.msgid_re is not None else None
    search = p.recognise_re.search if p.recognise_re is not None else None
    AS, AE, IS, IE = R_APP_S, R_APP_E, R_MSGID_S, R_MSGID_E

    def recognise(body: str, T: str, row: list):
        if contains:
            for c in contains:
                if c in body:
                    break
            else:
                return None
        if app is not None and not app(T[row[AS]:row[AE]]):
            return None
        if msgid is not None and not msgid(T[row[IS]:row[IE]]):
            return None
        if search is not None:
            return search(body)
        return True

    return recognise


class BlockPath:
    """A SyslogParser's block path: its profiles compiled once, then ``feed`` per block of lines."""

    def __init__(self, parser) -> None:
        self.parser = parser
        self.c = BlockCompiler(parser.profiles)
        self.tables = self.c.tables
        #: Lines this path finished itself, and lines it handed to the reference path (for tests and tuning).
        self.kernel_lines = 0
        self.reference_lines = 0
        #: Held session starts (rows of the kernel's output); the parser's session table maps keys to slots here.
        self.held = np.empty((64, _O_WIDTH), np.int64)
        self.free = list(range(63, -1, -1))
        self._pending: dict[int, int] = {}
        self._out = self.held
        self.msg_plans = self.c.messages
        self.datasets = np.zeros(max(len(self.msg_plans), 1), np.uint8)
        self.msg_label = [("syslog",)] * len(self.msg_plans)
        for plan in self.c.plans:
            for mp in plan.messages:
                self.datasets[mp.gid] = plan.profile.dataset
                self.msg_label[mp.gid] = plan.profile.label
        #: Per profile, its recognise test over (body, block text, header row), as Profile.recognises.
        self.recognisers = {id(p): _recogniser(p) for p in parser.profiles}
        self.recognise_order = [(p, self.recognisers[id(p)]) for p in parser.profiles]

    def feed(self, lines: list, exporter: tuple[int, int], recv_ns: int, builder) -> int:
        """Parse a block of lines from one sender; returns the rows appended to builder (as feed_lines).

        Python's cyclic garbage collector is paused for the block: the block makes and drops many small tuples,
        lists and match objects (freed by reference counting), and the collections their count triggered took a
        fifth of the time (measured: ASA 83k -> 108k lines/s, PAN-OS 96k -> 124k). It runs again after the block.
        """
        if not gc.isenabled():
            return self._feed(lines, exporter, recv_ns, builder)
        gc.disable()
        try:
            return self._feed(lines, exporter, recv_ns, builder)
        finally:
            gc.enable()

    def _feed(self, lines: list, exporter: tuple[int, int], recv_ns: int, builder) -> int:
        P = self.parser
        c = self.c
        n = len(lines)
        max_line = P.max_line
        # The profiles' constants first, so that their spans and the lines' are offsets into one buffer.
        buf = b"\n".join([c.consts, *lines])  # one copy: consts_head is c.consts + b"\n"
        lens = np.fromiter(map(len, lines), np.int64, n)
        ends = np.cumsum(lens + 1) - 1 + len(c.consts_head)
        starts = ends - lens
        arr = np.frombuffer(buf, np.uint8)
        hdr = scan_headers(arr, starts, ends)
        T = buf.decode("latin-1")
        H = hdr[:, _PY_COLS].tolist()
        # -- pass 1: detection, in line order (the per-sender memory of the last profile is order-dependent)
        plans: list = [None] * n  # _ProfPlan, "unknown", "done", or (profile, Header, f) for the reference path
        bodies: list = [None] * n
        hosts: list = [None] * n
        recs: list = [None] * n
        last_profile = P._last_profile
        lp_get = last_profile.get
        recognisers = self.recognisers
        by_profile = c.by_profile
        groups: dict[int, list[int]] = {}
        # per sender key: (its last profile, that profile's recogniser, plan, and list of lines in groups)
        memo: dict = {}
        BS, BE, HS, HE = R_BODY_S, R_BODY_E, R_HOST_S, R_HOST_E
        okl = ((hdr[:, hk.H_OK] == 1) & (lens <= max_line)).tolist()
        for i in range(n):
            if not okl[i]:
                plans[i] = self._detect_reference(lines[i], exporter)
                continue
            row = H[i]
            body = T[row[BS]:row[BE]]
            host = T[row[HS]:row[HE]]
            key = (exporter, host)
            last = lp_get(key)
            found = None
            if last is not None:
                ent = memo.get(key)
                if ent is None or ent[0] is not last:
                    plan = by_profile[id(last)]
                    ent = memo[key] = (last, recognisers[id(last)], plan,
                                       groups.setdefault(id(plan), []) if plan.fast else None)
                m = ent[1](body, T, row)
                if m is not None:
                    bodies[i] = body
                    hosts[i] = host
                    recs[i] = m if m is not True else None
                    plans[i] = ent[2]
                    if ent[3] is not None:
                        ent[3].append(i)
                    continue
            if found is None:
                for p, recog in self.recognise_order:
                    if p is not last:
                        m = recog(body, T, row)
                        if m is not None:
                            if len(last_profile) > 65536:
                                last_profile.clear()
                            last_profile[key] = p
                            found = p
                            break
                else:
                    plans[i] = "unknown"
                    continue
            bodies[i] = body
            hosts[i] = host
            recs[i] = m if m is not True else None
            plan = by_profile[id(found)]
            plans[i] = plan
            if plan.fast:
                g = groups.get(id(plan))
                if g is None:
                    groups[id(plan)] = [i]
                else:
                    g.append(i)
        # -- pass 2: kv and csv tokens, per profile over its lines
        # Not initialised: a line reads only the columns of its own profile's steps, which the tokenizers write.
        kv = np.empty((n, max(c.kv_cols, 1), 2), np.int64)
        cv = np.empty((n, max(c.csv_cols, 1), 2), np.int64)
        bad = np.zeros(n, np.uint8)
        src_col = {"body": (hk.H_BODY_S, hk.H_BODY_E), "msg": (hk.H_MSG_S, hk.H_MSG_E),
                   "sd": (hk.H_SD_S, hk.H_SD_E)}  # columns of hdr (the kernel's full header array)
        anykey = {}  # per kv step: whether the line has any of its keys (a message kv step with none is malformed)
        for plan, st in c.token_steps:
            idx = groups.get(id(plan))
            if not idx or not st.keys:
                continue
            ix = np.asarray(idx, np.int64)
            a, b = src_col[st.source]
            out = np.empty((len(ix), len(st.keys), 2), np.int64)
            okk = np.empty(len(ix), np.uint8)
            if st.kind == "kv":
                kv_spans(arr, hdr[ix, a], hdr[ix, b], st.keys_packed[0], st.keys_packed[1], st.first, out, okk)
                kv[ix, st.col0:st.col0 + len(st.keys)] = out
                has = np.zeros(n, bool)
                has[ix] = (out[:, :, 0] >= 0).any(axis=1)
                anykey[st.col0] = has.tolist()
            else:
                ncols = np.empty(len(ix), np.int64)
                csv_spans(arr, hdr[ix, a], hdr[ix, b], np.uint8(st.delim), np.asarray(st.keys, np.int64), out,
                          ncols, okk)
                cv[ix, st.col0:st.col0 + len(st.keys)] = out
            bad[ix[okk == 0]] = 1
        badl = bad.tolist()
        # the spans of the kv/csv values that ``when`` tests read, as Python lists (one tolist per step)
        wvals = {}
        for plan_key, idx in groups.items():
            if not idx:
                continue
            for st, wc in plans[idx[0]].step_when:
                if st.kind != "regex" and wc:
                    wvals[id(st)] = (kv if st.kind == "kv" else cv)[:, [col for _, col in wc]].tolist()
        # -- pass 3: message choice and regex steps, per line
        msg_ids = [-1] * n
        roffs = [0] * n
        regs: list[int] = []  # the spans of the groups the fields read (a list: extending it from chain is fastest)
        chosen: list = [None] * n
        refl = [False] * n  # detected, but the rest of the line is for the reference path
        counters = P.counters
        for plan_key, idx in groups.items():
            if not idx:
                continue
            plan = plans[idx[0]]
            rec_when = plan.rec_when
            # (step, source columns, when-names, their value spans per line or None)
            steps = [(st, _SOURCES[st.source], wc if st.kind == "regex" else [nm for nm, _ in wc],
                      wvals.get(id(st))) for st, wc in plan.step_when]
            dispatch = plan.dispatch
            xname = plan.dispatch_field
            if plan.simple:
                self._choose_simple(plan, idx, H, T, bodies, recs, plans, refl, msg_ids, roffs, chosen, regs)
                continue
            for i in idx:
                if badl[i]:
                    refl[i] = True
                    continue
                row = H[i]
                body = bodies[i]
                m0 = recs[i]
                f: dict = {}
                if rec_when and m0 is not None:
                    for name in rec_when:
                        v = m0.group(name)
                        if v is not None:
                            f[name] = v
                matches = [(m0, row[BS])]  # slot 0 is empty when the profile has no recognising regex
                for st, (a_, b_), wc, wv in steps:
                    if wv is None:
                        if st.kind == "regex":
                            m = st.op(body if a_ == BS else T[row[a_]:row[b_]])
                            matches.append((m, row[a_]))
                            if m is not None:
                                for name in wc:
                                    v = m.group(name)
                                    if v is not None:
                                        f[name] = v
                    else:
                        for name, (s_, e_) in zip(wc, wv[i]):
                            if s_ >= 0:
                                f[name] = T[s_:e_]
                if dispatch is not None:
                    v = f.get(xname, "")
                    if len(v) > 1 and v[0] == '"' == v[-1]:
                        v = v[1:-1]
                    cands = dispatch.get(v.lower(), plan.others)
                else:
                    cands = plan.messages
                h = None
                for mp in cands:
                    if mp.only_x:
                        break
                    if dispatch is not None:  # the dispatch test holds: the rest of the when, inline
                        for name, want in mp.rest_fields:
                            v = f.get(name, "")
                            if len(v) > 1 and v[0] == '"' == v[-1]:
                                v = v[1:-1]
                            if v.lower() not in want:
                                break
                        else:
                            for search in mp.rest_body:
                                if search(body) is None:
                                    break
                            else:
                                msgid = T[row[R_MSGID_S]:row[R_MSGID_E]] if mp.rest_msgid else ""
                                for fullmatch in mp.rest_msgid:
                                    if fullmatch(msgid) is None:
                                        break
                                else:
                                    break
                        continue
                    if h is None:
                        h = _H()
                        h.body = body
                        h.msgid = T[row[R_MSGID_S]:row[R_MSGID_E]]
                    if mp.message.when(h, f):
                        break
                else:
                    counters.inc("brokerwatch_syslog_unmatched_total", (plan.profile.vendor,))
                    plans[i] = "done"
                    continue
                undecided = False
                for st in mp.steps:
                    if st.kind == "regex":
                        a_, b_ = _SOURCES[st.source]
                        m = st.op(body if a_ == BS else T[row[a_]:row[b_]])
                        if m is None:
                            undecided = True  # the reference counts it as malformed
                            break
                        matches.append((m, row[a_]))
                    elif st.kind == "kv" and (not st.keys or not anykey[st.col0][i]):
                        undecided = True  # no wanted key: let the reference decide whether it is malformed
                        break
                if undecided:
                    refl[i] = True
                    continue
                roffs[i] = len(regs)
                msg_ids[i] = mp.gid
                chosen[i] = mp
                if not mp.regs_width:  # no field reads a regex group (csv and kv profiles)
                    continue
                none_regs = mp.none_regs
                for j, (m, base) in enumerate(matches):
                    pick = mp.pick[j]
                    if pick is None:
                        continue
                    if m is None:
                        regs += none_regs[j]
                    else:
                        regs.append(base)
                        regs += chain.from_iterable(pick(m.regs))
        msg_ids = np.asarray(msg_ids, np.int64)
        roffs = np.asarray(roffs, np.int64)
        # -- pass 4: the records
        out = np.empty((n, _O_WIDTH), np.int64)
        self._msg_ids = msg_ids
        ref = recv_ns or P.reference_ns
        _emit_block(arr, n, msg_ids, roffs, np.array(regs, np.int64) if regs else
                    np.zeros(1, np.int64), kv, cv, hdr, recv_ns, ref, c.msg_table, self.tables, *c.protocols, out)
        return self._finish(lines, T, H, plans, hosts, recs, chosen, refl, out, exporter, recv_ns, builder)

    def _choose_simple(self, plan, idx, H, T, bodies, recs, plans, refl, msg_ids, roffs, chosen, regs) -> None:
        """Pass 3 for a profile whose message is chosen by a group of its recognising regex alone and whose
        messages extract by regex only (Cisco ASA): no fields dict, no when closures."""
        xname = plan.dispatch_field
        dispatch = plan.dispatch
        BS = R_BODY_S
        unmatched = 0
        for i in idx:
            m0 = recs[i]
            v = m0.group(xname) or ""
            if len(v) > 1 and v[0] == '"' == v[-1]:
                v = v[1:-1]
            cands = dispatch.get(v.lower())
            if not cands:
                unmatched += 1
                plans[i] = "done"
                continue
            mp = cands[0]
            row = H[i]
            body = bodies[i]
            start = len(regs)
            pick = mp.pick[0]
            if pick is not None:
                regs.append(row[BS])
                regs += chain.from_iterable(pick(m0.regs))
            for st, a_, b_ in mp.regex_steps:
                m = st.op(body if a_ == BS else T[row[a_]:row[b_]])
                if m is None:
                    break
                pick = mp.pick[st.slot]
                if pick is not None:
                    regs.append(row[a_])
                    regs += chain.from_iterable(pick(m.regs))
            else:
                roffs[i] = start
                msg_ids[i] = mp.gid
                chosen[i] = mp
                continue
            del regs[start:]
            refl[i] = True  # a message regex that does not match: the reference counts it as malformed
        if unmatched:
            self.parser.counters.inc("brokerwatch_syslog_unmatched_total", (plan.profile.vendor,), unmatched)

    def _detect_reference(self, line: bytes, exporter):
        """Pass 1 for a line the header kernel did not take: the reference's header and detection, in order."""
        P = self.parser
        if len(line) > P.max_line:
            P.counters.inc("brokerwatch_syslog_oversized_total", ("line",))
            line = line[: P.max_line]
        text = line.decode("utf-8", "replace").rstrip("\r\n\x00")
        if not text.strip():
            return "done"
        try:
            h = parse_header(text)
            f: dict = {}
            p = P._detect(h, exporter, f)
        except Exception as exc:  # noqa: BLE001 - as SyslogParser._line
            P._reject("syslog", "malformed", repr(exc))
            return "done"
        if p is None:
            return "unknown"
        return (p, h, f, text)

    def _finish(self, lines, T, H, plans, hosts, recs, chosen, refl, out, exporter, recv_ns, builder) -> int:
        """In line order: kernel rows, rejections, session starts and ends, and the reference path's lines."""
        P = self.parser
        rows = P._rows
        take: list[int] = []
        made = P._made
        status_l = out[:, _O_STATUS].tolist()
        kind_l = out[:, _O_KIND].tolist()
        sess_l = out[:, _O_SESSION:].tolist() if self.c.has_sessions else None
        before = self.reference_lines
        sessions = P._sessions
        max_sessions = P.max_sessions
        pending = self._pending = {}  # slot -> line of this block whose start it holds
        self._out = out
        tally: dict = {}
        held_v: list[str] = []  # per session start held, end alone, end joined: the vendor (counted at the end)
        alone_v: list[str] = []
        joined_v: list[str] = []
        free = self.free
        closes: list[int] = []
        sources: list[int] = []
        # Flow records the kernel finished need nothing more here: only the other lines are walked, and each
        # output row is tagged with its line so that the rows come out in line order.
        msg_ids = self._msg_ids
        fast = (msg_ids >= 0) & (out[:, _O_STATUS] == 0) & (out[:, _O_KIND] == 0) & ~np.asarray(refl, bool)
        take_line: list[int] = []
        mark = 0
        prev = -1
        for i in np.flatnonzero(~fast).tolist():
            if len(take) > mark:
                take_line += [prev] * (len(take) - mark)
                mark = len(take)
            prev = i
            mp = chosen[i]
            status = status_l[i]
            if mp is None or status != 0 or refl[i]:
                plan = plans[i]
                if plan is None or plan == "done":
                    continue
                if plan == "unknown":
                    P.counters.inc("brokerwatch_syslog_unmatched_total", ("unknown",))
                    P._reject("syslog", "unmatched")
                    continue
                if plan.__class__ is tuple:
                    self.reference_lines += 1
                    p, h, f, text = plan
                    k = len(rows)
                    try:
                        P._parse_with(p, h, f, text, exporter, recv_ns)
                    except Exception as exc:  # noqa: BLE001 - as SyslogParser._line
                        P._reject("syslog", "malformed", repr(exc))
                    take += range(-1 - k, -1 - len(rows), -1)
                    continue
                if refl[i] or mp is None or status < 0:
                    self.reference_lines += 1
                    self._reference(plan.profile, lines[i], recs[i], exporter, recv_ns, take)
                    continue
                row = H[i]
                P._reject(plan.profile.label[0], REASONS[status], T[row[R_TEXT_S]:row[R_TEXT_E]])
                continue
            profile = mp.profile
            kind = kind_l[i]
            # A session start or end: starts are held as rows of self.held (the session table maps the key to
            # the slot); ends are joined with their start after the loop, in numpy (_join).
            ns = mp.n_session
            o = sess_l[i]
            if ns == 1:
                key = (exporter, hosts[i], profile.vendor, None if o[0] < 0 else T[o[0]:o[1]])
            elif ns == 2:
                key = (exporter, hosts[i], profile.vendor, None if o[0] < 0 else T[o[0]:o[1]],
                       None if o[2] < 0 else T[o[2]:o[3]])
            else:
                key = (exporter, hosts[i], profile.vendor) + tuple(
                    None if o[2 * q] < 0 else T[o[2 * q]:o[2 * q + 1]] for q in range(ns))
            vendor = profile.vendor
            if kind == 1:  # open
                if profile.emit_open:
                    out[i, _O_FLAGS] |= FLAG_ORIENTED
                    take.append(i)
                    continue
                old = sessions.pop(key, None)
                if old.__class__ is int:
                    pending.pop(old, None)
                    free.append(old)
                slot = free.pop() if free else self._alloc()
                pending[slot] = i
                sessions[key] = slot
                if len(sessions) > max_sessions:
                    (_k, _old) = sessions.popitem(last=False)
                    if _old.__class__ is int:
                        pending.pop(_old, None)
                        free.append(_old)
                    tally[(_k[2], "start_evicted_without_end")] = tally.get((_k[2], "start_evicted_without_end"), 0) + 1
                held_v.append(vendor)
                continue
            opened = sessions.pop(key, None) if mp.session_keyed else None
            if opened is None:
                alone_v.append(vendor)
                closes.append(i)
                sources.append(-1)
            elif opened.__class__ is int:
                joined_v.append(vendor)
                closes.append(i)
                line = pending.pop(opened, None)
                # a start of this block is read from out, an earlier one from held (-2 - slot)
                sources.append(line if line is not None else -2 - opened)
                free.append(opened)
            else:  # held by the reference path: joined there
                k = len(rows)
                P._close(self._record(out[i].tolist()), opened, profile, exporter)
                take += range(-1 - k, -1 - len(rows), -1)
                continue
        if len(take) > mark:
            take_line += [prev] * (len(take) - mark)
        # kernel rows: the flows, the session ends (joined or not), the starts a profile emits
        ff = np.concatenate([np.flatnonzero(fast), np.asarray(closes, np.int64)])
        ta = np.asarray(take, np.int64)
        kernel_rows = np.concatenate([ff, ta[ta >= 0]])  # the Python rows were counted by SyslogParser._row
        if len(kernel_rows):
            for gid, k in enumerate(np.bincount(msg_ids[kernel_rows], minlength=len(self.msg_label)).tolist()):
                if k:
                    label = self.msg_label[gid]
                    made[label] = made.get(label, 0) + k
        for v, what in ((held_v, "start_held"), (alone_v, "end_without_start"), (joined_v, "joined")):
            for vendor, k in Counter(v).items():
                tally[(vendor, what)] = tally.get((vendor, what), 0) + k
        if take:
            tv = np.concatenate([ff, ta])
            order = np.argsort(np.concatenate([ff, np.asarray(take_line, np.int64)]), kind="stable")
            take = tv[order]
        else:
            take = np.sort(ff)
        self.kernel_lines += len(plans) - (self.reference_lines - before)
        if closes:
            self._join(out, closes, sources)
        if pending:  # starts still open at the end of the block: into held
            sl = np.fromiter(pending.keys(), np.int64, len(pending))
            lines_held = np.fromiter(pending.values(), np.int64, len(pending))
            self.held[sl] = out[lines_held]
            P._oldest_ns = min(P._oldest_ns, int(out[lines_held, _O_START].min()))
        self._pending = {}
        for labels, v in tally.items():
            P.counters.inc("brokerwatch_syslog_sessions_total", labels, v)
        return self._write(out, take, exporter, builder)

    # -- held session starts ---------------------------------------------------------------------------------

    def _alloc(self) -> int:
        """A free slot, the held table doubled when there is none (the free list object is kept)."""
        if not self.free:
            old = len(self.held)
            grown = np.empty((2 * old, _O_WIDTH), np.int64)
            grown[:old] = self.held
            self.held = grown
            self.free.extend(range(2 * old - 1, old - 1, -1))
        return self.free.pop()

    def _free(self, slot: int) -> None:
        self._pending.pop(slot, None)
        self.free.append(slot)

    def take_slot(self, slot: int) -> _Record:
        """The held start in slot as a _Record, the slot freed (for the reference path's session ends)."""
        line = self._pending.pop(slot, None)
        row = (self._out[line] if line is not None else self.held[slot]).tolist()
        self.free.append(slot)
        return self._record(row)

    def held_start(self, slot: int) -> int:
        """The start time of the session start held in slot (between blocks)."""
        line = self._pending.get(slot)
        return int(self._out[line, _O_START] if line is not None else self.held[slot, _O_START])

    def free_slot(self, slot: int) -> None:
        """A held start evicted by the reference path."""
        self._free(slot)

    @staticmethod
    def _record(o: list) -> _Record:
        m = 0xFFFFFFFFFFFFFFFF
        return _Record(o[_O_START], o[_O_END], (o[_O_SRC_HI] & m, o[_O_SRC_LO] & m), (o[_O_DST_HI] & m, o[_O_DST_LO] & m),
                       o[_O_SPORT], o[_O_DPORT], o[_O_PROTO], o[_O_BYTES], o[_O_PACKETS], o[_O_APP], o[_O_ACTION],
                       o[_O_IN], o[_O_OUT], o[_O_FLAGS], 0, bool(o[_O_HASDUR]), bool(o[_O_ORIENTED]))

    def _join(self, out: np.ndarray, closes: list[int], sources: list[int]) -> None:
        """Session ends joined with their starts (as SyslogParser._close), all of a block's ends in one call."""
        _join_ends(out, self.held, np.asarray(closes, np.int64), np.asarray(sources, np.int64))

    def _reference(self, profile, line: bytes, m0, exporter, recv_ns: int, take: list) -> None:
        """One line through the reference path, its profile already detected (as SyslogParser._line would)."""
        P = self.parser
        rows = P._rows
        k = len(rows)
        text = line.decode("utf-8", "replace").rstrip("\r\n\x00")
        f: dict = {}
        if m0 is not None:
            _update_groups(f, m0)
        try:
            P._parse_with(profile, parse_header(text), f, text, exporter, recv_ns)
        except Exception as exc:  # noqa: BLE001 - as SyslogParser._line: one hostile line never stops the block
            P._reject("syslog", "malformed", repr(exc))
        take += range(-1 - k, -1 - len(rows), -1)

    def _write(self, out: np.ndarray, take: np.ndarray, exporter, builder) -> int:
        """The block's rows, in line order, into the builder; counters as SyslogParser._flush."""
        P = self.parser
        k = len(take)
        if k:
            if P._rows:
                py = np.array(P._rows, FLOW_DTYPE)
            else:
                py = np.zeros(0, FLOW_DTYPE)
            tk = take
            if not len(py):  # only kernel rows: written into the builder in one pass
                _rows_out(out, tk, self._msg_ids, self.datasets, np.uint64(exporter[0]), np.uint64(exporter[1]),
                          builder.reserve(k, zero=False))
                tk = tk[:0]
            kidx = tk[tk >= 0]
            kr = np.zeros(len(kidx), FLOW_DTYPE)
            if len(kidx):
                o = out[kidx]
                kr["start_ns"] = o[:, _O_START]
                kr["end_ns"] = o[:, _O_END]
                u = o.view(np.uint64)
                kr["src_hi"] = u[:, _O_SRC_HI]
                kr["src_lo"] = u[:, _O_SRC_LO]
                kr["dst_hi"] = u[:, _O_DST_HI]
                kr["dst_lo"] = u[:, _O_DST_LO]
                kr["exporter_hi"] = exporter[0]
                kr["exporter_lo"] = exporter[1]
                kr["bytes"] = u[:, _O_BYTES]
                kr["packets"] = u[:, _O_PACKETS]
                kr["sampling_rate"] = 1
                kr["in_if"] = o[:, _O_IN]
                kr["out_if"] = o[:, _O_OUT]
                kr["src_port"] = o[:, _O_SPORT]
                kr["dst_port"] = o[:, _O_DPORT]
                kr["proto"] = o[:, _O_PROTO]
                kr["app_proto"] = o[:, _O_APP]
                kr["action"] = o[:, _O_ACTION]
                kr["dataset"] = self.datasets[self._msg_ids[kidx]]
                kr["flags"] = o[:, _O_FLAGS]
            if len(py):
                # kernel rows first, then the Python ones; take maps each output row to one of them (rare: only
                # blocks with lines the reference path took)
                allr = np.concatenate([kr, py])
                pos = np.empty(k, np.int64)
                isk = tk >= 0
                pos[isk] = np.arange(len(kidx))
                pos[~isk] = len(kidx) + (-1 - tk[~isk])
                builder.reserve(k, zero=False)[:] = allr[pos]
        P._rows.clear()
        for label, v in P._made.items():
            P.counters.inc("brokerwatch_decoder_records_total", label, v)
        P._made.clear()
        return k
