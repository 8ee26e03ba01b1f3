"""A `brokerwatch run` subprocess on free loopback ports, for the live tests."""

from __future__ import annotations

import ast
import os
import re
import signal
import socket
import subprocess
import sys

import pytest

from tests.conftest import REPO


def _free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1."""
    for _ in range(50):
        t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        t.bind(("127.0.0.1", 0))
        port = t.getsockname()[1]
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            u.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            t.close()
            u.close()
    raise RuntimeError("no free port")


class Running:
    """`brokerwatch run` in a subprocess on free loopback ports."""

    def __init__(self, tmp_path, state="", extra=()):
        # every port free, the host-log one too: other suites on this machine may hold the defaults
        self.ports = {k: _free_port() for k in ("netflow", "ipfix", "sflow", "syslog", "hostlog")}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "collector.cli", "run", "--listen", "127.0.0.1",
             "--netflow-port", str(self.ports["netflow"]), "--ipfix-port", str(self.ports["ipfix"]),
             "--sflow-port", str(self.ports["sflow"]), "--syslog-port", str(self.ports["syslog"]),
             "--hostlog-port", str(self.ports["hostlog"]),
             "--alerts", str(tmp_path / "alerts.jsonl"), "--state", state, *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
            env=dict(os.environ, PYTHONPATH=str(REPO)))
        self.log = []
        while not any("listening" in line for line in self.log):
            line = self.proc.stderr.readline()
            if not line:
                self.proc.kill()
                pytest.fail("service did not start:\n" + "".join(self.log))
            self.log.append(line)

    def stop(self) -> dict:
        """SIGTERM, wait, and return the summary line's record and rejection counts (and stdout, stderr)."""
        self.proc.send_signal(signal.SIGTERM)
        out, err = self.proc.communicate(timeout=180)  # a cold numba cache compiles first
        err = "".join(self.log) + err
        assert self.proc.returncode == 0, err
        m = re.search(r"records (\{.*?\}); rejected (\{.*?\});", err)
        assert m, err
        return {"records": ast.literal_eval(m.group(1)), "rejected": ast.literal_eval(m.group(2)), "stdout": out,
                "stderr": err}


def scrape_until(port: int, done, timeout: float = 60.0) -> str:
    """GET /metrics from a running service until ``done(text)`` holds (or timeout, which only ends a broken run);
    returns the last text."""
    import time
    import urllib.request

    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        if done(text):
            break
        time.sleep(0.1)
    return text
