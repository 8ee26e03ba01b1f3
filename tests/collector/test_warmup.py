"""Cold start: the warm-up compiles every kernel that real inputs reach, so nothing compiles on the first datagram."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

PROBE = r'''
import glob, json, sys
import numba
from numba.core.registry import CPUDispatcher

def signatures():
    out = {}
    for name, mod in list(sys.modules.items()):
        if not name.startswith(("collector", "analytics")):
            continue
        for attr, obj in vars(mod).items():
            if isinstance(obj, CPUDispatcher):
                out[f"{name}.{attr}"] = sorted(map(str, obj.signatures))
    return out

from analytics.detections.an0005 import Detector
from analytics.schema import FlowBatch, FlowBatchBuilder
from collector.config import load_config
from collector.metrics import Counters
from collector.pipeline import FlowPipeline
from collector.syslog.parser import SyslogParser
from collector.transport.channel import ChannelReader, ChannelWriter, make_pipe
from collector.warmup import decode_like_receivers, warm_analytics, warm_receive

config = load_config(None)
warm_receive()
warm_analytics(config)
before = signatures()
rows = []
pipeline = FlowPipeline(rows.append, Counters(), emit_rows=lambda r, s: rows.append(FlowBatch.from_rows(r.copy(), s)))
for path in sorted(glob.glob("fixtures/*/*.pcap")):
    if "/traffic/" not in path:
        decode_like_receivers(path, pipeline)
parser = SyslogParser(Counters())
for path in sorted(glob.glob("fixtures/syslog/*.log")):
    b = FlowBatchBuilder(4096)
    lines = [ln for ln in open(path, "rb").read().split(b"\n") if ln.strip()]
    for i in range(0, len(lines), 1024):
        parser.feed_lines(lines[i:i + 1024], (0, 0xFFFF7F000001), 1_767_225_600 * 10**9, b)
    rows.append(b.build())
detector = Detector(config)
for batch in rows:  # through the channel, as in the service
    r, w = make_pipe()
    writer = ChannelWriter(w, Counters())
    writer.publish(batch)
    writer.close()
    reader = ChannelReader(r)
    detector.ingest(reader.read())
    reader.close()
    detector.evaluate()
detector.flush()
after = signatures()
print(json.dumps({"rows": sum(len(b) for b in rows),
                  "new": {k: sorted(set(v) - set(before.get(k, []))) for k, v in after.items()
                          if set(v) - set(before.get(k, []))}}))
'''


@pytest.mark.skipif(os.environ.get("NUMBA_DISABLE_JIT") == "1", reason="nothing is compiled without the JIT")
def test_decoding_real_exports_after_the_warm_up_compiles_nothing_new():
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, capture_output=True, text=True, timeout=900,
                         env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["rows"] > 3_000, result  # the fixtures decoded: the probe did reach the kernels
    assert result["new"] == {}, f"kernels compiled after the warm-up: {result['new']}"
