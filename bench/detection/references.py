"""Fair references for the detection benchmark: RITA v5's beacon score and Elastic's "Network Beaconing
Identification" transform, computed on the decoded flow records brokerwatch saw.

    rita_scores(batch, config)    -> {(src_lo, dst_lo, dport): RITA beacon score 0..1}, alert >= RITA_THRESHOLD
    elastic_scores(batch, config) -> {(src_lo, dst_lo, dport): beaconing_score 0..3}, alert >= ELASTIC_THRESHOLD

Both read the same rows as brokerwatch's AN0005 detector: the client -> broker pub/sub rows of the batch (replies
folded in, ``Detector.oriented``), minus brokers on ``BrokerAllowList``; the flow meter's message rows are left out
(neither tool sees messages, only connections).

Sources (read in full; every formula and constant below cites its line):
- RITA v5: github.com/activecm/rita at commit ``RITA_COMMIT`` (tag v5.1.1 + "Merge Develop into Main (#91)"),
  ``analysis/beacons.go`` (the score), ``analysis/analysis.go`` (when a pair is scored), ``analysis/spagooper.go`` /
  ``analysis/uconns.sql`` (what a pair's lists hold), ``database/tables.go`` (the uconn view), ``config/filter.go``
  and ``default_config.hjson`` (defaults). Quartiles, median and MAD are those of github.com/montanaflynn/stats
  v0.7.1 (``quartile.go``, ``median.go``, ``deviation.go``), which beacons.go calls.
- RITA v4 (github.com/activecm/rita-legacy ``pkg/beacon/analyzer.go``, ``dissector.go``, ``config/static.go``), where
  it differs, is noted at each formula; this module computes v5.
- Elastic: github.com/elastic/integrations ``packages/beaconing/elasticsearch/transform/pivot_transform/
  transform.yml`` at commit ``ELASTIC_COMMIT`` (transform 1.3.3, the newest version stored; its scripts and params
  are those of 1.2.2, which lacks only the query's ``exists: destination.ip``; package 1.4.1's manifest was seen,
  its transform was not), and the two detection rules of github.com/elastic/detection-rules
  ``rules/integrations/beaconing/``.

What had to be adapted (records are not Zeek conn.log lines nor Elastic Defend events):
- A *connection* is what Zeek would log: the records of one 5-tuple (source, source port, destination, destination
  port, protocol) in time order, continued across records until a record carries FIN or RST or the next record
  starts more than Zeek's inactivity timeout after the last ended (tcp_inactivity_timeout 5 min,
  udp_inactivity_timeout 1 min, Zeek's defaults). So an exporter's active-timeout slices of one session make one
  connection, as Zeek would log it; its ``ts`` is the first record's start, its originator bytes (Zeek's
  ``orig_ip_bytes``, which RITA reads as ``src_ip_bytes``) the sum of the records' bytes, its responder bytes the
  sum of the folded replies (``rev_bytes``). NetFlow byte counters count IP bytes, as ``orig_ip_bytes`` does.
- RITA's unique connection is an (source IP, destination IP) pair over every port (``uconn`` is keyed by the hash
  of src, dst and their network ids: importer/conn.go L146, database/tables.go L294-L361); the benchmark keys
  pairs by destination port too, so every (src, dst, port) key gets the score of its IP pair. RITA's open
  connections (Zeek's open_conn.log) never enter beaconing (uconns.sql L79: ``[] as ts_list``); a session open
  past the end of the data is one connection here, which can only lower its pair's count, as in RITA.
- Only RITA's beacon indicator is computed. Its long-connection indicator (analysis.go L243-L247: total duration
  of a pair's connections >= 1 h, its own score) and the modifiers that move a final score by +-0.15 (prevalence,
  first seen, threat intel: analysis.go L256-L302) are separate indicators and are not reproduced; the benchmark
  compares beacon detection.
- RITA's import filter (config/filter.go L146-L194, default_config.hjson L17-L41) keeps internal -> external only
  (internal -> internal, external -> external and, with the default filter_external_to_internal, external ->
  internal are dropped) and never includes the mandatory ranges (filter.go L46-L63). ``internal_subnets`` is read
  from brokerwatch's ``InternalNetworks`` (the same role; RITA's default list is a subset of ours).
- Elastic groups by ``host.name`` + ``process.name`` (endpoint events); flow records have no process, so the
  nearest unit, the benchmark's pair (source, destination, port), stands in for a (host, process). A document is an
  Elastic Defend ``disconnect_received`` event: one per connection, at its end, with source.bytes and
  destination.bytes. The transform's query keeps internal sources to destinations outside its list of special
  ranges (transform.yml, ``source.query``); that list holds 198.18.0.0/15, the benchmark's stand-in for the
  Internet, which is therefore dropped from it (else no benchmark pair could be seen). The process-name
  exclusions do not apply (no process names).
- Elastic's transform runs every hour over the 6 h before (``frequency: 1h``, ``gte: now-6h``); over a capture it
  runs at every whole hour after the first record up to the hour after the last, and a pair alerts if any run
  flags it (its score is the highest any run gave). The 120 s sync delay is left out (virtual time has no late
  data).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np

from analytics.config import AddressSet, Config
from analytics.detections.an0005 import Detector
from analytics.pairs import group_pairs
from analytics.schema import FLAG_MESSAGE, FlowBatch

RITA_COMMIT = "a3c51501a93af9ab0ebbed0f15f431bcf536ddf1"
ELASTIC_COMMIT = "0b97ab02df57b57303b67e48840bb75dfe5c4738"

#: RITA's bucketed beacon threat score (analysis.go L235, L312-L343; default_config.hjson L84-L90: base 50, low 70,
#: medium 90, high 100) turns a beacon score of 0.70 into 0.4, which the viewer shows as "Medium" severity and up
#: (config/config.go L467-L484; viewer/results.go L153-L170). Below 0.50 a beacon gets no threat score at all.
RITA_THRESHOLD = 0.70
#: RITA's "base": a beacon score that gets any threat score (severity "Low").
RITA_BASE = 0.50
#: Elastic's "Statistical Model Detected C2 Beaconing Activity" rule alerts on ``beacon_stats.is_beaconing: true``,
#: which holds exactly when beaconing_score >= 1 (transform.yml, the reduce script's return statement).
ELASTIC_THRESHOLD = 1
#: "... with High Confidence": ``beacon_stats.beaconing_score: 3``.
ELASTIC_HIGH_CONFIDENCE = 3

#: Zeek's default inactivity timeouts (base/init-bare.zeek: tcp_inactivity_timeout, udp_inactivity_timeout).
ZEEK_TCP_INACTIVITY_S = 300
ZEEK_UDP_INACTIVITY_S = 60
_FIN_RST = 0x01 | 0x04
NS = 1_000_000_000

#: RITA's mandatory never-included ranges (config/filter.go L46-L63).
RITA_NEVER_INCLUDED = ("0.0.0.0/32", "127.0.0.0/8", "169.254.0.0/16", "224.0.0.0/4", "255.255.255.255/32", "::1/128",
                       "::/128", "fe80::/10", "ff00::/8")
#: The transform query's excluded destinations (transform.yml, source.query.bool.should[0].must_not) without
#: 198.18.0.0/15, which the benchmark uses for the outside world.
ELASTIC_EXCLUDED_DESTINATIONS = (
    "10.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12", "127.0.0.0/8", "192.0.0.0/24", "192.0.0.0/29", "192.0.0.8/32",
    "192.0.0.9/32", "192.0.0.10/32", "192.0.0.170/32", "192.0.0.171/32", "192.0.2.0/24", "192.31.196.0/24",
    "192.52.193.0/24", "192.168.0.0/16", "192.88.99.0/24", "224.0.0.0/4", "100.64.0.0/10", "192.175.48.0/24",
    "198.51.100.0/24", "203.0.113.0/24", "240.0.0.0/4", "::1/128", "fe80::/10", "ff00::/8")


class RitaError(ValueError):
    """A RITA function's error return: RITA logs it and skips the pair (analysis.go L231-L233)."""


# ================================================================================================ RITA v5 (beacons.go)


@dataclass(frozen=True)
class RitaParams:
    """RITA's scoring.beacon defaults (default_config.hjson L44-L90; validated in config/config.go L92-L104)."""

    unique_connection_threshold: int = 4  # L49 (v4: DefaultConnectionThresh 23, count > 23: static.go)
    timestamp_score_weight: float = 0.25  # L55
    datasize_score_weight: float = 0.25  # L56
    duration_score_weight: float = 0.25  # L57
    histogram_score_weight: float = 0.25  # L58
    duration_min_hours_seen: int = 6  # L62
    duration_consistency_ideal_hours_seen: int = 12  # L66
    histogram_mode_sensitivity: float = 0.05  # L75
    histogram_bimodal_outlier_removal: int = 1  # L79
    histogram_bimodal_min_hours_seen: int = 11  # L83
    strobe_count: int = 86400  # analysis.go L230, L250: 1 connection per second is a strobe, not a beacon


def go_round(x: float) -> float:
    """Go's math.Round: half away from zero (Python's round() rounds half to even)."""
    return math.copysign(math.floor(abs(x) + 0.5), x)


def _r3(x: float) -> float:
    return go_round(x * 1000) / 1000


def _median(v: np.ndarray) -> float:
    """montanaflynn/stats Median (median.go): the middle value, or the mean of the two middle ones."""
    c = np.sort(np.asarray(v, np.float64))
    n = len(c)
    if n == 0:
        raise RitaError("empty input")
    return float((c[n // 2 - 1] + c[n // 2]) / 2) if n % 2 == 0 else float(c[n // 2])


def _quartiles(v: np.ndarray) -> tuple[float, float, float]:
    """montanaflynn/stats Quartile (quartile.go): medians of the lower and upper halves, the middle value left out
    when the length is odd (not numpy's interpolated percentiles)."""
    c = np.sort(np.asarray(v, np.float64))
    n = len(c)
    if n < 2:
        raise RitaError("quartiles need 2 values")
    c1, c2 = (n // 2, n // 2) if n % 2 == 0 else ((n - 1) // 2, (n - 1) // 2 + 1)
    return _median(c[:c1]), _median(c), _median(c[c2:])


def bowley_skewness(data) -> tuple[float, float]:
    """calculateBowleySkewness (beacons.go L341-L376): (skew, 1 - |skew|); skew is 0 unless Q3 - Q1 >= 10 and the
    median differs from both quartiles (v4: the same rule, quartiles by nearest rank, analyzer.go)."""
    if len(data) < 3:
        raise RitaError("input slice must not contain fewer than 3 elements")
    q1, q2, q3 = _quartiles(data)
    num, den = q1 + q3 - 2 * q2, q3 - q1
    skew = num / den if den >= 10 and q2 != q1 and q2 != q3 else 0.0
    return skew, 1.0 - abs(skew)


def median_absolute_deviation(data, default_score: float) -> tuple[float, float]:
    """calculateMedianAbsoluteDeviation (beacons.go L381-L418): (MAD, (median - MAD) / median), default_score when
    the median is below 1, floored at 0."""
    if len(data) == 0:
        raise RitaError("input slice must not be empty")
    med = _median(data)
    mad = _median(np.abs(np.asarray(data, np.float64) - med))
    score = (med - mad) / med if med >= 1 else default_score
    return mad, (0.0 if score < 0 or math.isnan(score) else score)


def statistical_score(values, default_mad_score: float) -> tuple[float, float, float]:
    """calculateStatisticalScore (beacons.go L224-L246): (round3((skew score + MAD score) / 2), skew, MAD)."""
    if len(values) == 0:
        raise RitaError("input slice must not be empty")
    skew, skew_score = bowley_skewness(values)
    mad, mad_score = median_absolute_deviation(values, default_mad_score)
    return _r3((skew_score + mad_score) / 2.0), skew, mad


def distinct_counts(values) -> tuple[list[int], list[int], int, int]:
    """calculateDistinctCounts (beacons.go L422-L478): values truncated to integers, sorted: (distinct, counts,
    mode, mode count); the first value wins a tie for the mode."""
    if len(values) < 2:
        raise RitaError("input slice must have at least two elements")
    ints = np.trunc(np.sort(np.asarray(values, np.float64))).astype(np.int64)
    distinct, counts = np.unique(ints, return_counts=True)
    k = int(np.argmax(counts))  # first maximum: the smallest value, as the Go loop keeps the first strict max
    return distinct.tolist(), counts.tolist(), int(distinct[k]), int(counts[k])


def timestamp_score(ts_list) -> tuple[float, float, float, list[int], list[int], int, int]:
    """getTimestampScore (beacons.go L139-L192): statistics of the intervals between sorted timestamps, zero
    intervals left out of the score (kept in the interval counts); MAD score defaults to 1 (a median interval
    below 1 s). Needs 4 timestamps and 3 non-zero intervals."""
    if len(ts_list) < 4:
        raise RitaError("timestamp slice must contain at least 4 elements")
    ts = np.asarray(ts_list, np.int64)
    deltas = np.diff(ts).astype(np.float64)  # Go: uint32 differences of the sorted list
    if int((deltas > 0).sum()) < 3:
        raise RitaError("timestamp slice must contain at least 3 non-zero intervals")
    deltas.sort()
    intervals, counts, mode, mode_count = distinct_counts(deltas)
    score, skew, mad = statistical_score(deltas[deltas > 0], 1.0)
    return score, skew, mad, intervals, counts, mode, mode_count


def datasize_score(bytes_list) -> tuple[float, float, float, list[int], list[int], int, int]:
    """getDataSizeScore (beacons.go L198-L221): statistics of the originator's bytes per connection; MAD score
    defaults to 0. v4 averaged a third term, smallness 1 - mode/65535, and rounded up (analyzer.go)."""
    if len(bytes_list) < 3:
        raise RitaError("bytes slice must contain at least 3 elements")
    b = np.sort(np.asarray(bytes_list, np.float64))
    sizes, counts, mode, mode_count = distinct_counts(b)
    score, skew, mad = statistical_score(b, 0.0)
    return score, skew, mad, sizes, counts, mode, mode_count


def histogram_bins(start: int, end: int, n_bins: int) -> np.ndarray:
    """computeHistogramBins (beacons.go L482-L515): n_bins + 1 evenly spaced float edges, both ends exact."""
    if n_bins <= 0:
        raise RitaError("number of desired histogram bins must be greater than 0")
    if end <= start:
        raise RitaError("invalid histogram time range")
    step = float(end - start) / float(n_bins)
    edges = float(start) + np.arange(n_bins + 1, dtype=np.float64) * step
    edges[0], edges[-1] = float(start), float(end)
    return edges


def frequency_counts(hist, mode_sensitivity: float) -> tuple[dict[int, int], int, int]:
    """getFrequencyCounts (beacons.go L594-L682): bars of similar height (bins of ceil(max bar x sensitivity)
    connections) counted together; the number of non-empty bars; the longest run of non-empty bars, wrapping from
    the end of the day to its start, at most the number of bars."""
    h = [int(x) for x in hist]
    if not h:
        raise RitaError("input slice must not be empty")
    total_bars = sum(1 for x in h if x > 0)
    bin_size = math.ceil(max(max(h), 0) * mode_sensitivity)
    freq: dict[int, int] = {}
    for x in h:
        if x > 0:
            b = int(math.floor(x / bin_size) * bin_size)
            freq[b] = freq.get(b, 0) + 1
    longest = run = 0
    for x in h + h:
        if x > 0:
            run += 1
        else:
            longest, run = max(longest, run), 0
    longest = min(max(longest, run), len(h))
    return freq, total_bars, longest


def create_histogram(edges, ts_list, mode_sensitivity: float) -> tuple[list[int], dict[int, int], int, int]:
    """createHistogram (beacons.go L519-L584): connections per bin; a timestamp at or past the last edge counts in
    the last bin, one before the first edge in the first."""
    e = np.sort(np.asarray(edges, np.float64))
    if len(e) < 2:
        raise RitaError("bin edges must contain at least 2 elements")
    if len(ts_list) == 0:
        raise RitaError("input slice must not be empty")
    ts = np.sort(np.asarray(ts_list, np.float64))
    nb = len(e) - 1
    idx = np.minimum(np.searchsorted(e[1:], ts, side="right"), nb - 1)
    hist = np.bincount(idx, minlength=nb).tolist()
    freq, total_bars, longest = frequency_counts(hist, mode_sensitivity)
    return hist, freq, total_bars, longest


def cv_score(freq_list) -> float:
    """calculateCoefficientOfVariationScore (beacons.go L693-L741): round3(1 - population CV of the bars), 0 past
    CV 1."""
    f = np.asarray(freq_list, np.float64)
    if len(f) == 0:
        raise RitaError("input slice must not be empty")
    if (f < 0).any():
        raise RitaError("input slice must not contain negative values")
    if f.sum() <= 0:
        raise RitaError("total must be greater than zero")
    mean = f.sum() / len(f)
    cv = math.sqrt(float(((f - mean) ** 2).sum()) / len(f)) / abs(mean)
    return 0.0 if cv > 1.0 else min(_r3(1.0 - cv), 1.0)


def bimodal_fit_score(freq_count: dict, total_bars: int, outlier_removal: int, min_hours: int) -> float:
    """calculateBimodalFitScore (beacons.go L749-L800): share of the non-empty bars (less outlier_removal) in the
    two commonest bar heights, once at least min_hours bars are non-empty (min_hours below 6 means 11)."""
    if not freq_count:
        raise RitaError("frequency count map must not be empty")
    if total_bars <= 0:
        raise RitaError("total bars must be greater than zero")
    if min_hours < 6:
        min_hours = 11
    fit = 0.0
    if total_bars >= min_hours:
        largest = second = 0
        for v in freq_count.values():  # Go iterates the map in random order; the top two do not depend on it
            if v > largest:
                second, largest = largest, v
            elif v > second:
                second = v
        fit = (largest + second) / max(float(total_bars - outlier_removal), 1.0)
    return min(_r3(fit), 1.0)


def histogram_score(dataset_min: int, dataset_max: int, ts_list, mode_sensitivity: float, outlier_removal: int,
                    min_hours: int, span: int = 24) -> tuple[list[int], dict[int, int], int, int, float]:
    """getHistogramScore (beacons.go L249-L294): connections per hour of the dataset's last day; the score is the
    larger of the CV score and the bimodal fit. (v4 the same, rounding up instead of to nearest.)"""
    if len(ts_list) == 0:
        raise RitaError("input slice must not be empty")
    if dataset_max <= dataset_min:
        raise RitaError("invalid dataset timerange")
    edges = histogram_bins(dataset_min, dataset_max, span)
    hist, freq, total_bars, longest = create_histogram(edges, ts_list, mode_sensitivity)
    score = max(cv_score(hist), bimodal_fit_score(freq, total_bars, outlier_removal, min_hours))
    return hist, freq, total_bars, longest, score


def duration_score(dataset_min: int, dataset_max: int, hist_min: int, hist_max: int, total_bars: int,
                   longest_run: int, min_hours: int, ideal_hours: int) -> tuple[float, float, float]:
    """getDurationScore (beacons.go L299-L337): once min_hours hours hold connections, the larger of the share of
    the dataset the pair spans and its longest run of hours over ideal_hours, each rounded up to 3 places."""
    if min_hours < 1 or ideal_hours < 1 or dataset_max <= dataset_min or hist_max <= hist_min:
        raise RitaError("invalid input for getDurationScore: check parameter values")
    coverage = consistency = score = 0.0
    if total_bars >= min_hours:
        coverage = min(math.ceil((hist_max - hist_min) / (dataset_max - dataset_min) * 1000) / 1000, 1.0)
        consistency = min(math.ceil(longest_run / ideal_hours * 1000) / 1000, 1.0)
        score = max(coverage, consistency)
    return coverage, consistency, score


def beacon_score(ts_score: float, ts_w: float, ds_score: float, ds_w: float, dur_score: float, dur_w: float,
                 hist_score: float, hist_w: float) -> float:
    """getBeaconScore (beacons.go L107-L133): the weighted sum rounded to 3 places; scores and weights in [0, 1],
    weights summing to exactly 1 (v4: the same sum, rounded up)."""
    for s in (ts_score, ds_score, dur_score, hist_score):
        if s < 0 or s > 1:
            raise RitaError("scores must be between 0 and 1")
    total = 0.0
    for w in (ts_w, ds_w, dur_w, hist_w):
        if w < 0 or w > 1:
            raise RitaError("weights must be between 0 and 1")
        total += w
    if total != 1:
        raise RitaError("weights must sum to 1")
    return _r3(ts_score * ts_w + ds_score * ds_w + dur_score * dur_w + hist_score * hist_w)


def analyze_beacon(ts_list, bytes_list, dataset_min: int, dataset_max: int, p: RitaParams = RitaParams()) -> float:
    """analyzeBeacon (beacons.go L33-L104) for one unique connection: sorted connection start times (whole
    seconds) and originator IP bytes per connection, within the dataset's [min, max] seconds."""
    if dataset_min >= dataset_max:
        raise RitaError("invalid dataset timerange")
    ts = np.sort(np.asarray(ts_list, np.int64))
    ts_s = timestamp_score(ts)[0]
    ds_s = datasize_score(bytes_list)[0]
    _, _, bars, longest, hist_s = histogram_score(dataset_min, dataset_max, ts, p.histogram_mode_sensitivity,
                                                  p.histogram_bimodal_outlier_removal,
                                                  p.histogram_bimodal_min_hours_seen, 24)
    dur_s = duration_score(dataset_min, dataset_max, int(ts[0]), int(ts[-1]), bars, longest,
                           p.duration_min_hours_seen, p.duration_consistency_ideal_hours_seen)[2]
    return beacon_score(ts_s, p.timestamp_score_weight, ds_s, p.datasize_score_weight, dur_s,
                        p.duration_score_weight, hist_s, p.histogram_score_weight)


# ======================================================================================= records -> connections


def reference_rows(batch: FlowBatch | dict, config: Config) -> dict[str, np.ndarray]:
    """The rows brokerwatch's detector scores: client -> broker pub/sub rows, replies folded, allowlisted brokers
    and the flow meter's message rows left out."""
    cols = batch.columns if isinstance(batch, FlowBatch) else batch
    rows = Detector(config).oriented(cols)
    keep = (rows["flags"] & FLAG_MESSAGE) == 0
    if len(config.allow):
        keep &= config.allow.match(rows["dst_hi"], rows["dst_lo"], rows["dst_port"].astype(np.int32)) < 0
    return {k: v[keep] for k, v in rows.items()}


def _in(aset: AddressSet, hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    return aset.match(hi, lo) >= 0 if len(aset) else np.zeros(len(hi), bool)


def _cidrs(cidrs) -> AddressSet:
    return AddressSet.build([(c, 0, -1, c) for c in cidrs])


@dataclass
class Prepared:
    """A batch as both references read it: its connections, grouped by pair, and the capture's time range."""

    keys: dict[str, np.ndarray]  # per pair (src, dst, dst port, protocol): src_hi, src_lo, dst_hi, dst_lo, ...
    conns: dict[str, np.ndarray]  # per connection: pair (index into keys), ts, end (ns), orig_bytes, resp_bytes
    first_ns: int  # the capture's first and last record times (every record, not only the reference rows)
    last_ns: int

    def pair_keys(self) -> list[tuple[int, int, int]]:
        """(src_lo, dst_lo, dport) of every pair, in pair order."""
        k = self.keys
        return list(zip(k["src_lo"].tolist(), k["dst_lo"].tolist(), k["dst_port"].tolist()))


def connections(rows: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(pair keys, connections): records merged into the connections Zeek would log (module docstring), in (pair,
    source port, time) order, each with its pair's index."""
    seg = group_pairs(rows)  # pairs, each pair's records sorted by start time
    pair = seg.pair_of_event()
    sport = seg.events["src_port"].astype(np.int64)
    o = np.argsort(pair * 65536 + sport, kind="stable")  # stable: time order kept within a 5-tuple
    pair, sport = pair[o], sport[o]
    start, end = seg.events["start_ns"][o], seg.events["end_ns"][o]
    proto = seg.keys["proto"][pair]
    n = len(o)
    new = np.ones(n, bool)
    if n > 1:
        new[1:] = (pair[1:] != pair[:-1]) | (sport[1:] != sport[:-1])
        # a TCP connection ends with a FIN or RST; any ends after Zeek's inactivity timeout
        new[1:] |= ((seg.events["tcp_flags"][o][:-1] & _FIN_RST) != 0) & (proto[:-1] == 6)
        timeout = np.where(proto[1:] == 17, ZEEK_UDP_INACTIVITY_S, ZEEK_TCP_INACTIVITY_S).astype(np.int64) * NS
        new[1:] |= start[1:] - end[:-1] > timeout
    first = np.flatnonzero(new)
    conns = {"pair": pair[first], "ts": start[first]}
    if n:
        conns["end"] = np.maximum.reduceat(end, first)
        conns["orig_bytes"] = np.add.reduceat(seg.events["bytes"][o], first)
        conns["resp_bytes"] = np.add.reduceat(rows["rev_bytes"][seg.row[o]], first)
    else:
        conns.update(end=end, orig_bytes=np.zeros(0, np.uint64), resp_bytes=np.zeros(0, np.uint64))
    return seg.keys, conns


def prepare(batch: FlowBatch | dict, config: Config) -> Prepared:
    """The reference rows of a batch merged into connections (one pass shared by both references)."""
    cols = batch.columns if isinstance(batch, FlowBatch) else batch
    keys, conns = connections(reference_rows(cols, config))
    first = int(cols["start_ns"].min()) if len(cols["start_ns"]) else 0
    last = int(max(cols["start_ns"].max(), cols["end_ns"].max())) if len(cols["start_ns"]) else 0
    return Prepared(keys, conns, first, last)


def _groups(keys: dict, names: tuple[str, ...]) -> np.ndarray:
    """A group id per pair: pairs with equal ``names`` columns share one."""
    k = np.column_stack([keys[c].astype(np.uint64) for c in names])
    return np.unique(k, axis=0, return_inverse=True)[1].reshape(-1) if len(k) else np.zeros(0, np.int64)


def _by_group(gid_of_conn: np.ndarray, sel: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(order, offsets): the selected connections sorted by (group, t), and where each group starts in it."""
    o = sel[np.lexsort((t[sel], gid_of_conn[sel]))]
    g = gid_of_conn[o]
    cut = np.flatnonzero(np.r_[True, g[1:] != g[:-1]]) if len(o) else np.zeros(0, np.int64)
    return o, np.append(cut, len(o)).astype(np.int64)


# ============================================================================================== RITA on a batch


def rita_scores(batch: FlowBatch | dict, config: Config, params: RitaParams = RitaParams(), scope: bool = True,
                prepared: Prepared | None = None) -> dict[tuple[int, int, int], float]:
    """RITA v5's beacon score of every (src_lo, dst_lo, dport) pair in the batch's reference rows (0.0 where RITA
    would not score it: fewer than 4 distinct connection seconds, a strobe, or outside its import filter when
    ``scope``). ``prepared``: the batch's ``prepare`` result, if already made."""
    pr = prepared or prepare(batch, config)
    keys, conns = pr.keys, pr.conns
    out = dict.fromkeys(pr.pair_keys(), 0.0)
    # the dataset's time range: the last 24 h of every record's time (database/db.go L53-L93: greatest(min_ts,
    # max_ts - 24 h), max_ts), whole seconds as ClickHouse DateTime holds them
    ds_max = pr.last_ns // NS
    ds_min = max(pr.first_ns // NS, ds_max - 86400)
    if not out or ds_max <= ds_min:
        return out
    ok = np.ones(len(keys["src_lo"]), bool)
    if scope:  # filter.go L146-L194 with filter_external_to_internal = true (default_config.hjson L41)
        never = _cidrs(RITA_NEVER_INCLUDED)
        ok &= ~(_in(never, keys["src_hi"], keys["src_lo"]) | _in(never, keys["dst_hi"], keys["dst_lo"]))
        ok &= _in(config.internal, keys["src_hi"], keys["src_lo"])
        ok &= ~_in(config.internal, keys["dst_hi"], keys["dst_lo"])
    ts = conns["ts"] // NS
    # uconns.sql L66: only the hours from the start of min_ts's hour
    sel = np.flatnonzero(ok[conns["pair"]] & (ts >= ds_min - ds_min % 3600))
    # unique connection = (src, dst) IP pair over every port (tables.go L294-L361)
    ip = _groups(keys, ("src_hi", "src_lo", "dst_hi", "dst_lo"))
    o, bounds = _by_group(ip[conns["pair"]], sel, ts)
    score_of_ip = np.zeros(int(ip.max()) + 1 if len(ip) else 0)
    orig = conns["orig_bytes"]
    for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
        seg = o[a:b]
        t = ts[seg]  # sorted
        # analysis.go L230: TSUnique >= unique_connection_threshold and Count < 86400 (v4: count > 23 and > 3
        # unique timestamps, dissector.go)
        if len(t) >= params.strobe_count or int((np.diff(t) != 0).sum()) + 1 < params.unique_connection_threshold:
            continue
        try:
            score_of_ip[ip[conns["pair"][seg[0]]]] = analyze_beacon(t, orig[seg].astype(np.float64), ds_min, ds_max,
                                                                   params)
        except RitaError:  # analysis.go L232: logged, pair skipped
            pass
    for i, key in enumerate(pr.pair_keys()):
        out[key] = max(out[key], float(score_of_ip[ip[i]]))  # a key with two protocols shares its IP pair's score
    return out


# ==================================================================================== Elastic (transform.yml)


@dataclass(frozen=True)
class ElasticParams:
    """The scripted metric's params (transform.yml, pivot.aggregations.beacon_stats.scripted_metric.params)."""

    max_beaconing_bytes_cov: float = 0.05
    max_beaconing_count_rv: float = 0.1
    max_jitter: float = 0.0
    min_beaconing_count_autocovariance: float = 0.7
    min_not_empty: float = 0.5
    min_number_periods: int = 6
    number_buckets_in_range: int = 360
    time_bucket_length: int = 60
    truncate_lo: float = 0.1  # truncate_at[0]
    truncate_hi: float = 0.8  # truncate_at[1]
    frequency_s: int = 3600  # frequency: 1h


#: Result fields of elastic_reduce, in order.
ELASTIC_FIELDS = ("beaconing_score", "low_source_bytes_variation", "low_destination_bytes_variation",
                  "low_count_variation", "periodic", "autocovariance", "max_autocovariance_period", "interval",
                  "non_empty_buckets")


@numba.njit(cache=True)
def _percentiles(lo_q, hi_q, values):  # pragma: no cover - compiled
    """The script's percentiles(): the non-zero values sorted, element min((int)(q n + 0.5), n - 1)."""
    v = np.sort(values[values != 0.0])
    n = len(v)
    if n == 0:  # cannot happen where the script calls it (more than min_number_periods non-zero buckets)
        return 0.0, 0.0
    return v[min(int(lo_q * n + 0.5), n - 1)], v[min(int(hi_q * n + 0.5), n - 1)]


@numba.njit(cache=True)
def _trunc_mean_var(a, b, values, lo, hi):  # pragma: no cover - compiled
    """mean() and variance() over buckets a..b-1 whose value lies within [lo, hi] (zeros included if they do)."""
    m = 0.0
    n = 0.0
    for i in range(a, b):
        if not (values[i] < lo or values[i] > hi):
            m += values[i]
            n += 1
    m = m / n if n > 0 else 0.0
    v = 0.0
    for i in range(a, b):
        if not (values[i] < lo or values[i] > hi):
            v += (values[i] - m) * (values[i] - m)
    return m, (v / n if n > 0 else 0.0)


@numba.njit(cache=True)
def _argmax(a, b, values):  # pragma: no cover - compiled
    """The script's max(a, b, values): index of the first largest value in a..b-1."""
    imax = a
    best = values[a]
    for i in range(a + 1, b):
        if values[i] > best:
            imax = i
            best = values[i]
    return imax


@numba.njit(cache=True)
def elastic_reduce(counts, src_bytes, dst_bytes, max_bytes_cov, max_count_rv, max_jitter, min_autocov,
                   min_not_empty, min_periods, lo_q, hi_q):  # pragma: no cover - compiled
    """The transform's reduce_script on one group's bucket vectors (counts and summed bytes per bucket, bucket 0
    the newest); returns ELASTIC_FIELDS as floats. Twin: tests/reference/elastic_ref.py."""
    nb = len(counts)
    out = np.zeros(9)
    sb = src_bytes.copy()
    db = dst_bytes.copy()
    for i in range(nb):  # bytes per bucket become bytes per document
        if counts[i] > 0:
            sb[i] /= counts[i]
            db[i] /= counts[i]
    a = 0
    while a < nb and counts[a] == 0:
        a += 1
    b = nb
    while b > 0 and counts[b - 1] == 0:
        b -= 1
    not_empty = 0
    for i in range(a, b):
        not_empty += counts[i] != 0
    out[7] = b - a
    out[8] = not_empty
    if b - a < 2 * min_periods or not_empty < min_periods + 1:
        return out
    ne_src = 0
    ne_dst = 0
    for i in range(a, b):
        ne_src += sb[i] != 0
        ne_dst += db[i] != 0
    low_src = False
    if ne_src > min_periods:
        lo, hi = _percentiles(lo_q, hi_q, sb)
        m, v = _trunc_mean_var(a, b, sb, lo, hi)
        low_src = math.sqrt(v) <= max_bytes_cov * abs(m)
    low_dst = False
    if ne_dst > min_periods:
        lo, hi = _percentiles(lo_q, hi_q, db)
        m, v = _trunc_mean_var(a, b, db, lo, hi)
        low_dst = math.sqrt(v) <= max_bytes_cov * abs(m)
    low_rv = False
    if not_empty > int(min_not_empty * (b - a)):
        lo, hi = _percentiles(lo_q, hi_q, counts)
        m, v = _trunc_mean_var(a, b, counts, lo, hi)
        low_rv = math.sqrt(v) <= max_count_rv * abs(m)
    max_period = (b - a) // min_periods
    n_counts = np.zeros(max_period - 1)
    xy_cov = np.zeros(max_period - 1)
    for period in range(2, max_period + 1):
        mj = int(max_jitter * period)
        a_ = a + mj
        b_ = b - 2 * period
        # mean(a_ + period, a_ + period * (int)((b_ + 1 - a_) / period)); Java's int division truncates to zero
        q = b_ + 1 - a_
        q = q // period if q >= 0 else -((-q) // period)
        mp = 0.0
        n = 0.0
        for i in range(a_ + period, a_ + period * q):
            mp += counts[i]
            n += 1
        mp = mp / n if n > 0 else 0.0
        xv_p = np.zeros(period - 1)
        yv_p = np.zeros(period - 1)
        xy_p = np.zeros(period - 1)
        for i in range(a_, b_ + 1, period):
            xv_i = 0.0
            yv_i = np.zeros(2 * mj + 1)
            xy_i = np.zeros(2 * mj + 1)
            for j in range(i + period, i + 2 * period):
                xv_i += (counts[j] - mp) * (counts[j] - mp)
            for jit in range(-mj, mj + 1):
                for j in range(i + period, i + 2 * period):
                    y = counts[j - period - jit] - mp
                    yv_i[mj + jit] += y * y
                    xy_i[mj + jit] += y * (counts[j] - mp)
            sigma = np.zeros(2 * mj + 1)
            for j in range(2 * mj + 1):
                z = math.sqrt(xv_i * yv_i[j])
                sigma[j] = 1.0 if z == 0.0 else xy_i[j] / z
            jbest = _argmax(0, 2 * mj + 1, sigma)
            xv_p[period - 2] += xv_i
            yv_p[period - 2] += yv_i[jbest]
            xy_p[period - 2] += xy_i[jbest]
            for p_ in range(2, period // 2):
                if period % p_ == 0:
                    k = _argmax(mj - int(max_jitter * p_), mj + int(max_jitter * p_) + 1, xy_i)
                    xv_p[p_ - 2] += xv_i
                    yv_p[p_ - 2] += yv_i[k]
                    xy_p[p_ - 2] += xy_i[k]
        z = math.sqrt(xv_p[period - 2] * yv_p[period - 2])
        n_counts[period - 2] += 1
        xy_cov[period - 2] = 1.0 if z == 0.0 else xy_p[period - 2] / z
        for p_ in range(2, period // 2):
            if period % p_ == 0:
                nn = n_counts[p_ - 2] + 1
                z_ = math.sqrt(xv_p[p_ - 2] * yv_p[p_ - 2])
                c = 1.0 if z_ == 0.0 else xy_p[p_ - 2] / z_
                n_counts[p_ - 2] += 1
                xy_cov[p_ - 2] = ((nn - 1) * xy_cov[p_ - 2] + c) / nn
    best = _argmax(0, len(xy_cov), xy_cov) + 2
    max_cov = xy_cov[best - 2]
    high_cov = max_cov >= min_autocov
    out[0] = (1.0 if (low_rv or high_cov) else 0.0) + (1.0 if low_src else 0.0) + (1.0 if low_dst else 0.0)
    out[1] = low_src
    out[2] = low_dst
    out[3] = low_rv
    out[4] = high_cov
    out[5] = max_cov
    out[6] = best
    return out


@numba.njit(cache=True)
def _elastic_pairs(offsets, ts, sb, db, runs, nb, blen, max_bytes_cov, max_count_rv, max_jitter, min_autocov,
                   min_not_empty, min_periods, lo_q, hi_q):  # pragma: no cover - compiled
    """Every hourly run of the transform over every group (documents offsets[g]:offsets[g+1], time-sorted whole
    seconds): the fields of the run with the highest beaconing_score (the first such run), per group."""
    ng = len(offsets) - 1
    res = np.zeros((ng, 9))
    counts = np.zeros(nb)
    src = np.zeros(nb)
    dst = np.zeros(nb)
    span = nb * blen
    for g in range(ng):
        lo, hi = offsets[g], offsets[g + 1]
        best = -1.0
        for r in range(len(runs)):
            now = runs[r]
            # map_script: bucket = (now - ts) / time_bucket_length, kept if 0 <= bucket < number_buckets_in_range;
            # the range query is gte now-6h and the checkpoint ends at now
            first = np.searchsorted(ts[lo:hi], now - span + 1) + lo
            last = np.searchsorted(ts[lo:hi], now) + lo
            if last - first < min_periods + 1:  # the script returns early below min_number_periods + 1 buckets
                continue
            counts[:] = 0.0
            src[:] = 0.0
            dst[:] = 0.0
            for i in range(first, last):
                k = (now - ts[i]) // blen
                counts[k] += 1
                src[k] += sb[i]
                dst[k] += db[i]
            f = elastic_reduce(counts, src, dst, max_bytes_cov, max_count_rv, max_jitter, min_autocov,
                               min_not_empty, min_periods, lo_q, hi_q)
            if f[0] > best:
                best = f[0]
                res[g] = f
    return res


#: The transform query's sources (transform.yml, source.query.bool.should[0].filter): RFC 1918.
ELASTIC_SOURCES = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")


def elastic_details(batch: FlowBatch | dict, config: Config, params: ElasticParams = ElasticParams(),
                    scope: bool = True, prepared: Prepared | None = None) -> dict[tuple[int, int, int], np.ndarray]:
    """ELASTIC_FIELDS of the best hourly run for every (src_lo, dst_lo, dport) pair of the batch's reference rows
    (all zero where no run had enough documents, or outside the transform's query when ``scope``)."""
    pr = prepared or prepare(batch, config)
    keys, conns = pr.keys, pr.conns
    out = {k: np.zeros(len(ELASTIC_FIELDS)) for k in pr.pair_keys()}
    if not out:
        return out
    ok = np.ones(len(keys["src_lo"]), bool)
    if scope:
        ok &= _in(_cidrs(ELASTIC_SOURCES), keys["src_hi"], keys["src_lo"])
        ok &= ~_in(_cidrs(ELASTIC_EXCLUDED_DESTINATIONS), keys["dst_hi"], keys["dst_lo"])
    t = conns["end"] // NS  # a disconnect event's @timestamp, toEpochSecond()
    gid = _groups(keys, ("src_hi", "src_lo", "dst_hi", "dst_lo", "dst_port"))  # (host, process) stand-in
    o, offsets = _by_group(gid[conns["pair"]], np.flatnonzero(ok[conns["pair"]]), t)
    step = params.frequency_s
    runs = np.arange((pr.first_ns // NS // step + 1) * step, (pr.last_ns // NS // step + 2) * step, step,
                     dtype=np.int64)
    p = params
    res = _elastic_pairs(offsets, t[o].astype(np.int64), conns["orig_bytes"][o].astype(np.float64),
                         conns["resp_bytes"][o].astype(np.float64), runs, p.number_buckets_in_range,
                         p.time_bucket_length, p.max_beaconing_bytes_cov, p.max_beaconing_count_rv, p.max_jitter,
                         p.min_beaconing_count_autocovariance, p.min_not_empty, p.min_number_periods, p.truncate_lo,
                         p.truncate_hi)
    res_of_gid = {int(gid[conns["pair"][o[a]]]): res[g] for g, a in enumerate(offsets[:-1].tolist())}
    for i, key in enumerate(pr.pair_keys()):
        if int(gid[i]) in res_of_gid:
            out[key] = res_of_gid[int(gid[i])]
    return out


def elastic_scores(batch: FlowBatch | dict, config: Config, params: ElasticParams = ElasticParams(),
                   scope: bool = True, prepared: Prepared | None = None) -> dict[tuple[int, int, int], float]:
    """Elastic's beaconing_score (0-3) of every (src_lo, dst_lo, dport) pair: the highest any hourly run gave;
    ``is_beaconing`` (the default rule) is score >= ELASTIC_THRESHOLD."""
    return {k: float(v[0]) for k, v in elastic_details(batch, config, params, scope, prepared).items()}
