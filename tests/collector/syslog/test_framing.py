"""SyslogFramer: RFC 6587 octet counting and LF framing on one stream, oversize cuts, reads split anywhere."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from collector.syslog.framing import SyslogFramer

A = b"<13>1 2026-11-28T10:00:00Z host app - - - first message"
B = b"<13>Nov 28 10:00:00 host app: second message"
C = b"%ASA-6-302014: Teardown TCP connection 1"  # headerless, LF framed
D = b"2018 Apr 09 16:03:37 mgr date=2018-04-09 type=traffic"  # starts with digits and a space: still LF framed


def octet(msg: bytes) -> bytes:
    return str(len(msg)).encode() + b" " + msg


def test_octet_counting():
    f = SyslogFramer()
    assert f.feed(octet(A) + octet(B)) == [A, B]
    assert (f.octet_counted, f.lf_framed, f.buffered) == (2, 0, 0)


def test_octet_counted_message_may_contain_newlines():
    msg = b"<13>1 - h a - - - line one\nline two"
    assert SyslogFramer().feed(octet(msg)) == [msg]


def test_lf_framing_with_crlf_and_blank_lines():
    f = SyslogFramer()
    assert f.feed(A + b"\r\n\n" + C + b"\n" + D + b"\n") == [A, C, D]
    assert (f.lf_framed, f.octet_counted) == (3, 0)


def test_mixed_framing_on_one_stream():
    f = SyslogFramer()
    assert f.feed(octet(A) + B + b"\n" + octet(C.replace(b"%", b"<1>%")) + D + b"\n") == [
        A, B, C.replace(b"%", b"<1>%"), D]
    assert (f.octet_counted, f.lf_framed) == (2, 2)


def test_split_reads_at_every_offset():
    stream = octet(A) + B + b"\n" + octet(B) + C + b"\n" + D + b"\n"
    for cut in range(1, len(stream)):
        f = SyslogFramer()
        assert f.feed(stream[:cut]) + f.feed(stream[cut:]) == [A, B, B, C, D], cut


def test_byte_by_byte():
    stream = octet(A) + B + b"\n" + octet(C.replace(b"%", b"<1>%"))
    f = SyslogFramer()
    out = []
    for i in range(len(stream)):
        out += f.feed(stream[i:i + 1])
    assert out == [A, B, C.replace(b"%", b"<1>%")]


def test_oversized_octet_counted_message_is_cut_and_rest_skipped():
    f = SyslogFramer(max_message=64)
    big = b"<13>" + b"x" * 200
    out = f.feed(octet(big)[:100])
    out += f.feed(octet(big)[100:] + octet(A[:60]))
    assert out == [big[:64], A[:60]]
    assert f.cut == 1
    assert f.buffered == 0


def test_endless_line_is_cut_and_never_buffered_past_the_limit():
    f = SyslogFramer(max_message=1000)
    out = []
    for _ in range(100):  # 100 kB without a newline
        out += f.feed(b"y" * 1000)
        assert f.buffered <= 1000
    out += f.feed(b"yyy\n" + B + b"\n")
    assert out == [b"y" * 1000, B]
    assert f.cut == 1


def test_unterminated_last_line_is_flushed_on_close():
    f = SyslogFramer()
    assert f.feed(A + b"\n" + B) == [A]
    assert f.flush() == [B]
    assert f.flush() == []


def test_zero_length_prefix_is_not_a_frame():
    f = SyslogFramer()
    assert f.feed(b"0 <13>x\n") == [b"0 <13>x"]
    assert f.bad_length == 1


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.binary(min_size=1, max_size=300).filter(lambda m: b"\n" not in m and m[:1] not in
                                                                       b"0123456789\r\x00" and m[-1:] not in b"\r\x00"),
                          st.booleans()), max_size=20),
       st.lists(st.integers(min_value=1, max_value=500), max_size=20))
def test_any_messages_any_split(messages, cuts):
    """Whatever the messages and however the stream is cut, the same messages come out (within the limit)."""
    stream = b"".join(octet(b"<" + m) if counted else m + b"\n" for m, counted in messages)
    want = [b"<" + m if counted else m for m, counted in messages]
    f = SyslogFramer(max_message=1024)
    out, pos = [], 0
    for c in cuts:
        out += f.feed(stream[pos:pos + c])
        pos += c
    out += f.feed(stream[pos:]) + f.flush()
    assert out == want


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=2000), max_size=20))
def test_random_bytes_bounded(chunks):
    f = SyslogFramer(max_message=512)
    for c in chunks:
        for m in f.feed(c):
            assert len(m) <= 512
        assert f.buffered <= 512 + 12
