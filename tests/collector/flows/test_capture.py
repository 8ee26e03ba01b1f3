"""Live capture (collector/flows/capture.py): frames sent on one end of a veth pair, inside a network namespace made
for the test, are metered from the other end's TPACKET_V3 ring into the same flows as the capture file gives."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest

from bench.meter import veth_namespace
from collector.flows.meter import MeterParams, client_view, meter_file
from tests.conftest import FIXTURES, REPO

TRAFFIC = FIXTURES / "traffic" / "beacon_world.pcap"


@pytest.fixture
def netns():
    """A network namespace holding a veth pair v0 <-> v1 (needs root: CAP_SYS_ADMIN and CAP_NET_RAW)."""
    try:
        with veth_namespace("bwtest") as name:
            yield name
    except RuntimeError as exc:
        pytest.skip(str(exc))


SEND = """
import socket, sys
from collector.pcap import frames
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("v0", 0))
for ts, lt, f in frames(sys.argv[1]):
    s.send(f)
"""


@pytest.mark.live
def test_live_capture_meters_what_the_file_gives(netns, tmp_path):
    ready = tmp_path / "ready"
    cap = subprocess.Popen(["ip", "netns", "exec", netns, sys.executable, "-m", "collector.flows.capture", "v1",
                            "--seconds", "6", "--ready", str(ready)], stdout=subprocess.PIPE, cwd=REPO, text=True)
    deadline = time.monotonic() + 120
    while not ready.exists():
        assert cap.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-c", SEND, str(TRAFFIC)], check=True, cwd=REPO)
    out, _ = cap.communicate(timeout=120)
    got = json.loads(out)
    assert got["frames"] == 4205 and got["kernel_drops"] == 0
    flows, _ = meter_file(str(TRAFFIC), MeterParams(expint=0))
    col = client_view(flows)
    expected = sorted([int(col[k][i]) for k in ("src_hi", "src_lo", "dst_hi", "dst_lo", "src_port", "dst_port")] +
                      [int(flows["proto"][i]), int(col["bytes"][i]), int(col["packets"][i])] for i in range(len(flows)))
    assert got["records"] == expected
    assert got["messages"] > 0  # the MQTT sessions' PUBLISHes, each an event
