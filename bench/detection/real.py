"""Detection through real exporters: recall and false alerts per input, per family, with the references beside.

    python -m bench.detection.real [--seeds 1 2 3 4 5] [--hours 24] [--scale 1.0] [--inputs NAME ...]
                                   [--work DIR] [--keep] [--json FILE]

For each seed: ``pcapworld.generate`` writes a labelled day of raw traffic (a pcap in virtual time); every input of
``exporters.INPUTS`` turns it into what a site would send brokerwatch (softflowd v5/v9/IPFIX with and without an
active timeout, pmacct nfprobe v9 with a 300 s active timeout, pmacct sfprobe 1:8, or the raw pcap itself for the
flow meter); ``brokerwatch replay`` (a subprocess: the command a user runs, default configuration, nothing
allowlisted) turns it into alerts. An AN0005 alert counts for the labelled pair (source, destination, destination
port) it names. Recall is asked on the C2 pairs whose ``limits`` hold for the input's class (what DESIGN §4 asks and
what that input can see); false alerts are counted on every benign pair, and alerts naming no labelled pair
(a flow the exporter or the meter oriented the wrong way, say) are counted as false alerts too.

The RITA and Elastic references score the same decoded records (``OfflineSource``, the replay's own reader), on the
pub/sub ports brokerwatch watches, and are printed in the same table.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

if __package__ in (None, ""):  # run as `python bench/detection/real.py`
    sys.path[0] = str(Path(__file__).resolve().parents[2])

import numpy as np  # noqa: E402

from analytics.config import Config  # noqa: E402
from analytics.schema import FlowBatch  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
#: The bars of DESIGN §5 / issue #13.
RECALL_BAR = 0.95
FALSE_PER_10K_BAR = 1.0


def _ip_lo(text: str) -> int:
    """The low word brokerwatch keeps for an IPv4 address (IPv4-mapped)."""
    return 0xFFFF00000000 | int(ipaddress.IPv4Address(text))


def pair_of(alert: dict) -> tuple[str, str, int]:
    """(source ip, destination ip, destination port) of an alert."""
    return alert["source"]["ip"], alert["destination"]["ip"], int(alert["destination"].get("port") or 0)


def replay_alerts(inputs: list[str], workdir: Path, config: str | None = None) -> tuple[list[dict], float, str]:
    """Run ``brokerwatch replay`` on the inputs; returns (alerts, seconds, stderr)."""
    out = workdir / "alerts.jsonl"
    out.unlink(missing_ok=True)  # replay appends to its --alerts file
    # `brokerwatch replay` (its entry point, run from this checkout so a clone measures its own code)
    cmd = [sys.executable, "-m", "collector.cli", "replay", "-q", "--alerts", str(out)]
    if config:
        cmd += ["--config", config]
    t = time.perf_counter()
    proc = subprocess.run(cmd + inputs, cwd=REPO, capture_output=True, text=True)
    secs = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(f"replay failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    alerts = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    return alerts, secs, proc.stderr


def decoded_batch(inputs: list[str]) -> FlowBatch:
    """The flow records replay reads from the inputs, as one batch (for the references)."""
    from collector.inputs import OfflineSource

    src = OfflineSource(server_ports=tuple(Config().port_protocols()))
    return FlowBatch.concat(list(src.batches(inputs)))


def score_input(labels: dict, input_class: str, alerts: list[dict], refs: dict) -> dict:
    """Per-family counts and headline figures for brokerwatch and each reference on one input."""
    pairs = labels["pairs"]
    net = {}
    for a in alerts:
        if a.get("rule", {}).get("id") == "AN0005":
            net.setdefault(pair_of(a), a)
    keys = [(p["src"], p["dst"], int(p["dport"])) for p in pairs]
    labelled = set(keys)
    stray = sorted(k for k in net if k not in labelled)
    fam = defaultdict(lambda: defaultdict(int))
    asked = np.array([p["label"] == "c2" and bool(p["limits"].get(input_class)) for p in pairs])
    benign = np.array([p["label"] == "benign" for p in pairs])
    pubsub = np.array([bool(p.get("pubsub")) for p in pairs])
    hits = {"brokerwatch": np.array([k in net for k in keys])}
    lo_keys = [(_ip_lo(s), _ip_lo(d), port) for s, d, port in keys]
    for name, (scores, alerted) in refs.items():
        hits[name] = np.array([bool(alerted(scores.get(k))) for k in lo_keys])
    for i, p in enumerate(pairs):
        f = fam[p["family"]]
        f["label"] = p["label"]
        f["pairs"] += 1
        f["asked"] += bool(asked[i])
        for name, h in hits.items():
            f[name] += bool(h[i])
    out = {"families": {k: dict(v) for k, v in fam.items()}, "asked": int(asked.sum()),
           "benign": int(benign.sum()), "benign_pubsub": int((benign & pubsub).sum()), "stray": stray}
    for name, h in hits.items():
        extra = len(stray) if name == "brokerwatch" else 0
        fa = int(h[benign].sum()) + extra
        out[name] = {"recall": float(h[asked].mean()) if asked.any() else float("nan"),
                     "found": int(h[asked].sum()), "false_alerts": fa,
                     "per_10k_benign": 1e4 * fa / max(int(benign.sum()), 1),
                     "per_10k_benign_pubsub": 1e4 * fa / max(int((benign & pubsub).sum()), 1)}
    out["missed"] = [p["family"] + f" {p['src']}->{p['dst']}:{p['dport']}" for i, p in enumerate(pairs)
                     if asked[i] and not hits["brokerwatch"][i]]
    out["false"] = [p["family"] + f" {p['src']}->{p['dst']}:{p['dport']}" for i, p in enumerate(pairs)
                    if benign[i] and hits["brokerwatch"][i]]
    return out


def reference_scores(batch: FlowBatch) -> dict:
    """{reference name: (scores by (src_lo, dst_lo, dport), alerted(score) -> bool)} on the decoded records."""
    from bench.detection import references as ref

    config = Config()
    pr = ref.prepare(batch, config)
    return {"RITA v5": (ref.rita_scores(batch, config, prepared=pr),
                        lambda s: s is not None and s >= ref.RITA_THRESHOLD),
            "Elastic": (ref.elastic_scores(batch, config, prepared=pr),
                        lambda s: s is not None and s >= ref.ELASTIC_THRESHOLD)}


def run_seed(seed: int, hours: float, scale: float, inputs: list[str], work: Path, log=print) -> dict:
    """Generate one world, export it through every input, replay each; the figures per input."""
    from bench.detection import exporters, pcapworld

    wdir = work / f"seed{seed}"
    wdir.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    labels = pcapworld.generate(wdir, seed, hours=hours, scale=scale)
    raw = wdir / "raw.pcap"
    n_c2 = sum(p["label"] == "c2" for p in labels["pairs"])
    log(f"seed {seed}: {len(labels['pairs'])} pairs ({n_c2} C2), {labels['packets']:,} packets, {hours:g} h, "
        f"{raw.stat().st_size / 1e6:.0f} MB, written in {time.perf_counter() - t:.1f} s")
    results = {}
    for name in inputs:
        spec = exporters.INPUTS[name]
        idir = wdir / name
        idir.mkdir(exist_ok=True)
        t = time.perf_counter()
        out_pcap = idir / "export.pcap"
        # loss inside an exporter (pmacct's nfprobe leaves a few packets of millions unaccounted on a day) is scored
        # anyway, and reported on the input's line: the figures are what that exporter gives a site
        stats = exporters.export(name, raw, out_pcap, idir, allow_loss=True)
        lost = []
        if stats.get("sequence_gaps"):
            lost.append(f"{stats['sequence_gaps']} sequence gaps")
        if stats.get("kernel_drops"):
            lost.append(f"{stats['kernel_drops']} kernel drops")
        if "packets_accounted" in stats and stats["packets_accounted"] != stats.get("raw_packets"):
            lost.append(f"{stats.get('raw_packets', 0) - stats['packets_accounted']} of "
                        f"{stats.get('raw_packets', 0):,} packets not in its records")
        exported = Path(stats.get("path", out_pcap)) if name != "meter" else raw
        t_export = time.perf_counter() - t
        alerts, t_replay, stderr = replay_alerts([str(exported)], idir)
        t = time.perf_counter()
        refs = reference_scores(decoded_batch([str(exported)]))
        t_refs = time.perf_counter() - t
        r = score_input(labels, spec.limit_class, alerts, refs)
        r["export"] = {k: v for k, v in stats.items() if k != "path"}
        r["export_loss"] = lost
        r["seconds"] = {"export": t_export, "replay": t_replay, "references": t_refs}
        r["replay_stderr"] = stderr.strip()[-500:]
        bw = r["brokerwatch"]
        log(f"  {name:<24} recall {bw['recall']:.3f} ({bw['found']}/{r['asked']})  false alerts {bw['false_alerts']}"
            f" ({bw['per_10k_benign']:.2f}/10k)  export {t_export:.0f} s, replay {t_replay:.0f} s"
            f"{'  (' + ', '.join(lost) + ')' if lost else ''}")
        results[name] = r
    return {"seed": seed, "labels": {"pairs": len(labels["pairs"]), "packets": labels["packets"]},
            "inputs": results}


def summarise(runs: list[dict], inputs: list[str], log=print) -> dict:
    """Totals per input over the seeds (recall, false alerts per 10k), per family, the bars met or not."""
    from bench.detection import exporters

    summary = {}
    names = None
    for name in inputs:
        rs = [r["inputs"][name] for r in runs if name in r["inputs"]]
        if not rs:
            continue
        names = names or [k for k in rs[0] if isinstance(rs[0][k], dict) and "recall" in rs[0][k]]
        tot = {}
        for ref in names:
            found = sum(r[ref]["found"] for r in rs)
            asked = sum(r["asked"] for r in rs)
            fa = sum(r[ref]["false_alerts"] for r in rs)
            benign = sum(r["benign"] for r in rs)
            tot[ref] = {"recall": found / asked if asked else float("nan"), "found": found, "asked": asked,
                        "false_alerts": fa, "benign": benign, "per_10k_benign": 1e4 * fa / max(benign, 1),
                        "per_seed_recall": [round(r[ref]["recall"], 3) for r in rs],
                        "per_seed_false": [r[ref]["false_alerts"] for r in rs]}
        fams = defaultdict(lambda: defaultdict(int))
        for r in rs:
            for fname, f in r["families"].items():
                for k, v in f.items():
                    if isinstance(v, str):
                        fams[fname][k] = v
                    else:
                        fams[fname][k] += v
        summary[name] = {"totals": tot, "families": {k: dict(v) for k, v in fams.items()},
                         "limit_class": exporters.INPUTS[name].limit_class,
                         "seeds": [r["seed"] for r in runs if name in r["inputs"]]}
    log(f"\n{'input':<24}{'class':<12}{'seeds':>6}" + "".join(f"{n + ' recall':>22}{'FA/10k':>8}" for n in names))
    for name, s in summary.items():
        row = f"{name:<24}{s['limit_class']:<12}{len(s['seeds']):>6}"
        for ref in names:
            t = s["totals"][ref]
            row += f"{t['recall']:.3f} ({t['found']}/{t['asked']})".rjust(22) + f"{t['per_10k_benign']:>8.2f}"
        log(row)
    fam_names = sorted({f for s in summary.values() for f in s["families"]},
                       key=lambda f: (next(s["families"][f]["label"] for s in summary.values()
                                           if f in s["families"]), f))
    log("\nalerted pairs per family (brokerwatch; C2: found/asked on that input, benign: false alerts/pairs)")
    log(f"{'family':<26}{'label':<8}" + "".join(f"{n[:14]:>15}" for n in summary))
    for f in fam_names:
        lab = next(s["families"][f]["label"] for s in summary.values() if f in s["families"])
        row = f"{f:<26}{lab:<8}"
        for name, s in summary.items():
            c = s["families"].get(f, {})
            if lab == "c2":
                row += f"{c.get('brokerwatch', 0)}/{c.get('asked', 0)}".rjust(15)
            else:
                row += f"{c.get('brokerwatch', 0)}/{c.get('pairs', 0)}".rjust(15)
        log(row)
    ok = {}
    for name, s in summary.items():
        t = s["totals"]["brokerwatch"]
        if s["limit_class"] == "sflow":
            ok[name] = "reported"
            continue
        ok[name] = "met" if t["recall"] >= RECALL_BAR and t["per_10k_benign"] <= FALSE_PER_10K_BAR else "NOT met"
    log("\nbars (recall >= 0.95 on C2 in limits, <= 1 false alert per 10,000 benign pairs): "
        + ", ".join(f"{k} {v}" for k, v in ok.items()))
    return {"inputs": summary, "bars": ok}


def main(argv=None) -> int:
    """Command line."""
    from bench.detection import exporters

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    ap.add_argument("--hours", type=float, default=24.0)
    ap.add_argument("--scale", type=float, default=1.0, help="world size (1.0: a few thousand pairs)")
    ap.add_argument("--inputs", nargs="+", default=list(exporters.INPUTS), choices=list(exporters.INPUTS))
    ap.add_argument("--work", help="work directory (default: a temporary one, removed unless --keep)")
    ap.add_argument("--keep", action="store_true", help="keep the pcaps, exports and alerts")
    ap.add_argument("--json", help="write every figure (per seed, input and family) to this file")
    ap.add_argument("--combine", nargs="+", metavar="JSON",
                    help="print the summary over the runs of earlier --json files (seeds run in parallel)")
    a = ap.parse_args(argv)
    if a.combine:
        try:
            runs = [r for path in a.combine for r in json.loads(Path(path).read_text())["runs"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            ap.error(f"--combine: not the JSON of a --json run ({type(exc).__name__}: {exc})")
        names = list(dict.fromkeys(n for r in runs for n in r["inputs"]))
        print(f"seeds {sorted(r['seed'] for r in runs)}")
        summary = summarise(runs, names)
        if a.json:
            Path(a.json).write_text(json.dumps({"combined": a.combine, "runs": runs, "summary": summary}, indent=1,
                                               default=float))
        return 0
    work = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix="bw-detection-"))
    runs = []
    try:
        for seed in a.seeds:
            runs.append(run_seed(seed, a.hours, a.scale, a.inputs, work))
            if not a.keep:
                shutil.rmtree(work / f"seed{seed}", ignore_errors=True)
        summary = summarise(runs, a.inputs)
        if a.json:
            Path(a.json).write_text(json.dumps({"args": vars(a), "runs": runs, "summary": summary}, indent=1,
                                               default=float))
    finally:
        if not a.keep and not a.work:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
