"""The live service takes host logs: JSON lines on the host-log port, syslog-wrapped audit records on the syslog port.

The scenario worlds of fixtures/endpoint are sent to a running `brokerwatch run` the way forwarders would send them
(Winlogbeat/Logstash JSON lines over TCP; audisp-syslog lines over UDP syslog), with softflowd's export of the same
traffic on the NetFlow port. The stop's final pass must raise what `replay` raises on the same files.
"""

from __future__ import annotations

import json
import socket

import pytest

from collector.pcap import datagrams
from tests.conftest import FIXTURES
from tests.live import Running

WORLDS = FIXTURES / "endpoint"


def _send_flows(port: int, world: str) -> int:
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    n = 0
    for d in datagrams(str(WORLDS / world / "softflowd_v9.pcap")):
        sender.sendto(d.payload, ("127.0.0.1", port))
        n += 1
    sender.close()
    return n


@pytest.mark.live
def test_host_logs_on_their_port_and_wrapped_in_syslog_raise_the_endpoint_analytics(tmp_path):
    svc = Running(tmp_path, extra=("--cadence", "3600"))
    try:
        with socket.create_connection(("127.0.0.1", svc.ports["hostlog"])) as tcp:
            tcp.sendall((WORLDS / "windows_powershell" / "winlogbeat_sysmon.ndjson").read_bytes())
        syslog = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for line in (WORLDS / "linux_mosquitto_pub" / "audit.log").read_bytes().splitlines():
            syslog.sendto(b"<110>Jan 20 08:00:00 lnx-20 audispd: " + line, ("127.0.0.1", svc.ports["syslog"]))
        syslog.close()
        _send_flows(svc.ports["netflow"], "windows_powershell")
        _send_flows(svc.ports["netflow"], "linux_mosquitto_pub")
    finally:
        result = svc.stop()
    alerts = [json.loads(line) for line in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    by_rule = {}
    for a in alerts:
        by_rule.setdefault(a["rule"]["id"], []).append(a)
    an0002 = [a for a in by_rule.get("AN0002", []) if a["process"]["name"] == "powershell.exe"]
    assert an0002 and an0002[0]["destination"]["domain"].endswith(".duckdns.org"), alerts
    an0003 = [a for a in by_rule.get("AN0003", []) if a["process"]["name"] == "mosquitto_pub"]
    assert an0003 and an0003[0]["process"]["command_line"].startswith("mosquitto_pub"), alerts
    # the network analytics' alerts on the same traffic carry the process that made it
    attributed = {a["process"]["name"] for a in by_rule.get("AN0005", []) if "process" in a}
    assert {"powershell.exe", "mosquitto_pub"} <= attributed, by_rule.get("AN0005")
    assert "host log record rejected" not in result["stderr"]
