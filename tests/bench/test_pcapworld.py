"""The labelled raw-traffic world (bench/detection/pcapworld.py): determinism, real packets (scapy and tshark as
oracles), consistent TCP conversations, labels that agree with the packets, C2 beats within their parameters."""

from __future__ import annotations

import json
import struct
import subprocess
from collections import defaultdict

import numpy as np
import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether

from bench.detection import pcapworld as pw
from tests.conftest import require_tool
from tests.reference import pcapworld_ref

FIN, SYN, RST, ACK = 0x01, 0x02, 0x04, 0x10


def read_pcap(path) -> list[tuple[float, bytes]]:
    """(time, frame) of every record of a classic microsecond pcap."""
    data = path.read_bytes()
    assert struct.unpack_from("<IHHiIII", data) == (0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    out, p = [], 24
    while p < len(data):
        sec, usec, incl, orig = struct.unpack_from("<IIII", data, p)
        assert incl == orig
        out.append((sec + usec / 1e6, data[p + 16:p + 16 + incl]))
        p += 16 + incl
    return out


def fields(frame: bytes) -> dict:
    """The IPv4 and TCP/UDP fields of a frame, read with struct."""
    ihl = (frame[14] & 15) * 4
    ip_ = frame[14:14 + ihl]
    f = {"src": ".".join(map(str, ip_[12:16])), "dst": ".".join(map(str, ip_[16:20])), "proto": ip_[9],
         "ip_len": int.from_bytes(ip_[2:4], "big"), "ip_id": int.from_bytes(ip_[4:6], "big")}
    l4 = frame[14 + ihl:]
    f["sport"], f["dport"] = struct.unpack_from(">HH", l4)
    if f["proto"] == 6:
        f["seq"], f["ack"] = struct.unpack_from(">II", l4, 4)
        f["flags"] = l4[13]
        f["payload"] = l4[(l4[12] >> 4) * 4:]
    else:
        f["flags"] = 0
        f["payload"] = l4[8:]
    return f


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The CI-sized world: scale 0.05, 6 hours."""
    out = tmp_path_factory.mktemp("pcapworld")
    doc = pw.generate(out, seed=5, hours=6.0, scale=0.05)
    return out, doc, read_pcap(out / "raw.pcap")


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    a = pw.generate(tmp_path / "a", seed=3, hours=1.0, scale=0.02)
    pw.generate(tmp_path / "b", seed=3, hours=1.0, scale=0.02)
    pw.generate(tmp_path / "c", seed=4, hours=1.0, scale=0.02)
    raw = [(tmp_path / x / "raw.pcap").read_bytes() for x in "abc"]
    assert raw[0] == raw[1] and raw[0] != raw[2]
    assert (tmp_path / "a" / "labels.json").read_bytes() == (tmp_path / "b" / "labels.json").read_bytes()
    assert a["packets"] > 1000 and a["t0"] == pw.T0 == 1_767_225_600


def test_ci_world_is_small_and_time_ordered(world):
    out, doc, frames = world
    assert 50_000 < doc["packets"] == len(frames) < 400_000
    assert (out / "raw.pcap").stat().st_size == doc["bytes"] < 120 * 2**20
    times = np.array([t for t, _ in frames])
    assert np.all(np.diff(times) >= 0)
    assert pw.T0 <= times[0] and times[-1] < pw.T0 + 6 * 3600 + 60
    c2 = {p["family"] for p in doc["pairs"] if p["label"] == "c2"}
    assert set(pw.C2_FAMILIES) <= c2
    benign = {p["family"] for p in doc["pairs"] if p["label"] == "benign"}
    assert benign == set(pw.BENIGN_GROUPS) | set(pw.BENIGN_PAIRS) | {"monitoring_poll"}


def test_scapy_parses_a_sample_with_correct_checksums(world):
    _, _, frames = world
    step = max(1, len(frames) // 1500)
    seen = set()
    for t, frame in frames[::step]:
        pkt = Ether(frame)
        assert pkt.type == 0x0800 and IP in pkt
        ip_ = pkt[IP]
        assert ip_.version == 4 and ip_.ihl == 5 and ip_.len == len(frame) - 14 and ip_.flags == "DF"
        l4 = TCP if ip_.proto == 6 else UDP
        assert l4 in pkt, pkt.summary()
        f = fields(frame)
        assert (ip_.src, ip_.dst, ip_.id) == (f["src"], f["dst"], f["ip_id"])
        assert (pkt[l4].sport, pkt[l4].dport) == (f["sport"], f["dport"])
        if l4 is UDP:
            assert pkt[UDP].len == len(frame) - 34
        else:
            assert (pkt[TCP].seq, pkt[TCP].ack, int(pkt[TCP].flags)) == (f["seq"], f["ack"], f["flags"])
            assert pkt[TCP].dataofs == 5 and bytes(pkt[TCP].payload) == f["payload"]
        # scapy recomputes both checksums when they are deleted: they must equal the generator's
        again = pkt.copy()
        del again[IP].chksum
        del again[l4].chksum
        again = Ether(bytes(again))
        assert again[IP].chksum == ip_.chksum and again[l4].chksum == pkt[l4].chksum
        seen.add((ip_.proto, bool(f["payload"])))
    assert seen == {(6, True), (6, False), (17, True)}


def test_assemble_equals_its_plain_twin(tmp_path):
    w = pw.World(9, 0.5, 0.02)
    for fam in pw.C2_FAMILIES:
        pw.c2_family(w, fam)
    pw.benign_pairs(w)
    pk = pw.Packets(w.b)
    pool = np.frombuffer(bytes(w.b.pool), np.uint8)
    buf, hdr, hlen, *pieces, at = pk.chunk(0, 3000)
    pw.assemble(buf, hdr, hlen, pool, *pieces, at)
    assert bytes(buf) == pcapworld_ref.assemble(hdr, hlen, pool, *pieces)


def test_tcp_conversations_are_consistent(world):
    """SYN first, sequence numbers advance by what was sent, ACKs acknowledge only what the peer sent, a FIN or
    RST ends it or it is still open at the end; every packet's header bytes are unique (sFlow timing keys)."""
    _, _, frames = world
    conns: dict[tuple, list] = defaultdict(list)
    heads = set()
    for t, frame in frames:
        f = fields(frame)
        head = frame[14:54]
        assert head not in heads
        heads.add(head)
        if f["proto"] != 6:
            continue
        key = (f["src"], f["sport"], f["dst"], f["dport"])
        rkey = (f["dst"], f["dport"], f["src"], f["sport"])
        if f["flags"] == SYN:
            conns[key].append([(t, 0, f)])
        else:
            k = key if key in conns else rkey
            conns[k][-1].append((t, 0 if k == key else 1, f))
    n_open = n_closed = n_answers = 0
    for key, sessions in conns.items():
        for pkts in sessions:
            nxt = {}
            sent = {0: [], 1: []}
            ended = False
            prev = None
            for t, d, f in pkts:
                assert not ended or f["flags"] & (FIN | RST) or f["flags"] == ACK
                if prev and d == 1 and prev[1] == 0 and f["payload"] and prev[2]["payload"] and len(pkts) < 40:
                    # in a short connection, the server's answer (one RTT after the client's message) acknowledges
                    # all of it (in a session the server may also speak on its own before it has the message)
                    assert f["ack"] == nxt[0] and t - prev[0] > 0.0009, (key, f)
                    n_answers += 1
                prev = (t, d, f)
                if d in nxt:
                    assert f["seq"] == nxt[d], (key, f)
                nxt[d] = (f["seq"] + len(f["payload"]) + bool(f["flags"] & (SYN | FIN))) & 0xFFFFFFFF
                sent[d].append(nxt[d])
                if f["flags"] & ACK and f["flags"] != ACK | RST:
                    assert f["ack"] in [x for x in sent[1 - d]], (key, f)
                ended |= bool(f["flags"] & (FIN | RST))
            assert pkts[1][2]["flags"] == SYN | ACK and pkts[2][2]["flags"] == ACK
            n_closed += ended
            n_open += not ended
    assert n_closed > 1000 and n_open > 10 and n_answers > 1000


def test_labels_agree_with_the_packets(world):
    out, doc, frames = world
    assert json.loads((out / "labels.json").read_text()) == doc
    labelled = {(p["src"], p["dst"], p["dport"]): p for p in doc["pairs"]}
    assert len(labelled) == len(doc["pairs"])
    counts: dict[tuple, int] = defaultdict(int)
    for _, frame in frames:
        f = fields(frame)
        key = (f["src"], f["dst"], f["dport"])
        if key not in labelled:
            key = (f["dst"], f["src"], f["sport"])
        assert key in labelled, f
        assert labelled[key]["proto"] == f["proto"]
        counts[key] += 1
    for key, p in labelled.items():
        assert counts[key] == p["packets"] > 0, p
        assert p["label"] in ("c2", "benign")
        if p["label"] == "benign":
            assert not any(p["limits"].values())
        for a in (p["src"], p["dst"]):
            assert a.startswith("10.") or a.startswith(("198.18.", "198.19."))
    lim = {p["family"]: p["limits"] for p in doc["pairs"]}
    assert lim["c2_nonstd_port"] == lim["c2_mqtt_443_alpn"] == {"raw": True, "flow": False, "flow_active": False,
                                                                 "sflow": False}
    assert lim["c2_reconnect"] == {"raw": True, "flow": True, "flow_active": True, "sflow": True}
    for p in doc["pairs"]:
        if p["family"] == "c2_persistent_cmd":
            q = p["params"]
            assert p["limits"]["flow"] is False
            assert p["limits"]["flow_active"] == (q["period_s"] * (1 - q["jitter"]) >= 600)


def test_c2_beats_follow_their_parameters(world):
    """Reconnect beacons: one connection per beat, gaps a whole number of periods within [S(1-j), S] each."""
    _, doc, frames = world
    syns = defaultdict(list)
    for t, frame in frames:
        f = fields(frame)
        if f["proto"] == 6 and f["flags"] == SYN:
            syns[(f["src"], f["dst"], f["dport"])].append(t)
    checked = 0
    for p in doc["pairs"]:
        q = p["params"]
        if p["family"] not in ("c2_reconnect", "c2_nonstd_port", "c2_dyndns", "c2_mqtt_443_alpn"):
            continue
        t = np.array(syns[(p["src"], p["dst"], p["dport"])])
        assert len(t) == q["beats"]
        if len(t) < 3:
            continue
        S, j, m = q["period_s"], q["jitter"], q["missed"]
        assert 5 <= S <= 3600 and 0 <= j <= 0.5 and 0 <= m <= 0.3
        gaps = np.diff(t)
        k = np.maximum(1, np.round(gaps / (S * (1 - j / 2))))
        assert np.all(gaps >= S * (1 - j) - 1e-3)
        # a gap of k beats lies in [k S(1-j), k S] (k - 1 missed beats)
        assert np.all((gaps >= k * S * (1 - j) - 1e-3) | (gaps <= k * S + 1e-3))
        assert np.all(gaps <= (np.ceil(gaps / S) + 1) * S)
        checked += 1
    assert checked >= 3
    dyn = [p for p in doc["pairs"] if p["family"] == "c2_dyndns_lookup"]
    assert dyn and all(p["dst"] == pw.RESOLVER and p["dport"] == 53 for p in dyn)


def test_tshark_reads_mqtt_and_the_alpn(world):
    out, doc, _ = world
    tshark = require_tool("tshark")
    pcap = str(out / "raw.pcap")
    mqtt = subprocess.run([tshark, "-r", pcap, "-Y", "mqtt", "-T", "fields", "-e", "mqtt.msgtype"],
                          capture_output=True, text=True, check=True, timeout=240).stdout.split()
    types = {int(x) for line in mqtt for x in line.split(",")}
    assert {1, 2, 3, 12, 13, 14} <= types  # CONNECT, CONNACK, PUBLISH, PINGREQ, PINGRESP, DISCONNECT
    bad = subprocess.run([tshark, "-r", pcap, "-Y", "mqtt && _ws.malformed"], capture_output=True, text=True,
                         check=True, timeout=240).stdout
    assert bad.strip() == ""
    alpn = subprocess.run([tshark, "-r", pcap, "-Y", 'tls.handshake.extensions_alpn_str == "mqtt"', "-T", "fields",
                           "-e", "ip.src", "-e", "ip.dst", "-e", "tcp.dstport"],
                          capture_output=True, text=True, check=True, timeout=240).stdout.split("\n")
    found = {tuple(line.split("\t")) for line in alpn if line}
    want = {(p["src"], p["dst"], str(p["dport"])) for p in doc["pairs"] if p["family"] == "c2_mqtt_443_alpn"}
    assert want and found == want
