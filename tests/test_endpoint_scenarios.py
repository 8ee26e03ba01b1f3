"""Endpoint scenario worlds (fixtures/endpoint/): host logs lined up with softflowd's export of the same traffic.

Two kinds of test:
- the fixtures are proven without brokerwatch's host-log code: softflowd's capture decodes to exactly the flows the
  generator labelled; every network event in the host logs (read with json.loads or a plain split of the audit
  lines) names a labelled flow at the same time, and every beacon connection has one; tshark sees the MQTT that the
  audit log's command lines say was published; the generator rewrites every file byte for byte.
- the issue's scenarios (AN0002, AN0003, AN0004, and silence for a KnownPubSubClients application): ``brokerwatch
  replay`` over the flow capture and the host logs, in both orders.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import FIXTURES, REPO, require_tool

ENDPOINT = FIXTURES / "endpoint"
WORLDS = ("windows_powershell", "linux_mosquitto_pub", "macos_curl", "linux_known_client")
ENDPOINT_RULES = ("AN0002", "AN0003", "AN0004")


def labels(world: str) -> dict:
    """The generator's ground truth for one world."""
    return json.loads((ENDPOINT / world / "labels.json").read_text())


def host_logs(world: str) -> list[Path]:
    """The host-log files of one world, as labels.json lists them."""
    return [ENDPOINT / world / name for name in sorted(labels(world)["host_logs"])]


def cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """``brokerwatch ARGS`` run from the repository."""
    return subprocess.run([sys.executable, "-m", "collector.cli", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=timeout)


# --- the fixtures themselves -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("world", WORLDS)
def test_flow_capture_decodes_to_the_generated_flows(world):
    """softflowd's v9 export holds one record per labelled flow and direction: the same 5-tuples, nothing else, and
    each flow's first packet within a second of its labelled time (v9 headers carry whole seconds)."""
    doc = labels(world)
    proc = cli("decode", str(ENDPOINT / world / "softflowd_v9.pcap"))
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert {r["event"]["dataset"] for r in records} == {"netflow.v9"}
    got = Counter((r["source"]["ip"], r["source"]["port"], r["destination"]["ip"], r["destination"]["port"],
                   r["network"]["iana_number"]) for r in records)
    want: Counter = Counter()
    for f in doc["flows"]:
        want[(f["src"], f["sport"], f["dst"], f["dport"], f["proto"])] += 1
        want[(f["dst"], f["dport"], f["src"], f["sport"], f["proto"])] += 1
    assert len(records) == 2 * len(doc["flows"])
    assert got == want
    starts = {(r["source"]["ip"], r["source"]["port"], r["destination"]["ip"], r["destination"]["port"]):
              r["event"]["start"] for r in records}
    from collector.hostlogs.common import parse_time_ns

    for f in doc["flows"]:
        start = parse_time_ns(starts[(f["src"], f["sport"], f["dst"], f["dport"])]) / 1e9
        assert abs(start - f["t"]) < 1.0, f
    beacon = [f for f in doc["flows"] if f["dst"] == doc["broker"] and f["dport"] == doc["broker_port"]]
    assert len(beacon) == len(doc["beats"]) >= 30  # a few hours of beats, every one of them a flow


def _sysmon_connects(path: Path) -> list[dict]:
    out = []
    for line in path.read_text().splitlines():
        ev = json.loads(line)
        if ev["winlog"]["event_id"] == "3":
            d = ev["winlog"]["event_data"]
            out.append(dict(t=d["UtcTime"], src=d["SourceIp"], sport=int(d["SourcePort"]), dst=d["DestinationIp"],
                            dport=int(d["DestinationPort"]), process=d["Image"].rsplit("\\", 1)[-1]))
    return out


_AUDIT = re.compile(r"^node=\S+ type=(\w+) msg=audit\((\d+\.\d+):(\d+)\): ?(.*)$")


def _audit_events(path: Path) -> dict[str, dict[str, str]]:
    """audit.log records grouped by event serial: {serial: {type: fields text}} (plus the event's time)."""
    events: dict[str, dict[str, str]] = {}
    for line in path.read_text().splitlines():
        m = _AUDIT.match(line)
        assert m, line
        kind, stamp, serial, rest = m.groups()
        ev = events.setdefault(serial, {"time": stamp})
        ev[kind] = ev.get(kind, "") + rest
    return events


def _audit_connects(path: Path) -> list[dict]:
    out = []
    for ev in _audit_events(path).values():
        if "SOCKADDR" not in ev:
            continue
        saddr = ev["SOCKADDR"].split("saddr=")[1]
        assert saddr[:4] == "0200", "IPv4 sockaddr_in only in these worlds"
        dst = ".".join(str(b) for b in bytes.fromhex(saddr[8:16]))
        comm = re.search(r'comm="([^"]*)"', ev["SYSCALL"]).group(1)
        out.append(dict(t=float(ev["time"]), dst=dst, dport=int(saddr[4:8], 16), process=comm))
    return out


def _elastic_connects(path: Path) -> list[dict]:
    out = []
    for line in path.read_text().splitlines():
        ev = json.loads(line)
        out.append(dict(t=ev["@timestamp"], src=ev["source"]["ip"], sport=ev["source"]["port"],
                        dst=ev["destination"]["ip"], dport=ev["destination"]["port"], process=ev["process"]["name"]))
    return out


def _connects(world: str) -> list[dict]:
    """Every network event the world's host logs hold, read without brokerwatch's decoders."""
    from collector.hostlogs.common import parse_time_ns

    found = []
    for path in host_logs(world):
        if path.name.startswith("winlogbeat"):
            found += _sysmon_connects(path)
        elif path.name == "audit.log":
            found += _audit_connects(path)
        elif path.name.startswith("elastic_endpoint"):
            found += _elastic_connects(path)
    for c in found:
        c["t"] = c["t"] if isinstance(c["t"], float) else parse_time_ns(c["t"]) / 1e9
    return found


@pytest.mark.parametrize("world", WORLDS)
def test_host_logs_line_up_with_the_traffic(world):
    """Every outside connection in the host logs is a labelled flow of the same process, opened within 5 ms of it
    (with the same source port where the log has one), and every beacon connection is in the host logs."""
    doc = labels(world)
    flows = doc["flows"]
    matched = set()
    outside = [c for c in _connects(world) if not c["dst"].startswith("127.")]
    assert outside
    for c in outside:
        cands = [i for i, f in enumerate(flows) if f["dst"] == c["dst"] and f["dport"] == c["dport"]
                 and f["proto"] == 6 and abs(f["t"] - c["t"]) < 0.005
                 and ("sport" not in c or (f["src"], f["sport"]) == (c["src"], c["sport"]))]
        assert len(cands) == 1, c
        assert flows[cands[0]]["process"] == c["process"], (c, flows[cands[0]])
        matched.add(cands[0])
    beacons = {i for i, f in enumerate(flows) if f["dst"] == doc["broker"] and f["dport"] == doc["broker_port"]}
    assert beacons <= matched


def test_sysmon_dns_names_the_broker():
    """Every beacon of the Windows world is preceded by a Sysmon event 22 of powershell.exe resolving the
    dynamic-DNS name to the broker's address."""
    doc = labels("windows_powershell")
    queries = []
    for line in (ENDPOINT / "windows_powershell" / "winlogbeat_sysmon.ndjson").read_text().splitlines():
        ev = json.loads(line)
        if ev["winlog"]["event_id"] == "22" and ev["winlog"]["event_data"]["Image"].endswith("\\powershell.exe"):
            d = ev["winlog"]["event_data"]
            assert d["QueryName"] == doc["domain"] and d["QueryResults"] == f"::ffff:{doc['broker']};"
            queries.append(d["UtcTime"])
    assert len(queries) == len(doc["beats"])


def test_mqtt_on_the_wire_is_what_the_audit_log_says():
    """tshark's reading of the Linux world's MQTT PUBLISHes gives the topics of the mosquitto_pub command lines in
    audit.log, in order (EXECVE arguments, hex-decoded where auditd hex-encoded them)."""
    tshark = require_tool("tshark")
    out = subprocess.run([tshark, "-r", str(ENDPOINT / "linux_mosquitto_pub" / "traffic.pcap"), "-Y",
                          "mqtt.msgtype == 3", "-T", "fields", "-e", "mqtt.topic"], capture_output=True, text=True,
                         check=True, timeout=120).stdout.split()
    topics = []
    for ev in sorted(_audit_events(ENDPOINT / "linux_mosquitto_pub" / "audit.log").values(),
                     key=lambda e: float(e["time"])):
        if 'comm="mosquitto_pub"' in ev.get("SYSCALL", "") and "EXECVE" in ev:
            args = dict(re.findall(r"a(\d+)=(\"[^\"]*\"|[0-9A-F]+)", ev["EXECVE"]))
            argv = [args[str(i)].strip('"') if args[str(i)].startswith('"') else bytes.fromhex(args[str(i)]).decode()
                    for i in range(len(args))]
            topics.append(argv[argv.index("-t") + 1])
    assert out == topics and len(topics) == len(labels("linux_mosquitto_pub")["beats"])


def test_generator_rewrites_the_fixtures_byte_for_byte(tmp_path):
    """make_endpoint.py with the recorded seed gives the committed traffic, labels and host logs again."""
    seed = labels(WORLDS[0])["seed"]
    proc = subprocess.run([sys.executable, str(FIXTURES / "make_endpoint.py"), str(tmp_path), "--seed", str(seed)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    for world in WORLDS:
        for name in ["traffic.pcap", "labels.json", *labels(world)["host_logs"]]:
            assert (tmp_path / world / name).read_bytes() == (ENDPOINT / world / name).read_bytes(), (world, name)


# --- the scenarios of issue 10 ---------------------------------------------------------------------------------------

def replay(world: str, logs_first: bool) -> list[dict]:
    """Alerts of ``brokerwatch replay`` over the world's softflowd capture and host logs, in the given order."""
    flows = [str(ENDPOINT / world / "softflowd_v9.pcap")]
    logs = [str(p) for p in host_logs(world)]
    proc = cli("replay", *(logs + flows if logs_first else flows + logs))
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


ORDERS = pytest.mark.parametrize("logs_first", [False, True], ids=["flows-then-logs", "logs-then-flows"])


def _of(alerts: list[dict], rule: str, dst: str) -> list[dict]:
    return [a for a in alerts if a["rule"]["id"] == rule and a["destination"].get("ip") == dst]


@ORDERS
def test_powershell_beacon_raises_an0002(logs_first):
    """powershell.exe beaconing over TLS to a dynamic-DNS broker on 8883: AN0002 with the process, the host and the
    dynamic-DNS name (from Sysmon event 22) in the evidence."""
    doc = labels("windows_powershell")
    hits = _of(replay("windows_powershell", logs_first), "AN0002", doc["broker"])
    assert hits
    a = hits[-1]
    assert a["process"]["name"] == "powershell.exe"
    assert a["process"]["pid"] == 6412
    assert a["source"]["ip"] == doc["host_ip"] and a["destination"]["port"] == 8883
    assert doc["domain"] in json.dumps(a["brokerwatch"]["evidence"])


@ORDERS
def test_mosquitto_pub_loop_raises_an0003(logs_first):
    """A bash loop running mosquitto_pub with random topics and base64 messages: AN0003 with the process and one of
    the command lines auditd recorded."""
    doc = labels("linux_mosquitto_pub")
    hits = _of(replay("linux_mosquitto_pub", logs_first), "AN0003", doc["broker"])
    assert hits
    a = hits[-1]
    assert a["process"]["name"] == "mosquitto_pub"
    assert a["process"]["executable"] == doc["executable"]
    assert a["process"]["command_line"] in doc["command_lines"]
    assert a["source"]["ip"] == doc["host_ip"] and a["destination"]["port"] == 1883


@ORDERS
def test_curl_posts_to_mqtt_uri_raise_an0004(logs_first):
    """osascript running curl to POST to https://…/mqtt every few minutes: AN0004 naming curl (or osascript)."""
    doc = labels("macos_curl")
    hits = _of(replay("macos_curl", logs_first), "AN0004", doc["broker"])
    assert hits
    a = hits[-1]
    assert a["process"]["name"] in ("curl", "osascript")
    assert a["source"]["ip"] == doc["host_ip"] and a["destination"]["port"] == 443


@ORDERS
def test_known_pubsub_client_raises_nothing(logs_first):
    """The same traffic as the mosquitto_pub loop, made by the mosquitto broker's bridge (KnownPubSubClients):
    nothing is raised. The flows alone do raise AN0005 (a beacon to an unlisted outside broker); with the host log
    that pair's traffic is the known client's, so its network alert goes too, and no alert names a process."""
    doc = labels("linux_known_client")
    proc = cli("replay", str(ENDPOINT / "linux_known_client" / "softflowd_v9.pcap"))
    assert proc.returncode == 0, proc.stderr
    flows_only = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    assert _of(flows_only, "AN0005", doc["broker"])
    alerts = replay("linux_known_client", logs_first)
    assert [a for a in alerts if a["rule"]["id"] in ENDPOINT_RULES] == []
    assert [a for a in alerts if "process" in a] == []
    assert _of(alerts, "AN0005", doc["broker"]) == []
