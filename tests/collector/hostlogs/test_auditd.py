"""auditd: the go-libaudit, crowdsec and Wazuh samples decode; events are checked against an independent reading.

The independent reading (``_expected``) groups the records of a whole file by serial in a dict and reads SYSCALL,
EXECVE and SOCKADDR with plain regexes and ``struct``, the way one would by hand; the assembler under test streams,
reorders and evicts. Both must name the same processes, pids, command lines, destinations and ports.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
import struct

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from analytics.endpoint import ENDPOINT_ACTIONS, EndpointBatchBuilder
from collector.hostlogs import auditd
from collector.hostlogs.auditd import LAG, AuditAssembler, sockaddr
from collector.hostlogs.decoder import HostLogDecoder

LOGS = [
    "golibaudit_normal.log", "golibaudit_out_of_order.log", "golibaudit_lost_messages.log", "golibaudit_rollover.log",
    "golibaudit_audit-rhel7.log", "crowdsec_auditd-logs.log", "crowdsec_auditd-base64-exec.log",
    "crowdsec_auditd-postexploit-exec-from-net.log",
]
YAMLS = ["golibaudit_ubuntu-16.10-linux-4.8.0.yaml", "golibaudit_ubuntu-17.04-linux-4.10.0.yaml",
         "golibaudit_ubuntu-24.04-linux-6.8.0.yaml"]

_REC = re.compile(r"type=(\w+) msg=audit\(([\d.]+):(\d+)\): ?(.*)")
_FIELD = re.compile(r'(\w+(?:\[\d+\])?)=("[^"]*"|\S+)')


def _text(v: str) -> str:
    if v.startswith('"'):
        return v.strip('"')
    return bytes.fromhex(v).decode()


def _expected(lines: list[str]) -> set:
    """(action, pid, executable, command line, destination, port) of every connect/execve, read by hand."""
    events: dict = {}
    for line in lines:
        m = _REC.search(line)
        if m:
            events.setdefault(m.group(3), []).append((m.group(1), dict(_FIELD.findall(m.group(4)))))
    out = set()
    for records in events.values():
        by_type = {t: f for t, f in records}
        sc = by_type.get("SYSCALL")
        if sc is None:
            continue
        exe = _text(sc["exe"])
        if sc["syscall"] == "59" and sc["success"] == "yes":
            ex = by_type.get("EXECVE")
            cmd = None
            if ex:
                cmd = " ".join(_text(ex[f"a{i}"]) for i in range(int(ex["argc"])))
            out.add(("process_start", int(sc["pid"]), exe, cmd, None, 0))
        elif sc["syscall"] == "42" and "SOCKADDR" in by_type:
            raw = bytes.fromhex(by_type["SOCKADDR"]["saddr"])
            family, = struct.unpack("<H", raw[:2])
            if family == 2:
                port, = struct.unpack(">H", raw[2:4])
                out.add(("network_connect", int(sc["pid"]), exe, None, str(ipaddress.IPv4Address(raw[4:8])), port))
    return out


def _decoded(batch) -> set:
    out = set()
    for i in range(len(batch)):
        e = batch.to_ecs(i)
        cmd = e["process"].get("command_line")
        action = e["event"]["action"]
        out.add((
            action, e["process"]["pid"], e["process"]["executable"],
            " ".join(shlex.split(cmd)) if cmd and action == "process_start" else None,
            e.get("destination", {}).get("ip"), e.get("destination", {}).get("port", 0),
        ))
    return out


def _decode_lines(lines) -> tuple:
    dec, b = HostLogDecoder(), EndpointBatchBuilder()
    dec.feed_lines([ln.encode() for ln in lines], b)
    dec.finish(b)
    return dec, b.build()


@pytest.mark.parametrize("name", LOGS)
def test_corpus_logs_decode_as_read_by_hand(corpus, name):
    path = corpus / "host_logs" / "linux_auditd" / name
    if not path.is_file():
        pytest.skip(f"{path} absent from the corpus")
    dec, b = HostLogDecoder(), EndpointBatchBuilder()
    assert dec.decode_file(str(path), b) == "auditd"
    batch = b.build()
    lines = path.read_text().splitlines()
    assert _decoded(batch) == _expected(lines)
    # the one record of no known shape in the RHEL 7 sample is "type=UNKNOWN[1329] msg=?"
    assert dict(dec.rejected) == ({"bad_record": 1} if name == "golibaudit_audit-rhel7.log" else {})
    assert all(batch.to_ecs(i)["host"]["os"]["type"] == "linux" for i in range(len(batch)))


def test_reordered_and_lost_records_give_the_same_events(corpus):
    base = corpus / "host_logs" / "linux_auditd"
    if not (base / "golibaudit_normal.log").is_file():
        pytest.skip("go-libaudit samples absent from the corpus")
    got = {}
    for name in ("golibaudit_normal.log", "golibaudit_out_of_order.log", "golibaudit_lost_messages.log"):
        dec, b = HostLogDecoder(), EndpointBatchBuilder()
        dec.decode_file(str(base / name), b)
        got[name] = _decoded(b.build())
    assert got["golibaudit_out_of_order.log"] == got["golibaudit_normal.log"]
    assert got["golibaudit_lost_messages.log"] == got["golibaudit_normal.log"]  # serial 58 renumbered 49
    assert ("network_connect", 1172, "/usr/bin/python2.7;58d1ccfb (deleted)", None, "169.254.169.254", 80) in got[
        "golibaudit_normal.log"]


@pytest.mark.parametrize("name", YAMLS)
def test_corpus_yaml_event_groups_decode(corpus, name):
    path = corpus / "host_logs" / "linux_auditd" / name
    if not path.is_file():
        pytest.skip(f"{path} absent from the corpus")
    cases = yaml.safe_load(path.read_text())["tests"]
    for case, text in cases.items():
        lines = [ln for ln in text.splitlines() if ln.strip()]
        dec, batch = _decode_lines(lines)
        assert not dec.rejected, case
        expected = _expected(lines)
        assert _decoded(batch) >= expected, case  # and accepts, which the hand reading leaves out
        if case == "EXECVE":
            e = batch.to_ecs(0)
            assert e["process"]["command_line"] == "uname -a" and e["user"]["name"] == "1001"
        if case == "accept syscall":  # the peer of an accepted connection is its source
            e = batch.to_ecs(0)
            assert e["event"]["action"] == "network_accept" and e["source"] == {"ip": "72.83.230.100", "port": 58140}
            assert e["network"]["direction"] == "ingress"


def _event(serial: int, *records: str, node: str = "") -> list[str]:
    head = f"node={node} " if node else ""
    return [f"{head}type={r.split(' ', 1)[0]} msg=audit(1764756000.250:{serial}): {r.split(' ', 1)[1]}"
            for r in records]


def _hex(text: str) -> str:
    return text.encode().hex().upper()


SYSCALL_CONNECT = ("SYSCALL arch=c000003e syscall=42 success=yes exit=0 a0=3 a1=7ffd a2=10 a3=0 items=0 ppid=900 "
                   'pid=901 auid=1000 uid=1000 gid=1000 euid=1000 comm="mosquitto_pub" exe="/usr/bin/mosquitto_pub" '
                   'key=(null)')


def test_eoe_emits_at_once_and_flush_emits_the_rest():
    dec, b = HostLogDecoder(), EndpointBatchBuilder()
    sa = "020022B3CB0071320000000000000000"  # AF_INET, port 8883, 203.0.113.50
    for line in _event(7, SYSCALL_CONNECT, f"SOCKADDR saddr={sa}", "EOE "):
        dec.feed_line(line.encode(), b)
    assert len(b) == 1
    e = b.build().to_ecs(0)
    assert e["destination"] == {"ip": "203.0.113.50", "port": 8883}
    assert e["process"]["name"] == "mosquitto_pub" and e["user"]["name"] == "1000"
    for line in _event(8, SYSCALL_CONNECT, f"SOCKADDR saddr={sa}"):  # no EOE, no PROCTITLE: waits
        dec.feed_line(line.encode(), b)
    assert len(b) == 1
    dec.finish(b)
    assert len(b) == 2


def test_execve_hex_and_split_arguments_proctitle_enriched_names_and_node():
    long_arg = "x" * 40 + " y"
    lines = _event(
        21,
        'SYSCALL arch=c000003e syscall=59 success=yes exit=0 a0=1 a1=2 a2=3 a3=4 items=2 ppid=900 pid=902 auid=1000 '
        f'uid=1000 comm="bash" exe={_hex("/usr/bin/ba sh")} key=(null)\x1dARCH=x86_64 SYSCALL=execve AUID="alice" '
        'UID="alice" GID="alice"',
        f'EXECVE argc=4 a0="mosquitto_pub" a1={_hex("-m")} a2_len=42 a2[0]={_hex(long_arg[:20])} '
        f'a2[1]={_hex(long_arg[20:])}',
        'EXECVE a3="-q"',
        f"PROCTITLE proctitle={_hex(chr(0).join(['mosquitto_pub', '-m', long_arg, '-q']))}",
        node="edge-gw-07",
    )
    dec, batch = _decode_lines(lines)
    assert len(batch) == 1  # evidently complete: every argument and PROCTITLE are there
    e = batch.to_ecs(0)
    assert shlex.split(e["process"]["command_line"]) == ["mosquitto_pub", "-m", long_arg, "-q"]
    assert e["process"]["executable"] == "/usr/bin/ba sh" and e["user"]["name"] == "alice"
    assert e["host"]["name"] == "edge-gw-07"
    # a connect by the same pid and executable later carries the exec's command line and entity id
    sa = "0A0022B3000000002001" + "0DB8" + "0" * 20 + "0001" + "00000000"
    more = _event(22, SYSCALL_CONNECT.replace("pid=901", "pid=902").replace(
        'exe="/usr/bin/mosquitto_pub"', f'exe={_hex("/usr/bin/ba sh")}'), f"SOCKADDR saddr={sa}", "EOE ",
        node="edge-gw-07")
    dec2, b2 = HostLogDecoder(), EndpointBatchBuilder()
    dec2.feed_lines([ln.encode() for ln in lines + more], b2)
    batch2 = b2.build()
    c = batch2.to_ecs(1)
    assert c["destination"] == {"ip": "2001:db8::1", "port": 8883}
    assert c["process"]["entity_id"] == batch2.to_ecs(0)["process"]["entity_id"]
    assert c["process"]["command_line"] == batch2.to_ecs(0)["process"]["command_line"]


def test_other_arches_resolved_names_and_socketcall():
    sa = "0200075B0A0000050000000000000000"  # AF_INET port 1883, 10.0.0.5
    aarch64 = _event(31, SYSCALL_CONNECT.replace("arch=c000003e syscall=42", "arch=c00000b7 syscall=203"),
                     f"SOCKADDR saddr={sa}", "EOE ")
    interpreted = _event(32, SYSCALL_CONNECT.replace("arch=c000003e syscall=42", "arch=x86_64 syscall=connect"),
                         f"SOCKADDR saddr={sa}", "EOE ")
    i386 = _event(33, SYSCALL_CONNECT.replace("arch=c000003e syscall=42 success=yes exit=0 a0=3",
                                              "arch=40000003 syscall=102 success=yes exit=0 a0=3"),
                  f"SOCKADDR saddr={sa}", "EOE ")
    s390x = _event(34, SYSCALL_CONNECT.replace("arch=c000003e syscall=42", "arch=80000016 syscall=362"),
                   "SOCKADDR saddr=0002075B0A0000050000000000000000", "EOE ")  # big-endian family
    dec, batch = _decode_lines(aarch64 + interpreted + i386 + s390x)
    assert not dec.rejected
    assert [batch.to_ecs(i)["destination"] for i in range(len(batch))] == [{"ip": "10.0.0.5", "port": 1883}] * 4


def test_sockets_without_an_ip_address_are_skipped_and_counted():
    unix = "01002F7661722F72756E2F6E7363642F736F636B657400"
    netlink = "100000000000000000000000"
    lines = (_event(41, SYSCALL_CONNECT, f"SOCKADDR saddr={unix}", "EOE ")
             + _event(42, SYSCALL_CONNECT, f"SOCKADDR saddr={netlink}", "EOE ")
             + _event(43, SYSCALL_CONNECT, "EOE "))
    dec, batch = _decode_lines(lines)
    assert len(batch) == 0 and not dec.rejected
    assert dec.skipped[("auditd", "af_unix")] == 1 and dec.skipped[("auditd", "af_netlink")] == 1
    assert dec.skipped[("auditd", "no_sockaddr")] == 1


def test_sockaddr_parses_both_byte_orders_and_rejects_truncation():
    assert sockaddr(bytes.fromhex("02000050A9FEA9FE0000000000000000")) == (2, "169.254.169.254", 80)
    assert sockaddr(bytes.fromhex("00020050A9FEA9FE0000000000000000"), little_endian=False)[1] == "169.254.169.254"
    with pytest.raises(auditd.HostLogError):
        sockaddr(bytes.fromhex("020000"))


def test_malformed_truncated_and_hostile_records_are_counted():
    lines = [
        "type=SYSCALL msg=audit(1764756000.250:5",  # truncated header
        "type=SOCKADDR msg=audit(1764756000.250:6): saddr=02ZZ",  # not hex
        "type=SOCKADDR msg=audit(1764756000.250:7): saddr=0200",  # truncated AF_INET
        "type=SOCKADDR msg=audit(1764756000.250:7): saddr=0200",
        "type=EXECVE msg=audit(1764756000.250:8): argc=x a0=\"a\"",
        "type=EXECVE msg=audit(1764756000.250:9): a0=" + "41" * (auditd.MAX_ARG_BYTES + 10),
        "type=SYSCALL msg=audit(17647560x0.250:10): arch=c000003e syscall=42",
    ]
    lines += _event(7, SYSCALL_CONNECT, "EOE ")
    dec, batch = _decode_lines(lines)
    assert len(batch) == 0
    assert dec.rejected["bad_record"] == 2  # the truncated header, and the time with a letter in it
    assert dec.rejected["bad_value"] == 2 and dec.rejected["too_large"] == 1
    assert dec.rejected["truncated"] == 1


def test_never_ending_serials_keep_memory_bounded():
    dec, b = HostLogDecoder(), EndpointBatchBuilder()
    dec.feed_line(b"type=USER_LOGIN msg=audit(1.000:1): pid=1", b)  # makes the assembler
    asm = dec._audit
    for serial in range(20_000):
        asm.feed(f"type=SYSCALL msg=audit(1764756000.250:{serial}): arch=c000003e syscall=0 pid=1".encode(), b)
        assert len(asm._pending) <= LAG + 1
    assert len(asm._done) <= auditd.MAX_DONE
    one = _event(99_999, *["PROCTITLE proctitle=41"] * 1)[0]
    for _ in range(auditd.MAX_EVENT_RECORDS + 5):
        asm.feed(one.replace("PROCTITLE proctitle=41", "EXECVE a0=\"x\"").encode(), b)
    assert dec.rejected["too_large"] == 1


def test_audisp_syslog_wrapped_records_decode():
    sa = "020022B3CB0071320000000000000000"
    lines = [f"Dec  3 10:00:00 edge-gw-07 audispd: {ln}" for ln in
             _event(51, SYSCALL_CONNECT, f"SOCKADDR saddr={sa}", "EOE ", node="edge-gw-07")]
    dec, batch = _decode_lines(lines)
    assert len(batch) == 1 and batch.to_ecs(0)["destination"]["port"] == 8883


def test_wazuh_single_line_records_are_counted_not_rejected(corpus):
    path = corpus / "host_logs" / "linux_auditd" / "wazuh_auditd.ini"
    if not path.is_file():
        pytest.skip(f"{path} absent from the corpus")
    lines = [ln.split(" pass = ", 1)[1] for ln in path.read_text().splitlines() if " pass = " in ln]
    dec, batch = _decode_lines(lines)
    assert not dec.rejected
    assert sum(dec.skipped.values()) + len(batch) >= len(lines) - sum(ln.startswith("type=EXECVE") for ln in lines)
    assert all(ENDPOINT_ACTIONS[int(a)] in ("process_start", "network_connect") for a in batch["action"])


_PIECES = [
    b"type=SYSCALL msg=audit(1.2:3): ", b"type=EXECVE msg=audit(1.2:3): ", b"type=SOCKADDR msg=audit(1.2:3): ",
    b"type=PROCTITLE msg=audit(1.2:3): ", b"type=EOE msg=audit(1.2:3):", b"node=h ", b"arch=c000003e ",
    b"arch=40000003 ", b"syscall=42 ", b"syscall=59 ", b"syscall=102 ", b"success=yes ", b"a0=3 ", b"argc=2 ",
    b'a0="x" ', b"a1=4142 ", b"a1_len=4 ", b"a1[0]=41 ", b"a1[9]=42 ", b"saddr=0200005001020304 ",
    b"saddr=0A00 ", b"proctitle=610062 ", b'exe="/bin/x" ', b"pid=7 ", b"\x1dUID=\"r\" SYSCALL=connect",
    b"saddr={ fam=inet laddr=1.2.3.4 lport=5 }", b"saddr={ fam=inet6 }",
]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.lists(st.sampled_from(_PIECES) | st.binary(max_size=20), max_size=8), max_size=12))
def test_fuzzed_records_never_raise(records):
    dec, b = HostLogDecoder(), EndpointBatchBuilder()
    for parts in records:
        dec.feed_line(b"".join(parts), b)
    dec.finish(b)
    batch = b.build()
    assert len(batch) == sum(dec.records.values())


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_fuzzed_bytes_never_raise(data):
    dec, b = HostLogDecoder(), EndpointBatchBuilder()
    asm = AuditAssembler(dec)
    asm.feed(b"type=SYSCALL msg=audit(1.2:3): " + data, b)
    asm.feed(b"type=SOCKADDR msg=audit(1.2:3): saddr=" + data.hex().encode(), b)
    asm.flush(b)
    assert len(b.build()) == sum(dec.records.values())


def test_numbers_too_large_for_the_columns_are_counted_not_stored():
    lines = (["type=SYSCALL msg=audit(99999999999999999999.250:62): arch=c000003e syscall=59 success=yes "
                'pid=99999999999999999999999 ppid=1 exe="/x"', "type=EOE msg=audit(99999999999999999999.250:62):"]
             + ["type=SYSCALL msg=audit(1764756000.250:63): arch=c000003e syscall=59 success=yes "
                'pid=99999999999999999999999 ppid=18446744073709551616 exe="/x"', "type=EOE msg=audit(1764756000.250:63):"])
    dec, batch = _decode_lines(lines)
    assert dec.rejected["bad_time"] == 2  # both records of the event dated past 2262
    assert len(batch) == 1 and batch.to_ecs(0)["process"].get("pid") is None  # unknown, not wrapped around


def test_the_eoe_after_an_evidently_complete_event_is_not_counted_late():
    sa = "020022B3CB0071320000000000000000"
    lines = _event(71, SYSCALL_CONNECT, f"SOCKADDR saddr={sa}", "PROCTITLE proctitle=6D6F7371", "EOE ")
    dec, b = HostLogDecoder(), EndpointBatchBuilder()
    dec.feed_line(lines[0].encode(), b)
    dec.feed_line(lines[1].encode(), b)
    assert len(b) == 0
    dec.feed_line(lines[2].encode(), b)  # PROCTITLE: the kernel's last record before EOE
    assert len(b) == 1
    dec.feed_line(lines[3].encode(), b)
    dec.feed_line(_event(71, "SOCKADDR saddr=" + sa)[0].encode(), b)  # a record of the same event, too late
    assert dict(dec.skipped) == {("auditd", "late_record"): 1}
