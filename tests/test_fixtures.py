"""Fixtures made by real exporters (fixtures/README.md): brokerwatch decode agrees with tshark, record by record.

Each export capture in fixtures/<format>/ was made by softflowd or pmacctd from fixtures/traffic/beacon_world.pcap
(fixtures/make_fixtures.sh). For each one, tshark (the oracle) and ``brokerwatch decode`` must give the same multiset of
(source, destination, ports, protocol, bytes, packets) records, and the C2 pair named by the labels must be there with
one record per beacon connection.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import FIXTURES, REPO, require_tool

LABELS = FIXTURES / "traffic" / "beacon_world.labels.json"
TRAFFIC = FIXTURES / "traffic" / "beacon_world.pcap"

#: Export fixtures: path, the UDP port make_fixtures.sh exported to, the tshark dissector, the decoder module.
EXPORTS = [
    ("netflow_v5/softflowd_beacon_world.pcap", 29905, "cflow", "netflow_v5"),
]

#: tshark fields for one flow record, with the alternatives a template may use instead (IPv6 addresses). The traffic
#: is IPv4 only, so concatenating the alternatives never mixes up the record order within a datagram.
TSHARK_FIELDS = {
    "src": ("cflow.srcaddr", "cflow.srcaddrv6"),
    "dst": ("cflow.dstaddr", "cflow.dstaddrv6"),
    "sport": ("cflow.srcport",),
    "dport": ("cflow.dstport",),
    "proto": ("cflow.protocol",),
    "bytes": ("cflow.octets",),
    "packets": ("cflow.packets",),
}


def _decoder_present(module: str) -> bool:
    return (REPO / "collector" / "decoders" / f"{module}.py").is_file()


def tshark_flows(path: Path, port: int, dissector: str) -> Counter:
    """Flow records of an export capture as tshark sees them: a multiset of (src, dst, sport, dport, proto, bytes,
    packets). Fields of one datagram come comma-separated, in record order."""
    tshark = require_tool("tshark")
    names = [name for alts in TSHARK_FIELDS.values() for name in alts]
    cmd = [tshark, "-r", str(path), "-d", f"udp.port=={port},{dissector}", "-T", "fields", "-E", "occurrence=a",
           "-E", "separator=\t"]
    for name in names:
        cmd += ["-e", name]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=60).stdout
    flows: Counter = Counter()
    for line in out.splitlines():
        cols = dict(zip(names, line.split("\t")))
        values = {}
        for key, alts in TSHARK_FIELDS.items():
            lists = [cols.get(a, "").split(",") for a in alts if cols.get(a)]
            values[key] = [v for part in lists for v in part]
        n = len(values["src"])
        if n == 0:
            continue  # a template-only datagram
        assert all(len(v) == n for v in values.values()), f"tshark fields of unequal length in {line!r}"
        for i in range(n):
            flows[(values["src"][i], values["dst"][i], int(values["sport"][i]), int(values["dport"][i]),
                   int(values["proto"][i]), int(values["bytes"][i]), int(values["packets"][i]))] += 1
    return flows


def brokerwatch_records(path: Path) -> list[dict]:
    """Every record ``brokerwatch decode`` prints for a capture."""
    proc = subprocess.run([sys.executable, "-m", "collector.cli", "decode", str(path)], capture_output=True,
                          text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()]


def as_flows(records: list[dict]) -> Counter:
    """The records as the same multiset tshark_flows makes."""
    return Counter((r["source"]["ip"], r["destination"]["ip"], r["source"].get("port", 0),
                    r["destination"].get("port", 0), r["network"]["iana_number"], r["network"]["bytes"],
                    r["network"]["packets"]) for r in records)


@pytest.fixture(scope="module")
def labels() -> dict:
    return json.loads(LABELS.read_text())


@pytest.mark.parametrize("name,port,dissector,module", EXPORTS, ids=[e[0] for e in EXPORTS])
def test_decode_agrees_with_tshark(name, port, dissector, module, labels):
    if not _decoder_present(module):
        pytest.skip(f"collector/decoders/{module}.py is not in the tree yet")
    path = FIXTURES / name
    expected = tshark_flows(path, port, dissector)
    records = brokerwatch_records(path)
    got = as_flows(records)
    assert sum(expected.values()) > 100, "tshark found almost no flow records: wrong port or dissector?"
    assert sum(got.values()) == sum(expected.values())
    assert got == expected, (f"only brokerwatch: {sorted((got - expected).elements())[:5]}, "
                             f"only tshark: {sorted((expected - got).elements())[:5]}")
    assert {r["event"]["dataset"] for r in records} == {module.replace("_", ".") if module.startswith("netflow")
                                                        else {"sflow_v5": "sflow"}.get(module, module)}

    # The labelled C2 pair is there, one record per beacon connection each way (short connections are never sliced).
    (c2,) = [p for p in labels["pairs"] if p["label"] == "c2"]
    out = [r for r in records if (r["source"]["ip"], r["destination"]["ip"], r["destination"].get("port"),
                                  r["network"]["iana_number"]) == (c2["src"], c2["dst"], c2["dport"], c2["proto"])]
    back = [r for r in records if (r["source"]["ip"], r["destination"]["ip"], r["source"].get("port"),
                                   r["network"]["iana_number"]) == (c2["dst"], c2["src"], c2["dport"], c2["proto"])]
    assert len({r["source"]["port"] for r in out}) == c2["connections"]
    assert len({r["destination"]["port"] for r in back}) == c2["connections"]
    # Every labelled initiator pair shows up in the export.
    seen = {(r["source"]["ip"], r["destination"]["ip"], r["destination"].get("port"), r["network"]["iana_number"])
            for r in records}
    missing = [p for p in labels["pairs"] if (p["src"], p["dst"], p["dport"], p["proto"]) not in seen]
    assert not missing


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
