"""Counters for everything that moves, and rate-limited logging of rejections.

Names follow ``brokerwatch_<module>_<thing>_total`` with label tuples, Prometheus style.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict

log = logging.getLogger("brokerwatch")


class Counters:
    """A flat registry of labelled counters: ``inc("brokerwatch_decoder_errors_total", ("netflow.v5", "short"))``."""

    def __init__(self) -> None:
        self._values: dict[str, dict[tuple, int]] = defaultdict(lambda: defaultdict(int))

    def inc(self, name: str, labels: tuple = (), n: int = 1) -> None:
        """Add n to the counter name{labels} (adding 0 creates nothing: absent and zero read the same)."""
        if n:
            self._values[name][labels] += n

    def set(self, name: str, labels: tuple, value: int) -> None:
        """Set name{labels} to a total counted elsewhere (another process's counter, reported whole)."""
        self._values[name][labels] = int(value)

    def get(self, name: str, labels: tuple = ()) -> int:
        """Current value of name{labels} (0 if never incremented)."""
        return self._values.get(name, {}).get(labels, 0)

    def series(self, name: str) -> dict[tuple, int]:
        """All label tuples and values of one counter."""
        return dict(self._values.get(name, {}))

    def snapshot(self) -> dict[str, dict[tuple, int]]:
        """A copy of every counter."""
        return {k: dict(v) for k, v in self._values.items()}

    def merge(self, other: "Counters") -> None:
        """Add another registry's values into this one."""
        for name, series in other._values.items():
            for labels, value in series.items():
                self._values[name][labels] += value

    def prometheus(self) -> str:
        """The counters in Prometheus text exposition format (exporter words printed as addresses)."""
        lines = []
        for name in sorted(self._values):
            lines.append(f"# TYPE {name} counter")
            names = _label_names(name)
            for labels, value in sorted(self._values[name].items(), key=lambda kv: repr(kv[0])):
                lab = ",".join(f'{names[i] if i < len(names) else f"l{i}"}="{_label_value(v)}"'
                               for i, v in enumerate(labels))
                lines.append(f"{name}{{{lab}}} {value}" if lab else f"{name} {value}")
        return "\n".join(lines) + "\n"


def _label_names(metric: str) -> tuple[str, ...]:
    if metric == "brokerwatch_decoder_errors_total":
        return ("decoder", "reason")
    if metric == "brokerwatch_decoder_records_total":
        return ("decoder",)
    if "_sequence_" in metric or metric.endswith("_datagrams_total"):
        return ("exporter",)
    return ()


def _label_value(v) -> str:
    if isinstance(v, tuple) and len(v) == 2 and all(isinstance(x, int) for x in v):
        from analytics.schema import words_to_ip

        return words_to_ip(*v)
    return str(v).replace("\\", "\\\\").replace('"', '\\"')


class RateLimitedLog:
    """Logs at most ``per_second`` lines a second per key, then a summary of how many were suppressed."""

    def __init__(self, per_second: float = 1.0, logger: logging.Logger = log) -> None:
        self._interval = 1.0 / per_second
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = defaultdict(int)
        self._log = logger

    def warning(self, key: str, msg: str, *args) -> None:
        """Log msg under key unless one was logged for key within the interval."""
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self._interval:
            self._suppressed[key] += 1
            return
        self._last[key] = now
        dropped = self._suppressed.pop(key, 0)
        if dropped:
            msg += " (%d similar suppressed)"
            args = (*args, dropped)
        self._log.warning(msg, *args)


async def serve_metrics(counters: Counters, host: str, port: int):
    """A minimal HTTP endpoint answering every GET with the counters in Prometheus text format."""
    import asyncio

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            if not request.startswith(b"GET "):
                body, status = b"only GET\n", b"405 Method Not Allowed"
            else:
                body, status = counters.prometheus().encode(), b"200 OK"
            writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Type: text/plain; version=0.0.4\r\n"
                         b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
            await writer.drain()
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            counters.inc("brokerwatch_metrics_bad_requests_total")
        finally:
            writer.close()

    return await asyncio.start_server(handle, host, port, reuse_address=True)
