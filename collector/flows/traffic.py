"""Raw traffic into flow rows: the flow meter (collector/flows/meter.py) plus its L7 stage (collector/l7/evidence.py).

``TrafficMeter.feed(block, builder)`` meters a block of frames and appends the flows that expired as FLOW_DTYPE rows
(``event.dataset`` ``pcap``), client → server, each with its L7 evidence:

- the meter hands over the payload of the first ``MeterParams.l7_packets`` payload packets of each direction; they
  are appended to a per-flow, per-direction buffer of at most ``l7_bytes`` (a bounded reassembly: segments in
  arrival order, retransmissions not removed). Buffers live only while their flow is in the table, and at most
  ``MeterParams.max_flows`` of them exist;
- when the flow leaves, ``flow_evidence`` reads both buffers: ``app_proto`` and the topic (MQTT topic, or the
  AMQP/STOMP/NATS destination) go in the row's columns; the rest (TLS server name and ALPN, HTTP method/host/path,
  MQTT client id/keepalive/user name flag, SUBSCRIBE filters, the server's name from the passive-DNS map) go in
  the row's ECS extra fields (``FlowBatch.extra``: printed by ``decode``, not carried over transports);
- a client message (MQTT CONNECT, TLS ClientHello, HTTP request, ...) fixes the direction of a flow whose SYN was not
  seen;
- an MQTT session (its CONNECT seen by the meter's kernel, or its first segment recognised here) is followed: every
  payload segment of it goes through an ``MqttStream`` per direction (bounded), and each PUBLISH, either way,
  becomes a row of its own (``FLAG_MESSAGE``: start = end = the time of its first byte, bytes = its size, its
  topic), so a persistent session that takes a command every few minutes shows that period where its flow
  record is one long connection (``brokerwatch_meter_messages_total``);
- DNS answers (UDP source port 53) go into a bounded passive-DNS map (address → name) and, as endpoint ``dns_query``
  events, into ``dns_events`` for the endpoint analytics' map (``analytics/dnsmap.py``), which matches reputation
  domains and dynamic-DNS suffixes to flows by address.
"""

from __future__ import annotations

import numpy as np

from analytics.schema import (APP_PROTOCOL_ID, FLAG_MESSAGE, FLAG_NO_INTERFACES, FLAG_NO_PORTS, FLAG_ORIENTED,
                              FLAG_REVERSE, FlowBatchBuilder, dataset_id, words_to_ip)
from collector.flows.meter import (EXPIRY_REASONS, PARSE_REASONS, S_L7, TAKE_FOLLOWED, TAKE_FROM_CLIENT,
                                   TAKE_SLOT_SHIFT, TUNNELS, FlowMeter, MeterParams, flows_to_rows)
from collector.l7 import appproto
from collector.l7.evidence import Evidence, MqttStream, PassiveDns, dns_answers, flow_evidence
from collector.metrics import Counters, RateLimitedLog
from collector.pcap import FrameBlock

DATASET = "pcap"
#: Bytes of each direction of a flow kept for the L7 stage.
L7_BYTES = 4096
#: DNS answers kept for the caller between two ``take_dns_events`` calls (more are counted, not kept).
MAX_PENDING_MESSAGES = 65536


def _mqtt_header(b0: int) -> bool:
    """Whether b0 can start an MQTT control packet (type 1-15 with the flags its type allows): a cheap test before
    the full recognition, which TLS (0x16, 0x17) and text protocols fail here already."""
    kind, flags = b0 >> 4, b0 & 0x0F
    if kind == 3 or kind == 15:
        return kind == 3 or flags == 0
    if kind in (6, 8, 10):
        return flags == 2
    return kind != 0 and flags == 0


class TrafficMeter:
    """Frames in, flow rows out (with L7 evidence), passive DNS and per-message events on the side."""

    def __init__(self, counters: Counters | None = None, params: MeterParams = MeterParams(), server_ports=(),
                 l7_bytes: int = L7_BYTES):
        self.counters = counters if counters is not None else Counters()
        self.meter = FlowMeter(params, server_ports)
        self.l7_bytes = l7_bytes
        self.buffers: dict[int, list[bytearray]] = {}
        self.pdns = PassiveDns()
        self.dns_events: list[tuple[int, str, tuple[int, int], tuple[int, int]]] = []  # ts, name, addr, client
        self.streams: dict[tuple[int, int], MqttStream] = {}  # (flow sequence, side) -> MQTT walker
        self._dataset = dataset_id(DATASET)
        self._log = RateLimitedLog()
        self._counted = np.zeros(len(PARSE_REASONS), np.int64)
        self._tunnels = np.zeros(len(TUNNELS), np.int64)

    def feed(self, block: FrameBlock, builder: FlowBatchBuilder) -> int:
        """Meter a block of frames; returns the rows appended (flows that expired during the block)."""
        pk = self.meter.parse(block.buf, block.offs, block.caplens, block.linktypes, block.ts_ns)
        done, take, take_seq = self.meter.meter(pk, block.buf)
        marked = np.flatnonzero(take)
        n = 0
        if len(marked):
            n += self._collect(block, pk, take, take_seq, marked, builder)
        self._count()
        return n + sum(self._emit(flows, builder) for flows in done)

    def expire(self, now_ns: int, builder: FlowBatchBuilder) -> int:
        """Rows for the flows due at now_ns (a clock tick of a live capture)."""
        return self._emit(self.meter.expire(now_ns), builder)

    def finish(self, builder: FlowBatchBuilder) -> int:
        """The input ended: every flow still in the table becomes a row."""
        n = self._emit(self.meter.flush(), builder)
        self.buffers.clear()
        self.streams.clear()
        return n

    def _count(self) -> None:
        c = self.counters
        for i, reason in enumerate(PARSE_REASONS):
            new = int(self.meter.parse_counts[i] - self._counted[i])
            if i and new:
                c.inc("brokerwatch_meter_packets_skipped_total", (reason,), new)
            elif not i:
                c.inc("brokerwatch_meter_packets_total", (), new)
        for i, kind in enumerate(TUNNELS):
            new = int(self.meter.tunnel_counts[i] - self._tunnels[i])
            if i and new:
                c.inc("brokerwatch_meter_tunnel_packets_total", (kind,), new)
        self._counted[:] = self.meter.parse_counts
        self._tunnels[:] = self.meter.tunnel_counts

    def _collect(self, block: FrameBlock, pk: np.ndarray, take: np.ndarray, take_seq: np.ndarray,
                 marked: np.ndarray, builder: FlowBatchBuilder) -> int:
        """Append the marked packets' payloads to their flows' buffers, walk followed MQTT sessions (each PUBLISH a
        row of its own, returned as the count of rows added), read DNS answers."""
        buf = block.buf
        limit = self.l7_bytes
        table = self.meter.table
        t = take[marked]
        slots = t >> TAKE_SLOT_SHIFT
        seqs = take_seq[marked]
        # what the kernel knew of each packet's flow when it marked it (the flow may have left the table since)
        live = (table["seq"][slots] == seqs).tolist()
        follow = ((t & TAKE_FOLLOWED) != 0).tolist()
        from_client = ((t & TAKE_FROM_CLIENT) != 0).tolist()
        tcp = (pk["proto"][marked] == 6).tolist()
        dns = ((pk["proto"][marked] == 17) & (pk["sport"][marked] == 53)).tolist()
        messages: list[tuple[int, int, bool, object]] = []  # (time, packet, from the client, Message)
        followed: set[int] = set()  # flows recognised as MQTT in this block
        for k, (i, tk, seq, slot, off, ln, ts) in enumerate(zip(
                marked.tolist(), t.tolist(), seqs.tolist(), slots.tolist(), pk["pay_off"][marked].tolist(),
                pk["pay_len"][marked].tolist(), pk["ts_ns"][marked].tolist())):
            side = (tk & 3) - 1
            if dns[k]:
                self._dns(ts, buf[off:off + ln].tobytes(), (int(pk["dst_hi"][i]), int(pk["dst_lo"][i])))
                continue
            bufs = self.buffers.get(seq)
            if bufs is None:
                bufs = self.buffers[seq] = [bytearray(), bytearray()]
            held = len(bufs[side])
            on = follow[k] or seq in followed
            if held >= limit and not on:
                continue
            payload = buf[off:off + ln].tobytes()
            if held < limit:
                bufs[side] += payload[:limit - held]
            if not tcp[k]:
                continue
            if not on and not held and live[k] and _mqtt_header(payload[0]) and \
                    appproto.inspect(payload)[0] == APP_PROTOCOL_ID["mqtt"]:
                self.meter.follow(slot, seq)  # an MQTT session picked up without its CONNECT
                followed.add(seq)
                on = True
            if on:
                stream = self.streams.get((seq, side))
                if stream is None:
                    stream = self.streams[(seq, side)] = MqttStream()
                    other = self.streams.get((seq, 1 - side))
                    if other is not None:
                        stream.level = other.level
                found: list = []
                stream.feed(payload, ts, found, from_client[k])
                messages += [(mt, i, from_client[k], m) for mt, m in found]
        return self._message_rows(messages, pk, builder) if messages else 0

    def _message_rows(self, messages: list, pk: np.ndarray, builder: FlowBatchBuilder) -> int:
        """Each PUBLISH as a row of its own (FLAG_MESSAGE), client → server like its session's flow record."""
        rows = builder.reserve(len(messages))
        for r, (ts, i, from_client, m) in zip(rows, messages):
            p = pk[i]
            r["start_ns"] = r["end_ns"] = ts
            if from_client:
                r["src_hi"], r["src_lo"], r["dst_hi"], r["dst_lo"] = p["src_hi"], p["src_lo"], p["dst_hi"], p["dst_lo"]
                r["src_port"], r["dst_port"] = p["sport"], p["dport"]
            else:
                r["src_hi"], r["src_lo"], r["dst_hi"], r["dst_lo"] = p["dst_hi"], p["dst_lo"], p["src_hi"], p["src_lo"]
                r["src_port"], r["dst_port"] = p["dport"], p["sport"]
            r["bytes"] = m.length
            r["packets"] = 1
            r["sampling_rate"] = 1
            r["proto"] = 6
            r["tcp_flags"] = 0x18  # PSH|ACK: what the segments carrying a message have (no FIN/RST: not an end)
            r["app_proto"] = APP_PROTOCOL_ID["mqtt"]
            r["topic_id"] = builder.intern(m.topic)
            r["dataset"] = self._dataset
            r["flags"] = FLAG_MESSAGE | FLAG_NO_INTERFACES
        self.counters.inc("brokerwatch_meter_messages_total", (), len(messages))
        return len(messages)

    def _dns(self, ts: int, payload: bytes, client: tuple[int, int]) -> None:
        try:
            answers = dns_answers(payload)
        except (IndexError, ValueError):  # defensive: dns_answers checks lengths, a hostile message must not stop us
            answers = []
            self.counters.inc("brokerwatch_meter_l7_errors_total", ("dns",))
        for name, raw in answers:
            if len(raw) == 4:
                addr = (0, 0xFFFF00000000 | int.from_bytes(raw, "big"))
            else:
                v = int.from_bytes(raw, "big")
                addr = (v >> 64, v & 0xFFFFFFFFFFFFFFFF)
            self.pdns.add(addr, name)
            if len(self.dns_events) < MAX_PENDING_MESSAGES:
                self.dns_events.append((ts, name, addr, client))
        if answers:
            self.counters.inc("brokerwatch_meter_dns_answers_total", (), len(answers))

    def _emit(self, flows: np.ndarray, builder: FlowBatchBuilder) -> int:
        n = len(flows)
        if not n:
            return 0
        reasons = np.bincount(flows["reason"], minlength=len(EXPIRY_REASONS))
        for r, k in enumerate(reasons.tolist()):
            if k:
                self.counters.inc("brokerwatch_meter_flows_total", (EXPIRY_REASONS[r],), k)
        evidence: dict[int, Evidence] = {}
        seqs = flows["seq"].tolist()
        clients = flows["client"].tolist()
        for i, seq in enumerate(seqs):
            self.streams.pop((seq, 0), None)
            self.streams.pop((seq, 1), None)
            bufs = self.buffers.pop(seq, None)
            if bufs is None:
                continue
            c = clients[i]
            try:
                ev = flow_evidence(bytes(bufs[c]), bytes(bufs[1 - c]))
            except (IndexError, ValueError, UnicodeError) as exc:  # never raise into the service: count it
                self.counters.inc("brokerwatch_meter_l7_errors_total", (type(exc).__name__,))
                self._log.warning("l7", "flow meter: L7 evidence of a flow not read: %r", exc)
                continue
            if ev.client_side == 1 and flows["strength"][i] < S_L7 + 1:  # a client message beats ports, not a SYN
                flows["client"][i] = 1 - c
                ev = flow_evidence(bytes(bufs[1 - c]), bytes(bufs[c]))
                flows["strength"][i] = S_L7
            evidence[i] = ev
        mark = len(builder)
        rows = builder.reserve(n)
        col = flows_to_rows(flows, rows, self._dataset)
        no_ports = (flows["proto"] != 6) & (flows["proto"] != 17)
        # both directions in the row (rev_*), oriented by the meter itself when a SYN or a client message said so
        rows["flags"] = (FLAG_NO_INTERFACES | FLAG_REVERSE
                         | np.where(no_ports & (flows["proto"] != 1) & (flows["proto"] != 58), FLAG_NO_PORTS, 0)
                         | np.where(flows["strength"] >= S_L7, FLAG_ORIENTED, 0)).astype(np.uint8)
        for i, ev in evidence.items():
            r = rows[i]
            r["app_proto"] = ev.app_proto
            if ev.topic:
                r["topic_id"] = builder.intern(ev.topic)
            extra = self._extra(ev, (int(col["dst_hi"][i]), int(col["dst_lo"][i])))
            if extra:
                builder.annotate(mark + i, extra)
        for i in range(n):
            if i not in evidence:
                name = self.pdns.name((int(col["dst_hi"][i]), int(col["dst_lo"][i]))) if len(self.pdns) else ""
                if name:
                    builder.annotate(mark + i, {"destination": {"domain": name}})
        return n

    def _extra(self, ev: Evidence, server: tuple[int, int]) -> dict:
        out: dict = {}
        domain = ev.sni or ev.http_host.split(":")[0] or self.pdns.name(server)
        if domain:
            out["destination"] = {"domain": domain}
        if ev.sni or ev.alpn:
            tls: dict = {}
            if ev.sni:
                tls["client"] = {"server_name": ev.sni}
            if ev.alpn:
                tls["next_protocol"] = ev.alpn[0]
                tls.setdefault("client", {})["alpn"] = ev.alpn
            out["tls"] = tls
        if ev.http_method:
            out["http"] = {"request": {"method": ev.http_method}}
            out["url"] = {"path": ev.http_path}
            if len(ev.http_paths) > 1:
                out["http"]["request"]["paths"] = ev.http_paths[:32]
            if ev.websocket_protocol:
                out["http"]["request"]["websocket_protocol"] = ev.websocket_protocol
        if ev.client_id or ev.keepalive >= 0 or ev.subscriptions or ev.unsubscriptions or ev.messages:
            mqtt: dict = {}
            if ev.keepalive >= 0:
                mqtt.update(client_id=ev.client_id, keepalive=ev.keepalive, username_present=ev.username,
                            protocol_level=ev.mqtt_level)
            if ev.subscriptions:
                mqtt["subscriptions"] = ev.subscriptions[:32]
            if ev.unsubscriptions:
                mqtt["unsubscriptions"] = ev.unsubscriptions[:32]
            if ev.messages:
                mqtt["publishes"] = len(ev.messages)
                mqtt["publish_topics"] = list(dict.fromkeys(m.topic for m in ev.messages))[:32]
            out["mqtt"] = mqtt
        if ev.destinations:
            out["brokerwatch"] = {"destinations": ev.destinations[:32]}
        return out

    def take_dns_events(self):
        """The DNS answers seen since the last call as endpoint ``dns_query`` events (an EndpointBatch), or None."""
        if not self.dns_events:
            return None
        from analytics.endpoint import ACTION_ID, EndpointBatchBuilder

        b = EndpointBatchBuilder()
        for ts, name, addr, client in self.dns_events:
            b.add(ts, ACTION_ID["dns_query"], 0, DATASET, host=words_to_ip(*client), src_ip=words_to_ip(*client),
                  dst_ip=words_to_ip(*addr), domain=name)
        self.dns_events.clear()
        return b.build()
