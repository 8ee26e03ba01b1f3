"""The syslog parser's fast paths against their plain twins: a message's compiled ``fetch`` against its per-field
getters, rows written per block (``feed_lines``) against one line per call, cached header stamps against a fresh
parse, and the memoised field-stamp parsers against the plain ones (hypothesis over corpus- and fixture-derived lines).
"""

from __future__ import annotations

import calendar
import random
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from analytics.schema import FlowBatchBuilder
from collector.syslog import parser as S
from collector.metrics import Counters
from tests.conftest import FIXTURES, corpus_path

REF = calendar.timegm((2026, 11, 28, 12, 0, 0)) * 10**9
PROFILES = S.load_profiles()


def _lines() -> list[bytes]:
    paths = sorted((FIXTURES / "syslog").glob("*.log"))
    corpus = corpus_path() / "firewall_syslog"
    if corpus.is_dir():
        paths += sorted(corpus.rglob("*.log"))
    return [line for p in paths for line in p.read_bytes().splitlines() if line.strip()]


LINES = _lines()


def _fields_of(text: str) -> list[tuple[S.Message, dict]]:
    """Every (message, fields) the profiles make of a line: recognise + profile extract + message extract."""
    h = S.parse_header(text)
    out = []
    for p in PROFILES:
        f: dict = {}
        if not p.recognises(h, f):
            continue
        for ex in p.extract:
            ex(h, f)
        for msg in p.messages:
            g = dict(f)
            if all(ex(h, g) for ex in msg.extract):
                out.append((msg, g))
    return out


def _by_getters(msg: S.Message, f: dict) -> tuple:
    """The FETCHED fields read with the reference getters (one closure per part), and the same with the compiled
    per-field getters the message uses for the rest."""
    plain = tuple(S._getter_plain(msg.fields[k], k, "t")(f) if k in msg.fields else None for k in S.FETCHED)
    compiled = tuple(msg.get[k](f) if k in msg.get else None for k in S.FETCHED)
    assert compiled == plain
    for k in ("app", "duration"):
        spec = msg.fields.get(k)
        if isinstance(spec, dict) and "field" in spec:
            spec = spec["field"]
        specs = spec if k == "app" and isinstance(spec, list) else [spec] if spec is not None else []
        for sp in specs:
            assert S._getter(sp, k, "t")(f) == S._getter_plain(sp, k, "t")(f)
    return plain


_VALUES = st.sampled_from(["", '""', '"', '"6"', "6", "17", "tcp", " 5", "5 ", "-1", "x", "²", '"1.2.3.4"', "10.0.0.1",
                           "::1", "99999999999999999999", "0", '"a b"', None])


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 10**9), st.lists(_VALUES, min_size=1, max_size=40))
def test_fetch_equals_the_field_getters(seed, values):
    """Fields from real lines, some replaced by quoted, empty, missing or non-numeric values."""
    rnd = random.Random(seed)
    for _ in range(4):
        for msg, f in _fields_of(rnd.choice(LINES).decode("utf-8", "replace")):
            keys = list(f)
            for v in values:
                k = rnd.choice(keys)
                if v is None:
                    f.pop(k, None)
                else:
                    f[k] = v
            assert msg.fetch(f) == _by_getters(msg, f)


def test_fetch_equals_the_field_getters_on_every_line():
    n = 0
    for line in LINES:
        for msg, f in _fields_of(line.decode("utf-8", "replace")):
            assert msg.fetch(f) == _by_getters(msg, f), line
            n += 1
    assert n > 10


def _rows_and_counters(lines: list[bytes], per_line: bool):
    counters = Counters()
    parser = S.SyslogParser(counters, profiles=PROFILES, reference_ns=REF)
    b = FlowBatchBuilder(16)
    if per_line:
        n = sum(parser.feed_line(line, (0, 0xFFFF0A000001), REF, b) for line in lines)
    else:
        n = sum(parser.feed_lines(lines[i:i + 37], (0, 0xFFFF0A000001), REF, b) for i in range(0, len(lines), 37))
    assert n == len(b)
    return b.build().to_rows().tolist(), counters.snapshot(), parser.open_sessions()


_HOSTILE = [b"type=traffic logid=1 srcip=1.1.1.1 dstip=::1 proto=6 srcport=1 dstport=2 sentbyte=1 rcvdbyte=2 "
            b"eventtime=99999999999999999999",
            b"type=traffic logid=1 srcip=1.1.1.1 dstip=::1 proto=6 sentbyte=99999999999999999999 rcvdbyte=1",
            b"1,9999/11/28 10:00:00,0,TRAFFIC,end,1,9999/11/28 10:00:00,1.1.1.1,2.2.2.2,,,r,,,mqtt,v,t,u,e1,e2,f,"
            b"x,1,1,50124,5671,0,0,0x0,tcp,allow,5000,2000,3000,30,9999/11/28 10:00:00,1e11,any",
            b"%ASA-6-302014: Teardown TCP connection 1 for a:1.2.3.4/1 to b:5.6.7.8/2 duration 9999999999:00:00 bytes 1"]


def test_blocks_equal_one_line_per_call():
    """Same rows, counters and open sessions; a value out of range rejects its own line, not its block."""
    lines = LINES + _HOSTILE + LINES[:50]
    assert _rows_and_counters(lines, False) == _rows_and_counters(lines, True)
    rows, counters, _ = _rows_and_counters(_HOSTILE + LINES[:3], False)
    assert counters["brokerwatch_decoder_errors_total"][("syslog", "malformed")] == 4


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10**9), st.integers(1, 60))
def test_blocks_equal_one_line_per_call_random(seed, k):
    rnd = random.Random(seed)
    lines = [rnd.choice(LINES + _HOSTILE) for _ in range(k)]
    assert _rows_and_counters(lines, False) == _rows_and_counters(lines, True)


def _header(text: str) -> tuple:
    h = S.parse_header(text)
    return (h.pri, h.stamp, h.host, h.app, h.msgid, h.sd, h.msg, h.body, h.kind)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(LINES), st.text(max_size=20))
def test_cached_header_equals_a_fresh_parse(line, tail):
    text = line.decode("utf-8", "replace")
    for t in (text, text + tail, tail + text):
        S._head_cache.clear()
        fresh = _header(t)
        assert _header(t) == fresh  # now from the cache
        S._head_cache.clear()


def test_memoised_time_formats_equal_the_plain_parsers():
    for text in ("2018/11/30 16:09:07", "2019-05-13T11:45:04.5+02:00", "2026/13/01 00:00:00", "x", "",
                 "20/Jun/2022:13:09:14 +0200", "Oct 03 2018 17:34:08", "Sep 28 10:38:09", "Foo 28 10:38:09"):
        for _ in range(2):
            assert S.TIME_FORMATS["ymd_hms"](text) == S._parse_ymd(text)
            assert S.TIME_FORMATS["clf"](text) == S._parse_clf(text)
            assert S.TIME_FORMATS["bsd"](text) == S._parse_bsd(text)


_FORTIGATE_WRITTEN = re.compile(r'(?:^|\s)(?:logid|log_id)="?\d+"?\s')  # the recognise regex as first written


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["log", "id", "_", "=", '"', "1", " ", "\t", "\n", "x", "logid=1 ", 'log_id="2" ']),
                max_size=12), st.sampled_from(LINES))
def test_fortigate_recognise_regex_keeps_its_meaning(parts, line):
    """The shipped regex starts with the literal 'log' for speed; it finds a match exactly where the plain one does."""
    rx = next(p for p in PROFILES if p.vendor == "fortigate").recognise_re
    for text in ("".join(parts), line.decode("utf-8", "replace")):
        assert (rx.search(text) is None) == (_FORTIGATE_WRITTEN.search(text) is None)
