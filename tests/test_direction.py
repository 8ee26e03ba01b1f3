"""Direction end to end: pmacct's sFlow export of an MQTT client talking to a broker on 8443 makes one pair.

The measured defect (issue 12): the broker's replies (source port 8443, destination the client's ephemeral port)
were pairs of their own, one per ephemeral port, and each alerted. Here pmacctd (sfprobe, 1 in 1) reads a capture
of 72 short MQTT connections to 203.0.113.50:8443 and exports sFlow to a socket of the test; the decoded samples go
through the Detector, which must see one client -> broker pair with the broker's bytes counted as its reverse bytes.
"""

from __future__ import annotations

import importlib.util
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from analytics.config import Config
from analytics.detections.an0005 import Detector
from analytics.schema import FLAG_REVERSE, FlowBatchBuilder, ip_to_words
from collector.flows.decoders import FlowDecoders
from collector.metrics import Counters
from tests.conftest import require_tool

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
CLIENT, BROKER, PORT, CONNECTIONS = "192.0.2.10", "203.0.113.50", 8443, 72


def _gen():
    spec = importlib.util.spec_from_file_location("gen_traffic", FIXTURES / "gen_traffic.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("gen_traffic", mod)  # its dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def _capture(path: Path) -> None:
    """72 MQTT connections, a minute apart, each: CONNECT, CONNACK, PUBLISH, a PUBLISH from the broker, close."""
    g = _gen()
    rng = random.Random(12)
    cap = g.Capture()
    t = g.T0
    for i in range(CONNECTIONS):
        conn = g.TcpConn(cap, rng, CLIENT, BROKER, 40000 + 7 * i, PORT, rtt=0.05)
        u = conn.open(t)
        u = conn.send(u, True, g.mqtt_connect(f"c2-{rng.getrandbits(48):x}"))
        u = conn.send(u, False, g.mqtt_connack())
        u = conn.send(u, True, g.mqtt_publish("x7/q9zk", rng.randbytes(40)))
        u = conn.send(u, False, g.mqtt_publish("cmd", rng.randbytes(200)))
        conn.close(u, client_first=True)
        t += 60
    cap.write(str(path))


def _pmacct_sflow(tmp_path: Path, pcap: Path) -> list[bytes]:
    pmacctd = require_tool("pmacctd")
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(0.2)
    port = rx.getsockname()[1]
    conf = tmp_path / "pmacctd.conf"
    conf.write_text(f"daemonize: false\npcap_savefile: {pcap}\nlogfile: {tmp_path}/pmacctd.log\n"
                    f"pidfile: {tmp_path}/pmacctd.pid\nplugins: sfprobe\nsfprobe_receiver: 127.0.0.1:{port}\n"
                    "sfprobe_agentip: 127.0.0.1\nsampling_rate: 1\n")
    proc = subprocess.Popen([pmacctd, "-f", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    got: list[bytes] = []
    deadline = time.monotonic() + 60
    quiet_since = None
    try:
        while time.monotonic() < deadline:
            try:
                got.append(rx.recv(65535))
                quiet_since = None
            except socket.timeout:
                if proc.poll() is not None:
                    quiet_since = quiet_since or time.monotonic()
                    if time.monotonic() - quiet_since > 1.0:
                        break
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        rx.close()
    return got


def test_pmacct_sflow_of_mqtt_on_8443_is_one_pair(tmp_path):
    pcap = tmp_path / "mqtt8443.pcap"
    _capture(pcap)
    datagrams = _pmacct_sflow(tmp_path, pcap)
    assert datagrams, "pmacctd sent no sFlow"
    builder = FlowBatchBuilder()
    dec = FlowDecoders(Counters())
    now = time.time_ns()
    dec.decode_many(datagrams, [ip_to_words("127.0.0.1")] * len(datagrams), [now] * len(datagrams), builder)
    batch = builder.build()
    c = batch.columns
    client, broker = ip_to_words(CLIENT), ip_to_words(BROKER)
    replies = (c["src_lo"] == broker[1]) & (c["src_port"] == PORT)
    # the defect's raw material: the broker's samples go to one ephemeral port per connection
    assert len(np.unique(c["dst_port"][replies])) == CONNECTIONS
    assert (c["app_proto"][replies] != 0).any()  # recognised as MQTT: before the fold, an "unusual port" pair each

    det = Detector(Config())
    rows = det.oriented(c)
    pairs = set(zip(rows["src_lo"].tolist(), rows["dst_lo"].tolist(), rows["dst_port"].tolist()))
    assert pairs == {(client[1], broker[1], PORT)}
    # every byte the broker sent is either folded into a request sample or was a reply with no request beside it
    folded = int(rows["rev_bytes"].sum())
    assert folded > 0 and (rows["flags"][rows["rev_bytes"] > 0] & FLAG_REVERSE).all()
    assert folded <= int(c["bytes"][replies].sum())

    det.ingest(batch)
    alerts = det.flush(now + 1)
    assert alerts, "MQTT on an unlisted port should alert"
    assert {(a.src, a.dst, a.dst_port) for a in alerts} == {(client, broker, PORT)}
