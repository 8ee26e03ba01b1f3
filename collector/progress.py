"""Progress of long offline runs (``replay``, ``decode``, ``report``) on stderr: bytes read, records/s and the ETA.

Shown only when stderr is a terminal and ``--quiet`` is not given: a pipe or a log file never gets a bar (tqdm draws
it; it rewrites one line at most 10 times a second).
"""

from __future__ import annotations

import os
import sys
import time
from typing import IO


class Progress:
    """A byte bar over every input, with the records decoded so far and their rate."""

    #: Seconds between refreshes of the records/s figure (tqdm refreshes the bar itself).
    RATE_EVERY_S = 0.5

    def __init__(self, paths: list[str], stream: IO[str] | None = None, enabled: bool | None = None):
        self.stream = stream if stream is not None else sys.stderr
        if enabled is None:
            enabled = _isatty(self.stream)
        self.enabled = enabled
        self._sizes = {p: _size(p) for p in paths}
        self._base: dict[str, int] = {}  # bytes of the inputs before each one
        total = 0
        for p in paths:
            self._base.setdefault(p, total)
            total += self._sizes[p]
        self.records = 0
        self._t0 = time.monotonic()
        self._last_rate = 0.0
        self._bar = None
        if enabled:
            from tqdm import tqdm

            cols, rows = _size_of(self.stream)
            # a terminal that reports no size (a fresh pseudo-terminal, some CI consoles) gets a fixed one: tqdm
            # would otherwise hide its bar as lying outside a screen of zero rows
            self._bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, file=self.stream,
                             ncols=None if cols else 100, nrows=rows or 24, dynamic_ncols=bool(cols),
                             mininterval=0.1, leave=True, desc="reading")

    def file(self, path: str, done: int, _total: int) -> None:
        """Bytes done in one input (the callback ``OfflineSource`` calls)."""
        if self._bar is None:
            return
        self._bar.set_description_str(os.path.basename(path), refresh=False)
        pos = self._base.get(path, 0) + min(done, self._sizes.get(path, done))
        if pos > self._bar.n:
            self._bar.update(pos - self._bar.n)

    def add_records(self, n: int) -> None:
        """Records decoded since the last call."""
        self.records += n
        if self._bar is None:
            return
        now = time.monotonic()
        if now - self._last_rate >= self.RATE_EVERY_S:
            self._last_rate = now
            rate = self.records / max(now - self._t0, 1e-9)
            self._bar.set_postfix_str(f"{self.records:,} records, {rate:,.0f} records/s", refresh=False)

    def close(self) -> None:
        """Finish the bar at 100 % with the final figures."""
        if self._bar is None:
            return
        self._bar.update(self._bar.total - self._bar.n)
        rate = self.records / max(time.monotonic() - self._t0, 1e-9)
        self._bar.set_postfix_str(f"{self.records:,} records, {rate:,.0f} records/s", refresh=False)
        self._bar.close()
        self._bar = None


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _size_of(stream) -> tuple[int, int]:
    try:
        size = os.get_terminal_size(stream.fileno())
    except (AttributeError, ValueError, OSError):
        return 0, 0
    return size.columns, size.lines


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0
