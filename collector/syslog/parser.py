"""Firewall syslog to FlowBatch rows: header parsing, device-profile detection, field extraction, session pairing.

A line goes through three steps:

1. ``parse_header``: RFC 5424 (``<PRI>1 TIMESTAMP HOST APP PROCID MSGID SD MSG``), RFC 3164 (``<PRI>Mmm dd hh:mm:ss
   HOST TAG: MSG``) and the variants firewalls really send: no PRI, no header at all (``%ASA-6-302013: ...``,
   PAN-OS CSV, FortiGate ``date=... time=...``), a year in the stamp (``Oct 03 2018 17:34:08:``), ISO stamps,
   no host, and a 5424 body relayed under a 3164 header (Junos through syslog-ng). Time stamps stay naive until
   the device profile says which time zone they are in.
2. Detection: each ``device_profiles/<vendor>.yaml`` says how to recognise its messages; the profile that
   recognised the last message from the same sender is tried first, then the others in order.
3. Extraction and mapping, declared by the profile (key=value, CSV by position, regex with named groups), into
   one FlowBatch row: dataset ``syslog.<vendor>``, ``action`` (ACTIONS), ``app_proto`` from the firewall's
   application id, exporter = the sender.

Session pairing: a session-start message (ASA *Built*, SRX SESSION_CREATE, PAN-OS ``start``) is held in a
bounded table keyed by the profile's session fields; its end message makes one record (bytes and duration from the
end; start = end - duration), oriented like the start message (``FLAG_ORIENTED``: the port-based fold leaves it).
An end without its start still makes a record; a start whose end has not come within the profile's
``session_timeout`` (``expire_sessions``, in data time) or when the input ends
(``close_sessions``) becomes a record of its own, without counters. One evicted from a full table is counted. Nothing here raises on bad input: rejections are
counted by reason in ``brokerwatch_decoder_errors_total{syslog.<vendor>|syslog, reason}`` and messages no profile
knows in ``brokerwatch_syslog_unmatched_total``.

Adding a vendor is adding a YAML file; no change here. A profile (validated on load; an error names the file and
the key, e.g. ``panos.yaml: messages[1].fields.colour: unknown record field``) has:

- ``vendor`` (dataset ``syslog.<vendor>``), ``samples`` (fixture/corpus files that prove it; ``corpus:`` prefix for
  the shared corpus), ``documents``, ``description``, ``timezone`` (for stamps without an offset; default UTC),
  ``priority`` (lower is tried first), ``orient_unknown`` (``lower_port_is_destination`` for end messages whose
  start was not seen and that do not say who initiated), ``emit_open`` (start messages are records too),
  ``session_timeout`` (seconds a start waits for its end; the device's idle timeout, default 3600).
- ``recognise``: ``app`` (regex on the header's APP-NAME/TAG), ``msgid``, ``contains`` (any of these substrings),
  ``regex`` (searched in the body; its named groups become fields). All given must hold.
- ``extract``: steps run on every recognised message: ``{type: kv|csv|regex, source: body|msg|sd}``; kv takes
  ``duplicates: first|last``, csv ``delimiter``, regex ``pattern`` and ``search: false`` to anchor it.
- ``fields``: record field -> source: a name, a CSV column number, ``"a+b"`` (sum), a list of alternatives, or
  ``{const: V}``. Record fields: src_ip, dst_ip, src_port, dst_port, proto, bytes, packets, app, in_if, out_if,
  action, duration ``{field, format: seconds|milliseconds|hms}``, and times start/end/time as
  ``{field|fields, format: ymd_hms|clf|bsd|epoch}`` or a list of them (the first that parses wins; then the header's
  stamp; then the receive time). end = start + duration when start is given, else start = end - duration.
- ``app_protocols``: the firewall's application id (any case) -> mqtt, amqp, xmpp, stomp, nats, mqtt-over-websocket.
- ``messages``: the message kinds that make records, the first whose ``when`` holds (``{field, equals|in}``,
  ``{regex}``, ``{msgid}`` or a list of them) is used, with its own ``extract`` steps (a failing one rejects the
  message as ``malformed``), ``fields`` (over the profile's), ``kind`` (flow, open, close, or ``{field, map,
  default}``), ``session`` (the fields that identify a connection), ``action`` (an ACTIONS name or ``{field, map,
  default}``) and ``swap`` (``{field, in}``: the values that mean the message names the responder first).
  A recognised message that no ``when`` selects is counted in ``brokerwatch_syslog_unmatched_total{vendor}``.
"""

from __future__ import annotations

import calendar
import csv
import datetime as _dt
import functools
import ipaddress
import re
import time
import zoneinfo
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import yaml

from analytics.schema import (
    ACTION_ID,
    APP_PROTOCOL_ID,
    FLOW_DTYPE,
    FLAG_NO_COUNTERS,
    FLAG_NO_PACKETS,
    FLAG_NO_INTERFACES,
    FLAG_NO_PORTS,
    FLAG_ORIENTED,
    FlowBatchBuilder,
    dataset_id,
)
from collector.metrics import Counters, RateLimitedLog

#: Where the shipped device profiles live.
PROFILE_DIR = Path(__file__).resolve().parents[2] / "device_profiles"
#: Profiles in PROFILE_DIR that are not syslog formats.
NOT_SYSLOG_PROFILES = frozenset({"ipfix_elements.yaml"})
#: Longest message parsed; longer ones are cut to this and counted (``brokerwatch_syslog_oversized_total``).
MAX_LINE = 16384
#: Fewer lines than this go one at a time even through feed_lines (the block path's fixed cost is not worth it).
BLOCK_MIN_LINES = 4
#: Open sessions (start seen, end not yet) held per parser before the oldest is evicted and counted.
MAX_OPEN_SESSIONS = 65536
#: Seconds a session start waits for its end unless the profile says (``session_timeout``).
DEFAULT_SESSION_TIMEOUT_S = 3600
_I64_MIN, _I64_MAX, _U64_MAX = -(2**63), 2**63 - 1, 2**64 - 1

# ---------------------------------------------------------------------------------------------------------------
# Header parsing
# ---------------------------------------------------------------------------------------------------------------

_MONTHS = {m: i for i, m in enumerate(("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov",
                                       "Dec"), 1)}

# ISO 8601 / RFC 3339 (RFC 5424 TIMESTAMP); the offset may be missing (then the profile's time zone applies).
_ISO = r"(\d{4})-(\d\d)-(\d\d)[T ](\d\d):(\d\d):(\d\d)(?:[.,](\d{1,9}))?(Z|[+-]\d\d:?\d\d)?"
_RE_ISO = re.compile(_ISO)
_RE_5424 = re.compile(r"<(\d{1,3})>1 (?:-|" + _ISO + r") (\S+) (\S+) (\S+) (\S+) ?")
# A 5424 message minus PRI and VERSION, as relays put it behind a 3164 header.
_RE_5424_BODY = re.compile(_ISO + r" (\S+) (\S+) (\S+) (\S+) (?=\[|- |-$)")
# RFC 3164 and the stamps firewalls use instead: "Mmm dd hh:mm:ss", "Mmm dd yyyy hh:mm:ss" (ASA), "yyyy Mmm dd
# hh:mm:ss", ISO; optional fraction, optional ':' after the stamp (ASA), optional ':' before it.
_RE_3164 = re.compile(
    r"(?:<(\d{1,3})>)?:?\s*(?:"
    r"(?P<mon>[A-Z][a-z]{2}) {1,2}(?P<day>\d{1,2})(?: (?P<year>\d{4}))? (?P<hms>\d\d:\d\d:\d\d)(?:\.(?P<frac>\d{1,9}))?"
    r"|(?P<year2>\d{4}) (?P<mon2>[A-Z][a-z]{2}) {1,2}(?P<day2>\d{1,2}) (?P<hms2>\d\d:\d\d:\d\d)"
    r"|(?P<iso>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,9})?(?:Z|[+-]\d\d:?\d\d)?)"
    r"):? ")
_RE_PRI = re.compile(r"<(\d{1,3})>")
_RE_TAG = re.compile(r"([A-Za-z0-9_./-]{1,64})(?:\[[^\]\s]{0,32}\])?: ?")
_RE_SD = re.compile(r"(?:\[(?:[^\"\]]|\"(?:[^\"\\]|\\.)*\")*\])+")


@dataclass(slots=True)
class Header:
    """What the syslog header says; ``stamp`` is naive until a profile gives the time zone."""

    pri: int = -1
    #: (year or None, month, day, hour, minute, second, nanoseconds, UTC offset in seconds or None), or None.
    stamp: tuple | None = None
    host: str = ""
    app: str = ""
    msgid: str = ""
    sd: str = ""  # RFC 5424 STRUCTURED-DATA text, "" when nil
    msg: str = ""  # the free-form MSG part
    body: str = ""  # everything after the header fields consumed (5424: MSGID SD MSG)
    kind: str = "none"  # "5424", "3164" or "none"


def _offset(text: str | None) -> int | None:
    if not text:
        return None
    if text == "Z":
        return 0
    sign = -1 if text[0] == "-" else 1
    digits = text[1:].replace(":", "")
    return sign * (int(digits[:2]) * 3600 + int(digits[2:4]) * 60)


def _frac_ns(frac: str | None) -> int:
    return int(frac.ljust(9, "0")) if frac else 0


def _iso_stamp(m: re.Match, base: int = 1) -> tuple:
    g = m.groups()[base - 1: base + 7]
    return (int(g[0]), int(g[1]), int(g[2]), int(g[3]), int(g[4]), int(g[5]), _frac_ns(g[6]), _offset(g[7]))


def _split_5424_rest(h: Header, rest: str) -> None:
    """SD and MSG of a 5424 message after MSGID."""
    h.body = (h.msgid + " " + rest) if h.msgid != "-" else rest
    m = None if rest.startswith("-") else _RE_SD.match(rest)
    if m:
        h.sd = m.group(0)
        h.msg = rest[m.end():].lstrip(" ")
    else:
        h.sd = ""
        h.msg = rest[2:] if rest.startswith("-") else rest
    if h.msg.startswith("\ufeff"):  # RFC 5424 BOM before UTF-8 MSG
        h.msg = h.msg[1:]


def parse_header(text: str) -> Header:
    """The syslog header of one message (RFC 5424, RFC 3164, or the vendor variants without one)."""
    h = Header()
    m = _RE_5424.match(text)
    if m:
        h.kind = "5424"
        h.pri = int(m.group(1))
        if m.group(2):
            h.stamp = _iso_stamp(m, 2)
        h.host, h.app, _procid, h.msgid = m.group(10), m.group(11), m.group(12), m.group(13)
        _split_5424_rest(h, text[m.end():])
        return h
    m = _RE_3164.match(text)
    if m is None:
        pm = _RE_PRI.match(text)
        if pm:
            h.pri = int(pm.group(1))
            text = text[pm.end():]
        h.body = h.msg = text
        return h
    h.kind = "3164"
    head = m.group(0)
    cached = _head_cache.get(head)
    if cached is not None:
        h.pri, h.stamp = cached
    else:
        _head_3164(h, m)
        if len(_head_cache) >= 4096:
            _head_cache.clear()
        _head_cache[head] = (h.pri, h.stamp)
    _host_tag_body(h, text[m.end():])
    return h


#: PRI and stamp of recent RFC 3164 header prefixes (the matched text): stamps repeat for a whole second.
_head_cache: dict[str, tuple] = {}


def _head_3164(h: Header, m: re.Match) -> None:
    if m.group(1):
        h.pri = int(m.group(1))
    if m.group("mon"):
        hh, mm, ss = m.group("hms").split(":")
        year = m.group("year")
        mon = _MONTHS.get(m.group("mon"))
        h.stamp = None if mon is None else (int(year) if year else None, mon, int(m.group("day")), int(hh), int(mm),
                                            int(ss), _frac_ns(m.group("frac")), None)
    elif m.group("mon2"):
        hh, mm, ss = m.group("hms2").split(":")
        mon = _MONTHS.get(m.group("mon2"))
        h.stamp = None if mon is None else (int(m.group("year2")), mon, int(m.group("day2")), int(hh), int(mm),
                                            int(ss), 0, None)
    else:
        h.stamp = _iso_stamp(_RE_ISO.match(m.group("iso")))


def _host_tag_body(h: Header, rest: str) -> None:
    """HOST, TAG and MSG after an RFC 3164 stamp (or the header of a 5424 message relayed behind it)."""
    # HOST: a token that is neither a key=value, a TAG: nor a vendor message id (%ASA-...).
    sp = rest.find(" ")
    token = rest if sp < 0 else rest[:sp]
    if token and not token.endswith(":") and "=" not in token and token[0] not in "%[<" and sp > 0:
        h.host = token
        rest = rest[sp + 1:]
    t = _RE_TAG.match(rest)
    if t:
        h.app = t.group(1)
        rest = rest[t.end():]
    # A 5424 message relayed behind a 3164 header (syslog-ng, Wazuh): take its own header fields.
    if rest[:1].isdigit():
        r = _RE_5424_BODY.match(rest)
        if r:
            h.stamp = _iso_stamp(r)
            h.host, h.app, h.msgid = r.group(9), r.group(10), r.group(12)
            h.kind = "5424"
            _split_5424_rest(h, rest[r.end():])
            return
    h.body = h.msg = rest


# ---------------------------------------------------------------------------------------------------------------
# Times
# ---------------------------------------------------------------------------------------------------------------

_tz_cache: dict[str, _dt.tzinfo] = {}


def _tzinfo(name: str) -> _dt.tzinfo:
    tz = _tz_cache.get(name)
    if tz is None:
        tz = _dt.timezone.utc if name.upper() in ("UTC", "Z", "GMT") else zoneinfo.ZoneInfo(name)
        _tz_cache[name] = tz
    return tz


_minute_cache: dict[tuple, int] = {}


@functools.lru_cache(maxsize=64)
def _year_of(day: int) -> int:
    return time.gmtime(day * 86400).tm_year


def stamp_to_ns(stamp: tuple, tz: str, ref_ns: int) -> int:
    """ns since the epoch of a header/field stamp; naive stamps are in ``tz``; a missing year is inferred from ref_ns.

    The year is the reference's, unless that puts the stamp more than 31 days after the reference (then the year
    before: a December message read in January) or more than 335 days before it (then the year after).
    """
    year, mon, day, hh, mm, ss, ns, off = stamp
    if year is None:
        ref_year = _year_of(ref_ns // 86_400_000_000_000)
        guess = stamp_to_ns((ref_year, mon, day, hh, mm, ss, ns, off), tz, ref_ns)
        if guess > ref_ns + 31 * 86400 * 10**9:
            return stamp_to_ns((ref_year - 1, mon, day, hh, mm, ss, ns, off), tz, ref_ns)
        if guess < ref_ns - 335 * 86400 * 10**9:
            return stamp_to_ns((ref_year + 1, mon, day, hh, mm, ss, ns, off), tz, ref_ns)
        return guess
    if not 0 <= ss <= 60:  # checked here too: the minute's cached base must not let a bad second through
        raise ValueError(f"not a date: {stamp}")
    key = (year, mon, day, hh, mm, off, tz if off is None else "")
    base = _minute_cache.get(key)
    if base is None:
        if not (1 <= mon <= 12 and 1 <= day <= calendar.monthrange(year, mon)[1] and hh < 24 and mm < 60
                and ss <= 60 and 1 <= year <= 9999):
            raise ValueError(f"not a date: {stamp}")
        if off is not None:
            base = calendar.timegm((year, mon, day, hh, mm, 0)) - off
        else:
            zone = _tzinfo(tz)
            if zone is _dt.timezone.utc:
                base = calendar.timegm((year, mon, day, hh, mm, 0))
            else:
                base = int(_dt.datetime(year, mon, day, hh, mm, tzinfo=zone).timestamp())
        if len(_minute_cache) > 4096:
            _minute_cache.clear()
        _minute_cache[key] = base
    return (base + ss) * 1_000_000_000 + ns


_RE_YMD = re.compile(r"(\d{4})[-/](\d{1,2})[-/](\d{1,2})[ T](\d{1,2}):(\d\d):(\d\d)(?:[.,](\d{1,9}))?"
                     r" ?(Z|[+-]\d\d:?\d\d)?$")
_RE_CLF = re.compile(r"(\d{1,2})/([A-Z][a-z]{2})/(\d{4}):(\d\d):(\d\d):(\d\d) ([+-]\d{4})$")
_RE_BSD = re.compile(r"([A-Z][a-z]{2}) {1,2}(\d{1,2})(?: (\d{4}))? (\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?$")


def _parse_ymd(text: str) -> tuple | None:
    m = _RE_YMD.match(text)
    if not m:
        return None
    g = m.groups()
    return (int(g[0]), int(g[1]), int(g[2]), int(g[3]), int(g[4]), int(g[5]), _frac_ns(g[6]), _offset(g[7]))


def _parse_clf(text: str) -> tuple | None:
    m = _RE_CLF.match(text)
    if not m or m.group(2) not in _MONTHS:
        return None
    g = m.groups()
    return (int(g[2]), _MONTHS[g[1]], int(g[0]), int(g[3]), int(g[4]), int(g[5]), 0, _offset(g[6]))


def _parse_bsd(text: str) -> tuple | None:
    m = _RE_BSD.match(text)
    if not m or m.group(1) not in _MONTHS:
        return None
    g = m.groups()
    return (int(g[2]) if g[2] else None, _MONTHS[g[0]], int(g[1]), int(g[3]), int(g[4]), int(g[5]),
            _frac_ns(g[6]), None)


def _parse_epoch(text: str) -> int | None:
    """Epoch seconds, ms, us or ns told apart by the number of digits (FortiOS ``eventtime`` uses s and ns)."""
    if not text.isdigit():
        return None
    n = len(text)
    v = int(text)
    if n <= 11:
        return v * 1_000_000_000
    if n <= 14:
        return v * 1_000_000
    if n <= 17:
        return v * 1_000
    return v


def _memo(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """parse with its results kept per text (bounded): logs repeat the same stamp text for a whole second."""
    cache: dict[str, Any] = {}

    def memo(text: str) -> Any:
        try:
            return cache[text]
        except KeyError:
            pass
        if len(cache) >= 4096:
            cache.clear()
        v = cache[text] = parse(text)
        return v

    memo.__doc__ = parse.__doc__
    return memo


#: Time formats a profile may name; each returns a stamp tuple (or ns for "epoch"), None when the text does not fit.
TIME_FORMATS: dict[str, Callable[[str], Any]] = {
    "ymd_hms": _memo(_parse_ymd),  # 2018/11/30 16:09:07, 2019-05-13 11:45:04, ISO 8601 with optional offset
    "clf": _memo(_parse_clf),  # 20/Jun/2022:13:09:14 +0200
    "bsd": _memo(_parse_bsd),  # Oct 03 2018 17:34:08, Sep 28 10:38:09
    "epoch": _parse_epoch,  # 1557968619 or 1557773104815101919
}


_RE_HMS = re.compile(r"(?:(\d+)d)?(\d+)h?:(\d{1,2}):(\d{1,2})")


def _parse_duration_hms(text: str) -> int | None:
    """ASA durations ('0:02:32', '123:04:05', '1d2h:03:04') or plain seconds, to ns."""
    m = _RE_HMS.fullmatch(text)
    if m:
        d, h, mi, s = m.groups()
        return ((int(d or 0) * 24 + int(h)) * 3600 + int(mi) * 60 + int(s)) * 1_000_000_000
    return int(text) * 1_000_000_000 if text.isdigit() else None


def _parse_duration_seconds(text: str) -> int | None:
    try:
        v = float(text)
    except ValueError:
        return None
    if v < 0 or v != v or v > 1e12:
        return None
    return int(v * 1e9)


def _parse_duration_ms(text: str) -> int | None:
    v = _parse_duration_seconds(text)
    return None if v is None else v // 1000


DURATION_FORMATS: dict[str, Callable[[str], int | None]] = {
    "seconds": _parse_duration_seconds,
    "milliseconds": _parse_duration_ms,
    "hms": _parse_duration_hms,
}

# ---------------------------------------------------------------------------------------------------------------
# Values
# ---------------------------------------------------------------------------------------------------------------

#: IANA protocol numbers by the names firewalls print (lower case).
PROTOCOL_NUMBERS = {"icmp": 1, "igmp": 2, "ipip": 4, "ipencap": 4, "tcp": 6, "egp": 8, "udp": 17, "ipv6": 41,
                    "gre": 47, "esp": 50, "ah": 51, "icmpv6": 58, "ipv6-icmp": 58, "icmp6": 58, "ospf": 89,
                    "ospfigp": 89, "pim": 103, "vrrp": 112, "l2tp": 115, "sctp": 132, "udplite": 136, "ip": 0}
#: Protocols whose ports are meaningful.
PORT_PROTOCOLS = frozenset({6, 17, 33, 132, 136})

_ip_cache: dict[str, tuple[int, int] | None] = {}


def ip_words(text: str) -> tuple[int, int] | None:
    """(high, low) words of an IPv4/IPv6 address (IPv4-mapped), None when the text is not an address."""
    w = _ip_cache.get(text)
    if w is None and text not in _ip_cache:
        try:
            addr = ipaddress.ip_address(text.strip("[]"))
        except ValueError:
            w = None
        else:
            if addr.version == 4:
                w = (0, 0x0000FFFF00000000 | int(addr))
            else:
                v = int(addr)
                w = (v >> 64, v & 0xFFFFFFFFFFFFFFFF)
        if len(_ip_cache) > 65536:
            _ip_cache.clear()
        _ip_cache[text] = w
    return w


def _protocol(text: str) -> int | None:
    if text.isdigit():
        v = int(text)
        return v if v < 256 else None
    return PROTOCOL_NUMBERS.get(text.lower())


_proto_cache: dict[str, int | None] = {}


def _protocol_cached(text: str) -> int | None:
    """_protocol, remembered per text (a handful of distinct values in practice; bounded all the same)."""
    try:
        return _proto_cache[text]
    except KeyError:
        pass
    if len(_proto_cache) >= 1024:
        _proto_cache.clear()
    v = _proto_cache[text] = _protocol(text)
    return v


class RejectLine(Exception):
    """A recognised message that cannot become a record; ``reason`` labels the counter."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


# ---------------------------------------------------------------------------------------------------------------
# Device profiles
# ---------------------------------------------------------------------------------------------------------------


class ProfileError(ValueError):
    """A device profile that is not valid; the message names the file and the key."""

    def __init__(self, path: str | Path, key: str, message: str):
        super().__init__(f"{path}: {key}: {message}")
        self.path = str(path)
        self.key = key


# key=value with the value bare or double-quoted (backslash escapes allowed inside the quotes); the quotes are kept
# in the fields dict and taken off by the getters (dict() of findall runs in C; unquoting only what is used).
# Written to start only where a run of key characters starts (the lookbehind), skipping the run's leading characters
# that cannot begin a key: the same matches as r'([A-Za-z_][\w.\-]*)=(...)' (a key begins at the run's first letter or
# '_'), but linear: that form tried every position of a long run without '=' again, O(n^2) on hostile lines.
_KV = re.compile(r'(?<![\w.\-])(?:[^\W_A-Za-z]|[.\-])*+([A-Za-z_][\w.\-]*+)=("[^"\\]*(?:\\.[^"\\]*)*"|\S*)')


def _unquote(v):
    if v and v[0] == '"' and v[-1] == '"' and len(v) > 1:
        return v[1:-1]
    return v

_PROFILE_KEYS = {"vendor", "description", "documents", "samples", "timezone", "priority", "recognise", "extract",
                 "messages", "fields", "emit_open", "app_protocols", "orient_unknown", "max_line", "session_timeout"}
_MESSAGE_KEYS = {"name", "when", "extract", "kind", "session", "fields", "action", "swap"}
_RECOGNISE_KEYS = {"app", "msgid", "contains", "regex"}
_FIELD_TARGETS = {"src_ip", "dst_ip", "src_port", "dst_port", "proto", "bytes", "packets", "app", "in_if", "out_if",
                  "start", "end", "time", "duration", "action", "tcp_flags"}
_KINDS = {"flow", "open", "close"}
_ORIENT = {"none", "lower_port_is_destination"}


def _getter(spec: Any, where: str, path: Path) -> Callable[[dict], str | None]:
    """A function that reads one value from the extracted fields: a name, a CSV column, 'a+b', or alternatives.

    Validated by ``_getter_plain`` (which says what it returns), compiled from ``_getter_expr`` into one function.
    """
    _getter_plain(spec, where, path)
    ns: dict = {"_total": _total}
    return eval("lambda f: " + _getter_expr(spec), ns)  # noqa: S307 - source built from a validated profile spec


def _getter_plain(spec: Any, where: str, path: Path) -> Callable[[dict], str | None]:
    """The reference getter of a field spec, one closure per part (what the compiled ``_getter`` must equal)."""
    if isinstance(spec, list):
        if not spec:
            raise ProfileError(path, where, "an empty list of alternatives")
        getters = [_getter_plain(s, f"{where}[{i}]", path) for i, s in enumerate(spec)]

        def first(f: dict) -> str | None:
            for g in getters:
                v = g(f)
                if v is not None and v != "":
                    return v
            return None

        return first
    if isinstance(spec, bool):
        raise ProfileError(path, where, "a field name, a CSV column number or a list of them, not true/false")
    if isinstance(spec, int):
        return lambda f, k=spec: _unquote(f.get(k))
    if isinstance(spec, dict):
        if set(spec) != {"const"}:
            raise ProfileError(path, where, f"unknown keys {sorted(set(spec) - {'const'})} (only 'const')")
        value = str(spec["const"])
        return lambda f: value
    if isinstance(spec, str):
        if "+" in spec:
            parts = [int(p) if p.strip().isdigit() else p.strip() for p in spec.split("+")]

            parts = tuple(parts)
            return lambda f: _total(f, parts)
        return lambda f, k=spec: _unquote(f.get(k))
    raise ProfileError(path, where, f"expected a field name, a column number, 'a+b' or a list, got {spec!r}")


def _total(f: dict, parts: tuple) -> str | None:
    """The 'a+b' getter: the sum of the parts that are present, None when none is, "x" when one is not a number."""
    total = None
    for p in parts:
        v = f.get(p)
        if v:
            if v[0] == '"' == v[-1] and len(v) > 1:
                v = v[1:-1]
                if not v:
                    continue
            try:
                n = int(v)
            except ValueError:
                return "x"  # not a number: rejected where it is used
            total = n if total is None else total + n
    return None if total is None else str(total)


def _getter_expr(spec: Any) -> str:
    """Python expression over ``f`` with the value ``_getter(spec)`` returns (spec already validated by it).

    Alternatives become ``a or b or None``: the getters return only strings or None, and the first alternative that
    is neither None nor "" is the first truthy one.
    """
    if isinstance(spec, list):
        return "(" + " or ".join(_getter_expr(s) for s in spec) + " or None)"
    if isinstance(spec, dict):
        return repr(str(spec["const"]))
    if isinstance(spec, str) and "+" in spec:
        parts = tuple(int(p) if p.strip().isdigit() else p.strip() for p in spec.split("+"))
        return f"_total(f, {parts!r})"
    # _unquote(f.get(spec)) inline (a call per field is a good part of the per-line cost).
    return f"""(v[1:-1] if (v := f.get({spec!r})) and v[0] == '"' == v[-1] and len(v) > 1 else v)"""


#: The record fields a message's ``fetch`` returns, in order.
FETCHED = ("src_ip", "dst_ip", "proto", "src_port", "dst_port", "bytes", "packets", "in_if", "out_if")


def _fetcher(fields: dict) -> Callable[[dict], tuple]:
    """One compiled function that reads every FETCHED field (None where the message does not map it) in one call:
    what the per-field getters return, without a Python call per field and per alternative."""
    exprs = ", ".join(_getter_expr(fields[k]) if k in fields else "None" for k in FETCHED)
    ns: dict = {"_total": _total}
    exec(f"def fetch(f):\n    return ({exprs})\n", ns)  # noqa: S102 - source built from validated profile specs
    return ns["fetch"]


def _update_groups(f: dict, m: re.Match) -> None:
    """f gets the named groups of m that took part in the match."""
    groups = m.groupdict()
    if None in groups.values():
        f.update((k, v) for k, v in groups.items() if v is not None)
    else:
        f.update(groups)


def _compile_regex(pattern: Any, where: str, path: Path) -> re.Pattern:
    if not isinstance(pattern, str):
        raise ProfileError(path, where, "expected a regular expression string")
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ProfileError(path, where, f"not a valid regular expression: {exc}") from None


_CSV_PLAIN = re.compile(r"[^\"]*$")


def _extractor(spec: Any, where: str, path: Path) -> Callable[[Header, dict], bool]:
    """One extraction step: fills the fields dict from the header's body/msg/sd; False when a regex did not match."""
    if not isinstance(spec, dict):
        raise ProfileError(path, where, "expected a mapping with 'type'")
    unknown = set(spec) - {"type", "source", "pattern", "duplicates", "search", "delimiter"}
    if unknown:
        raise ProfileError(path, where, f"unknown keys {sorted(unknown)}")
    kind = spec.get("type")
    source = spec.get("source", "body")
    if source not in ("body", "msg", "sd"):
        raise ProfileError(path, f"{where}.source", "must be body, msg or sd")
    if kind == "kv":
        first = spec.get("duplicates", "first") == "first"
        if spec.get("duplicates", "first") not in ("first", "last"):
            raise ProfileError(path, f"{where}.duplicates", "must be first or last")

        def kv(h: Header, f: dict) -> bool:
            pairs = _KV.findall(getattr(h, source))
            if first:
                pairs.reverse()
            f.update(pairs)
            return bool(pairs)

        return kv
    if kind == "csv":
        delim = spec.get("delimiter", ",")
        if not isinstance(delim, str) or len(delim) != 1:
            raise ProfileError(path, f"{where}.delimiter", "must be one character")

        def csv_(h: Header, f: dict) -> bool:
            text = getattr(h, source)
            if '"' in text:
                try:
                    cols = next(csv.reader([text], delimiter=delim))
                except (csv.Error, StopIteration):
                    return False
            else:
                cols = text.split(delim)
            f.update(enumerate(cols))
            f["_ncols"] = len(cols)
            return True

        return csv_
    if kind == "regex":
        rx = _compile_regex(spec.get("pattern"), f"{where}.pattern", path)
        op = rx.search if spec.get("search", True) else rx.match

        def regex(h: Header, f: dict) -> bool:
            m = op(getattr(h, source))
            if m is None:
                return False
            _update_groups(f, m)
            return True

        return regex
    raise ProfileError(path, f"{where}.type", f"unknown extraction type {kind!r} (kv, csv, regex)")


def _when(spec: Any, where: str, path: Path) -> Callable[[Header, dict], bool]:
    if spec is None:
        return lambda h, f: True
    if isinstance(spec, list):  # every condition must hold
        parts = [_when(s, f"{where}[{i}]", path) for i, s in enumerate(spec)]
        return _all_of(parts)
    if not isinstance(spec, dict):
        raise ProfileError(path, where, "expected a mapping")
    unknown = set(spec) - {"field", "equals", "in", "regex", "msgid"}
    if unknown:
        raise ProfileError(path, where, f"unknown keys {sorted(unknown)}")
    tests: list[Callable[[Header, dict], bool]] = []
    if "field" in spec:
        key = spec["field"]
        if "equals" in spec:
            want = {str(spec["equals"]).lower()}
        elif "in" in spec and isinstance(spec["in"], list):
            want = {str(x).lower() for x in spec["in"]}
        else:
            raise ProfileError(path, where, "'field' needs 'equals' or a list 'in'")
        if len(want) == 1:
            (one,) = want
            tests.append(lambda h, f: str(_unquote(f.get(key, ""))).lower() == one)
        else:
            tests.append(lambda h, f: str(_unquote(f.get(key, ""))).lower() in want)
    if "regex" in spec:
        rx = _compile_regex(spec["regex"], f"{where}.regex", path)
        tests.append(lambda h, f: rx.search(h.body) is not None)
    if "msgid" in spec:
        rx = _compile_regex(spec["msgid"], f"{where}.msgid", path)
        tests.append(lambda h, f: rx.fullmatch(h.msgid) is not None)
    if not tests:
        raise ProfileError(path, where, "needs 'field', 'regex' or 'msgid'")
    return _all_of(tests)


def _all_of(tests: list[Callable[[Header, dict], bool]]) -> Callable[[Header, dict], bool]:
    """A test that holds when every one of tests does (tried in order, stopping at the first that does not)."""
    if len(tests) == 1:
        return tests[0]
    if len(tests) == 2:
        a, b = tests
        return lambda h, f: bool(a(h, f) and b(h, f))
    return lambda h, f: all(t(h, f) for t in tests)


@dataclass
class _TimeSpec:
    getter: Callable[[dict], str | None]
    parse: Callable[[str], Any]
    epoch: bool


@dataclass
class _Mapped:
    value: Callable[[dict], str | None] | None = None
    map: dict[str, str] | None = None
    default: str = ""


@dataclass
class Message:
    """One kind of message of a profile (ASA 302013, PAN-OS TRAFFIC, ...), compiled."""

    name: str
    when: Callable[[Header, dict], bool]
    extract: list[Callable[[Header, dict], bool]]
    kind: str | _Mapped
    session: list[Callable[[dict], str | None]]
    get: dict[str, Callable[[dict], str | None]]
    times: dict[str, list[_TimeSpec]]
    duration: tuple[Callable[[dict], str | None], Callable[[str], int | None]] | None
    action: _Mapped
    swap: tuple[Callable[[dict], str | None], set[str]] | None
    #: The FETCHED fields in one call (``_fetcher``).
    fetch: Callable[[dict], tuple] = None
    #: The field specs as written (profile's and message's), for tests against ``_getter_plain``.
    fields: dict | None = None
    #: The message's own spec as written (``when``, ``extract``, ``kind``, ...), for the block compiler.
    spec: dict | None = None


@dataclass
class Profile:
    """A device profile loaded from ``device_profiles/<vendor>.yaml``."""

    vendor: str
    path: Path
    dataset: int
    timezone: str
    priority: int
    app_re: re.Pattern | None
    msgid_re: re.Pattern | None
    contains: tuple[str, ...]
    recognise_re: re.Pattern | None
    extract: list[Callable[[Header, dict], bool]]
    messages: list[Message]
    app_protocols: dict[str, int]
    emit_open: bool
    orient_unknown: str
    samples: list[str] = field(default_factory=list)
    #: A session start whose end has not come after this long becomes a record on its own (the device's idle
    #: timeout: its end can no longer be on the way).
    session_timeout_ns: int = DEFAULT_SESSION_TIMEOUT_S * 1_000_000_000
    #: The counter label of this profile's records (``syslog.<vendor>``).
    label: tuple[str] = ()
    #: The profile as written (after validation), for the block compiler (syslog_block.py).
    spec: dict | None = None

    def __post_init__(self) -> None:
        self.label = (f"syslog.{self.vendor}",)

    def recognises(self, h: Header, f: dict) -> bool:
        """True when the message is this vendor's (fills f with the recognising regex's named groups)."""
        if self.contains:
            body = h.body
            for c in self.contains:
                if c in body:
                    break
            else:
                return False
        if self.app_re is not None and not self.app_re.fullmatch(h.app):
            return False
        if self.msgid_re is not None and not self.msgid_re.fullmatch(h.msgid):
            return False
        if self.recognise_re is not None:
            m = self.recognise_re.search(h.body)
            if m is None:
                return False
            _update_groups(f, m)
        return True


def _mapped(spec: Any, where: str, path: Path, allowed: set[str] | None) -> _Mapped:
    if spec is None:
        return _Mapped()
    if isinstance(spec, str) and (allowed is None or spec in allowed):
        return _Mapped(default=spec)
    if not isinstance(spec, dict):
        raise ProfileError(path, where, f"expected one of {sorted(allowed or [])} or a mapping with field/map/default")
    unknown = set(spec) - {"field", "map", "default"}
    if unknown:
        raise ProfileError(path, where, f"unknown keys {sorted(unknown)}")
    mapping = spec.get("map", {}) or {}
    if not isinstance(mapping, dict):
        raise ProfileError(path, f"{where}.map", "expected a mapping")
    mapping = {str(k).lower(): ("" if v is None else str(v)) for k, v in mapping.items()}
    default = "" if spec.get("default") is None else str(spec.get("default"))
    if allowed is not None:
        for k, v in list(mapping.items()) + [("default", default)]:
            if v and v not in allowed:
                raise ProfileError(path, f"{where}.map.{k}", f"{v!r} is not one of {sorted(allowed)}")
    value = _getter(spec["field"], f"{where}.field", path) if "field" in spec else None
    return _Mapped(value, mapping, default)


def _resolve_mapped(m: _Mapped, f: dict) -> str:
    if m.value is None:
        return m.default
    v = m.value(f)
    if v is None:
        return m.default
    return m.map.get(v.lower(), m.default) if m.map is not None else v


def _time_specs(spec: Any, where: str, path: Path) -> list[_TimeSpec]:
    items = spec if isinstance(spec, list) else [spec]
    out = []
    for i, item in enumerate(items):
        w = f"{where}[{i}]"
        if not isinstance(item, dict) or "format" not in item or not ({"field", "fields"} & set(item)):
            raise ProfileError(path, w, "expected {field: NAME, format: FMT} or {fields: [A, B], format: FMT}")
        unknown = set(item) - {"field", "fields", "format"}
        if unknown:
            raise ProfileError(path, w, f"unknown keys {sorted(unknown)}")
        fmt = item["format"]
        if fmt not in TIME_FORMATS:
            raise ProfileError(path, f"{w}.format", f"unknown time format {fmt!r} (one of {sorted(TIME_FORMATS)})")
        if "fields" in item:
            parts = [_getter(p, f"{w}.fields", path) for p in item["fields"]]

            def joined(f: dict, parts=parts) -> str | None:
                vals = [p(f) for p in parts]
                return None if any(v is None for v in vals) else " ".join(vals)

            getter = joined
        else:
            getter = _getter(item["field"], f"{w}.field", path)
        out.append(_TimeSpec(getter, TIME_FORMATS[fmt], fmt == "epoch"))
    return out


def _compile_fields(fields: dict, where: str, path: Path):
    get: dict[str, Callable] = {}
    times: dict[str, list[_TimeSpec]] = {}
    duration = None
    for key, spec in fields.items():
        if key not in _FIELD_TARGETS:
            raise ProfileError(path, f"{where}.{key}", f"unknown record field (one of {sorted(_FIELD_TARGETS)})")
        if key in ("start", "end", "time"):
            times[key] = _time_specs(spec, f"{where}.{key}", path)
        elif key == "duration":
            if not isinstance(spec, dict) or set(spec) - {"field", "format"} or "field" not in spec:
                raise ProfileError(path, f"{where}.duration", "expected {field: NAME, format: seconds|hms|ms}")
            fmt = spec.get("format", "seconds")
            if fmt not in DURATION_FORMATS:
                raise ProfileError(path, f"{where}.duration.format", f"one of {sorted(DURATION_FORMATS)}")
            duration = (_getter(spec["field"], f"{where}.duration.field", path), DURATION_FORMATS[fmt])
        elif key == "action":
            continue  # handled by _mapped
        elif key == "app":
            # Every alternative is tried until one is a known pub/sub app id (nested app, then app, say).
            specs = spec if isinstance(spec, list) else [spec]
            get["app"] = [_getter(s, f"{where}.app[{i}]", path) for i, s in enumerate(specs)]
        else:
            get[key] = _getter(spec, f"{where}.{key}", path)
    return get, times, duration


def load_profile(path: str | Path) -> Profile:
    """Load and validate one device profile; raises ProfileError naming the file and the key."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ProfileError(path, "-", f"cannot read: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ProfileError(path, f"line {mark.line + 1}" if mark else "-", f"not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ProfileError(path, "-", "a profile is a YAML mapping")
    unknown = set(data) - _PROFILE_KEYS
    if unknown:
        raise ProfileError(path, sorted(unknown)[0], f"unknown key (known: {sorted(_PROFILE_KEYS)})")
    vendor = data.get("vendor")
    if not isinstance(vendor, str) or not re.fullmatch(r"[a-z0-9_]+", vendor):
        raise ProfileError(path, "vendor",
                           "required: lower-case letters, digits and '_' (the dataset is syslog.<vendor>)")
    samples = data.get("samples")
    if not isinstance(samples, list) or not samples or not all(isinstance(s, str) for s in samples):
        raise ProfileError(path, "samples", "required: the list of fixture/sample files that prove this profile")
    tzname = data.get("timezone", "UTC")
    try:
        _tzinfo(str(tzname))
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ProfileError(path, "timezone", f"unknown time zone {tzname!r}") from None
    rec = data.get("recognise")
    if not isinstance(rec, dict) or not rec:
        raise ProfileError(path, "recognise", "required: how to recognise this vendor's messages (app, msgid, "
                                              "contains, regex)")
    unknown = set(rec) - _RECOGNISE_KEYS
    if unknown:
        raise ProfileError(path, f"recognise.{sorted(unknown)[0]}", f"unknown key (known: {sorted(_RECOGNISE_KEYS)})")
    contains = rec.get("contains", [])
    if isinstance(contains, str):
        contains = [contains]
    if not isinstance(contains, list) or not all(isinstance(c, str) and c for c in contains):
        raise ProfileError(path, "recognise.contains", "expected a list of non-empty strings")
    extract = data.get("extract", [])
    if not isinstance(extract, list):
        raise ProfileError(path, "extract", "expected a list of extraction steps")
    base_extract = [_extractor(e, f"extract[{i}]", path) for i, e in enumerate(extract)]
    base_fields = data.get("fields", {}) or {}
    if not isinstance(base_fields, dict):
        raise ProfileError(path, "fields", "expected a mapping of record field to source")
    messages_spec = data.get("messages")
    if not isinstance(messages_spec, list) or not messages_spec:
        raise ProfileError(path, "messages", "required: the list of message kinds that make records")
    app_protocols = data.get("app_protocols", {}) or {}
    if not isinstance(app_protocols, dict):
        raise ProfileError(path, "app_protocols", "expected a mapping of firewall app id to network.protocol")
    app_ids = {}
    for k, v in app_protocols.items():
        if v not in APP_PROTOCOL_ID or not v:
            raise ProfileError(path, f"app_protocols.{k}", f"{v!r} is not one of {list(APP_PROTOCOL_ID)[1:]}")
        app_ids[str(k).lower()] = APP_PROTOCOL_ID[v]
    orient = data.get("orient_unknown", "none")
    if orient not in _ORIENT:
        raise ProfileError(path, "orient_unknown", f"one of {sorted(_ORIENT)}")
    messages = []
    for i, ms in enumerate(messages_spec):
        where = f"messages[{i}]"
        if not isinstance(ms, dict):
            raise ProfileError(path, where, "expected a mapping")
        unknown = set(ms) - _MESSAGE_KEYS
        if unknown:
            raise ProfileError(path, f"{where}.{sorted(unknown)[0]}", f"unknown key (known: {sorted(_MESSAGE_KEYS)})")
        fields = dict(base_fields)
        mf = ms.get("fields", {}) or {}
        if not isinstance(mf, dict):
            raise ProfileError(path, f"{where}.fields", "expected a mapping")
        fields.update(mf)
        for required in ("src_ip", "dst_ip", "proto"):
            if required not in fields:
                raise ProfileError(path, f"{where}.fields.{required}", "required (here or in the profile's fields)")
        get, times, duration = _compile_fields(fields, f"{where}.fields", path)
        kind_spec = ms.get("kind", "flow")
        kind = kind_spec if isinstance(kind_spec, str) else _mapped(kind_spec, f"{where}.kind", path, _KINDS)
        if isinstance(kind, str) and kind not in _KINDS:
            raise ProfileError(path, f"{where}.kind", f"one of {sorted(_KINDS)} or a field/map")
        session = ms.get("session", [])
        if not isinstance(session, list):
            raise ProfileError(path, f"{where}.session", "expected a list of fields that identify the session")
        action_spec = ms.get("action", fields.get("action"))
        swap_spec = ms.get("swap")
        swap = None
        if swap_spec is not None:
            if not isinstance(swap_spec, dict) or "field" not in swap_spec or "in" not in swap_spec:
                raise ProfileError(path, f"{where}.swap", "expected {field: NAME, in: [values]}")
            swap = (_getter(swap_spec["field"], f"{where}.swap.field", path),
                    {str(x).lower() for x in swap_spec["in"]})
        extract_spec = ms.get("extract", [])
        if not isinstance(extract_spec, list):
            raise ProfileError(path, f"{where}.extract", "expected a list")
        messages.append(Message(
            name=str(ms.get("name", i)),
            when=_when(ms.get("when"), f"{where}.when", path),
            extract=[_extractor(e, f"{where}.extract[{j}]", path) for j, e in enumerate(extract_spec)],
            kind=kind,
            session=[_getter(s, f"{where}.session[{j}]", path) for j, s in enumerate(session)],
            get=get, times=times, duration=duration,
            action=_mapped(action_spec, f"{where}.action", path, set(ACTION_ID) - {""}),
            swap=swap,
            fetch=_fetcher(fields),
            fields=fields,
            spec=ms,
        ))
    priority = data.get("priority", 50)
    if not isinstance(priority, int):
        raise ProfileError(path, "priority", "expected an integer (lower is tried first)")
    timeout = data.get("session_timeout", DEFAULT_SESSION_TIMEOUT_S)
    if not isinstance(timeout, int) or isinstance(timeout, bool) or not 0 < timeout <= 30 * 86400:
        raise ProfileError(path, "session_timeout", "expected whole seconds, 1 to 2592000")
    return Profile(
        vendor=vendor, path=path, dataset=dataset_id(f"syslog.{vendor}"), timezone=str(tzname), priority=priority,
        app_re=_compile_regex(rec["app"], "recognise.app", path) if "app" in rec else None,
        msgid_re=_compile_regex(rec["msgid"], "recognise.msgid", path) if "msgid" in rec else None,
        contains=tuple(contains),
        recognise_re=_compile_regex(rec["regex"], "recognise.regex", path) if "regex" in rec else None,
        extract=base_extract, messages=messages, app_protocols=app_ids,
        emit_open=bool(data.get("emit_open", False)), orient_unknown=orient, samples=list(samples), spec=data,
        session_timeout_ns=timeout * 1_000_000_000,
    )


def load_profiles(directory: str | Path = PROFILE_DIR) -> list[Profile]:
    """Every syslog device profile in a directory, in the order they are tried (priority, then file name)."""
    directory = Path(directory)
    paths = sorted(p for p in directory.glob("*.yaml") if p.name not in NOT_SYSLOG_PROFILES)
    profiles = [load_profile(p) for p in paths]
    seen: dict[str, Path] = {}
    for p in profiles:
        if p.vendor in seen:
            raise ProfileError(p.path, "vendor", f"{p.vendor!r} is already defined in {seen[p.vendor]}")
        seen[p.vendor] = p.path
    profiles.sort(key=lambda p: (p.priority, p.path.name))
    return profiles


# ---------------------------------------------------------------------------------------------------------------
# The parser
# ---------------------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Record:
    start_ns: int
    end_ns: int
    src: tuple[int, int]
    dst: tuple[int, int]
    src_port: int
    dst_port: int
    proto: int
    bytes: int
    packets: int
    app: int
    action: int
    in_if: int
    out_if: int
    flags: int
    tcp_flags: int
    has_duration: bool
    oriented: bool


class SyslogParser:
    """Firewall syslog lines/datagrams to FlowBatch rows through the device profiles; never raises on bad input."""

    name = "syslog"

    def __init__(self, counters: Counters | None = None, profiles: list[Profile] | None = None,
                 reference_ns: int | None = None, timezones: dict[str, str] | None = None,
                 max_line: int = MAX_LINE, max_sessions: int = MAX_OPEN_SESSIONS):
        """counters: shared registry; profiles: default the shipped ones; reference_ns: the "now" that year-less
        stamps are placed near when a message has no receive time (files), default the wall clock at creation;
        timezones: per sender address or header host, the zone of its naive stamps (overrides the profile's)."""
        self.counters = counters if counters is not None else Counters()
        self.profiles = profiles if profiles is not None else load_profiles()
        self.reference_ns = reference_ns if reference_ns is not None else time.time_ns()
        self.timezones = dict(timezones or {})
        self.max_line = max_line
        self.max_sessions = max_sessions
        self._sessions: OrderedDict[tuple, _Record] = OrderedDict()
        self._by_vendor = {p.vendor: p for p in self.profiles}
        # expire_sessions has nothing to do before the oldest held start is this old (a lower bound, kept cheap)
        self._min_timeout_ns = min((p.session_timeout_ns for p in self.profiles), default=0)
        self._oldest_ns = _I64_MAX
        self._last_profile: dict[tuple, Profile] = {}
        self._log = RateLimitedLog()
        self._default_dataset = dataset_id("syslog")
        # Rows made since the last flush (FLOW_DTYPE tuples), written to the builder once per feed_* call, and
        # their count per decoder label (one counter update per call rather than per row).
        self._rows: list[tuple] = []
        self._made: dict[tuple, int] = {}
        # ns of (stamp, zone, reference) seen lately: a stamp repeats for a whole second, and placing a year-less
        # one takes three conversions.
        self._ns_cache: dict[tuple, int] = {}
        #: Blocks of lines go through the compiled block path (False: every line through the reference path).
        self.block = True
        self._block = None

    # -- public API -------------------------------------------------------------------------------------------

    def feed_line(self, line: bytes, exporter: tuple[int, int], recv_ns: int, builder: FlowBatchBuilder) -> int:
        """Parse one syslog message (a text line, with or without its newline); returns the rows appended."""
        self._line(line, exporter, recv_ns)
        return self._flush(builder)

    def feed_datagram(self, payload: bytes, exporter: tuple[int, int], recv_ns: int,
                      builder: FlowBatchBuilder) -> int:
        """Parse a syslog datagram (one message, or several separated by newlines); returns the rows appended."""
        if b"\n" not in payload.rstrip(b"\r\n\x00"):
            self._line(payload, exporter, recv_ns)
            return self._flush(builder)
        return self.feed_lines([p for p in payload.split(b"\n") if p.strip()], exporter, recv_ns, builder)

    def feed_lines(self, lines, exporter: tuple[int, int], recv_ns: int, builder: FlowBatchBuilder) -> int:
        """``feed_line`` over many lines from one sender, through the block path (syslog_block.py) when there are
        enough of them: the same rows, counters and sessions as one line at a time."""
        if not isinstance(lines, list):
            lines = list(lines)
        if self.block and len(lines) >= BLOCK_MIN_LINES and not self.timezones:
            if self._block is None:
                from collector.syslog.block import BlockPath

                self._block = BlockPath(self)
            return self._block.feed(lines, exporter, recv_ns, builder)
        one = self._line
        for line in lines:
            one(line, exporter, recv_ns)
        return self._flush(builder)

    def open_sessions(self) -> int:
        """Session starts waiting for their end."""
        return len(self._sessions)

    def expire_sessions(self, now_ns: int, builder: FlowBatchBuilder) -> int:
        """Session starts older than their profile's ``session_timeout`` at now_ns (data time: the newest record
        time the caller has seen) become records on their own; returns the rows appended. The table is in arrival order, so the walk
        stops at the first start still within its timeout."""
        if not self._sessions or now_ns - self._oldest_ns < self._min_timeout_ns:
            return 0
        sessions = self._sessions
        while sessions:
            key = next(iter(sessions))
            rec = sessions[key]
            start = self._block.held_start(rec) if rec.__class__ is int else rec.start_ns
            profile = self._by_vendor[key[2]]
            if now_ns - start < profile.session_timeout_ns:
                self._oldest_ns = start
                break
            del sessions[key]
            self._lone_start(key, rec, "start_timed_out")
        else:
            self._oldest_ns = _I64_MAX
        return self._flush(builder)

    def close_sessions(self, builder: FlowBatchBuilder) -> int:
        """Every session start still waiting becomes a record on its own (the input ended, or the service stops);
        returns the rows appended."""
        sessions = self._sessions
        while sessions:
            key, rec = sessions.popitem(last=False)
            self._lone_start(key, rec, "start_at_end_of_input")
        self._oldest_ns = _I64_MAX
        return self._flush(builder)

    def _lone_start(self, key: tuple, rec, why: str) -> None:
        """A held start whose end never came as a record: what the start message said (addresses, times, verdict;
        counters only where it has them, as PAN-OS ``start`` logs do)."""
        if rec.__class__ is int:
            rec = self._block.take_slot(rec)
        profile = self._by_vendor[key[2]]
        if rec.oriented:
            rec.flags |= FLAG_ORIENTED
        try:
            self._append(rec, profile, key[0])
        except OverflowError as exc:  # a start whose time or counters no record can hold: counted, never raised
            self._reject(profile.label[0], "out_of_range", str(exc))
            return
        self.counters.inc("brokerwatch_syslog_sessions_total", (profile.vendor, why))

    # -- internals ----------------------------------------------------------------------------------------------

    def _flush(self, builder: FlowBatchBuilder) -> int:
        """Write the rows made since the last flush to the builder; returns how many."""
        rows = self._rows
        n = len(rows)
        if not n:
            return 0
        view = builder.reserve(n, zero=False)
        if n == 1:
            view[0] = rows[0]
        else:
            view[:] = np.array(rows, FLOW_DTYPE)
        rows.clear()
        for label, k in self._made.items():
            self.counters.inc("brokerwatch_decoder_records_total", label, k)
        self._made.clear()
        return n

    def _line(self, line: bytes, exporter: tuple[int, int], recv_ns: int) -> None:
        """Parse one message; its row (if any) is added to the pending rows."""
        if len(line) > self.max_line:
            self.counters.inc("brokerwatch_syslog_oversized_total", ("line",))
            line = line[: self.max_line]
        text = line.decode("utf-8", "replace").rstrip("\r\n\x00")
        if not text.strip():
            return
        try:
            self._parse(text, exporter, recv_ns)
        except Exception as exc:  # noqa: BLE001 - a bug on one hostile line must not stop the stream; counted
            self._reject("syslog", "malformed", repr(exc))

    def _reject(self, decoder: str, reason: str, detail: str = "") -> None:
        self.counters.inc("brokerwatch_decoder_errors_total", (decoder, reason))
        self._log.warning(f"{decoder}:{reason}", "rejected %s message: %s %s", decoder, reason, detail[:200])

    def _detect(self, h: Header, exporter: tuple[int, int], f: dict) -> Profile | None:
        key = (exporter, h.host)
        last = self._last_profile.get(key)
        if last is not None and last.recognises(h, f):
            return last
        for p in self.profiles:
            if p is not last:
                f.clear()
                if p.recognises(h, f):
                    if len(self._last_profile) > 65536:
                        self._last_profile.clear()
                    self._last_profile[key] = p
                    return p
        return None

    def _parse(self, text: str, exporter: tuple[int, int], recv_ns: int) -> int:
        h = parse_header(text)
        f: dict = {}
        profile = self._detect(h, exporter, f)
        if profile is None:
            self.counters.inc("brokerwatch_syslog_unmatched_total", ("unknown",))
            self._reject("syslog", "unmatched")
            return 0
        return self._parse_with(profile, h, f, text, exporter, recv_ns)

    def _parse_with(self, profile: Profile, h: Header, f: dict, text: str, exporter: tuple[int, int],
                    recv_ns: int) -> int:
        """The rest of _parse once the profile is known (f holds its recognising regex's groups)."""
        decoder = profile.label[0]
        for ex in profile.extract:
            ex(h, f)
        for msg in profile.messages:
            if msg.when(h, f):
                break
        else:
            # The vendor's message, but not one that describes a connection (VPN, admin, system...).
            self.counters.inc("brokerwatch_syslog_unmatched_total", (profile.vendor,))
            return 0
        for ex in msg.extract:
            if not ex(h, f):
                self._reject(decoder, "malformed", text)
                return 0
        try:
            return self._emit(profile, msg, h, f, exporter, recv_ns)
        except RejectLine as exc:
            self._reject(decoder, exc.reason, text)
            return 0

    def _zone(self, profile: Profile, h: Header, exporter: tuple[int, int]) -> str:
        if self.timezones:
            from analytics.schema import words_to_ip

            for key in (words_to_ip(*exporter), h.host):
                if key in self.timezones:
                    return self.timezones[key]
        return profile.timezone

    def _time(self, specs: list[_TimeSpec], f: dict, tz: str, ref: int) -> int | None:
        for s in specs:
            v = s.getter(f)
            if v is None or v == "":
                continue
            parsed = s.parse(v)
            if parsed is None:
                continue
            if s.epoch:
                return parsed
            try:
                return self._stamp_ns(parsed, tz, ref)
            except (ValueError, OverflowError):
                continue
        return None

    def _stamp_ns(self, stamp: tuple, tz: str, ref: int) -> int:
        """stamp_to_ns, remembered (its errors are not: they are raised again)."""
        key = (stamp, tz, ref)
        cache = self._ns_cache
        v = cache.get(key)
        if v is None:
            v = stamp_to_ns(stamp, tz, ref)
            if len(cache) >= 4096:
                cache.clear()
            cache[key] = v
        return v

    def _emit(self, profile: Profile, msg: Message, h: Header, f: dict, exporter: tuple[int, int],
              recv_ns: int) -> int:
        get = msg.get
        kind = msg.kind if isinstance(msg.kind, str) else (_resolve_mapped(msg.kind, f) or "flow")
        # Every mapped field at once (a field the message does not map is None, which reads as "absent" below).
        stext, dtext, ptext, sp, dp, b, p, iv, ov = msg.fetch(f)
        # Addresses, protocol, ports.
        src = _ip_cache.get(stext) or ip_words(stext or "")
        dst = _ip_cache.get(dtext) or ip_words(dtext or "")
        if src is None or dst is None:
            raise RejectLine("bad_address")
        proto = _protocol_cached(ptext) if ptext else None
        if proto is None:
            raise RejectLine("bad_protocol")
        flags = 0
        sport = dport = 0
        if proto in PORT_PROTOCOLS:
            if sp is None or dp is None or sp == "" or dp == "":
                flags |= FLAG_NO_PORTS
            else:
                if not (sp.isdigit() and dp.isdigit()):
                    raise RejectLine("bad_port")
                sport, dport = int(sp), int(dp)
                if sport > 65535 or dport > 65535:
                    raise RejectLine("bad_port")
        else:
            flags |= FLAG_NO_PORTS
        # Counters.
        nbytes = npackets = 0
        if b is None or b == "":
            flags |= FLAG_NO_COUNTERS
        else:
            if not b.isdigit():
                raise RejectLine("bad_counter")
            nbytes = int(b)
            if p is not None and p != "":
                if not p.isdigit():
                    raise RejectLine("bad_counter")
                npackets = int(p)
            else:
                flags |= FLAG_NO_PACKETS  # bytes known, packets not (ASA teardowns): say so, not "0 packets"
        # Interfaces: numeric ids only (names need a string column the record does not have).
        in_if = out_if = 0
        if iv and ov and iv.isdigit() and ov.isdigit() and int(iv) < 2**32 and int(ov) < 2**32:
            in_if, out_if = int(iv), int(ov)
        else:
            flags |= FLAG_NO_INTERFACES
        # Application id -> network.protocol.
        app = 0
        if "app" in get and profile.app_protocols:
            for g in get["app"]:
                a = g(f)
                if a:
                    app = profile.app_protocols.get(a.lower(), 0)
                    if app:
                        break
        action_name = _resolve_mapped(msg.action, f)
        action = ACTION_ID.get(action_name, 0)
        # Times.
        tz = self._zone(profile, h, exporter) if self.timezones else profile.timezone
        ref = recv_ns or self.reference_ns
        duration = None
        if msg.duration is not None:
            d = msg.duration[0](f)
            if d not in (None, ""):
                duration = msg.duration[1](d)
                if duration is None:
                    raise RejectLine("bad_duration")
        start = self._time(msg.times["start"], f, tz, ref) if "start" in msg.times else None
        end = self._time(msg.times["end"], f, tz, ref) if "end" in msg.times else None
        if end is None and start is not None and duration is not None:
            end = start + duration
        if end is None and "time" in msg.times:
            end = self._time(msg.times["time"], f, tz, ref)
        if end is None and h.stamp is not None:
            try:
                end = self._stamp_ns(h.stamp, tz, ref)
            except (ValueError, OverflowError):
                end = None
        if end is None:
            end = recv_ns
        if start is None:
            start = end - duration if duration is not None else end
        # Orientation.
        oriented = True
        if msg.swap is not None:
            v = msg.swap[0](f)
            if v is not None and v.lower() in msg.swap[1]:
                src, dst, sport, dport, in_if, out_if = dst, src, dport, sport, out_if, in_if
        elif kind == "close" and profile.orient_unknown == "lower_port_is_destination":
            oriented = False
        if kind == "flow":
            return self._row(start, end, src, dst, sport, dport, proto, nbytes, npackets, app, action, in_if, out_if,
                             flags, profile, exporter)
        rec = _Record(start, end, src, dst, sport, dport, proto, nbytes, npackets, app, action, in_if, out_if, flags,
                      0, duration is not None, oriented)
        key = (exporter, h.host, profile.vendor) + tuple(g(f) for g in msg.session)
        return self._session(kind, rec, key, bool(msg.session), profile, exporter)

    def _session(self, kind: str, rec: _Record, key: tuple, keyed: bool, profile: Profile,
                 exporter: tuple[int, int]) -> int:
        """An open message is held under key; a close one is joined with its open (if held) and made a row."""
        if kind == "open":
            if profile.emit_open:
                rec.flags |= FLAG_ORIENTED
                return self._append(rec, profile, exporter)
            old = self._sessions.pop(key, None)
            if old.__class__ is int:  # a start the block path held (syslog_block.py): its slot is free again
                self._block.free_slot(old)
            self._sessions[key] = rec
            if rec.start_ns < self._oldest_ns:
                self._oldest_ns = rec.start_ns
            if len(self._sessions) > self.max_sessions:
                (_k, _old) = self._sessions.popitem(last=False)
                if _old.__class__ is int:
                    self._block.free_slot(_old)
                self.counters.inc("brokerwatch_syslog_sessions_total", (_k[2], "start_evicted_without_end"))
            self.counters.inc("brokerwatch_syslog_sessions_total", (profile.vendor, "start_held"))
            return 0
        opened = self._sessions.pop(key, None) if keyed else None
        if opened.__class__ is int:
            opened = self._block.take_slot(opened)
        return self._close(rec, opened, profile, exporter)

    def _close(self, rec: _Record, opened: _Record | None, profile: Profile, exporter: tuple[int, int]) -> int:
        """A session end made a row, joined with its start when that was held."""
        if opened is not None:
            self.counters.inc("brokerwatch_syslog_sessions_total", (profile.vendor, "joined"))
            # The start message knows who initiated the connection; the end knows bytes and duration.
            rec.src, rec.dst, rec.src_port, rec.dst_port = opened.src, opened.dst, opened.src_port, opened.dst_port
            if not rec.flags & FLAG_NO_INTERFACES or opened.flags & FLAG_NO_INTERFACES:
                pass
            else:
                rec.in_if, rec.out_if = opened.in_if, opened.out_if
                rec.flags &= ~FLAG_NO_INTERFACES
            if not rec.app:
                rec.app = opened.app
            if not rec.has_duration:
                rec.start_ns = min(opened.start_ns, rec.end_ns)
            rec.oriented = True
        else:
            self.counters.inc("brokerwatch_syslog_sessions_total", (profile.vendor, "end_without_start"))
        if not rec.oriented and rec.src_port < rec.dst_port:
            # Heuristic for an end message whose start was not seen: the lower port is the service.
            rec.src, rec.dst, rec.src_port, rec.dst_port = rec.dst, rec.src, rec.dst_port, rec.src_port
            rec.in_if, rec.out_if = rec.out_if, rec.in_if
        if rec.oriented:  # a session log names the initiator first (or its start did)
            rec.flags |= FLAG_ORIENTED
        return self._append(rec, profile, exporter)

    def _append(self, r: _Record, profile: Profile, exporter: tuple[int, int]) -> int:
        return self._row(r.start_ns, r.end_ns, r.src, r.dst, r.src_port, r.dst_port, r.proto, r.bytes, r.packets,
                         r.app, r.action, r.in_if, r.out_if, r.flags, profile, exporter)

    def _row(self, start: int, end: int, src: tuple[int, int], dst: tuple[int, int], sport: int, dport: int,
             proto: int, nbytes: int, npackets: int, app: int, action: int, in_if: int, out_if: int, flags: int,
             profile: Profile, exporter: tuple[int, int]) -> int:
        """Add one row to the pending rows (written to the builder by _flush)."""
        # The checks numpy would make when the row is stored, made here so that a value out of range rejects this
        # line alone (as a malformed one, as before rows were written per block) and not the whole block.
        if not (_I64_MIN <= start <= _I64_MAX and _I64_MIN <= end <= _I64_MAX and nbytes <= _U64_MAX
                and npackets <= _U64_MAX):
            raise OverflowError(f"value out of range for the record: {start} {end} {nbytes} {npackets}")
        self._rows.append((start, end, src[0], src[1], dst[0], dst[1], exporter[0], exporter[1], nbytes, npackets, 0, 0, 1,
                           in_if, out_if, 0, sport, dport, proto, 0, app, action, profile.dataset, flags))
        made = self._made
        made[profile.label] = made.get(profile.label, 0) + 1
        return 1
