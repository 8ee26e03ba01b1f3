"""osquery result logs: the fixtures (fixtures/hostlogs/osquery/README.md) decode, checked against json.loads.

The corpus has no osquery samples; the fixtures follow osquery's table specs and logging documentation field by
field. The independent reading here takes every row by its columns with direct key access.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analytics.endpoint import EndpointBatchBuilder
from collector.hostlogs.decoder import HostLogDecoder
from collector.hostlogs.osquery import MAX_ROWS, os_of, table_of
from tests.conftest import FIXTURES

OSQUERY = FIXTURES / "hostlogs" / "osquery"
FILES = {"linux_differential.log": "linux", "macos_snapshot.log": "macos", "windows_batched.log": "windows"}


def _rows(line: dict):
    if "columns" in line:
        yield line["columns"], line["action"]
    for row in line.get("snapshot", []):
        yield row, "snapshot"
    for action, rows in line.get("diffResults", {}).items():
        for row in rows:
            yield row, action


def _expected(path) -> list[tuple]:
    """(action, pid, executable, command line, destination, port) of each usable row, in file order."""
    out = []
    for text in path.read_text().splitlines():
        line = json.loads(text)
        for row, action in _rows(line):
            if action == "removed":
                continue
            exe = row.get("process_path") or row.get("path") or None
            pid = int(row["pid"])
            if "remote_address" in row:
                usable = row["remote_port"] not in ("0", 0) and row["remote_address"] not in ("", "0.0.0.0")
                if not usable or str(row["family"]) == "1":
                    continue
                if row.get("action", "connect") == "connect":
                    out.append(("network_connect", pid, exe, row.get("cmdline"), row["remote_address"],
                                int(row["remote_port"])))
                elif row["action"] == "accept":
                    out.append(("network_accept", pid, exe, None, row["local_address"], int(row["local_port"])))
            elif "response" in row:
                for item in row["response"].split(";"):
                    if item.startswith("::ffff:"):
                        out.append(("dns_query", pid, exe, None, item[7:], 0))
            elif row.get("syscall", "execve") == "execve" and row.get("event_type", "exec") in ("exec", "exit"):
                end = row.get("event_type") == "exit" or row.get("type") == "ProcessStop"
                out.append(("process_end" if end else "process_start", pid, exe, row["cmdline"], None, 0))
    return out


@pytest.mark.parametrize("name", sorted(FILES))
def test_fixtures_decode_as_read_by_hand(name):
    dec, b = HostLogDecoder(), EndpointBatchBuilder()
    assert dec.decode_file(str(OSQUERY / name), b) == "json"
    batch = b.build()
    assert not dec.rejected
    got = []
    for i in range(len(batch)):
        e = batch.to_ecs(i)
        assert e["host"]["os"]["type"] == FILES[name]
        got.append((e["event"]["action"], e["process"]["pid"], e["process"].get("executable"),
                    e["process"].get("command_line"), e.get("destination", {}).get("ip"),
                    e.get("destination", {}).get("port", 0)))
    assert got == _expected(OSQUERY / name)


def test_linux_fixture_fields():
    dec, b = HostLogDecoder(), EndpointBatchBuilder()
    dec.decode_file(str(OSQUERY / "linux_differential.log"), b)
    batch = b.build()
    start, conn = batch.to_ecs(0), batch.to_ecs(1)
    assert start["host"]["name"] == "edge-gw-07" and start["user"]["name"] == "1000"
    assert start["process"]["parent"]["pid"] == 40102 and start["@timestamp"] == "2026-12-03T09:26:40.000000Z"
    assert conn["source"] == {"ip": "10.1.1.10", "port": 51000} and conn["network"]["iana_number"] == "6"
    accept = batch.to_ecs(len(batch) - 1)
    assert accept["event"]["action"] == "network_accept" and accept["source"] == {"ip": "10.1.1.23", "port": 40312}
    # bind, clone, a UNIX-socket connect and a removed row carry nothing
    assert dec.skipped[("osquery", "no_usable_row")] == 4


def test_windows_dns_rows_name_the_address():
    dec, b = HostLogDecoder(), EndpointBatchBuilder()
    dec.decode_file(str(OSQUERY / "windows_batched.log"), b)
    batch = b.build()
    dns = [batch.to_ecs(i) for i in range(len(batch)) if batch.to_ecs(i)["event"]["action"] == "dns_query"]
    assert [d["destination"] for d in dns] == [{"domain": "broker.example-dyn.net", "ip": "203.0.113.50"}]
    assert dns[0]["user"]["name"] == "CORP\\jdoe"


def test_os_decisions():
    assert os_of({"decorations": {"os": "Darwin"}}, "process_events", "/usr/bin/x") == "macos"
    assert os_of({"decorations": {"platform": "ubuntu"}}, "process_events", None) == "linux"
    assert os_of({}, "dns_lookup_events", None) == "windows"
    assert os_of({}, "es_process_events", None) == "macos"
    assert os_of({}, "process_events", "C:\\Windows\\System32\\cmd.exe") == "windows"
    assert os_of({}, "socket_events", "/Applications/Slack.app/Contents/MacOS/Slack") == "macos"
    assert os_of({"hostIdentifier": "anas-macbook.local"}, "socket_events", "/usr/bin/curl") == "macos"
    assert os_of({"hostIdentifier": "gw"}, "socket_events", "/usr/bin/curl") == "linux"
    assert table_of({"pid": "1", "cmdline": "x", "path": "/x"}) == "process_events"
    assert table_of({"name": "x"}) == ""


def _line(**form) -> bytes:
    return json.dumps({"name": "q", "hostIdentifier": "h", "unixTime": "1796290000", **form}).encode()


def test_malformed_and_hostile_lines_are_counted():
    row = {"pid": "1", "path": "/x", "cmdline": "x", "time": "1"}
    lines = [
        _line(snapshot={"not": "a list"}),
        _line(diffResults=[]),
        _line(diffResults={"added": "x"}),
        _line(snapshot=[1, 2]),
        _line(snapshot=[row] * (MAX_ROWS + 1)),
        json.dumps({"name": "q", "hostIdentifier": "h", "columns": {"pid": "1", "path": "/x", "cmdline": "x"},
                    "calendarTime": "not a date"}).encode(),
        _line(columns={"pid": "1"}, action="added"),  # a table we do not read
        _line(snapshot=[]),
        b'{"name": "q", "hostIdentifier": "h", "columns": {',
    ]
    dec, b = HostLogDecoder(), EndpointBatchBuilder()
    dec.feed_lines(lines, b)
    assert len(b) == 0
    assert dict(dec.rejected) == {"bad_value": 4, "too_large": 1, "bad_time": 1, "json": 1}
    assert dec.skipped[("osquery", "no_usable_row")] == 1 and dec.skipped[("osquery", "empty")] == 1


_COLS = ["pid", "path", "cmdline", "parent", "time", "syscall", "action", "remote_address", "remote_port",
         "local_address", "local_port", "family", "protocol", "response", "name", "event_type", "type", "ppid",
         "username", "uid", "process_path", "status"]
_VAL = st.none() | st.integers(-5, 2**64) | st.sampled_from(
    ["connect", "accept", "execve", "exec", "exit", "ProcessStart", "1.2.3.4", "::1", "0.0.0.0", "80", "2", "1",
     "type:  1 ::ffff:1.2.3.4;", "C:\\x.exe", "/Applications/A", ""]) | st.text(max_size=8) | st.lists(st.integers())


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(["columns", "snapshot", "diffResults"]),
       st.lists(st.dictionaries(st.sampled_from(_COLS), _VAL, max_size=10), max_size=4),
       st.dictionaries(st.sampled_from(["unixTime", "calendarTime", "decorations", "hostIdentifier", "action"]),
                       _VAL, max_size=3))
def test_fuzzed_result_lines_never_raise(form, rows, extra):
    body = {"columns": rows[0] if rows else {}, "snapshot": rows,
            "diffResults": {"added": rows, "removed": rows[:1]}}[form]
    obj = {"name": "q", "hostIdentifier": "h", "unixTime": 1, **extra, form: body}
    dec, b = HostLogDecoder(), EndpointBatchBuilder()
    dec.decode_object(obj, b)
    assert len(b.build()) == sum(dec.records.values())


def test_numbers_too_large_for_the_columns_are_counted_not_stored():
    big = str(2**70)
    lines = [
        _line(columns={"pid": big, "path": "/x", "cmdline": "x", "time": big}, action="added"),
        _line(columns={"pid": big, "path": "/x", "cmdline": "x"}, action="added", unixTime=big),
        _line(columns={"pid": big, "path": "/x", "cmdline": "x", "time": "1796290000"}, action="added"),
    ]
    dec, b = HostLogDecoder(), EndpointBatchBuilder()
    dec.feed_lines(lines, b)
    batch = b.build()
    assert dec.rejected["bad_time"] == 2
    assert len(batch) == 1 and batch.to_ecs(0)["process"].get("pid") is None


def test_the_documented_socket_events_query_without_an_action_column():
    """docs/forwarding-host-logs.md schedules ``SELECT pid, path, remote_address, remote_port, local_port, time FROM
    socket_events WHERE action = 'connect'``: its rows carry no action, family or local address."""
    row = {"pid": "4242", "path": "/usr/bin/mosquitto_pub", "remote_address": "203.0.113.50",
           "remote_port": "8883", "local_port": "51000", "time": "1796290000"}
    dec, b = HostLogDecoder(), EndpointBatchBuilder()
    dec.feed_line(_line(columns=row, action="added"), b)
    e = b.build().to_ecs(0)
    assert e["event"]["action"] == "network_connect" and e["process"]["executable"] == "/usr/bin/mosquitto_pub"
    assert e["destination"] == {"ip": "203.0.113.50", "port": 8883} and e["source"] == {"port": 51000}


def test_a_bad_row_rejects_its_whole_line_and_adds_nothing():
    good = {"pid": "1", "path": "/x", "cmdline": "x", "time": "1796290000"}
    bad = dict(good, time=str(2**70))
    dec, b = HostLogDecoder(), EndpointBatchBuilder()
    dec.feed_line(_line(snapshot=[good, bad]), b)
    assert len(b.build()) == 0 and dec.rejected["bad_time"] == 1
