"""The in-process bus (the embedded default): a bounded queue of FlowBatches that drops and counts when full."""

from __future__ import annotations

import asyncio

from analytics.schema import FlowBatch
from collector.metrics import Counters


class InProcessBus:
    """Bounded hand-off from the receive side to the analytics task; a full queue never blocks the receiver."""

    def __init__(self, counters: Counters, maxsize: int = 256):
        self._queue: asyncio.Queue[FlowBatch | None] = asyncio.Queue(maxsize)
        self._counters = counters

    def publish(self, batch: FlowBatch) -> bool:
        """Enqueue a batch; False (and the rows counted as dropped) when the queue is full."""
        try:
            self._queue.put_nowait(batch)
        except asyncio.QueueFull:
            self._counters.inc("brokerwatch_bus_dropped_rows_total", ("flows",), len(batch))
            return False
        self._counters.inc("brokerwatch_bus_published_rows_total", ("flows",), len(batch))
        return True

    async def get(self) -> FlowBatch | None:
        """The next batch; None once ``close`` was called and the queue is drained."""
        return await self._queue.get()

    def get_nowait(self) -> FlowBatch | None:
        """The next batch if one is waiting, else raises asyncio.QueueEmpty."""
        return self._queue.get_nowait()

    async def close(self) -> None:
        """Mark the end of the stream (waits for room: the consumer is draining)."""
        await self._queue.put(None)
