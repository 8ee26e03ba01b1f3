"""The flow meter (collector/flows/meter.py): softflowd agrees on the flows, the kernels equal their Python twins.

softflowd reading a capture (``-r``) never expires a flow on time (its main loop only force-expires a full table), so
the comparison runs the meter with ``expint=0``, the same: every flow leaves at the end, and softflowd's one record
per direction must equal the meter's two directions of the flow, as (source, destination, ports, protocol, bytes,
packets) multisets. The timeouts themselves are checked against the plain-Python twin (tests/reference/meter_ref.py).
"""

from __future__ import annotations

import socket
import subprocess
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analytics.schema import FlowBatchBuilder, words_to_ip
from collector.flows.decoders import FlowDecoders
from collector.flows.meter import (PACKET_DTYPE, PARSE_REASONS, WELL_KNOWN_SERVER_PORTS, FlowMeter, MeterParams,
                                   client_view, meter_file, parse_packets)
from collector.metrics import Counters
from collector.pcap import frame_blocks, frames
from tests.conftest import FIXTURES, require_tool
from tests.reference.meter_ref import MeterRef, parse_frame

TRAFFIC = FIXTURES / "traffic" / "beacon_world.pcap"


def _directions(flows: np.ndarray) -> Counter:
    """Both directions of every flow as softflowd exports them: one record per direction that has packets."""
    out = Counter()
    for f in flows:
        a = words_to_ip(f["a_hi"], f["a_lo"])
        b = words_to_ip(f["b_hi"], f["b_lo"])
        if f["packets_a"]:
            out[(a, b, int(f["a_port"]), int(f["b_port"]), int(f["proto"]), int(f["bytes_a"]), int(f["packets_a"]))] += 1
        if f["packets_b"]:
            out[(b, a, int(f["b_port"]), int(f["a_port"]), int(f["proto"]), int(f["bytes_b"]), int(f["packets_b"]))] += 1
    return out


def _softflowd(capture: Path) -> Counter:
    """softflowd's IPFIX export of a capture, received on loopback and decoded, as a multiset of records."""
    exe = require_tool("softflowd")
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    port = sock.getsockname()[1]
    proc = subprocess.run([exe, "-d", "-r", str(capture), "-n", f"127.0.0.1:{port}", "-v", "10", "-m", "65536"],
                          capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    sock.settimeout(0.5)
    datagrams = []
    try:
        while True:
            datagrams.append(sock.recv(65535))
    except socket.timeout:
        pass
    sock.close()
    builder = FlowBatchBuilder()
    counters = Counters()
    FlowDecoders(counters).decode_many(datagrams, [(0, 1)] * len(datagrams), 0, builder)
    b = builder.build()
    return Counter((words_to_ip(b.src_hi[i], b.src_lo[i]), words_to_ip(b.dst_hi[i], b.dst_lo[i]), int(b.src_port[i]),
                    int(b.dst_port[i]), int(b.proto[i]), int(b.bytes[i]), int(b.packets[i])) for i in range(len(b)))


def _mixed_capture(path: Path) -> Path:
    """IPv6, VLAN-tagged, ICMP, UDP and TCP frames with and without a SYN, written by scapy."""
    from scapy.all import ICMP, IP, TCP, UDP, Dot1Q, Ether, IPv6, Raw, wrpcap

    t0 = 1_768_435_200.0
    pkts = []
    for k in range(40):
        t = t0 + k * 7.5
        v6 = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IPv6(src="2001:db8::10", dst="2001:db8:1::50") / TCP(sport=40000 + k % 3, dport=8883,
                                                                             flags="PA") / Raw(b"x" * (k % 50))
        v6.time = t
        vlan = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / Dot1Q(vlan=42) / IP(src="192.0.2.7", dst="198.51.100.9") / UDP(sport=5000, dport=1883) / \
            Raw(b"\x30\x05\x00\x01a" + b"p" * k)
        vlan.time = t + 1
        back = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(src="198.51.100.9", dst="192.0.2.7") / UDP(sport=1883, dport=5000) / Raw(b"ok")
        back.time = t + 1.5
        icmp = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(src="192.0.2.8", dst="198.51.100.1") / ICMP(type=8)
        icmp.time = t + 2
        syn = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(src="203.0.113.5", dst="192.0.2.20") / TCP(sport=1883, dport=50000 + k, flags="S")
        syn.time = t + 3
        pkts += [v6, vlan, back, icmp, syn]
    wrpcap(str(path), pkts)
    return path


@pytest.mark.live
def test_decode_agrees_with_softflowd_on_beacon_world():
    flows, meter = meter_file(str(TRAFFIC), MeterParams(expint=0))
    ours = _directions(flows)
    theirs = _softflowd(TRAFFIC)
    assert sum(theirs.values()) == 600
    assert ours == theirs
    assert meter.parse_counts[0] == meter.packets


@pytest.mark.live
def test_decode_agrees_with_softflowd_on_ipv6_vlan_icmp(tmp_path):
    capture = _mixed_capture(tmp_path / "mixed.pcap")
    flows, _ = meter_file(str(capture), MeterParams(expint=0))
    ours = _directions(flows)
    # ICMP: the meter puts type * 256 + code in the destination port (as NetFlow v5 and Cisco do); softflowd's IPFIX
    # template carries it in icmpTypeCodeIPv4 instead, and its destination port is 0
    assert ("192.0.2.8", "198.51.100.1", 0, 8 * 256, 1, 1120, 40) in ours
    ours = Counter({(k[:3] + (0,) + k[4:] if k[4] == 1 else k): v for k, v in ours.items()})
    assert ours == _softflowd(capture)


def _ref_flows(path: Path, params: MeterParams) -> list[dict]:
    ref = MeterRef(params, set(WELL_KNOWN_SERVER_PORTS))
    for ts, lt, frame in frames(str(path)):
        ref.packet(ts, parse_frame(frame, lt))
    return ref.flush()


def _as_tuples_kernel(flows: np.ndarray) -> list[tuple]:
    return sorted((int(f["seq"]), int(f["start_ns"]), int(f["end_ns"]), int(f["bytes_a"]), int(f["bytes_b"]),
                   int(f["packets_a"]), int(f["packets_b"]), int(f["client"]), int(f["strength"]), int(f["reason"]),
                   int(f["a_port"]), int(f["b_port"])) for f in flows)


def _as_tuples_ref(flows: list[dict]) -> list[tuple]:
    return sorted((f["seq"], f["start"], f["end"], f["bytes"][0], f["bytes"][1], f["packets"][0], f["packets"][1],
                   f["client"], f["strength"], f["reason"], f["a"][1], f["b"][1]) for f in flows)


@pytest.mark.parametrize("params", [
    MeterParams(tcp=3600, tcp_fin=60, tcp_rst=60, udp=300, maxlife=1800, expint=60),
    MeterParams(tcp=120, tcp_fin=5, udp=30, maxlife=300, expint=10, max_flows=16),
], ids=["fixture-timeouts", "short-timeouts-small-table"])
def test_kernel_equals_python_twin_with_timeouts(params):
    flows, _ = meter_file(str(TRAFFIC), params)
    ref = _ref_flows(TRAFFIC, params)
    assert len(flows) > 300  # the timeouts cut flows that softflowd's file mode keeps whole
    assert _as_tuples_kernel(flows) == _as_tuples_ref(ref)


def test_flows_come_out_client_to_server():
    flows, _ = meter_file(str(TRAFFIC), MeterParams(expint=0))
    col = client_view(flows)
    c2 = (col["dst_port"] == 1883) & (col["dst_lo"] == (0xFFFF00000000 | 0xCB007132))  # 203.0.113.50
    assert c2.sum() == 189  # one flow per beacon connection, both directions in it
    assert (col["reverse_packets"][c2] > 0).all()
    assert not ((col["src_port"] == 1883) & (col["dst_port"] > 1024)).any()  # no broker → client "pair"


def _frame_block(frames_: list[bytes], linktype: int = 1):
    buf = np.frombuffer(b"".join(frames_), np.uint8) if frames_ else np.zeros(0, np.uint8)
    lens = np.array([len(f) for f in frames_], np.int64)
    offs = np.concatenate([[0], np.cumsum(lens)[:-1]]).astype(np.int64) if frames_ else np.zeros(0, np.int64)
    pk = np.zeros(len(frames_), PACKET_DTYPE)
    parse_packets(buf, offs, lens, np.full(len(frames_), linktype, np.int64), np.zeros(len(frames_), np.int64), pk)
    return pk


def test_tunnels_are_metered_by_their_inner_headers():
    from scapy.all import GRE, IP, TCP, UDP, VXLAN, Dot1Q, Ether, IPv6
    from scapy.contrib.mpls import MPLS

    inner = IP(src="10.1.1.1", dst="203.0.113.50") / TCP(sport=40001, dport=1883, flags="S")
    cases = {
        "gre": (Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(src="192.0.2.1", dst="192.0.2.2") / GRE() / inner, 1),
        "gre-eth": (Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(src="192.0.2.1", dst="192.0.2.2") / GRE(proto=0x6558) / Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / inner, 1),
        "vxlan": (Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(src="192.0.2.1", dst="192.0.2.2") / UDP(sport=1234, dport=4789) / VXLAN(vni=7) /
                  Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / Dot1Q(vlan=3) / inner, 2),
        "ipip": (Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(src="192.0.2.1", dst="192.0.2.2") / inner, 3),
        "6in4": (Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(src="192.0.2.1", dst="192.0.2.2") /
                 IPv6(src="2001:db8::1", dst="2001:db8::2") / TCP(sport=40001, dport=1883, flags="S"), 3),
        "mpls": (Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / MPLS(label=100, s=1) / inner, 4),
    }
    for name, (pkt, tunnel) in cases.items():
        raw = bytes(pkt)
        pk = _frame_block([raw])[0]
        ref = parse_frame(raw, 1)
        assert pk["status"] == 0 and pk["tunnel"] == tunnel, name
        assert (pk["sport"], pk["dport"], pk["proto"], pk["tcp_flags"]) == (40001, 1883, 6, 2), name
        assert (int(pk["src_hi"]), int(pk["src_lo"])) == ref["src"] and pk["bytes"] == ref["bytes"], name


frame_bytes = st.binary(min_size=0, max_size=120)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(frame_bytes, max_size=20), st.sampled_from([0, 1, 101, 113, 276, 147]))
def test_parse_equals_twin_on_any_bytes(frames_, linktype):
    pk = _frame_block(frames_, linktype)
    for raw, got in zip(frames_, pk):
        ref = parse_frame(raw, linktype)
        assert got["status"] == ref["status"]
        assert got["status"] < len(PARSE_REASONS)
        if ref["status"] == 0:
            assert (int(got["src_lo"]), int(got["dst_lo"]), int(got["sport"]), int(got["dport"]), int(got["proto"]),
                    int(got["bytes"]), int(got["tunnel"])) == \
                   (ref["src"][1], ref["dst"][1], ref["sport"], ref["dport"], ref["proto"], ref["bytes"],
                    ref["tunnel"])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 5), st.sampled_from([6, 17, 1]),
                          st.sampled_from([0, 2, 0x12, 0x10, 0x11, 0x04]), st.integers(0, 400),
                          st.integers(40, 1500)), max_size=120))
def test_table_equals_twin_on_generated_packets(spec):
    params = MeterParams(tcp=60, tcp_fin=5, tcp_rst=3, udp=20, icmp=10, general=30, maxlife=100, expint=4,
                         max_flows=8)
    pk = np.zeros(len(spec), PACKET_DTYPE)
    ref = MeterRef(params, set(WELL_KNOWN_SERVER_PORTS))
    t = 1_700_000_000 * 10**9
    ports = (1883, 443, 50000, 50001, 999, 8000)
    for i, (s, d, proto, flags, gap, size) in enumerate(spec):
        t += gap * 10**8
        rec = {"status": 0, "src": (0, 0xFFFF00000000 | s), "dst": (0, 0xFFFF00000000 | (d + 100)),
               "sport": ports[s], "dport": ports[d], "proto": proto, "tcp_flags": flags if proto == 6 else 0,
               "bytes": size}
        pk[i]["src_lo"], pk[i]["dst_lo"] = rec["src"][1], rec["dst"][1]
        pk[i]["sport"], pk[i]["dport"], pk[i]["proto"] = rec["sport"], rec["dport"], proto
        pk[i]["tcp_flags"], pk[i]["bytes"], pk[i]["ts_ns"] = rec["tcp_flags"], size, t
        ref.packet(t, rec)
    meter = FlowMeter(params)
    done, _, _ = meter.meter(pk, np.zeros(1, np.uint8))
    flows = np.concatenate(done + [meter.flush()])
    assert _as_tuples_kernel(flows) == _as_tuples_ref(ref.flush())
