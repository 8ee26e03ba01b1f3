"""Session starts whose end never comes: records at the profile's session_timeout (data time) or when the input
ends, the same through the block path as through the reference path, offline and in the listener."""

from __future__ import annotations

import calendar

from analytics.schema import FLAG_NO_COUNTERS, FLAG_ORIENTED, FlowBatchBuilder, words_to_ip
from collector.inputs import OfflineSource
from collector.metrics import Counters
from collector.syslog.parser import SyslogParser, load_profile
from tests.conftest import FIXTURES

REF = calendar.timegm((2026, 11, 28, 12, 0, 0)) * 10**9
EXPORTER = (0, 0xFFFF0A000001)


def built(hms: str, conn: int, inside_port: int) -> bytes:
    """An outbound ASA Built: inside 10.1.1.50:inside_port to the outside broker 198.51.100.20:8883."""
    return (f"<166>Nov 28 2026 {hms} asa01 : %ASA-6-302013: Built outbound TCP connection {conn} for "
            f"outside:198.51.100.20/8883 (198.51.100.20/8883) to inside:10.1.1.50/{inside_port} "
            f"(203.0.113.5/{inside_port})").encode()


def deny(hms: str) -> bytes:
    """Any later line, to move data time on."""
    return (f"<162>Nov 28 2026 {hms} asa01 : %ASA-2-106006: Deny inbound UDP from 192.0.2.91/40001 to "
            "10.1.1.82/5683 on interface outside").encode()


LINES = [built("10:00:00", 1, 51000), built("10:30:00", 2, 51001), deny("10:59:00"), deny("11:10:00")]


def _expired(block: bool):
    parser = SyslogParser(Counters(), reference_ns=REF)
    b = FlowBatchBuilder(16)
    if block:
        parser.feed_lines(LINES, EXPORTER, REF, b)
    else:
        parser.block = False
        for line in LINES:
            parser.feed_line(line, EXPORTER, REF, b)
    mark = len(b)
    now = int(b.rows()["end_ns"].max())  # 11:10, the newest record
    assert parser.expire_sessions(now, b) == 1  # 10:00 is over an hour ago, 10:30 is not
    return parser, b.build().select(slice(mark, None))


def test_a_start_past_its_timeout_becomes_a_record_in_both_paths():
    got = []
    for block in (False, True):
        parser, batch = _expired(block)
        c = batch.columns
        assert words_to_ip(c["src_hi"][0], c["src_lo"][0]) == "10.1.1.50" and c["src_port"][0] == 51000
        assert words_to_ip(c["dst_hi"][0], c["dst_lo"][0]) == "198.51.100.20" and c["dst_port"][0] == 8883
        assert c["flags"][0] & FLAG_NO_COUNTERS and c["flags"][0] & FLAG_ORIENTED
        assert parser.open_sessions() == 1
        assert parser.counters.get("brokerwatch_syslog_sessions_total", ("cisco_asa", "start_timed_out")) == 1
        got.append(batch.to_rows().tolist())
    assert got[0] == got[1]


def test_the_timeout_is_the_profiles(tmp_path):
    text = (FIXTURES.parent / "device_profiles" / "cisco_asa.yaml").read_text()
    (tmp_path / "asa.yaml").write_text(text.replace("session_timeout: 3600", "session_timeout: 600"))
    parser = SyslogParser(Counters(), profiles=[load_profile(tmp_path / "asa.yaml")], reference_ns=REF)
    b = FlowBatchBuilder(16)
    parser.feed_lines(LINES, EXPORTER, REF, b)
    assert parser.expire_sessions(int(b.rows()["end_ns"].max()), b) == 2


def test_replay_makes_every_start_a_record_by_the_end(tmp_path):
    """Offline, data time expires the 10:00 start when the 11:10 line is read; the 10:30 one ends with the input."""
    path = tmp_path / "asa.log"
    path.write_bytes(b"\n".join(LINES) + b"\n")
    src = OfflineSource()
    rows = [b for b in src.batches([str(path)])]
    assert sum(len(b) for b in rows) == 4
    assert src.counters.get("brokerwatch_syslog_sessions_total", ("cisco_asa", "start_timed_out")) == 1
    assert src.counters.get("brokerwatch_syslog_sessions_total", ("cisco_asa", "start_at_end_of_input")) == 1
