"""Metrics on prometheus-client: the ``Counters`` API unchanged, its exposition parsed by prometheus-client's own
parser, histograms reported across processes, ``/healthz``, and the shipped Grafana dashboard's queries checked
against what a running service exports."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from collector.metrics import METRICS, Counters, serve_metrics
from tests.conftest import REPO
from tests.live import Running, _free_port, scrape_until

DASHBOARD = REPO / "docs" / "grafana" / "brokerwatch.json"


def families(text: str) -> dict:
    return {f.name: f for f in text_string_to_metric_families(text)}


def test_counters_keep_their_api_and_expose_through_prometheus_client():
    c = Counters()
    c.inc("brokerwatch_decoder_errors_total", ("netflow.v5", "short"), 2)
    c.inc("brokerwatch_netflow_v5_sequence_lost_total", ((0, 0xFFFF_7F00_0001),), 8)
    c.inc("brokerwatch_new_thing_total", ("a", 'quote"and\\slash'))  # added by another engineer, no declaration
    c.set("brokerwatch_analytics_rows_total", (), 7)
    assert c.get("brokerwatch_decoder_errors_total", ("netflow.v5", "short")) == 2
    fams = families(c.prometheus())
    errors = fams["brokerwatch_decoder_errors"]
    assert errors.type == "counter"
    assert [(s.labels, s.value) for s in errors.samples] == [({"decoder": "netflow.v5", "reason": "short"}, 2.0)]
    (lost,) = fams["brokerwatch_netflow_v5_sequence_lost"].samples
    assert lost.labels == {"exporter": "127.0.0.1"} and lost.value == 8
    (new,) = fams["brokerwatch_new_thing"].samples
    assert new.labels == {"l0": "a", "l1": 'quote"and\\slash'}  # escaped by the library, read back whole
    # declared families are exported from the start: zero, or present without series
    for name, (_doc, labels) in METRICS.items():
        fam = fams[name.removesuffix("_total")]
        assert fam.type == "counter"
        if not labels and name != "brokerwatch_analytics_rows_total":
            assert [s.value for s in fam.samples] == [0.0]


def test_histograms_reported_by_another_process_are_served_as_measured():
    analytics = Counters()
    h = analytics.histogram("brokerwatch_analytics_pass_seconds", "pass time", (0.1, 1.0, 10.0))
    for x in (0.05, 0.5, 5.0, 50.0):
        h.observe(x)
    served = Counters()
    served.set_reported(analytics.families())
    fam = families(served.prometheus())["brokerwatch_analytics_pass_seconds"]
    assert fam.type == "histogram"
    buckets = {s.labels["le"]: s.value for s in fam.samples if s.name.endswith("_bucket")}
    assert buckets == {"0.1": 1.0, "1.0": 2.0, "10.0": 3.0, "+Inf": 4.0}
    assert [s.value for s in fam.samples if s.name.endswith("_sum")] == [55.55]
    h.observe(0.01)  # a later report replaces the earlier one
    served.set_reported(analytics.families())
    fam = families(served.prometheus())["brokerwatch_analytics_pass_seconds"]
    assert [s.value for s in fam.samples if s.name.endswith("_count")] == [5.0]


def test_healthz_answers_503_when_something_is_down():
    async def scenario():
        state = {"ok": True, "listeners": {"ok": True}}
        port = _free_port()
        server = await serve_metrics(Counters(), "127.0.0.1", port, lambda: dict(state))
        loop = asyncio.get_running_loop()

        def get(path):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
                    return r.status, r.read().decode()
            except urllib.error.HTTPError as exc:
                return exc.code, exc.read().decode()

        try:
            first = await loop.run_in_executor(None, get, "/healthz")
            state.update(ok=False, analytics={"ok": False, "alive": False})
            second = await loop.run_in_executor(None, get, "/healthz")
            metrics = await loop.run_in_executor(None, get, "/metrics")
        finally:
            server.close()
        return first, second, metrics

    first, second, metrics = asyncio.run(scenario())
    assert first[0] == 200 and json.loads(first[1])["ok"] is True
    assert second[0] == 503 and json.loads(second[1])["analytics"]["alive"] is False
    assert metrics[0] == 200 and "# TYPE brokerwatch_decoder_records_total counter" in metrics[1]


def dashboard_metrics() -> dict[str, set[str]]:
    """Every brokerwatch metric name each panel's queries use."""
    dash = json.loads(DASHBOARD.read_text())
    out = {}
    for panel in dash["panels"]:
        names = set()
        for target in panel["targets"]:
            found = set(re.findall(r"\bbrokerwatch_[a-z0-9_]+", target["expr"]))
            assert found, f"{panel['title']}: a query that names no brokerwatch metric: {target['expr']}"
            names |= found
        out[panel["title"]] = names
    return out


def test_every_dashboard_query_names_a_metric_the_service_exports(tmp_path):
    """The service is run, fed, and scraped; each name in the dashboard must be a series (or a family) it serves."""
    from tests.collector.flows.test_netflow_v5 import REC, v5_datagram

    mport = _free_port()
    svc = Running(tmp_path, extra=("--metrics", f"127.0.0.1:{mport}", "--cadence", "0.2"))
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.sendto(v5_datagram([REC] * 3, seq=0), ("127.0.0.1", svc.ports["netflow"]))
        text = scrape_until(mport, lambda t: "brokerwatch_analytics_pass_seconds_count" in t)  # a pass every 0.2 s
    finally:
        svc.stop()
    exported = set()
    for fam in text_string_to_metric_families(text):
        exported.add(fam.name)
        if fam.type == "counter":
            exported.add(fam.name + "_total")
        exported.update(s.name for s in fam.samples)
    used = dashboard_metrics()
    assert len(used) >= 8
    for title, names in used.items():
        missing = names - exported
        assert not missing, f"panel {title!r} queries {sorted(missing)}, which the service does not export"
    every = set().union(*used.values())
    assert {"brokerwatch_decode_batch_seconds_bucket", "brokerwatch_analytics_pass_seconds_bucket"} <= every


def test_the_dashboard_is_importable_grafana_json():
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] == "brokerwatch" and dash["schemaVersion"] >= 30
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for p in dash["panels"]:
        assert p["datasource"]["uid"] == "${DS_PROMETHEUS}"
        assert {"x", "y", "w", "h"} <= set(p["gridPos"])
        assert [t["refId"] for t in p["targets"]] == [chr(65 + i) for i in range(len(p["targets"]))]


@pytest.mark.parametrize("name", sorted(METRICS))
def test_declared_metrics_follow_the_naming_rule(name):
    assert re.fullmatch(r"brokerwatch_[a-z0-9]+(_[a-z0-9]+)*_total", name)
