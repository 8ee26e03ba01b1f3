"""Alert sinks: JSON lines on stdout and to a file (Kafka joins them when configured), registered by name."""

from __future__ import annotations

import sys
from typing import IO, Callable, Protocol

from analytics.alerts import Alert
from collector.ecs import dumps


class AlertSink(Protocol):
    """Something alerts are written to."""

    def write(self, alert: Alert) -> None: ...

    def close(self) -> None: ...


class JsonLinesSink:
    """One JSON object per alert line on a text stream; flushed per alert so dashboards tailing it see it."""

    def __init__(self, stream: IO[str], owned: bool = False):
        self._stream = stream
        self._owned = owned

    @classmethod
    def open(cls, path: str) -> "JsonLinesSink":
        """Append to the file at path ('-' means stdout)."""
        if path == "-":
            return cls(sys.stdout)
        return cls(open(path, "a", encoding="utf-8"), owned=True)

    def write(self, alert: Alert) -> None:
        self._stream.write(dumps(alert.to_dict()) + "\n")
        self._stream.flush()

    def write_lines(self, text: str) -> None:
        """Write already serialised alert lines and flush once (an alert storm is one write, not one per alert)."""
        self._stream.write(text)
        self._stream.flush()

    def close(self) -> None:
        if self._owned:
            self._stream.close()
        else:
            self._stream.flush()


class FanOut:
    """Writes every alert to several sinks."""

    def __init__(self, sinks: list[AlertSink]):
        self.sinks = sinks
        self.written = 0

    def write(self, alert: Alert) -> None:
        self.written += 1
        for s in self.sinks:
            s.write(alert)

    def write_many(self, alerts: list[Alert]) -> None:
        """Write a pass's alerts: each serialised once, every sink written and flushed once."""
        if not alerts:
            return
        text = "".join([dumps(a.to_dict()) + "\n" for a in alerts])
        self.written += len(alerts)
        for s in self.sinks:
            if hasattr(s, "write_lines"):
                s.write_lines(text)
            else:
                for a in alerts:
                    s.write(a)

    def close(self) -> None:
        for s in self.sinks:
            s.close()


#: Sinks by name, for the config and the command line (explicit: no registration by import side effect).
SINKS: dict[str, Callable[[str], AlertSink]] = {
    "stdout": lambda _arg: JsonLinesSink(sys.stdout),
    "jsonl": JsonLinesSink.open,
}
