"""The running service over loopback: IPFIX over TCP framing, template state kept across a restart, clean stops."""

from __future__ import annotations

import json
import socket

import pytest

from collector.cli import main
from collector.pcap import datagrams
from tests.live import Running, scrape_until

pytestmark = pytest.mark.live


def _expected(paths, capsys) -> dict:
    assert main(["decode", "--count", *map(str, paths)]) == 0
    return json.loads(capsys.readouterr().out)


def test_ipfix_over_tcp_in_odd_chunks_and_a_broken_stream(tmp_path, corpus, capsys):
    files = [corpus / "flow_pcaps" / "akvorado_ipfix_templates_ipfixprobe.pcap",
             corpus / "flow_pcaps" / "akvorado_ipfix_data_ipfixprobe.pcap"]
    expected = _expected(files, capsys)
    assert expected["records"].get("ipfix", 0) > 0
    stream = b"".join(d.payload for f in files for d in datagrams(str(f)))
    svc = Running(tmp_path)
    try:
        with socket.create_connection(("127.0.0.1", svc.ports["ipfix"])) as c:
            for i in range(0, len(stream), 7):  # messages split across reads
                c.sendall(stream[i:i + 7])
        with socket.create_connection(("127.0.0.1", svc.ports["ipfix"])) as c:
            c.sendall(b"\x00\x09\x00\x10" + b"\x00" * 12)  # a v9 header on the IPFIX TCP port: closed, counted
            c.recv(10)  # the service closes the connection
    finally:
        result = svc.stop()
    assert result["records"] == expected["records"]
    assert result["rejected"] == {"ipfix.tcp_bad_version": 1}


def test_templates_survive_a_restart(tmp_path, corpus, capsys):
    template = corpus / "flow_pcaps" / "akvorado_v9_template.pcap"
    data = corpus / "flow_pcaps" / "akvorado_v9_data.pcap"
    expected = _expected([template, data], capsys)
    assert expected["records"] == {"netflow.v9": 4}
    state = tmp_path / "state" / "decoders.json"

    def send(svc, path):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for d in datagrams(str(path)):
            s.sendto(d.payload, ("127.0.0.1", svc.ports["netflow"]))

    first = Running(tmp_path, str(state))
    send(first, template)
    assert first.stop()["records"] == {}
    assert state.exists()
    second = Running(tmp_path, str(state))  # restarted: only data arrives, and it decodes
    send(second, data)
    assert second.stop()["records"] == {"netflow.v9": 4}
    cold = Running(tmp_path, "")  # without the state file the same data waits for its template
    send(cold, data)
    assert cold.stop()["records"] == {}


def test_corrupt_state_file_starts_cold(tmp_path):
    state = tmp_path / "decoders.json"
    state.write_text("{not json")
    svc = Running(tmp_path, str(state))
    assert any("ignoring decoder state" in line for line in svc.log)
    assert svc.stop()["records"] == {}
    assert json.loads(state.read_text())["version"] == 1  # rewritten at stop


def test_metrics_endpoint_serves_the_counters(tmp_path):
    import re

    from tests.collector.flows.test_netflow_v5 import REC, v5_datagram
    from tests.live import _free_port

    mport = _free_port()
    svc = Running(tmp_path, extra=("--metrics", f"127.0.0.1:{mport}"))
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.sendto(v5_datagram([REC, REC], seq=0), ("127.0.0.1", svc.ports["netflow"]))
        s.sendto(v5_datagram([REC], seq=10), ("127.0.0.1", svc.ports["netflow"]))  # 8 flows lost in between
        s.sendto(v5_datagram([REC], count=3), ("127.0.0.1", svc.ports["netflow"]))  # truncated
        text = scrape_until(mport, lambda t: 'reason="truncated"' in t, 30)  # decoded within a tick
    finally:
        svc.stop()
    assert 'brokerwatch_decoder_errors_total{decoder="netflow.v5",reason="truncated"} 1.0' in text
    assert 'brokerwatch_decoder_records_total{decoder="netflow.v5"} 3.0' in text
    assert 'brokerwatch_netflow_v5_sequence_lost_total{exporter="127.0.0.1"} 8.0' in text
    # prometheus-client's histogram of decode time: each block decoded is one observation
    m = re.search(r'^brokerwatch_decode_batch_seconds_count (\d+)\.0$', text, re.M)
    assert m and int(m.group(1)) >= 1
    assert 'brokerwatch_decode_batch_seconds_bucket{le="+Inf"} ' + m.group(1) + ".0" in text


def test_a_full_channel_drops_and_counts_and_the_counts_add_up(tmp_path):
    """With no room towards the analytics process every batch is dropped on the receive side, counted, and the
    summary's counts add up: datagrams = decoded + rejected, records decoded = delivered + dropped."""
    import re

    from tests.collector.flows.test_netflow_v5 import REC, v5_datagram

    svc = Running(tmp_path, extra=("--channel-mb", "0"))
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for i in range(50):
        s.sendto(v5_datagram([REC] * 20, seq=20 * i), ("127.0.0.1", svc.ports["netflow"]))
    s.sendto(v5_datagram([REC], count=3), ("127.0.0.1", svc.ports["netflow"]))  # truncated: rejected
    s.sendto(b"\x00\x05", ("127.0.0.1", svc.ports["netflow"]))  # too short to be anything: rejected
    result = svc.stop()
    m = re.search(r"stopped after (\d+) datagrams; .*; dropped (\d+); delivered (\d+); kernel drops (-?\d+); "
                  r"alerts (\d+)", result["stderr"])
    datagrams, dropped, delivered, kernel, alerts = map(int, m.groups())
    assert datagrams == 52 and sum(result["rejected"].values()) == 2
    assert result["records"] == {"netflow.v5": 1000}
    assert (dropped, delivered, alerts) == (1000, 0, 0)
    assert kernel in (0, -1)


def test_metrics_include_the_analytics_process_counters(tmp_path):
    """The analytics process reports its counters after each pass; worker 0 serves them with its own."""
    import re
    import urllib.request

    from tests.collector.flows.test_netflow_v5 import REC, v5_datagram
    from tests.live import _free_port

    mport = _free_port()
    svc = Running(tmp_path, extra=("--metrics", f"127.0.0.1:{mport}", "--cadence", "0.2"))
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.sendto(v5_datagram([REC] * 7, seq=0), ("127.0.0.1", svc.ports["netflow"]))
        rows_of = lambda t: (re.findall(r"^brokerwatch_analytics_rows_total (\d+)\.0$", t, re.M) or [None])[0]  # noqa: E731
        text = scrape_until(mport, lambda t: rows_of(t) == "7")  # a pass every 0.2 s
        rows = rows_of(text)
        health = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{mport}/healthz", timeout=5).read())
    finally:
        svc.stop()
    assert rows == "7", text
    assert re.search(r"^brokerwatch_analytics_passes_total [1-9]\d*\.0$", text, re.M)
    assert "brokerwatch_analytics_window_evicted_rows_total 0.0" in text
    # the pass-time histogram measured in the analytics process, served by worker 0
    m = re.search(r"^brokerwatch_analytics_pass_seconds_count (\d+)\.0$", text, re.M)
    assert m and int(m.group(1)) >= 1
    assert health["ok"] is True and health["listeners"]["ok"] and health["analytics"]["alive"]
    assert health["listeners"]["udp_sockets"] == 3 and health["workers"]["alive"] == 1
