"""Detection benchmark: recall on C2 pairs and false alerts per 10,000 benign pairs, per scenario family, for
brokerwatch's Detector and two references computed on the same flows: a RITA-style beacon score and an
Elastic-style (no jitter tolerance) score.

    python -m bench.detection.run [--seed N] [--c2 N] [--benign N] [--other N] [--hours H] [--stream]

The references see the same pub/sub flows outside the allowlist (the same ProtocolPortList / BrokerAllowList
filter); they differ only in how pairs are scored: on the raw records, without stitching or burst handling.
RITA-style: (time score + data-size score) / 2, time = mean(1 - |Bowley skew|, 1 - MAD/30 s, hourly-histogram
score), size = mean(1 - |Bowley skew of bytes|, 1 - MAD/32 B, 1 - median/65535), 4 connections minimum, alert at
>= 0.8. Elastic-style: coefficient of variation of the gaps <= 0.1 over at least 4 connections.
Each reference is also shown at the threshold that matches brokerwatch's false-alert count on this world.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

if __package__ in (None, ""):  # run as `python bench/detection/run.py` (python -m bench)
    sys.path[0] = str(Path(__file__).resolve().parents[2])

import numpy as np  # noqa: E402

from analytics.beacon import F as BF  # noqa: E402
from analytics.beacon import BeaconParams, score_segments  # noqa: E402
from analytics.bytestats import F as YF  # noqa: E402
from analytics.bytestats import byte_stats  # noqa: E402
from analytics.config import Config  # noqa: E402
from analytics.detections.an0005 import Detector  # noqa: E402
from analytics.pairs import group_pairs  # noqa: E402
from bench.detection.scenarios import ALLOWLIST, NS, T0, build_world, pair_key  # noqa: E402

RITA_THRESHOLD = 0.8
ELASTIC_CV = 0.1


def config_for(world) -> Config:
    return Config.from_mapping({"BrokerAllowList": list(ALLOWLIST),
                                "TimeWindow": {"window": f"{int(world.duration_s)}s",
                                               "cadence": f"{int(min(3600, world.duration_s))}s"}})


def run_detector(world, stream: bool = False) -> tuple[set, float]:
    """Pair keys (src_lo, dst_lo, dport) the Detector alerted on, and seconds taken."""
    det = Detector(config_for(world))
    alerted = set()
    t = time.perf_counter()
    for b in world.batches(3600.0):
        det.ingest(b)
        if stream:
            for a in det.evaluate(det.latest_ns):
                alerted.add((a.src[1], a.dst[1], a.dst_port))
    for a in det.flush(int((T0 + world.duration_s) * NS)):
        alerted.add((a.src[1], a.dst[1], a.dst_port))
    return alerted, time.perf_counter() - t


def reference_scores(world) -> dict:
    """{pair key: (rita score, elastic cv)} on the raw pub/sub records outside the allowlist."""
    det = Detector(config_for(world))
    cols = world.batch.columns
    seg = group_pairs(det.oriented(cols))
    allowed = det.config.allow.match(seg.keys["dst_hi"], seg.keys["dst_lo"], seg.keys["dst_port"].astype(np.int32))
    seg = seg.select_pairs(allowed < 0)
    t = seg.events["start_ns"].astype(np.float64) / NS
    b = score_segments(seg.offsets, t, BeaconParams(burst_min_s=1e-9, burst_frac=0.0, spec_min_beats=10**9))
    y = byte_stats(seg.offsets, seg.events["bytes"], seg.events["packets"], 1024.0)
    # bytes Bowley skew per pair (RITA's data-size skew)
    ds_skew = np.zeros(seg.n_pairs)
    nb = seg.events["bytes"].astype(np.float64)
    for i in range(seg.n_pairs):
        v = nb[seg.offsets[i]:seg.offsets[i + 1]]
        if len(v) >= 4:
            q1, q2, q3 = np.percentile(v, [25, 50, 75])
            ds_skew[i] = (q3 + q1 - 2 * q2) / (q3 - q1) if q3 > q1 else 0.0
    ds = ((1 - np.minimum(1, np.abs(ds_skew))) + np.maximum(0, 1 - y[:, YF["bpf_mad"]] / 32.0)
          + np.maximum(0, 1 - y[:, YF["bpf_median"]] / 65535.0)) / 3
    rita = np.where(b[:, BF["beats"]] >= 4, (b[:, BF["rita_score"]] + ds) / 2, 0.0)
    # Elastic-style: coefficient of variation of the raw gaps
    cv = np.full(seg.n_pairs, np.inf)
    for i in range(seg.n_pairs):
        v = t[seg.offsets[i]:seg.offsets[i + 1]]
        if len(v) >= 4:
            g = np.diff(v)
            cv[i] = g.std() / g.mean() if g.mean() > 0 else np.inf
    keys = list(zip(seg.keys["src_lo"].tolist(), seg.keys["dst_lo"].tolist(), seg.keys["dst_port"].tolist()))
    return {k: (float(r), float(c)) for k, r, c in zip(keys, rita, cv)}


def evaluate(world, alerted: set, refs: dict) -> dict:
    """Per-family counts and the headline figures for brokerwatch and the references."""
    fam = defaultdict(lambda: {"pairs": 0, "bw": 0, "rita": 0, "elastic": 0, "label": "", "in_limits": 0,
                               "bw_in": 0})
    rows = []
    for p in world.pairs:
        k = pair_key(p)
        r, c = refs.get(k, (0.0, np.inf))
        hit = k in alerted
        f = fam[p.family]
        f["label"] = p.label
        f["pairs"] += 1
        f["bw"] += hit
        f["rita"] += r >= RITA_THRESHOLD
        f["elastic"] += c <= ELASTIC_CV
        f["in_limits"] += p.in_limits
        f["bw_in"] += hit and p.in_limits
        rows.append((p.label, p.in_limits, hit, r, c))
    label = np.array([r[0] for r in rows])
    inl = np.array([r[1] for r in rows], bool)
    hit = np.array([r[2] for r in rows], bool)
    rita = np.array([r[3] for r in rows])
    cv = np.array([r[4] for r in rows])
    benign = label == "benign"
    out = {"families": dict(fam), "n_c2_in_limits": int(inl.sum()), "n_benign": int(benign.sum()),
           "n_benign_pubsub": int(sum(1 for p in world.pairs if p.label == "benign" and p.params.get("protocol")))}

    def figures(alert):
        return {"recall": float(alert[inl].mean()) if inl.any() else float("nan"),
                "recall_all_c2": float(alert[label == "c2"].mean()),
                "false_alerts": int(alert[benign].sum()),
                "per_10k_benign": 1e4 * alert[benign].sum() / max(benign.sum(), 1)}

    out["brokerwatch"] = figures(hit)
    out["rita"] = figures(rita >= RITA_THRESHOLD)
    out["elastic"] = figures(cv <= ELASTIC_CV)
    # references at the threshold allowing brokerwatch's number of false alerts
    fa = out["brokerwatch"]["false_alerts"]
    thr = np.sort(rita[benign])[::-1][fa] if benign.sum() > fa else 0.0
    out["rita_matched"] = dict(figures(rita > thr), threshold=float(thr))
    cthr = np.sort(cv[benign])[fa] if benign.sum() > fa else np.inf
    out["elastic_matched"] = dict(figures(cv < cthr), threshold=float(cthr))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=2)
    ap.add_argument("--c2", type=int, default=450, help="C2 pairs (spread over the C2 families)")
    ap.add_argument("--benign", type=int, default=10000, help="benign pub/sub pairs")
    ap.add_argument("--other", type=int, default=5000, help="benign non-pub/sub pairs (NTP, DNS, web, ...)")
    ap.add_argument("--hours", type=float, default=24.0)
    ap.add_argument("--stream", action="store_true", help="evaluate every hour of data as it arrives")
    a = ap.parse_args(argv)
    t = time.perf_counter()
    world = build_world(a.seed, a.c2, a.benign, a.other, a.hours * 3600)
    print(f"world seed {a.seed}: {len(world.pairs)} pairs, {len(world.batch):,} flow records, "
          f"{a.hours:g} h, built in {time.perf_counter() - t:.1f} s")
    alerted, secs = run_detector(world, a.stream)
    refs = reference_scores(world)
    r = evaluate(world, alerted, refs)
    print(f"detector: {secs:.1f} s{' (streaming, hourly evaluations)' if a.stream else ''}\n")
    print(f"{'family':<26}{'label':<8}{'pairs':>7}{'in lim':>8}{'brokerwatch':>13}{'RITA-style':>12}{'Elastic':>9}")
    for name, f in sorted(r["families"].items(), key=lambda kv: (kv[1]["label"], kv[0])):
        print(f"{name:<26}{f['label']:<8}{f['pairs']:>7}{f['in_limits']:>8}{f['bw']:>13}{f['rita']:>12}"
              f"{f['elastic']:>9}")
    print(f"\n(alerted pairs per family; recall is asked on the {r['n_c2_in_limits']} C2 pairs within the limits;"
          f" {r['n_benign']} benign pairs, {r['n_benign_pubsub']} of them pub/sub)\n")
    for name in ("brokerwatch", "rita", "elastic", "rita_matched", "elastic_matched"):
        f = r[name]
        extra = f"  (threshold {f['threshold']:.3f})" if "threshold" in f else ""
        print(f"{name:<16} recall {f['recall']:.3f} (all C2 {f['recall_all_c2']:.3f})   false alerts "
              f"{f['false_alerts']} = {f['per_10k_benign']:.2f} per 10,000 benign{extra}")
    bw = r["brokerwatch"]
    ok = bw["recall"] >= 0.95 and bw["per_10k_benign"] <= 1.0
    print(f"\nbars (recall >= 0.95, <= 1 false alert per 10,000 benign): {'met' if ok else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
