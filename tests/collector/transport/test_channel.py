"""The bounded channel between a receive worker and the analytics process: round trip, drops counted, torn ends."""

from __future__ import annotations

import os

import numpy as np
import pytest

from analytics.schema import COLUMNS, FlowBatch
from collector.metrics import Counters
from collector.transport.channel import (HEADER, ChannelError, ChannelReader, ChannelWriter, decode_strings,
                                         encode_strings, make_pipe)
from collector.warmup import synthetic_rows


def _same(a: FlowBatch, b: FlowBatch) -> None:
    assert len(a) == len(b)
    for name in COLUMNS:
        if name == "topic_id":
            assert [a.strings[i] for i in a.columns[name]] == [b.strings[i] for i in b.columns[name]]
        else:
            np.testing.assert_array_equal(a.columns[name], b.columns[name], err_msg=name)


def test_batches_cross_the_channel_unchanged_with_their_topics():
    batch = synthetic_rows(32)
    batch.strings.append("sensors/ünïcode/\udcff")  # any str survives, lone surrogates included
    r, w = make_pipe()
    counters = Counters()
    writer = ChannelWriter(w, counters)
    assert writer.publish(batch) and writer.publish(FlowBatch.empty()) and writer.publish(batch.select(slice(0, 5)))
    writer.close()
    reader = ChannelReader(r)
    first, second = reader.read(), reader.read()
    assert reader.read() is None  # the writer closed: end of stream
    reader.close()
    _same(first, batch)
    _same(second, batch.select(slice(0, 5)))
    assert first.strings[-1] == "sensors/ünïcode/\udcff"
    assert counters.get("brokerwatch_channel_published_rows_total", ("flows",)) == len(batch) + 5


def test_string_table_round_trip():
    for strings in ([""], ["", "a"], ["", "", "x/y", "é" * 300]):
        blob, count = encode_strings(strings)
        assert decode_strings(memoryview(blob), count) == strings


def test_a_full_channel_drops_and_counts_and_never_blocks():
    """The reader does not read: the pipe fills, then the queue (bounded in bytes); publish keeps returning."""
    batch = synthetic_rows(256)  # ~ 59 KB a message
    r, w = make_pipe()
    counters = Counters()
    writer = ChannelWriter(w, counters, max_bytes=300_000)
    results = [writer.publish(batch) for _ in range(200)]  # ~ 12 MB offered against ~ 1.3 MB of pipe and queue
    dropped = counters.get("brokerwatch_channel_dropped_rows_total", ("full",))
    published = counters.get("brokerwatch_channel_published_rows_total", ("flows",))
    assert not all(results) and any(results)
    assert dropped == results.count(False) * len(batch)
    assert published == results.count(True) * len(batch)
    assert writer.queued_bytes <= writer.max_bytes
    reader = ChannelReader(r)  # now the analytics side reads: everything accepted arrives, nothing else
    import threading

    got = []
    t = threading.Thread(target=lambda: got.extend(iter(reader.read, None)))
    t.start()
    writer.close()
    t.join(60)
    assert sum(len(b) for b in got) == published
    assert published + dropped == 200 * len(batch)


def test_a_vanished_reader_is_counted_not_raised():
    r, w = make_pipe()
    os.close(r)
    counters = Counters()
    writer = ChannelWriter(w, counters)
    batch = synthetic_rows(16)
    writer.publish(batch)
    writer.close(30)
    assert writer.broken
    assert counters.get("brokerwatch_channel_dropped_rows_total", ("closed",)) == len(batch)
    assert not writer.publish(batch)  # later batches are dropped and counted at once
    assert counters.get("brokerwatch_channel_dropped_rows_total", ("closed",)) == 2 * len(batch)


@pytest.mark.parametrize("damage", ["torn_body", "bad_kind", "huge"])
def test_a_torn_or_corrupt_stream_is_an_error_not_a_hang(damage):
    r, w = make_pipe()
    if damage == "torn_body":
        os.write(w, HEADER.pack(1, 10, 0, 0) + b"\x00" * 50)  # a worker killed mid-message
    elif damage == "bad_kind":
        os.write(w, HEADER.pack(7, 1, 0, 0))
    else:
        os.write(w, HEADER.pack(1, 0xFFFFFFFF, 0xFFFFFFFF, 0))
    os.close(w)
    reader = ChannelReader(r)
    with pytest.raises(ChannelError):
        reader.read()
    reader.close()


from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600), st.integers(0, 3), st.integers(0, 40), st.integers(0, 300), st.integers(0, 5))
def test_any_bytes_on_the_channel_read_as_batches_or_a_channel_error(noise, kind, rows, sbytes, count):
    """Garbage, or a plausible header before garbage, never raises anything but ChannelError."""
    r, w = make_pipe()
    os.write(w, HEADER.pack(kind, rows, sbytes, count) + noise if kind else noise)
    os.close(w)
    reader = ChannelReader(r)
    try:
        while reader.read() is not None:
            pass
    except ChannelError:
        pass
    finally:
        reader.close()
