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

from collector.decoders import syslog_tokens as T
from collector.decoders.syslog import _KV
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
    found = {k for line in lines for k, _ in _KV.findall(line.decode("latin-1"))}
    return sorted(found) + ABSENT


def _log_files() -> list[Path]:
    return sorted((FIXTURES / "syslog").glob("*.log"))


def _corpus_files() -> list[Path]:
    root = corpus_path() / "firewall_syslog"
    if not root.is_dir():
        pytest.skip(f"public corpus not found at {root} (set BROKERWATCH_CORPUS to its directory)")
    return sorted(root.rglob("*.log"))


def _lines(path: Path) -> list[bytes]:
    return [line for line in path.read_bytes().splitlines() if line.strip()]


def _check_file(path: Path) -> None:
    lines = _lines(path)
    keys = _keys_of(lines)
    for first in (True, False):
        ok = _check_kv(lines, keys, first)
    if b"=" in b"".join(lines) and not any(c >= 0x80 for c in b"".join(lines)):
        assert ok.all()
    if any(part in str(path).lower() for part in ("panos", "pfsense")):
        _check_csv(lines, ",", list(range(61)))


@pytest.mark.parametrize("path", _log_files(), ids=lambda p: p.name)
def test_fixture_lines_match_reference(path):
    _check_file(path)


def test_corpus_lines_match_reference():
    files = _corpus_files()
    assert files
    for path in files:
        _check_file(path)


def test_fortigate_values_are_the_quoted_values():
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
              "\x1c", "\x1f", "\x00", "\x1b", "\x7f"]
_ascii_text = st.lists(
    st.sampled_from(_FRAGMENTS) | st.text(alphabet='= "\\.-_,abkAZ09', max_size=4), max_size=24,
).map(lambda parts: "".join(parts).encode("latin-1"))
_high_text = st.lists(
    st.sampled_from(_FRAGMENTS + ["\x80", "\xe9", "\xa0", "\x85", "\xff", "é=", "a=\xe9"]), max_size=16,
).map(lambda parts: "".join(parts).encode("latin-1"))


def _prefixes(texts: list[bytes]) -> list[bytes]:
    return [t[:n] for t in texts for n in range(len(t) + 1)]


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_ascii_text, min_size=1, max_size=3), st.sampled_from(NEIGHBOURS), st.booleans(),
       st.lists(st.sampled_from(["a", "b", "k", "key", "x", "_x", "A9", "abc", "a.b-c", "k.e-y_1"]), max_size=4))
def test_kv_hypothesis_ascii(texts, neighbour, first, extra):
    lines = _prefixes(texts)
    keys = _keys_of(lines)
    keys += [k[:-1] for k in keys if len(k) > 1] + extra + keys[:2]  # prefixes of keys and duplicate keys
    ok = _check_kv(lines, keys, first, neighbour)
    assert ok.all()  # ASCII, control bytes included, is never refused


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_high_text, min_size=1, max_size=3), st.sampled_from(NEIGHBOURS), st.booleans())
def test_kv_hypothesis_high_bytes_refused(texts, neighbour, first):
    lines = _prefixes(texts)
    _check_kv(lines, _keys_of(lines), first, neighbour)


_csv_text = st.text(alphabet=',;| \t"ab1\\=', max_size=30).map(lambda t: t.encode("latin-1"))


@settings(max_examples=200, deadline=None)
@given(st.lists(_csv_text, min_size=1, max_size=4), st.sampled_from([",", ";", "|", " ", "\t", "\\"]),
       st.lists(st.integers(-2, 40), max_size=8), st.sampled_from(NEIGHBOURS))
def test_csv_hypothesis(texts, delim, cols, neighbour):
    lines = _prefixes(texts)
    ok = _check_csv(lines, delim, cols, neighbour)
    assert ok.tolist() == [0 if b'"' in line else 1 for line in lines]


# -- edges --------------------------------------------------------------------------------------------------------

def test_pack_keys():
    kb, ko = T.pack_keys(["ab", "", "c"])
    assert kb.dtype == np.uint8 and ko.dtype == np.int64
    assert bytes(kb) == b"abc" and ko.tolist() == [0, 2, 2, 3]
    kb, ko = T.pack_keys([])
    assert len(kb) == 0 and ko.tolist() == [0]


def test_no_lines():
    empty = np.zeros(0, np.int64)
    buf = np.frombuffer(b"a=1", np.uint8).copy()
    kb, ko = T.pack_keys(["a"])
    out = np.zeros((0, 1, 2), np.int64)
    ok = np.zeros(0, np.uint8)
    T.kv_spans(buf, empty, empty, kb, ko, True, out, ok)
    T.csv_spans(buf, empty, empty, np.uint8(44), np.arange(3), np.zeros((0, 3, 2), np.int64), empty.copy(), ok)


def test_empty_source_and_no_keys():
    _check_kv([b"", b"a=1", b""], ["a", "b"], True)
    _check_kv([b"", b"a=1 b=2"], [], False)
    ok = _check_csv([b"", b"a,b", b""], ",", [0, 1, 2])
    assert ok.all()
    _check_csv([b"a,b"], ",", [])


def test_sixteen_kib_sources():
    forti = _lines(FIXTURES / "syslog" / "fortigate.log")[0]
    big = [
        (forti + b" ") * (16384 // (len(forti) + 1) + 1),
        b'a="' + b"x" * 16384,  # unterminated quote: \S* fallback over the whole text
        b"a" * 16384,  # one key run with no '='
        b"1" * 8192 + b"a=" * 4096,
        (b'k="\\"' + b" ") * 3000,
        b"a=" + b"\\" * 16384,
    ]
    big = [b[:16384] for b in big] + [big[0]]
    for first in (True, False):
        assert _check_kv(big, _keys_of(big), first).all()
    panos = _lines(FIXTURES / "syslog" / "panos.log")[0]
    _check_csv([(panos + b",") * (16384 // len(panos)), b"," * 16384], ",", list(range(0, 5000, 7)) + [16384])


def test_csv_counts_columns_past_the_wanted_ones():
    buf, s, e = _pack([b"a,b,c,d,e"])
    out = np.empty((1, 2, 2), np.int64)
    ncols = np.empty(1, np.int64)
    ok = np.empty(1, np.uint8)
    T.csv_spans(buf, s, e, np.uint8(44), np.array([3, 1]), out, ncols, ok)
    assert ok[0] == 1 and ncols[0] == 5
    assert [bytes(buf[a:b]) for a, b in out[0]] == [b"d", b"b"]


def test_class_table_is_the_regex():
    # The kernel's character classes for every ASCII byte, checked against the regex in context.
    for c in range(128):
        ch = chr(c)
        key_start = bool(re.fullmatch(r"[A-Za-z_]", ch))
        assert bool(_KV.fullmatch(ch + "=")) == key_start
        assert bool(T._CLASS[c] & T._KEY_START) == key_start
        m = _KV.match("a" + ch + "=x")
        assert bool(T._CLASS[c] & T._KEY_CHAR) == (m is not None and m.group(1) == "a" + ch)
        assert bool(T._CLASS[c] & T._NON_SPACE) == bool(_KV.fullmatch("a=" + ch))
