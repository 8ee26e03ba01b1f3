"""``brokerwatch replay``: the detections over files, with time taken from the data."""

from __future__ import annotations

import argparse
import sys
from typing import Callable

from analytics.detections.an0005 import Detector
from collector.config import ConfigError, load_config
from collector.errors import UsageError
from collector.inputs import InputError, OfflineSource
from collector.sinks import FanOut, JsonLinesSink

NS = 1_000_000_000


def replay(args: argparse.Namespace, progress: Callable | None = None) -> int:
    """Decode the inputs in order, evaluate on the data's own cadence, write alerts; returns the exit code."""
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    sinks = [JsonLinesSink.open(args.alerts) if args.alerts else JsonLinesSink(sys.stdout)]
    out = FanOut(sinks)
    source = OfflineSource(progress=progress)
    detector = Detector(config)
    cadence = int(config.TimeWindow.cadence_s * NS)
    window = int(config.TimeWindow.window_s * NS)
    next_eval = None
    try:
        for batch in source.batches(args.inputs):
            detector.ingest(batch)
            now = detector.latest_ns
            if next_eval is None:
                next_eval = (now // cadence + 1) * cadence
            if now - next_eval > window:  # a jump in data time: no point evaluating every empty step
                next_eval = (now // cadence) * cadence
            while now >= next_eval:
                for alert in detector.evaluate(next_eval):
                    out.write(alert)
                next_eval += cadence
        for alert in detector.flush():
            out.write(alert)
    except InputError as exc:
        raise UsageError(str(exc)) from None
    finally:
        out.close()
    rejected = source.decoders.rejected()
    if rejected:
        print(f"brokerwatch: rejected datagrams: {rejected}", file=sys.stderr)
    return 0
