"""From a real exporter's datagrams to a DET0002 alert: offline replay, and the live service over loopback UDP.

The fixture is softflowd's NetFlow v5 export of the "beacon world" traffic (fixtures/README.md): one host beacons
over MQTT to an outside broker among benign traffic. Both paths must alert on the labelled C2 pair and nothing else.
"""

from __future__ import annotations

import json
import socket
import subprocess

import pytest

from collector.cli import main
from collector.pcap import datagrams
from tests.conftest import FIXTURES, require_tool
from tests.live import Running

V5_FIXTURE = FIXTURES / "netflow_v5" / "softflowd_beacon_world.pcap"
LABELS = FIXTURES / "traffic" / "beacon_world.labels.json"


def labelled_pairs(label: str) -> set[tuple[str, str, int]]:
    data = json.loads(LABELS.read_text())
    return {(p["src"], p["dst"], p["dport"]) for p in data["pairs"] if p["label"] == label}


def alert_pairs(lines: list[str]) -> set[tuple[str, str, str, int]]:
    out = set()
    for line in lines:
        a = json.loads(line)
        assert a["event"]["kind"] == "alert" and a["rule"]["ruleset"] == "DET0002"
        assert a["threat"]["technique"]["id"] == ["T1071.005"]
        out.add((a["rule"]["id"], a["source"]["ip"], a["destination"]["ip"], a["destination"]["port"]))
    return out


def test_replay_alerts_on_the_beacon_and_nothing_else(tmp_path, capsys):
    out = tmp_path / "alerts.jsonl"
    assert main(["replay", str(V5_FIXTURE), "--alerts", str(out)]) == 0
    lines = out.read_text().splitlines()
    c2 = labelled_pairs("c2")
    assert alert_pairs(lines) == {("AN0005", *pair) for pair in c2}
    alert = json.loads(lines[-1])
    ev = alert["brokerwatch"]["evidence"]
    # The generator's beacon: interval uniform in [42, 60] s with 10% missed beats.
    assert 42 <= ev["period_s"] <= 60
    assert ev["events"] >= 100
    assert alert["network"]["protocol"] == "mqtt"
    assert "BrokerAllowList" in ev["fired"] and "ProtocolPortList" in ev["fired"]


@pytest.mark.live
def test_live_run_over_loopback_udp_sees_the_same_alert(tmp_path):
    svc = Running(tmp_path, extra=("--cadence", "0.5"))
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sent = 0
    for d in datagrams(str(V5_FIXTURE)):
        sender.sendto(d.payload, ("127.0.0.1", svc.ports["netflow"]))
        sent += 1
    result = svc.stop()  # SIGTERM: the service drains its sockets, evaluates and flushes on the way out
    assert f"stopped after {sent} datagrams" in result["stderr"]
    expected = {("AN0005", *pair) for pair in labelled_pairs("c2")}
    assert alert_pairs((tmp_path / "alerts.jsonl").read_text().splitlines()) == expected
    assert alert_pairs(result["stdout"].splitlines()) == expected


@pytest.mark.live
@pytest.mark.parametrize("version, dataset", [(9, "netflow.v9"), (10, "ipfix")])
def test_softflowd_exporting_to_a_running_service(tmp_path, version, dataset):
    """A real exporter talking to the service directly: softflowd reads the beacon-world traffic and exports it."""
    softflowd = require_tool("softflowd")
    svc = Running(tmp_path, extra=("--cadence", "0.5"))
    port = svc.ports["netflow"] if version == 9 else svc.ports["ipfix"]
    try:
        # The fixtures' settings (fixtures/make_fixtures.sh); no -c: see the note there about softflowd 1.1.0.
        subprocess.run(["timeout", "120", softflowd, "-d", "-r", str(FIXTURES / "traffic" / "beacon_world.pcap"),
                        "-a", "-n", f"127.0.0.1:{port}", "-v", str(version), "-m", "65536", "-t", "tcp=3600",
                        "-t", "tcp.fin=60", "-t", "tcp.rst=60", "-t", "udp=300", "-t", "maxlife=1800",
                        "-t", "expint=60"], check=True, capture_output=True)
    finally:
        result = svc.stop()
    # softflowd's captured export of the same traffic holds 600 records (fixtures/README.md).
    assert result["records"] == {dataset: 600}
    assert result["rejected"] == {}
    expected = {("AN0005", *pair) for pair in labelled_pairs("c2")}
    assert alert_pairs((tmp_path / "alerts.jsonl").read_text().splitlines()) == expected


def test_the_same_beacon_in_firewall_logs_raises_the_same_alert(tmp_path):
    """fixtures/syslog/asa_beacon_world.log is the ASA connection log of the same traffic (gen_asa_from_traffic.py)."""
    log = FIXTURES / "syslog" / "asa_beacon_world.log"
    alerts = {}
    for name, path in (("netflow", V5_FIXTURE), ("syslog", log)):
        out = tmp_path / f"{name}.jsonl"
        assert main(["replay", str(path), "--alerts", str(out)]) == 0
        alerts[name] = out.read_text().splitlines()
    assert alert_pairs(alerts["syslog"]) == alert_pairs(alerts["netflow"]) == {
        ("AN0005", *pair) for pair in labelled_pairs("c2")}
    ids = {name: {json.loads(line)["event"]["id"] for line in lines} for name, lines in alerts.items()}
    assert ids["syslog"] == ids["netflow"]  # one alert per (analytic, pair, window), whatever the source


@pytest.mark.live
def test_a_stop_runs_the_final_pass_and_flushes_its_alerts(tmp_path):
    """With an hour between passes the only pass is the one the stop runs: its alert must reach the file."""
    svc = Running(tmp_path, extra=("--cadence", "3600"))
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for d in datagrams(str(V5_FIXTURE)):
        sender.sendto(d.payload, ("127.0.0.1", svc.ports["netflow"]))
    result = svc.stop()
    expected = {("AN0005", *pair) for pair in labelled_pairs("c2")}
    assert alert_pairs((tmp_path / "alerts.jsonl").read_text().splitlines()) == expected
    assert "alerts 1; analytics passes 0" in result["stderr"]


@pytest.mark.live
def test_receive_workers_share_the_ports_and_a_killed_one_is_restarted(tmp_path):
    import os
    import re
    import signal

    svc = Running(tmp_path, extra=("--workers", "2", "--cadence", "0.5"))
    pid = int(re.search(r"receive worker 1 ready \(pid (\d+)\)", "".join(svc.log)).group(1))
    payloads = [d.payload for d in datagrams(str(V5_FIXTURE))]

    def send_from_many_ports() -> None:  # 16 exporters: the kernel's hash spreads them over both workers
        for _ in range(16):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            for p in payloads:
                s.sendto(p, ("127.0.0.1", svc.ports["netflow"]))
            s.close()

    send_from_many_ports()
    os.kill(pid, signal.SIGKILL)
    while True:  # worker 0 notices and starts a new worker 1 on the same ports (pytest-timeout bounds a failure)
        line = svc.proc.stderr.readline()
        assert line, "".join(svc.log)
        svc.log.append(line)
        m = re.search(r"receive worker 1 ready \(pid (\d+)\)", line)
        if m and int(m.group(1)) != pid:
            break
    send_from_many_ports()
    result = svc.stop()
    records = {who: ast_records(line) for who, line in re.findall(r"brokerwatch: (receive worker 1 stopped|stopped) "
                                                                   r"after (.*)", result["stderr"])}
    assert "exited with code -9; restarting it" in result["stderr"]
    per_send = 16 * 600  # records in one send_from_many_ports
    assert records["receive worker 1 stopped"] > 0  # the new worker took its share of the second send
    assert per_send <= records["receive worker 1 stopped"] + records["stopped"] <= 2 * per_send
    expected = {("AN0005", *pair) for pair in labelled_pairs("c2")}
    assert alert_pairs((tmp_path / "alerts.jsonl").read_text().splitlines()) == expected


def ast_records(summary: str) -> int:
    """Records decoded according to one summary line."""
    import ast
    import re

    return sum(ast.literal_eval(re.search(r"records (\{.*?\})", summary).group(1)).values())
