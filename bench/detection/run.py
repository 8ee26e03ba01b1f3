"""Detection benchmark: recall on C2 pairs and false alerts per 10,000 benign pairs, per scenario family, for
brokerwatch's Detector and two references computed on the same flows: RITA v5's beacon score and Elastic's Network
Beaconing Identification transform (bench/detection/references.py: ported from their sources, lines cited).

    python -m bench.detection.run [--seed N] [--c2 N] [--benign N] [--other N] [--hours H] [--stream]

The references read the same pub/sub records as the Detector (client -> broker, replies folded, outside
BrokerAllowList), merged into connections as Zeek would log them, each within its tool's default scope (internal
source, outside destination). RITA alerts at a beacon score >= 0.70 (its "Medium" severity and up); Elastic at
beaconing_score >= 1 (its "Statistical Model Detected C2 Beaconing Activity" rule; 3 is the "High Confidence"
rule, shown as elastic_high). Each reference is also shown at the threshold that allows no more false alerts
than brokerwatch made on this world ("matched").
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

from analytics.config import Config  # noqa: E402
from analytics.detections.an0005 import Detector  # noqa: E402
from bench.detection.references import (ELASTIC_HIGH_CONFIDENCE, ELASTIC_THRESHOLD, RITA_THRESHOLD,  # noqa: E402
                                        elastic_scores, prepare, rita_scores)
from bench.detection.scenarios import ALLOWLIST, NS, T0, build_world, pair_key  # noqa: E402

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
    """{pair key: (RITA beacon score, Elastic beaconing_score)} on the world's records (references.py)."""
    cfg = config_for(world)
    prepared = prepare(world.batch, cfg)  # the connections both read, made once
    rita = rita_scores(world.batch, cfg, prepared=prepared)
    elastic = elastic_scores(world.batch, cfg, prepared=prepared)
    return {k: (rita.get(k, 0.0), elastic.get(k, 0.0)) for k in rita.keys() | elastic.keys()}


def matched_threshold(score: np.ndarray, benign: np.ndarray, allowed: int) -> float:
    """The level to alert above (score > level) that alerts the most pairs and at most ``allowed`` benign ones:
    the (allowed + 1)-th highest benign score (any level that excludes it alerts a subset)."""
    b = np.sort(score[benign])[::-1]
    return float(b[allowed]) if len(b) > allowed else float("-inf")


def evaluate(world, alerted: set, refs: dict) -> dict:
    """Per-family counts and the headline figures for brokerwatch and the references."""
    fam = defaultdict(lambda: {"pairs": 0, "bw": 0, "rita": 0, "elastic": 0, "label": "", "in_limits": 0,
                               "bw_in": 0})
    rows = []
    for p in world.pairs:
        k = pair_key(p)
        r, c = refs.get(k, (0.0, 0.0))
        hit = k in alerted
        f = fam[p.family]
        f["label"] = p.label
        f["pairs"] += 1
        f["bw"] += hit
        f["rita"] += r >= RITA_THRESHOLD
        f["elastic"] += c >= ELASTIC_THRESHOLD
        f["in_limits"] += p.in_limits
        f["bw_in"] += hit and p.in_limits
        rows.append((p.label, p.in_limits, hit, r, c))
    label = np.array([r[0] for r in rows])
    inl = np.array([r[1] for r in rows], bool)
    hit = np.array([r[2] for r in rows], bool)
    rita = np.array([r[3] for r in rows])
    es = np.array([r[4] for r in rows])
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
    out["elastic"] = figures(es >= ELASTIC_THRESHOLD)
    out["elastic_high"] = figures(es >= ELASTIC_HIGH_CONFIDENCE)
    # references at the threshold allowing brokerwatch's number of false alerts
    fa = out["brokerwatch"]["false_alerts"]
    thr = matched_threshold(rita, benign, fa)
    out["rita_matched"] = dict(figures(rita > thr), threshold=thr)
    cthr = matched_threshold(es, benign, fa)
    out["elastic_matched"] = dict(figures(es > cthr), threshold=cthr)
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
    t = time.perf_counter()
    refs = reference_scores(world)
    rsecs = time.perf_counter() - t
    r = evaluate(world, alerted, refs)
    print(f"detector: {secs:.1f} s{' (streaming, hourly evaluations)' if a.stream else ''}; "
          f"references (RITA v5, Elastic): {rsecs:.1f} s\n")
    print(f"{'family':<26}{'label':<8}{'pairs':>7}{'in lim':>8}{'brokerwatch':>13}{'RITA v5':>12}{'Elastic':>9}")
    for name, f in sorted(r["families"].items(), key=lambda kv: (kv[1]["label"], kv[0])):
        print(f"{name:<26}{f['label']:<8}{f['pairs']:>7}{f['in_limits']:>8}{f['bw']:>13}{f['rita']:>12}"
              f"{f['elastic']:>9}")
    print(f"\n(alerted pairs per family; recall is asked on the {r['n_c2_in_limits']} C2 pairs within the limits;"
          f" {r['n_benign']} benign pairs, {r['n_benign_pubsub']} of them pub/sub)\n")
    for name in ("brokerwatch", "rita", "elastic", "elastic_high", "rita_matched", "elastic_matched"):
        f = r[name]
        extra = f"  (alerting above {f['threshold']:.3f})" if "threshold" in f else ""
        print(f"{name:<16} recall {f['recall']:.3f} (all C2 {f['recall_all_c2']:.3f})   false alerts "
              f"{f['false_alerts']} = {f['per_10k_benign']:.2f} per 10,000 benign{extra}")
    bw = r["brokerwatch"]
    ok = bw["recall"] >= 0.95 and bw["per_10k_benign"] <= 1.0
    print(f"\nbars (recall >= 0.95, <= 1 false alert per 10,000 benign): {'met' if ok else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
