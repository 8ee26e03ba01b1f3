"""Every command in the operator docs runs, or is marked as needing a device.

A page's fenced blocks, by their info string:
- ``sh``: run with bash (errexit, pipefail) in a scratch directory that has the repository's ``fixtures/`` and
  ``brokerwatch.example.yaml``, in page order; a non-zero exit fails the page;
- ``sh service``: a ``brokerwatch run`` command, started on free loopback ports (its ``--metrics`` address and the
  later blocks' mentions of it rewritten to a free one), kept running for the page's later blocks, then stopped with
  SIGTERM, which must exit 0;
- ``yaml config NAME``: written to NAME and checked with ``brokerwatch config check``;
- ``json``: must parse;
- anything with the word ``device``: needs a router, firewall or host; not run, only counted.
Any other block fails the test, so a new command cannot slip in untested.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO
from tests.live import _free_port

DOCS = REPO / "docs"
PAGES = ["quickstart.md", "exporters.md", "syslog.md", "forwarding-host-logs.md", "tuning.md", "reading-an-alert.md"]
FENCE = re.compile(r"^(?P<indent> *)```(?P<info>.*)$")


def blocks(text: str) -> list[tuple[int, str, str]]:
    """(line number, info string, body) of every fenced block, indented ones (in lists) too."""
    out, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, info, start = len(m.group("indent")), m.group("info").strip(), i + 1
        body = []
        i += 1
        while i < len(lines) and lines[i].strip() != "```":
            body.append(lines[i][indent:] if lines[i][:indent].strip() == "" else lines[i])
            i += 1
        out.append((start, info, "\n".join(body) + "\n"))
        i += 1
    return out


def env() -> dict:
    bindir = os.path.dirname(sys.executable)
    return dict(os.environ, PATH=f"{bindir}:{os.environ.get('PATH', '')}", PYTHONPATH=str(REPO))


class Service:
    """A ``brokerwatch run`` block started on free ports, with the substitutions its page's later blocks need."""

    def __init__(self, command: str, cwd):
        self.subst: dict[str, str] = {}
        argv = shlex.split(command)
        assert argv[:2] == ["brokerwatch", "run"], f"a service block runs brokerwatch run, not {command!r}"
        for i, a in enumerate(argv):
            if i and argv[i - 1] == "--metrics":
                new = f"127.0.0.1:{_free_port()}"
                self.subst[a] = new
                argv[i] = new
        ports = [str(_free_port()) for _ in range(5)]
        argv += ["--listen", "127.0.0.1", "--netflow-port", ports[0], "--ipfix-port", ports[1], "--sflow-port",
                 ports[2], "--syslog-port", ports[3], "--hostlog-port", ports[4], "--state", ""]
        self.proc = subprocess.Popen(argv, cwd=cwd, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True)
        self.log = []
        deadline = time.monotonic() + 300  # a cold numba cache compiles for about a minute first
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            self.log.append(line)
            if "ready in" in line:
                return
        self.proc.kill()
        pytest.fail("service did not start:\n" + "".join(self.log))

    def rewrite(self, text: str) -> str:
        for old, new in self.subst.items():
            text = text.replace(old, new)
        return text

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        _out, err = self.proc.communicate(timeout=180)
        self.log.append(err)
        return self.proc.returncode


def run_page(page: str, tmp_path) -> dict[str, int]:
    """Run a page's blocks; returns how many of each kind it had."""
    text = (DOCS / page).read_text()
    (tmp_path / "fixtures").symlink_to(REPO / "fixtures")
    (tmp_path / "brokerwatch.example.yaml").symlink_to(REPO / "brokerwatch.example.yaml")
    kinds = {"sh": 0, "service": 0, "config": 0, "json": 0, "device": 0}
    service = None
    try:
        for line, info, body in blocks(text):
            where = f"{page}:{line}"
            words = info.split()
            if "device" in words:
                kinds["device"] += 1
            elif words == ["sh"]:
                script = service.rewrite(body) if service else body
                done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, env=env(),
                                      capture_output=True, text=True, timeout=600)
                assert done.returncode == 0, f"{where}: exit {done.returncode}\n{script}\n{done.stdout[-3000:]}" \
                                             f"\n{done.stderr[-3000:]}"
                kinds["sh"] += 1
            elif words == ["sh", "service"]:
                assert service is None, f"{where}: one service per page"
                service = Service(body.strip(), tmp_path)
                kinds["service"] += 1
            elif words[:2] == ["yaml", "config"] and len(words) == 3:
                (tmp_path / words[2]).write_text(body)
                done = subprocess.run(["brokerwatch", "config", "check", words[2]], cwd=tmp_path, env=env(),
                                      capture_output=True, text=True, timeout=120)
                assert done.returncode == 0, f"{where}: {done.stderr}"
                kinds["config"] += 1
            elif words == ["json"]:
                json.loads(body)
                kinds["json"] += 1
            else:
                pytest.fail(f"{where}: a block marked {info!r}: mark it sh, sh service, yaml config NAME, json, "
                            "or with 'device'")
    finally:
        if service is not None:
            code = service.stop()
            assert code == 0, f"{page}: the service exited {code}:\n{''.join(service.log)[-3000:]}"
    return kinds


@pytest.mark.live
@pytest.mark.parametrize("page", PAGES)
def test_every_command_on_the_page_runs_or_needs_a_device(page, tmp_path):
    kinds = run_page(page, tmp_path)
    assert kinds["sh"] + kinds["service"] + kinds["config"] >= 1, f"{page}: nothing on it is run"


def test_every_page_is_linked_from_the_quick_start():
    text = (DOCS / "quickstart.md").read_text()
    for page in PAGES[1:]:
        assert f"({page})" in text, page


def test_blocks_are_parsed_with_their_marks():
    text = "a\n```sh\necho 1\n```\n- item\n\n  ```sh device\n  reboot\n  ```\n"
    assert blocks(text) == [(2, "sh", "echo 1\n"), (7, "sh device", "reboot\n")]
