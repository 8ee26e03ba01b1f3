"""The syslog block path (syslog_block.py) against the reference line-at-a-time path: the same rows in the same order,
the same counters and the same open sessions, on every fixture and corpus line, in blocks of several sizes, and on
hypothesis-made blocks of mixed, mutated and hostile lines. Also: the kernels really take the lines (a block path that
sent everything to the reference would pass the equality tests and be useless), and every shipped profile compiles.
"""

from __future__ import annotations

import calendar
import random

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analytics.schema import FlowBatchBuilder
from collector.syslog import parser as S
from collector.syslog.block import BlockCompiler, BlockPath
from collector.metrics import Counters
from tests.conftest import FIXTURES, corpus_path

REF = calendar.timegm((2026, 11, 28, 12, 0, 0)) * 10**9
PROFILES = S.load_profiles()
EXPORTER = (0, 0xFFFF0A000001)


def _files() -> list:
    paths = sorted((FIXTURES / "syslog").glob("*.log"))
    corpus = corpus_path() / "firewall_syslog"
    if corpus.is_dir():
        paths += sorted(corpus.rglob("*.log"))
    return paths


FILES = _files()
LINES = [line for p in FILES for line in p.read_bytes().splitlines() if line.strip()]


def _run(lines: list, block: int | None, recv_ns: int = REF, max_sessions: int = S.MAX_OPEN_SESSIONS):
    """(rows, counters, open session keys) of lines fed one at a time (block None) or in blocks of that size; the
    rows end with the held starts made records (close_sessions)."""
    counters = Counters()
    parser = S.SyslogParser(counters, profiles=PROFILES, reference_ns=REF, max_sessions=max_sessions)
    b = FlowBatchBuilder(16)
    if block is None:
        parser.block = False
        n = sum(parser.feed_line(line, EXPORTER, recv_ns, b) for line in lines)
    else:
        n = sum(parser.feed_lines(lines[i:i + block], EXPORTER, recv_ns, b) for i in range(0, len(lines), block))
    sessions = list(parser._sessions)
    n += parser.close_sessions(b)  # the starts each path held (block: slots) as records when the input ends
    assert n == len(b)
    return b.build().to_rows(), counters.snapshot(), sessions


def _same(lines: list, block: int, recv_ns: int = REF, max_sessions: int = S.MAX_OPEN_SESSIONS) -> None:
    rows_a, counters_a, sessions_a = _run(lines, None, recv_ns, max_sessions)
    rows_b, counters_b, sessions_b = _run(lines, block, recv_ns, max_sessions)
    assert len(rows_a) == len(rows_b)
    for i, (a, b) in enumerate(zip(rows_a.tolist(), rows_b.tolist())):
        assert a == b, f"row {i}: {a} != {b}"
    assert counters_a == counters_b
    assert sessions_a == sessions_b


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_each_sample_file_in_blocks_equals_one_line_at_a_time(path):
    lines = [line for line in path.read_bytes().splitlines() if line.strip()]
    _same(lines, 512)


@pytest.mark.parametrize("block", [4, 7, 64, 1024])
def test_every_line_in_blocks_of_several_sizes(block):
    _same(LINES, block)


def test_files_read_with_their_newlines_and_no_receive_time():
    """Lines as a file gives them (with b"\\n", CRLF, NUL padding) and recv_ns 0 (then the reference time)."""
    lines = [line + tail for line, tail in zip(LINES, [b"\n", b"\r\n", b"\x00\n", b""] * len(LINES))]
    _same(lines, 100, recv_ns=0)


def test_the_kernels_take_the_lines():
    """Most lines go through the kernels (counted per path), not through the reference."""
    parser = S.SyslogParser(Counters(), profiles=PROFILES, reference_ns=REF)
    b = FlowBatchBuilder(16)
    fixture = [line for p in sorted((FIXTURES / "syslog").glob("*.log")) for line in p.read_bytes().splitlines()
               if line.strip()]
    parser.feed_lines(fixture, EXPORTER, REF, b)
    path = parser._block
    assert path.kernel_lines >= 0.9 * len(fixture), (path.kernel_lines, path.reference_lines)
    if len(LINES) > len(fixture):
        parser = S.SyslogParser(Counters(), profiles=PROFILES, reference_ns=REF)
        parser.feed_lines(LINES, EXPORTER, REF, b)
        path = parser._block
        assert path.kernel_lines >= 0.8 * len(LINES), (path.kernel_lines, path.reference_lines)


def test_every_shipped_profile_compiles():
    c = BlockCompiler(PROFILES)
    assert [(p.profile.vendor, p.why) for p in c.plans if not p.fast] == []


def test_a_profile_the_compiler_does_not_take_goes_through_the_reference(tmp_path):
    """A time zone other than UTC is left to the reference path: same rows, none through the kernels."""
    text = (FIXTURES.parent / "device_profiles" / "pfsense.yaml").read_text()
    (tmp_path / "pfsense.yaml").write_text(text.replace("timezone: UTC", "timezone: Europe/Paris"))
    profiles = S.load_profiles(tmp_path)
    lines = (FIXTURES / "syslog" / "pfsense.log").read_bytes().splitlines() * 3
    outs = []
    for block in (False, True):
        parser = S.SyslogParser(Counters(), profiles=profiles, reference_ns=REF)
        parser.block = block
        b = FlowBatchBuilder(16)
        parser.feed_lines(lines, EXPORTER, REF, b)
        outs.append(b.build().to_rows().tolist())
    assert outs[0] == outs[1] and outs[0]
    assert not BlockCompiler(profiles).plans[0].fast


_HOSTILE = [
    b"type=traffic logid=1 srcip=1.1.1.1 dstip=::1 proto=6 srcport=1 dstport=2 sentbyte=1 rcvdbyte=2 "
    b"eventtime=99999999999999999999",
    b"type=traffic logid=1 srcip=1.1.1.1 dstip=::1 proto=6 sentbyte=99999999999999999999 rcvdbyte=1",
    b"date=2026-11-28 time=10:30:00 logid=\"13\" type=\"traffic\" srcip=010.1.1.1 dstip=1.1.1.1 proto=6",
    b"date=2026-11-28 time=25:30:00 logid=\"13\" type=\"traffic\" srcip=10.1.1.1 dstip=1.1.1.1 proto=6 "
    b"srcport=70000 dstport=1",
    b"date=2026-02-30 time=10:30:00 logid=\"13\" type=\"traffic\" srcip=10.1.1.1 dstip=1.1.1.1 proto=udp "
    b"srcport=7 dstport=1 sentbyte=1x duration=1.5",
    b"1,9999/11/28 10:00:00,0,TRAFFIC,end,1,9999/11/28 10:00:00,1.1.1.1,2.2.2.2,,,r,,,mqtt,v,t,u,e1,e2,f,"
    b"x,1,1,50124,5671,0,0,0x0,tcp,allow,5000,2000,3000,30,9999/11/28 10:00:00,1e11,any",
    b"%ASA-6-302014: Teardown TCP connection 1 for a:1.2.3.4/1 to b:5.6.7.8/2 duration 9999999999:00:00 bytes 1",
    b"%ASA-6-302014: Teardown TCP connection 1 for a:1.2.3.4/1 to b:fe80::1%eth0/2 duration 0:00:01 bytes 1",
    b"<134>Nov 28 10:56:00 pfsense filterlog[5071]: 101,,,1770000101,igb1,match,block,in,4,0x0,,57,12345,0,DF,17,"
    b"udp,\"76\",192.0.2.90,10.8.0.10,40000,5683,56",
    b"<134>Nov 28 10:56:00 pfsense filterlog[5071]: 101,,,1770000101,igb1,match,block,in,4",
    b"Nov 28 11:01:00 gw kernel: ACCEPT IN=eth1 OUT=eth0 SRC=10.9.0.5 DST=198.51.100.80 LEN=60 PROTO=TCP "
    b"SPT=45000 DPT=1883 SPT=1",
    b"Nov 28 11:01:00 gw kernel: ACCEPT IN=eth1 OUT=eth0 SRC=10.9.0.5 DST=198.51.100.80 LEN=6\xc3\xa9 PROTO=TCP",
    b"Nov 28 11:01:00 gw kernel: ACCEPT\tIN=eth1 OUT=eth0 SRC=10.9.0.5 DST=198.51.100.80 LEN=60 PROTO=TCP",
    b"\x00\x00\r\n",
    b"",
    b"x" * 20000 + b" SRC=1.1.1.1 DST=2.2.2.2 PROTO=TCP",
]


def test_hostile_lines_equal_the_reference():
    _same(_HOSTILE * 3 + LINES[:200] + _HOSTILE, 16)


def _mutate(rnd: random.Random, line: bytes) -> bytes:
    kind = rnd.randrange(5)
    if not line:
        return line
    k = rnd.randrange(len(line))
    if kind == 0:
        return line[:k]  # truncated
    if kind == 1:
        return line[:k] + bytes([rnd.choice(b'0123456789 =",.:/-[]<>%abcXYZ')]) + line[k + 1:]
    if kind == 2:
        return line[:k] + line[k + 1:]
    if kind == 3:
        j = rnd.randrange(len(line))
        return line[:k] + line[j:]  # a piece repeated or cut out
    return line


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**32), st.integers(1, 80), st.sampled_from([4, 5, 33]), st.booleans())
def test_random_blocks_of_mixed_and_mutated_lines(seed, k, block, recv0):
    rnd = random.Random(seed)
    lines = [rnd.choice(LINES + _HOSTILE) for _ in range(k)]
    lines = [_mutate(rnd, line) if rnd.random() < 0.5 else line for line in lines]
    _same(lines, block, recv_ns=0 if recv0 else REF)


def test_session_starts_and_ends_pair_across_blocks_and_paths():
    """A start in one block and its end in the next, one of them taken by the reference path, still join."""
    asa = (FIXTURES / "syslog" / "cisco_asa.log").read_bytes().splitlines()
    # the same starts and ends, the end lines ending in a tab (the header kernel leaves those to the reference)
    lines = [line + b"\t" if b"Teardown" in line else line for line in asa]
    for block in (4, 5, 1024):
        _same(lines, block)
    rows, counters, _ = _run(lines, 4)
    assert counters["brokerwatch_syslog_sessions_total"].get(("cisco_asa", "joined"), 0) >= 2


def test_empty_and_tiny_blocks():
    parser = S.SyslogParser(Counters(), profiles=PROFILES, reference_ns=REF)
    b = FlowBatchBuilder(4)
    assert parser.feed_lines([], EXPORTER, REF, b) == 0
    assert parser.feed_lines([b"", b"", b"", b"", b""], EXPORTER, REF, b) == 0
    assert len(b) == 0
    assert np.array_equal(_run(LINES[:3], 4)[0], _run(LINES[:3], None)[0])


@pytest.mark.parametrize("max_sessions", [1, 2, 5])
def test_a_full_session_table_evicts_the_oldest_start_in_both_paths(max_sessions):
    """Starts beyond the table's size evict the oldest (counted); held slots are freed and reused."""
    asa = [line for line in (FIXTURES / "syslog" / "asa_beacon_world.log").read_bytes().splitlines() if line]
    mixed = [line + b"\t" if i % 7 == 0 else line for i, line in enumerate(asa)]  # some through the reference
    for block in (4, 33, 600):
        _same(asa, block, max_sessions=max_sessions)
        _same(mixed, block, max_sessions=max_sessions)
    _, counters, sessions = _run(asa, 64, max_sessions=max_sessions)
    assert len(sessions) <= max_sessions
    evicted = counters["brokerwatch_syslog_sessions_total"].get(("cisco_asa", "start_evicted_without_end"), 0)
    if max_sessions == 1:  # the fixture's connections overlap: a table of one must evict
        assert evicted > 0
