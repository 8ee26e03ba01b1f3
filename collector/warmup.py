"""Cold start: every kernel compiled, or loaded from numba's cache, before a socket is bound.

``warm_receive`` pushes real exporters' datagrams (collector/data/warmup.pcap, made by fixtures/make_warmup.py from
softflowd and pmacct captures) through the receivers' own decode path and the per-vendor syslog samples through
the syslog block path; ``warm_analytics`` runs a detector pass over synthetic pub/sub rows (a beacon, a random
pair, a long session) that came through the analytics channel. Both throw their results away. With a warm cache
they take well under a second; with an empty one they take the compile time that would otherwise fall on the first
datagrams (tests/collector/test_warmup.py checks that decoding the fixtures afterwards compiles nothing new).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

DATA = Path(__file__).with_name("data")
WARMUP_PCAP = DATA / "warmup.pcap"
WARMUP_SYSLOG = DATA / "warmup_syslog.log"
NS = 1_000_000_000
#: sFlow's UDP port: the receivers decode it with the "sflow" hint, everything else by content.
SFLOW_PORT = 6343


def warm_receive() -> None:
    """Decode the warm-up capture and syslog lines through the receive path, then through the analytics channel."""
    from analytics.schema import FlowBatchBuilder
    from collector.metrics import Counters
    from collector.pipeline import FlowPipeline
    from collector.syslog.parser import SyslogParser

    pipeline = FlowPipeline(lambda b: None, Counters(), emit_rows=lambda r, s: None)
    decode_like_receivers(str(WARMUP_PCAP), pipeline)
    lines = [ln for ln in WARMUP_SYSLOG.read_bytes().split(b"\n") if ln.strip()]
    parser = SyslogParser(Counters())
    builder = FlowBatchBuilder(4096)
    parser.feed_lines(lines * 4, (0, 0xFFFF7F000001), 1_767_225_600 * NS, builder)  # enough for the block path
    builder.build()
    from collector.flows.capture import warm_up
    from collector.flows.traffic import TrafficMeter

    warm_up(TrafficMeter(Counters()))  # the flow meter's kernels (run --interface)


def decode_like_receivers(path: str, pipeline) -> None:
    """Decode a capture's datagrams the way the UDP receivers hand them over (one buffer, arrays per block)."""
    from analytics.schema import bytes_to_words
    from collector.pcap import datagrams

    groups: dict[str | None, list] = {}
    for d in datagrams(path):
        groups.setdefault("sflow" if d.dport == SFLOW_PORT else None, []).append(d)
    for hint, ds in groups.items():
        payloads = [d.payload for d in ds]
        lens = np.array([len(p) for p in payloads], np.int64)
        offs = np.concatenate([[0], np.cumsum(lens)[:-1]]).astype(np.int64)
        buf = np.frombuffer(b"".join(payloads), np.uint8).copy()
        words = np.array([bytes_to_words(d.src) for d in ds], np.uint64).reshape(len(ds), 2)
        times = np.array([d.ts_ns for d in ds], np.int64)
        pipeline.decode_arrays(buf, offs, lens, np.ascontiguousarray(words[:, 0]), np.ascontiguousarray(words[:, 1]),
                               times, hint)
    pipeline.flush()


def synthetic_rows(n_beats: int = 64, t0_s: int = 1_767_225_600):
    """A FlowBatch of pub/sub rows: one beaconing pair, one random pair, one long session cut into slices."""
    from analytics.schema import FlowBatchBuilder, ip_to_words

    rng = np.random.default_rng(7)
    b = FlowBatchBuilder(4 * n_beats)
    topic = b.intern("devices/4f9c2e7a1b/cmd")
    times = [t0_s + 60.0 * np.arange(n_beats) + rng.uniform(0, 20, n_beats),
             t0_s + np.sort(rng.uniform(0, 60.0 * n_beats, n_beats)),
             t0_s + 300.0 * np.arange(n_beats // 4)]
    for k, t in enumerate(times):
        r = b.reserve(len(t))
        r["start_ns"] = (t * NS).astype(np.int64)
        r["end_ns"] = r["start_ns"] + (300 * NS if k == 2 else NS)
        r["src_hi"], r["src_lo"] = ip_to_words(f"192.0.2.{10 + k}")
        r["dst_hi"], r["dst_lo"] = ip_to_words("203.0.113.50")
        r["src_port"] = 40000 + k if k == 2 else 40000 + np.arange(len(t)) % 20000
        r["dst_port"] = 1883
        r["proto"] = 6
        r["tcp_flags"] = 0x18 if k == 2 else 0x1B
        r["bytes"] = 400 + 30 * k
        r["packets"] = 4
        r["sampling_rate"] = 1
        r["app_proto"] = 1
        r["topic_id"] = topic
    return b.build()


def warm_analytics(config) -> None:
    """One detector pass over synthetic rows that came through the analytics channel (as in the service)."""
    from analytics.detections.an0005 import Detector
    from collector.metrics import Counters
    from collector.transport.channel import ChannelReader, ChannelWriter, make_pipe

    batch = synthetic_rows()
    r, w = make_pipe()
    writer = ChannelWriter(w, Counters())
    writer.publish(batch)
    writer.close()
    reader = ChannelReader(r)
    got = reader.read()
    reader.close()
    detector = Detector(config)
    detector.ingest(got)
    detector.evaluate()
    detector.flush()


def warm_all(config) -> None:
    """Both sides, in one process (the Docker build and ``brokerwatch warmup``)."""
    warm_receive()
    warm_analytics(config)


__all__ = ["warm_receive", "warm_analytics", "warm_all", "synthetic_rows"]
