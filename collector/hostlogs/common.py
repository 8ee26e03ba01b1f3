"""Small parsers every host-log format needs: timestamps and numbers as the forwarders write them."""

from __future__ import annotations

import calendar
import re
from functools import lru_cache

from collector.hostlogs.errors import HostLogError

_ISO = re.compile(
    rb"(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2}):(\d{2})(?:[.,](\d{1,9}))?\s*(Z|[+-]\d{2}:?\d{2}|UTC)?"
)


@lru_cache(maxsize=4096)
def _day_seconds(y: int, mo: int, d: int) -> int:
    return calendar.timegm((y, mo, d, 0, 0, 0, 0, 0, 0))


#: The largest value of an int64 column (times in ns reach it in the year 2262; pids never do).
INT64_MAX = (1 << 63) - 1


def checked_ns(ns: int) -> int:
    """ns when it fits the int64 time column, else HostLogError("bad_time") (a year past 2262 or before 1678 would
    overflow the column when the batch is built, far from the record that carried it)."""
    if -INT64_MAX <= ns <= INT64_MAX:
        return ns
    raise HostLogError("bad_time", f"{ns} ns is outside the int64 range")


def parse_time_ns(value) -> int:
    """Nanoseconds since the epoch (UTC) of a timestamp as host logs write it.

    Takes ISO 8601 / RFC 3339 (``2026-12-03T10:00:00.123Z``, with an offset or none = UTC), Sysmon's UtcTime
    (``2019-03-19 15:55:52.615``), python-evtx's ``2019-03-19 15:55:52.615000+00:00``, and numbers: epoch seconds,
    milliseconds, microseconds or nanoseconds told apart by magnitude (int, float or numeric string).
    Raises HostLogError("bad_time") for anything else, and for a time outside the int64 nanosecond range.
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if isinstance(value, float) and value != value or value in (float("inf"), float("-inf")):
            raise HostLogError("bad_time", repr(value))
        return checked_ns(_epoch_ns(float(value) if isinstance(value, float) else value))
    if isinstance(value, str):
        raw = value.encode()
    elif isinstance(value, (bytes, bytearray)):
        raw = bytes(value)
    else:
        raise HostLogError("bad_time", repr(value)[:80])
    m = _ISO.match(raw.strip())
    if m is None:
        try:
            return checked_ns(_epoch_ns(float(raw) if b"." in raw else int(raw)))
        except (ValueError, OverflowError):
            raise HostLogError("bad_time", raw[:80].decode("utf-8", "replace")) from None
    y, mo, d, h, mi, s, frac, tz = m.groups()
    secs = _day_seconds(int(y), int(mo), int(d)) + int(h) * 3600 + int(mi) * 60 + int(s)
    if tz and tz not in (b"Z", b"UTC"):
        sign = -1 if tz[:1] == b"-" else 1
        digits = tz[1:].replace(b":", b"")
        secs -= sign * (int(digits[:2]) * 3600 + int(digits[2:4]) * 60)
    ns = int(frac.ljust(9, b"0")) if frac else 0
    return checked_ns(secs * 1_000_000_000 + ns)


def _epoch_ns(v) -> int:
    a = abs(v)
    if a < 1e11:  # seconds
        return int(round(v * 1_000_000_000)) if isinstance(v, float) else v * 1_000_000_000
    if a < 1e14:  # milliseconds
        return int(v * 1_000_000)
    if a < 1e17:  # microseconds
        return int(v * 1000)
    return int(v)


def to_int(value, default: int = -1) -> int:
    """An integer from a number or a decimal/hex (``0x``) string; ``default`` when absent or not a number."""
    if value is None or value == "":
        return default
    if isinstance(value, int):
        return value
    try:
        s = str(value).strip()
        return int(s, 16) if s[:2] in ("0x", "0X") else int(s)
    except ValueError:
        return default


def pid_of(value) -> int:
    """A process id from a number or a numeric string; -1 when absent, not a number, or outside 0..INT64_MAX."""
    v = to_int(value)
    return v if 0 <= v <= INT64_MAX else -1
