"""syslog_header_kernel.scan_headers against the reference syslog.parse_header, field by field."""

from __future__ import annotations

from pathlib import Path

import numba
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector.syslog import header_kernel as K
from collector.syslog.parser import parse_header
from tests.conftest import corpus_path

REPO = Path(__file__).resolve().parents[3]
FIXTURES = sorted((REPO / "fixtures" / "syslog").glob("*.log"))
_KIND = {"none": 0, "3164": 1, "5424": 2}
# Without the JIT the kernel is plain Python: fewer examples keep that run short.
_EXAMPLES = 60 if numba.config.DISABLE_JIT else 400


def _pack(lines: list[bytes], gap: bytes = b"<9>1 - x:") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One buffer holding the lines with header-like bytes between them, so an overrun gives wrong values."""
    parts, starts, ends, pos = [], [], [], 0
    for line in lines:
        parts.append(gap)
        pos += len(gap)
        starts.append(pos)
        parts.append(line)
        pos += len(line)
        ends.append(pos)
    parts.append(gap)
    return (np.frombuffer(b"".join(parts), np.uint8).copy(), np.array(starts, np.int64),
            np.array(ends, np.int64))


def _text(line: bytes) -> str:
    return line.decode("latin-1").rstrip("\r\n\x00")


def _plain(text: str) -> bool:
    """Printable ASCII only (the lines the kernel may not refuse for their bytes)."""
    return all(0x20 <= ord(c) < 0x7F for c in text)


def _mismatches(buf: np.ndarray, row: np.ndarray, text: str) -> list[tuple]:
    """(field, kernel, reference) for every field where the kernel's row differs from parse_header(text)."""
    h = parse_header(text)
    d = dict(zip(K.HDR_FIELDS, row.tolist()))
    bad = []
    if d["kind"] != _KIND[h.kind]:
        bad.append(("kind", d["kind"], h.kind))
    if d["pri"] != h.pri:
        bad.append(("pri", d["pri"], h.pri))
    if bool(d["has_stamp"]) != (h.stamp is not None):
        bad.append(("has_stamp", d["has_stamp"], h.stamp))
    elif h.stamp is not None:
        got = (None if d["year"] == -1 else d["year"], d["mon"], d["day"], d["hour"], d["minute"], d["second"],
               d["nanos"], d["offset"] if d["has_offset"] else None)
        if got != h.stamp:
            bad.append(("stamp", got, h.stamp))
    for name in ("host", "app", "msgid", "sd", "msg", "body"):
        s, e = d[name + "_s"], d[name + "_e"]
        if not (0 <= s <= e <= len(buf)):
            bad.append((name, (s, e), getattr(h, name)))
            continue
        got = bytes(buf[s:e]).decode("latin-1")
        if got != getattr(h, name):
            bad.append((name, got, getattr(h, name)))
    return bad


def _check_block(lines: list[bytes]) -> np.ndarray:
    """Scans the lines packed together; asserts the text spans, and every field of each ok line; returns ok."""
    buf, starts, ends = _pack(lines)
    out = K.scan_headers(buf, starts, ends)
    assert out.shape == (len(lines), len(K.HDR_FIELDS)) and out.dtype == np.int64
    for i, line in enumerate(lines):
        text = _text(line)
        row = out[i]
        assert bytes(buf[row[K.H_TEXT_S]:row[K.H_TEXT_E]]).decode("latin-1") == text
        assert row[K.H_TEXT_S] == starts[i]
        if row[K.H_OK]:
            assert text.strip(), line
            assert _plain(text), line
            assert _mismatches(buf, row, text) == [], line
        elif _plain(text) and text.strip():
            # The one refusal on printable text: 5424 ending at MSGID, whose body msgid + " " is no span.
            h = parse_header(text)
            assert h.kind == "5424" and h.msgid != "-" and h.body == h.msgid + " " and text.endswith(h.msgid), line
    return out[:, K.H_OK]


def _lines(paths) -> list[bytes]:
    return [ln for p in paths for ln in Path(p).read_bytes().split(b"\n") if _text(ln).strip()]


def test_field_indexes():
    """H_* constants are the positions of the names in HDR_FIELDS."""
    for i, name in enumerate(K.HDR_FIELDS):
        assert getattr(K, "H_" + name.upper()) == i
    assert len(set(K.HDR_FIELDS)) == len(K.HDR_FIELDS) == 27


def test_fixture_lines_all_ok():
    """Every non-blank fixture line is accepted (ok = 1) and equals parse_header."""
    lines = _lines(FIXTURES)
    assert len(lines) > 500
    ok = _check_block(lines)
    refused = [lines[i] for i in np.flatnonzero(ok == 0)]
    assert refused == [], refused[:3]


def test_public_corpus():
    """Corpus firewall syslog: ok lines equal parse_header, and >= 95% of the printable-ASCII lines are ok."""
    root = corpus_path() / "firewall_syslog"
    paths = sorted(root.rglob("*.log")) if root.is_dir() else []
    if not paths:
        pytest.skip(f"public corpus firewall_syslog not found at {root} (set BROKERWATCH_CORPUS)")
    lines = _lines(paths)
    ok = _check_block(lines)
    plain = np.array([_plain(_text(ln)) for ln in lines])
    assert plain.sum() > 300
    assert ok[plain].mean() >= 0.95, ok[plain].mean()
    # Lines with other bytes are refused, never guessed at.
    assert not ok[~plain].any()


# -- generated lines -------------------------------------------------------------------------------------------

_PRI = st.sampled_from(["", "", "<13>", "<0>", "<191>", "<999>", "<0013>", "<>", "<1a>", "<13", "<13>:", ":"])
_SPACES = st.sampled_from(["", " ", " ", " ", "  ", "   "])
_DIGITS = st.sampled_from(["1", "08", "28"] * 3 + ["", "123", "2026", "99999"])
_MONTH = st.sampled_from(["Jan", "Nov", "Dec"] * 3 + ["Foo", "Xyz", "nov", "NOV", "Sept", "No"])
_HMS = st.sampled_from(["12:34:56", "00:00:00", "99:99:99"] * 3 + ["1:2:3", "12:34:5", "12-34-56"])
_FRAC = st.sampled_from([""] * 6 + [".5", ".123", ".123456789", ".1234567890", ".", ",5", ".5x"])
_OFFSET = st.sampled_from(["", "Z", "+01:00", "-05:30", "+0100", "-0530"] * 2 + ["+01:0", "+1", "+01:000", "z"])
_SEP = st.sampled_from(["T"] * 5 + [" "] * 2 + ["t", "_"])
_AFTER = st.sampled_from([" "] * 4 + [": "] * 2 + [":", "", "  ", ":x "])
_HOST = st.sampled_from(["host", "fw-1.example.net", "10.0.0.1", "a=b", "%ASA-6-1:", "[x]", "<x>", "tag:", "-",
                         "PA-220", ""])
_TAGNAME = st.sampled_from(["sshd", "kernel", "filterlog", "junos-flow", "a" * 64, "a" * 65, "foo.bar/baz_1", "",
                            "RT_FLOW", "%ASA"])
_PID = st.sampled_from(["", "", "[123]", "[]", "[" + "9" * 32 + "]", "[" + "9" * 33 + "]", "[1 2]", "[a[b]",
                        "[x"])
_COLON = st.sampled_from([":", ": ", ":  ", "", " :"])
_TOKEN = st.sampled_from(["-", "host", "app", "1234", "ID47", "RT_FLOW_SESSION_CREATE", "x=y", "[a]", "\"q\""])
_SD = st.sampled_from([
    "-", "- ", "- ", "[a b=\"c\"] ", "[a b=\"c\"]", "[a b=\"c\"]", "[a b=\"c\"] ",
    "[a b=\"c\\\"]d\"][e f=\"g\"]", "[x][y]", "[unterminated",
    "[a b=\"x]", "[a b=\"x\\", "[a b=\"]\"]", "[]", "[[]]", "-x", "[a]   msg", "[a b=\"q\\\\\"]",
    "[exampleSDID@32473 iut=\"3\" eventSource=\"Application\" eventID=\"1011\"]",
])
_MSG = st.sampled_from(["", "msg", "msg", "x y", " msg", "%ASA-6-302013: Built", "a=b c=d", "1,2026/11/28 00:00:00,x",
                        "date=2026-11-28 time=12:00:00 devname=fw", "\ufeffBOM", "[not sd]", "- dash"])
_JUNK = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=30)
_ODD = st.text(st.sampled_from(["\t", "\x0b", "\x1f", "\x7f", "\x85", "\xa0", "\xe9", "\n", "\r", "\x00", " ", "a",
                                "1", ":", "<", ">", "[", "]", "\"", "\\"]), max_size=12)
_END = st.sampled_from(["", "", "", "\r\n", "\n", "\x00", "\r\n\x00\x00", " "])


@st.composite
def _stamp(draw) -> str:
    """A stamp of one of the forms _RE_3164 and _RE_5424 know, or nearly one."""
    form = draw(st.integers(0, 3))
    if form == 0:  # Mmm dd [yyyy] hh:mm:ss[.frac]
        year = draw(st.sampled_from(["", "", " 2026", " 26", " 20261"]))
        return (draw(_MONTH) + draw(st.sampled_from([" ", " ", "  ", "   ", ""])) + draw(_DIGITS) + year + " "
                + draw(_HMS) + draw(_FRAC))
    if form == 1:  # yyyy Mmm dd hh:mm:ss
        return (draw(st.sampled_from(["2026", "26", "20266"])) + " " + draw(_MONTH)
                + draw(st.sampled_from([" ", "  ", "   "])) + draw(_DIGITS) + " " + draw(_HMS) + draw(_FRAC))
    date = draw(st.sampled_from(["2026-11-28"] * 4 + ["0000-00-00", "2026-13-45", "2026-1-28"]))
    return date + draw(_SEP) + draw(_HMS) + draw(_FRAC) + draw(_OFFSET)


@st.composite
def _line(draw) -> bytes:
    """A syslog-like line: 5424, 3164 (with host and tag), relayed 5424, no header, or fragments in any order."""
    form = draw(st.integers(0, 5))
    if form == 0:  # RFC 5424
        stamp = draw(st.one_of(st.just("-"), _stamp()))
        toks = " ".join(draw(_TOKEN) for _ in range(draw(st.sampled_from([4, 4, 4, 3]))))
        text = (draw(st.sampled_from(["<13>1 ", "<165>1 ", "<13>2 ", "<13>1  ", "13>1 "])) + stamp + " " + toks
                + draw(st.sampled_from([" ", " ", "", "  "])) + draw(_SD) + draw(_MSG))
    elif form in (1, 2):  # RFC 3164 and the vendor stamps
        text = (draw(_PRI) + draw(_SPACES) + draw(_stamp()) + draw(_AFTER) + draw(_HOST) + draw(_SPACES)
                + draw(_TAGNAME) + draw(_PID) + draw(_COLON) + draw(_MSG))
    elif form == 3:  # 5424 relayed behind a 3164 header
        relayed = (draw(_stamp()) + " " + " ".join(draw(_TOKEN) for _ in range(4)) + " " + draw(_SD)
                   + draw(_MSG))
        text = (draw(_PRI) + draw(_stamp()) + draw(_AFTER) + draw(_HOST) + " " + draw(_TAGNAME) + draw(_PID)
                + draw(_COLON) + relayed)
    elif form == 4:  # fragments in any order
        frag = st.one_of(_PRI, _SPACES, _stamp(), _AFTER, _HOST, _TAGNAME, _PID, _COLON, _TOKEN, _SD, _MSG, _JUNK,
                         _ODD)
        text = "".join(draw(st.lists(frag, max_size=8)))
    else:
        text = draw(st.one_of(_JUNK, _ODD, _MSG))
    if draw(st.integers(0, 7)) == 0:
        text = text.replace(" ", draw(st.sampled_from(["\t", "  ", "\xa0"])), 1)
    raw = text.encode("utf-8") if draw(st.booleans()) else text.encode("latin-1", "replace")
    if draw(st.integers(0, 3)) == 0:
        raw = raw[:draw(st.integers(0, len(raw)))]  # truncated anywhere
    return raw + draw(_END).encode("latin-1")


@st.composite
def _clean_line(draw) -> bytes:
    """A well-formed line of one of the common shapes (most fragments above are deliberately near misses)."""
    pick = lambda *xs: draw(st.sampled_from(xs))  # noqa: E731
    frac = pick("", "", ".5", ".123456", ".123456789")
    hms = pick("12:34:56", "00:00:00", "23:59:60")
    iso = (pick("2026-11-28", "1999-01-02") + pick("T", "T", " ") + hms + frac.replace(".", pick(".", ","))
           + pick("", "Z", "+01:00", "-0530"))
    iso_t = iso.replace(" ", "T").replace(",", ".")
    mon = pick("Jan", "Nov", "Dec", "Foo")
    day = pick("1", "08", "28")
    stamp = pick(mon + pick(" ", "  ") + day + pick("", " 2026") + " " + hms + frac,
                 "2026 " + mon + pick(" ", "  ") + day + " " + hms, iso_t)
    sd = pick("-", "[a b=\"c\"]", "[x@1 k=\"v\\\"]\"][y]", "[unterminated \"x]")
    msg = pick("", " msg here", " %ASA-6-302013: Built", " a=b c=d")
    toks = " ".join(pick("-", "host", "app", "1234", "ID47") for _ in range(4))
    pri = pick("", "<13>", "<190>", "<0>")
    host = pick("", "fw1 ", "10.0.0.1 ", "%ASA-6-1: ", "a=b ")
    tag = pick("", "sshd: ", "kernel[12]: ", "junos-flow:", "app[]: ")
    form = draw(st.integers(0, 3))
    if form == 0:
        text = pick("<13>1 ", "<165>1 ") + pick("-", iso) + " " + toks + " " + sd + msg
    elif form == 1:
        text = pri + pick("", ":", " ") + stamp + pick(" ", ": ") + host + tag + pick("hello world", "1,2,3", "")
    elif form == 2:
        text = pri + stamp + " " + host + tag + iso + " " + toks + " " + sd + msg
    else:
        text = pri + pick("%ASA-6-302013: Built", "1,2026/11/28 00:00:00,0,TRAFFIC", "date=2026-11-28 time=1:2:3")
    return text.encode("ascii") + pick(b"", b"\r\n", b"\n\x00")


@settings(max_examples=_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_clean_line(), min_size=1, max_size=8))
def test_generated_clean_lines(lines):
    """Well-formed lines of the common shapes: all ok (bar 5424 ending at MSGID) and equal to parse_header."""
    ok = _check_block(lines)
    for line, good in zip(lines, ok):
        h = parse_header(_text(line))
        assert good or h.body == h.msgid + " ", line


@settings(max_examples=_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(_line(), _clean_line()), min_size=1, max_size=8))
def test_generated_lines(lines):
    """Generated and truncated lines, packed with neighbours: every ok line equals parse_header."""
    _check_block(lines)


_SAMPLES = [
    b"<134>1 2025-11-06T11:32:42.868451+00:00 firewall.lan filterlog 92653 - - 7,,,1000000102,vtnet0.5,match",
    b"<14>1 2019-11-14T09:37:51.184+01:00 SRX-GW1 RT_FLOW - RT_FLOW_SESSION_CREATE [junos@1 a=\"1\" b=\"x\\\"]\"] m",
    b"<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [a b=\"c\"][d e=\"f\"] An application",
    b"<166>Jan 15 2026 00:00:01 asa-fixture : %ASA-6-302015: Built outbound UDP connection 100001",
    b"<13>2026 Nov 28 12:34:56: fw kernel[12]: hello",
    b"<13>:2026-11-28T12:34:56.123456789+05:30: fw app: x",
    b"Aug 24 04:58:58 192.168.1.1 junos-ids: 2017-08-24T04:58:58.724Z srx RT_IDS - RT_SCREEN_IP [junos@1 a=\"b\"]",
    b"Sep 23 13:54:55 192.168.1.1 junos-flow: 2017-09-23 13:54:54,803+0100 srx RT_FLOW - ID - msg",
    b"Nov  8 12:37:34 pfSense filterlog: 5,,,1000102433,em0,match,block,in,4",
    b"Jan 22 18:34:00 filterlog: 65,,,0,vmx1,match,pass,out,4",
    b"Foo 22 18:34:00.5 host tag[1]: month unknown",
    b"%ASA-6-302013: Built inbound TCP connection",
    b"<190>%ASA-6-302013: Built inbound TCP connection",
    b"date=2016-06-15 time=10:42:31 devname=Device_Name devid=FGT",
    b"1,2026/11/28 00:00:00,012801096514,TRAFFIC,end",
    b"<13>1 - host app - -",
    b"<13>1 - host app - ID",
]


@pytest.mark.parametrize("line", _SAMPLES)
def test_truncated_at_every_length(line):
    """Each prefix of each sample (so every step of every header form meets the end of the line)."""
    _check_block([line[:n] for n in range(len(line) + 1)] + [line[:n] + b"\r\n" for n in range(len(line) + 1)])


def test_samples_ok():
    """The common forms among the samples are accepted (ok = 1)."""
    ok = _check_block(_SAMPLES)
    assert ok[:-1].all()
    assert ok[-1] == 0  # 5424 ending at its MSGID: body "ID " is not in the line


def test_empty_block():
    """n = 0 gives a (0, 27) array."""
    out = K.scan_headers(np.zeros(0, np.uint8), np.zeros(0, np.int64), np.zeros(0, np.int64))
    assert out.shape == (0, len(K.HDR_FIELDS))


def test_blank_and_terminator_only_lines():
    """Blank lines and lines of only CR, LF and NUL are refused, with the stripped text span."""
    lines = [b"", b"   ", b"\r\n", b"\x00", b"\r\n\x00\x00", b"\n\n", b"  \r\n", b"\t", b"x\r\n\x00"]
    buf, starts, ends = _pack(lines)
    out = K.scan_headers(buf, starts, ends)
    assert out[:-1, K.H_OK].tolist() == [0] * (len(lines) - 1)
    assert out[-1, K.H_OK] == 1
    for i, line in enumerate(lines):
        assert out[i, K.H_TEXT_E] - out[i, K.H_TEXT_S] == len(line.rstrip(b"\r\n\x00"))
    _check_block(lines)


def test_long_lines():
    """16 KiB lines (message, structured data, host token) are scanned to their end and match."""
    big = "x" * 16384
    lines = [
        b"<13>1 2026-11-28T12:00:00Z h a p m - " + big.encode(),
        b"<13>1 2026-11-28T12:00:00Z h a p m [a b=\"" + big.encode() + b"\"] tail",
        b"Nov 28 12:00:00 " + big.encode() + b" tag: msg",
        b"Nov 28 12:00:00 host " + big.encode(),
        big.encode(),
    ]
    ok = _check_block(lines)
    assert ok.all()


def test_bad_bounds_raise():
    """Line bounds outside buf are refused before the kernel runs."""
    buf = np.frombuffer(b"abc", np.uint8)
    with pytest.raises(ValueError):
        K.scan_headers(buf, np.array([0], np.int64), np.array([4], np.int64))
    with pytest.raises(ValueError):
        K.scan_headers(buf, np.array([2], np.int64), np.array([1], np.int64))
