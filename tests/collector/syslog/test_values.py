"""syslog_values (numba readers of field text) against the pure-Python readers in syslog.py.

Status 1 must give the reference's values, status 0 must be a text the reference rejects (None or ValueError),
and -1 ("run the reference") must not happen on realistic texts: every dotted quad, every IPv6 address as
ipaddress writes it, every digit string that fits int64, every stamp the parsers' patterns describe.
Texts are read from buffers with bytes around them that would change the answer if a span were overrun.
"""

from __future__ import annotations

import calendar
import ipaddress

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.syslog import parser as S
from collector.syslog import values as V

I64_MAX = 2**63 - 1
NAMES_BUF, NAMES_OFF, NUMBERS = V.pack_protocols()
REF = calendar.timegm((2026, 11, 28, 12, 0, 0)) * 10**9
DAY = 86400 * 10**9
#: Bytes that would extend or change a field if a reader looked past its span.
NEIGHBOURS = b"0123456789abcdefABCDEF:.[]%Z+- \n/d"
FAST = settings(max_examples=150, deadline=None)
MANY = settings(max_examples=400, deadline=None)

neighbours = st.binary(max_size=3).map(lambda b: bytes(NEIGHBOURS[x % len(NEIGHBOURS)] for x in b))


def _buf(text: str, pre: bytes = b"7", post: bytes = b"9") -> tuple[np.ndarray, int, int]:
    """text in a uint8 buffer between pre and post, and its span."""
    raw = text.encode("latin-1")
    return np.frombuffer(pre + raw + post, dtype=np.uint8).copy(), len(pre), len(pre) + len(raw)


def _ref(call, *args):
    """(rejected, value) of a reference call: rejected when it returns None or raises ValueError."""
    try:
        v = call(*args)
    except ValueError:
        return True, None
    return v is None, v


def _agree(status: int, got, call, *args) -> None:
    """The status convention: 1 = the reference's value, 0 = the reference rejects, -1 = undecided."""
    rejected, want = _ref(call, *args)
    assert status in (-1, 0, 1)
    if status == 1:
        assert not rejected and got == want, (args, got, want)
    elif status == 0:
        assert rejected, (args, want)


def _stamp(r) -> tuple:
    """A reader's stamp tuple as the reference writes it."""
    st_, year, mon, day, hh, mm, ss, ns, has_off, off = (int(x) for x in r)
    return (None if year == -1 else year, mon, day, hh, mm, ss, ns, off if has_off else None)


# ---------------------------------------------------------------------------------------------------------------
# Each reader with its reference, on text in a buffer
# ---------------------------------------------------------------------------------------------------------------


def ip(text: str, pre: bytes = b"7", post: bytes = b"9") -> int:
    """ip_span against ip_words; returns the status."""
    b, s, e = _buf(text, pre, post)
    st_, hi, lo = V.ip_span(b, s, e)
    _agree(st_, (int(hi), int(lo)), S.ip_words, text)
    return st_


def uint(text: str, pre: bytes = b"7", post: bytes = b"9") -> int:
    """uint_span against isdigit() + int()."""
    b, s, e = _buf(text, pre, post)
    st_, v = V.uint_span(b, s, e)
    _agree(st_, int(v), lambda t: int(t) if t.isdigit() else None, text)
    return st_


def proto(text: str, pre: bytes = b"7", post: bytes = b"9") -> int:
    """proto_span against _protocol."""
    b, s, e = _buf(text, pre, post)
    st_, v = V.proto_span(b, s, e, NAMES_BUF, NAMES_OFF, NUMBERS)
    _agree(st_, int(v), S._protocol, text)
    return st_


def stamp(kind: str, text: str, pre: bytes = b"7", post: bytes = b"9") -> int:
    """ymd/clf/bsd_span against _parse_ymd/_parse_clf/_parse_bsd."""
    fn, ref = {"ymd": (V.ymd_span, S._parse_ymd), "clf": (V.clf_span, S._parse_clf),
               "bsd": (V.bsd_span, S._parse_bsd)}[kind]
    b, s, e = _buf(text, pre, post)
    r = fn(b, s, e)
    _agree(int(r[0]), _stamp(r), ref, text)
    if r[0] == 0:
        assert tuple(int(x) for x in r) == (0,) * 10
    return int(r[0])


def epoch(text: str, pre: bytes = b"7", post: bytes = b"9") -> int:
    """epoch_span against _parse_epoch."""
    b, s, e = _buf(text, pre, post)
    st_, v = V.epoch_span(b, s, e)
    _agree(st_, int(v), S._parse_epoch, text)
    return st_


def ns_utc(stamp_: tuple, ref: int) -> int:
    """stamp_ns_utc against stamp_to_ns(stamp, "UTC", ref)."""
    year, mon, day, hh, mm, ss, ns, off = stamp_
    st_, v = V.stamp_ns_utc(-1 if year is None else year, mon, day, hh, mm, ss, ns, 0 if off is None else 1,
                            0 if off is None else off, ref)
    S._minute_cache.clear()  # a fresh cache: the comparison does not depend on the order examples come in
    _agree(st_, int(v), S.stamp_to_ns, stamp_, "UTC", ref)
    return st_


DURATIONS = ("seconds", "milliseconds", "hms")


def duration(fmt: int, text: str, pre: bytes = b"7", post: bytes = b"9") -> int:
    """duration_span against DURATION_FORMATS."""
    b, s, e = _buf(text, pre, post)
    st_, v = V.duration_span(b, s, e, fmt)
    _agree(st_, int(v), S.DURATION_FORMATS[DURATIONS[fmt]], text)
    return st_


# ---------------------------------------------------------------------------------------------------------------
# Strategies
# ---------------------------------------------------------------------------------------------------------------


def _mutate(text: str, edits: list[tuple[int, int, str]]) -> str:
    """text with each (kind, position, char) edit: 0 insert, 1 replace, 2 delete."""
    for kind, pos, ch in edits:
        if not text and kind:
            continue
        i = pos % (len(text) + (kind == 0))
        text = text[:i] + ch + text[i:] if kind == 0 else text[:i] + ch + text[i + 1:] if kind == 1 \
            else text[:i] + text[i + 1:]
    return text


def mutated(base: st.SearchStrategy, alphabet: str) -> st.SearchStrategy:
    """Texts a few edits away from base texts."""
    edit = st.tuples(st.integers(0, 2), st.integers(0, 60), st.sampled_from(alphabet))
    return st.builds(_mutate, base, st.lists(edit, min_size=1, max_size=3))


v4_text = st.integers(0, 2**32 - 1).map(lambda v: str(ipaddress.IPv4Address(v)))
# Hextets drawn so that zero runs (and so '::') are common.
v6_int = st.lists(st.one_of(st.just(0), st.integers(0, 0xFFFF), st.integers(0, 0xF)), min_size=8, max_size=8).map(
    lambda hs: sum(h << (16 * (7 - i)) for i, h in enumerate(hs))) | st.integers(0, 2**128 - 1)
v6_text = st.builds(lambda v, form, up: (getattr(ipaddress.IPv6Address(v), form).upper() if up else
                                         getattr(ipaddress.IPv6Address(v), form)),
                    v6_int, st.sampled_from(["compressed", "exploded"]), st.booleans())
v6_tail = st.builds(lambda pre, v4: pre + v4, st.sampled_from(["::ffff:", "::", "64:ff9b::", "1:2:3:4:5:6:", "::1:",
                                                               "a::b:", "1:2:3:4:5::"]), v4_text)
ip_alphabet = "0123456789abcdefABCDEFg.:[]%/ x\xe9\xb2\x00"

digits = st.text(alphabet="0123456789", min_size=1, max_size=18)


@st.composite
def ymd_text(draw) -> str:
    """Texts _RE_YMD describes (any numbers in its digit counts)."""
    d = lambda lo, hi, w=0: str(draw(st.integers(lo, hi))).zfill(w if w else 1)  # noqa: E731
    t = f"{d(0, 9999, 4)}{draw(st.sampled_from('-/'))}{d(0, 99, draw(st.sampled_from([1, 2])))}"
    t += f"{draw(st.sampled_from('-/'))}{d(0, 99, draw(st.sampled_from([1, 2])))}{draw(st.sampled_from(' T'))}"
    t += f"{d(0, 99, draw(st.sampled_from([1, 2])))}:{d(0, 99, 2)}:{d(0, 99, 2)}"
    if draw(st.booleans()):
        t += draw(st.sampled_from(".,")) + draw(st.text(alphabet="0123456789", min_size=1, max_size=9))
    t += draw(st.sampled_from(["", " "]))
    if draw(st.booleans()):
        t += draw(st.sampled_from(["Z", f"+{d(0, 99, 2)}:{d(0, 99, 2)}", f"-{d(0, 99, 2)}{d(0, 99, 2)}",
                                   f"-{d(0, 99, 2)}:{d(0, 99, 2)}", f"+{d(0, 99, 2)}{d(0, 99, 2)}"]))
    return t


MONTHS = list(S._MONTHS)


@st.composite
def clf_text(draw) -> str:
    """Texts _RE_CLF describes."""
    i = draw(st.integers(0, 99))
    return (f"{i if draw(st.booleans()) else str(i).zfill(2)}/{draw(st.sampled_from(MONTHS))}/"
            f"{draw(st.integers(0, 9999)):04d}:{draw(st.integers(0, 99)):02d}:{draw(st.integers(0, 99)):02d}:"
            f"{draw(st.integers(0, 99)):02d} {draw(st.sampled_from('+-'))}{draw(st.integers(0, 9999)):04d}")


@st.composite
def bsd_text(draw) -> str:
    """Texts _RE_BSD describes."""
    i = draw(st.integers(0, 99))
    t = f"{draw(st.sampled_from(MONTHS))}{draw(st.sampled_from([' ', '  ']))}"
    t += f"{i if draw(st.booleans()) else str(i).zfill(2)}"
    if draw(st.booleans()):
        t += f" {draw(st.integers(0, 9999)):04d}"
    t += f" {draw(st.integers(0, 99)):02d}:{draw(st.integers(0, 99)):02d}:{draw(st.integers(0, 99)):02d}"
    if draw(st.booleans()):
        t += "." + draw(st.text(alphabet="0123456789", min_size=1, max_size=9))
    return t


stamp_alphabet = "0123456789-/ T:.,Z+JanFebOctDecjan\n\xe9\xb3"

# ---------------------------------------------------------------------------------------------------------------
# Addresses
# ---------------------------------------------------------------------------------------------------------------


@FAST
@given(v4_text, neighbours, neighbours)
def test_ip_every_dotted_quad(text, pre, post):
    assert ip(text, pre, post) == 1
    assert ip(f"[{text}]", pre, post) == 1


@FAST
@given(st.one_of(v6_text, v6_tail), neighbours, neighbours)
def test_ip_every_ipv6_form(text, pre, post):
    assert ip(text, pre, post) == 1
    assert ip(f"[{text}]", pre, post) == 1


@MANY
@given(st.one_of(mutated(st.one_of(v4_text, v6_text, v6_tail), ip_alphabet),
                 st.text(alphabet=ip_alphabet, max_size=20)), neighbours, neighbours)
def test_ip_any_text(text, pre, post):
    st_ = ip(text, pre, post)
    assert st_ != -1 or "%" in text


@pytest.mark.parametrize("text", [
    "1.2.3.4", "0.0.0.0", "255.255.255.255", "01.2.3.4", "1.2.3.04", "00.1.2.3", "256.1.2.3", "1.2.3.256", "1.2.3",
    "1.2.3.4.5", "1..3.4", ".1.2.3", "1.2.3.", "1.2.3.4 ", " 1.2.3.4", "1.2.3.1000", "+1.2.3.4", "", "[]", "[",
    "::", "1::", "::1", ":::", "::::", "1:::2", "1::2::3", ":1::2", "1::2:", ":1:2:3:4:5:6:7", "1:2:3:4:5:6:7:",
    "1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7:8:9", "1:2:3:4:5:6:7", "1::2:3:4:5:6:7:8", "::1:2:3:4:5:6:7",
    "1:2:3:4:5:6:7::", "::1:2:3:4:5:6:7:8", "1:2:3:4::5:6:7", "12345::", "fffff::", "FFFF::ffff", "g::",
    "::ffff:1.2.3.4", "::ffff:1.2.3.256", "::ffff:1.2.3", "::ffff:01.2.3.4", "::1.2.3.4:1", "1.2.3.4::",
    "1:2:3:4:5:6:1.2.3.4", "1:2:3:4:5:6:7:1.2.3.4", "::1:2:3:4:5:6:1.2.3.4", "1:2:3:4:5::1.2.3.4",
    "[::1]", "[[::1]]", "]::1[", "[1.2.3.4]", "[::1", "::1]", "fe80::1%eth0", "::1/128", "1.2.3.4/32",
    "::a.1.2.3", "::1.2.3.4.5", ":1.2.3.4", "1:1.2.3.4", "::1:", "0::0", "0000:0000::0000",
    "1.2.3.\xb2", "::\xe9", "1.2.3.4\x00",
])
def test_ip_edges(text):
    ip(text)
    ip(text, b"", b"")
    ip(text, b"1:2:", b":3.4")


def test_ip_words_exact():
    b, s, e = _buf("2001:db8::ff00:42:8329")
    st_, hi, lo = V.ip_span(b, s, e)
    assert (st_, int(hi), int(lo)) == (1, 0x20010DB800000000, 0x0000FF0000428329)
    b, s, e = _buf("10.1.2.3")
    assert tuple(int(x) for x in V.ip_span(b, s, e)) == (1, 0, 0xFFFF0A010203)
    assert ip("fe80::1%eth0") == -1


# ---------------------------------------------------------------------------------------------------------------
# Integers and protocols
# ---------------------------------------------------------------------------------------------------------------


@FAST
@given(digits, neighbours, neighbours)
def test_uint_digit_strings(text, pre, post):
    assert uint(text, pre, post) == 1
    assert proto(text, pre, post) == 1 or int(text) >= 256 and proto(text) == 0


@MANY
@given(st.text(alphabet="0123456789 +-_.aTx\xb2\xb9\xe9\n", max_size=22), neighbours, neighbours)
def test_uint_any_text(text, pre, post):
    st_ = uint(text, pre, post)
    assert st_ != -1 or any(c >= "\x80" for c in text) or len(text.lstrip("0")) > 18
    proto(text, pre, post)


@pytest.mark.parametrize("text", ["", "0", "00", "65535", "65536", "007", "1 ", " 1", "+1", "-1", "1_0", "1.0",
                                  "9223372036854775807", "9223372036854775808", "0000000000000000000000123",
                                  "99999999999999999999", "\xb2", "1\xb9", "a1"])
def test_uint_edges(text):
    uint(text)
    uint(text, b"", b"")


@pytest.mark.parametrize("text", list(S.PROTOCOL_NUMBERS) + [n.upper() for n in S.PROTOCOL_NUMBERS] + [
    "Tcp", "UDP", "IPv6-ICMP", "tcp ", " tcp", "tc", "tcpp", "", "0", "6", "17", "255", "256", "0256", "00000017",
    "999999999999999999999999", "-6", "6a", "t\xe9p", "\xb2", "ip6", "icmp-6"])
def test_protocol_edges(text):
    assert proto(text) != -1 or any(c >= "\x80" for c in text)
    proto(text, b"", b"")
    proto(text, b"t", b"p")


@MANY
@given(st.one_of(mutated(st.sampled_from(list(S.PROTOCOL_NUMBERS)), "abcdefghilmnoprstuvATCPUD0123456789-\xe9 "),
                 st.text(alphabet="tcpudTCPUD0123456789-6 \xb2", max_size=6)), neighbours, neighbours)
def test_protocol_any_text(text, pre, post):
    assert proto(text, pre, post) != -1 or any(c >= "\x80" for c in text)


@FAST
@given(st.text(alphabet="0123456789", min_size=1, max_size=19), neighbours, neighbours)
def test_epoch_digit_strings(text, pre, post):
    st_ = epoch(text, pre, post)
    assert st_ == 1 or S._parse_epoch(text) > I64_MAX


@pytest.mark.parametrize("text", ["1557968619", "1557968619123", "1557968619123456", "1557773104815101919",
                                  "9223372036", "9223372037", "99999999999", "9223372036854775807",
                                  "9223372036854775808", "99999999999999999999", "", "0", "155796861.9",
                                  " 1557968619", "1557968619\n", "\xb2", "00000000000000000001"])
def test_epoch_edges(text):
    epoch(text)
    epoch(text, b"", b"")


@MANY
@given(st.one_of(mutated(digits, "0123456789 .\xb2-"), st.text(alphabet="01234567899 .\xb2-", max_size=21)),
       neighbours, neighbours)
def test_epoch_any_text(text, pre, post):
    st_ = epoch(text, pre, post)
    assert st_ != -1 or any(c >= "\x80" for c in text) or S._parse_epoch(text) > I64_MAX


# ---------------------------------------------------------------------------------------------------------------
# Stamps
# ---------------------------------------------------------------------------------------------------------------


@MANY
@given(ymd_text(), neighbours, neighbours)
def test_ymd_described_texts(text, pre, post):
    assert stamp("ymd", text, pre, post) == 1


@FAST
@given(clf_text(), neighbours, neighbours)
def test_clf_described_texts(text, pre, post):
    assert stamp("clf", text, pre, post) == 1


@FAST
@given(bsd_text(), neighbours, neighbours)
def test_bsd_described_texts(text, pre, post):
    assert stamp("bsd", text, pre, post) == 1


@MANY
@given(st.sampled_from(["ymd", "clf", "bsd"]), st.data())
def test_stamps_any_text(kind, data):
    base = {"ymd": ymd_text(), "clf": clf_text(), "bsd": bsd_text()}[kind]
    text = data.draw(st.one_of(mutated(base, stamp_alphabet), st.text(alphabet=stamp_alphabet, max_size=12)))
    st_ = stamp(kind, text, data.draw(neighbours), data.draw(neighbours))
    assert st_ != -1 or "\n" in text


@pytest.mark.parametrize("text", [
    "2019-05-13 11:45:04", "2018/11/30 16:09:07", "2019-05-13T11:45:04Z", "2019-05-13T11:45:04+05:30",
    "2019-05-13T11:45:04-0800", "2019-05-13T11:45:04 -08:00", "2019-05-13T11:45:04  -08:00", "2019-05-13 11:45:04 ",
    "2019-05-13 11:45:04.1", "2019-05-13 11:45:04,123456789", "2019-05-13 11:45:04.1234567890",
    "2019-05-13 11:45:04.", "2019-5-3 1:45:04", "2019-005-13 11:45:04", "19-05-13 11:45:04", "2019-05-13 11:45:4",
    "2019-05-13 11:45:04Z ", "2019-05-13 11:45:04+5:30", "2019-05-13 11:45:04+05:3", "2019-05-13 11:45:04z",
    "2019-05-13 11:45:04\n", "2019-05-13_11:45:04", "2019-05-13 111:45:04", "2019-05-13 11:45:04+05:30:00",
])
def test_ymd_edges(text):
    stamp("ymd", text)
    stamp("ymd", text, b"", b"")


@pytest.mark.parametrize("text", [
    "20/Jun/2022:13:09:14 +0200", "1/Jan/2022:00:00:00 -0000", "001/Jan/2022:00:00:00 +0000",
    "20/jun/2022:13:09:14 +0200", "20/Jux/2022:13:09:14 +0200", "20/Jun/2022:13:09:14 +02:00",
    "20/Jun/2022:13:09:14", "20/Jun/2022 13:09:14 +0200", "20/Jun/22:13:09:14 +0200", "20/Jun/2022:13:09:14 +0200\n",
])
def test_clf_edges(text):
    stamp("clf", text)
    stamp("clf", text, b"", b"")


@pytest.mark.parametrize("text", [
    "Oct 03 2018 17:34:08", "Sep 28 10:38:09", "Sep  8 10:38:09", "Sep   8 10:38:09", "Sep 8 10:38:09.123",
    "Sep 8 10:38:09.1234567890", "Sep 8 10:38:09.", "sep 8 10:38:09", "Sex 8 10:38:09", "Sep 8 18 10:38:09",
    "Sep 8 2018 10:38:09.5", "Sep 8 20180 10:38:09", "Sep 8  2018 10:38:09", "Sep 123 10:38:09", "Sep 8 10:38:9",
    "Sep 8 10:38:09 ", "Sep8 10:38:09", "Sep 8 10:38:09\n", "Sep", "Sep ", "Sep 8",
])
def test_bsd_edges(text):
    stamp("bsd", text)
    stamp("bsd", text, b"", b"")


def _past_int64(stamp_: tuple, ref: int) -> bool:
    """Whether the reference's ns for the stamp is outside int64 (then -1 is the answer)."""
    S._minute_cache.clear()
    rejected, v = _ref(S.stamp_to_ns, stamp_, "UTC", ref)
    return not rejected and not -2**63 <= v <= I64_MAX


def test_stamp_final_newline_is_left_to_reference():
    """'$' matches before a final newline, so the reference reads these; a newline elsewhere fails the pattern."""
    for kind, text in (("ymd", "2019-05-13 11:45:04\n"), ("clf", "20/Jun/2022:13:09:14 +0200\n"),
                       ("bsd", "Sep 8 10:38:09\n")):
        assert stamp(kind, text) == -1
        assert {"ymd": S._parse_ymd, "clf": S._parse_clf, "bsd": S._parse_bsd}[kind](text) is not None
        assert stamp(kind, text.replace(" ", "\n", 1) + "0") == 0


stamp_parts = st.tuples(
    # -1 is how the kernel is told "no year" (None here), so it is not drawn as a year of its own
    st.one_of(st.none(), st.integers(1, 2200), st.integers(-2, 10001).filter(lambda y: y != -1)),
    st.integers(0, 13), st.integers(0, 32),
    st.integers(0, 25), st.integers(0, 61), st.integers(0, 61), st.integers(0, 999_999_999),
    st.one_of(st.none(), st.integers(-99 * 3600 - 99 * 60, 99 * 3600 + 99 * 60)))
refs = st.one_of(st.integers(0, 4102444800 * 10**9), st.integers(-2208988800 * 10**9, 0))


@MANY
@given(stamp_parts, refs)
def test_stamp_ns(stamp_, ref):
    st_ = ns_utc(stamp_, ref)
    assert st_ != -1 or stamp_[5] > 60 or _past_int64(stamp_, ref)


@FAST
@given(st.data())
def test_stamp_ns_of_parsed_texts(data):
    kind = data.draw(st.sampled_from(["ymd", "clf", "bsd"]))
    text = data.draw({"ymd": ymd_text(), "clf": clf_text(), "bsd": bsd_text()}[kind])
    b, s, e = _buf(text)
    r = {"ymd": V.ymd_span, "clf": V.clf_span, "bsd": V.bsd_span}[kind](b, s, e)
    ref = data.draw(refs)
    st_ = ns_utc(_stamp(r), ref)
    assert st_ != -1 or r[6] > 60 or _past_int64(_stamp(r), ref)


@FAST
@given(st.integers(1, 12), st.integers(1, 31), st.integers(0, 23), st.integers(-40 * DAY, 40 * DAY),
       st.integers(1971, 2200))
def test_stamp_ns_yearless_near_new_year(mon, day, hh, delta, year):
    """Year-less stamps around the reference both ways across New Year (the 31-day and 335-day rules)."""
    ref = calendar.timegm((year, 1, 1, 0, 0, 0)) * 10**9 + delta
    assert ns_utc((None, mon, day, hh, 0, 0, 0, None), ref) in (0, 1)
    assert ns_utc((None, mon, day, hh, 30, 15, 5, 3600), ref) in (0, 1)


@pytest.mark.parametrize("stamp_", [
    (2024, 2, 29, 0, 0, 0, 0, None), (2023, 2, 29, 0, 0, 0, 0, None), (2000, 2, 29, 0, 0, 0, 0, None),
    (1900, 2, 29, 0, 0, 0, 0, None), (2023, 4, 31, 0, 0, 0, 0, None), (2023, 4, 30, 0, 0, 0, 0, None),
    (2023, 12, 31, 23, 59, 60, 0, None), (2023, 12, 31, 23, 59, 61, 0, None), (2023, 1, 1, 24, 0, 0, 0, None),
    (2023, 1, 1, 0, 60, 0, 0, None), (2023, 0, 1, 0, 0, 0, 0, None), (2023, 13, 1, 0, 0, 0, 0, None),
    (2023, 1, 0, 0, 0, 0, 0, None), (0, 1, 1, 0, 0, 0, 0, None), (1, 1, 1, 0, 0, 0, 0, None),
    (9999, 12, 31, 23, 59, 59, 0, None), (10000, 1, 1, 0, 0, 0, 0, None), (1677, 9, 21, 0, 12, 44, 0, None),
    (2262, 4, 11, 23, 47, 16, 854775807, None), (2262, 4, 11, 23, 47, 17, 0, None), (1969, 12, 31, 23, 59, 59, 5, 0),
    (2023, 6, 1, 12, 0, 0, 0, 19800), (2023, 6, 1, 12, 0, 0, 0, -28800), (None, 2, 29, 0, 0, 0, 0, None),
    (None, 12, 31, 23, 0, 0, 0, None), (None, 1, 1, 0, 0, 0, 0, None), (None, 12, 1, 0, 0, 0, 0, None),
    (None, 12, 28, 12, 0, 0, 0, None), (None, 12, 29, 12, 0, 0, 1, None), (None, 1, 2, 12, 0, 0, 0, None),
    (None, 4, 31, 0, 0, 0, 0, None), (2023, 1, 1, -1, 0, 0, 0, None), (2023, 1, 1, 0, 0, -5, 0, None),
])
@pytest.mark.parametrize("ref", [REF, calendar.timegm((2024, 1, 3, 0, 0, 0)) * 10**9,
                                 calendar.timegm((2023, 12, 30, 0, 0, 0)) * 10**9,
                                 calendar.timegm((2024, 2, 29, 0, 0, 0)) * 10**9, -1, 0])
def test_stamp_ns_edges(stamp_, ref):
    ns_utc(stamp_, ref)


def test_stamp_ns_second_61():
    """Second 61..99 is not a date, whether or not the reference has the minute in its cache (it once counted them
    when it had): 0."""
    S._minute_cache.clear()
    with pytest.raises(ValueError):
        S.stamp_to_ns((2023, 5, 1, 10, 20, 61, 0, None), "UTC", REF)
    S.stamp_to_ns((2023, 5, 1, 10, 20, 0, 0, None), "UTC", REF)
    with pytest.raises(ValueError):
        S.stamp_to_ns((2023, 5, 1, 10, 20, 61, 0, None), "UTC", REF)
    assert V.stamp_ns_utc(2023, 5, 1, 10, 20, 61, 0, 0, 0, REF)[0] == 0
    assert V.stamp_ns_utc(-1, 5, 1, 10, 20, 99, 0, 0, 0, REF)[0] == 0
    assert V.stamp_ns_utc(2023, 13, 1, 10, 20, 61, 0, 0, 0, REF)[0] == 0
    assert V.stamp_ns_utc(2023, 5, 1, 10, 20, 60, 0, 0, 0, REF)[0] == 1


def test_stamp_ns_year_guess():
    """December in January is last year; January in December is next year; Feb 29 guessed in a common year fails."""
    jan3 = calendar.timegm((2024, 1, 3, 0, 0, 0)) * 10**9
    assert V.stamp_ns_utc(-1, 12, 31, 23, 0, 0, 0, 0, 0, jan3) == (1, calendar.timegm((2023, 12, 31, 23, 0, 0))
                                                                   * 10**9)
    dec30 = calendar.timegm((2023, 12, 30, 0, 0, 0)) * 10**9
    assert V.stamp_ns_utc(-1, 1, 2, 0, 0, 0, 0, 0, 0, dec30) == (1, calendar.timegm((2024, 1, 2, 0, 0, 0)) * 10**9)
    assert V.stamp_ns_utc(-1, 2, 29, 0, 0, 0, 0, 0, 0, REF)[0] == 0
    assert V.stamp_ns_utc(-1, 2, 29, 0, 0, 0, 0, 0, 0, calendar.timegm((2024, 3, 1, 0, 0, 0)) * 10**9)[0] == 1


# ---------------------------------------------------------------------------------------------------------------
# Durations
# ---------------------------------------------------------------------------------------------------------------


@FAST
@given(st.integers(0, 9_223_372_036), st.sampled_from([0, 1, 2]), neighbours, neighbours)
def test_duration_whole_seconds(v, fmt, pre, post):
    assert duration(fmt, str(v), pre, post) == 1


@FAST
@given(st.integers(0, 10**9), st.integers(1, 6), st.sampled_from([0, 1]), neighbours, neighbours)
def test_duration_fractions(v, k, fmt, pre, post):
    text = f"{v // 10**k}.{str(v % 10**k).zfill(k)}"
    assert duration(fmt, text, pre, post) == 1


@FAST
@given(st.integers(0, 99), st.integers(0, 9999), st.integers(0, 99), st.integers(0, 99), st.booleans(),
       st.booleans(), neighbours, neighbours)
def test_duration_hms_described(d, h, mi, s, with_d, with_h, pre, post):
    text = (f"{d}d" if with_d else "") + f"{h}" + ("h" if with_h else "") + f":{mi:02d}:{s}"
    assert duration(2, text, pre, post) == 1


duration_alphabet = "0123456789.:dhe+-_ \t" + "infaINFA" + "x/\xa0\xb2\x85\n"


@MANY
@given(st.sampled_from([0, 1, 2]), st.one_of(
    mutated(st.one_of(st.integers(0, 10**12).map(str), st.just("0:02:32"), st.just("1d2h:03:04"),
                      st.just("12.5")), duration_alphabet),
    st.text(alphabet=duration_alphabet, max_size=10)), neighbours, neighbours)
def test_duration_any_text(fmt, text, pre, post):
    st_ = duration(fmt, text, pre, post)
    if st_ == -1 and fmt == 2:
        assert any(c >= "\x80" for c in text) or (S.DURATION_FORMATS["hms"](text) or 0) > I64_MAX


@pytest.mark.parametrize("text", [
    "", "0", "5", "1.5", ".5", "5.", ".", "0.000000001", "0.0000000001", "1e3", "1E3", "+5", "-5", "-0", " 5", "5 ",
    "5\n", "1_000", "inf", "nan", "NaN", "Infinity", "1000000000000", "1000000000001", "999999999999.9",
    "9223372036", "9223372037", "9007199254740993", "12345678901234567890", "0x10", "5s", "1:2", "1.2.3",
    "0:02:32", "1d2h:03:04", "123:04:05", "1d:03:04", "d1:03:04", "1h:03:04", "1d2:03:04", "0:2:3", "0:002:03",
    "0:02:032", "0:02:", ":02:03", "1dd2:03:04", "0:02:32 ", "99999999999999999d1:00:00", "\xb2", "1:00:0\xb2",
    "9223372036:00:00", "1.000000000000000000000000000001", "00000000000000000000001.5",
])
@pytest.mark.parametrize("fmt", [0, 1, 2])
def test_duration_edges(fmt, text):
    duration(fmt, text)
    duration(fmt, text, b"", b"")


def test_duration_values():
    b, s, e = _buf("1d2h:03:04")
    assert V.duration_span(b, s, e, 2) == (1, ((24 + 2) * 3600 + 3 * 60 + 4) * 10**9)
    b, s, e = _buf("0.1")
    assert V.duration_span(b, s, e, 0) == (1, int(0.1 * 1e9))
    b, s, e = _buf("1500")
    assert V.duration_span(b, s, e, 1) == (1, 1_500_000_000)
    assert V.duration_span(b, s, e, 7)[0] == -1
