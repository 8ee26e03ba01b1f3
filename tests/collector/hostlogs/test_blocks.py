"""The block path of a JSON-lines stream (HostLogDecoder.feed_lines) gives what the one-line path gives."""

from __future__ import annotations

import random

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analytics.endpoint import EndpointBatchBuilder
from collector.hostlogs.decoder import BLOCK_LINES, HostLogDecoder
from tests.collector.hostlogs.sysmon_events import SCHEMA, sysmon_event
from tests.collector.hostlogs.sysmon_events import nxlog as _nxlog
from tests.collector.hostlogs.sysmon_events import wazuh as _wazuh
from tests.collector.hostlogs.sysmon_events import winlogbeat as _winlogbeat

T0 = 1_764_748_800.0


def winlogbeat(ev: dict) -> bytes:
    return orjson.dumps(_winlogbeat(ev))


def wazuh(ev: dict) -> bytes:
    return orjson.dumps(_wazuh(ev))


def _event(eid: int, i: int) -> dict:
    """A Sysmon event of id eid (1, 3, 5, 22 decode; others are skipped) with the fields it needs."""
    fields = {"Image": r"C:\Windows\System32\WindowsPowerShell\v1.0\powershell.exe", "ProcessId": 1000 + i,
              "ProcessGuid": "{4dc16835-e854-6116-9224-%012x}" % i, "CommandLine": f"powershell -c step{i}",
              "DestinationIp": f"198.51.100.{i % 250 + 1}", "DestinationPort": 8883, "SourceIp": "10.1.1.10",
              "SourcePort": 49152 + i, "QueryName": f"h{i}.example.net", "QueryResults": f"::ffff:203.0.113.{i % 250};"}
    return sysmon_event(eid, T0 + i, **{k: v for k, v in fields.items() if k in SCHEMA[eid]})


def _rows(lines, by_block: bool):
    dec = HostLogDecoder()
    b = EndpointBatchBuilder()
    if by_block:
        dec.feed_lines(lines, b)
    else:
        for line in lines:
            dec.feed_line(line, b)
    dec.finish(b)
    batch = b.build()
    rows = sorted(str(batch.to_ecs(i)) for i in range(len(batch)))
    return rows, dict(dec.records), dict(dec.rejected), dict(dec.skipped)


def nxlog(ev: dict) -> bytes:
    return orjson.dumps(_nxlog(ev))


@pytest.mark.parametrize("render", [winlogbeat, wazuh, nxlog])
def test_blocks_equal_lines_on_one_forwarder(render):
    rng = random.Random(1)
    lines = [render(_event(rng.choice((1, 3, 5, 22)), i)) for i in range(3 * BLOCK_LINES + 7)]
    block, line = _rows(lines, True), _rows(lines, False)
    assert block == line and block[1]["sysmon"] >= len(lines) and not block[2]


@given(st.lists(st.sampled_from(["ok", "wazuh", "broken", "blank", "wrapped", "other_eid", "bad_type"]),
                min_size=1, max_size=3 * BLOCK_LINES // 4), st.integers(0, 1000))
@settings(max_examples=25, deadline=None)
def test_blocks_equal_lines_on_mixed_streams(kinds, seed):
    rng = random.Random(seed)
    lines = []
    for i, kind in enumerate(["ok"] * 5 + kinds + ["ok"] * BLOCK_LINES):
        eid = rng.choice((1, 3, 5, 22))
        if kind == "ok":
            lines.append(winlogbeat(_event(eid, i)))
        elif kind == "wazuh":
            lines.append(wazuh(_event(eid, i)))
        elif kind == "broken":
            lines.append(winlogbeat(_event(eid, i))[:40])
        elif kind == "blank":
            lines.append(b"   ")
        elif kind == "wrapped":
            lines.append(b"<14>Dec  3 10:00:00 fwd nxlog: " + winlogbeat(_event(eid, i)))
        elif kind == "other_eid":
            ev = _event(5, i)  # event 11 (file create): a Sysmon event this decoder skips, counted
            ev["eid"] = 11
            lines.append(winlogbeat(ev))
        else:
            lines.append(b'{"winlog": "not an object"}')
    assert _rows(lines, True) == _rows(lines, False)
