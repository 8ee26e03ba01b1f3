"""A generated day of raw traffic (a pcap) with the C2 families the flow meter must surface, and its labels.

Built with the packet helpers of ``fixtures/gen_traffic.py`` (scapy, virtual time, RFC 5737 addresses, seeded):

- ``c2_reconnect``: an implant opens one MQTT connection per beat to 203.0.113.50:1883 (period 300 s, jitter 0.3,
  10 % missed beats): CONNECT with a random client id, PUBLISH of random bytes to a random topic, DISCONNECT;
- ``c2_nonstd_port``: the same on TCP 17501, a port no ``ProtocolPortList`` names (the meter recognises the MQTT);
- ``c2_persistent``: ONE session for the whole day to 203.0.113.60:1883, PINGREQ/PINGRESP every 60 s, the broker
  PUBLISHes a command every ~10 min (jitter 0.2) and the implant PUBLISHes its (high-entropy) result back. Its flow
  record is one long connection; its messages show the period;
- benign: a Home Assistant telemetry session (PUBLISH every 4-6 min, keepalives every 60 s), NTP every 64 s, DNS
  queries, TLS-looking web sessions.

Usage: python -m bench.detection.raw_day OUT.pcap [--hours H] [--seed N]; ``generate()`` returns the labels.
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import sys
import string
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "gen_traffic", Path(__file__).resolve().parents[2] / "fixtures" / "gen_traffic.py")
gt = sys.modules.setdefault("gen_traffic", importlib.util.module_from_spec(_spec))
if not hasattr(gt, "TcpConn"):
    _spec.loader.exec_module(gt)

RECONNECT = ("192.0.2.10", "203.0.113.50", 1883)
NONSTD = ("192.0.2.11", "203.0.113.51", 17501)
PERSISTENT = ("192.0.2.12", "203.0.113.60", 1883)
HA = ("192.0.2.30", "198.51.100.20", 1883)


def _beacon_connections(cap, rng, who, period, jitter, missed, t0, end) -> int:
    host, broker, port = who
    n = 0
    t = t0 + rng.uniform(5, period)
    while t < end:
        if rng.random() >= missed:
            conn = gt.TcpConn(cap, rng, host, broker, gt._ephemeral(rng, host), port, rtt=rng.uniform(0.04, 0.09))
            u = conn.open(t)
            u = conn.send(u, True, gt.mqtt_connect(gt._token(rng, 23)), ack=False)
            u = conn.send(u + conn.rtt / 2, False, gt.mqtt_connack())
            topic = "/".join(gt._token(rng, k, string.ascii_lowercase + string.digits) for k in (12, 16))
            u = conn.send(u, True, gt.mqtt_publish(topic, rng.randbytes(rng.randint(24, 64))))
            u = conn.send(u + 0.002, True, gt.MQTT_DISCONNECT, ack=False)
            conn.close(u + 0.001)
            n += 1
        t += rng.uniform(period * (1 - jitter), period)
    return n


def _session(cap, rng, who, t0, end, client_id, events) -> int:
    """One MQTT session with 60 s keepalives; events: sorted (time, from_client, topic, payload) to send."""
    host, broker, port = who
    conn = gt.TcpConn(cap, rng, host, broker, gt._ephemeral(rng, host), port, rtt=0.02)
    t = conn.open(t0)
    t = conn.send(t, True, gt.mqtt_connect(client_id, keepalive=60), ack=False)
    conn.send(t + 0.01, False, gt.mqtt_connack())
    next_ping = t0 + 60.0
    k = 0
    while True:
        nxt = events[k][0] if k < len(events) else end
        if next_ping < nxt and next_ping < end:
            u = conn.send(next_ping, True, gt.MQTT_PINGREQ, ack=False)
            conn.send(u + 0.01, False, gt.MQTT_PINGRESP)
            next_ping += 60.0
        elif k < len(events):
            te, from_client, topic, payload = events[k]
            conn.send(te, from_client, gt.mqtt_publish(topic, payload))
            k += 1
        else:
            break
    conn.close(conn.send(end, True, gt.MQTT_DISCONNECT, ack=False) + 0.001)
    return len(events)


def generate(path: str, hours: float = 24.0, seed: int = 7) -> dict:
    """Write the capture; returns {"c2": [(src, dst, dport)...], "benign": [...], "frames": n}."""
    rng = random.Random(seed)
    gt._next_port.clear()
    t0 = gt.T0
    end = t0 + hours * 3600 - 60
    cap = gt.Capture()
    _beacon_connections(cap, random.Random(rng.getrandbits(64)), RECONNECT, 300, 0.3, 0.1, t0, end)
    _beacon_connections(cap, random.Random(rng.getrandbits(64)), NONSTD, 600, 0.2, 0.1, t0, end)
    r = random.Random(rng.getrandbits(64))
    events = []
    t = t0 + 300
    while t < end - 120:
        job = gt._token(r, 8)
        events.append((t, False, f"cmd/{job[:4]}", r.randbytes(r.randint(40, 120))))
        events.append((t + r.uniform(1, 5), True, f"res/{job}", r.randbytes(r.randint(200, 600))))
        t += r.uniform(480, 600)
    _session(cap, r, PERSISTENT, t0 + 30, end, gt._token(r, 20), events)
    r = random.Random(rng.getrandbits(64))
    events, t = [], t0 + 40
    while t < end - 60:
        sensor = r.choice(gt.HA_SENSORS)
        events.append((t, True, f"homeassistant/sensor/{sensor}/state",
                       f'{{"value": {r.uniform(0, 100):.1f}}}'.encode()))
        t += r.uniform(240, 360)
    _session(cap, r, HA, t0 + 2, end, "homeassistant-core-7f3a", events)
    saved = gt.DURATION
    gt.DURATION = hours * 3600
    try:
        gt.ntp(cap, random.Random(rng.getrandbits(64)))
        gt.dns(cap, random.Random(rng.getrandbits(64)), {})
        gt.https_like(cap, random.Random(rng.getrandbits(64)), {}, sessions=int(10 * hours))
    finally:
        gt.DURATION = saved
    frames = cap.write(path)
    return {"c2": [RECONNECT, NONSTD, PERSISTENT], "benign": [HA], "frames": frames}


def main() -> None:
    """Command line: write the capture and print its labels."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pcap")
    ap.add_argument("--hours", type=float, default=24.0)
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args()
    print(generate(a.pcap, a.hours, a.seed))


if __name__ == "__main__":
    main()
