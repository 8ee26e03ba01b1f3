"""A real SNMP agent (Debian's snmpd, net-snmp) on loopback, with a v2c community and v3 users, for the SNMP tests."""

from __future__ import annotations

import os
import socket
import subprocess
import time

import pytest

from tests.conftest import require_tool

COMMUNITY = "bwtest"
V3_USERS = {  # user -> (auth protocol, auth key, priv protocol, priv key)
    "bwsha": ("SHA", "authpass123", "AES", "privpass123"),
    "bwmd5": ("MD5", "authpass456", "DES", "privpass456"),
}
SYS_NAME = "edge-rtr-2"
ALIAS_1 = "uplink to ISP-B"


def free_udp_port(host: str = "127.0.0.1") -> int:
    """A UDP port nobody listens on (yet)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((host, 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Agent:
    """snmpd in the foreground with its own config and persistent directory; stop() ends it."""

    def __init__(self, tmp_path, addresses=("127.0.0.1",)):
        snmpd = require_tool("snmpd")
        self.port = free_udp_port()
        self.addresses = tuple(addresses)
        persist = tmp_path / "snmp-persist"
        persist.mkdir(exist_ok=True)
        conf = tmp_path / "snmpd.conf"
        lines = [f"rocommunity {COMMUNITY} 127.0.0.0/8", f"sysName {SYS_NAME}",
                 "sysDescr Linux test agent (net-snmp), brokerwatch tests",
                 f'override .1.3.6.1.2.1.31.1.1.1.18.1 octet_str "{ALIAS_1}"']
        for user, (a, ak, p, pk) in V3_USERS.items():
            lines += [f'createUser {user} {a} "{ak}" {p} "{pk}"', f"rouser {user} priv"]
        conf.write_text("\n".join(lines) + "\n")
        endpoints = ",".join(f"udp:{a}:{self.port}" for a in self.addresses)
        # -C: only this config; -f: foreground; -Lf: log to a file (it is chatty about MIB files it cannot parse)
        self.proc = subprocess.Popen([snmpd, "-f", "-C", "-c", str(conf), "-Lf", str(tmp_path / "snmpd.log"),
                                      endpoints], env=dict(os.environ, SNMP_PERSISTENT_DIR=str(persist)),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._wait_ready(tmp_path)

    def _wait_ready(self, tmp_path) -> None:
        # the agent answers once it has bound: probe with a v2c get of sysName (the snmp client is not needed)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail("snmpd exited:\n" + (tmp_path / "snmpd.log").read_text()[-2000:])
            if probe(self.addresses[0], self.port):
                return
            time.sleep(0.1)
        self.stop()
        pytest.fail("snmpd did not answer within 30 s")

    def stop(self) -> None:
        """End the agent (it stops answering)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def probe(host: str, port: int) -> bool:
    """Whether an SNMPv2c agent answers a get of sysName.0 with our community (a hand-built BER request)."""
    oid = bytes([0x06, 0x08, 0x2B, 6, 1, 2, 1, 1, 5, 0])
    varbind = bytes([0x30, len(oid) + 2]) + oid + b"\x05\x00"
    vbl = bytes([0x30, len(varbind)]) + varbind
    pdu_body = b"\x02\x01\x01" + b"\x02\x01\x00" + b"\x02\x01\x00" + vbl
    pdu = bytes([0xA0, len(pdu_body)]) + pdu_body
    comm = COMMUNITY.encode()
    msg_body = b"\x02\x01\x01" + bytes([0x04, len(comm)]) + comm + pdu
    msg = bytes([0x30, len(msg_body)]) + msg_body
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(0.3)
    try:
        s.sendto(msg, (host, port))
        return SYS_NAME.encode() in s.recv(4096)
    except OSError:
        return False
    finally:
        s.close()


@pytest.fixture
def agent(tmp_path):
    """snmpd on 127.0.0.1 and 127.0.0.2 (one port), v2c and v3 users; ended after the test."""
    a = Agent(tmp_path, ("127.0.0.1", "127.0.0.2"))
    yield a
    a.stop()
