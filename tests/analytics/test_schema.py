"""FlowBatch and its builder: columns, growth, reuse, the one-pass row split, concat of string tables."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from analytics.schema import COLUMNS, FLOW_DTYPE, FlowBatch, FlowBatchBuilder, ip_to_words, words_to_ip


def random_rows(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 256, n * FLOW_DTYPE.itemsize, dtype=np.uint8)
    return raw.view(FLOW_DTYPE)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 300), st.integers(0, 1000))
def test_from_rows_matches_numpy_field_copies(n, seed):
    rows = random_rows(n, seed)
    batch = FlowBatch.from_rows(rows)
    assert len(batch) == n
    for name in COLUMNS:
        col = batch.columns[name]
        assert col.flags.c_contiguous and col.dtype == FLOW_DTYPE[name]
        assert np.array_equal(col, rows[name]), name
    assert batch.to_rows().tobytes() == rows.tobytes()


def test_builder_grows_resets_and_keeps_strings():
    b = FlowBatchBuilder(16)
    rows = b.reserve(10)
    rows["bytes"] = np.arange(10)
    t = b.intern("a/b")
    rows["topic_id"][3] = t
    rows = b.reserve(100)  # grows past capacity, keeping the first rows
    rows["bytes"] = 7
    batch = b.build()
    assert len(batch) == 110 and batch.bytes[:10].tolist() == list(range(10)) and batch.bytes[10] == 7
    assert batch.strings[batch.topic_id[3]] == "a/b"
    b.reset()
    assert len(b) == 0 and b.intern("x") == 1
    b.reserve(2)
    b.truncate(1)
    assert len(b.build()) == 1


def test_concat_remaps_string_tables_and_select():
    b1, b2 = FlowBatchBuilder(4), FlowBatchBuilder(4)
    r = b1.reserve(2)
    r["topic_id"] = [b1.intern("t/one"), 0]
    r = b2.reserve(2)
    r["topic_id"] = [b2.intern("t/two"), b2.intern("t/one")]
    both = FlowBatch.concat([b1.build(), b2.build(), FlowBatch.empty()])
    assert [both.strings[i] for i in both.topic_id] == ["t/one", "", "t/two", "t/one"]
    picked = both.select(both.topic_id > 0)
    assert len(picked) == 3 and picked.strings is both.strings


def test_address_words_round_trip():
    for text in ("192.0.2.1", "0.0.0.0", "255.255.255.255", "2001:db8::1", "::1", "::ffff:1.2.3.4"):
        hi, lo = ip_to_words(text)
        back = words_to_ip(hi, lo)
        assert back == (text if text != "::ffff:1.2.3.4" else "1.2.3.4")


def test_keep_filters_the_rows_appended_since_a_mark():
    b = FlowBatchBuilder(8)
    b.reserve(2)["bytes"] = [1, 2]
    mark = len(b)
    b.reserve(4)["bytes"] = [10, 11, 12, 13]
    assert b.keep(mark, np.array([True, False, True, False])) == 2
    assert b.build().bytes.tolist() == [1, 2, 10, 12]
