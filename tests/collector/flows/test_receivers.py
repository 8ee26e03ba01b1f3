"""UDP receivers on loopback: every datagram sent is decoded with its sender's address, v4 and v6, both receivers."""

from __future__ import annotations

import socket

import numpy as np
import pytest

from analytics.schema import FlowBatch, words_to_ip
from collector.flows.receivers import MmsgUdpReceiver, UdpReceiver, _recvmmsg, sockaddr_words, udp_socket
from collector.pipeline import FlowPipeline
from tests.collector.flows.test_netflow_v5 import REC, v5_datagram

RECEIVERS = [UdpReceiver] + ([MmsgUdpReceiver] if _recvmmsg is not None else [])


def _has_ipv6_loopback() -> bool:
    try:
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        s.bind(("::1", 0))
        s.close()
        return True
    except OSError:
        return False


@pytest.mark.parametrize("cls", RECEIVERS)
@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_receiver_decodes_everything_sent(cls, host):
    if host == "::1" and not _has_ipv6_loopback():
        pytest.skip("no IPv6 loopback on this machine")
    batches: list[FlowBatch] = []
    pipeline = FlowPipeline(batches.append)
    sock = udp_socket(host, 0)
    receiver = cls(sock, pipeline)
    sender = socket.socket(sock.family, socket.SOCK_DGRAM)
    sent = 0
    for i in range(1500):  # more than one buffer/slot set's worth
        sender.sendto(v5_datagram([dict(REC, sport=i % 60000)] * 3, seq=3 * i), sock.getsockname()[:2])
        sent += 3
        if i % 300 == 299:
            receiver.drain()
    sender.sendto(b"\x00\x05junk", sock.getsockname()[:2])  # rejected, counted
    receiver.drain()
    receiver.flush()
    pipeline.flush()
    batch = FlowBatch.concat(batches)
    assert len(batch) == sent
    assert {words_to_ip(h, lo) for h, lo in zip(batch.exporter_hi, batch.exporter_lo)} == {host}
    assert pipeline.decoders.rejected() == {"netflow.v5.short_header": 1}
    assert pipeline.datagrams == 1501
    receiver.close()


def test_sockaddr_words_reads_both_families():
    names = np.zeros((2, 28), np.uint8)
    names[0, :2] = np.frombuffer(np.uint16(socket.AF_INET).tobytes(), np.uint8)
    names[0, 4:8] = [192, 0, 2, 9]
    names[1, :2] = np.frombuffer(np.uint16(socket.AF_INET6).tobytes(), np.uint8)
    names[1, 8:24] = np.frombuffer(socket.inet_pton(socket.AF_INET6, "2001:db8::7"), np.uint8)
    hi, lo = sockaddr_words(names)
    assert [words_to_ip(h, lo_) for h, lo_ in zip(hi, lo)] == ["192.0.2.9", "2001:db8::7"]
