"""analytics.direction against its per-row twin (tests/reference/direction_ref.py), and the cases that matter."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from analytics.direction import orient, port_rank
from analytics.schema import (COLUMNS, FLAG_NO_COUNTERS, FLAG_NO_PORTS, FLAG_ORIENTED, FLAG_REVERSE, FLOW_DTYPE,
                              ip_to_words)
from tests.reference import direction_ref

SERVER_PORTS = np.array([1883, 5672, 8883], np.uint16)
CLIENT = ip_to_words("192.0.2.10")
BROKER = ip_to_words("203.0.113.50")


def rows_of(specs: list[dict]) -> dict[str, np.ndarray]:
    """Columns from row dicts (unset fields 0)."""
    cols = {k: np.zeros(len(specs), FLOW_DTYPE[k]) for k in COLUMNS}
    for i, s in enumerate(specs):
        for k, v in s.items():
            cols[k][i] = v
    return cols


def row(src, dst, sport, dport, start, end=None, nbytes=100, packets=1, proto=6, flags=0, exporter=1):
    """One flow row as a dict."""
    return dict(src_hi=src[0], src_lo=src[1], dst_hi=dst[0], dst_lo=dst[1], src_port=sport, dst_port=dport,
                start_ns=start, end_ns=start if end is None else end, bytes=nbytes, packets=packets, proto=proto,
                flags=flags, exporter_lo=exporter, in_if=3, out_if=7)


def as_dicts(cols: dict) -> list[dict]:
    """Column dict -> row dicts of plain ints."""
    n = len(cols["start_ns"])
    return [{k: int(cols[k][i]) for k in cols} for i in range(n)]


def check_against_reference(specs: list[dict]) -> tuple[dict, np.ndarray]:
    """orient() equals the twin, row for row."""
    cols = rows_of(specs)
    got, reply = orient(cols, SERVER_PORTS)
    want = direction_ref.orient(as_dicts(cols), {int(p) for p in SERVER_PORTS})
    assert as_dicts(got) == [r for r, _ in want]
    assert reply.tolist() == [k for _, k in want]
    return got, reply


def test_port_ranks():
    ports = np.array([1883, 443, 8443, 32768, 50000, 80, 5672], np.uint16)
    assert port_rank(ports, SERVER_PORTS).tolist() == [3, 2, 1, 0, 0, 2, 3]


def test_a_reply_is_folded_into_its_request():
    got, reply = check_against_reference([
        row(CLIENT, BROKER, 40001, 8443, 10, 20, nbytes=300, packets=4),
        row(BROKER, CLIENT, 8443, 40001, 11, 19, nbytes=5000, packets=6)])
    assert len(got["start_ns"]) == 1 and not reply.any()
    assert (int(got["src_lo"][0]), int(got["dst_port"][0])) == (CLIENT[1], 8443)
    assert (int(got["bytes"][0]), int(got["rev_bytes"][0]), int(got["rev_packets"][0])) == (300, 5000, 6)
    assert got["flags"][0] & FLAG_REVERSE and got["flags"][0] & FLAG_ORIENTED


def test_a_lone_reply_is_turned_round_with_reverse_counters():
    got, reply = check_against_reference([row(BROKER, CLIENT, 1883, 50123, 10, nbytes=77, packets=2)])
    assert reply.tolist() == [True]
    assert (int(got["src_lo"][0]), int(got["dst_lo"][0]), int(got["src_port"][0]), int(got["dst_port"][0])) == \
        (CLIENT[1], BROKER[1], 50123, 1883)
    assert (int(got["bytes"][0]), int(got["packets"][0]), int(got["rev_bytes"][0])) == (0, 0, 77)
    assert (int(got["in_if"][0]), int(got["out_if"][0])) == (7, 3)


def test_oriented_portless_and_undecided_rows_stay_as_exported():
    specs = [row(BROKER, CLIENT, 1883, 50123, 1, flags=FLAG_ORIENTED),  # a session log said so
             row(BROKER, CLIENT, 0, 0, 1, proto=1, flags=FLAG_NO_PORTS),
             row(BROKER, CLIENT, 50000, 50001, 1)]  # two ephemeral ports: nothing to go by
    got, reply = check_against_reference(specs)
    assert as_dicts(got) == as_dicts(rows_of(specs)) and not reply.any()


def test_replies_far_from_the_request_or_of_another_exporter_are_not_merged():
    got, reply = check_against_reference([
        row(CLIENT, BROKER, 40001, 1883, 10, 20),
        row(BROKER, CLIENT, 1883, 40001, 20 + 3_000_000_000),
        row(BROKER, CLIENT, 1883, 40001, 12, exporter=2),
        row(BROKER, CLIENT, 1883, 40001, 5)])  # before the request started
    assert len(got["start_ns"]) == 4 and reply.tolist() == [False, True, True, True]


def test_a_biflow_seen_from_the_server_side_trades_its_directions():
    spec = row(BROKER, CLIENT, 1883, 50000, 1, nbytes=900, packets=9, flags=FLAG_REVERSE)
    spec.update(rev_bytes=40, rev_packets=2)
    got, reply = check_against_reference([spec, row(CLIENT, BROKER, 50000, 1883, 1)])
    assert reply.tolist() == [False, False] and len(got["start_ns"]) == 2
    assert (int(got["bytes"][0]), int(got["packets"][0]), int(got["rev_bytes"][0]), int(got["rev_packets"][0])) == \
        (40, 2, 900, 9)


def test_a_deny_without_counters_is_oriented_but_not_reverse_counted():
    got, _ = check_against_reference([row(BROKER, CLIENT, 1883, 50000, 1, nbytes=0, packets=0,
                                          flags=FLAG_NO_COUNTERS)])
    assert got["flags"][0] & FLAG_ORIENTED and not got["flags"][0] & FLAG_REVERSE


_port = st.sampled_from([0, 53, 443, 1883, 8443, 5672, 32767, 32768, 40001, 40002, 65535])
_spec = st.fixed_dictionaries({
    "a": st.booleans(), "sport": _port, "dport": _port, "start": st.integers(0, 6_000_000_000),
    "dur": st.integers(0, 4_000_000_000), "nbytes": st.integers(0, 10_000), "proto": st.sampled_from([6, 17, 1]),
    "flags": st.sampled_from([0, 0, 0, FLAG_ORIENTED, FLAG_NO_PORTS, FLAG_NO_COUNTERS, FLAG_REVERSE]),
    "exporter": st.integers(1, 2)})


@settings(max_examples=300, deadline=None)
@given(st.lists(_spec, max_size=12))
def test_equal_to_the_reference_on_any_rows(specs):
    rows = [row(CLIENT if s["a"] else BROKER, BROKER if s["a"] else CLIENT, s["sport"], s["dport"], s["start"],
                s["start"] + s["dur"], nbytes=s["nbytes"], packets=s["nbytes"] // 100, proto=s["proto"],
                flags=s["flags"], exporter=s["exporter"]) for s in specs]
    for r, s in zip(rows, specs):
        r["rev_bytes"] = s["nbytes"] // 3 if s["flags"] & FLAG_REVERSE else 0
    got, reply = check_against_reference(rows)
    # nothing is lost: every byte either way is still counted once
    cols = rows_of(rows)
    assert int(got["bytes"].sum() + got["rev_bytes"].sum()) == int(cols["bytes"].sum() + cols["rev_bytes"].sum())
