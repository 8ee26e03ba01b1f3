"""Admission on every listener kind (senders outside the allowlist refused before decoding, counted by listener and
sender), mutual TLS on the syslog TLS listener, and the per-exporter sampling override."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
import subprocess

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from analytics.config import Config
from analytics.schema import FlowBatch, FlowBatchBuilder, ip_to_words
from collector.admission import Admission
from collector.ecs import flow_records
from collector.enrich.devices import SamplingOverride
from collector.flows.receivers import IpfixTcpServer, make_receiver, udp_socket
from collector.metrics import Counters
from collector.pipeline import FlowPipeline
from collector.syslog.listener import start_syslog_listeners
from tests.collector.flows.test_netflow_v5 import REC, v5_datagram
from tests.conftest import FIXTURES, require_tool

LINE = (FIXTURES / "syslog" / "iptables.log").read_text().splitlines()[1].encode()


def exporters(value: dict):
    return Config.from_mapping({"Exporters": value}).Exporters


async def closed_by_peer(reader) -> bool:
    """Whether the collector closed (or reset) the connection without sending anything."""
    try:
        return await asyncio.wait_for(reader.read(), 10) == b""
    except ConnectionResetError:
        return True


def words(addresses):
    w = np.array([ip_to_words(a) for a in addresses], np.uint64)
    return np.ascontiguousarray(w[:, 0]), np.ascontiguousarray(w[:, 1])


def test_rules_longest_prefix_and_admit_flags():
    cfg = exporters({"admission": {"flows": ["10.0.0.0/8"], "syslog": ["192.0.2.0/24"]},
                     "devices": {"10.9.0.0/16": {"admit": False}, "10.9.9.9": {"admit": True},
                                 "198.51.100.7": {"admit": True}}})
    counters = Counters()
    adm = Admission(cfg, counters)
    assert not adm.open("flows") and not adm.open("syslog") and not adm.open("hostlogs")
    senders = ["10.1.2.3", "10.9.1.1", "10.9.9.9", "198.51.100.7", "203.0.113.1", "203.0.113.1"]
    assert adm.mask("flows", *words(senders)).tolist() == [True, False, True, True, False, False]
    # hostlogs has no list: everyone but the refused exporter is admitted
    assert adm.mask("hostlogs", *words(senders)).tolist() == [True, False, True, True, True, True]
    assert adm.admits("syslog", "192.0.2.5") and not adm.admits("syslog", "10.1.2.3", n=3)
    assert counters.series("brokerwatch_admission_refused_total") == {
        ("flows", "10.9.1.1"): 1, ("flows", "203.0.113.1"): 2, ("hostlogs", "10.9.1.1"): 1,
        ("syslog", "10.1.2.3"): 3}
    assert Admission(exporters({})).open("flows")  # the default admits every sender
    assert Admission(exporters({})).mask("flows", *words(["203.0.113.1"])) is None


def test_flow_udp_refuses_outside_the_allowlist_before_decoding():
    counters = Counters()
    batches: list[FlowBatch] = []
    adm = Admission(exporters({"admission": {"flows": ["127.0.0.2/32"]}}), counters)
    pipeline = FlowPipeline(batches.append, counters, admission=adm)
    sock = udp_socket("127.0.0.1", 0)
    receiver = make_receiver(sock, pipeline)
    admitted, refused = socket.socket(socket.AF_INET, socket.SOCK_DGRAM), socket.socket(socket.AF_INET,
                                                                                          socket.SOCK_DGRAM)
    admitted.bind(("127.0.0.2", 0))
    refused.bind(("127.0.0.1", 0))
    for i in range(100):
        admitted.sendto(v5_datagram([dict(REC, sport=1000 + i)], seq=i), sock.getsockname())
        refused.sendto(v5_datagram([dict(REC, sport=1000 + i)], seq=i), sock.getsockname())
    refused.sendto(b"\x00\x05junk", sock.getsockname())  # refused before it could be rejected by a decoder
    receiver.drain()
    receiver.flush()
    pipeline.flush()
    batch = FlowBatch.concat(batches)
    assert len(batch) == 100
    assert {r["observer"]["ip"] for r in flow_records(batch)} == {"127.0.0.2"}
    assert counters.series("brokerwatch_admission_refused_total") == {("flows", "127.0.0.1"): 101}
    assert pipeline.decoders.rejected() == {}
    receiver.close()
    admitted.close()
    refused.close()


def test_ipfix_tcp_refuses_a_sender_outside_the_allowlist():
    async def run():
        counters = Counters()
        adm = Admission(exporters({"admission": {"flows": ["192.0.2.0/24"]}}), counters)
        pipeline = FlowPipeline(lambda b: None, counters, admission=adm)
        server = IpfixTcpServer(pipeline)
        await server.start("127.0.0.1", 0)
        port = server.server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"\x00\x0a\x00\x10" + b"\x00" * 12)
        assert await closed_by_peer(reader)
        writer.close()
        await server.close()
        return counters

    counters = asyncio.run(run())
    assert counters.series("brokerwatch_admission_refused_total") == {("flows", "127.0.0.1"): 1}
    assert counters.get("brokerwatch_ipfix_tcp_connections_total") == 0


def test_syslog_udp_and_tcp_refuse_outside_the_allowlist():
    async def run():
        counters = Counters()
        batches: list[FlowBatch] = []
        adm = Admission(exporters({"admission": {"syslog": ["127.0.0.2/32"]}}), counters)
        udp, tcp = await start_syslog_listeners("127.0.0.1", 0, 0, batches.append, counters, admission=adm)
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        ok = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        ok.bind(("127.0.0.2", 0))
        for _ in range(5):
            s.sendto(LINE, ("127.0.0.1", udp.port))
            ok.sendto(LINE, ("127.0.0.1", udp.port))
        reader, writer = await asyncio.open_connection("127.0.0.1", tcp.port)
        writer.write(LINE + b"\n")
        assert await closed_by_peer(reader)
        for _ in range(100):
            if counters.get("brokerwatch_admission_refused_total", ("syslog", "127.0.0.1")) == 6 and batches:
                break
            await asyncio.sleep(0.05)
        udp.close()
        tcp.close()
        s.close()
        ok.close()
        writer.close()
        return counters, batches

    counters, batches = asyncio.run(run())
    recs = [r for b in batches for r in flow_records(b)]
    assert len(recs) == 5 and {r["observer"]["ip"] for r in recs} == {"127.0.0.2"}
    assert counters.series("brokerwatch_admission_refused_total") == {("syslog", "127.0.0.1"): 6}


def _pki(tmp_path):
    """A CA with a server and a client certificate, and another CA with a client certificate (openssl)."""
    openssl = require_tool("openssl")

    def run(*args):
        subprocess.run([openssl, *args], check=True, capture_output=True, timeout=60)

    out = {}
    for ca in ("ca", "other"):
        run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(tmp_path / f"{ca}.key"), "-out",
            str(tmp_path / f"{ca}.pem"), "-days", "1", "-subj", f"/CN={ca}")
    for name, ca in (("server", "ca"), ("client", "ca"), ("stranger", "other")):
        key, csr, crt = (tmp_path / f"{name}.{x}" for x in ("key", "csr", "pem"))
        run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr), "-subj",
            f"/CN={'localhost' if name == 'server' else name}")
        ext = tmp_path / "ext.cnf"
        ext.write_text("subjectAltName=DNS:localhost\n")
        run("x509", "-req", "-in", str(csr), "-CA", str(tmp_path / f"{ca}.pem"), "-CAkey", str(tmp_path / f"{ca}.key"),
            "-CAcreateserial", "-out", str(crt), "-days", "1", "-extfile", str(ext))
        out[name] = (str(crt), str(key))
    out["ca"] = str(tmp_path / "ca.pem")
    return out


def test_mutual_tls_refuses_clients_without_a_certificate_from_the_ca(tmp_path):
    pki = _pki(tmp_path)

    async def send(port, client):
        ctx = ssl.create_default_context(cafile=pki["ca"])
        if client is not None:
            ctx.load_cert_chain(*pki[client])
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname="localhost")
            writer.write(LINE + b"\n")
            await writer.drain()
            await asyncio.wait_for(reader.read(), 2)  # TLS 1.3: the refusal arrives after the client's handshake
        except (ssl.SSLError, ConnectionError, asyncio.TimeoutError, OSError):
            pass
        else:
            writer.close()

    async def run():
        counters = Counters()
        batches: list[FlowBatch] = []
        (tls,) = await start_syslog_listeners("127.0.0.1", None, 0, batches.append, counters,
                                              tls_cert=pki["server"][0], tls_key=pki["server"][1],
                                              tls_client_ca=pki["ca"])
        await send(tls.port, None)
        await send(tls.port, "stranger")
        await send(tls.port, "client")
        for _ in range(100):
            if batches and sum(counters.series("brokerwatch_tls_refused_total").values()) >= 2:
                break
            await asyncio.sleep(0.05)
        tls.close()
        return counters, batches

    counters, batches = asyncio.run(run())
    refused = counters.series("brokerwatch_tls_refused_total")
    assert sum(refused.values()) == 2, refused
    assert all(k[0] == "syslog" for k in refused)
    recs = [r for b in batches for r in flow_records(b)]
    assert len(recs) == 1  # only the client whose certificate the CA signed got through


def test_sampling_override_rescales_bytes_and_packets():
    cfg = exporters({"devices": {"127.0.0.1": {"sampling_rate": 100}, "127.0.0.3": {"name": "no-override"}}})
    override = SamplingOverride(cfg)
    assert override
    counters = Counters()
    builder = FlowBatchBuilder(64)
    from collector.flows.decoders import FlowDecoders

    decoders = FlowDecoders(counters)
    for exporter, stated in (("127.0.0.1", 0), ("127.0.0.1", 10), ("127.0.0.3", 10)):
        decoders.decode(v5_datagram([REC], sampling=(1 << 14) | stated if stated else 0), ip_to_words(exporter), 0,
                        builder)
    assert builder.rows()["bytes"].tolist() == [900, 9000, 9000]  # as decoded: scaled by the stated rate
    assert override.apply(builder.rows()) == 2
    rows = builder.rows()
    assert rows["bytes"].tolist() == [90000, 90000, 9000]
    assert rows["packets"].tolist() == [1000, 1000, 100]
    assert rows["sampling_rate"].tolist() == [100, 100, 10]


def test_sampling_override_in_the_pipeline():
    batches: list[FlowBatch] = []
    cfg = exporters({"devices": {"127.0.0.0/8": {"sampling_rate": 512}}})
    pipeline = FlowPipeline(batches.append, sampling=SamplingOverride(cfg))
    pipeline.on_datagram(v5_datagram([REC]), "127.0.0.1")
    pipeline.on_datagram(v5_datagram([REC]), "192.0.2.1")
    pipeline.flush()
    batch = FlowBatch.concat(batches)
    assert batch.columns["bytes"].tolist() == [900 * 512, 900]
    assert batch.columns["sampling_rate"].tolist() == [512, 1]


def test_hostlog_listener_refuses_outside_the_allowlist_and_requires_client_certificates(tmp_path):
    from collector.hostlogs.listener import HostLogListener, tls_context

    pki = _pki(tmp_path)
    line = b'{"@timestamp":"2026-01-15T00:00:00Z","host":{"name":"h1"},"message":"x"}\n'

    async def run():
        counters = Counters()
        got = []
        plain = await HostLogListener(got.append, counters).start(
            "127.0.0.1", 0, admission=Admission(exporters({"admission": {"hostlogs": ["192.0.2.0/24"]}}), counters))
        reader, writer = await asyncio.open_connection("127.0.0.1", plain.port)
        writer.write(line)
        assert await closed_by_peer(reader)
        writer.close()
        plain.close()
        mtls = await HostLogListener(got.append, counters).start(
            "127.0.0.1", 0, tls_context(*pki["server"], client_ca=pki["ca"]))
        for client in (None, "stranger", "client"):
            ctx = ssl.create_default_context(cafile=pki["ca"])
            if client is not None:
                ctx.load_cert_chain(*pki[client])
            try:
                r, w = await asyncio.open_connection("127.0.0.1", mtls.port, ssl=ctx, server_hostname="localhost")
                w.write(line)
                await w.drain()
                await asyncio.wait_for(r.read(1), 1)
            except (ssl.SSLError, ConnectionError, asyncio.TimeoutError, OSError):
                pass
        for _ in range(100):
            if sum(counters.series("brokerwatch_tls_refused_total").values()) >= 2 and mtls.connections:
                break
            await asyncio.sleep(0.05)
        accepted = len(mtls.connections)
        mtls.close()
        return counters, accepted

    counters, accepted = asyncio.run(run())
    assert counters.series("brokerwatch_admission_refused_total") == {("hostlogs", "127.0.0.1"): 1}
    refused = counters.series("brokerwatch_tls_refused_total")
    assert sum(refused.values()) == 2 and all(k[0] == "hostlogs" for k in refused), refused
    assert accepted == 1  # the client whose certificate the CA signed
    assert counters.get("brokerwatch_hostlogs_connections_total", ("tls",)) == 1


_v4 = st.integers(0, 2**32 - 1).map(lambda n: str(ipaddress.IPv4Address(n)))
_cidr = st.tuples(_v4, st.integers(8, 32)).map(lambda t: str(ipaddress.ip_network(f"{t[0]}/{t[1]}", strict=False)))


@settings(max_examples=60, deadline=None)
@given(allow=st.lists(_cidr, max_size=4), refuse=st.lists(_cidr, max_size=3), admit=st.lists(_cidr, max_size=3),
       senders=st.lists(_v4, min_size=1, max_size=30))
def test_mask_equals_a_plain_reading_of_the_rules(allow, refuse, admit, senders):
    """The vectorised decision equals the rules read one sender at a time with ipaddress: the longest-prefix device
    with an admit flag decides, else the kind's list, else everyone is admitted."""
    devices = {c: {"admit": False} for c in refuse}
    devices.update({c: {"admit": True} for c in admit})
    cfg = exporters({"admission": {"flows": allow} if allow else {}, "devices": devices})
    counters = Counters()
    got = Admission(cfg, counters).mask("flows", *words(senders))

    def plain(sender: str) -> bool:
        ip = ipaddress.ip_address(sender)
        holding = [d for d in cfg.devices if d.admit is not None and ip in ipaddress.ip_network(d.cidr)]
        if holding:
            return max(holding, key=lambda d: d.prefixlen).admit
        return not allow or any(ip in ipaddress.ip_network(c) for c in allow)

    want = [plain(s) for s in senders]
    assert (got.tolist() if got is not None else [True] * len(senders)) == want
    assert sum(counters.series("brokerwatch_admission_refused_total").values()) == want.count(False)


@settings(max_examples=200, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers(-5, 70000) | st.text(max_size=12) | _cidr,
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
                        st.sampled_from(["admission", "snmp", "devices", "flows", "syslog", "192.0.2.1", "10.0.0.0/8",
                                         "version", "community", "user", "auth", "priv", "protocol", "key", "name",
                                         "interfaces", "sampling_rate", "admit", "timeout", "ttl", 17]),
                        inner, max_size=4), max_leaves=12))
def test_any_exporters_value_is_a_config_or_a_config_error(value):
    from analytics.config import ConfigError

    try:
        Config.from_mapping({"Exporters": value})
    except ConfigError as exc:
        assert exc.problems and all("Exporters" in p for p in exc.problems)
