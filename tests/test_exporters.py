"""The evaluation's exporters (bench/detection/exporters.py): softflowd and pmacct run on a generated hour of raw
traffic (bench/detection/raw_day.py), their exports captured on loopback and written as pcaps replay reads.

Checked against the raw pcap itself: every export decodes with ``brokerwatch decode --count`` with nothing rejected;
the flow exporters without active timeout export one record per connection direction (the raw pcap's directional
5-tuples, exactly); every raw packet is accounted for; the 300 s active timeout slices the hour-long session; each
sFlow sample carries the capture time of a packet of its own 5-tuple; and the sequence check sees a lost datagram.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from analytics.schema import ip_to_words
from bench.detection import exporters as ex
from bench.detection import raw_day
from collector.pcap import datagrams as pcap_datagrams
from collector.pcap import frames, ip_packet

pytestmark = pytest.mark.live

FLOW_INPUTS = [n for n, i in ex.INPUTS.items() if i.exporter in ("softflowd", "pmacct_nfprobe")]
EXPORTED = [n for n, i in ex.INPUTS.items() if i.exporter]
PERSISTENT = raw_day.PERSISTENT  # one MQTT session for the whole capture, keepalives every 60 s
EXPINT = ex.TIMEOUTS["expint"]


def _need(inp: ex.Input) -> None:
    binary = "softflowd" if inp.exporter == "softflowd" else "pmacctd"
    if ex.tool(binary) is None:
        pytest.skip(f"{binary} is not installed (Makefile TEST_DEBS installs it)")


@pytest.fixture(scope="module")
def hour(tmp_path_factory):
    """A generated hour of raw traffic: the pcap path and its directional 5-tuples with each one's frame times."""
    d = tmp_path_factory.mktemp("raw_hour")
    raw = d / "raw.pcap"
    raw_day.generate(str(raw), hours=1.0, seed=7)
    tuples: dict[tuple, list[int]] = {}
    for ts, lt, frame in frames(str(raw)):
        p = ip_packet(lt, frame)
        ihl = (p[0] & 15) * 4
        key = (p[12:16], p[16:20], p[ihl] << 8 | p[ihl + 1], p[ihl + 2] << 8 | p[ihl + 3], p[9])
        tuples.setdefault(key, []).append(ts)
    return raw, tuples


@pytest.fixture(scope="module")
def exports(hour, tmp_path_factory):
    """Each exporter's export of the hour, once: name -> (stats, out pcap), or the reason it is missing."""
    raw, _ = hour
    d = tmp_path_factory.mktemp("exports")
    out = {}
    for name in EXPORTED:
        inp = ex.INPUTS[name]
        binary = "softflowd" if inp.exporter == "softflowd" else "pmacctd"
        if ex.tool(binary) is None:
            continue
        out[name] = (ex.export(name, raw, d / f"{name}.pcap", d / name), d / f"{name}.pcap")
    return out


def _decoded(path):
    payloads = [d.payload for d in pcap_datagrams(str(path))]
    batch, _counters, _per, rejected = ex.decode(payloads, [d.ts_ns for d in pcap_datagrams(str(path))])
    return batch.columns, rejected


def _keys(c) -> list[tuple]:
    def ip(lo):
        return int(lo & 0xFFFFFFFF).to_bytes(4, "big")
    return [(ip(s), ip(d), int(sp), int(dp), int(p)) for s, d, sp, dp, p in
            zip(c["src_lo"], c["dst_lo"], c["src_port"], c["dst_port"], c["proto"])]


@pytest.mark.parametrize("name", EXPORTED)
def test_export_decodes_without_rejection_or_loss(name, exports):
    _need(ex.INPUTS[name])
    stats, path = exports[name]
    proc = subprocess.run([sys.executable, "-m", "collector.cli", "decode", "--count", "-q", str(path)],
                          capture_output=True, text=True, timeout=120, check=True)
    count = json.loads(proc.stdout)
    assert count["rejected"] == {}
    assert sum(count["records"].values()) == stats["records"] > 0
    assert set(count["records"]) == {ex.INPUTS[name].dataset}
    assert stats["sequence_gaps"] == 0 and stats["kernel_drops"] == 0
    assert stats["datagrams"] == len(list(pcap_datagrams(str(path))))


@pytest.mark.parametrize("name", FLOW_INPUTS)
def test_flow_records_account_for_every_raw_packet(name, exports, hour):
    _need(ex.INPUTS[name])
    _raw, tuples = hour
    stats, path = exports[name]
    c, _ = _decoded(path)
    assert stats["packets_accounted"] == int(c["packets"].sum()) == sum(len(t) for t in tuples.values())
    assert set(_keys(c)) == set(tuples)  # every record is a 5-tuple of the raw pcap, and every one is exported
    assert stats["evicted_before_due"] == 0
    # stamped with the export header's time, which follows the capture: never before a record's end
    ts = np.asarray([d.ts_ns for d in pcap_datagrams(str(path))])
    assert (np.diff(ts) >= 0).all()
    assert ts.min() >= min(min(t) for t in tuples.values())


@pytest.mark.parametrize("name", [n for n in FLOW_INPUTS if not ex.INPUTS[n].active])
def test_no_active_timeout_one_record_per_direction(name, exports, hour):
    _need(ex.INPUTS[name])
    _raw, tuples = hour
    c, _ = _decoded(exports[name][1])
    keys = _keys(c)
    assert len(keys) == len(tuples) and sorted(keys) == sorted(tuples)
    session = [i for i, k in enumerate(keys) if k[0] == bytes(map(int, PERSISTENT[0].split(".")))
               and k[3] == PERSISTENT[2]]
    assert len(session) == 1  # the hour-long session is one record


@pytest.mark.parametrize("name", [n for n in FLOW_INPUTS if ex.INPUTS[n].active])
def test_active_timeout_slices_the_long_session(name, exports, hour):
    """Records of the hour-long session last maxlife plus at most a keepalive gap and the exporter's expiry lag.

    Both exporters cut a flow at its first packet more than maxlife after its start (softflowd in file mode, and
    pmacct, which checks expiry in capture time only as packets arrive): with 60 s keepalives a slice lasts
    300-360 s, and up to two expiry intervals more when the check comes late (pmacct: 480 s seen); never the hour.
    """
    _need(ex.INPUTS[name])
    _raw, tuples = hour
    c, _ = _decoded(exports[name][1])
    src = ip_to_words(PERSISTENT[0])[1]
    out = (c["src_lo"] == src) & (c["dst_port"] == PERSISTENT[2])
    dur = (c["end_ns"][out] - c["start_ns"][out]) / 1e9
    span = (max(max(t) for k, t in tuples.items() if k[3] == PERSISTENT[2] and k[4] == 6)
            - min(min(t) for k, t in tuples.items() if k[3] == PERSISTENT[2] and k[4] == 6)) / 1e9
    assert span > 3000
    assert len(dur) >= span // (300 + 60 + 2 * EXPINT)
    assert dur.max() <= 300 + 60 + 2 * EXPINT + 1
    assert np.median(dur) <= 300 + 60 + EXPINT
    # the slices follow one another: together they hold every packet of the session
    key = next(k for k in tuples if k[0] == bytes(map(int, PERSISTENT[0].split("."))) and k[3] == PERSISTENT[2])
    assert int(c["packets"][out].sum()) == len(tuples[key])


def test_sflow_samples_carry_their_packets_times(exports, hour):
    inp = ex.INPUTS["pmacct_sflow8"]
    _need(inp)
    _raw, tuples = hour
    stats, path = exports["pmacct_sflow8"]
    c, rejected = _decoded(path)
    # one row per flow sample; pmacct may add a counter sample on its wall-clock timer (no row, no packet)
    assert not rejected and len(c["start_ns"]) == stats["flow_samples"] <= stats["samples"]
    n_raw = sum(len(t) for t in tuples.values())
    assert n_raw / ex.SFLOW_RATE / 2 < stats["flow_samples"] < n_raw / ex.SFLOW_RATE * 2
    assert (c["sampling_rate"] == ex.SFLOW_RATE).all()
    first = min(min(t) for t in tuples.values())
    last = max(max(t) for t in tuples.values())
    assert first <= c["start_ns"].min() and c["end_ns"].max() <= last and stats["times_within_raw"]
    for k, t0, t1 in zip(_keys(c), c["start_ns"].tolist(), c["end_ns"].tolist()):
        assert t0 == t1 and t0 in tuples[k]  # the capture time of a packet of its own 5-tuple
    # the datagrams as written: one capture time each, renumbered without a gap
    assert stats["sequence_gaps"] == 0 and stats["sampler_drops"] == 0


def test_sequence_check_sees_a_lost_datagram(exports):
    """Dropping one datagram from each real export (v5, v9, IPFIX) is seen as a gap; the whole export has none."""
    seen = 0
    for name in ("softflowd_v5", "softflowd_v9", "softflowd_ipfix", "pmacct_v9_active300"):
        if name not in exports:
            continue
        payloads = [d.payload for d in pcap_datagrams(str(exports[name][1]))]
        if len(payloads) < 3:
            continue
        _b, _c, per, _r = ex.decode(payloads, [0] * len(payloads))
        assert ex.flow_sequence_gaps(payloads, per) == 0
        k = len(payloads) // 2
        assert ex.flow_sequence_gaps(payloads[:k] + payloads[k + 1:], np.delete(per, k)) > 0, name
        seen += 1
    if not seen:
        pytest.skip("no exporter installed (Makefile TEST_DEBS installs softflowd and pmacct)")
