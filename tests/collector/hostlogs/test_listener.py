"""The host-log TCP listener: lines split across reads, oversized and garbage lines counted, nothing raised."""

from __future__ import annotations

import asyncio

import orjson

from collector.hostlogs.decoder import MAX_RECORD_BYTES
from collector.hostlogs.listener import HostLogListener
from collector.metrics import Counters
from tests.collector.hostlogs.test_blocks import _event
from tests.collector.hostlogs.sysmon_events import winlogbeat


def test_split_oversized_and_garbage_lines_are_read_or_counted():
    good = orjson.dumps(winlogbeat(_event(3, 1)))
    batches = []
    counters = Counters()

    async def main():
        listener = await HostLogListener(batches.append, counters).start("127.0.0.1", 0)
        _, w = await asyncio.open_connection("127.0.0.1", listener.port)
        w.write(good[:100])
        await w.drain()
        await asyncio.sleep(0.05)  # the rest of the line in a later read
        w.write(good[100:] + b"\n")
        w.write(b"x" * (MAX_RECORD_BYTES + 10) + b"\n")  # oversized: discarded to its newline, counted once
        w.write(b"\x00\xff garbage\n{not json\n")
        w.write(good + b"\n")
        await w.drain()
        w.close()
        await w.wait_closed()
        for _ in range(200):
            if counters.get("brokerwatch_hostlogs_rejected_total", ("json",)):
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.1)
        listener.close()

    asyncio.run(main())
    assert sum(len(b) for b in batches) == 2
    assert counters.get("brokerwatch_hostlogs_rejected_total", ("too_large",)) == 1
    assert counters.get("brokerwatch_hostlogs_rejected_total", ("unknown_format",)) == 1
    assert counters.get("brokerwatch_hostlogs_rejected_total", ("json",)) == 1
