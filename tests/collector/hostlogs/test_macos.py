"""macOS: the unified-log, Elastic Endpoint and Wazuh samples decode; eslogger, text styles and hostile input.

Corpus events are compared with an independent reading: ``json`` from the standard library (``raw_decode`` for the
files that hold several documents) and direct key access, and for unified-log messages a regex written here.
"""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analytics.endpoint import EndpointBatchBuilder
from collector.hostlogs.decoder import HostLogDecoder
from collector.hostlogs.macos import network_message

MACATTACK = [
    "macattack_collection_clipboard_osascript_pbpast.json",
    "macattack_execution_eggshell_default_tmp_path_base64_c2.json",
    "macattack_execution_scripting_jxa_osascript_apfell_dwnld.json",
    "macattack_lateral_movement_execution_reverse_shell.json",
]


def _documents(text: str) -> list[dict]:
    dec, pos, out = json.JSONDecoder(), 0, []
    while pos < len(text):
        if text[pos].isspace():
            pos += 1
            continue
        obj, pos = dec.raw_decode(text, pos)
        out.append(obj)
    return out


def _decode_file(path) -> tuple:
    dec, b = HostLogDecoder(), EndpointBatchBuilder()
    kind = dec.decode_file(str(path), b)
    return kind, dec, b.build()


def _macos(corpus, name):
    path = corpus / "host_logs" / "macos" / name
    if not path.is_file():
        pytest.skip(f"{path} absent from the corpus")
    return path


@pytest.mark.parametrize("name", MACATTACK)
def test_elastic_endpoint_samples_decode_as_read_by_hand(corpus, name):
    path = _macos(corpus, name)
    kind, dec, batch = _decode_file(path)
    docs = _documents(path.read_text())
    assert kind == "json" and not dec.rejected and len(batch) == len(docs)
    for i, doc in enumerate(docs):
        src = doc["_source"]
        e = batch.to_ecs(i)
        assert e["event"]["action"] == "process_start" and src["event"]["action"] == "exec"
        assert e["process"]["pid"] == src["process"]["pid"]
        assert e["process"]["executable"] == src["process"]["executable"]
        assert e["process"]["command_line"] == src["process"]["command_line"]
        assert e["user"]["name"] == src["user"]["name"]
        assert e["host"] == {"name": src["host"]["name"], "os": {"type": "macos"}}
        if "executable" in src["process"]["parent"]:
            assert e["process"]["parent"]["executable"] == src["process"]["parent"]["executable"]


def test_elastic_endpoint_sample_with_a_trailing_comma_is_rejected_as_json(corpus):
    path = _macos(corpus, "macattack_lateral_movement_ssh_from_python_procexec.json")
    with pytest.raises(json.JSONDecodeError):
        json.loads(path.read_text())  # the published file is not JSON: `"10.0.2.15",` closes an array
    kind, dec, batch = _decode_file(path)
    assert len(batch) == 0 and dict(dec.rejected) == {"json": 1}


_PATH_RX = re.compile(r"(\d+\.\d+\.\d+\.\d+):(\d+)<->(\S+):(\d+)\]")


def test_unified_log_network_records_decode_as_read_by_hand(corpus):
    path = _macos(corpus, "elastic_macos_unifiedlog_network-activity.ndjson")
    kind, dec, batch = _decode_file(path)
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    assert kind == "json" and not dec.rejected and len(batch) == len(records) == 3
    for i, rec in enumerate(records):
        e = batch.to_ecs(i)
        local, lport, remote, rport = _PATH_RX.search(rec["eventMessage"]).groups()
        assert e["event"]["action"] == "network_connect"
        assert e["process"]["pid"] == rec["processID"]
        assert e["process"]["executable"] == rec["processImagePath"]
        assert e["source"] == {"ip": local, "port": int(lport)}
        assert e["destination"] == {"port": int(rport)}  # the remote is redacted ("IPv4#3ec082bd")
        assert remote.startswith("IPv4#")
        assert e["user"]["name"] == str(rec["userID"])
    # the summary is logged at the end; the event is the connection's start (log time minus its Duration)
    assert batch.to_ecs(0)["@timestamp"] == "2025-10-15T10:51:24.993344Z"


def test_unified_log_text_lines_without_network_info_are_skipped(corpus):
    path = _macos(corpus, "wazuh_macos_extracted.log")
    kind, dec, batch = _decode_file(path)
    n = len([ln for ln in path.read_text().splitlines() if ln.strip()])
    assert kind == "macos_text" and len(batch) == 0 and not dec.rejected
    assert dec.skipped[("macos", "no_network_info")] == n


def test_unified_log_text_styles_with_continuation_lines():
    text = (
        b"Timestamp                       Thread     Type        Activity             PID    TTL  \n"
        b"2026-12-03 10:00:05.250000+0000 0x1148de   Default     0x0                  4242   0    osascript: "
        b"(Network) [com.apple.network:connection] [C7 3C1B5C31-4D0E-4F55-9E07-8C1A5E0D2B11 x.example.net:443 "
        b"tcp, url hash: 1a2b3c4d, tls, definite, attribution: developer] cancelled\n"
        b"\t[C7.1.1 0F0E0D0C-0B0A-0908-0706-050403020100 192.168.50.21:60122<->198.51.100.77:443]\n"
        b"\tDuration: 0.250s, DNS @0.000s took 0.010s, TCP @0.011s took 0.020s, TLS 1.3 took 0.050s\n"
        b"2026-12-03 10:00:06.000000+0000  localhost curl[4250]: (Network) [com.apple.network:connection] "
        b"[C1.1.1 0F0E0D0C-0B0A-0908-0706-050403020100 192.168.50.21:60130<->[2001:db8::7]:8883]\n"
        b"2026-12-03 10:00:07.000 Df curl[4251:1f2e] [com.apple.network:connection] nothing about a path\n"
        b"--------------------------------------------------------------------------------------------------------\n"
        b"Log      - Default:          3, Info:                0, Debug:             0, Error:          0\n"
        b"Activity - Create:           0, Transition:          0, Actions:           0\n"
    )
    dec, b = HostLogDecoder(), EndpointBatchBuilder()
    dec.feed_lines(text.splitlines(keepends=True), b)
    dec.finish(b)
    batch = b.build()
    assert len(batch) == 2 and not dec.rejected
    first, second = batch.to_ecs(0), batch.to_ecs(1)
    assert first["@timestamp"] == "2026-12-03T10:00:05.000000Z"  # 05.25 minus the 0.25 s Duration
    assert first["process"] == {"name": "osascript", "pid": 4242}
    assert first["destination"] == {"ip": "198.51.100.77", "port": 443, "domain": "x.example.net"}
    assert first["source"] == {"ip": "192.168.50.21", "port": 60122} and first["network"]["iana_number"] == "6"
    assert second["destination"] == {"ip": "2001:db8::7", "port": 8883}
    assert dec.skipped[("macos", "banner")] == 4 and dec.skipped[("macos", "no_network_info")] == 1


def test_network_message_endpoints():
    fields = network_message("[C3.1 1.2.3.4:5<->broker.example.org:8883]")[1]
    assert fields == {"src_ip": "1.2.3.4", "src_port": 5, "dst_ip": None, "dst_port": 8883,
                      "domain": "broker.example.org"}
    assert network_message("[C3.1 fe80::1%en0.5<->2001:db8::2.443]")[1]["dst_ip"] == "2001:db8::2"
    assert network_message("no path here") is None


def _es(kind: str, body: dict, pid: int = 4242, **extra) -> dict:
    proc = {"audit_token": {"pid": pid, "pidversion": 3, "euid": 501, "ruid": 501}, "ppid": 1,
            "executable": {"path": "/bin/zsh", "path_truncated": False}, "start_time": "2026-12-03T09:00:00Z"}
    return {"schema_version": 1, "version": 7, "time": "2026-12-03T10:00:00.123456789Z", "mach_time": 1,
            "event_type": 9, "global_seq_num": 10, "seq_num": 3, "action_type": 1, "action": {"result": {}},
            "thread": {"thread_id": 1}, "process": proc, "event": {kind: body}, **extra}


def test_eslogger_exec_fork_exit_login_and_skips():
    target = {"audit_token": {"pid": 4242, "pidversion": 4, "euid": 501}, "ppid": 4100,
              "executable": {"path": "/usr/bin/curl", "path_truncated": False}}
    child = {"audit_token": {"pid": 4300, "pidversion": 1, "euid": 501}, "ppid": 4242,
             "executable": {"path": "/bin/zsh", "path_truncated": False}}
    lines = [
        _es("exec", {"target": target, "args": ["curl", "-X", "POST", "https://x/mqtt", "-d", "a b"], "cwd": {}}),
        _es("fork", {"child": child}),
        _es("exit", {"stat": 0}),
        _es("openssh_login", {"success": True, "source_address_type": 0, "source_address": "10.1.1.23",
                              "username": "ana"}),
        _es("uipc_connect", {"file": {"path": "/var/run/x"}, "domain": 1, "type": 1, "protocol": 0}),
        _es("open", {"fflag": 1}),
    ]
    dec, b = HostLogDecoder(), EndpointBatchBuilder()
    dec.feed_lines([json.dumps(x).encode() for x in lines], b)
    batch = b.build()
    assert [batch.to_ecs(i)["event"]["action"] for i in range(len(batch))] == [
        "process_start", "process_start", "process_end", "network_accept"]
    e = batch.to_ecs(0)
    assert e["process"]["command_line"] == "curl -X POST https://x/mqtt -d 'a b'"
    assert e["process"]["entity_id"] == "es:4242:4" and e["@timestamp"] == "2026-12-03T10:00:00.123456Z"
    assert batch.to_ecs(1)["process"]["parent"] == {"executable": "/bin/zsh", "pid": 4242}
    assert batch.to_ecs(3)["source"] == {"ip": "10.1.1.23"}
    assert dec.skipped[("macos", "af_unix")] == 1 and dec.skipped[("macos", "other_event")] == 1
    assert not dec.rejected


def test_elastic_endpoint_network_and_dns_events():
    base = {"@timestamp": "2026-12-03T10:00:00Z", "agent": {"type": "endpoint"},
            "host": {"name": "mac-1", "os": {"type": "macos"}},
            "process": {"pid": 77, "executable": "/usr/bin/osascript", "entity_id": "e77"}, "user": {"name": "ana"}}
    conn = dict(base, event={"action": "connection_attempted", "category": ["network"]},
                source={"ip": "10.1.1.5", "port": 50000}, destination={"ip": "198.51.100.7", "port": 443},
                network={"transport": "tcp"})
    dns = dict(base, event={"action": "lookup_result", "category": ["network"]},
               dns={"question": {"name": "x.duckdns.org"}, "resolved_ip": ["198.51.100.7", "2001:db8::9"]})
    linux = dict(conn, host={"name": "l-1", "os": {"type": "linux"}})
    dec, b = HostLogDecoder(), EndpointBatchBuilder()
    dec.feed_lines([json.dumps({"_source": conn}).encode(), json.dumps(dns).encode(), json.dumps(linux).encode()], b)
    batch = b.build()
    assert len(batch) == 4 and not dec.rejected
    c = batch.to_ecs(0)
    assert c["destination"] == {"ip": "198.51.100.7", "port": 443} and c["network"]["iana_number"] == "6"
    assert c["process"]["entity_id"] == "e77"
    assert [batch.to_ecs(i)["destination"] for i in (1, 2)] == [
        {"domain": "x.duckdns.org", "ip": "198.51.100.7"}, {"domain": "x.duckdns.org", "ip": "2001:db8::9"}]
    assert batch.to_ecs(3)["host"]["os"]["type"] == "linux"


def test_malformed_and_hostile_json_is_counted():
    deep = b"[" * 100_000 + b"]" * 100_000
    lines = [
        b'{"eventMessage": 5, "processImagePath": "/x"}',
        b'{"eventMessage": "[C1.1 1.2.3.4:5<->5.6.7.8:9]", "subsystem": "com.apple.network"}',
        b'{"eventMessage": "[C1.1 1.2.3.4:5<->5.6.7.8:9]", "subsystem": "n", "timestamp": "yesterday"}',
        json.dumps(_es("exec", {"target": {"ppid": 1}})).encode(),
        json.dumps(_es("exec", {"target": {}}, time=None)).encode(),
        json.dumps({"event": {"module": "endpoint", "action": "connection_attempted"},
                    "@timestamp": "2026-12-03T10:00:00Z"}).encode(),
        b'{"event": {"module": "endpoint", "action": "exec"', deep,
        b'{"eventMessage": "' + b"x" * (2 << 20) + b'"}',
    ]
    dec, b = HostLogDecoder(), EndpointBatchBuilder()
    dec.feed_lines(lines, b)
    assert len(b) == 0
    assert dec.rejected["missing_field"] == 4 and dec.rejected["bad_time"] == 2
    assert dec.rejected["json"] == 2 and dec.rejected["too_large"] == 1


_KEYS = ["eventMessage", "processImagePath", "subsystem", "timestamp", "processID", "userID", "event", "process",
         "audit_token", "exec", "target", "args", "time", "_source", "agent", "@timestamp", "host", "os", "type",
         "destination", "ip", "port", "dns", "resolved_ip", "question", "name", "action", "module"]
_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2, 2**70) | st.sampled_from(
        ["exec", "fork", "exit", "endpoint", "connection_attempted", "lookup_result", "2026-12-03T10:00:00Z",
         "[C1.1 1.2.3.4:5<->[::1]:9]", "macos", "1.2.3.4"]) | st.text(max_size=12),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(_KEYS), inner, max_size=5)),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.sampled_from(_KEYS), _VALUES, max_size=8))
def test_fuzzed_objects_never_raise(obj):
    dec, b = HostLogDecoder(), EndpointBatchBuilder()
    dec.decode_object(obj, b)
    assert len(b.build()) == sum(dec.records.values())


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([
    b"2026-12-03 10:00:05.250000+0000 0x1 Default 0x0 1 0 p: ", b"2026-12-03 10:00:06.000000+0000  h p[1]: ",
    b"\t[C1.1 1.2.3.4:5<->6.7.8.9:10]", b"\tDuration: 1e9s", b"[C1 a:1 tcp, x]", b"<->", b"Timestamp  x",
]) | st.binary(max_size=60), max_size=10))
def test_fuzzed_text_lines_never_raise(lines):
    dec, b = HostLogDecoder(), EndpointBatchBuilder()
    dec.feed_lines(lines, b)
    dec.finish(b)
    assert len(b.build()) == sum(dec.records.values())


def test_numbers_too_large_for_the_columns_are_counted_not_stored():
    base = {"agent": {"type": "endpoint"}, "event": {"action": "exec"}, "process": {"pid": 2**80}}
    lines = [json.dumps(dict(base, **{"@timestamp": ts})).encode() for ts in
             (2**90, "9999-12-31T23:59:59Z", float("nan"), "2026-12-03T10:00:00Z")]
    lines.append(b'{"eventMessage": "[C1.1 1.2.3.4:5<->5.6.7.8:9]\\n\\tDuration: 99999999999999999.5s", '
                 b'"subsystem": "com.apple.network", "timestamp": "2026-12-03 10:00:00.000000+0000"}')
    dec, b = HostLogDecoder(), EndpointBatchBuilder()
    dec.feed_lines(lines, b)
    batch = b.build()
    assert dec.rejected["bad_time"] == 2 and dec.rejected["json"] == 1  # NaN is not JSON
    assert len(batch) == 2 and "pid" not in batch.to_ecs(0).get("process", {})


def test_a_dated_syslog_line_wrapping_json_is_not_taken_for_unified_log_text():
    es = json.dumps(_es("exit", {"stat": 0})).encode()
    dec, b = HostLogDecoder(), EndpointBatchBuilder()
    dec.feed_line(b"2026-12-03 10:00:05.250000+00:00 mac-1 eslogger: " + es, b)
    assert len(b) == 1 and not dec.rejected


def test_nested_lists_are_rejected_without_recursing(tmp_path):
    dec, b = HostLogDecoder(), EndpointBatchBuilder()
    for depth in (2, 1000, 1023):
        dec.feed_line(b"[" * depth + b"]" * depth, b)
    assert dec.rejected["unknown_format"] == 3 and len(b) == 0


def test_a_json_array_file_larger_than_a_record_decodes(tmp_path):
    doc = {"@timestamp": "2026-12-03T10:00:00Z", "agent": {"type": "endpoint"}, "event": {"action": "exec"},
           "process": {"pid": 7, "executable": "/usr/bin/curl", "command_line": "curl " + "x" * 500}}
    path = tmp_path / "hits.json"
    path.write_text(json.dumps([doc] * 3000, indent=1))
    assert path.stat().st_size > (1 << 20)
    dec, b = HostLogDecoder(), EndpointBatchBuilder()
    assert dec.decode_file(str(path), b) == "json"
    assert len(b.build()) == 3000 and not dec.rejected
