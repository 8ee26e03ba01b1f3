"""The command line contract: subcommands, --help, exit codes 0/1/2 with one-line reasons, decode --count."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from collector.cli import main
from tests.conftest import FIXTURES
from tests.collector.flows.test_netflow_v5 import REC, v5_datagram


def run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("run", "replay", "decode", "report", "rules", "config"):
        assert cmd in out


@pytest.mark.parametrize("cmd", ["run", "replay", "decode", "report", "rules", "config"])
def test_subcommand_help(cmd, capsys):
    with pytest.raises(SystemExit) as info:
        main([cmd, "--help"])
    assert info.value.code == 0
    assert "usage: brokerwatch" in capsys.readouterr().out


def test_bad_usage_exits_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["frobnicate"])
    assert info.value.code == 2
    with pytest.raises(SystemExit) as info:
        main(["decode"])
    assert info.value.code == 2


def test_unreadable_input_exits_2_with_one_line(tmp_path, capsys):
    code, out, err = run(["decode", str(tmp_path / "nope.pcap")], capsys)
    assert code == 2 and out == ""
    assert err.strip().count("\n") == 0 and "nope.pcap: no such file" in err


def test_bad_config_exits_2(tmp_path, capsys):
    f = tmp_path / "c.yaml"
    f.write_text("TimeWindow: forever\n")
    code, _, err = run(["config", "check", str(f)], capsys)
    assert code == 2 and f"{f}:1: TimeWindow" in err
    code, _, err = run(["replay", "--config", str(f), str(f)], capsys)
    assert code == 2


def test_config_check_ok(capsys, tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("PayloadLengthThreshold: 2048\n")
    code, out, _ = run(["config", "check", str(f)], capsys)
    assert code == 0 and "ok" in out


def test_decode_prints_one_json_object_per_record_and_count_mode(tmp_path, capsys):
    d1 = tmp_path / "a.dat"
    d1.write_bytes(v5_datagram([REC, REC, REC]))
    d2 = tmp_path / "b.dat"
    d2.write_bytes(v5_datagram([REC], count=9))  # truncated: rejected
    code, out, _ = run(["decode", str(d1), str(d2)], capsys)
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == 3
    rec = json.loads(lines[0])
    assert rec["event"]["dataset"] == "netflow.v5"
    assert rec["source"] == {"ip": "192.0.2.10", "port": 40000}
    assert rec["destination"] == {"ip": "203.0.113.50", "port": 1883}
    assert rec["network"] == {"iana_number": 6, "bytes": 900, "packets": 10}
    code, out, _ = run(["decode", "--count", str(d1), str(d2)], capsys)
    assert code == 0
    assert json.loads(out) == {"records": {"netflow.v5": 3}, "rejected": {"netflow.v5.truncated": 1}}


def test_console_script_runs(tmp_path):
    d1 = tmp_path / "a.dat"
    d1.write_bytes(v5_datagram([REC]))
    exe = [sys.executable, "-m", "collector.cli"]
    result = subprocess.run(exe + ["decode", "--count", str(d1)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["records"] == {"netflow.v5": 1}


def test_decode_cuts_an_endless_syslog_line_and_reads_on(tmp_path):
    """A 5 MB line without a newline in a syslog file is cut, counted as oversized, and the next line still decodes."""
    from collector.inputs import _bounded_lines

    good = (FIXTURES / "syslog" / "pfsense.log").read_bytes().splitlines()[1]
    path = tmp_path / "long.log"
    path.write_bytes(b"<134>" + b"x" * 5_000_000 + b"\n" + good + b"\n")
    with open(path, "rb") as f:
        lines = list(_bounded_lines(f, 16384))
    assert [len(line) for line in lines] == [16385, len(good) + 1]
    out = subprocess.run([sys.executable, "-m", "collector.cli", "decode", "--count", str(path)], capture_output=True,
                         text=True, check=True, timeout=120)
    assert json.loads(out.stdout)["records"] == {"syslog.pfsense": 1}


@pytest.mark.parametrize("flag, value", [("--workers", "0"), ("--window-rows", "0"), ("--channel-mb", "-1"),
                                         ("--analytics-threads", "-2")])
def test_run_rejects_impossible_bounds_before_starting(flag, value, capsys):
    assert main(["run", flag, value]) == 2
    err = capsys.readouterr().err
    assert f"{flag} must be at least" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("args, says", [
    (["--syslog-tls-port", "6514"], "--syslog-tls-port needs"),
    (["--syslog-tls-client-ca", "/etc/hostname"], "--syslog-tls-client-ca needs"),
    (["--hostlog-tls-client-ca", "/etc/hostname"], "--hostlog-tls-client-ca needs"),
    (["--hostlog-tls-cert", "/etc/hostname"], "go together"),
])
def test_run_rejects_incomplete_tls_options_before_starting(args, says, capsys):
    assert main(["run", *args]) == 2
    err = capsys.readouterr().err
    assert says in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("argv", [["run", "--role", "collector"], ["run", "--role", "analytics"],
                                  ["replay", "--role", "collector", "x.pcap"]])
def test_a_role_apart_needs_a_broker(argv, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "needs a Kafka broker" in err and len(err.strip().splitlines()) == 1
