"""Decoder state persisted across restarts (templates, sampling rates, sequence expectations): no cold start.

The file is one JSON object ``{"version": 1, "decoders": {name: state}}`` written atomically (temporary file, fsync,
rename). A missing file is a first start; an unreadable or foreign one is logged, counted, and the service starts
cold rather than refusing to run.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path

from collector.flows.decoders import FlowDecoders

log = logging.getLogger("brokerwatch.state")

#: The decoders whose state is worth keeping (the template-based ones).
STATEFUL = ("netflow.v9", "ipfix")


def save_state(path: str | os.PathLike, decoders: FlowDecoders) -> None:
    """Write the stateful decoders' state to path atomically."""
    state = {"version": 1, "decoders": {}}
    for name in STATEFUL:
        dec = decoders.get(name)
        if dec is not None and hasattr(dec, "export_state"):
            state["decoders"][name] = dec.export_state()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name, dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(state, f, separators=(",", ":"))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_state(path: str | os.PathLike, decoders: FlowDecoders) -> int:
    """Load saved state into the decoders; returns how many decoders took state (0 on a first or failed start)."""
    path = Path(path)
    if not path.exists():
        return 0
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(state, dict) or state.get("version") != 1:
            raise ValueError("not a brokerwatch state file (version 1)")
        loaded = 0
        for name, dec_state in state.get("decoders", {}).items():
            dec = decoders.get(name)
            if dec is None or not hasattr(dec, "import_state"):
                continue
            dec.import_state(dec_state)
            loaded += 1
        return loaded
    except (OSError, ValueError, KeyError, TypeError) as exc:
        decoders.counters.inc("brokerwatch_state_load_errors_total", (type(exc).__name__,))
        log.warning("ignoring decoder state in %s (starting cold): %s", path, exc)
        return 0
