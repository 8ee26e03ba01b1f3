"""The flows topic's wire format: round trips, a record layout that grows or shrinks, strings and dataset names by
name, partition split, and hostile bytes (a FlowCodecError with a reason, nothing else)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analytics.schema import COLUMNS, FLOW_DTYPE, FlowBatch, dataset_id, dataset_name
from collector.transport import flowcodec
from collector.transport.flowcodec import REASONS, FlowCodecError, decode, encode, encode_batch
from collector.warmup import synthetic_rows


def _same(a: FlowBatch, b: FlowBatch) -> None:
    assert len(a) == len(b)
    for name in COLUMNS:
        if name == "topic_id":
            assert [a.strings[i] for i in a.columns[name]] == [b.strings[i] for i in b.columns[name]]
        elif name == "dataset":
            assert [dataset_name(i) for i in a.columns[name]] == [dataset_name(i) for i in b.columns[name]]
        else:
            np.testing.assert_array_equal(a.columns[name], b.columns[name], err_msg=name)


def test_round_trip_from_rows_and_from_columns():
    batch = synthetic_rows(500)
    batch.strings.append("tele/ünï/\udcff")
    batch.columns["topic_id"][:3] = len(batch.strings) - 1
    _same(decode(encode(batch.to_rows(), batch.strings)), batch)
    _same(decode(encode_batch(batch)), batch)
    assert decode(encode(np.zeros(0, FLOW_DTYPE), [""])).columns.keys() == batch.columns.keys()


def test_dataset_names_travel_by_name_not_by_this_process_id(monkeypatch):
    """The sender's id 1 means "syslog.sender_vendor" there (here it is netflow.v5): the name wins."""
    batch = synthetic_rows(10)
    rows = batch.to_rows()
    rows["dataset"] = 1
    with monkeypatch.context() as m:
        m.setattr(flowcodec, "dataset_name", lambda i: ["", "syslog.sender_vendor"][i])
        msg = encode(rows, batch.strings)
    batch = decode(msg)
    assert {dataset_name(i) for i in batch.dataset.tolist()} == {"syslog.sender_vendor"}


def _with_layout(rows: np.ndarray, dtype: np.dtype, strings: list[str]) -> bytes:
    """A message as a sender whose FLOW_DTYPE is ``dtype`` writes it (the descriptor comes from the dtype)."""
    other = np.zeros(len(rows), dtype)
    for name in dtype.names:
        if name in rows.dtype.names:
            other[name] = rows[name]
    saved = (flowcodec._DESCRIPTOR, flowcodec._DESCRIPTOR_HASH, flowcodec.COLUMNS)
    try:
        flowcodec._DESCRIPTOR = flowcodec.describe(dtype)
        flowcodec._DESCRIPTOR_HASH = hash(flowcodec._DESCRIPTOR) & (2**64 - 1)
        flowcodec.COLUMNS = dtype.names
        return flowcodec._pack(len(other), [other[n] for n in dtype.names], strings)
    finally:
        flowcodec._DESCRIPTOR, flowcodec._DESCRIPTOR_HASH, flowcodec.COLUMNS = saved


def test_a_sender_with_more_columns_is_read_and_its_extra_columns_ignored():
    """A newer sender's record has columns this reader's FLOW_DTYPE lacks (as rev_bytes/rev_packets once were):
    the reader keeps working and ignores them."""
    grown = np.dtype(FLOW_DTYPE.descr[:10] + [("future_u8", "<u8"), ("future_u4", "<u4")] + FLOW_DTYPE.descr[10:])
    batch = synthetic_rows(50)
    _same(decode(_with_layout(batch.to_rows(), grown, batch.strings)), batch)


def test_a_sender_with_fewer_or_narrower_columns_is_read_with_zeros_and_casts():
    fields = [(n, t) for n, t in FLOW_DTYPE.descr if n != "tcp_flags"]
    fields = [(n, "<u4") if n == "in_if" else (n, "<u2") if n == "sampling_rate" else (n, t) for n, t in fields]
    older = np.dtype(fields)
    batch = synthetic_rows(50)
    batch.columns["sampling_rate"][:] = 7
    got = decode(_with_layout(batch.to_rows(), older, batch.strings))
    assert not got.tcp_flags.any()
    assert (got.sampling_rate == 7).all() and got.sampling_rate.dtype == FLOW_DTYPE["sampling_rate"]
    for name in COLUMNS:
        if name not in ("tcp_flags", "dataset", "topic_id"):
            np.testing.assert_array_equal(got.columns[name], batch.columns[name], err_msg=name)


def test_split_by_partition_keeps_each_pair_in_one_partition_and_every_row():
    rng = np.random.default_rng(3)
    rows = np.zeros(10_000, FLOW_DTYPE)
    rows["src_lo"] = rng.integers(0, 300, len(rows))
    rows["dst_lo"] = rng.integers(0, 30, len(rows))
    rows["bytes"] = np.arange(len(rows))
    parts = flowcodec.split_by_partition(rows, 12)
    assert sorted(np.concatenate([r["bytes"] for _, r in parts]).tolist()) == list(range(len(rows)))
    owner = {}
    for p, r in parts:
        assert (flowcodec.partition_of(r, 12) == p).all()
        assert np.all(np.diff(r["bytes"].astype(np.int64)) > 0)  # rows keep their order within a partition
        for pair in set(zip(r["src_lo"].tolist(), r["dst_lo"].tolist())):
            assert owner.setdefault(pair, p) == p
    assert len(parts) == 12


def test_the_pair_hash_is_fixed():
    """Producers and consumers of different releases must agree: the hash is part of the topic's contract."""
    h = flowcodec.pair_hash(np.array([0], np.uint64), np.array([0xFFFF_C000_0201], np.uint64),
                            np.array([0], np.uint64), np.array([0xFFFF_CB00_7132], np.uint64))
    assert int(h[0]) == int(flowcodec.pair_hash(0, 0xFFFF_C000_0201, 0, 0xFFFF_CB00_7132))
    assert int(h[0]) % 12 == int(flowcodec.partition_of(
        {"src_hi": [0], "src_lo": [0xFFFF_C000_0201], "dst_hi": [0], "dst_lo": [0xFFFF_CB00_7132]}, 12)[0])


@pytest.mark.parametrize("mutate, reason", [
    (lambda m: m[:10], "short"),
    (lambda m: b"XXXX" + m[4:], "magic"),
    (lambda m: m[:4] + b"\x09\x00" + m[6:], "version"),
    (lambda m: m[:-1], "size"),
    (lambda m: m + b"\x00", "size"),
])
def test_bad_messages_are_rejected_with_a_reason(mutate, reason):
    b = synthetic_rows(20)
    msg = encode(b.to_rows(), b.strings)
    with pytest.raises(FlowCodecError) as exc:
        decode(mutate(msg))
    assert exc.value.reason == reason


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), st.integers(0, 2000), st.binary(max_size=8))
def test_hostile_bytes_read_as_a_batch_or_a_reasoned_error(noise, at, patch):
    """Any bytes, and real messages with any bytes written over them: a batch or a FlowCodecError, never else."""
    b = synthetic_rows(8)
    msg = bytearray(encode(b.to_rows(), b.strings))
    at = at % len(msg)
    msg[at:at + len(patch)] = patch
    for data in (noise, bytes(msg), flowcodec.MAGIC + noise):
        try:
            batch = decode(data)
        except FlowCodecError as exc:
            assert exc.reason in REASONS
        else:
            assert set(batch.columns) == set(COLUMNS)
            assert all(len(c) == len(batch) for c in batch.columns.values())
