"""numba tokenizers for a block of syslog message texts: key=value pairs and delimiter-separated columns.

Each kernel reads the source text of line i as ``buf[src_s[i]:src_e[i]]`` and writes byte spans into ``out``, so
the caller slices the values it wants without building a dict per line. They reproduce the pure-Python steps of
``collector.syslog.parser._extractor`` exactly:

* ``kv_spans``: ``_KV.findall(text)`` then ``dict`` (the first or the last pair of a key wins). Spans cover the value
  as matched, quotes kept. A line with a byte >= 0x80 gets ``ok = 0``: there ``\\w`` and ``\\s`` depend on how the
  caller decoded the text (UTF-8 or latin-1), so the caller runs the regex instead. Every other byte, control bytes
  included, is handled exactly.
* ``csv_spans``: ``text.split(delim)``. A line containing ``"`` gets ``ok = 0`` (the reference uses the csv module).

Loops are serial and use only arrays, so ``NUMBA_DISABLE_JIT=1`` runs the same code as plain Python.
"""

from __future__ import annotations

import re

import numba
import numpy as np

_KEY_START = 1  # [A-Za-z_]
_KEY_CHAR = 2  # [\w.\-]
_NON_SPACE = 4  # \S

# Derived from the very regex fragments of _KV (str patterns, so Python's Unicode classes) rather than written by
# hand; bytes >= 0x80 get no class, so every scan stops on them and the line is refused (ok = 0).
_CLASS = np.zeros(256, np.uint8)
for _c in range(128):
    _ch = chr(_c)
    _CLASS[_c] = ((_KEY_START if re.fullmatch(r"[A-Za-z_]", _ch) else 0)
                  | (_KEY_CHAR if re.fullmatch(r"[\w.\-]", _ch) else 0)
                  | (_NON_SPACE if re.fullmatch(r"\S", _ch) else 0))
del _c, _ch

_EQ = 61  # '='
_QUOTE = 34  # '"'
_BACKSLASH = 92
_NL = 10  # the one byte '.' (no DOTALL) does not match, so '\\' + LF is not an escape
_HIGH = 128
_NBUCKETS = 256


def pack_keys(keys: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """keys -> (keys_buf uint8, keys_off int64 of len(keys)+1): key k is keys_buf[keys_off[k]:keys_off[k+1]]."""
    # A key with non-ASCII characters can never equal the key of a line kv_spans accepts (those are ASCII), and its
    # UTF-8 bytes are all >= 0x80, so it never matches byte-wise either.
    enc = [k.encode("utf-8", "surrogatepass") for k in keys]
    off = np.zeros(len(enc) + 1, np.int64)
    if enc:
        off[1:] = np.cumsum([len(b) for b in enc])
    return np.frombuffer(b"".join(enc), np.uint8).copy(), off


@numba.njit(cache=True, inline="always")
def _bucket(buf, s, e):
    """Hash bucket of the key buf[s:e] (non-empty): length, first, second and last byte."""
    n = e - s
    h = n * 13 + np.int64(buf[s]) * 31 + np.int64(buf[e - 1])
    if n > 1:
        h += np.int64(buf[s + 1]) * 7
    return h & (_NBUCKETS - 1)


@numba.njit(cache=True)
def kv_spans(buf, src_s, src_e, keys_buf, keys_off, first, out, ok) -> None:
    """Spans of the wanted keys' values per line, as ``dict(_KV.findall(text))`` (first or last pair wins)."""
    nkeys = len(keys_off) - 1
    # Chained hash of the wanted keys, built once per block; duplicates in keys each get filled.
    head = np.full(_NBUCKETS, -1, np.int64)
    nxt = np.full(max(nkeys, 1), -1, np.int64)
    for k in range(nkeys - 1, -1, -1):
        a = keys_off[k]
        b = keys_off[k + 1]
        if b > a:  # an empty key never matches ([A-Za-z_] is required)
            h = _bucket(keys_buf, a, b)
            nxt[k] = head[h]
            head[h] = k
    for i in range(len(src_s)):
        s = src_s[i]
        e = src_e[i]
        for k in range(nkeys):
            out[i, k, 0] = -1
            out[i, k, 1] = -1
        good = True
        p = s
        while p < e:
            c = buf[p]
            if not (_CLASS[c] & _KEY_START):
                if c >= _HIGH:
                    good = False
                    break
                p += 1
                continue
            q = p + 1
            while q < e and (_CLASS[buf[q]] & _KEY_CHAR):
                q += 1
            if q >= e or buf[q] != _EQ:
                # Every start inside the run ends at q too and fails the same way, so skip the run (linear scan);
                # buf[q] itself is no key character and is looked at (and refused if high) by the next round.
                p = q
                continue
            ks = p
            ke = q
            vs = q + 1
            ve = -1
            if vs < e and buf[vs] == _QUOTE:
                # "[^"\\]*(?:\\.[^"\\]*)*" has one way to match: stop at the first unescaped quote; it fails at the
                # end of the text or at a backslash before LF/end, and then \S* from the quote is taken instead.
                r = vs + 1
                while r < e:
                    c = buf[r]
                    if c == _QUOTE:
                        ve = r + 1
                        break
                    if c >= _HIGH:
                        good = False
                        break
                    if c == _BACKSLASH:
                        if r + 1 >= e or buf[r + 1] == _NL:
                            break
                        if buf[r + 1] >= _HIGH:
                            good = False
                            break
                        r += 2
                    else:
                        r += 1
                if not good:
                    break
            if ve < 0:
                # A high byte stops \S* here and is refused by the main loop, where the scan resumes.
                r = vs
                while r < e and (_CLASS[buf[r]] & _NON_SPACE):
                    r += 1
                ve = r
            k = head[_bucket(buf, ks, ke)]
            n = ke - ks
            while k >= 0:
                a = keys_off[k]
                if keys_off[k + 1] - a == n:
                    j = 0
                    while j < n and keys_buf[a + j] == buf[ks + j]:
                        j += 1
                    if j == n and (not first or out[i, k, 0] < 0):
                        out[i, k, 0] = vs
                        out[i, k, 1] = ve
                k = nxt[k]
            p = ve  # a match is never empty (key and '='), so findall simply resumes at its end
        if good:
            ok[i] = 1
        else:
            ok[i] = 0
            for k in range(nkeys):
                out[i, k, 0] = -1
                out[i, k, 1] = -1


@numba.njit(cache=True)
def csv_spans(buf, src_s, src_e, delim, cols, out, ncols, ok) -> None:
    """Spans of the wanted columns of ``text.split(delim)`` per line and the column count; ok = 0 when '"' occurs."""
    m = len(cols)
    maxc = -1
    for j in range(m):
        maxc = max(maxc, cols[j])
    # Column number -> the wanted slots, so each column is looked up once however cols is ordered or repeated;
    # negative column numbers are never filled.
    head = np.full(maxc + 1, -1, np.int64)
    nxt = np.full(max(m, 1), -1, np.int64)
    for j in range(m - 1, -1, -1):
        c = cols[j]
        if c >= 0:
            nxt[j] = head[c]
            head[c] = j
    d = np.uint8(delim)
    for i in range(len(src_s)):
        s = src_s[i]
        e = src_e[i]
        for j in range(m):
            out[i, j, 0] = -1
            out[i, j, 1] = -1
        good = True
        col = 0
        cs = s
        p = s
        while True:
            if p < e:
                c = buf[p]
                if c == _QUOTE:
                    good = False
                    break
                if c != d:
                    p += 1
                    continue
            if col <= maxc:
                j = head[col]
                while j >= 0:
                    out[i, j, 0] = cs
                    out[i, j, 1] = p
                    j = nxt[j]
            col += 1
            if p >= e:
                break
            p += 1
            cs = p
        if good:
            ok[i] = 1
            ncols[i] = col
        else:
            ok[i] = 0
            ncols[i] = 0
            for j in range(m):
                out[i, j, 0] = -1
                out[i, j, 1] = -1
