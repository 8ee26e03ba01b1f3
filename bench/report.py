"""``brokerwatch report`` on many alerts: the time to write the page, its size, and the time Chromium takes to have
it ready, paged (25 alerts drawn) against every alert drawn at once (``#all``), in one run.

    .venv/bin/python bench/report.py [--alerts 10000] [--runs 3]

The alerts are copies of the alert a replay of the NetFlow v5 fixture raises (each a new ``event.id``, severities
and scores spread), so every one of them has the pair's 189 flow records to plot: the worst case per alert. Chromium
is Debian's, headless; "ready" is the page's own ``data-rendered-ms`` (from navigation start to the first page drawn).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
V5 = REPO / "fixtures" / "netflow_v5" / "softflowd_beacon_world.pcap"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--window-size=1200,1600", "--virtual-time-budget=60000", "--dump-dom"]


def ready_ms(chromium: str, page: Path, profile: Path, fragment: str = "") -> tuple[int, int]:
    dom = subprocess.run([chromium, *FLAGS, f"--user-data-dir={profile}", page.as_uri() + fragment],
                         capture_output=True, text=True, timeout=600).stdout
    m = re.search(r'data-parse-ms="(\d+)" data-rendered-ms="(\d+)"', dom)
    return (int(m.group(1)), int(m.group(2))) if m else (-1, -1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--alerts", type=int, default=10_000)
    ap.add_argument("--all-alerts", type=int, default=1000, help="alerts in the page drawn whole (#all)")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    from collector.cli import main as cli
    from collector.report import build_report

    work = Path(tempfile.mkdtemp(prefix="bw-report-bench-"))
    one = work / "one.jsonl"
    assert cli(["replay", "--quiet", str(V5), "--alerts", str(one)]) == 0
    alert = json.loads(one.read_text().splitlines()[-1])

    def alerts_file(n: int) -> Path:
        path = work / f"alerts{n}.jsonl"
        with path.open("w") as f:
            for i in range(n):
                a = json.loads(json.dumps(alert))
                a["event"]["id"] = f"bench{i:06d}"
                a["event"]["severity"] = 1 + i % 4
                a["brokerwatch"]["score"] = float(i % 100)
                f.write(json.dumps(a) + "\n")
        return path

    chromium = shutil.which("chromium")
    for n, fragment in ((args.alerts, ""), (args.all_alerts, ""), (args.all_alerts, "#all")):
        src = alerts_file(n)
        page = work / f"report{n}.html"
        builds = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            build_report(str(src), [str(V5)], str(page))
            builds.append(time.perf_counter() - t0)
        line = (f"{n} alerts{' drawn at once (#all)' if fragment else ', paged'}: page written in "
                f"{min(builds):.2f}-{max(builds):.2f} s, {page.stat().st_size / 1e6:.1f} MB")
        if chromium:
            loads = [ready_ms(chromium, page, work / "profile", fragment) for _ in range(args.runs)]
            line += (f"; Chromium ready in {min(r for _, r in loads)}-{max(r for _, r in loads)} ms "
                     f"(JSON parse {min(p for p, _ in loads)}-{max(p for p, _ in loads)} ms)")
        print(line, flush=True)
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
