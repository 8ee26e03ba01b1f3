"""Syslog header parsing (RFC 5424, RFC 3164, headerless vendor forms), times, profile validation, session table,
counters, and hostile input (hypothesis)."""

from __future__ import annotations

import calendar
import re
import textwrap

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analytics.schema import FLAG_NO_COUNTERS, FLAG_NO_PORTS, FlowBatchBuilder, dataset_id
from collector.syslog.parser import (
    ProfileError,
    SyslogParser,
    load_profile,
    load_profiles,
    parse_header,
    stamp_to_ns,
)
from collector.syslog import parser as S
from collector.metrics import Counters

REF = calendar.timegm((2026, 11, 28, 12, 0, 0)) * 10**9


def ns(*t) -> int:
    return calendar.timegm(t) * 10**9


# ------------------------------------------------------------------ headers


def test_rfc5424_header():
    h = parse_header('<14>1 2019-11-14T09:37:51.184+01:00 SRX-GW1 RT_FLOW - RT_FLOW_SESSION_CREATE '
                     '[junos@2636.1.1.1.2.39 source-address="10.0.0.1" x="a\\"]b"] tail text')
    assert (h.kind, h.pri, h.host, h.app, h.msgid) == ("5424", 14, "SRX-GW1", "RT_FLOW", "RT_FLOW_SESSION_CREATE")
    assert h.stamp == (2019, 11, 14, 9, 37, 51, 184_000_000, 3600)
    assert h.sd == '[junos@2636.1.1.1.2.39 source-address="10.0.0.1" x="a\\"]b"]'
    assert h.msg == "tail text"
    assert stamp_to_ns(h.stamp, "UTC", REF) == ns(2019, 11, 14, 8, 37, 51) + 184_000_000


def test_rfc5424_nil_fields_and_bom():
    h = parse_header("<134>1 - - filterlog 5071 - - \ufeff100,,,1")
    assert (h.kind, h.stamp, h.host, h.app, h.sd, h.msg) == ("5424", None, "-", "filterlog", "", "100,,,1")


def test_rfc5424_no_offset_uses_profile_zone():
    h = parse_header("<14>1 2013-01-19T15:18:17.040 SRX100HM RT_FLOW - APPTRACK_SESSION_CREATE -")
    assert h.stamp == (2013, 1, 19, 15, 18, 17, 40_000_000, None)
    assert stamp_to_ns(h.stamp, "Europe/Paris", REF) == ns(2013, 1, 19, 14, 18, 17) + 40_000_000


def test_rfc3164_header_with_host_and_tag():
    h = parse_header("<134>Nov  8 12:37:34 pfSense filterlog[5071]: 5,,,1000102433,em0")
    assert (h.kind, h.pri, h.host, h.app, h.msg) == ("3164", 134, "pfSense", "filterlog", "5,,,1000102433,em0")
    assert h.stamp == (None, 11, 8, 12, 37, 34, 0, None)


def test_rfc3164_without_host():
    h = parse_header("Jan 22 18:34:00 filterlog: 65,,,0,vmx1")
    assert (h.host, h.app, h.msg) == ("", "filterlog", "65,,,0,vmx1")


def test_rfc3164_host_then_key_values():
    """A BSD header followed by key=value (FortiGate): 'date=...' is not taken for a host name."""
    h = parse_header("Dec 23 11:13:03 date=2011-07-24 time=10:13:03 devname=x")
    assert (h.host, h.app, h.msg) == ("", "", "date=2011-07-24 time=10:13:03 devname=x")


def test_asa_headerless_and_own_stamp():
    h = parse_header("%ASA-6-302014: Teardown TCP connection 1")
    assert (h.kind, h.stamp, h.host, h.msg) == ("none", None, "", "%ASA-6-302014: Teardown TCP connection 1")
    h = parse_header("Oct 03 2018 17:34:08: %ASA-4-106023: Deny udp")
    assert h.stamp == (2018, 10, 3, 17, 34, 8, 0, None)
    assert (h.host, h.msg) == ("", "%ASA-4-106023: Deny udp")
    h = parse_header("<166>Nov 28 2026 10:00:00 asa01 : %ASA-6-302013: Built")
    assert (h.pri, h.host, h.stamp[0]) == (166, "asa01", 2026)
    assert h.msg.endswith("%ASA-6-302013: Built")


def test_pri_without_header():
    h = parse_header("<189>date=2026-11-28 time=10:30:00 logid=1")
    assert (h.kind, h.pri, h.msg) == ("none", 189, "date=2026-11-28 time=10:30:00 logid=1")


def test_year_first_and_iso_stamps():
    h = parse_header("2018 Apr 09 16:03:37 inwazuhmgr->172.24.0.253 date=2018-04-09")
    assert (h.stamp, h.host) == ((2018, 4, 9, 16, 3, 37, 0, None), "inwazuhmgr->172.24.0.253")
    h = parse_header("2026-11-28T10:00:00.5+02:00 gw kernel: IN=eth0")
    assert h.stamp == (2026, 11, 28, 10, 0, 0, 500_000_000, 7200)
    assert (h.host, h.app, h.msg) == ("gw", "kernel", "IN=eth0")


def test_relayed_5424_behind_3164():
    h = parse_header("Sep 23 13:54:55 192.168.1.1 junos-flow: 2017-09-23T13:54:54.803Z sis-srx RT_FLOW - "
                     'RT_FLOW_SESSION_DENY [junos@2636 a="1"]')
    assert (h.kind, h.host, h.app, h.msgid, h.sd) == ("5424", "sis-srx", "RT_FLOW", "RT_FLOW_SESSION_DENY",
                                                       '[junos@2636 a="1"]')
    assert h.stamp == (2017, 9, 23, 13, 54, 54, 803_000_000, 0)


def test_year_inference_around_new_year():
    jan2 = ns(2027, 1, 2, 0, 0, 0)
    assert stamp_to_ns((None, 12, 31, 23, 0, 0, 0, None), "UTC", jan2) == ns(2026, 12, 31, 23, 0, 0)
    dec30 = ns(2026, 12, 30, 0, 0, 0)
    assert stamp_to_ns((None, 1, 1, 0, 0, 1, 0, None), "UTC", dec30) == ns(2027, 1, 1, 0, 0, 1)
    assert stamp_to_ns((None, 6, 1, 0, 0, 0, 0, None), "UTC", dec30) == ns(2026, 6, 1, 0, 0, 0)


def test_profile_zone_and_per_sender_override(tmp_path):
    line = (b"Jul  1 12:00:00 fw filterlog: "
            b"5,,,1,em0,match,block,in,4,0x0,,64,1,0,none,17,udp,60,10.0.0.1,10.0.0.2,1,2,40")
    b = FlowBatchBuilder(4)
    SyslogParser(Counters(), reference_ns=REF).feed_line(line, (0, 1), 0, b)
    SyslogParser(Counters(), reference_ns=REF, timezones={"fw": "Europe/Paris"}).feed_line(line, (0, 1), 0, b)
    batch = b.build()
    assert batch.end_ns.tolist() == [ns(2026, 7, 1, 12, 0, 0), ns(2026, 7, 1, 10, 0, 0)]  # CEST is UTC+2


# ------------------------------------------------------------------ rows, counters, sessions


def test_row_fields_dataset_exporter_flags():
    b = FlowBatchBuilder(4)
    c = Counters()
    p = SyslogParser(c, reference_ns=REF)
    line = (b"%ASA-4-106023: Deny icmp src outside:192.0.2.200 dst inside:10.1.1.50 (type 8, code 0) "
            b"by access-group \"a\"")
    assert p.feed_line(line, (0, 0xFFFF_C000_0201), REF, b) == 1
    batch = b.build()
    assert batch.dataset[0] == dataset_id("syslog.cisco_asa")
    assert (int(batch.exporter_hi[0]), int(batch.exporter_lo[0])) == (0, 0xFFFF_C000_0201)
    assert batch.flags[0] & FLAG_NO_COUNTERS and batch.flags[0] & FLAG_NO_PORTS
    assert c.get("brokerwatch_decoder_records_total", ("syslog.cisco_asa",)) == 1


def test_unknown_and_oversized_lines_are_counted():
    c = Counters()
    p = SyslogParser(c, reference_ns=REF, max_line=256)
    b = FlowBatchBuilder(4)
    assert p.feed_line(b"<13>Nov 28 10:00:00 host app: hello world", (0, 0), 0, b) == 0
    assert c.get("brokerwatch_syslog_unmatched_total", ("unknown",)) == 1
    assert c.get("brokerwatch_decoder_errors_total", ("syslog", "unmatched")) == 1
    long = b"Nov 28 11:01:00 gw kernel: DROP IN=eth1 OUT= SRC=10.9.0.5 DST=198.51.100.80 LEN=60 PROTO=TCP SPT=1 DPT=2 "
    assert p.feed_line(long + b"X" * 1000, (0, 0), 0, b) == 1  # cut to 256 bytes, still parsed
    assert c.get("brokerwatch_syslog_oversized_total", ("line",)) == 1
    assert p.feed_line(b"   \r\n", (0, 0), 0, b) == 0  # blank: not a message


def test_datagram_with_several_lines():
    p = SyslogParser(Counters(), reference_ns=REF)
    b = FlowBatchBuilder(4)
    line = b"Nov 28 11:01:00 gw kernel: DROP IN=eth1 OUT= SRC=10.9.0.5 DST=198.51.100.80 LEN=60 PROTO=TCP SPT=1 DPT=2"
    assert p.feed_datagram(line + b"\n" + line + b"\n", (0, 0), 0, b) == 2


def _built(i: int) -> bytes:
    return (f"%ASA-6-302013: Built outbound TCP connection {i} for outside:198.51.100.20/8883 (198.51.100.20/8883) "
            f"to inside:10.1.1.50/{10000 + i} (203.0.113.5/{10000 + i})").encode()


def test_session_table_is_bounded_and_evictions_counted():
    c = Counters()
    p = SyslogParser(c, reference_ns=REF, max_sessions=100)
    b = FlowBatchBuilder(4)
    for i in range(250):
        assert p.feed_line(_built(i), (0, 0), REF, b) == 0
    assert p.open_sessions() == 100
    assert c.get("brokerwatch_syslog_sessions_total", ("cisco_asa", "start_evicted_without_end")) == 150
    # an evicted start's teardown still makes a record (oriented by port), a kept one is joined
    td = ("%ASA-6-302014: Teardown TCP connection {i} for outside:198.51.100.20/8883 to inside:10.1.1.50/{p} "
          "duration 0:00:10 bytes 10")
    assert p.feed_line(td.format(i=0, p=10000).encode(), (0, 0), REF, b) == 1
    assert p.feed_line(td.format(i=249, p=10249).encode(), (0, 0), REF, b) == 1
    assert c.get("brokerwatch_syslog_sessions_total", ("cisco_asa", "joined")) == 1
    assert b.build().dst_port.tolist() == [8883, 8883]


def test_sessions_are_per_sender():
    c = Counters()
    p = SyslogParser(c, reference_ns=REF)
    b = FlowBatchBuilder(4)
    p.feed_line(_built(1), (0, 1), REF, b)
    td = (b"%ASA-6-302014: Teardown TCP connection 1 for outside:198.51.100.20/8883 to inside:10.1.1.50/10001 "
          b"duration 0:00:10 bytes 10")
    p.feed_line(td, (0, 2), REF, b)  # another firewall's connection 1
    assert c.get("brokerwatch_syslog_sessions_total", ("cisco_asa", "joined")) == 0
    assert p.open_sessions() == 1


def test_emit_open_profile_option(tmp_path):
    text = (tmp_path / "x.yaml")
    text.write_text(textwrap.dedent("""
        vendor: opener
        samples: [none]
        emit_open: true
        recognise: {contains: ["OPEN "]}
        fields: {src_ip: s, dst_ip: d, proto: p}
        messages:
          - kind: open
            extract: [{type: kv}]
            session: [id]
    """))
    p = SyslogParser(Counters(), profiles=[load_profile(text)], reference_ns=REF)
    b = FlowBatchBuilder(4)
    assert p.feed_line(b"OPEN s=10.0.0.1 d=10.0.0.2 p=tcp id=1", (0, 0), REF, b) == 1
    assert p.open_sessions() == 0


# ------------------------------------------------------------------ profile validation


def _profile(tmp_path, body: str):
    path = tmp_path / "bad.yaml"
    path.write_text(textwrap.dedent(body))
    return path


GOOD = """
    vendor: v
    samples: [s]
    recognise: {contains: ["x"]}
    fields: {src_ip: a, dst_ip: b, proto: c}
    messages: [{kind: flow}]
"""


@pytest.mark.parametrize("change, key", [
    (("vendor: v", "vendor: Bad-Name"), "vendor"),
    (("samples: [s]", "samples: []"), "samples"),
    (("recognise: {contains: [\"x\"]}", "recognise: {regex: '(unclosed'}"), "recognise.regex"),
    (("recognise: {contains: [\"x\"]}", "recognise: {contain: [x]}"), "recognise.contain"),
    (("fields: {src_ip: a, dst_ip: b, proto: c}", "fields: {src_ip: a, dst_ip: b}"), "messages[0].fields.proto"),
    (("fields: {src_ip: a, dst_ip: b, proto: c}", "fields: {src_ip: a, dst_ip: b, proto: c, colour: d}"),
     "messages[0].fields.colour"),
    (("messages: [{kind: flow}]", "messages: [{kind: later}]"), "messages[0].kind"),
    (("messages: [{kind: flow}]", "messages: [{kind: flow, action: maybe}]"), "messages[0].action"),
    (("messages: [{kind: flow}]", "messages: [{kind: flow, extract: [{type: xml}]}]"),
     "messages[0].extract[0].type"),
    (("samples: [s]", "samples: [s]\ntimezone: Mars/Olympus"), "timezone"),
    (("samples: [s]", "samples: [s]\napp_protocols: {mqtt: mqtt5}"), "app_protocols.mqtt"),
    (("samples: [s]", "samples: [s]\nshape: round"), "shape"),
])
def test_bad_profile_names_file_and_key(tmp_path, change, key):
    path = _profile(tmp_path, GOOD.replace("    ", "").replace(*change))
    with pytest.raises(ProfileError) as err:
        load_profile(path)
    assert err.value.key == key
    assert str(err.value).startswith(f"{path}: {key}: ")


def test_good_profile_loads_and_shipped_profiles_are_valid(tmp_path):
    assert load_profile(_profile(tmp_path, GOOD)).vendor == "v"
    vendors = {p.vendor for p in load_profiles()}
    assert vendors == {"cisco_asa", "panos", "fortigate", "juniper_srx", "pfsense", "iptables"}


def test_duplicate_vendor_is_an_error(tmp_path):
    for name in ("a.yaml", "b.yaml"):
        (tmp_path / name).write_text(textwrap.dedent(GOOD))
    with pytest.raises(ProfileError, match="already defined"):
        load_profiles(tmp_path)


# ------------------------------------------------------------------ hostile input


_PARSER = SyslogParser(Counters(), reference_ns=REF, max_sessions=1000)

_PIECES = [b"<134>", b"<14>1 ", b"2026-11-28T10:00:00Z ", b"Nov 28 10:00:00 ", b"%ASA-6-302014: ", b"%ASA-6-302013: ",
           b"Teardown TCP connection 1 for a:1.2.3.4/1 to b:5.6.7.8/99999 duration 9:99:99 bytes 1 ",
           b"1,2026/11/28 10:00:00,0,TRAFFIC,end,", b"type=traffic logid=1 srcip=1.1.1.1 dstip=::1 proto=300 ",
           b"sentbyte=-1 eventtime=99999999999999999999 ", b"RT_FLOW_SESSION_CLOSE [junos@1 ", b"filterlog: 4,6,",
           b"IN= OUT= SRC=1.1.1.1 DST=2.2.2.2 LEN=x PROTO=TCP SPT=70000 DPT=1 ", b"\xff\xfe", b"\x00", b"\"", b",",
           b"[", b"]", b"=", b" ", b"\n"]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(_PIECES) | st.binary(max_size=40), max_size=12))
def test_random_lines_never_raise(parts):
    b = FlowBatchBuilder(16)
    line = b"".join(parts)
    n = _PARSER.feed_line(line, (0, 0), 0, b) + _PARSER.feed_datagram(line, (0, 0), REF, b)
    assert n == len(b)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=3000))
def test_random_bytes_never_raise(data):
    b = FlowBatchBuilder(16)
    assert _PARSER.feed_datagram(data, (0, 0), REF, b) == len(b)


def test_impossible_date_in_a_field_falls_back_to_the_next_time_source():
    """PAN-OS start time '2026/13/01' is not a date: the generated time (column 6) is the end, start = end - 60 s."""
    line = ("1,2026/11/28 11:21:00,0132,TRAFFIC,end,2561,2026/11/28 11:21:00,10.5.0.21,198.51.100.51,,,r,,,amqp,vsys1,"
            "t,u,e1,e2,fwd,2026/11/28 11:21:00,70002,1,50124,5671,0,0,0x0,tcp,allow,5000,2000,3000,30,"
            "2026/13/01 00:00:00,60,any").encode()
    b = FlowBatchBuilder(4)
    assert SyslogParser(Counters(), reference_ns=REF).feed_line(line, (0, 0), 0, b) == 1
    batch = b.build()
    assert (int(batch.start_ns[0]), int(batch.end_ns[0])) == (ns(2026, 11, 28, 11, 20, 0), ns(2026, 11, 28, 11, 21, 0))


# The key=value pattern as first written: the twin of the linear one in syslog.py (same matches on any text).
_KV_QUADRATIC = re.compile(r'([A-Za-z_][\w.\-]*)=("[^"\\]*(?:\\.[^"\\]*)*"|\S*)')


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet='ab_Z09.-=" \\\t\u00e9\u0663xy=', max_size=40))
def test_linear_key_value_pattern_equals_the_first_one(text):
    assert S._KV.findall(text) == _KV_QUADRATIC.findall(text)


def test_a_long_run_of_key_characters_without_equals_is_no_pair():
    """The first pattern retried every position of such a run (seconds of CPU per 16 KiB line); no pair either way."""
    assert S._KV.findall("a" * 16384 + " b=1") == [("b", "1")]
