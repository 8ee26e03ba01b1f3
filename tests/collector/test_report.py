"""``brokerwatch report``: the page of a replay of the fixtures, loaded in headless Chromium (Debian's), with a plot
per alert; its parts checked on the data, not on pixels."""

from __future__ import annotations

import json
import re
import subprocess

import numpy as np
import pytest

from collector.cli import main
from collector.report import PairEvents, _intervals, alert_view, read_alerts
from tests.conftest import FIXTURES, require_tool

V5 = FIXTURES / "netflow_v5" / "softflowd_beacon_world.pcap"
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
                  "--window-size=1200,1400")


def chromium(tmp_path, *args: str) -> str:
    """Run Debian's headless Chromium on a local page; returns stdout (the DOM with --dump-dom)."""
    exe = require_tool("chromium")
    profile = tmp_path / "chromium-profile"
    done = subprocess.run([exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.fixture(scope="module")
def replayed(tmp_path_factory):
    """Alerts of a replay of the NetFlow v5 fixture, and the report of them over the same capture."""
    d = tmp_path_factory.mktemp("report")
    alerts = d / "alerts.jsonl"
    assert main(["replay", "--quiet", str(V5), "--alerts", str(alerts)]) == 0
    page = d / "report.html"
    assert main(["report", "--quiet", str(alerts), str(V5), "-o", str(page)]) == 0
    return alerts, page


def test_the_page_is_self_contained(replayed):
    _alerts, page = replayed
    text = page.read_text()
    # every script and style inline: no element loads anything (links to ATT&CK pages are anchors, not fetches)
    assert not re.search(r"<(script|img|iframe|link|object|embed)[^>]+(src|href)=", text, re.I)
    assert "@import" not in text and "url(" not in text and "fetch(" not in text and "XMLHttpRequest" not in text
    assert "default-src 'none'" in text  # and the browser is told to refuse any fetch


def test_chromium_renders_a_plot_per_alert(replayed, tmp_path):
    alerts, page = replayed
    expected = read_alerts(str(alerts))
    assert expected, "the fixture's replay alerts on its beacon"
    dom = chromium(tmp_path, "--virtual-time-budget=10000", "--dump-dom", page.as_uri())
    assert "data-rendered-ms" in dom, "the page's script did not finish"
    cards = re.findall(r'<article class="alert".*?</article>', dom, re.S)
    assert len(cards) == len(expected)
    for a in expected:
        (card,) = [c for c in cards if f'id="alert-{a["event"]["id"]}"' in c]
        for part in ('<svg class="timeline"', '<svg class="intervals"', '<svg class="bytes"', 'class="evidence"',
                     'data-part="attribution"', 'class="attack"'):
            assert part in card, part
        assert len(re.findall(r'<line class="tick"', card)) >= 100  # the beacon's flow records as ticks
        assert '<rect class="band"' in card and '<line class="period"' in card  # period and jitter band marked
        assert "T1071.005" in card and "TA0011" in card
        for element in a["brokerwatch"]["evidence"]["fired"]:
            assert re.search(rf"<td>{element}</td><td class=\"fired\">yes</td>", card), element
    assert re.search(r'<table id="severity-counts">', dom)


def test_the_screenshot_is_not_blank(replayed, tmp_path):
    from PIL import Image

    _alerts, page = replayed
    shot = tmp_path / "shot.png"
    chromium(tmp_path, "--virtual-time-budget=10000", f"--screenshot={shot}", page.as_uri())
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    assert pixels.shape == (1400, 1200)
    assert pixels.std() > 10  # a white page is 0; text, bars and ticks are far from it
    assert (pixels < 128).mean() > 0.01  # and dark ink covers more than a sliver of it


def test_many_alerts_are_paged(tmp_path):
    """Only a page of alerts is drawn (25); the rest wait for the pager, so 10k alerts load like 25."""
    a = {"@timestamp": "2026-01-15T02:58:43Z", "event": {"kind": "alert", "severity": 2},
         "rule": {"id": "AN0005", "ruleset": "DET0002", "name": "x"}, "threat": {"technique": {"id": ["T1071.005"]}},
         "source": {"ip": "192.0.2.1"}, "destination": {"ip": "198.51.100.7", "port": 1883},
         "network": {"protocol": "mqtt"},
         "brokerwatch": {"score": 60.0, "revision": 0, "evidence": {"fired": ["ProtocolPortList"], "why": {}}}}
    path = tmp_path / "alerts.jsonl"
    with path.open("w") as f:
        for i in range(260):
            b = json.loads(json.dumps(a))
            b["event"]["id"] = f"id{i}"
            b["event"]["severity"] = 4 if i == 259 else 2
            b["source"]["ip"] = f"192.0.2.{i % 250}"
            f.write(json.dumps(b) + "\n")
    page = tmp_path / "r.html"
    assert main(["report", str(path), "-o", str(page)]) == 0
    dom = chromium(tmp_path, "--virtual-time-budget=10000", "--dump-dom", page.as_uri())
    cards = re.findall(r'<article class="alert" id="alert-(\w+)" data-severity="(\d)"', dom)
    assert len(cards) == 25
    assert cards[0] == ("id259", "4")  # by severity: the critical one first
    assert "page 1 of 11 (260 alerts)" in dom
    assert "No events of this pair in the inputs given" in dom  # no inputs: the alerts, without plots


def test_the_latest_revision_of_an_alert_is_shown(tmp_path):
    path = tmp_path / "a.jsonl"
    lines = [{"event": {"kind": "alert", "id": "x"}, "brokerwatch": {"revision": r, "score": 50 + r}} for r in (0, 2, 1)]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines) + "\n")
    (only,) = read_alerts(str(path))
    assert only["brokerwatch"]["revision"] == 2


def test_a_file_that_is_not_alerts_is_exit_2(tmp_path, capsys):
    path = tmp_path / "a.jsonl"
    path.write_text('{"event": {"kind": "event"}}\n')
    assert main(["report", str(path), "-o", str(tmp_path / "r.html")]) == 2
    assert "a.jsonl:1: not an alert" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "missing.jsonl"), "-o", str(tmp_path / "r.html")]) == 2


def test_the_jitter_band_is_the_generators_interval_range():
    """Beats uniform in [S(1-j), S] have median S(1-j/2), which the detector reports as the period: the band drawn
    is [S(1-j), S] again."""
    rng = np.random.default_rng(7)
    gaps = rng.uniform(42.0, 60.0, 2000)
    t = np.cumsum(gaps * 1e9).astype(np.int64)
    out = _intervals(t, float(np.median(gaps)), 0.3)
    lo, hi = out["band"]
    assert abs(lo - 42.0) < 1.0 and abs(hi - 60.0) < 1.0
    assert sum(out["counts"]) + 0 == out["n"] == 1999


def test_bytes_are_compared_with_the_other_pairs_to_the_broker():
    from analytics.schema import ip_to_words

    a = {"source": {"ip": "10.0.0.1"}, "destination": {"ip": "203.0.113.5", "port": 1883},
         "brokerwatch": {"evidence": {"period_s": 10.0, "jitter": 0.1}}}
    s, d = ip_to_words("10.0.0.1"), ip_to_words("203.0.113.5")
    key = (s[0], s[1], d[0], d[1], 1883)
    peer = (0, ip_to_words("10.0.0.2")[1], d[0], d[1], 1883)
    ev = PairEvents(times={key: [np.arange(0, 100 * 10**10, 10**10, dtype=np.int64)]},
                    sizes={key: [np.full(100, 5000, np.uint64)]}, counts={key: 100},
                    peers={(d[0], d[1]): {peer: [np.full(400, 60, np.uint64)]}})
    view = alert_view(a, ev)
    b = view["bytes"]
    assert b["peer_pairs"] == 1 and sum(b["pair"]) == 100 and sum(b["others"]) == 400
    assert b["pair_median"] == 5000 and b["others_median"] == 60
    # the two sit in different bins: the pair's long messages stand apart from the broker's telemetry
    assert int(np.argmax(b["pair"])) > int(np.argmax(b["others"]))
    assert view["timeline"]["ticks"][0] == 0 and view["timeline"]["ticks"][-1] == 1000


def test_an_endpoint_alert_shows_its_process_connections_and_attribution(tmp_path):
    """An AN0002 alert (real EndpointDetector output): its timeline is the process's connections from the host logs,
    and the page shows the process, host and user it names."""
    from analytics.endpoint import EndpointBatchBuilder
    from collector.config import load_config
    from collector.report import _endpoint_events, _process_key, render
    from tests.analytics.detections.test_endpoint import beats, evaluate, windows_beacon

    b = EndpointBatchBuilder()
    times = beats(300, 8, 1, jitter=0.5, missed=0.3)
    windows_beacon(b, times)
    batch = b.build()
    _, alerts = evaluate(load_config(None), b)
    (alert,) = [a.to_dict() for a in alerts]
    ev = PairEvents()
    _endpoint_events(batch, {_process_key(alert)}, ev)
    view = alert_view(alert, ev)
    assert view["events"] == len(times) and view["events_from"] == "host-log connections"
    assert "bytes" not in view  # no flow of the pair among the inputs: no byte plot to draw
    assert view["intervals"]["n"] == len(times) - 1 and "band" in view["intervals"]
    page = tmp_path / "r.html"
    page.write_text(render([alert], ev, {"alerts_file": "a.jsonl", "inputs": ["sysmon.json"], "rows_read": 0}))
    dom = chromium(tmp_path, "--virtual-time-budget=10000", "--dump-dom", page.as_uri())
    (card,) = re.findall(r'<article class="alert".*?</article>', dom, re.S)
    assert '<svg class="timeline"' in card and '<svg class="intervals"' in card
    attribution = re.search(r'<table data-part="attribution">.*?</table>', card, re.S).group(0)
    for field, value in (("process.name", "powershell.exe"), ("host.name", "WS1"), ("user.name", "CORP\\alice"),
                         ("host.os.type", "windows")):
        assert f"<th>{field}</th><td>{value}</td>" in attribution, field
