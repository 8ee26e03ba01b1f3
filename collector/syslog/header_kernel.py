"""numba kernel for the syslog headers of a block of lines: ``syslog.parse_header``'s fields as numbers and spans.

Line i is ``buf[starts[i]:ends[i]]``; its text is that with trailing CR, LF and NUL removed, as the reference sees it
after ``decode("latin-1").rstrip("\\r\\n\\x00")``. ``scan_headers`` returns one int64 row per line (columns named by
``HDR_FIELDS``, indexes ``H_*``): ``ok``, the kind (0 none, 1 RFC 3164, 2 RFC 5424), PRI (-1 when none), the stamp
(``has_stamp``; ``year`` -1 when the stamp has none; ``has_offset`` 0 when it has no UTC offset; all stamp fields
0 and ``year`` -1 without a stamp) and the spans of host, app, msgid, sd, msg, body and the text, as absolute
indexes into buf (an empty value may sit anywhere, s == e).

``ok = 0`` means "run ``parse_header`` yourself": blank lines, lines with a byte outside 0x20..0x7e (there ``\\s``,
``\\d``, ``.`` and ``$`` depend on Unicode rules and line ends, so the regexes decide) and an RFC 5424 line that ends
right after MSGID (the reference's body ``msgid + " "`` is not a piece of the line). Every other line gets ``ok = 1``
and exactly the reference's values.

Each regex of the reference has, on the bytes accepted here, at most one way to match: every ``+``/``{m,n}`` run is
followed by a byte the run cannot contain, and optional parts start with a byte nothing after them can start with.
So each one is matched by a single greedy left-to-right scan; the comments at each step say why backtracking could
not find another match. Loops are serial and use only arrays, so ``NUMBA_DISABLE_JIT=1`` runs the same code.
"""

from __future__ import annotations

import re

import numba
import numpy as np

#: Column names of the array ``scan_headers`` returns, in order.
HDR_FIELDS = ("ok", "kind", "pri", "has_stamp", "year", "mon", "day", "hour", "minute", "second", "nanos",
              "has_offset", "offset", "host_s", "host_e", "app_s", "app_e", "msgid_s", "msgid_e", "sd_s", "sd_e",
              "msg_s", "msg_e", "body_s", "body_e", "text_s", "text_e")

#: Column index of each name in HDR_FIELDS.
(H_OK, H_KIND, H_PRI, H_HAS_STAMP, H_YEAR, H_MON, H_DAY, H_HOUR, H_MINUTE, H_SECOND, H_NANOS,
 H_HAS_OFFSET, H_OFFSET, H_HOST_S, H_HOST_E, H_APP_S, H_APP_E, H_MSGID_S, H_MSGID_E, H_SD_S, H_SD_E,
 H_MSG_S, H_MSG_E, H_BODY_S, H_BODY_E, H_TEXT_S, H_TEXT_E) = range(len(HDR_FIELDS))
assert H_TEXT_E == len(HDR_FIELDS) - 1 and HDR_FIELDS[H_MSGID_S] == "msgid_s"

#: Values of the ``kind`` column: Header.kind "none", "3164" and "5424".
KIND_NONE, KIND_3164, KIND_5424 = 0, 1, 2

_NF = len(HDR_FIELDS)
_SP, _LT, _GT, _COLON, _DASH, _PLUS = 32, 60, 62, 58, 45, 43
_LBRACK, _RBRACK, _QUOTE, _BSLASH, _DOT, _COMMA = 91, 93, 34, 92, 46, 44
_EQ, _PCT, _T, _Z, _ONE = 61, 37, 84, 90, 49
_CR, _LF, _NUL = 13, 10, 0

# syslog._MONTHS as 12 x 3 bytes.
_MON = np.frombuffer(b"JanFebMarAprMayJunJulAugSepOctNovDec", np.uint8).copy()

# _RE_TAG's name class, taken from the very regex fragment (a str pattern) rather than written out by hand.
_TAGC = np.zeros(256, np.uint8)
for _c in range(128):
    if re.fullmatch(r"[A-Za-z0-9_./-]", chr(_c)):
        _TAGC[_c] = 1
del _c


@numba.njit(cache=True)
def _at(buf, p, e):
    """Byte p of the line, or -1 at or past its end (so every look-ahead is bounds-checked)."""
    if p < e:
        return np.int64(buf[p])
    return -1


@numba.njit(cache=True)
def _isdig(c):
    """c is an ASCII digit (-1, the end, is not)."""
    return 48 <= c <= 57


@numba.njit(cache=True)
def _num(buf, p, e, k):
    """Value of exactly k digits at p, or -1."""
    if p + k > e:
        return -1
    v = 0
    for j in range(k):
        c = np.int64(buf[p + j])
        if c < 48 or c > 57:
            return -1
        v = v * 10 + c - 48
    return v


@numba.njit(cache=True)
def _pri(buf, p, e):
    """(end, value) of ``<(\\d{1,3})>`` at p, or (-1, -1)."""
    if _at(buf, p, e) != _LT:
        return -1, -1
    q = p + 1
    v = 0
    # Counting a 4th digit is enough to fail: backing off leaves a digit where '>' must be.
    while q < e and q - p <= 4 and _isdig(np.int64(buf[q])):
        v = v * 10 + np.int64(buf[q]) - 48
        q += 1
    n = q - p - 1
    if n < 1 or n > 3 or _at(buf, q, e) != _GT:
        return -1, -1
    return q + 1, v


@numba.njit(cache=True)
def _tok_end(buf, p, e):
    """End of the run of non-space bytes at p (``\\S+`` on the bytes accepted)."""
    while p < e and buf[p] != _SP:
        p += 1
    return p


@numba.njit(cache=True)
def _hms(buf, p, e):
    """(hour, minute, second) of ``\\d\\d:\\d\\d:\\d\\d`` at p, hour -1 when it is not there."""
    hh = _num(buf, p, e, 2)
    mm = _num(buf, p + 3, e, 2)
    ss = _num(buf, p + 6, e, 2)
    if hh < 0 or mm < 0 or ss < 0 or _at(buf, p + 2, e) != _COLON or _at(buf, p + 5, e) != _COLON:
        return -1, 0, 0
    return hh, mm, ss


@numba.njit(cache=True)
def _month(buf, p, e):
    """(1..12 for a _MONTHS name, 0 for another ``[A-Z][a-z]{2}``, -1 when the bytes at p are not that shape)."""
    c0 = _at(buf, p, e)
    c1 = _at(buf, p + 1, e)
    c2 = _at(buf, p + 2, e)
    if not (65 <= c0 <= 90 and 97 <= c1 <= 122 and 97 <= c2 <= 122):
        return -1
    for m in range(12):
        if c0 == _MON[3 * m] and c1 == _MON[3 * m + 1] and c2 == _MON[3 * m + 2]:
            return m + 1
    return 0


@numba.njit(cache=True)
def _mon_day(buf, p, e):
    """(month, day, end) of ``[A-Z][a-z]{2} {1,2}\\d{1,2}`` at p followed by ' ' (end: that space), end -1 if not."""
    mon = _month(buf, p, e)
    if mon < 0:
        return 0, 0, -1
    q = p + 3
    # ' {1,2}' then a digit: a third space, or backing off to one, leaves a space where the digit must be.
    n = 0
    while n < 2 and _at(buf, q, e) == _SP:
        q += 1
        n += 1
    if n == 0 or not _isdig(_at(buf, q, e)):
        return 0, 0, -1
    day = _at(buf, q, e) - 48
    q += 1
    if _isdig(_at(buf, q, e)):
        day = day * 10 + _at(buf, q, e) - 48
        q += 1
    # Both things after \d{1,2} start with ' '; a one-digit day before a second digit would leave a digit there.
    if _at(buf, q, e) != _SP:
        return 0, 0, -1
    return mon, day, q


@numba.njit(cache=True)
def _iso_end(buf, p, e, loose):
    """End of the ISO stamp at p, matched as far as it goes, or -1; loose: _ISO ([T ] and [.,]), else _RE_3164's iso.

    The caller checks what must follow (' ' or ':? '): when the longest match is not followed by it, no shorter one
    is either, as each shorter one ends before a digit, '.', ',', 'Z', '+' or '-'.
    """
    if p + 19 > e:
        return -1
    if (_num(buf, p, e, 4) < 0 or buf[p + 4] != _DASH or _num(buf, p + 5, e, 2) < 0 or buf[p + 7] != _DASH
            or _num(buf, p + 8, e, 2) < 0 or _hms(buf, p + 11, e)[0] < 0):
        return -1
    sep = buf[p + 10]
    if not (sep == _T or (loose and sep == _SP)):
        return -1
    q = p + 19
    c = _at(buf, q, e)
    if (c == _DOT or (loose and c == _COMMA)) and _isdig(_at(buf, q + 1, e)):
        q += 1
        k = 0
        while k < 9 and q < e and _isdig(np.int64(buf[q])):
            q += 1
            k += 1
    c = _at(buf, q, e)
    if c == _Z:
        q += 1
    elif (c == _PLUS or c == _DASH) and _num(buf, q + 1, e, 2) >= 0:
        # [+-]\d\d:?\d\d: after a ':' only digits can follow, else the whole offset is absent.
        r = q + 3
        if _at(buf, r, e) == _COLON:
            if _num(buf, r + 1, e, 2) >= 0:
                q = r + 3
        elif _num(buf, r, e, 2) >= 0:
            q = r + 2
    return q


@numba.njit(cache=True)
def _iso_store(buf, p, q, out, i):
    """Stores the ISO stamp buf[p:q] (already matched by _iso_end) as _iso_stamp does."""
    out[i, H_HAS_STAMP] = 1
    out[i, H_YEAR] = _num(buf, p, q, 4)
    out[i, H_MON] = _num(buf, p + 5, q, 2)
    out[i, H_DAY] = _num(buf, p + 8, q, 2)
    out[i, H_HOUR] = _num(buf, p + 11, q, 2)
    out[i, H_MINUTE] = _num(buf, p + 14, q, 2)
    out[i, H_SECOND] = _num(buf, p + 17, q, 2)
    r = p + 19
    v = 0
    if r < q and (buf[r] == _DOT or buf[r] == _COMMA):
        r += 1
        k = 0
        while r < q and _isdig(np.int64(buf[r])):
            v = v * 10 + np.int64(buf[r]) - 48
            r += 1
            k += 1
        while k < 9:  # frac.ljust(9, "0")
            v *= 10
            k += 1
    out[i, H_NANOS] = v
    if r < q:
        out[i, H_HAS_OFFSET] = 1
        if buf[r] == _Z:
            out[i, H_OFFSET] = 0
        else:
            hh = _num(buf, r + 1, q, 2)
            t = r + 3
            if buf[t] == _COLON:
                t += 1
            off = hh * 3600 + _num(buf, t, q, 2) * 60
            out[i, H_OFFSET] = -off if buf[r] == _DASH else off
    else:
        out[i, H_HAS_OFFSET] = 0
        out[i, H_OFFSET] = 0


@numba.njit(cache=True)
def _no_stamp(out, i):
    """Clears the stamp columns (Header.stamp None)."""
    out[i, H_HAS_STAMP] = 0
    out[i, H_YEAR] = -1
    for k in range(H_MON, H_OFFSET + 1):
        out[i, k] = 0


@numba.njit(cache=True)
def _sd_end(buf, p, e):
    """End of the _RE_SD match at p, or p when there is none."""
    q = p
    while q < e and buf[q] == _LBRACK:
        r = q + 1
        closed = False
        while r < e:
            c = buf[r]
            if c == _RBRACK:
                closed = True
                r += 1
                break
            if c == _QUOTE:
                # "(?:[^"\\]|\\.)*" closes at the first unescaped quote; without one the element, and so this
                # [...] group, fails (what follows the quote can only be '"', never ']').
                r += 1
                found = False
                while r < e:
                    c2 = buf[r]
                    if c2 == _QUOTE:
                        found = True
                        r += 1
                        break
                    if c2 == _BSLASH:
                        if r + 1 >= e:
                            break
                        r += 2
                    else:
                        r += 1
                if not found:
                    break
            else:
                r += 1
        if not closed:
            break
        q = r
    return q


@numba.njit(cache=True)
def _split_5424_rest(buf, rs, e, ms, me, out, i):
    """SD, MSG and body after MSGID buf[ms:me], rest at rs, as syslog._split_5424_rest; False if body is no span."""
    if me - ms == 1 and buf[ms] == _DASH:
        out[i, H_BODY_S] = rs
    elif rs == me + 1:  # msgid, the space, rest: one piece of the line
        out[i, H_BODY_S] = ms
    else:
        return False
    out[i, H_BODY_E] = e
    out[i, H_SD_S] = rs
    out[i, H_SD_E] = rs
    out[i, H_MSG_E] = e
    if rs < e and buf[rs] == _DASH:
        out[i, H_MSG_S] = min(rs + 2, e)
        return True
    q = _sd_end(buf, rs, e)
    if q > rs:
        out[i, H_SD_E] = q
        while q < e and buf[q] == _SP:
            q += 1
    out[i, H_MSG_S] = q
    return True


@numba.njit(cache=True)
def _four_tokens(buf, p, e):
    """Ends of the tokens of `` (\\S+) (\\S+) (\\S+) (\\S+)`` at p (each starts after the previous end), or -1s."""
    # \S+ followed by ' ': a shorter run leaves a non-space where the space must be, so the runs are maximal.
    if _at(buf, p, e) != _SP:
        return -1, -1, -1, -1
    t1 = _tok_end(buf, p + 1, e)
    if t1 == p + 1 or _at(buf, t1, e) != _SP:
        return -1, -1, -1, -1
    t2 = _tok_end(buf, t1 + 1, e)
    if t2 == t1 + 1 or _at(buf, t2, e) != _SP:
        return -1, -1, -1, -1
    t3 = _tok_end(buf, t2 + 1, e)
    if t3 == t2 + 1 or _at(buf, t3, e) != _SP:
        return -1, -1, -1, -1
    t4 = _tok_end(buf, t3 + 1, e)
    if t4 == t3 + 1:
        return -1, -1, -1, -1
    return t1, t2, t3, t4


@numba.njit(cache=True)
def _try_5424(buf, s, e, out, i):
    """_RE_5424 at s: 0 no match, 1 matched and stored, -1 matched but a value is no span of the line."""
    q, pri = _pri(buf, s, e)
    if q < 0 or _at(buf, q, e) != _ONE or _at(buf, q + 1, e) != _SP:
        return 0
    p = q + 2
    iso_s = -1
    if _at(buf, p, e) == _DASH and _at(buf, p + 1, e) == _SP:
        p += 1
    else:
        iso_e = _iso_end(buf, p, e, True)
        if iso_e < 0:
            return 0
        iso_s = p
        p = iso_e
    h0 = p + 1
    t1, t2, t3, t4 = _four_tokens(buf, p, e)
    if t1 < 0:
        return 0
    out[i, H_KIND] = KIND_5424
    out[i, H_PRI] = pri
    if iso_s >= 0:
        _iso_store(buf, iso_s, p, out, i)
    out[i, H_HOST_S] = h0
    out[i, H_HOST_E] = t1
    out[i, H_APP_S] = t1 + 1
    out[i, H_APP_E] = t2
    out[i, H_MSGID_S] = t3 + 1
    out[i, H_MSGID_E] = t4
    rs = t4 + 1 if _at(buf, t4, e) == _SP else t4
    if not _split_5424_rest(buf, rs, e, t3 + 1, t4, out, i):
        return -1
    return 1


@numba.njit(cache=True)
def _head_3164(buf, s, e, out, i):
    """End of the _RE_3164 match at s with PRI and stamp stored as _head_3164 does, or -1 (nothing stored)."""
    p = s
    pri = -1
    # An optional group that cannot start where it fails: without PRI a stamp would have to start at '<'.
    if _at(buf, p, e) == _LT:
        p, pri = _pri(buf, p, e)
        if p < 0:
            return -1
    if _at(buf, p, e) == _COLON:
        p += 1
    while _at(buf, p, e) == _SP:
        p += 1
    c = _at(buf, p, e)
    year = -1
    mon = 0
    day = 0
    hh = 0
    mm = 0
    ss = 0
    nanos = 0
    iso_s = -1
    if 65 <= c <= 90:
        mon, day, p = _mon_day(buf, p, e)
        if p < 0:
            return -1
        # (?: (\d{4}))? then ' ' hms: with the year skipped, hms would need ':' where its 3rd digit is.
        y = _num(buf, p + 1, e, 4)
        if y >= 0:
            year = y
            p += 5
        if _at(buf, p, e) != _SP:
            return -1
        hh, mm, ss = _hms(buf, p + 1, e)
        if hh < 0:
            return -1
        p += 9
        if _at(buf, p, e) == _DOT and _isdig(_at(buf, p + 1, e)):
            p += 1
            k = 0
            while k < 9 and p < e and _isdig(np.int64(buf[p])):
                nanos = nanos * 10 + np.int64(buf[p]) - 48
                p += 1
                k += 1
            while k < 9:
                nanos *= 10
                k += 1
    elif _isdig(c):
        y = _num(buf, p, e, 4)
        if y < 0:
            return -1
        c4 = _at(buf, p + 4, e)
        if c4 == _SP:
            year = y
            mon, day, p = _mon_day(buf, p + 5, e)
            if p < 0:
                return -1
            hh, mm, ss = _hms(buf, p + 1, e)
            if hh < 0:
                return -1
            p += 9
        elif c4 == _DASH:
            q = _iso_end(buf, p, e, False)
            if q < 0:
                return -1
            iso_s = p
            iso_e = q
            p = q
        else:
            return -1
    else:
        return -1
    # ':? ': a ':' not followed by ' ' cannot be skipped either, as ' ' would then be needed where it is.
    c = _at(buf, p, e)
    if c == _COLON:
        if _at(buf, p + 1, e) != _SP:
            return -1
        p += 2
    elif c == _SP:
        p += 1
    else:
        return -1
    out[i, H_PRI] = pri
    if iso_s >= 0:
        _iso_store(buf, iso_s, iso_e, out, i)
    elif mon > 0:
        out[i, H_HAS_STAMP] = 1
        out[i, H_YEAR] = year
        out[i, H_MON] = mon
        out[i, H_DAY] = day
        out[i, H_HOUR] = hh
        out[i, H_MINUTE] = mm
        out[i, H_SECOND] = ss
        out[i, H_NANOS] = nanos
        out[i, H_HAS_OFFSET] = 0
        out[i, H_OFFSET] = 0
    # else: a name not in _MONTHS makes the stamp None, the header still consumed
    return p


@numba.njit(cache=True)
def _host_tag_body(buf, r, e, out, i):
    """HOST, TAG and MSG after a 3164 head ending at r, or a relayed 5424 header, as syslog._host_tag_body."""
    sp = r
    while sp < e and buf[sp] != _SP:
        sp += 1
    if r < sp and sp < e:
        c0 = buf[r]
        good = buf[sp - 1] != _COLON and c0 != _PCT and c0 != _LBRACK and c0 != _LT
        k = r
        while good and k < sp:
            if buf[k] == _EQ:
                good = False
            k += 1
        if good:
            out[i, H_HOST_S] = r
            out[i, H_HOST_E] = sp
            r = sp + 1
    # _RE_TAG: the name run and the [pid] run are maximal (neither class holds what must follow them), so a run one
    # byte too long already fails.
    q = r
    while q < e and q - r <= 64 and _TAGC[buf[q]]:
        q += 1
    n = q - r
    if 1 <= n <= 64:
        t = q
        good = True
        if _at(buf, t, e) == _LBRACK:
            u = t + 1
            while u < e and u - t - 1 <= 32 and buf[u] != _RBRACK and buf[u] != _SP:
                u += 1
            if u - t - 1 <= 32 and _at(buf, u, e) == _RBRACK:
                t = u + 1
            else:
                good = False
        if good and _at(buf, t, e) == _COLON:
            t += 1
            if _at(buf, t, e) == _SP:
                t += 1
            out[i, H_APP_S] = r
            out[i, H_APP_E] = q
            r = t
    if _isdig(_at(buf, r, e)):
        q = _iso_end(buf, r, e, True)
        if q >= 0:
            t1, t2, t3, t4 = _four_tokens(buf, q, e)
            if t1 >= 0 and _at(buf, t4, e) == _SP:
                la = t4 + 1
                c = _at(buf, la, e)
                if c == _LBRACK or (c == _DASH and (la + 1 == e or buf[la + 1] == _SP)):
                    _iso_store(buf, r, q, out, i)
                    out[i, H_KIND] = KIND_5424
                    out[i, H_HOST_S] = q + 1
                    out[i, H_HOST_E] = t1
                    out[i, H_APP_S] = t1 + 1
                    out[i, H_APP_E] = t2
                    out[i, H_MSGID_S] = t3 + 1
                    out[i, H_MSGID_E] = t4
                    _split_5424_rest(buf, la, e, t3 + 1, t4, out, i)  # MSGID had its space: always a span
                    return
    out[i, H_BODY_S] = r
    out[i, H_BODY_E] = e
    out[i, H_MSG_S] = r
    out[i, H_MSG_E] = e


@numba.njit(cache=True)
def _scan_line(buf, s, e0, out, i):
    """Fills row i for the line buf[s:e0] (see the module docstring)."""
    e = e0
    while e > s and (buf[e - 1] == _CR or buf[e - 1] == _LF or buf[e - 1] == _NUL):
        e -= 1
    out[i, H_OK] = 0
    out[i, H_KIND] = KIND_NONE
    out[i, H_PRI] = -1
    _no_stamp(out, i)
    for k in range(H_HOST_S, H_BODY_E + 1):
        out[i, k] = s
    out[i, H_TEXT_S] = s
    out[i, H_TEXT_E] = e
    # Counted without an early exit so that LLVM vectorises the loop: a whole line costs ~0.3 ns/byte.
    line = buf[s:e]
    special = 0
    solid = 0
    for j in range(line.shape[0]):
        c = np.int32(line[j])
        special += (c < _SP) | (c > 126)
        solid += c != _SP
    if special or not solid:
        return
    # Each call passing arrays costs NRT reference counting (atomic), so the first byte is tested here first.
    r = _try_5424(buf, s, e, out, i) if buf[s] == _LT else 0
    if r < 0:
        return
    if r == 0:
        c = buf[s]
        # _RE_3164 can only start with '<', ':', a space, a capital or a digit.
        if c == _LT or c == _COLON or c == _SP or 65 <= c <= 90 or 48 <= c <= 57:
            h = _head_3164(buf, s, e, out, i)
        else:
            h = -1
        if h >= 0:
            out[i, H_KIND] = KIND_3164
            _host_tag_body(buf, h, e, out, i)
        else:
            p = s
            if buf[s] == _LT:
                q, pri = _pri(buf, s, e)
                if q >= 0:
                    p = q
                    out[i, H_PRI] = pri
            out[i, H_BODY_S] = p
            out[i, H_BODY_E] = e
            out[i, H_MSG_S] = p
            out[i, H_MSG_E] = e
    out[i, H_OK] = 1


@numba.njit(cache=True)
def _scan_headers(buf, starts, ends, out):
    """Row i of out (n x len(HDR_FIELDS)) for line buf[starts[i]:ends[i]], serially."""
    for i in range(starts.shape[0]):
        _scan_line(buf, starts[i], ends[i], out, i)


def scan_headers(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Header fields of lines buf[starts[i]:ends[i]] as an int64 array (n, len(HDR_FIELDS)); see the module doc."""
    buf = np.ascontiguousarray(buf, dtype=np.uint8)
    starts = np.ascontiguousarray(starts, dtype=np.int64)
    ends = np.ascontiguousarray(ends, dtype=np.int64)
    n = starts.shape[0]
    if ends.shape[0] != n:
        raise ValueError(f"starts has {n} lines, ends {ends.shape[0]}")
    # The kernel trusts these bounds; checked here once per block, vectorised.
    if n and (starts.min() < 0 or ends.max() > buf.shape[0] or bool((ends < starts).any())):
        raise ValueError("line bounds outside buf or end before start")
    out = np.empty((n, _NF), np.int64)
    _scan_headers(buf, starts, ends, out)
    return out
