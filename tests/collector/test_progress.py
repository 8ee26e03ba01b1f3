"""Progress of long offline runs: drawn on stderr when it is a terminal (a pseudo-terminal here), never into a pipe,
never with --quiet; stdout stays the command's output alone."""

from __future__ import annotations

import io
import os
import pty
import subprocess
import sys

from collector.progress import Progress
from tests.conftest import FIXTURES

V5 = FIXTURES / "netflow_v5" / "softflowd_beacon_world.pcap"
ASA = FIXTURES / "syslog" / "asa_beacon_world.log"


def run_on_a_terminal(args: list[str]) -> tuple[int, str, str]:
    """The command with stderr on a pseudo-terminal; returns (exit code, stdout, what the terminal showed)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "collector.cli", *args], stdout=subprocess.PIPE, stderr=slave,
                            stdin=subprocess.DEVNULL)
    os.close(slave)
    shown = bytearray()
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed its end
            break
        if not chunk:
            break
        shown += chunk
    out = proc.stdout.read().decode()
    code = proc.wait(timeout=300)
    os.close(master)
    return code, out, shown.decode("utf-8", "replace")


def test_replay_shows_progress_on_a_terminal(tmp_path):
    alerts = tmp_path / "alerts.jsonl"
    code, out, shown = run_on_a_terminal(["replay", str(V5), str(ASA), "--alerts", str(alerts)])
    assert code == 0, shown
    assert out == ""  # alerts went to the file; the bar only ever goes to stderr
    assert "100%" in shown and "records/s" in shown and "\r" in shown  # one line redrawn in place
    assert "asa_beacon_world.log" in shown  # the input being read is named
    assert alerts.read_text().count("\n") >= 1


def test_decode_shows_no_progress_in_a_pipe_or_with_quiet(tmp_path):
    done = subprocess.run([sys.executable, "-m", "collector.cli", "decode", "--count", str(V5)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0 and "records/s" not in done.stderr and "%" not in done.stderr
    assert '"netflow.v5"' in done.stdout
    code, out, shown = run_on_a_terminal(["decode", "--count", "--quiet", str(V5)])
    assert code == 0 and '"netflow.v5"' in out
    assert "records/s" not in shown and "%" not in shown


def test_progress_counts_bytes_over_every_input_and_the_record_rate(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"x" * 1000)
    b.write_bytes(b"y" * 3000)
    stream = io.StringIO()
    p = Progress([str(a), str(b)], stream=stream, enabled=True)
    p.file(str(a), 1000, 1000)
    p.file(str(b), 1500, 3000)
    assert p._bar.n == 2500 and p._bar.total == 4000  # bytes of the inputs before, plus this one's
    p.add_records(700)
    p.close()
    assert "700 records" in stream.getvalue() and "records/s" in stream.getvalue()
    off = Progress([str(a)], stream=io.StringIO())  # a StringIO is no terminal: nothing drawn
    off.file(str(a), 10, 1000)
    off.add_records(5)
    off.close()
    assert not off.enabled and off.records == 5
