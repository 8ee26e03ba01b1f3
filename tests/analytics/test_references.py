"""The benchmark's references behave like the tools they stand for.

RITA: every table of RITA v5's own unit tests for the beacon score (analysis/beacons_test.go, extracted into
tests/reference/rita_beacon_vectors.json by tests/reference/rita_vectors_from_go.py) gives the same numbers here, to
RITA's own tolerances. Elastic: the numba port of the transform's reduce_script agrees with a line-by-line Python
transliteration (tests/reference/elastic_ref.py) on random bucket vectors, and vectors derived from the script's
definitions give the flags it defines. Both, end to end, on the real exporters' records of fixtures/traffic.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from analytics.config import Config
from bench.detection import references as R
from tests.conftest import FIXTURES
from tests.reference.elastic_ref import reduce_script

VECTORS = json.loads((Path(__file__).parents[1] / "reference" / "rita_beacon_vectors.json").read_text())["tests"]


def cases(test: str):
    """pytest params of one Go test table, named as in RITA; a field the table leaves out is Go's zero value."""
    return [pytest.param(defaultdict(int, c), id=f"{test}:{c['name']}") for c in VECTORS[test]["cases"]]


def _int_keys(d):
    return None if d is None else {int(k): v for k, v in d.items()}


def _raises(expected_error: bool, fn, *args):
    if expected_error:
        with pytest.raises(R.RitaError):
            fn(*args)
        return None
    return fn(*args)


# ------------------------------------------------------------------------------------------------ RITA tables


@pytest.mark.parametrize("c", cases("TestGetBeaconScore"))
def test_rita_beacon_score(c):
    got = _raises(c["expectedError"], R.beacon_score, c["tsScore"], c["tsWeight"], c["dsScore"], c["dsWeight"],
                  c["durScore"], c["durWeight"], c["histScore"], c["histWeight"])
    if got is not None:
        assert got == pytest.approx(c["expectedScore"], abs=0.001)


@pytest.mark.parametrize("c", cases("TestGetTimestampScore"))
def test_rita_timestamp_score(c):
    got = _raises(c["expectedError"], R.timestamp_score, c["tsList"])
    if got is not None:
        score, skew, mad, intervals, counts, mode, mode_count = got
        assert (intervals, counts, mode, mode_count) == (c["expectedUniqueIntervals"],
                                                         c["expectedUniqueIntervalCounts"], c["expectedTSMode"],
                                                         c["expectedTSModeCount"])
        assert (skew, mad, score) == pytest.approx((c["expectedSkew"], c["expectedMAD"], c["expectedScore"]),
                                                   abs=0.001)


@pytest.mark.parametrize("c", cases("TestGetDataSizeScore"))
def test_rita_datasize_score(c):
    got = _raises(c["expectedError"], R.datasize_score, c["bytesList"])
    if got is not None:
        score, skew, mad, sizes, counts, mode, mode_count = got
        assert (sizes, counts, mode_count) == (c["expectedUniqueSizes"], c["expectedUniqueSizeCounts"],
                                               c["expectedDSModeCount"])
        assert (mode, skew, mad, score) == pytest.approx(
            (c["expectedDSMode"], c["expectedSkew"], c["expectedMAD"], c["expectedScore"]), abs=0.001)


@pytest.mark.parametrize("c", cases("TestCalculateStatisticalScore"))
def test_rita_statistical_score(c):
    got = _raises(c["expectedError"], R.statistical_score, c["values"], c["defaultMadScore"])
    if got is not None:
        assert got == pytest.approx((c["expectedScore"], c["expectedSkew"], c["expectedMAD"]), abs=0.001)


@pytest.mark.parametrize("c", cases("TestGetDurationScore"))
def test_rita_duration_score(c):
    got = _raises(c["expectedError"], R.duration_score, c["datasetMin"], c["datasetMax"], c["histMin"], c["histMax"],
                  c["totalBars"], c["longestConsecutiveRun"], c["minHoursThreshold"], c["idealConsistencyHours"])
    if got is not None:
        assert got == pytest.approx((c["expectedCoverage"], c["expectedConsistency"], c["expectedScore"]), abs=0.001)


@pytest.mark.parametrize("c", cases("TestGetHistogramScore"))
def test_rita_histogram_score(c):
    got = _raises(c["expectedError"], R.histogram_score, c["datasetMin"], c["datasetMax"], c["tsList"],
                  c["modalSensitivity"], c["bimodalOutlierRemoval"], c["minHoursForBimodalAnalysis"],
                  c["beaconTimeSpan"])
    if got is not None:
        hist, freq, bars, longest, score = got
        assert (hist, freq, bars, longest) == (c["expectedHistogram"], _int_keys(c["expectedFreqCount"]),
                                               c["expectedTotalBars"], c["expectedLongestRun"])
        assert score == pytest.approx(c["expectedScore"], abs=0.001)


@pytest.mark.parametrize("c", cases("TestCalculateBowleySkewness"))
def test_rita_bowley_skewness(c):
    got = _raises(c["expectedError"], R.bowley_skewness, c["intervalsBetweenTimestamps"])
    if got is not None:
        assert got == pytest.approx((c["expectedSkewness"], c["expectedSkewnessScore"]), abs=0.001)


@pytest.mark.parametrize("c", cases("TestCalculateDistinctCounts"))
def test_rita_distinct_counts(c):
    got = _raises(c["expectError"], R.distinct_counts, c["sortedInput"])
    if got is not None:
        assert got == (c["expectedDistinct"], c["expectedCounts"], c["expectedMode"], c["expectedMaxCount"])


@pytest.mark.parametrize("c", cases("TestCalculateMedianAbsoluteDeviation"))
def test_rita_median_absolute_deviation(c):
    got = _raises(c["expectError"], R.median_absolute_deviation, c["inputData"], c["defaultScore"])
    if got is not None:
        assert got == pytest.approx((c["expectedMAD"], c["expectedScore"]), abs=0.001)


@pytest.mark.parametrize("c", cases("TestComputeHistogramBins"))
def test_rita_histogram_bins(c):
    got = _raises(c["expectedError"], R.histogram_bins, c["startTime"], c["endTime"], c["numBins"])
    if got is not None:
        assert got.tolist() == pytest.approx(c["expectedBinEdges"], abs=0.01)


@pytest.mark.parametrize("c", cases("TestCalculateCoefficientOfVariationScore"))
def test_rita_cv_score(c):
    got = _raises(c["expectedError"], R.cv_score, c["freqList"])
    if got is not None:
        assert got == pytest.approx(c["expectedScore"], abs=0.001)


@pytest.mark.parametrize("c", cases("TestCalculateBimodalFitScore"))
def test_rita_bimodal_fit_score(c):
    got = _raises(c["expectedError"], R.bimodal_fit_score, _int_keys(c["freqCount"]) or {}, c["totalBars"],
                  c["modalOutlierRemoval"], c["minHoursForBimodalAnalysis"])
    if got is not None:
        assert got == pytest.approx(c["expectedScore"], abs=0.001)


@pytest.mark.parametrize("c", cases("TestCreateHistogram"))
def test_rita_create_histogram(c):
    got = _raises(c["expectedError"], R.create_histogram, c["binEdges"], c["tsList"], c["modalSensitivity"])
    if got is not None:
        assert got == (c["expectedHistogram"], _int_keys(c["expectedFreqCount"]), c["expectedTotalBars"],
                       c["expectedLongestRun"])


@pytest.mark.parametrize("c", cases("TestGetFrequencyCounts"))
def test_rita_frequency_counts(c):
    got = _raises(c["expectedError"], R.frequency_counts, c["histogram"], c["bimodalSensitivity"])
    if got is not None:
        assert got == (_int_keys(c["expectedCounts"]), c["totalBars"], c["longestRun"])


def test_every_rita_table_is_ported():
    assert len(VECTORS) == 14 and sum(len(v["cases"]) for v in VECTORS.values()) >= 130


# ------------------------------------------------------------------------------------------------ Elastic

EP = R.ElasticParams()
SCRIPT_PARAMS = {"max_beaconing_bytes_cov": EP.max_beaconing_bytes_cov,
                 "max_beaconing_count_rv": EP.max_beaconing_count_rv, "max_jitter": EP.max_jitter,
                 "min_beaconing_count_autocovariance": EP.min_beaconing_count_autocovariance,
                 "min_not_empty": EP.min_not_empty, "min_number_periods": EP.min_number_periods,
                 "truncate_at": [EP.truncate_lo, EP.truncate_hi]}


def reduce(counts, src, dst, max_jitter=EP.max_jitter):
    """The numba port's fields as a dict."""
    f = R.elastic_reduce(np.asarray(counts, float), np.asarray(src, float), np.asarray(dst, float),
                         EP.max_beaconing_bytes_cov, EP.max_beaconing_count_rv, max_jitter,
                         EP.min_beaconing_count_autocovariance, EP.min_not_empty, EP.min_number_periods,
                         EP.truncate_lo, EP.truncate_hi)
    return dict(zip(R.ELASTIC_FIELDS, f.tolist()))


def _random_group(rng, kind):
    n = 360
    counts = np.zeros(n)
    if kind == "periodic":
        p = int(rng.integers(2, 40))
        counts[int(rng.integers(0, p))::p] = 1
        counts[rng.random(n) < 0.05] = 0
    elif kind == "poisson":
        counts = rng.poisson(rng.uniform(0.05, 3.0), n).astype(float)
    elif kind == "dense":
        counts = rng.integers(1, 4, n).astype(float)
    else:  # a burst somewhere in the window
        a = int(rng.integers(0, 300))
        counts[a:a + int(rng.integers(5, 60))] = rng.integers(0, 5, 1)[0] + 1
    size = rng.choice([rng.normal(300, 1, n), rng.lognormal(6, 1, n)])
    return counts, np.round(np.abs(size)) * counts, np.round(np.abs(rng.normal(80, 2, n))) * counts


@pytest.mark.parametrize("max_jitter", [0.0, 0.2])
def test_elastic_port_agrees_with_the_transliterated_script(max_jitter):
    rng = np.random.default_rng(13)
    seen = set()
    early = 0
    for i in range(40):
        counts, src, dst = _random_group(rng, ("periodic", "poisson", "dense", "burst")[i % 4])
        ref = reduce_script(counts.tolist(), src.tolist(), dst.tolist(), dict(SCRIPT_PARAMS, max_jitter=max_jitter))
        got = reduce(counts, src, dst, max_jitter)
        assert got["interval"] == ref["interval"] and got["non_empty_buckets"] == ref["non_empty_buckets"]
        if "beaconing_score" not in ref:  # returned early
            assert got["beaconing_score"] == 0
            early += 1
            continue
        for k in ("beaconing_score", "low_source_bytes_variation", "low_destination_bytes_variation",
                  "low_count_variation", "periodic", "max_autocovariance_period"):
            assert got[k] == ref[k], (i, k)
        assert got["autocovariance"] == pytest.approx(ref["autocovariance"], rel=1e-9, abs=1e-12)
        seen.add(ref["beaconing_score"])
    assert early and seen >= {1, 3}  # the vectors reach the outcomes that matter


def test_elastic_flags_follow_the_script_definitions():
    n = 360
    # a beacon every 5 minutes for 6 hours, the same size each time: periodic, both byte variations low
    counts = np.zeros(n)
    counts[::5] = 1
    got = reduce(counts, counts * 300, counts * 90)
    assert got["periodic"] and got["max_autocovariance_period"] == 5 and got["autocovariance"] >= 0.7
    assert got["low_source_bytes_variation"] and got["low_destination_bytes_variation"]
    assert got["beaconing_score"] == 3
    # every minute, once: the count per bucket varies less than 10 % of its mean (low_count_variation)
    ones = np.ones(n)
    got = reduce(ones, ones * np.arange(100, 100 + n), ones * 0)
    assert got["low_count_variation"] and not got["low_source_bytes_variation"]
    assert not got["low_destination_bytes_variation"]  # no destination bytes: not enough non-empty buckets
    assert got["beaconing_score"] == 1
    # six non-empty buckets are too few (min_number_periods + 1 = 7): the script returns early
    few = np.zeros(n)
    few[[3, 50, 100, 150, 200, 250]] = 1
    assert reduce(few, few * 300, few * 90)["beaconing_score"] == 0
    # sizes spread far beyond a 5 % coefficient of variation (inside the 10-80 % percentiles) are not "low"
    rng = np.random.default_rng(3)
    got = reduce(ones, rng.integers(100, 10000, n).astype(float), ones * 0)
    assert not got["low_source_bytes_variation"]


def test_elastic_runs_hourly_over_six_hours_of_disconnects():
    """One group, documents at connection ends: a 6 h window of 60 s buckets, bucket 0 the newest."""
    t0 = 1_767_225_600
    # a connection every 10 minutes for a day, 200 bytes out, 100 back
    ends = t0 + 30 + np.arange(0, 86400, 600)
    n = len(ends)
    base = {k: np.zeros(n, t) for k, t in (("src_hi", np.uint64), ("dst_hi", np.uint64), ("src_port", np.uint16),
                                           ("in_if", np.uint32), ("out_if", np.uint32), ("topic_id", np.uint32),
                                           ("exporter_hi", np.uint64), ("exporter_lo", np.uint64),
                                           ("app_proto", np.uint8), ("rev_packets", np.uint64))}
    cols = dict(base, start_ns=(ends - 2) * R.NS, end_ns=ends * R.NS,
                src_lo=np.full(n, 0xFFFF0A000001, np.uint64), dst_lo=np.full(n, 0xFFFFC6120001, np.uint64),
                dst_port=np.full(n, 1883, np.uint16), proto=np.full(n, 6, np.uint8),
                bytes=np.full(n, 200, np.uint64), packets=np.full(n, 4, np.uint64),
                rev_bytes=np.full(n, 100, np.uint64), tcp_flags=np.full(n, 0x1B, np.uint8),
                flags=np.full(n, 32, np.uint8), sampling_rate=np.ones(n, np.uint32),
                action=np.zeros(n, np.uint8), dataset=np.zeros(n, np.uint8))
    cols["src_port"] = (40000 + np.arange(n)).astype(np.uint16)
    d = R.elastic_details(cols, Config.from_mapping({}))
    (key, f), = d.items()
    assert key == (0xFFFF0A000001, 0xFFFFC6120001, 1883)
    f = dict(zip(R.ELASTIC_FIELDS, f.tolist()))
    assert f["beaconing_score"] == 3 and f["max_autocovariance_period"] == 10
    assert R.rita_scores(cols, Config.from_mapping({}))[key] == 1.0


# ------------------------------------------------------------------------------- real exporters' records


def _decoded(path: Path) -> dict:
    from collector.inputs import OfflineSource

    parts = [b.columns for b in OfflineSource().batches([str(path)])]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


@pytest.mark.parametrize("export", ["netflow_v9/softflowd_beacon_world.pcap", "netflow_v9/pmacct_beacon_world.pcap",
                                    "ipfix/softflowd_beacon_world.pcap", "netflow_v5/softflowd_beacon_world.pcap"])
def test_references_on_real_exports(export):
    """fixtures/traffic: the C2 pair (a connection per beat, 60 s, 30 % jitter, 10 % missed) is a RITA beacon and an
    Elastic beacon; the 3 h MQTT telemetry session is one connection, which neither tool can score. The capture's
    addresses are RFC 5737 documentation ranges, outside both tools' default scopes, so scope is off here."""
    labels = json.loads((FIXTURES / "traffic" / "beacon_world.labels.json").read_text())
    cols = _decoded(FIXTURES / export)
    cfg = Config.from_mapping({})
    rita = R.rita_scores(cols, cfg, scope=False)
    elastic = R.elastic_scores(cols, cfg, scope=False)
    key = lambda ip: 0xFFFF00000000 | int.from_bytes(bytes(int(x) for x in ip.split(".")), "big")  # noqa: E731
    pubsub = [p for p in labels["pairs"] if p["dport"] == 1883]
    assert {p["label"] for p in pubsub} == {"c2", "benign"}
    for p in pubsub:
        k = (key(p["src"]), key(p["dst"]), p["dport"])
        if p["label"] == "c2":
            assert rita[k] >= R.RITA_THRESHOLD and elastic[k] >= R.ELASTIC_THRESHOLD
        else:
            assert rita.get(k, 0.0) == 0.0 and elastic.get(k, 0.0) == 0.0
