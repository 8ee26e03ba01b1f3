"""DET0002 detections over FlowBatches: the streaming ``Detector`` that turns pub/sub flows into alerts (AN0005).

Pipeline per evaluation (every TimeWindow cadence):
1. ``ingest`` keeps the client → broker rows of pub/sub traffic: a ``ProtocolPortList`` destination port or an
   application protocol recognised on the wire (``app_proto``), topic names reduced to their anomaly score.
2. ``evaluate(now_ns)`` takes the bounded window state (analytics/window.py), drops pairs whose destination is in
   ``BrokerAllowList``, groups rows by pair (analytics/pairs.py), stitches exporter slices of long sessions
   (analytics/stitch.py), and runs the kernels: beaconing (analytics/beacon.py) on session starts and publishing
   slices, byte statistics (analytics/bytestats.py) on the records.
3. Each pair's evidence is checked against the AN0005 analytics — beaconing, high-frequency publication,
   reputation hits (``BrokerReputationList``), exfil-style long messages (``PayloadLengthThreshold``), pub/sub on
   an unusual port, anomalous topic names (``TopicAnomalyScore``) — and one alert per (analytic, pair, window) is
   emitted with a 0-100 score, the severity derived from it, and for every element that fired the reason why.
   Later evidence in the same window updates that alert (a new revision) instead of repeating it.

Evaluation is incremental by default: the window state (``PairState``) stays grouped by pair, each pass rescores
only the pairs whose scored rows changed (new rows, rows coming due, expiry, caps, eviction) and scatters their
score rows into a per-pair cache; only those pairs can change their alerts, except at a window roll-over, when
every firing pair is re-alerted under the new key. The only all-pairs value, the inferred active timeout, is a
99th percentile over cached per-pair contributions (reported only: stitching uses each pair's own timeout).
``Detector(..., incremental=False)`` recomputes the whole window every pass; both give the same alerts and scores
(tests/analytics/test_incremental.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from analytics.alerts import Alert
from analytics.beacon import F as BF
from analytics.beacon import BeaconParams, score_segments
from analytics.bytestats import F as YF
from analytics.bytestats import byte_stats
from analytics.config import Config
from analytics.direction import orient
from analytics.pairs import PairSegments, group_pairs
from analytics.schema import APP_PROTOCOLS, FlowBatch
from analytics.stitch import StitchParams, beat_segments, quantile_sorted, stitch
from analytics.topics import score_topics
from analytics.window import STATE_COLUMNS, HashCollision, PairState, PairWindow

NS = 1_000_000_000
#: Columns of a batch that orienting reads or writes, beside the ones kept for scoring.
ORIENT_COLUMNS = tuple(dict.fromkeys(STATE_COLUMNS[:-1] + ("exporter_hi", "exporter_lo", "rev_bytes", "rev_packets",
                                                          "in_if", "out_if", "topic_id")))


@dataclass(frozen=True)
class DetectorParams:
    """Decision levels of the AN0005 analytics (not DET0002 keys; documented in docs/architecture.md)."""

    beacon_threshold: float = 0.7  # combined beacon score (0-1) that alerts
    hf_max_period_s: float = 10.0  # high-frequency publication: publishing at least this often ...
    hf_min_beats: int = 100  # ... sustained for this many publications
    exfil_min_long_events: int = 3  # long outbound messages: at least this many records over the threshold ...
    exfil_min_bytes_factor: float = 256.0  # ... carrying at least this many times PayloadLengthThreshold bytes ...
    exfil_min_record_factor: float = 16.0  # ... at least this many times it per long record on average (bulk
    # transfers, not a chat client's occasional long message)
    max_per_pair: int = 50_000
    max_rows: int = 20_000_000
    update_min_delta: float = 5.0  # a later evaluation re-emits an alert when its score moves this much
    fleet_min_clients: int = 5  # a broker with at least this many clients ...
    fleet_similar_share: float = 0.5  # ... this share of them (or fleet_min_clients of them) beaconing in one rhythm
    # is a fleet (infrastructure)
    rhythm_tolerance: float = 0.25  # periods within this relative distance (of P or P/2) are "the same rhythm"
    poller_min_brokers: int = 3  # a source beaconing in one rhythm to this many brokers, or to this many of the
    # site's brokers in any rhythms, is a poller (monitoring)
    bulk_min_share: float = 0.8  # a beaconing pair with this share of its records long (PayloadLengthThreshold) is
    # a transfer job (backup, sync), not a check-in or exfil
    internal_score_factor: float = 0.6  # site-internal evidence: most of it is normal work, so a lower severity


class Detector:
    """Keeps the pub/sub flows of the current TimeWindow and scores pairs on demand."""

    def __init__(self, config: Config, params: DetectorParams = DetectorParams(),
                 beacon: BeaconParams = BeaconParams(), stitching: StitchParams = StitchParams(),
                 incremental: bool = True):
        self.config = config
        self.params = params
        self.beacon_params = beacon
        self.stitch_params = stitching
        self._window_ns = int(config.TimeWindow.window_s * NS)
        port_map = config.port_protocols()
        self._ports = np.array(sorted(port_map), dtype=np.uint16)
        self._port_proto = port_map
        # incremental: rows stay grouped by pair and per-pair scores are cached, so a pass costs the pairs that
        # changed; incremental=False recomputes the whole window every pass (the reference it must equal)
        self.incremental = incremental
        window = PairState if incremental else PairWindow
        self.window = window(config.TimeWindow.window_s, params.max_per_pair, params.max_rows)
        self._alerts: dict[tuple, Alert] = {}
        self._topics: dict[tuple, tuple[float, str]] = {}
        self.latest_ns = 0
        self._frozen_scores: dict | None = None
        self._order: np.ndarray | None = None  # scored slots in pair order (incremental)
        self._cache: dict[str, np.ndarray] = {
            "beacon": np.zeros((0, len(BF))), "bytes": np.zeros((0, len(YF))), "sessions": np.zeros(0, np.int64),
            "longest_session_slices": np.zeros(0, np.int64), "resolution_s": np.zeros(0), "dead_s": np.zeros(0),
            "pair_timeout_s": np.zeros(0), "app_proto": np.zeros(0, np.uint8),
            "topic_score": np.zeros(0, np.float32), "first_ns": np.zeros(0, np.int64),
            "last_ns": np.zeros(0, np.int64), "events": np.zeros(0, np.int64)}
        self._scored = np.zeros(0, bool)
        self._n_scored = 0
        self._alert_ws: int | None = None
        self._pruned_ws: int | None = None
        # cut-record durations per slot (append-only pool) and all of them sorted: the all-pairs active timeout
        self._dpool = np.zeros(0)
        self._dlo = np.zeros(0, np.int64)
        self._dn = np.zeros(0, np.int64)
        self._fires = np.zeros(0, bool)  # per slot: some analytic fires on its cached scores
        self._dend = 0
        self._dlive = 0
        self._durs = np.zeros(0)

    # ------------------------------------------------------------------------------------------------ ingest

    def pubsub_mask(self, cols: dict[str, np.ndarray]) -> np.ndarray:
        """Rows that are pub/sub traffic either way (a ProtocolPortList port on either side, or an application
        protocol recognised on the wire): the candidates ``ingest`` orients."""
        return np.isin(cols["dst_port"], self._ports) | np.isin(cols["src_port"], self._ports) | \
            (cols["app_proto"] != 0)

    def oriented(self, cols: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The client → broker pub/sub rows of a batch: replies turned round and folded into the requests they
        answer (analytics/direction.py), so a broker on any port makes one pair per client, not one per ephemeral
        port. Replies with no request row in the batch add no event (the pair's events are the client's sends)."""
        cand = np.flatnonzero(self.pubsub_mask(cols))
        sub = {k: cols[k][cand] for k in ORIENT_COLUMNS}
        sub, reply_only = orient(sub, self._ports)
        keep = (np.isin(sub["dst_port"], self._ports) | (sub["app_proto"] != 0)) & ~reply_only
        return {k: v[keep] for k, v in sub.items()}

    def ingest(self, batch: FlowBatch) -> None:
        """Keep the batch's client → broker pub/sub rows for scoring."""
        if not len(batch):
            return
        cols = batch.columns
        self.latest_ns = max(self.latest_ns, int(cols["start_ns"].max()))
        cols = self.oriented(cols)
        if not len(cols["start_ns"]):
            return
        tscore = np.asarray(score_topics(batch.strings, self.config.TopicAnomalyScore), np.float32)
        topic_id = cols["topic_id"]
        rows = {k: cols[k] for k in STATE_COLUMNS if k != "topic_score"}
        rows["topic_score"] = tscore[topic_id]
        hot = np.flatnonzero(rows["topic_score"] >= self.config.TopicAnomalyScore.threshold)
        for i in hot[:1000]:  # evidence only: the worst topic seen per pair
            key = (int(rows["src_hi"][i]), int(rows["src_lo"][i]), int(rows["dst_hi"][i]), int(rows["dst_lo"][i]),
                   int(rows["dst_port"][i]))
            s = float(rows["topic_score"][i])
            if s > self._topics.get(key, (0.0, ""))[0]:
                self._topics[key] = (s, batch.strings[int(topic_id[i])])
        try:
            self.window.add(rows)
        except HashCollision:  # raised before the state changed, with the rows already pending
            self._fall_back()
            w = self.window
            if w._pending > max(w.max_rows // 4, 1_000_000):
                w.snapshot(max(int(c["start_ns"].max()) for c in w._chunks))

    # ------------------------------------------------------------------------------------------------ evaluate

    def evaluate(self, now_ns: int | None = None) -> list[Alert]:
        """Score the pairs in the window ending at now_ns; new alerts and changed ones (as revisions)."""
        now_ns = self.latest_ns if now_ns is None else int(now_ns)
        if not self.incremental:
            return self._evaluate_full(now_ns)
        try:
            self.window.advance(now_ns)
        except HashCollision:
            self._fall_back()
            return self._evaluate_full(now_ns)
        return self._evaluate_incremental(now_ns)

    def flush(self, now_ns: int | None = None) -> list[Alert]:
        """Final evaluation (shutdown or end of replay)."""
        return self.evaluate(now_ns)

    @property
    def last_scores(self) -> dict | None:
        """The score arrays of the last evaluation that scored pairs, in pair order (for benchmarks and tests)."""
        if not self.incremental or self._frozen_scores is not None or self._order is None:
            return self._frozen_scores
        return self._assemble(self._order)

    # ------------------------------------------------------------------------------------------------ full pass

    def _evaluate_full(self, now_ns: int) -> list[Alert]:
        cols = self.window.snapshot(now_ns)
        if not len(cols["start_ns"]):
            return []
        seg = group_pairs(cols)
        k = seg.keys
        allowed = self.config.allow.match(k["dst_hi"], k["dst_lo"], k["dst_port"].astype(np.int32)) >= 0
        if allowed.any():
            seg = seg.select_pairs(~allowed)
        if seg.n_pairs == 0:
            return []
        scores = self.score(seg)
        self._frozen_scores = scores
        return self._alerts_for(seg, scores, now_ns)

    def _fall_back(self) -> None:
        """A 64-bit pair-hash collision: continue with full recomputes over the same rows (PairWindow)."""
        old = self.window
        w = PairWindow(self.config.TimeWindow.window_s, self.params.max_per_pair, self.params.max_rows)
        rows = old.rows()
        if rows:
            w._chunks = [rows]
        w._pending = old._pending
        w.stats = old.stats
        self.window = w
        self.incremental = False
        self._order = None

    # ------------------------------------------------------------------------------------------------ incremental

    def _evaluate_incremental(self, now_ns: int) -> list[Alert]:
        w = self.window
        dirty = w.take_dirty()
        self._grow_cache(len(w.h))
        ok = w.ncur[dirty] > 0
        if ok.any():
            d = dirty[ok]
            k = w.keys
            ok[ok] = self.config.allow.match(k["dst_hi"][d], k["dst_lo"][d], k["dst_port"][d].astype(np.int32)) < 0
        todo = dirty[ok]
        was = self._scored[dirty]
        n_scored = self._n_scored - int(was.sum()) + len(todo)
        if n_scored == 0 and self._order is not None and self._frozen_scores is None:
            self._frozen_scores = self._assemble(self._order)  # as the full pass: the last scores stay
        self._drop_durations(dirty[was])
        self._scored[dirty] = ok
        self._n_scored = n_scored
        if len(todo):
            sub = w.segments(todo)
            s, cut = self._score(sub)
            c = self._cache
            for name in _CACHED:
                c[name][todo] = s[name]
            c["events"][todo] = sub.counts()
            self._add_durations(todo, sub, cut)
            self._fires[todo] = self._fired_arrays({name: v[todo] for name, v in w.keys.items()}, s)["any"]
        if n_scored == 0:
            return []
        self._frozen_scores = None
        order = w.scored_slots()
        self._order = order = order[self._scored[order]]
        window_start = (now_ns // self._window_ns) * self._window_ns
        k_order = {name: v[order] for name, v in w.keys.items()}
        pop = self._population(k_order, self._cache["beacon"][order])
        pos = np.zeros(len(w.h), np.int64)
        pos[order] = np.arange(len(order))
        if window_start != self._alert_ws:  # roll-over: every alert key changes, every firing pair is re-alerted
            cand = order[self._fires[order]]
            self._alert_ws = window_start
        else:  # only pairs whose rows changed, or whose broker's or source's population did, can change alerts
            dk = {name: v[dirty] for name, v in w.keys.items()}
            touched = _same_group(k_order, dk, BROKER_KEY) | _same_group(k_order, dk, SOURCE_KEY)
            cand = order[self._fires[order] & touched]
        c = self._cache
        s = {name: c[name][cand] for name in _CACHED + ("events",)}
        s.update({name: v[pos[cand]] for name, v in pop.items()})
        keys = {name: v[cand] for name, v in w.keys.items()}
        out = self._publish(self._build_alerts(keys, s, self._fired_arrays(keys, s), window_start))
        if window_start != self._pruned_ws:  # entries added since the last prune all carry this window's key
            self._prune(window_start)
        return out

    def _grow_cache(self, n: int) -> None:
        c = self._cache
        have = len(self._scored)
        if n <= have:
            return
        for name, v in list(c.items()):
            out = np.zeros((n,) + v.shape[1:], v.dtype)
            out[:have] = v
            c[name] = out
        for name in ("_scored", "_dlo", "_dn", "_fires"):
            v = getattr(self, name)
            out = np.zeros(n, v.dtype)
            out[:have] = v
            setattr(self, name, out)

    def _drop_durations(self, slots: np.ndarray) -> None:
        """Take the cut-record durations of slots out of the sorted all-pairs multiset."""
        cnt = self._dn[slots]
        total = int(cnt.sum())
        if total:
            off = np.concatenate([[0], np.cumsum(cnt)])
            vals = np.sort(self._dpool[np.repeat(self._dlo[slots] - off[:-1], cnt) + np.arange(total)])
            first = np.searchsorted(vals, vals, "left")
            idx = np.searchsorted(self._durs, vals, "left") + (np.arange(total) - first)
            self._durs = np.delete(self._durs, idx)
            self._dlive -= total
        self._dn[slots] = 0

    def _add_durations(self, slots: np.ndarray, seg: PairSegments, cut: np.ndarray) -> None:
        """Record the cut-record durations of freshly scored slots (seg's pairs) and add them to the multiset."""
        m = cut >= 0
        vals = cut[m]
        cnt = np.bincount(seg.pair_of_event()[m], minlength=seg.n_pairs)
        if len(vals) == 0:
            return
        if self._dend + len(vals) > len(self._dpool):
            live = np.flatnonzero(self._dn)
            c = self._dn[live]
            off = np.concatenate([[0], np.cumsum(c)])
            kept = self._dpool[np.repeat(self._dlo[live] - off[:-1], c) + np.arange(off[-1])]
            pool = np.empty(max(2 * (len(kept) + len(vals)), 4096))
            pool[:len(kept)] = kept
            self._dlo[live] = off[:-1]
            self._dpool, self._dend = pool, len(kept)
        self._dpool[self._dend:self._dend + len(vals)] = vals
        self._dlo[slots] = self._dend + np.concatenate([[0], np.cumsum(cnt)[:-1]])
        self._dn[slots] = cnt
        self._dend += len(vals)
        self._dlive += len(vals)
        vals = np.sort(vals)
        self._durs = np.insert(self._durs, np.searchsorted(self._durs, vals), vals)

    def _assemble(self, order: np.ndarray) -> dict:
        """The score dict of ``score`` for the cached slots in order."""
        out = {name: self._cache[name][order] for name in _CACHED}
        d = self._durs
        ta = self.stitch_params.active_timeout_s or (float(np.ceil(quantile_sorted(d, 0.99))) if len(d) >= 3 else 0.0)
        out["active_timeout_s"] = ta
        return out

    # ------------------------------------------------------------------------------------------------ scoring

    def score(self, seg: PairSegments) -> dict:
        """Kernel outputs for every pair of seg: beacon rows, byte rows, stitching, per-pair aggregates."""
        return self._score(seg)[0]

    def _score(self, seg: PairSegments) -> tuple[dict, np.ndarray]:
        st = stitch(seg, self.stitch_params)
        off, t, _ = beat_segments(seg, st)
        beacon = score_segments(off, t, self.beacon_params, st.resolution_s, st.dead_s)
        e = seg.events
        nbytes = byte_stats(seg.offsets, e["bytes"], e["packets"], float(self.config.PayloadLengthThreshold))
        pair = seg.pair_of_event()
        sessions = np.bincount(pair[st.is_head], minlength=seg.n_pairs)
        longest = _segment_max(st.slices, seg.offsets, np.int64)
        app = _segment_max(e["app_proto"], seg.offsets, np.uint8)
        topic = _segment_max(e["topic_score"], seg.offsets, np.float32)
        first = e["start_ns"][seg.offsets[:-1]]
        last = e["start_ns"][seg.offsets[1:] - 1]
        return {"beacon": beacon, "bytes": nbytes, "sessions": sessions, "longest_session_slices": longest,
                "resolution_s": st.resolution_s, "dead_s": st.dead_s, "pair_timeout_s": st.pair_timing[:, 0],
                "app_proto": app, "topic_score": topic, "first_ns": first, "last_ns": last,
                "active_timeout_s": st.active_timeout_s}, st.cut_s

    def decide(self, seg: PairSegments, scores: dict) -> np.ndarray:
        """Boolean per pair: does any AN0005 analytic fire (vectorised; details come from _build_alerts)."""
        s = dict(scores, **self._population(seg.keys, scores["beacon"]))
        return self._fired_arrays(seg.keys, s)["any"]

    def _population(self, k: dict, beacon: np.ndarray) -> dict:
        """Per pair, its broker's population among the scored pairs (see broker_population), and its source's
        (source_rhythm_brokers, source_site_brokers)."""
        p = self.params
        period, beaconing = beacon[:, BF["period_s"]], beacon[:, BF["score"]] >= p.beacon_threshold
        clients, share = broker_population(k, period, beaconing, p.rhythm_tolerance)
        fanout = source_rhythm_brokers(k, period, beaconing, p.rhythm_tolerance)
        site = self.config.internal.match(k["dst_hi"], k["dst_lo"]) >= 0
        return {"broker_clients": clients, "broker_similar_share": share, "source_rhythm_brokers": fanout,
                "source_site_brokers": source_site_brokers(k, site, beaconing)}

    def _fired_arrays(self, k: dict, s: dict) -> dict:
        """Which analytics fire per pair. Without the broker population in s (the per-slot cache of the incremental
        path) beaconing is not gated by it, so "any" is a superset of the gated answer."""
        p, cfg = self.params, self.config
        b, y = s["beacon"], s["bytes"]
        src_in = cfg.internal.match(k["src_hi"], k["src_lo"]) >= 0
        site = cfg.internal.match(k["dst_hi"], k["dst_lo"]) >= 0  # the broker is the site's own
        beacon = b[:, BF["score"]] >= p.beacon_threshold
        hf = (b[:, BF["beats"]] >= p.hf_min_beats) & (b[:, BF["span_s"]] > 0) & \
            (b[:, BF["span_s"]] / np.maximum(b[:, BF["beats"]] - 1, 1) <= p.hf_max_period_s)
        exfil = (y[:, YF["long_events"]] >= p.exfil_min_long_events) & \
            (y[:, YF["long_bytes"]] >= p.exfil_min_bytes_factor * cfg.PayloadLengthThreshold) & \
            (y[:, YF["long_bytes"]] >= p.exfil_min_record_factor * cfg.PayloadLengthThreshold
             * np.maximum(y[:, YF["long_events"]], 1))
        # a pair whose records are nearly all bulk and come on a schedule (a backup, a sync, a file drop) is a
        # transfer job: its schedule is not a check-in and its size is its normal work. Exfil is bulk at no schedule,
        # or long messages standing out from a pair's small traffic (an implant's uploads between its check-ins)
        bulk = y[:, YF["long_share"]] >= p.bulk_min_share
        job = bulk & (b[:, BF["score"]] >= p.beacon_threshold)
        # a pair of bulk records only is judged once its schedule can be (the beacon kernels' fewest beats): three
        # hourly backups are not yet a schedule, and alerting on them would be alerting on every backup's morning
        exfil &= ~job & (~bulk | (y[:, YF["long_events"]] >= max(p.exfil_min_long_events,
                                                                  self.beacon_params.min_beats)))
        rep = cfg.reputation.match(k["dst_hi"], k["dst_lo"], k["dst_port"].astype(np.int32)) \
            if len(cfg.reputation) else np.full(len(b), -1)
        unusual = (s["app_proto"] != 0) & ~np.isin(k["dst_port"], self._ports)
        topic = s["topic_score"] >= cfg.TopicAnomalyScore.threshold
        if "broker_clients" in s:
            # a site broker's beacons alert only from a lone client (the C2 shape) that is not a poller (a monitor
            # checking many brokers on one schedule); an outside broker's only when
            # the pair is not one of a fleet (many clients in one rhythm: infrastructure), unless a reputation hit
            # (an operator's list, the shipped public-broker/dynamic-DNS list) or an anomalous topic says otherwise
            # a fleet: at least fleet_min_clients clients, and half of them, or fleet_min_clients of them, in one
            # rhythm (a fleet whose other members the stitcher saw as steady sessions, not beacons, is still one)
            similar = np.rint(s["broker_similar_share"] * s["broker_clients"])
            fleet = (s["broker_clients"] >= p.fleet_min_clients) & \
                ((s["broker_similar_share"] >= p.fleet_similar_share) | (similar >= p.fleet_min_clients))
            poller = (s["source_rhythm_brokers"] >= p.poller_min_brokers) | \
                (s["source_site_brokers"] >= p.poller_min_brokers)
            beacon &= np.where(site, (s["broker_clients"] == 1) & ~poller, ~fleet | (rep >= 0) | topic)
        beacon &= ~job
        # inside the site, publishing often, large job messages and brokers on their own ports are normal work: only
        # data leaving the site is exfil, and only reputation, a lone beacon or a topic alerts on a site broker
        exfil &= ~site
        hf &= ~site
        unusual &= ~site
        direction = np.where(site, np.where(src_in, 1, 2), np.where(src_in, 0, 3)).astype(np.int8)
        return {"beacon": beacon, "hf": hf, "exfil": exfil, "rep": rep, "unusual": unusual, "topic": topic,
                "site": site, "direction": direction,
                "any": beacon | hf | exfil | (rep >= 0) | unusual | topic}

    # ------------------------------------------------------------------------------------------------ alerts

    def _alerts_for(self, seg: PairSegments, s: dict, now_ns: int) -> list[Alert]:
        window_start = (now_ns // self._window_ns) * self._window_ns
        s = dict(s, events=seg.counts(), **self._population(seg.keys, s["beacon"]))
        out = self._publish(self._build_alerts(seg.keys, s, self._fired_arrays(seg.keys, s), window_start))
        self._prune(window_start)
        return out

    def _publish(self, alerts: list[Alert]) -> list[Alert]:
        """The alerts that are new or changed enough (analytics, or score by update_min_delta), as revisions."""
        out = []
        known, delta = self._alerts, self.params.update_min_delta
        for alert in alerts:
            key = alert.key
            prev = known.get(key)
            if prev is not None:
                if prev.evidence["analytics"] == alert.evidence["analytics"] and abs(prev.score - alert.score) < delta:
                    continue
                alert.revision = prev.revision + 1
            known[key] = alert
            out.append(alert)
        return out

    def remember(self, alerts: list[Alert]) -> None:
        """Alerts already published (by this detector before a restart, or by another worker): later passes
        update them as revisions and never repeat them."""
        for alert in alerts:
            prev = self._alerts.get(alert.key)
            if prev is None or alert.revision >= prev.revision:
                self._alerts[alert.key] = alert

    def _prune(self, window_start: int) -> None:
        self._alerts = {key: a for key, a in self._alerts.items() if key[-1] >= window_start - self._window_ns}
        self._pruned_ws = window_start

    def _build_alerts(self, k: dict, s: dict, fired: dict, window_start: int) -> list[Alert]:
        """One Alert per pair where an analytic fires (pairs as rows of k, s, fired), in row order; the per-pair
        numbers are sliced, combined and rounded as arrays first, so the Python per alert only assembles dicts."""
        cfg = self.config
        labels = cfg.reputation.labels
        rep_all = np.asarray(fired["rep"])
        rep_alerting = np.zeros(len(rep_all), bool)
        if len(labels):
            alerting = np.array([_reputation_alerts(lb) for lb in labels] + [False], bool)
            rep_alerting = alerting[np.where(rep_all >= 0, rep_all, len(labels))]
        idx = np.flatnonzero(fired["any"] & (fired["beacon"] | fired["hf"] | rep_alerting | fired["exfil"]
                                             | fired["unusual"] | fired["topic"]))
        if not len(idx):
            return []
        b, y = s["beacon"][idx], s["bytes"][idx]
        fb, fh, fx, fu, ft = (fired[n][idx] for n in ("beacon", "hf", "exfil", "unusual", "topic"))
        rep, ra = rep_all[idx], rep_alerting[idx]
        bcol = {name: b[:, BF[name]] for name in BF}
        # the score, in _alert's order of max/min steps (same float operations, so the same values)
        score = np.zeros(len(idx))
        score = np.where(fb, np.maximum(score, 100.0 * bcol["score"]), score)
        score = np.where(fh, np.maximum(score, 60.0), score)
        score = np.where(ra, np.maximum(score, 70.0), score)
        score = np.where((rep >= 0) & ~ra & (score != 0), np.minimum(100.0, score + 10.0), score)
        score = np.where(fx, np.maximum(score, 75.0), score)
        score = np.where(fu, np.maximum(score, 40.0), score)
        score = np.where(ft, np.maximum(score, 50.0), score)
        n_an = fb.astype(np.int64) + fh + ra + fx + fu + ft
        score = np.minimum(100.0, score + 10.0 * (n_an - 1))
        site = fired["site"][idx]
        score = np.where(site, score * self.params.internal_score_factor, score)
        rate = 60.0 * (bcol["beats"] - 1) / np.maximum(bcol["span_s"], 1e-9)

        def r(a, nd):
            return [round(v, nd) for v in a.tolist()]

        def ints(a):
            return a.astype(np.int64).tolist()

        score_l = r(score, 1)
        period_f, jit_f, miss_f, bsc_f = (bcol[n].tolist() for n in ("period_s", "jitter", "missed_fraction", "score"))
        rate_l = rate.tolist()
        beats_i = ints(bcol["beats"])
        periods = [[round(v, 1) for v in t if v > 0] for t in
                   zip(bcol["spec_period_s"].tolist(), bcol["period2_s"].tolist(), bcol["period3_s"].tolist())]
        period3, jit3, miss3, bsc3 = r(bcol["period_s"], 3), r(bcol["jitter"], 3), r(bcol["missed_fraction"], 3), \
            r(bcol["score"], 3)
        conc3, ialp2, bow3, mad3, cov3 = r(bcol["concentration"], 3), r(bcol["ia_logp"], 2), \
            r(bcol["bowley_skew"], 3), r(bcol["mad_s"], 3), r(bcol["hist_coverage"], 3)
        slp2, acf3 = r(bcol["spec_logp"], 2), r(bcol["spec_acf"], 3)
        events = ints(s["events"][idx])
        sessions, longest = ints(s["sessions"][idx]), ints(s["longest_session_slices"][idx])
        pto, res = s["pair_timeout_s"][idx].astype(float).tolist(), s["resolution_s"][idx].astype(float).tolist()
        dead3 = r(s["dead_s"][idx], 3)
        bpf_med, bpf_mad = y[:, YF["bpf_median"]].tolist(), y[:, YF["bpf_mad"]].tolist()
        mode3, bpp1, long3 = r(y[:, YF["bpf_mode_share"]], 3), r(y[:, YF["bpp_median"]], 1), \
            r(y[:, YF["long_share"]], 3)
        total_i, long_ev_i, long_by_i = ints(y[:, YF["total_bytes"]]), ints(y[:, YF["long_events"]]), \
            ints(y[:, YF["long_bytes"]])
        tsc = s["topic_score"][idx].astype(float)
        tsc_f, tsc3 = tsc.tolist(), r(tsc, 3)
        last_i = ints(s["last_ns"][idx])
        shi, slo, dhi, dlo = (k[n][idx].tolist() for n in ("src_hi", "src_lo", "dst_hi", "dst_lo"))
        dports, apps = k["dst_port"][idx].tolist(), s["app_proto"][idx].tolist()
        rep_l, fb_l, fh_l, fx_l, fu_l, ft_l, ra_l = (a.tolist() for a in (rep, fb, fh, fx, fu, ft, ra))
        win = f"{cfg.TimeWindow.window_s:g}"
        plt = cfg.PayloadLengthThreshold
        tthr = cfg.TopicAnomalyScore.threshold
        port_proto, topics = self._port_proto, self._topics
        site_l, dir_l = site.tolist(), fired["direction"][idx].tolist()
        pclients, pshare = ints(s["broker_clients"][idx]), r(s["broker_similar_share"][idx], 3)
        fanout = ints(s["source_rhythm_brokers"][idx])
        site_fanout = ints(s["source_site_brokers"][idx])
        poller_n = self.params.poller_min_brokers
        fleet_n, fleet_share = self.params.fleet_min_clients, self.params.fleet_similar_share
        factor = self.params.internal_score_factor
        out = []
        for j in range(len(idx)):
            dport, app = dports[j], apps[j]
            proto = APP_PROTOCOLS[app] if app else port_proto.get(dport, "unknown")
            reasons: dict[str, str] = {}
            listed = port_proto.get(dport)
            if listed is not None:
                reasons["ProtocolPortList"] = f"destination port {dport} is listed for {listed}"
            reasons["BrokerAllowList"] = "destination is not in the allowlist"
            analytics = []
            if fb_l[j]:
                analytics.append("beaconing")
                reasons["TimeWindow"] = (f"beaconing over the {win} s window: period {period_f[j]:.1f} s, jitter "
                                         f"{jit_f[j]:.2f}, {miss_f[j]:.0%} beats missed, beacon score {bsc_f[j]:.2f}")
            if fh_l[j]:
                analytics.append("high_frequency_publication")
                text = f"high-frequency publication: {rate_l[j]:.1f} per minute over {beats_i[j]} publications"
                reasons["TimeWindow"] = reasons["TimeWindow"] + "; " + text if "TimeWindow" in reasons else text
            rp = rep_l[j]
            if rp >= 0:
                if ra_l[j]:
                    analytics.append("reputation")
                reasons["BrokerReputationList"] = f"destination matches {labels[rp]}"
            if fx_l[j]:
                analytics.append("long_outbound_messages")
                reasons["PayloadLengthThreshold"] = f"{long_ev_i[j]} records above {plt} bytes/packet, " \
                                                    f"{long_by_i[j]} bytes"
            if fu_l[j]:
                analytics.append("unusual_port")
                text = f"{proto} recognised on port {dport}, which is not listed for it"
                reasons["ProtocolPortList"] = reasons["ProtocolPortList"] + "; " + text \
                    if "ProtocolPortList" in reasons else text
            if ft_l[j]:
                analytics.append("topic_anomaly")
                ts, topic = topics.get((shi[j], slo[j], dhi[j], dlo[j], dport), (tsc_f[j], ""))
                reasons["TopicAnomalyScore"] = f"topic {topic!r} scores {ts:.2f} >= {tthr}"
            evidence = {
                "analytics": analytics, "fired": list(reasons), "why": reasons, "period_s": period3[j],
                "periods_s": periods[j], "jitter": jit3[j], "missed_beat_fraction": miss3[j], "beacon_score": bsc3[j],
                "interarrival": {"concentration": conc3[j], "log10_p": ialp2[j], "bowley_skew": bow3[j],
                                 "mad_s": mad3[j], "hour_coverage": cov3[j]},
                "spectral": {"log10_p": slp2[j], "acf": acf3[j]},
                "events": events[j], "beats": beats_i[j], "sessions": sessions[j],
                "longest_session_slices": longest[j], "active_timeout_s": pto[j],
                "timing": {"resolution_s": res[j], "dead_time_s": dead3[j]},
                "bytes": {"per_flow_median": bpf_med[j], "per_flow_mad": bpf_mad[j], "mode_share": mode3[j],
                          "per_packet_median": bpp1[j], "long_share": long3[j], "total": total_i[j]},
                "topic_score": tsc3[j],
            }
            nc, sh = pclients[j], pshare[j]
            role = "lone" if nc == 1 else "fleet" if nc >= fleet_n and (sh >= fleet_share or round(sh * nc) >= fleet_n) \
                else "shared"
            evidence["direction"] = DIRECTIONS[dir_l[j]]
            evidence["broker_population"] = {
                "clients": nc, "similar_rhythm_share": sh, "role": role, "source_brokers_in_rhythm": fanout[j],
                "why": population_why(role, nc, sh, site_l[j], fb_l[j],
                                      fanout[j] >= poller_n or site_fanout[j] >= poller_n)}
            if site_l[j]:
                reasons["InternalNetworks"] = (
                    f"the broker is inside InternalNetworks ({DIRECTIONS[dir_l[j]]}), where frequent publication, "
                    f"large messages and fleets are normal work; it alerts on reputation, a topic or a lone "
                    f"client's beacon ({nc} client{'s' if nc != 1 else ''} of this broker), score x{factor:g}")
            if rp >= 0:
                evidence["reputation_hit"] = labels[rp]
            out.append(Alert("AN0005", last_i[j], (shi[j], slo[j]), (dhi[j], dlo[j]), dport, proto, score_l[j],
                             evidence, window_start))
        return out


#: Direction classes of a pair by InternalNetworks (the index is ``_fired_arrays``' "direction").
DIRECTIONS = ("internal→external", "internal→internal", "external→internal", "external→external")


def population_why(role: str, clients: int, share: float, site: bool, beaconing: bool, poller: bool = False) -> str:
    """The sentence of evidence.broker_population: what the broker's and the source's population say."""
    if role == "lone" and poller and site:
        return "the only client of this broker in the window, but its source beacons to several brokers in this " \
               "rhythm or to several of the site's brokers: a poller (monitoring), so its beacon does not alert " \
               "inside the site"
    if role == "lone":
        return "the only client of this broker in the window: a lone host beaconing to a broker nobody else uses " \
               "is the C2 shape"
    text = f"{clients} clients of this broker, {share:.0%} of them beaconing in this pair's rhythm"
    if role == "shared":
        return text + ": not a fleet"
    text += ": a fleet (infrastructure such as sensors or agents)"
    if site:
        return text + ", so its beacon does not alert inside the site"
    if beaconing:
        return text + "; its beacon alerts only because other evidence corroborates it (reputation or topic)"
    return text + ", so its beacon alone does not alert"


#: The columns naming a pair's broker, and its source.
BROKER_KEY = ("dst_hi", "dst_lo", "dst_port")
SOURCE_KEY = ("src_hi", "src_lo")


def _group_ids(k: dict, names: tuple[str, ...]) -> tuple[np.ndarray, int]:
    """Dense id of each row's group (equal values in the columns names) and the number of groups."""
    n = len(k[names[0]])
    if not n:
        return np.zeros(0, np.int64), 0
    order = np.lexsort(tuple(k[c] for c in reversed(names)))
    new = np.zeros(n, bool)
    new[0] = True
    for c in names:
        v = k[c][order]
        new[1:] |= v[1:] != v[:-1]
    ids = np.empty(n, np.int64)
    ids[order] = np.cumsum(new) - 1
    return ids, int(new.sum())


def _same_group(k: dict, other: dict, names: tuple[str, ...]) -> np.ndarray:
    """Per row of k: does a row of other have the same values in the columns names (the same broker, source)."""
    n = len(k[names[0]])
    both = {name: np.concatenate([k[name], other[name]]) for name in names}
    ids, ng = _group_ids(both, names)
    hit = np.zeros(ng, bool)
    hit[ids[n:]] = True
    return hit[ids[:n]]


#: A pair is in a schedule's rhythm at its period or at twice it: the same schedule seen with every other beat missed,
#: as an exporter's slicing or the stitcher's keepalive baseline can make a fleet member look.
HARMONICS = (1, 2)


def _similar_in_group(ids: np.ndarray, period_s: np.ndarray, beaconing: np.ndarray, tolerance: float) -> np.ndarray:
    """Per row, the beaconing rows of its group whose period is within ``tolerance`` (relative) of its own, or of
    its own divided by 2 (HARMONICS; a tolerance below 0.41 keeps the two windows apart, so none counts twice)."""
    # beaconing rows keyed by (group, log period): the similar ones are windows of that sorted key
    logp = np.log(np.clip(period_s, 1e-3, 1e9))
    span = 64.0  # wider than any log-period range, so groups never overlap
    key = np.sort(ids[beaconing] * span + logp[beaconing])
    w = np.log1p(tolerance)
    out = np.zeros(len(ids), np.int64)
    for k in HARMONICS:
        here = ids * span + logp - np.log(k)
        out += np.searchsorted(key, here + w, "right") - np.searchsorted(key, here - w, "left")
    return out


def broker_population(k: dict, period_s: np.ndarray, beaconing: np.ndarray,
                      tolerance: float) -> tuple[np.ndarray, np.ndarray]:
    """Per pair (rows of k), the distinct clients of its broker among the rows, and the share of them beaconing
    with a period within ``tolerance`` (relative) of this pair's: a fleet of sensors shares one broker and one
    rhythm; a C2 implant is the lone client of its broker. Rows are distinct pairs (one per client and broker)."""
    ids, nb = _group_ids(k, BROKER_KEY)
    clients = np.bincount(ids, minlength=nb)[ids]
    similar = _similar_in_group(ids, period_s, beaconing, tolerance)
    return clients.astype(np.int64), similar / np.maximum(clients, 1)


def source_site_brokers(k: dict, site: np.ndarray, beaconing: np.ndarray) -> np.ndarray:
    """Per pair (rows of k), the site brokers its source beacons to, whatever their rhythms: a monitor checks each
    service of the site on its own schedule; an implant inside talks to one broker."""
    ids, ng = _group_ids(k, SOURCE_KEY)
    if not len(ids):
        return np.zeros(0, np.int64)
    return np.bincount(ids, weights=(site & beaconing).astype(np.float64), minlength=ng)[ids].astype(np.int64)


def source_rhythm_brokers(k: dict, period_s: np.ndarray, beaconing: np.ndarray, tolerance: float) -> np.ndarray:
    """Per pair (rows of k), the brokers its source beacons to with a period within ``tolerance`` of this pair's:
    a monitor checking every broker of the site on one schedule is a poller, not an implant."""
    ids, _ = _group_ids(k, SOURCE_KEY)
    return _similar_in_group(ids, period_s, beaconing, tolerance).astype(np.int64)


#: Per-pair entries of the score dict kept between incremental passes.
_CACHED = ("beacon", "bytes", "sessions", "longest_session_slices", "resolution_s", "dead_s", "pair_timeout_s",
           "app_proto", "topic_score", "first_ns", "last_ns")


def _segment_max(values: np.ndarray, offsets: np.ndarray, dtype) -> np.ndarray:
    """Per pair, the largest value of its events (events grouped by pair; at least 0, as an accumulation from zero).

    ``np.maximum.reduceat`` over the segment starts: ``np.maximum.at`` took seconds on a 20M-row window."""
    n = len(offsets) - 1
    out = np.zeros(n, dtype)
    if n == 0 or len(values) == 0:
        return out
    nonempty = offsets[1:] > offsets[:-1]
    out[nonempty] = np.maximum(np.maximum.reduceat(values, offsets[:-1][nonempty]), 0)
    return out


def _reputation_alerts(label: str) -> bool:
    """A hit alerts on its own when it comes from an operator's threat-intel source; hits on the shipped list of
    public brokers and dynamic-DNS names (default_reputation.txt, and names resolved from it) are evidence only."""
    return not label.startswith("default_reputation.txt:")


__all__ = ["Detector", "DetectorParams", "Alert", "DIRECTIONS", "BROKER_KEY", "SOURCE_KEY", "HARMONICS", "broker_population",
           "source_rhythm_brokers", "source_site_brokers", "population_why"]
