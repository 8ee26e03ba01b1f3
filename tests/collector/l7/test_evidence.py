"""L7 evidence of the flow meter (collector/l7/evidence.py, collector/flows/traffic.py) against tshark.

On every pub/sub capture of the corpus, ``brokerwatch decode`` must give the same MQTT topics (PUBLISH, SUBSCRIBE and
UNSUBSCRIBE), MQTT client ids, TLS server names and HTTP request paths as tshark's dissection (``-d`` where the
MANIFEST says tshark needs it: MQTT on port 17501). A capture of TLS ClientHellos and an MQTT-over-WebSocket session
made here covers SNI, ALPN and WebSocket. No capture, malformed or not, makes anything raise.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analytics.schema import FLAG_MESSAGE, words_to_ip
from collector.inputs import OfflineSource
from collector.l7.evidence import MqttStream, dns_answers, flow_evidence
from tests.conftest import corpus_path, require_tool

FIELDS = ("topic", "client_id", "sni", "path")
TSHARK_FIELDS = ("mqtt.topic", "mqtt.clientid", "tls.handshake.extensions_server_name", "http.request.uri")
#: tshark decodes MQTT only on its registered ports; the MANIFEST names the capture that needs a hint.
DECODE_AS = {"ndpi_coap_mqtt.pcap": ["-d", "tcp.port==17501,mqtt"]}


def _files() -> list[str]:
    root = corpus_path() / "pubsub_pcaps"
    return sorted(p.name for p in root.glob("*.pcap*")) if root.is_dir() else []


def ours(path: Path) -> tuple[dict[str, set[str]], list]:
    """The L7 fields brokerwatch decodes from a raw capture, and its batches."""
    src = OfflineSource()
    res: dict[str, set[str]] = {k: set() for k in FIELDS}
    batches = list(src.batches([str(path)]))
    for b in batches:
        for i in range(len(b)):
            if b.topic_id[i] and b.app_proto[i] in (1, 6):
                res["topic"].add(b.strings[b.topic_id[i]])
            e = (b.extra or {}).get(i, {})
            m = e.get("mqtt", {})
            for k in ("publish_topics", "subscriptions", "unsubscriptions"):
                res["topic"].update(m.get(k, []))
            if m.get("client_id"):
                res["client_id"].add(m["client_id"])
            sni = e.get("tls", {}).get("client", {}).get("server_name")
            if sni:
                res["sni"].add(sni)
            if "path" in e.get("url", {}):
                res["path"].add(e["url"]["path"])
            res["path"].update(e.get("http", {}).get("request", {}).get("paths", []))
    return res, batches


def tshark(path: Path) -> dict[str, set[str]]:
    """The same fields from tshark's dissection."""
    args = [require_tool("tshark"), "-r", str(path), *DECODE_AS.get(path.name, []), "-T", "fields"]
    for f in TSHARK_FIELDS:
        args += ["-e", f]
    out = subprocess.run(args, capture_output=True, text=True, check=True, timeout=120).stdout
    res: dict[str, set[str]] = {k: set() for k in FIELDS}
    for line in out.splitlines():
        for k, v in zip(FIELDS, line.split("\t")):
            if v:
                res[k].update(v.split(","))
    return res


@pytest.mark.parametrize("name", _files())
def test_l7_fields_agree_with_tshark(name):
    path = corpus_path() / "pubsub_pcaps" / name
    got, batches = ours(path)
    assert got == tshark(path)
    assert sum(len(b) for b in batches) > 0 or "ping" in name or "NEGATIVE" in name


def test_l7_corpus_is_there(corpus):
    assert len(_files()) >= 20


def test_each_publish_is_an_event_at_its_own_time(corpus):
    path = corpus / "pubsub_pcaps" / "deepflow_mqtt_roundtrip.pcap"
    _, batches = ours(path)
    msgs = [(b.start_ns[i], b.strings[b.topic_id[i]], int(b.bytes[i])) for b in batches for i in range(len(b))
            if b.flags[i] & FLAG_MESSAGE]
    out = subprocess.run([require_tool("tshark"), "-r", str(path), "-Y", "mqtt.msgtype == 3", "-T", "fields",
                          "-e", "frame.time_epoch", "-e", "mqtt.topic", "-e", "mqtt.len"],
                         capture_output=True, text=True, check=True).stdout.split("\n")
    expected = sorted((round(float(t) * 1e6), topic, int(n) + 2) for t, topic, n in
                      (line.split("\t") for line in out if line))
    assert sorted((int(t) // 1000, topic, n) for t, topic, n in msgs) == expected


def client_hello(sni: bytes, alpn: bytes) -> bytes:
    """A TLS 1.2 record holding a ClientHello with server_name and ALPN extensions (RFC 5246, 6066, 7301)."""
    def vec(n: int, data: bytes) -> bytes:
        return len(data).to_bytes(n, "big") + data

    ext = (b"\x00\x00" + vec(2, vec(2, b"\x00" + vec(2, sni))) +
           b"\x00\x10" + vec(2, vec(2, vec(1, alpn))))
    body = b"\x03\x03" + bytes(32) + vec(1, b"") + vec(2, b"\x13\x01\xc0\x2f") + vec(1, b"\x00") + vec(2, ext)
    hs = b"\x01" + vec(3, body)
    return b"\x16\x03\x01" + vec(2, hs)


def _tls_ws_capture(path: Path) -> Path:
    """TLS ClientHellos (SNI, ALPN mqtt), and MQTT over a cleartext WebSocket (upgrade, masked frames)."""
    from scapy.all import IP, TCP, Ether, Raw, wrpcap

    mac = dict(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    pkts = []
    t = 1_768_435_200.0
    for k, (sni, alpn) in enumerate((("broker.example.net", b"mqtt"), ("a1b2c3-ats.iot.example.com", b"x-amzn-mqtt-ca"))):
        for flags, payload in (("S", b""), ("PA", client_hello(sni.encode(), alpn))):
            p = Ether(**mac) / IP(src="192.0.2.10", dst="203.0.113.9") / TCP(sport=50000 + k, dport=443, flags=flags,
                                                                           seq=1000) / Raw(payload)
            p.time = t
            t += 0.01
            pkts.append(p)
    upgrade = (b"GET /mqtt HTTP/1.1\r\nHost: ws.example.org:8080\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: mqtt\r\n"
               b"Sec-WebSocket-Version: 13\r\n\r\n")
    connect = b"\x10\x12\x00\x04MQTT\x04\x02\x00\x3c\x00\x06ws-cid"
    key = b"\x11\x22\x33\x44"
    frame = b"\x82" + bytes([0x80 | len(connect)]) + key + bytes(c ^ key[i & 3] for i, c in enumerate(connect))
    for flags, payload in (("S", b""), ("PA", upgrade), ("PA", frame)):
        p = Ether(**mac) / IP(src="192.0.2.11", dst="198.51.100.8") / TCP(sport=51000, dport=8080, flags=flags) / \
            Raw(payload)
        p.time = t
        t += 0.01
        pkts.append(p)
    wrpcap(str(path), pkts)
    return path


def test_tls_sni_alpn_and_websocket_agree_with_tshark(tmp_path):
    path = _tls_ws_capture(tmp_path / "tls_ws.pcap")
    got, batches = ours(path)
    theirs = tshark(path)
    assert got["sni"] == theirs["sni"] == {"broker.example.net", "a1b2c3-ats.iot.example.com"}
    assert got["path"] == theirs["path"] == {"/mqtt"}
    assert got["client_id"] == {"ws-cid"}
    recs = {words_to_ip(b.dst_hi[i], b.dst_lo[i]): (b.app_proto[i], (b.extra or {}).get(i, {}))
            for b in batches for i in range(len(b))}
    app, extra = recs["203.0.113.9"]
    assert app == 1 and extra["tls"]["next_protocol"] in ("mqtt", "x-amzn-mqtt-ca")
    app, extra = recs["198.51.100.8"]
    assert app == 6 and extra["http"]["request"]["websocket_protocol"] == "mqtt"
    assert extra["destination"]["domain"] == "ws.example.org"


def test_dns_answers_name_later_flows(tmp_path):
    from scapy.all import DNS, DNSQR, DNSRR, IP, TCP, UDP, Ether, wrpcap

    mac = dict(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    ans = Ether(**mac) / IP(src="198.51.100.53", dst="192.0.2.20") / UDP(sport=53, dport=40000) / DNS(
        id=7, qr=1, qd=DNSQR(qname="c2.dyndns.example"), an=DNSRR(rrname="c2.dyndns.example", type="A",
                                                                   rdata="203.0.113.77"))
    ans.time = 1_768_435_200.0
    syn = Ether(**mac) / IP(src="192.0.2.20", dst="203.0.113.77") / TCP(sport=40001, dport=8883, flags="S")
    syn.time = 1_768_435_201.0
    wrpcap(str(tmp_path / "dns.pcap"), [ans, syn])
    src = OfflineSource()
    batches = list(src.batches([str(tmp_path / "dns.pcap")]))
    rec = [(b.extra or {}).get(i, {}) for b in batches for i in range(len(b)) if b.dst_port[i] == 8883]
    assert rec == [{"destination": {"domain": "c2.dyndns.example"}}]
    assert src.counters.get("brokerwatch_meter_dns_answers_total") == 1
    (eb,) = src.take_endpoint_events()
    assert eb.strings[eb.rows["domain_id"][0]] == "c2.dyndns.example"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600), st.binary(max_size=600))
def test_any_bytes_give_evidence_without_raising(a, b):
    ev = flow_evidence(a, b)
    assert ev.app_proto >= 0
    dns_answers(a)
    s = MqttStream()
    out: list = []
    for chunk in (a, b, a):
        s.feed(chunk, 1, out, True)
    assert len(s.pending) <= 8192 + 600


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.text(min_size=1, max_size=30).filter(lambda t: "\x00" not in t), st.binary(max_size=300)),
                min_size=1, max_size=8), st.integers(1, 64))
def test_mqtt_stream_finds_every_publish_whatever_the_segmenting(msgs, cut):
    wire = b""
    for topic, payload in msgs:
        t = topic.encode()
        body = len(t).to_bytes(2, "big") + t + payload
        n = len(body)
        length = b""
        while True:
            d, n = n & 0x7F, n >> 7
            length += bytes([d | (0x80 if n else 0)])
            if not n:
                break
        wire += b"\x30" + length + body
    s = MqttStream()
    out: list = []
    for k in range(0, len(wire), cut):
        s.feed(wire[k:k + cut], k, out, True)
    assert [m.topic for _, m in out] == [t for t, _ in msgs]


def test_sflow_sampled_headers_give_mqtt_client_ids_as_tshark_does():
    """L7 evidence on sFlow too: the CONNECTs pmacct's sFlow agent sampled (1 in 2) name the same client ids."""
    from tests.conftest import FIXTURES

    path = FIXTURES / "sflow" / "pmacct_beacon_world.pcap"
    out = subprocess.run([require_tool("tshark"), "-r", str(path), "-d", "udp.port==29943,sflow", "-T", "fields",
                          "-e", "mqtt.clientid"], capture_output=True, text=True, check=True).stdout
    theirs = sorted(c for line in out.splitlines() for c in line.split(",") if c)
    ours = sorted(e["mqtt"]["client_id"] for b in OfflineSource().batches([str(path)]) for e in (b.extra or {}).values()
                  if "mqtt" in e)
    assert len(theirs) > 50
    assert ours == theirs


def test_every_publish_of_the_beacon_world_is_an_event():
    """Short beacon connections (which leave the table within the block that holds them) and the long telemetry
    session alike: one FLAG_MESSAGE row per PUBLISH frame tshark sees, at its time."""
    from tests.conftest import FIXTURES

    path = FIXTURES / "traffic" / "beacon_world.pcap"
    out = subprocess.run([require_tool("tshark"), "-r", str(path), "-Y", "mqtt.msgtype == 3", "-T", "fields",
                          "-e", "frame.time_epoch"], capture_output=True, text=True, check=True).stdout
    theirs = sorted(round(float(t) * 1e6) for t in out.split())
    _, batches = ours(path)
    mine = sorted(int(b.start_ns[i]) // 1000 for b in batches for i in range(len(b)) if b.flags[i] & FLAG_MESSAGE)
    assert len(theirs) > 200
    assert mine == theirs
