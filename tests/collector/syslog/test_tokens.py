"""The numba syslog tokenizers (kv_spans, csv_spans) against the pure-Python reference of syslog._extractor: every
fixture and corpus line, hypothesis texts truncated at every length and packed between hostile neighbours, and edges.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector.syslog import tokens as T
from collector.syslog.parser import _KV
from tests.conftest import FIXTURES, corpus_path

# Bytes that change the answer if a kernel reads past the end of its line: '=' completes a key, '"' closes a quote,
# a backslash escapes, letters extend a value; the delimiters add columns.
NEIGHBOURS = [b"", b"=1", b'"', b'\\"', b"zz=\"q q\" ", b"x", b",", b";", b"=\"a\\\"", b"\xe9"]
ABSENT = ["", "zz_absent", "A", "a.", "nokey", "srcip_"]


def _pack(lines: list[bytes], neighbour: bytes = b"=\"x\\") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """lines in one buffer with the neighbour before, between and after them; (buf, starts, ends)."""
    parts = [neighbour]
    s = np.empty(len(lines), np.int64)
    e = np.empty(len(lines), np.int64)
    pos = len(neighbour)
    for i, line in enumerate(lines):
        s[i] = pos
        e[i] = pos + len(line)
        parts += [line, neighbour]
        pos = e[i] + len(neighbour)
    return np.frombuffer(b"".join(parts), np.uint8).copy(), s, e


def _ref_kv(text: str, keys: list[str], first: bool) -> list[tuple[int, int]]:
    """(start, end) of each key's value in text as _extractor's kv step keeps it, (-1, -1) when absent."""
    spans: dict[str, tuple[int, int]] = {}
    for m in _KV.finditer(text):
        if not first or m.group(1) not in spans:
            spans[m.group(1)] = m.span(2)
    # The dict the reference builds (findall, reversed for first) holds the same values.
    pairs = _KV.findall(text)
    if first:
        pairs.reverse()
    assert dict(pairs) == {k: text[a:b] for k, (a, b) in spans.items()}
    return [spans.get(k, (-1, -1)) for k in keys]


def _check_kv(lines: list[bytes], keys: list[str], first: bool, neighbour: bytes = b"=\"x\\") -> np.ndarray:
    """Runs kv_spans on lines packed with neighbour and asserts the reference; returns ok."""
    buf, s, e = _pack(lines, neighbour)
    kb, ko = T.pack_keys(keys)
    out = np.full((len(lines), len(keys), 2), -7, np.int64)
    ok = np.full(len(lines), 7, np.uint8)
    T.kv_spans(buf, s, e, kb, ko, first, out, ok)
    for i, line in enumerate(lines):
        high = any(c >= 0x80 for c in line)
        assert ok[i] == (0 if high else 1), (line, ok[i])
        if high:
            assert (out[i] == -1).all()
            continue
        want = [(a + s[i], b + s[i]) if a >= 0 else (-1, -1) for a, b in _ref_kv(line.decode("latin-1"), keys, first)]
        got = [tuple(map(int, x)) for x in out[i]]
        assert got == want, (line, keys, first)
    return ok


def _ref_csv(text: str, delim: str) -> list[tuple[int, int]]:
    """(start, end) of every column of text.split(delim)."""
    spans = []
    pos = 0
    for col in text.split(delim):
        spans.append((pos, pos + len(col)))
        pos += len(col) + 1
    return spans


def _check_csv(lines: list[bytes], delim: str, cols: list[int], neighbour: bytes = b",;\"") -> np.ndarray:
    """Runs csv_spans on lines packed with neighbour and asserts text.split(delim) (ok = 0 exactly when '"')."""
    buf, s, e = _pack(lines, neighbour)
    colarr = np.array(cols, np.int64)
    out = np.full((len(lines), len(cols), 2), -7, np.int64)
    ncols = np.full(len(lines), -7, np.int64)
    ok = np.full(len(lines), 7, np.uint8)
    T.csv_spans(buf, s, e, np.uint8(ord(delim)), colarr, out, ncols, ok)
    for i, line in enumerate(lines):
        text = line.decode("latin-1")
        if '"' in text:
            assert ok[i] == 0 and ncols[i] == 0 and (out[i] == -1).all()
            continue
        assert ok[i] == 1
        ref = _ref_csv(text, delim)
        assert ncols[i] == len(ref)
        for j, c in enumerate(cols):
            a, b = out[i, j]
            if 0 <= c < len(ref):
                assert (a - s[i], b - s[i]) == ref[c], (line, c)
                assert bytes(buf[a:b]).decode("latin-1") == text.split(delim)[c]
            else:
                assert a == -1 and b == -1
    return ok


def _keys_of(lines: list[bytes]) -> list[str]:
    """Every key findall finds in lines, then keys that occur nowhere (and the empty key)."""
    found = {k for line in lines for k, _ in _KV.findall(line.decode("latin-1"))}
    return sorted(found) + ABSENT


def _log_files() -> list[Path]:
    """The hand-written fixture logs."""
    return sorted((FIXTURES / "syslog").glob("*.log"))


def _corpus_files() -> list[Path]:
    """The corpus firewall logs; skips with the reason when the corpus is absent."""
    root = corpus_path() / "firewall_syslog"
    if not root.is_dir():
        pytest.skip(f"public corpus not found at {root} (set BROKERWATCH_CORPUS to its directory)")
    return sorted(root.rglob("*.log"))


def _lines(path: Path) -> list[bytes]:
    """The non-blank lines of a log file."""
    return [line for line in path.read_bytes().splitlines() if line.strip()]


def _check_file(path: Path) -> None:
    """kv (first and last) on every line of a file with all its keys, csv on PAN-OS and pfSense files."""
    lines = _lines(path)
    keys = _keys_of(lines)
    for first in (True, False):
        _check_kv(lines, keys, first)
    if any(part in str(path).lower() for part in ("panos", "pfsense")):
        _check_csv(lines, ",", list(range(61)))


@pytest.mark.parametrize("path", _log_files(), ids=lambda p: p.name)
def test_fixture_lines_match_reference(path):
    """Every fixture line equals the reference."""
    _check_file(path)


def test_corpus_lines_match_reference():
    """Every corpus line equals the reference."""
    files = _corpus_files()
    assert files
    for path in files:
        _check_file(path)


def test_fortigate_values_are_the_quoted_values():
    """Spans cover the value as matched: FortiGate quotes kept, absent key (-1, -1)."""
    line = _lines(FIXTURES / "syslog" / "fortigate.log")[0]
    buf, s, e = _pack([line])
    kb, ko = T.pack_keys(["devname", "srcip", "app", "missing"])
    out = np.empty((1, 4, 2), np.int64)
    ok = np.empty(1, np.uint8)
    T.kv_spans(buf, s, e, kb, ko, True, out, ok)
    got = [bytes(buf[a:b]) if a >= 0 else None for a, b in out[0]]
    assert ok[0] == 1 and got == [b'"FGT60F"', b"10.6.0.31", b'"MQTT"', None]


# -- hypothesis ---------------------------------------------------------------------------------------------------

_FRAGMENTS = ["a=", "key=", "k.e-y_1=", "1abc=", "_x=", "A9=", "a.b-c=", "-k=", ".k=", "=", "==", '"', '\\"', "\\",
              "\\\\", " ", "  ", ",", ".", "-", "_", "x", "Z", "7", "a= ", "b= ", '""', '"v v"', '"\\"', 'a="x\\"y"',
              'a="', 'b="u', "srcip=", "srcip=10.0.0.1 ", "dstport=", '"\\\n', "\t", "\n", "\r", "\x0b", "\x0c",
              "\x1c", "\x1f", "\x00", "\x1b", "\x7f", 'k="x\\\ny"', 'k="\\\n']
_ascii_text = st.lists(
    st.sampled_from(_FRAGMENTS) | st.text(alphabet='= "\\.-_,abkAZ09', max_size=4), max_size=24,
).map(lambda parts: "".join(parts).encode("latin-1"))


@st.composite
def _high_text(draw) -> bytes:
    """An ASCII text with high bytes inserted anywhere (after a backslash, inside a key run, a quote, a value)."""
    text = draw(_ascii_text)
    for _ in range(draw(st.integers(1, 2))):
        # right after a backslash, quote or '=' half the time: where a scan skips or branches
        special = [j + 1 for j, c in enumerate(text) if c in b'\\"=']
        at = draw(st.sampled_from(special) if special and draw(st.booleans()) else st.integers(0, len(text)))
        text = text[:at] + draw(st.sampled_from([b"\x80", b"\xe9", b"\xa0", b"\x85", b"\xff"])) + text[at:]
    return text


def _prefixes(texts: list[bytes]) -> list[bytes]:
    """Every prefix of every text: a line truncated at each length."""
    return [t[:n] for t in texts for n in range(len(t) + 1)]


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_ascii_text, min_size=1, max_size=3), st.sampled_from(NEIGHBOURS), st.booleans(),
       st.lists(st.sampled_from(["a", "b", "k", "key", "x", "_x", "A9", "abc", "a.b-c", "k.e-y_1"]), max_size=4))
def test_kv_hypothesis_ascii(texts, neighbour, first, extra):
    """ASCII texts (control bytes too) are always accepted and equal the reference, keys and their prefixes."""
    lines = _prefixes(texts)
    keys = _keys_of(lines)
    keys += [k[:-1] for k in keys if len(k) > 1] + extra + keys[:2]  # prefixes of keys and duplicate keys
    ok = _check_kv(lines, keys, first, neighbour)
    assert ok.all()  # ASCII, control bytes included, is never refused


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_high_text(), min_size=1, max_size=3), st.sampled_from(NEIGHBOURS), st.booleans())
def test_kv_hypothesis_high_bytes_refused(texts, neighbour, first):
    """A line with a byte >= 0x80 is refused (ok = 0, no spans); the others equal the reference."""
    lines = _prefixes(texts)
    _check_kv(lines, _keys_of(lines), first, neighbour)


_csv_text = st.text(alphabet=',;| \t"ab1\\=', max_size=30).map(lambda t: t.encode("latin-1"))


@settings(max_examples=300, deadline=None)
@given(st.lists(_csv_text, min_size=1, max_size=4), st.sampled_from([",", ";", "|", " ", "\t", "\\"]),
       st.lists(st.integers(-2, 40), max_size=8), st.sampled_from(NEIGHBOURS))
def test_csv_hypothesis(texts, delim, cols, neighbour):
    """Columns equal str.split for any delimiter and wanted columns (unordered, repeated, negative, past the end)."""
    lines = _prefixes(texts)
    ok = _check_csv(lines, delim, cols, neighbour)
    assert ok.tolist() == [0 if b'"' in line else 1 for line in lines]


# -- edges --------------------------------------------------------------------------------------------------------

def test_pack_keys():
    """Keys concatenated with offsets, the empty key and no keys included."""
    kb, ko = T.pack_keys(["ab", "", "c"])
    assert kb.dtype == np.uint8 and ko.dtype == np.int64
    assert bytes(kb) == b"abc" and ko.tolist() == [0, 2, 2, 3]
    kb, ko = T.pack_keys([])
    assert len(kb) == 0 and ko.tolist() == [0]


def test_no_lines():
    """n = 0 is a no-op for both kernels."""
    empty = np.zeros(0, np.int64)
    buf = np.frombuffer(b"a=1", np.uint8).copy()
    kb, ko = T.pack_keys(["a"])
    out = np.zeros((0, 1, 2), np.int64)
    ok = np.zeros(0, np.uint8)
    T.kv_spans(buf, empty, empty, kb, ko, True, out, ok)
    T.csv_spans(buf, empty, empty, np.uint8(44), np.arange(3), np.zeros((0, 3, 2), np.int64), empty.copy(), ok)


def test_refused_and_escape_edges():
    """High bytes wherever a scan skips (escape, key run, value) refuse the line; backslash-LF is no escape."""
    _check_kv([b"x\x80", b"a=1 bb\xe9", b'a="\\\xe9"', b"a=\xa0b", b'a="x\xff', b"\x85"], ["a", "x", "bb"], True)
    # '.' does not match LF, so backslash-LF ends the quoted alternative and \S* from the quote is taken
    assert _check_kv([b'k="x\\\ny" j=1', b'k="\\\n"', b'k="\\"', b'k="\\'], ["k", "j"], False).all()


def test_empty_source_and_no_keys():
    """An empty source has no pairs and one empty column; no keys or no columns still set ok."""
    _check_kv([b"", b"a=1", b""], ["a", "b"], True)
    _check_kv([b"", b"a=1 b=2"], [], False)
    ok = _check_csv([b"", b"a,b", b""], ",", [0, 1, 2])
    assert ok.all()
    _check_csv([b"a,b"], ",", [])


def test_sixteen_kib_sources():
    """16 KiB sources: real pairs, an unterminated quote, long backslash and key runs."""
    forti = _lines(FIXTURES / "syslog" / "fortigate.log")[0]
    big = [
        (forti + b" ") * (16384 // (len(forti) + 1) + 1),
        b'a="' + b"x" * 16384,  # unterminated quote: \S* fallback over the whole text
        b"1" * 8192 + b"a=" * 4096,
        (b'k="\\"' + b" ") * 3000,
        b"a=" + b"\\" * 16384,
    ]
    big = [b[:16384] for b in big] + [big[0]]
    for first in (True, False):
        assert _check_kv(big, _keys_of(big), first).all()
    # Key runs with no '=': quadratic for the regex (seconds), one pass for the kernel; no pairs.
    runs = [b"a" * 16384, b"a.b-" * 4096, b"_9" * 8192 + b"="]
    buf, s, e = _pack(runs)
    kb, ko = T.pack_keys(["a", "_9" * 8192])
    out = np.empty((3, 2, 2), np.int64)
    ok = np.empty(3, np.uint8)
    T.kv_spans(buf, s, e, kb, ko, True, out, ok)
    assert ok.all() and (out[:2] == -1).all()
    assert out[2].tolist() == [[-1, -1], [e[2], e[2]]]
    panos = _lines(FIXTURES / "syslog" / "panos.log")[0]
    _check_csv([(panos + b",") * (16384 // len(panos)), b"," * 16384], ",", list(range(0, 5000, 7)) + [16384])


def test_csv_counts_columns_past_the_wanted_ones():
    """ncols counts every column, not only up to the last wanted one; out follows cols' order."""
    buf, s, e = _pack([b"a,b,c,d,e"])
    out = np.empty((1, 2, 2), np.int64)
    ncols = np.empty(1, np.int64)
    ok = np.empty(1, np.uint8)
    T.csv_spans(buf, s, e, np.uint8(44), np.array([3, 1]), out, ncols, ok)
    assert ok[0] == 1 and ncols[0] == 5
    assert [bytes(buf[a:b]) for a, b in out[0]] == [b"d", b"b"]


def test_class_table_is_the_regex():
    """The kernel's ASCII classes are what _KV does with each byte in the key start, key and value positions."""
    for c in range(128):
        ch = chr(c)
        key_start = bool(re.fullmatch(r"[A-Za-z_]", ch))
        assert bool(_KV.fullmatch(ch + "=")) == key_start
        assert bool(T._CLASS[c] & T._KEY_START) == key_start
        m = _KV.match("a" + ch + "=x")
        assert bool(T._CLASS[c] & T._KEY_CHAR) == (m is not None and m.group(1) == "a" + ch)
        assert bool(T._CLASS[c] & T._NON_SPACE) == bool(_KV.fullmatch("a=" + ch))
