"""Field text to numbers in numba, equal to the pure-Python readers in ``syslog.py`` (the reference).

Every reader takes ``(buf, s, e)``: a uint8 array and the span of the field's text in it (the text is
``buf[s:e].decode("latin-1")``), and returns a status first:

- 1: parsed; the values are those the reference gives;
- 0: the reference says "not valid" (returns None or raises ValueError);
- -1: not decided here (rare shapes: scope ids, signs, exponents, values past int64, ...); run the reference.

A reader returns 1 or 0 only where it is certain; everything else is -1. No Python objects are used, so the
functions also run (slowly) with ``NUMBA_DISABLE_JIT=1``.
"""

from __future__ import annotations

import numba
import numpy as np

from collector.syslog.parser import PROTOCOL_NUMBERS

_I64_MAX = 9_223_372_036_854_775_807
#: Largest whole seconds whose ns (s * 10**9 + ns, ns < 10**9) still fits int64.
_MAX_S = 9_223_372_035
_NS_PER_DAY = 86_400_000_000_000
#: The reference's year-guess window (syslog.stamp_to_ns), in ns.
_AHEAD_NS = 31 * _NS_PER_DAY
_BEHIND_NS = 335 * _NS_PER_DAY
_U0 = np.uint64(0)
_U16 = np.uint64(16)
_U48 = np.uint64(48)
_MAPPED = np.uint64(0x0000FFFF00000000)
#: Month abbreviations in order (syslog._MONTHS), 3 bytes each.
_MONTH_NAMES = np.frombuffer(b"JanFebMarAprMayJunJulAugSepOctNovDec", dtype=np.uint8).copy()
_MONTH_DAYS = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=np.int64)
#: Value of each byte as a hex digit, -1 for the others.
_HEX = np.array([int(chr(b), 16) if chr(b) in "0123456789abcdefABCDEF" else -1 for b in range(256)], dtype=np.int8)
_POW10 = np.array([10**k for k in range(19)], dtype=np.int64)
#: Exact powers of ten as float64 (10**22 is the last one a double holds exactly).
_POW10F = np.array([float(10**k) for k in range(23)], dtype=np.float64)
#: 2**53: integers below it are exact doubles.
_EXACT_INT = 9_007_199_254_740_992


def pack_protocols() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """PROTOCOL_NUMBERS as (names_buf uint8, names_off int64 of len n+1, numbers int64) for proto_span."""
    names = list(PROTOCOL_NUMBERS)
    blob = "".join(names).encode("ascii")
    off = np.zeros(len(names) + 1, dtype=np.int64)
    for i, n in enumerate(names):
        off[i + 1] = off[i] + len(n)
    numbers = np.array([PROTOCOL_NUMBERS[n] for n in names], dtype=np.int64)
    return np.frombuffer(blob, dtype=np.uint8).copy(), off, numbers


# ---------------------------------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------------------------------


@numba.njit(cache=True, inline="always")
def _byte(buf, i):
    """buf[i] as int64 (uint8 arithmetic would wrap, and with the JIT off numpy keeps uint8)."""
    return np.int64(buf[i])


@numba.njit(cache=True, inline="always")
def _is_digit(c):
    """ASCII 0-9."""
    return 48 <= c <= 57


@numba.njit(cache=True)
def _digits(buf, p, e, most):
    """(value, end) of the run of at most `most` ASCII digits at p (end == p when there is none)."""
    v = 0
    q = p
    while q < e and q - p < most:
        c = _byte(buf, q)
        if not _is_digit(c):
            break
        v = v * 10 + (c - 48)
        q += 1
    return v, q


@numba.njit(cache=True)
def _month(buf, p):
    """1..12 for the abbreviation at buf[p:p+3] (syslog._MONTHS, case-sensitive), 0 when it is none."""
    for m in range(12):
        if buf[p] == _MONTH_NAMES[3 * m] and buf[p + 1] == _MONTH_NAMES[3 * m + 1] \
                and buf[p + 2] == _MONTH_NAMES[3 * m + 2]:
            return m + 1
    return 0


@numba.njit(cache=True)
def _decimal(buf, s, e):
    """(status, value, length) of str.isdigit() and int(text); -1 for bytes >= 0x80 or a value past int64."""
    if s >= e:
        return 0, 0, 0
    high = False
    for i in range(s, e):
        c = _byte(buf, i)
        if c >= 0x80:
            high = True
        elif not _is_digit(c):
            return 0, 0, 0  # an ASCII non-digit: isdigit() is False whatever else is there
    if high:
        return -1, 0, 0
    v = 0
    for i in range(s, e):
        d = _byte(buf, i) - 48
        if v > (_I64_MAX - d) // 10:
            return -1, 0, 0
        v = v * 10 + d
    return 1, v, e - s


# ---------------------------------------------------------------------------------------------------------------
# Addresses
# ---------------------------------------------------------------------------------------------------------------


@numba.njit(cache=True)
def _ipv4(buf, s, e):
    """(ok, value) of a dotted quad exactly as ipaddress.IPv4Address (no leading zeros, 4 octets <= 255)."""
    v = 0
    octets = 0
    i = s
    while True:
        j = i
        o = 0
        while j < e and buf[j] != 46:  # '.'
            c = _byte(buf, j)
            if not _is_digit(c) or j - i >= 3:
                return False, 0
            o = o * 10 + (c - 48)
            j += 1
        if j == i or (j - i > 1 and buf[i] == 48) or o > 255:
            return False, 0
        v = v * 256 + o
        octets += 1
        if j == e:
            break
        if octets == 4:
            return False, 0
        i = j + 1
    return octets == 4, v


@numba.njit(cache=True, inline="always")
def _hex(c):
    """Value of an ASCII hex digit, -1 for any other byte."""
    return np.int64(_HEX[c])


@numba.njit(cache=True, inline="always")
def _shl16(hi, lo, h):
    """(hi, lo) << 16 | h as a 128-bit pair."""
    return (hi << _U16) | (lo >> _U48), (lo << _U16) | np.uint64(h)


@numba.njit(cache=True)
def _ipv6(buf, s, e):
    """(status, hi, lo) exactly as ipaddress.IPv6Address._ip_int_from_string (the scope id is handled before)."""
    hi = _U0
    lo = _U0
    snap_hi = _U0
    snap_lo = _U0
    nparts = 0  # parts as split(':') gives them (an IPv4 tail is one)
    nhex = 0  # hextets read (an IPv4 tail is two)
    first_empty = False
    last_empty = False
    n_empty = 0  # empty parts after the first one (the last part may be among them)
    skip_at = -1  # index of the first empty part after the first one
    before = 0  # hextets before skip_at
    tail4 = False
    i = s
    while True:
        j = i
        h = 0
        dot = False
        while j < e and buf[j] != 58:  # ':'
            c = _byte(buf, j)
            d = _hex(c)
            if d < 0:
                if c == 46:  # '.': only the last part may be an IPv4 tail
                    dot = True
                    break
                return 0, _U0, _U0
            h = h * 16 + d
            j += 1
            if j - i > 4:
                return 0, _U0, _U0
        if dot:
            ok, v4 = _ipv4(buf, i, e)  # a ':' after it fails here, as the reference's hextet parse would
            if not ok:
                return 0, _U0, _U0
            hi, lo = _shl16(hi, lo, v4 >> 16)
            hi, lo = _shl16(hi, lo, v4 & 0xFFFF)
            nhex += 2
            nparts += 1
            tail4 = True
            break
        if j == i:
            if nparts == 0:
                first_empty = True
            else:
                n_empty += 1
                if skip_at < 0:
                    skip_at = nparts
                    before = nhex
                    snap_hi, snap_lo = hi, lo
                    hi = _U0
                    lo = _U0
            if j == e:
                last_empty = True
        else:
            hi, lo = _shl16(hi, lo, h)
            nhex += 1
        nparts += 1
        if nparts > 9:
            return 0, _U0, _U0
        if j == e:
            break
        i = j + 1
    if nparts < 3:
        return 0, _U0, _U0
    total = nparts + 1 if tail4 else nparts
    if total > 9:
        return 0, _U0, _U0
    interior = n_empty - 1 if last_empty else n_empty
    if interior > 1:
        return 0, _U0, _U0
    if interior == 1:
        # '::' at skip_at: leading/trailing empty parts only as part of it, and at least one hextet skipped.
        if first_empty and skip_at != 1:
            return 0, _U0, _U0
        if last_empty and skip_at != total - 2:
            return 0, _U0, _U0
        if nhex > 7:
            return 0, _U0, _U0
        for _ in range(8 - before):
            snap_hi, snap_lo = _shl16(snap_hi, snap_lo, 0)
        return 1, snap_hi | hi, snap_lo | lo
    if total != 8 or first_empty or last_empty:
        return 0, _U0, _U0
    return 1, hi, lo


@numba.njit(cache=True)
def ip_span(buf, s, e):
    """(status int64, hi uint64, lo uint64) of syslog.ip_words(text): IPv4 as (0, 0xFFFF << 32 | v4)."""
    # text.strip("[]")
    while s < e and (buf[s] == 91 or buf[s] == 93):
        s += 1
    while e > s and (buf[e - 1] == 91 or buf[e - 1] == 93):
        e -= 1
    if s >= e:
        return 0, _U0, _U0
    ok, v4 = _ipv4(buf, s, e)  # digits and dots only, so no scope id or colon to consider
    if ok:
        return 1, _U0, _MAPPED | np.uint64(v4)
    colon = False
    for i in range(s, e):
        c = buf[i]
        if c == 37:  # '%': a scope id (its own rules); rare in firewall logs
            return -1, _U0, _U0
        if c == 58:
            colon = True
    if not colon:
        return 0, _U0, _U0  # IPv6 needs at least two colons
    return _ipv6(buf, s, e)


# ---------------------------------------------------------------------------------------------------------------
# Integers
# ---------------------------------------------------------------------------------------------------------------


@numba.njit(cache=True)
def uint_span(buf, s, e):
    """(status, value int64) of text.isdigit() and int(text) (ports, bytes, packets); -1 past int64."""
    st, v, _n = _decimal(buf, s, e)
    return st, v


@numba.njit(cache=True)
def proto_span(buf, s, e, names_buf, names_off, numbers):
    """(status, value int64) of syslog._protocol(text) with the table from pack_protocols()."""
    if s >= e:
        return 0, 0  # "".isdigit() is False and "" is no name
    digits = True
    for i in range(s, e):
        c = _byte(buf, i)
        if c >= 0x80:
            return -1, 0  # superscript digits pass isdigit(); int() then raises
        if not _is_digit(c):
            digits = False
    if digits:
        v = 0
        for i in range(s, e):
            v = v * 10 + (_byte(buf, i) - 48)
            if v >= 256:
                return 0, 0  # only grows from here
        return 1, v
    n = e - s
    for k in range(len(numbers)):
        a = names_off[k]
        if names_off[k + 1] - a != n:
            continue
        same = True
        for i in range(n):
            c = _byte(buf, s + i)
            if 65 <= c <= 90:
                c += 32
            if c != names_buf[a + i]:
                same = False
                break
        if same:
            return 1, numbers[k]
    return 0, 0


@numba.njit(cache=True)
def epoch_span(buf, s, e):
    """(status, ns int64) of syslog._parse_epoch(text) (s, ms, us or ns by the digit count); -1 past int64."""
    st, v, n = _decimal(buf, s, e)
    if st != 1:
        return st, 0
    if n <= 11:
        mult = 1_000_000_000
    elif n <= 14:
        mult = 1_000_000
    elif n <= 17:
        mult = 1_000
    else:
        mult = 1
    if v > _I64_MAX // mult:
        return -1, 0
    return 1, v * mult


# ---------------------------------------------------------------------------------------------------------------
# Time stamps
# ---------------------------------------------------------------------------------------------------------------


@numba.njit(cache=True)
def _fail():
    """The "not this shape" stamp tuple."""
    return 0, 0, 0, 0, 0, 0, 0, 0, 0, 0


@numba.njit(cache=True)
def _undecided():
    """The "run the reference" stamp tuple."""
    return -1, 0, 0, 0, 0, 0, 0, 0, 0, 0


@numba.njit(cache=True)
def _fraction(buf, p, e):
    """(ns, end) of `\\d{1,9}` at p padded to 9 digits (syslog._frac_ns); end <= p when it is not there."""
    v, q = _digits(buf, p, e, 9)
    if q == p:
        return 0, p
    if q < e and _is_digit(_byte(buf, q)):
        return 0, -1  # a tenth digit: no pattern here lets a digit follow the fraction
    return v * _POW10[9 - (q - p)], q


@numba.njit(cache=True)
def _two(buf, p, e):
    """Value of exactly two ASCII digits at p, -1 when they are not there."""
    if p + 2 > e or not _is_digit(_byte(buf, p)) or not _is_digit(_byte(buf, p + 1)):
        return -1
    return (_byte(buf, p) - 48) * 10 + _byte(buf, p + 1) - 48


@numba.njit(cache=True)
def ymd_span(buf, s, e):
    """(status, year, mon, day, hh, mm, ss, ns, has_off, off) of syslog._parse_ymd(text); off in seconds."""
    if e > s and buf[e - 1] == 10:
        return _undecided()  # '$' also matches before a final newline (one elsewhere fails the parse below)
    p = s
    year, q = _digits(buf, p, e, 4)
    if q - p != 4 or q >= e or (buf[q] != 45 and buf[q] != 47):  # [-/]
        return _fail()
    p = q + 1
    mon, q = _digits(buf, p, e, 2)
    if q == p or q >= e or (buf[q] != 45 and buf[q] != 47):
        return _fail()
    p = q + 1
    day, q = _digits(buf, p, e, 2)
    if q == p or q >= e or (buf[q] != 32 and buf[q] != 84):  # [ T]
        return _fail()
    p = q + 1
    hh, q = _digits(buf, p, e, 2)
    if q == p or q >= e or buf[q] != 58:
        return _fail()
    p = q + 1
    mm = _two(buf, p, e)
    if mm < 0 or p + 2 >= e or buf[p + 2] != 58:
        return _fail()
    p += 3
    ss = _two(buf, p, e)
    if ss < 0:
        return _fail()
    p += 2
    ns = 0
    if p < e and (buf[p] == 46 or buf[p] == 44):  # [.,]: nothing after the seconds but it can take these
        ns, q = _fraction(buf, p + 1, e)
        if q <= p + 1:
            return _fail()
        p = q
    if p < e and buf[p] == 32:
        p += 1
    if p == e:
        return 1, year, mon, day, hh, mm, ss, ns, 0, 0
    if buf[p] == 90 and p + 1 == e:  # 'Z'
        return 1, year, mon, day, hh, mm, ss, ns, 1, 0
    if buf[p] != 43 and buf[p] != 45:  # [+-]
        return _fail()
    sign = -1 if buf[p] == 45 else 1
    oh = _two(buf, p + 1, e)
    if oh < 0:
        return _fail()
    q = p + 3
    if q < e and buf[q] == 58:
        q += 1
    om = _two(buf, q, e)
    if om < 0 or q + 2 != e:
        return _fail()
    return 1, year, mon, day, hh, mm, ss, ns, 1, sign * (oh * 3600 + om * 60)


@numba.njit(cache=True)
def clf_span(buf, s, e):
    """(status, year, mon, day, hh, mm, ss, ns, has_off, off) of syslog._parse_clf(text): 20/Jun/2022:13:09:14 +0200."""
    if e > s and buf[e - 1] == 10:
        return _undecided()
    p = s
    day, q = _digits(buf, p, e, 2)
    if q == p or q + 4 >= e or buf[q] != 47:
        return _fail()
    p = q + 1
    mon = _month(buf, p)  # the regex's [A-Z][a-z]{2} holds for every name in the table
    if mon == 0 or buf[p + 3] != 47:
        return _fail()
    p += 4
    year, q = _digits(buf, p, e, 4)
    if q - p != 4 or q >= e or buf[q] != 58:
        return _fail()
    p = q + 1
    hh = _two(buf, p, e)
    if hh < 0 or p + 2 >= e or buf[p + 2] != 58:
        return _fail()
    p += 3
    mm = _two(buf, p, e)
    if mm < 0 or p + 2 >= e or buf[p + 2] != 58:
        return _fail()
    p += 3
    ss = _two(buf, p, e)
    if ss < 0 or p + 2 >= e or buf[p + 2] != 32:
        return _fail()
    p += 3
    if p + 5 != e or (buf[p] != 43 and buf[p] != 45):
        return _fail()
    oh = _two(buf, p + 1, e)
    om = _two(buf, p + 3, e)
    if oh < 0 or om < 0:
        return _fail()
    sign = -1 if buf[p] == 45 else 1
    return 1, year, mon, day, hh, mm, ss, 0, 1, sign * (oh * 3600 + om * 60)


@numba.njit(cache=True)
def bsd_span(buf, s, e):
    """(status, year or -1, mon, day, hh, mm, ss, ns, has_off=0, off=0) of syslog._parse_bsd(text)."""
    if e > s and buf[e - 1] == 10:
        return _undecided()
    p = s
    if p + 3 > e:
        return _fail()
    mon = _month(buf, p)
    if mon == 0:
        return _fail()
    p += 3
    if p < e and buf[p] == 32:
        p += 1
    else:
        return _fail()
    if p < e and buf[p] == 32:
        p += 1
    day, q = _digits(buf, p, e, 2)
    if q == p or q >= e or buf[q] != 32:
        return _fail()
    p = q + 1
    year = -1
    # Either "yyyy hh:" or "hh:" follows; the two shapes cannot both fit (':' vs a digit at p + 2).
    if p + 4 < e and buf[p + 4] == 32:
        y, q = _digits(buf, p, e, 4)
        if q - p == 4:
            year = y
            p += 5
    hh = _two(buf, p, e)
    if hh < 0 or p + 2 >= e or buf[p + 2] != 58:
        return _fail()
    p += 3
    mm = _two(buf, p, e)
    if mm < 0 or p + 2 >= e or buf[p + 2] != 58:
        return _fail()
    p += 3
    ss = _two(buf, p, e)
    if ss < 0:
        return _fail()
    p += 2
    ns = 0
    if p < e and buf[p] == 46:
        ns, q = _fraction(buf, p + 1, e)
        if q <= p + 1:
            return _fail()
        p = q
    if p != e:
        return _fail()
    return 1, year, mon, day, hh, mm, ss, ns, 0, 0


@numba.njit(cache=True)
def _leap(y):
    """Gregorian leap year."""
    return (y % 4 == 0 and y % 100 != 0) or y % 400 == 0


@numba.njit(cache=True)
def _days_from_civil(y, m, d):
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm)."""
    if m <= 2:
        y -= 1
    era = y // 400
    yoe = y - era * 400
    mp = m - 3 if m > 2 else m + 9
    doy = (153 * mp + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


@numba.njit(cache=True)
def _year_of_day(days):
    """UTC calendar year of a day number (syslog._year_of)."""
    z = days + 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    return yoe + era * 400 + (1 if mp >= 10 else 0)


@numba.njit(cache=True)
def _stamp_year(year, mon, day, hh, mm, ss, ns, has_off, off):
    """(status, ns) of stamp_to_ns for a stamp with its year, in UTC."""
    # The reference's check, in its order; any failure is its ValueError.
    if not 1 <= mon <= 12:
        return 0, 0
    dim = _MONTH_DAYS[mon] + (1 if mon == 2 and _leap(year) else 0)
    if not (1 <= day <= dim and hh < 24 and mm < 60 and 1 <= year <= 9999):
        return 0, 0
    if ss > 60:
        return 0, 0  # the reference checks the seconds before its minute cache, so it always raises
    # Shapes no parser here makes (the reference computes them all the same): leave them to it.
    if hh < 0 or mm < 0 or ss < 0 or ns < 0 or ns >= 1_000_000_000 or (has_off != 0 and not -10**7 < off < 10**7):
        return -1, 0
    sec = _days_from_civil(year, mon, day) * 86400 + hh * 3600 + mm * 60 + ss
    if has_off != 0:
        sec -= off
    if not -_MAX_S <= sec <= _MAX_S:
        return -1, 0  # the reference's value does not fit int64
    return 1, sec * 1_000_000_000 + ns


@numba.njit(cache=True)
def stamp_ns_utc(year, mon, day, hh, mm, ss, ns, has_off, off, ref_ns):
    """(status, ns) of syslog.stamp_to_ns(stamp, "UTC", ref_ns); year -1 = absent (guessed from ref_ns)."""
    if year != -1:
        return _stamp_year(year, mon, day, hh, mm, ss, ns, has_off, off)
    if not -_I64_MAX + _BEHIND_NS <= ref_ns <= _I64_MAX - _AHEAD_NS:
        return -1, 0
    ref_year = _year_of_day(ref_ns // _NS_PER_DAY)
    st, guess = _stamp_year(ref_year, mon, day, hh, mm, ss, ns, has_off, off)
    if st != 1:
        return st, 0  # the reference raises on its first guess, even where another year would do
    if guess > ref_ns + _AHEAD_NS:
        return _stamp_year(ref_year - 1, mon, day, hh, mm, ss, ns, has_off, off)
    if guess < ref_ns - _BEHIND_NS:
        return _stamp_year(ref_year + 1, mon, day, hh, mm, ss, ns, has_off, off)
    return 1, guess


# ---------------------------------------------------------------------------------------------------------------
# Durations
# ---------------------------------------------------------------------------------------------------------------


@numba.njit(cache=True)
def _float_byte(c):
    """Whether ASCII byte c can appear in some text float() accepts (digits, . + - _ e, whitespace, inf/nan)."""
    if _is_digit(c) or c == 46 or c == 43 or c == 45 or c == 95:
        return True
    if 9 <= c <= 13 or 28 <= c <= 32:
        return True
    lc = c + 32 if 65 <= c <= 90 else c
    return lc == 101 or lc == 105 or lc == 110 or lc == 102 or lc == 116 or lc == 121 or lc == 97  # e i n f t y a


@numba.njit(cache=True)
def _seconds_ns(buf, s, e):
    """(status, ns) of syslog._parse_duration_seconds(text): float(text), then int(v * 1e9)."""
    if s >= e:
        return 0, 0  # float("") raises
    m = 0  # the digits as one integer
    k = 0  # digits after the point
    ndig = 0
    point = False
    plain = True
    for i in range(s, e):
        c = _byte(buf, i)
        if c >= 0x80:
            return -1, 0  # \x85 and \xa0 are whitespace to float()
        if not _float_byte(c):
            return 0, 0
        if _is_digit(c):
            ndig += 1
            if m < _EXACT_INT:
                m = m * 10 + (c - 48)
            if point:
                k += 1
        elif c == 46 and not point:
            point = True
        else:
            plain = False
    if not plain or ndig == 0 or m >= _EXACT_INT:
        return -1, 0  # signs, exponents, inf/nan, underscores, whitespace, '.', 17+ digits
    while k > 0 and m % 10 == 0:
        m //= 10
        k -= 1
    if k > 22:
        return -1, 0
    # m < 2**53 and 10**k exact: one IEEE division is the correctly rounded value float() gives (Clinger).
    v = np.float64(m) / _POW10F[k] if k > 0 else np.float64(m)
    if v > 1e12:
        return 0, 0
    p = v * 1e9
    if p >= 9.223372036854775808e18:
        return -1, 0  # the reference's int is past int64
    return 1, np.int64(p)


@numba.njit(cache=True)
def _run(buf, p, e):
    """End of the run of ASCII digits at p."""
    while p < e and _is_digit(_byte(buf, p)):
        p += 1
    return p


@numba.njit(cache=True)
def _hms_ns(buf, s, e):
    """(status, ns) of syslog._parse_duration_hms(text): '0:02:32', '1d2h:03:04', '123:04:05' or plain seconds."""
    for i in range(s, e):
        if _byte(buf, i) >= 0x80:
            return -1, 0  # superscript digits pass isdigit(); int() then raises
    # (?:(\d+)d)?(\d+)h?:(\d{1,2}):(\d{1,2}), whole text: each step has one way to match.
    days_s = days_e = s
    hours_s = s
    hours_e = _run(buf, s, e)
    if hours_e > s and hours_e < e and buf[hours_e] == 100:  # 'd'
        days_e = hours_e
        hours_s = hours_e + 1
        hours_e = _run(buf, hours_s, e)
    p = hours_e
    matched = hours_e > hours_s
    if matched and p < e and buf[p] == 104:  # 'h'
        p += 1
    if matched and p < e and buf[p] == 58:
        p += 1
    else:
        matched = False
    mi = 0
    sec = 0
    if matched:
        mi, q = _digits(buf, p, e, 2)
        if q == p or q >= e or buf[q] != 58:
            matched = False
        else:
            p = q + 1
            sec, q = _digits(buf, p, e, 2)
            if q == p or q != e:
                matched = False
    if not matched:
        # The reference's fallback: int(text) * 10**9 if text.isdigit().
        st, v, _n = _decimal(buf, s, e)
        if st != 1:
            return st, 0
        if v > _I64_MAX // 1_000_000_000:
            return -1, 0
        return 1, v * 1_000_000_000
    days = 0
    if days_e > days_s:
        st, days, _n = _decimal(buf, days_s, days_e)
        if st != 1 or days > 10**12:
            return -1, 0
    st, hours, _n = _decimal(buf, hours_s, hours_e)
    if st != 1 or hours > 10**12:
        return -1, 0
    total = (days * 24 + hours) * 3600 + mi * 60 + sec
    if total > _I64_MAX // 1_000_000_000:
        return -1, 0  # the reference's int is past int64
    return 1, total * 1_000_000_000


@numba.njit(cache=True)
def duration_span(buf, s, e, fmt):
    """(status, ns int64) of DURATION_FORMATS[("seconds", "milliseconds", "hms")[fmt]](text)."""
    if fmt == 2:
        return _hms_ns(buf, s, e)
    st, v = _seconds_ns(buf, s, e)
    if fmt == 1 and st == 1:
        return 1, v // 1000
    if fmt != 0 and fmt != 1:
        return -1, 0
    return st, v
