"""The one exception host-log decoders raise for a record they cannot use."""

from __future__ import annotations


class HostLogError(Exception):
    """A host-log record that is malformed, truncated, hostile or lacks a field it needs; ``reason`` is the counter
    label (``json``, ``xml``, ``missing_field``, ``too_large``, ``bad_value``, ``unknown_format``, ...)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


class HostLogSkip(Exception):
    """A well-formed host-log record that carries nothing the analytics use (counted as skipped, not rejected);
    ``what`` is the counter label (``other_event``, ``no_network_info``, ``af_unix``, ...)."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what
