"""Host-log decoding speed: endpoint events/s per format on one core, beside a plain reading of the same records.

    .venv/bin/python bench/hostlogs.py [--events 50000] [--format NAME ...]

Each format row decodes the same records twice in one process, taking turns, the best of REPEAT runs each, timed
in CPU time (time.process_time, so other work on a shared machine does not count):
- "ours": ``HostLogDecoder.feed_lines`` (or ``decode_evtx``) into an EndpointBatchBuilder and ``build()``, the
  path files, ``replay`` and the TCP listener use;
- "plain": the obvious reading of the same bytes without brokerwatch: ``json.loads`` per line and direct key access
  to the fields an endpoint row holds (JSON formats), a regex over the ``<Data Name=...>`` elements (XML), and
  python-evtx's ``Record.xml()`` per record (EVTX; the pure-Python parser the Rust-backed ``evtx`` was chosen over).
Records are corpus-shaped: the Sysmon events 1/3/5 of the public EVTX samples ($BROKERWATCH_CORPUS, else
../shared/corpus) plus DNS queries (event 22), replicated in memory with pids, ports, addresses and times varied,
then rendered by each forwarder's renderer (tests/collector/hostlogs/sysmon_events.py). Nothing is written to disk
but the EVTX row, which reads the corpus files in place. The target is >= 200k Sysmon JSON (Winlogbeat) events/s.

Extension point: ``FORMATS`` maps a row name to a function ``(n) -> Case``; a host-log format adds its row there
(auditd, osquery, macOS: their records, their plain reading).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.syslog import calibration_ms  # noqa: E402  (the same loop, so figures compare across benchmarks)

#: Each loop runs this many times and the fastest counts (other work on a shared machine only ever slows a run).
REPEAT = 3


@dataclass
class Case:
    """One row of the benchmark: how many events, and the two readings of the same records."""

    events: int
    ours: Callable[[], int]  # returns the events it decoded
    plain: Callable[[], int]
    plain_label: str


def corpus_dir() -> Path:
    return Path(os.environ.get("BROKERWATCH_CORPUS", REPO.parent / "shared" / "corpus")) / "host_logs"


def corpus_sysmon_events() -> list[tuple[int, dict, str]]:
    """(event id, event data, computer) of every Sysmon 1/3/5 event in the corpus EVTX samples."""
    from evtx import PyEvtxParser

    out = []
    for path in sorted((corpus_dir() / "windows_sysmon").glob("*.evtx")):
        for rec in PyEvtxParser(str(path), number_of_threads=1).records_json():
            event = json.loads(rec["data"])["Event"]
            eid = event["System"]["EventID"]
            eid = eid["#text"] if isinstance(eid, dict) else eid
            if eid in (1, 3, 5) and isinstance(event.get("EventData"), dict):
                data = {k: "" if v is None else str(v) for k, v in event["EventData"].items()}
                if not data.get("ProcessGuid", "").startswith("{"):
                    data["ProcessGuid"] = "{" + data.get("ProcessGuid", "").lower() + "}"
                out.append((eid, data, event["System"]["Computer"]))
    if not out:
        sys.exit(f"no Sysmon EVTX samples under {corpus_dir()} (set BROKERWATCH_CORPUS)")
    return out


def varied_events(n: int) -> list[dict]:
    """n events shaped like the corpus's, each with its pid, ports, addresses and time varied (and 1 in 10 a DNS
    query), as sysmon_events.sysmon_event dicts."""
    from tests.collector.hostlogs.sysmon_events import SCHEMA, sysmon_event

    base = corpus_sysmon_events()
    rng = random.Random(7)
    t0 = 1_764_750_000.0
    out = []
    for i in range(n):
        ts = t0 + i * 0.004
        if i % 10 == 9:
            out.append(sysmon_event(
                22, ts, host=base[i % len(base)][2], record_id=i,
                ProcessGuid="{4dc16835-e854-6116-9224-%012x}" % (i % 997),
                ProcessId=1000 + i % 997, Image="C:\\Program Files\\Mozilla Firefox\\firefox.exe", User="CORP\\alice",
                QueryName=f"host{i % 4093}.example.net",
                QueryResults=f"type:  5 edge{i % 31}.example.net;::ffff:203.0.{i % 251}.{rng.randrange(1, 255)};",
            ))
            continue
        eid, data, host = base[i % len(base)]
        fields = dict(data)
        fields["ProcessId"] = str(1000 + rng.randrange(60000))
        fields["ProcessGuid"] = fields["ProcessGuid"][:-13] + "%012x}" % (i % 65521)
        if eid == 3:
            fields["SourcePort"] = str(49152 + rng.randrange(16000))
            fields["DestinationIp"] = f"198.51.{rng.randrange(256)}.{rng.randrange(1, 255)}"
        ev = sysmon_event(eid, ts, host=host, record_id=i, **{k: v for k, v in fields.items() if k in SCHEMA[eid]})
        out.append(ev)
    return out


def _rows_of(lines: list[bytes]) -> int:
    from analytics.endpoint import EndpointBatchBuilder
    from collector.hostlogs.decoder import HostLogDecoder

    dec = HostLogDecoder()
    b = EndpointBatchBuilder()
    dec.feed_lines(lines, b)
    b.build()
    if dec.rejected:
        sys.exit(f"benchmark records rejected: {dict(dec.rejected)}")
    return sum(dec.records.values())


def _json_case(n: int, render: Callable[[dict], dict], root: tuple[str, ...], system: tuple[str, ...],
               keys: tuple[str, ...]) -> Case:
    """A JSON row: records rendered by ``render``; the plain reading walks ``root`` to the event data, takes the
    ``system`` path's object (the record itself when empty) for id/channel/host and ``keys`` from the event data."""
    import orjson

    lines = [orjson.dumps(render(ev)) for ev in varied_events(n)]
    _rows_of(lines)  # a dry run: every record must decode
    head, fields = keys[:3], keys[3:]

    def plain() -> int:
        for line in lines:
            o = json.loads(line)
            d = s = o
            for k in root:
                d = d[k]
            for k in system:
                s = s[k]
            tuple(map(s.get, head)), tuple(map(d.get, fields))
        return len(lines)

    return Case(len(lines), lambda: _rows_of(lines) and len(lines), plain, "json.loads + key access")


_SYSMON_KEYS = ("UtcTime", "ProcessGuid", "ProcessId", "Image", "CommandLine", "User", "SourceIp", "SourcePort",
                "DestinationIp", "DestinationPort", "QueryName", "QueryResults")


def winlogbeat_case(n: int) -> Case:
    from tests.collector.hostlogs.sysmon_events import winlogbeat

    return _json_case(n, winlogbeat, ("winlog", "event_data"), ("winlog",),
                      ("event_id", "channel", "computer_name") + _SYSMON_KEYS)


def wazuh_case(n: int) -> Case:
    from tests.collector.hostlogs.sysmon_events import wazuh

    return _json_case(n, wazuh, ("win", "eventdata"), ("win", "system"),
                      ("eventID", "channel", "computer") + tuple(k[0].lower() + k[1:] for k in _SYSMON_KEYS))


def nxlog_case(n: int) -> Case:
    from tests.collector.hostlogs.sysmon_events import nxlog

    return _json_case(n, nxlog, (), (), ("EventID", "Channel", "Hostname") + _SYSMON_KEYS)


_DATA = re.compile(rb"<Data Name='([^']*)'>([^<]*)</Data>")
_EID = re.compile(rb"<EventID>(\d+)</EventID>")


def xml_case(n: int) -> Case:
    from tests.collector.hostlogs.sysmon_events import event_xml

    lines = [event_xml(ev).encode() for ev in varied_events(n)]
    _rows_of(lines)

    def plain() -> int:
        for line in lines:
            int(_EID.search(line).group(1))
            dict(_DATA.findall(line))
        return len(lines)

    return Case(len(lines), lambda: _rows_of(lines) and len(lines), plain, "regex over <Data> elements")


def evtx_case(n: int) -> Case:
    from Evtx.Evtx import Evtx

    from analytics.endpoint import EndpointBatchBuilder
    from collector.hostlogs.decoder import HostLogDecoder

    paths = [str(p) for p in sorted((corpus_dir() / "windows_sysmon").glob("*.evtx"))]
    records = 0
    for p in paths:
        with Evtx(p) as f:
            records += sum(1 for _ in f.records())
    rounds = max(1, n // 20000)

    def ours() -> int:
        for _ in range(rounds):
            dec = HostLogDecoder()
            b = EndpointBatchBuilder()
            for p in paths:
                dec.decode_evtx(p, b)
            b.build()
        return records * rounds

    def plain() -> int:
        for _ in range(rounds):
            for p in paths:
                with Evtx(p) as f:
                    for rec in f.records():
                        rec.xml()
        return records * rounds

    return Case(records * rounds, ours, plain, "python-evtx Record.xml()")


#: Row name -> case maker. Other host-log formats add their rows here.
FORMATS: dict[str, Callable[[int], Case]] = {
    "sysmon winlogbeat json": winlogbeat_case,
    "sysmon wazuh json": wazuh_case,
    "sysmon nxlog json": nxlog_case,
    "sysmon event xml": xml_case,
    "sysmon evtx (all records)": evtx_case,
}


def measure(case: Case) -> tuple[float, float]:
    """(ours events/s, plain events/s), the two taking turns, best of REPEAT."""
    best_ours = best_plain = float("inf")
    for _ in range(REPEAT):
        t0 = time.process_time()
        k = case.ours()
        best_ours = min(best_ours, time.process_time() - t0)
        t0 = time.process_time()
        case.plain()
        best_plain = min(best_plain, time.process_time() - t0)
    return k / best_ours, case.events / best_plain


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=50_000, help="records per JSON/XML row (default 50000)")
    ap.add_argument("--format", action="append", choices=sorted(FORMATS), help="only this row (repeatable)")
    args = ap.parse_args()
    print(f"calibration: {calibration_ms():.1f} ms for a fixed 10^6-step Python loop (lower = faster core)")
    for name in args.format or FORMATS:
        case = FORMATS[name](args.events)
        ours, plain = measure(case)
        print(f"{name:28s} {case.events:>8d} events  ours {ours:>10,.0f} ev/s   {case.plain_label}: "
              f"{plain:>10,.0f} ev/s   ours/plain {ours / plain:5.2f}x", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
