"""Live syslog: util-linux logger sends over UDP, TCP (LF) and TCP (octet counting) to the listener on loopback;
the records must equal what ``brokerwatch decode`` makes of the same lines in a file (but for observer.ip, the
sender). Also TLS (RFC 5425) with a throw-away certificate, and a stop that delivers what was framed."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import pytest

from analytics.schema import FlowBatch
from collector.ecs import flow_records
from collector.metrics import Counters
from collector.syslog.listener import start_syslog_listeners
from tests.conftest import FIXTURES, require_tool

pytestmark = pytest.mark.live

# Messages whose time is in the body (PAN-OS columns, FortiOS eventtime), so the file and the wire agree on it,
# sent with the tag the device would use.
MESSAGES = [
    ("PA-3220", (FIXTURES / "syslog" / "panos.log").read_text().splitlines()[2].split(" ", 4)[4]),
    ("PA-3220", (FIXTURES / "syslog" / "panos.log").read_text().splitlines()[3].split(" ", 4)[4]),
    ("FGT60F", (FIXTURES / "syslog" / "fortigate.log").read_text().splitlines()[0][len("<189>"):]),
    ("FGT60F", (FIXTURES / "syslog" / "fortigate.log").read_text().splitlines()[1][len("<189>"):]),
]
DEADLINE_S = 20.0  # generous upper bound for the messages to arrive; the test does not measure time


def _decode_file(path: Path) -> list[dict]:
    out = subprocess.run([sys.executable, "-m", "collector.cli", "decode", str(path)], capture_output=True,
                         text=True, check=True, timeout=60)
    return [json.loads(line) for line in out.stdout.splitlines()]


def _without_observer(rec: dict) -> dict:
    rec = json.loads(json.dumps(rec))
    del rec["observer"]["ip"]
    return rec


async def _collect(batches: list[FlowBatch], n: int) -> list[dict]:
    loop = asyncio.get_running_loop()
    end = loop.time() + DEADLINE_S
    while sum(len(b) for b in batches) < n and loop.time() < end:
        await asyncio.sleep(0.02)
    return [r for b in batches for r in flow_records(b)]


@pytest.mark.parametrize("mode", [["--udp"], ["--tcp"], ["--tcp", "--octet-count"]],
                         ids=["udp", "tcp-lf", "tcp-octet-count"])
def test_logger_to_listener_matches_decode(tmp_path, mode):
    logger = require_tool("logger")
    path = tmp_path / "lines.log"
    path.write_text("".join(body + "\n" for _, body in MESSAGES))
    expected = [_without_observer(r) for r in _decode_file(path)]
    assert len(expected) == len(MESSAGES)

    async def run() -> tuple[list[dict], Counters]:
        batches: list[FlowBatch] = []
        counters = Counters()
        closers = await start_syslog_listeners("127.0.0.1", 0, 0, batches.append, counters)
        port = closers[0].port if mode == ["--udp"] else closers[1].port
        try:
            for tag, body in MESSAGES:
                proc = await asyncio.create_subprocess_exec(
                    logger, "--server", "127.0.0.1", "--port", str(port), *mode, "--size", "8192", "-t", tag, body)
                assert await proc.wait() == 0
            return await _collect(batches, len(MESSAGES)), counters
        finally:
            for c in closers:
                c.close()

    got, counters = asyncio.run(run())
    assert [r["observer"]["ip"] for r in got] == ["127.0.0.1"] * len(MESSAGES)
    assert [_without_observer(r) for r in got] == expected
    assert [r["network"].get("protocol") for r in got] == ["amqp", "nats", "mqtt", "amqp"]
    transport = "udp" if mode == ["--udp"] else "tcp"
    assert counters.get("brokerwatch_syslog_messages_total", (transport,)) == len(MESSAGES)


def test_tls_listener_and_close_delivers_pending(tmp_path):
    openssl = require_tool("openssl")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=localhost"], check=True, capture_output=True, timeout=60)
    line = (FIXTURES / "syslog" / "cisco_asa.log").read_text().splitlines()[9].encode()  # a 5424 teardown

    async def run():
        batches: list[FlowBatch] = []
        closers = await start_syslog_listeners("127.0.0.1", None, 0, batches.append, Counters(),
                                               tls_cert=str(cert), tls_key=str(key))
        ctx = ssl.create_default_context(cafile=str(cert))
        reader, writer = await asyncio.open_connection("127.0.0.1", closers[0].port, ssl=ctx,
                                                       server_hostname="localhost")
        # RFC 5425 octet counting, then an unterminated LF line in the same TLS record: the second is delivered
        # when the server closes.
        writer.write(str(len(line)).encode() + b" " + line + line)
        await writer.drain()
        first = await _collect(batches, 1)
        assert len(first) == 1
        for c in closers:
            c.close()
        writer.close()
        return [r for b in batches for r in flow_records(b)]

    got = asyncio.run(run())
    assert len(got) == 2
    assert {(r["source"]["ip"], r["destination"]["port"], r["network"]["bytes"]) for r in got} == {
        ("10.1.1.70", 4222, 77)}


def test_udp_datagrams_become_batches_without_loss():
    line = (FIXTURES / "syslog" / "iptables.log").read_text().splitlines()[1].encode()

    async def run():
        batches: list[FlowBatch] = []
        counters = Counters()
        closers = await start_syslog_listeners("127.0.0.1", 0, None, batches.append, counters)
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for _ in range(500):
            s.sendto(line, ("127.0.0.1", closers[0].port))
        got = await _collect(batches, 500)
        for c in closers:
            c.close()
        s.close()
        return got, batches, counters

    got, batches, counters = asyncio.run(run())
    assert len(got) == 500
    assert {r["destination"]["port"] for r in got} == {1883}
    assert counters.get("brokerwatch_syslog_messages_total", ("udp",)) == 500
    assert sum(len(b) for b in batches) == 500


def test_udp_bursts_from_two_senders_are_parsed_per_sender():
    """Many datagrams (one line each, and some with several lines) from two loopback senders, read in bursts:
    the rows are what the parser makes of each sender's lines, with each sender as the exporter."""
    from analytics.schema import FlowBatchBuilder, ip_to_words
    from collector.syslog.parser import SyslogParser

    lines = [line.encode() for line in (FIXTURES / "syslog" / "pfsense.log").read_text().splitlines() if line]
    lines = lines * 200
    multi = b"\n".join(lines[:3]) + b"\n"

    async def run() -> tuple[list[FlowBatch], Counters]:
        batches: list[FlowBatch] = []
        counters = Counters()
        closers = await start_syslog_listeners("127.0.0.1", 0, None, batches.append, counters)
        port = closers[0].port
        senders = []
        for src in ("127.0.0.1", "127.0.0.2"):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((src, 0))
            senders.append(s)
        for i, line in enumerate(lines):
            senders[i % 2].sendto(line, ("127.0.0.1", port))
            if i % 50 == 0:
                await asyncio.sleep(0)  # let the reader run between bursts
        senders[0].sendto(multi, ("127.0.0.1", port))
        expected = len(lines) + 3
        await _collect(batches, expected)
        for c in closers:
            c.close()
        for s in senders:
            s.close()
        return batches, counters

    batches, counters = asyncio.run(run())
    rows = [r for b in batches for r in b.to_rows().tolist()]
    assert counters.get("brokerwatch_syslog_messages_total", ("udp",)) == len(lines) + 1
    assert len(rows) == len(lines) + 3
    # the same lines through a parser one at a time give the same rows, sender by sender
    for k, src in enumerate(("127.0.0.1", "127.0.0.2")):
        mine = lines[k::2] + (lines[:3] if k == 0 else [])
        parser = SyslogParser(Counters())
        parser.block = False
        b = FlowBatchBuilder(16)
        for line in mine:
            parser.feed_line(line, ip_to_words(src), 0, b)
        exp = sorted(tuple(r)[2:] for r in b.build().to_rows().tolist())  # without the times (receive times differ)
        got = sorted(tuple(r)[2:] for r in rows if (r[6], r[7]) == ip_to_words(src))
        assert got == exp


def test_a_start_still_open_when_the_listeners_close_is_a_record():
    """The service stops: a Built whose Teardown never came is handed on with the last batch."""
    line = (FIXTURES / "syslog" / "cisco_asa.log").read_text().splitlines()[10].encode()  # Built, never torn down

    async def run():
        batches: list[FlowBatch] = []
        counters = Counters()
        closers = await start_syslog_listeners("127.0.0.1", 0, 0, batches.append, counters)
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.sendto(line, ("127.0.0.1", closers[0].port))
        loop = asyncio.get_running_loop()
        end = loop.time() + DEADLINE_S
        while counters.get("brokerwatch_syslog_messages_total", ("udp",)) < 1 and loop.time() < end:
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.05)
        held = sum(len(b) for b in batches)
        closers[0].close()
        after_one = sum(len(b) for b in batches)
        closers[1].close()  # the last listener of the sink: the held start is a record now
        s.close()
        return held, after_one, [r for b in batches for r in flow_records(b)], counters

    held, after_one, got, counters = asyncio.run(run())
    assert held == after_one == 0
    assert [(r["source"]["ip"], r["destination"]["ip"], r["destination"]["port"]) for r in got] == [
        ("192.0.2.80", "10.2.0.11", 61614)]
    assert counters.get("brokerwatch_syslog_sessions_total", ("cisco_asa", "start_at_end_of_input")) == 1
