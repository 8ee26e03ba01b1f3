"""Fixtures made by real exporters (fixtures/README.md): brokerwatch decode agrees with tshark, record by record.

Each export capture in fixtures/<format>/ was made by softflowd or pmacctd from fixtures/traffic/beacon_world.pcap
(fixtures/make_fixtures.sh). For each one, tshark (the oracle) and ``brokerwatch decode`` must give the same multiset of
(source, destination, ports, protocol, bytes, packets) records, and the C2 pair named by the labels must be there with
one record per beacon connection.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import struct
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import FIXTURES, REPO, require_tool

LABELS = FIXTURES / "traffic" / "beacon_world.labels.json"
TRAFFIC = FIXTURES / "traffic" / "beacon_world.pcap"

#: Export fixtures: path, the UDP port make_fixtures.sh exported to, the decoder module, its event.dataset.
EXPORTS = [
    ("netflow_v5/softflowd_beacon_world.pcap", 29905, "netflow_v5", "netflow.v5"),
    ("netflow_v9/softflowd_beacon_world.pcap", 29909, "netflow_v9", "netflow.v9"),
    ("netflow_v9/pmacct_beacon_world.pcap", 29919, "netflow_v9", "netflow.v9"),
    ("ipfix/softflowd_beacon_world.pcap", 29910, "ipfix", "ipfix"),
    ("ipfix/pmacct_beacon_world.pcap", 29920, "ipfix", "ipfix"),
    ("sflow/pmacct_beacon_world.pcap", 29943, "sflow_v5", "sflow"),
]

#: tshark fields for one NetFlow/IPFIX record, with the alternative a template may use instead (IPv6 addresses). The
#: traffic is IPv4 only, so concatenating the alternatives never mixes up the record order within a datagram.
CFLOW_FIELDS = {
    "src": ("cflow.srcaddr", "cflow.srcaddrv6"),
    "dst": ("cflow.dstaddr", "cflow.dstaddrv6"),
    "sport": ("cflow.srcport",),
    "dport": ("cflow.dstport",),
    "proto": ("cflow.protocol",),
    "bytes": ("cflow.octets",),
    "packets": ("cflow.packets",),
}


def _decoder_present(module: str) -> bool:
    return (REPO / "collector" / "flows" / f"{module}.py").is_file()


def _uncount_v9(path: Path, out: Path) -> Path:
    """A copy of a capture of NetFlow v9 datagrams (Ethernet/IPv4/UDP, as tcpdump on lo writes them) with every
    header's count set to 0xFFFF.

    RFC 3954 counts template and options records in the header's count; softflowd 1.1.0 counts only data records,
    and tshark stops walking flowsets once it has seen ``count`` records, so it drops the data flowset that follows
    the templates in softflowd's first datagram. With the count out of the way tshark walks every flowset to the end
    of the datagram (brokerwatch walks flowsets by length, as the RFC's collectors should).
    """
    raw = bytearray(path.read_bytes())
    assert raw[:4] == b"\xd4\xc3\xb2\xa1" and struct.unpack_from("<I", raw, 20)[0] == 1, "expected LE pcap, Ethernet"
    off = 24
    while off + 16 <= len(raw):
        incl = struct.unpack_from("<I", raw, off + 8)[0]
        frame = off + 16
        assert raw[frame + 12:frame + 14] == b"\x08\x00" and raw[frame + 14] == 0x45 and raw[frame + 23] == 17
        payload = frame + 14 + 20 + 8
        assert raw[payload:payload + 2] == b"\x00\x09"
        raw[payload + 2:payload + 4] = b"\xff\xff"
        off = frame + incl
    out.write_bytes(bytes(raw))
    return out


def tshark_cflow(path: Path, port: int) -> Counter:
    """NetFlow/IPFIX records of an export capture as tshark sees them: a multiset of (src, dst, sport, dport, proto,
    bytes, packets). Fields of one datagram come comma-separated, in record order."""
    tshark = require_tool("tshark")
    names = [name for alts in CFLOW_FIELDS.values() for name in alts]
    cmd = [tshark, "-r", str(path), "-d", f"udp.port=={port},cflow", "-T", "fields", "-E", "occurrence=a",
           "-E", "separator=\t"]
    for name in names:
        cmd += ["-e", name]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=60).stdout
    flows: Counter = Counter()
    for line in out.splitlines():
        cols = dict(zip(names, line.split("\t")))
        values = {key: [v for a in alts if cols.get(a) for v in cols[a].split(",")]
                  for key, alts in CFLOW_FIELDS.items()}
        n = len(values["src"])
        if n == 0:
            continue  # a datagram of templates only
        assert all(len(v) == n for v in values.values()), f"tshark fields of unequal length in {line!r}"
        for i in range(n):
            flows[(values["src"][i], values["dst"][i], int(values["sport"][i]), int(values["dport"][i]),
                   int(values["proto"][i]), int(values["bytes"][i]), int(values["packets"][i]))] += 1
    return flows


def _walk(node, found: list) -> None:
    """Collect tshark JSON objects of sFlow flow samples (they hold sflow.flow_sample.sampling_rate)."""
    if isinstance(node, dict):
        if "sflow.flow_sample.sampling_rate" in node:
            found.append(node)
            return
        for v in node.values():
            _walk(v, found)
    elif isinstance(node, list):
        for v in node:
            _walk(v, found)


def _find(node, key: str):
    """First value of key anywhere under a tshark JSON node, or None."""
    if isinstance(node, dict):
        if key in node:
            return node[key]
        for v in node.values():
            got = _find(v, key)
            if got is not None:
                return got
    elif isinstance(node, list):
        for v in node:
            got = _find(v, key)
            if got is not None:
                return got
    return None


def tshark_sflow(path: Path, port: int) -> Counter:
    """sFlow flow samples as tshark dissects them (sampled header → ip/tcp/udp): a multiset of (src, dst, sport,
    dport, proto, frame length x rate, rate), the estimate an sFlow collector makes of each sample."""
    tshark = require_tool("tshark")
    out = subprocess.run([tshark, "-r", str(path), "-d", f"udp.port=={port},sflow", "-T", "json"],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    flows: Counter = Counter()
    for frame in json.loads(out):
        samples: list = []
        _walk(frame["_source"]["layers"].get("sflow", {}), samples)
        for smp in samples:
            rate = int(smp["sflow.flow_sample.sampling_rate"])
            inner = _find(smp, "sflow_245.header_tree")
            assert inner is not None and "ip" in inner, "a sample without a dissected IPv4 header"
            ip = inner["ip"]
            l4 = inner.get("tcp") or inner.get("udp") or {}
            sport = l4.get("tcp.srcport", l4.get("udp.srcport", 0))
            dport = l4.get("tcp.dstport", l4.get("udp.dstport", 0))
            length = int(_find(smp, "sflow_245.header.frame_length"))
            flows[(ip["ip.src"], ip["ip.dst"], int(sport), int(dport), int(ip["ip.proto"]), length * rate,
                   rate)] += 1
    return flows


def brokerwatch_records(path: Path) -> list[dict]:
    """Every record ``brokerwatch decode`` prints for a capture."""
    proc = subprocess.run([sys.executable, "-m", "collector.cli", "decode", str(path)], capture_output=True,
                          text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()]


def as_flows(records: list[dict]) -> Counter:
    """The records as the same multiset the tshark readers make."""
    return Counter((r["source"]["ip"], r["destination"]["ip"], r["source"].get("port", 0),
                    r["destination"].get("port", 0), r["network"]["iana_number"], r["network"]["bytes"],
                    r["network"]["packets"]) for r in records)


def _epoch(text: str) -> float:
    """Seconds since the epoch of an RFC 3339 UTC time as ``brokerwatch decode`` prints it."""
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@pytest.fixture(scope="module")
def labels() -> dict:
    return json.loads(LABELS.read_text())


@pytest.mark.parametrize("name,port,module,dataset", EXPORTS, ids=[e[0] for e in EXPORTS])
def test_decode_agrees_with_tshark(name, port, module, dataset, labels, tmp_path):
    if not _decoder_present(module):
        pytest.skip(f"collector/flows/{module}.py is not in the tree yet")
    path = FIXTURES / name
    if dataset == "sflow":
        expected = tshark_sflow(path, port)
    elif dataset == "netflow.v9":
        expected = tshark_cflow(_uncount_v9(path, tmp_path / "uncounted.pcap"), port)
    else:
        expected = tshark_cflow(path, port)
    records = brokerwatch_records(path)
    got = as_flows(records)
    assert sum(expected.values()) > 100, "tshark found almost no flow records: wrong port or dissector?"
    assert sum(got.values()) == sum(expected.values())
    assert got == expected, (f"only brokerwatch: {sorted((got - expected).elements())[:5]}, "
                             f"only tshark: {sorted((expected - got).elements())[:5]}")
    assert {r["event"]["dataset"] for r in records} == {dataset}

    (c2,) = [p for p in labels["pairs"] if p["label"] == "c2"]
    out = {r["source"]["port"] for r in records
           if (r["source"]["ip"], r["destination"]["ip"], r["destination"].get("port"), r["network"]["iana_number"])
           == (c2["src"], c2["dst"], c2["dport"], c2["proto"])}
    back = {r["destination"]["port"] for r in records
            if (r["source"]["ip"], r["destination"]["ip"], r["source"].get("port"), r["network"]["iana_number"])
            == (c2["dst"], c2["src"], c2["dport"], c2["proto"])}
    seen = {(r["source"]["ip"], r["destination"]["ip"], r["destination"].get("port"), r["network"]["iana_number"])
            for r in records}
    missing = [p for p in labels["pairs"] if (p["src"], p["dst"], p["dport"], p["proto"]) not in seen]
    # ... and the labels cover every record, whichever way it runs.
    labelled = {(p["src"], p["dst"], p["dport"], p["proto"]) for p in labels["pairs"]}
    unlabelled = [r for r in records
                  if (r["source"]["ip"], r["destination"]["ip"], r["destination"].get("port"),
                      r["network"]["iana_number"]) not in labelled
                  and (r["destination"]["ip"], r["source"]["ip"], r["source"].get("port"),
                       r["network"]["iana_number"]) not in labelled]
    assert not unlabelled
    if dataset == "sflow":
        # Sampled 1 in 2 at random: a beacon connection has 8 packets out (all unsampled: 0.4%) and 4 back (6%).
        rate = records[0]["brokerwatch"]["sampling_rate"]
        assert rate == 2
        assert 0.9 * c2["connections"] <= len(out) <= c2["connections"]
        assert 0.75 * c2["connections"] <= len(back) <= c2["connections"]
        assert [p["label"] for p in missing].count("c2") == 0
    else:
        # Flow exporters: the C2 pair has one record per beacon connection each way (short connections are never
        # sliced by the active timeout), and every labelled initiator pair is there.
        assert len(out) == len(back) == c2["connections"]
        assert not missing
        # Times come from the capture (softflowd -a, pmacct's packet times): each beacon's outbound record starts at
        # its labelled beat (the SYN) and lasts well under a second. NetFlow v9 headers carry whole seconds beside
        # a millisecond uptime, so their times can be up to 1 s early.
        starts = sorted(_epoch(r["event"]["start"]) for r in records
                        if (r["source"]["ip"], r["destination"]["ip"], r["destination"].get("port"))
                        == (c2["src"], c2["dst"], c2["dport"]))
        assert len(starts) == len(c2["beats"])
        assert max(abs(a - b) for a, b in zip(starts, c2["beats"])) < 1.0
        t0, t1 = labels["start"], labels["start"] + labels["duration_s"]
        for r in records:
            start, end = _epoch(r["event"]["start"]), _epoch(r["event"]["end"])
            assert t0 - 1 <= start <= end <= t1, r


def test_labels_match_the_traffic(labels):
    """tshark finds as many MQTT CONNECTs from the C2 host to its broker as the labels count connections."""
    tshark = require_tool("tshark")
    (c2,) = [p for p in labels["pairs"] if p["label"] == "c2"]
    flt = f"mqtt.msgtype == 1 && ip.src == {c2['src']} && ip.dst == {c2['dst']} && tcp.dstport == {c2['dport']}"
    out = subprocess.run([tshark, "-r", str(TRAFFIC), "-Y", flt, "-T", "fields", "-e", "tcp.srcport"],
                         capture_output=True, text=True, check=True, timeout=60).stdout.split()
    assert len(out) == len(set(out)) == c2["connections"]
    assert c2["connections"] > 150  # ~3 h at a 51 s mean interval, less 10% missed beats


def test_traffic_is_reproducible(tmp_path, labels):
    """The generator with the recorded seed rewrites the committed capture and labels byte for byte."""
    pcap, lab = tmp_path / "t.pcap", tmp_path / "t.json"
    subprocess.run([sys.executable, str(FIXTURES / "gen_traffic.py"), str(pcap), str(lab), "--seed",
                    str(labels["seed"])], check=True, capture_output=True, timeout=120)
    assert hashlib.sha256(pcap.read_bytes()).digest() == hashlib.sha256(TRAFFIC.read_bytes()).digest()
    assert lab.read_text() == LABELS.read_text()
