"""The endpoint event batch (analytics/endpoint.py) and the passive-DNS map (analytics/dnsmap.py)."""

import numpy as np

from analytics.dnsmap import PassiveDNS, domain_matches
from analytics.endpoint import (DNS_QUERY, EFLAG_HAS_DST, EFLAG_HAS_SRC, NETWORK_CONNECT, OS_ID, PROCESS_START,
                                EndpointBatch, EndpointBatchBuilder, address_words, process_name)
from analytics.schema import ip_to_words


def test_builder_rows_and_their_ecs_form():
    b = EndpointBatchBuilder()
    b.add(1_700_000_000_123_456_789, NETWORK_CONNECT, OS_ID["windows"], "sysmon", host="ws1", pid=42,
          executable=r"C:\Windows\System32\cmd.exe", src_ip="10.1.1.10", src_port=50000, dst_ip="2001:db8::1",
          dst_port=8883, proto=6, code=3, user="CORP\\a")
    b.add(1_700_000_001_000_000_000, PROCESS_START, OS_ID["linux"], "auditd", host="l", pid=7, ppid=1,
          executable="/usr/bin/nc", command_line="nc 1.2.3.4 1883")
    batch = b.build()
    assert len(batch) == 2 and batch.rows.dtype.names[0] == "ts_ns"
    assert batch.rows["flags"][0] == EFLAG_HAS_SRC | EFLAG_HAS_DST and batch.rows["flags"][1] == 0
    e = batch.to_ecs(0)
    assert e["@timestamp"] == "2023-11-14T22:13:20.123456Z"
    assert e["event"] == {"dataset": "sysmon", "action": "network_connect", "code": "3"}
    assert e["process"] == {"executable": r"C:\Windows\System32\cmd.exe", "name": "cmd.exe", "pid": 42}
    assert e["source"] == {"ip": "10.1.1.10", "port": 50000}
    assert e["destination"] == {"ip": "2001:db8::1", "port": 8883}
    assert e["user"] == {"name": "CORP\\a"} and e["host"] == {"name": "ws1", "os": {"type": "windows"}}
    p = batch.to_ecs(1)
    assert p["process"]["command_line"] == "nc 1.2.3.4 1883" and p["process"]["parent"] == {"pid": 1}
    assert "source" not in p and "destination" not in p


def test_bad_addresses_and_ports_are_left_unknown():
    b = EndpointBatchBuilder()
    b.add(0, NETWORK_CONNECT, 0, "sysmon", src_ip="not-an-ip", dst_ip="999.1.1.1", dst_port=70000, src_port=-3)
    r = b.build().rows[0]
    assert r["flags"] == 0 and r["dst_port"] == 0 and r["src_port"] == 0


def test_address_words_take_the_forms_host_logs_write():
    v4 = ip_to_words("192.0.2.1")
    assert address_words("192.0.2.1") == address_words("::ffff:192.0.2.1") == v4
    assert address_words("[2001:db8::1]") == address_words("2001:db8::1%eth0") == ip_to_words("2001:db8::1")
    assert address_words("-") is None and address_words("") is None


def test_process_name_of_either_path_style():
    assert process_name(r"C:\x\y\powershell.exe") == "powershell.exe"
    assert process_name("/usr/bin/curl") == "curl" and process_name("curl") == "curl"


def test_concat_remaps_string_ids():
    a, b = EndpointBatchBuilder(), EndpointBatchBuilder()
    a.add(1, PROCESS_START, 1, "sysmon", host="h1", executable="/a")
    b.add(2, PROCESS_START, 2, "auditd", host="h2", executable="/b")
    b.add(3, PROCESS_START, 2, "auditd", host="h1", executable="/a")
    both = EndpointBatch.concat([a.build(), EndpointBatch.empty(), b.build()])
    assert [both.text("host_id", i) for i in range(3)] == ["h1", "h2", "h1"]
    assert [both.text("exe_id", i) for i in range(3)] == ["/a", "/b", "/a"]
    assert both.rows["host_id"][0] == both.rows["host_id"][2]


def test_passive_dns_is_bounded_and_follows_the_latest_answer():
    d = PassiveDNS(max_entries=3)
    for i in range(5):
        d.add(f"n{i}.example.", ip_to_words(f"192.0.2.{i}"), i)
    assert len(d) == 3 and d.evicted == 2 and d.name_of(ip_to_words("192.0.2.0")) == ""
    d.add("other.example", ip_to_words("192.0.2.4"), 9)
    assert d.name_of(ip_to_words("192.0.2.4")) == "other.example"
    assert d.addresses_of("n4.example") == set() and d.addresses_of("OTHER.example.") == {ip_to_words("192.0.2.4")}
    b = EndpointBatchBuilder()
    b.add(1, DNS_QUERY, 1, "sysmon", domain="x.example", dst_ip="198.51.100.1")
    rows = b.build().rows
    d.add_rows(["x.example"], rows["dst_hi"], rows["dst_lo"], rows["ts_ns"])
    assert d.name_of(ip_to_words("198.51.100.1")) == "x.example"


def test_domain_matches_suffixes_and_exact_names():
    entries = (".duckdns.org", "=broker.hivemq.com")
    assert domain_matches("a.b.DUCKDNS.org.", entries) == ".duckdns.org"
    assert domain_matches("duckdns.org", entries) == ".duckdns.org"
    assert domain_matches("broker.hivemq.com", entries) == "broker.hivemq.com"
    assert domain_matches("x.broker.hivemq.com", entries) == "" and domain_matches("", entries) == ""
    assert domain_matches("notduckdns.org", entries) == ""


def test_empty_batch():
    e = EndpointBatchBuilder().build()
    assert len(e) == 0 and e.rows.dtype == EndpointBatch.empty().rows.dtype
    assert np.array_equal(EndpointBatch.concat([]).rows, e.rows)
