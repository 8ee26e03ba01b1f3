"""SNMP enrichment against a real agent (snmpd on loopback): names in `decode` output and in alerts, v2c and v3,
back-off and counting when the agent stops answering, and no waiting on an agent that never answers."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import yaml

from analytics.config import Config
from collector.enrich.observers import Enricher
from collector.enrich.snmp import SnmpPoller, load_profiles
from tests.collector.enrich.conftest import ALIAS_1, COMMUNITY, SYS_NAME, V3_USERS, free_udp_port
from tests.collector.flows.test_netflow_v5 import REC, v5_datagram
from tests.conftest import FIXTURES, REPO

pytestmark = pytest.mark.live


def exporters(devices: dict, **snmp) -> object:
    """A validated Exporters key from a devices mapping and SNMP defaults."""
    return Config.from_mapping({"Exporters": {"snmp": snmp, "devices": devices}}).Exporters


def v3(user: str, port: int) -> dict:
    a, ak, p, pk = V3_USERS[user]
    return {"version": 3, "user": user, "auth": {"protocol": a, "key": ak}, "priv": {"protocol": p, "key": pk},
            "port": port}


def test_v2c_and_v3_agents_name_exporters_and_interfaces(agent):
    cfg = exporters({"127.0.0.1": {"snmp": {"community": COMMUNITY, "port": agent.port}},
                     "127.0.0.2": {"snmp": v3("bwsha", agent.port)}})
    cfg_md5 = exporters({"127.0.0.1": {"snmp": v3("bwmd5", agent.port)}})
    for c, addresses in ((cfg, ["127.0.0.1", "127.0.0.2"]), (cfg_md5, ["127.0.0.1"])):
        poller = SnmpPoller(c).start()
        try:
            poller.wait_tried(addresses, 20)
            for a in addresses:
                assert poller.name(a) == SYS_NAME
                assert poller.interface(a, 1) == ("lo", ALIAS_1)
                info = poller.cache[a]
                assert info.descr.startswith("Linux test agent")
                assert info.profile == "if_mib"
                assert info.interfaces[1].speed > 0
            assert poller.counters.get("brokerwatch_snmp_polls_total", ("ok",)) == len(addresses)
        finally:
            poller.stop()


def test_config_names_override_the_agent(agent):
    cfg = exporters({"127.0.0.1": {"name": "core-1", "interfaces": {1: "loopback0"},
                                   "snmp": {"community": COMMUNITY, "port": agent.port}}})
    poller = SnmpPoller(cfg).start()
    try:
        poller.wait_tried(["127.0.0.1"], 20)
        assert poller.name("127.0.0.1") == "core-1"
        assert poller.interface("127.0.0.1", 1) == ("loopback0", ALIAS_1)  # the alias still comes from the agent
    finally:
        poller.stop()


def test_a_profile_chosen_by_sysdescr_says_which_oids(agent, tmp_path):
    """Quirks as data: a profile matching the agent's sysDescr takes interface names from ifDescr and the
    description from ifName (a made-up vendor), while the fallback profile stays for everyone else."""
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    shipped = yaml.safe_load((REPO / "device_profiles" / "snmp" / "if_mib.yaml").read_text())
    (profiles / "if_mib.yaml").write_text(yaml.safe_dump(shipped))
    quirky = dict(shipped, name="quirky", match={"sysDescr": "^Linux test agent"},
                  interfaces={"name": ["1.3.6.1.2.1.2.2.1.2"], "alias": ["1.3.6.1.2.1.31.1.1.1.1"]})
    (profiles / "quirky.yaml").write_text(yaml.safe_dump(quirky))
    poller = SnmpPoller(exporters({"127.0.0.1": {"snmp": {"community": COMMUNITY, "port": agent.port}}}),
                        profiles=load_profiles(profiles)).start()
    try:
        poller.wait_tried(["127.0.0.1"], 20)
        assert poller.cache["127.0.0.1"].profile == "quirky"
        assert poller.interface("127.0.0.1", 1) == ("lo", "lo")
    finally:
        poller.stop()


def test_an_agent_that_stops_answering_is_backed_off_and_counted(agent):
    cfg = exporters({"127.0.0.1": {"snmp": {"community": COMMUNITY, "port": agent.port}}},
                    ttl="1s", timeout=0.2, retries=0)
    poller = SnmpPoller(cfg).start()
    try:
        poller.wait_tried(["127.0.0.1"], 20)
        assert poller.name("127.0.0.1") == SYS_NAME
        agent.stop()
        target = poller._targets["127.0.0.1"]
        deadline = time.monotonic() + 30
        while target.failures < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert target.failures >= 3
        # each failure doubles the wait before the next try (0.2 s per poll here: 0.2, 0.4, 0.8 ...)
        assert target.delays[:3] == pytest.approx([0.2, 0.4, 0.8])
        c = poller.counters
        assert c.get("brokerwatch_snmp_failures_total", ("127.0.0.1", "timeout")) == target.failures
        assert c.get("brokerwatch_snmp_polls_total", ("timeout",)) == target.failures
        assert poller.name("127.0.0.1") == SYS_NAME  # what the agent said before stays until it answers again
    finally:
        poller.stop()


def _v5_capture(path, exporter="127.0.0.1", n=20):
    from scapy.all import IP, UDP, Raw, wrpcap

    packets = [IP(src=exporter, dst="127.0.0.1") / UDP(sport=9995, dport=2055) /
               Raw(v5_datagram([dict(REC, sport=40000 + i, **{"in": 1, "out": 2})], seq=i)) for i in range(n)]
    wrpcap(str(path), packets)
    return path


def _decode(args, cwd):
    out = subprocess.run([sys.executable, "-m", "collector.cli", "decode", *args], capture_output=True, text=True,
                         timeout=120, cwd=cwd)
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines()]


def test_decode_shows_names_when_the_config_enables_snmp(agent, tmp_path):
    cap = _v5_capture(tmp_path / "v5.pcap")
    config = tmp_path / "bw.yaml"
    config.write_text(yaml.safe_dump({"Exporters": {"devices": {"127.0.0.1": {
        "snmp": {"community": COMMUNITY, "port": agent.port}}}}}))
    recs = _decode(["--config", str(config), str(cap)], tmp_path)
    plain = _decode([str(cap)], tmp_path)
    assert len(recs) == len(plain) == 20
    for r in recs:
        assert r["observer"]["name"] == SYS_NAME
        assert r["observer"]["ingress"]["interface"] == {"id": 1, "name": "lo", "alias": ALIAS_1}
        assert r["observer"]["egress"]["interface"]["id"] == 2
        assert r["observer"]["egress"]["interface"]["name"]  # whatever the agent's second interface is called
    for r in plain:
        assert "name" not in r["observer"]


def test_replay_alerts_carry_the_observer_name(agent, tmp_path):
    config = tmp_path / "bw.yaml"
    config.write_text(yaml.safe_dump({"Exporters": {"devices": {"127.0.0.1": {
        "snmp": {"community": COMMUNITY, "port": agent.port}}}}}))
    out = subprocess.run([sys.executable, "-m", "collector.cli", "replay", "--config", str(config),
                          str(FIXTURES / "netflow_v5" / "softflowd_beacon_world.pcap")],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    alerts = [json.loads(line) for line in out.stdout.splitlines()]
    assert alerts
    for a in alerts:
        assert a["observer"]["ip"] == "127.0.0.1"
        assert a["observer"]["name"] == SYS_NAME


def test_an_agent_that_never_answers_never_holds_up_decoding(tmp_path):
    """The receive side's enrichment only notes exporters: a batch is handled while the poll is still waiting on an
    agent that never answers (its timeout is far longer than the whole test's decoding)."""
    from analytics.schema import FlowBatchBuilder, ip_to_words
    from collector.flows.decoders import FlowDecoders

    dead = free_udp_port()
    cfg = exporters({"127.0.0.1": {"snmp": {"community": COMMUNITY, "port": dead, "timeout": 30, "retries": 0}}})
    enricher = Enricher(cfg)
    try:
        decoders = FlowDecoders()
        builder = FlowBatchBuilder(1024)
        rows = 0
        for i in range(2000):
            decoders.decode(v5_datagram([dict(REC, sport=i % 60000)] * 10, seq=10 * i), ip_to_words("127.0.0.1"),
                            0, builder)
            if len(builder) >= 1000:
                batch = builder.build()
                builder.reset()
                enricher.seen(batch)
                rows += len(batch)
        assert rows == 20000
        target = enricher.poller._targets["127.0.0.1"]
        assert target.inflight and target.failures == 0  # the poll is still waiting; decoding never did
        assert enricher.counters.get("brokerwatch_snmp_polls_total", ("timeout",)) == 0
    finally:
        enricher.close()


def test_decode_with_an_unanswering_agent_prints_every_record_without_names(tmp_path):
    cap = _v5_capture(tmp_path / "v5.pcap")
    config = tmp_path / "bw.yaml"
    config.write_text(yaml.safe_dump({"Exporters": {"devices": {"127.0.0.1": {
        "snmp": {"community": COMMUNITY, "port": free_udp_port(), "timeout": 0.2, "retries": 0}}}}}))
    recs = _decode(["--config", str(config), str(cap)], tmp_path)
    assert len(recs) == 20
    assert all("name" not in r["observer"] for r in recs)


def test_the_running_service_names_the_observer_in_its_alerts(agent, tmp_path):
    """`brokerwatch run`: the analytics process polls the exporter it sees (never the receive workers) and its
    alerts carry the name (the final pass waits, bounded, for first polls still under way)."""
    import socket

    from collector.pcap import datagrams
    from tests.live import Running

    config = tmp_path / "bw.yaml"
    config.write_text(yaml.safe_dump({"Exporters": {"devices": {"127.0.0.1": {
        "snmp": {"community": COMMUNITY, "port": agent.port}}}}}))
    svc = Running(tmp_path, extra=("--config", str(config), "--cadence", "0.5"))
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sent = 0
    for d in datagrams(str(FIXTURES / "netflow_v5" / "softflowd_beacon_world.pcap")):
        sender.sendto(d.payload, ("127.0.0.1", svc.ports["netflow"]))
        sent += 1
    result = svc.stop()
    assert f"stopped after {sent} datagrams" in result["stderr"]
    alerts = [json.loads(line) for line in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    assert alerts
    assert {a["observer"]["ip"] for a in alerts} == {"127.0.0.1"}
    assert {a["observer"].get("name") for a in alerts} == {SYS_NAME}
