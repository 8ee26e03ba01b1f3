"""Labelled flow worlds for the detection benchmark: C2 over pub/sub and benign traffic, as FlowBatches.

Virtual time, seeded (numpy Generator): the same seed gives the same world, different seeds different worlds. Flows
are generated per pair as columns (start, end, source port, bytes, packets, TCP flags), then passed through an
exporter model: each pair is seen by an exporter with an idle timeout, an active timeout, and TCP flags exported or
not, so one long session comes out as the slices a real NetFlow/IPFIX exporter would send. The pairs of a group (a
fleet, a job queue's servers, one monitor's checks) share one exporter, as hosts on one network segment do.

C2 families (label "c2"): reconnect-per-beacon, persistent session (publishes inside one connection), sleep change,
interleaved periods, exfil bursts, MQTT on a non-standard port (recognised by the flow meter), bursts per beat, and
sampled (sFlow-thinned) beacons. Intervals 1 s - 1 h (log-uniform), jitter 0-50 % (interval uniform in
[S(1-j), S]), 0-30 % missed beats. ``in_limits`` marks the pairs DESIGN §4 asks recall on; a persistent-session beacon is in the limits only when the
exporter's records can resolve it (period x (1 - jitter) at least twice the record granularity: the idle timeout
when the session idles between publishes, else the active timeout).
Benign families: IoT telemetry to the brokers the user allowlisted (reconnecting and persistent), keepalive-only
sessions to cloud brokers (sliced by the exporter), chat clients (XMPP sessions with bursty human messages), manual
mosquitto_pub use, and, sharing brokers (groups of pairs): job queues (5-20 app servers sending bursts of 0.5-5 MB
messages to an internal AMQP broker), lab brokers (1-6 people publishing by hand), internal sensor fleets (20-80
sensors every 60 s to a site broker), cloud sensor fleets (10-50 sensors in the same rhythm to one outside broker
that is not allowlisted), monitoring polls (a monitor connecting to every internal broker port every 60-300 s),
backups and syncs over AMQP/MQTT to an internal broker; and outside pub/sub: NTP, DNS, update checks, web browsing,
SSH backups, CDN keepalives. Internal brokers sit in 10.200.0.0/16 and are not allowlisted: they are scored with
InternalNetworks at its default, as on a user's site. The only allowlist is the user's own cloud IoT brokers
(``ALLOWLIST``).
A C2 broker reached through a dynamic-DNS name is not modelled: the flow model carries no DNS answers (the
raw-traffic world of bench/detection/pcapworld.py does). ``c2_fleet`` (the same implant on 10-30 hosts beaconing to
one outside broker in one rhythm, with no other evidence) is reported outside the limits: the fleet rule reads that
shape as infrastructure (docs/architecture.md says why, and what still makes it alert).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numba
import numpy as np

from analytics.schema import APP_PROTOCOL_ID, COLUMNS, FLOW_DTYPE, FlowBatch

NS = 1_000_000_000
T0 = 1_767_225_600  # 2026-01-01 00:00:00 UTC
SYN, FIN, RST, PSH, ACK = 0x02, 0x01, 0x04, 0x08, 0x10
#: The user's own cloud IoT brokers (the only allowlist the world's config writes).
ALLOWLIST = ("198.19.250.0/24",)
PUBSUB_PORTS = {"mqtt": (1883, 8883), "amqp": (5672, 5671), "xmpp": (5222, 5223), "stomp": (61613,), "nats": (4222,)}
C2_FAMILIES = ("c2_reconnect", "c2_persistent", "c2_sleep_change", "c2_interleaved", "c2_exfil", "c2_nonstd_port",
               "c2_bursty", "c2_sampled", "c2_persistent_fast", "c2_fleet")
#: Families outside DESIGN §4's limits by construction (reported, not in the headline recall).
OUT_OF_LIMITS = {"c2_sampled": "sFlow thinning keeps 20-60 % of connections (beyond 30 % missed beats)",
                 "c2_persistent_fast": "publishes inside one connection more often than the exporter's idle timeout: "
                                       "slices carry no timing",
                 "c2_fleet": "the same implant on 10-30 hosts in one rhythm to one outside broker, with no reputation "
                             "hit or topic: the fleet rule reads it as infrastructure (a documented blind spot)"}
BENIGN_PUBSUB = ("iot_allowlisted", "iot_allowlisted_session", "keepalive_session", "chat_client", "manual_pub",
                 "internal_jobqueue", "internal_lab_broker", "internal_sensor_fleet", "cloud_sensor_fleet",
                 "backup_sync", "monitoring_poll")
#: Families made as groups of pairs sharing one broker: (smallest, largest) group.
GROUPS = {"internal_jobqueue": (5, 20), "internal_lab_broker": (1, 6), "internal_sensor_fleet": (20, 80),
          "cloud_sensor_fleet": (10, 50), "backup_sync": (2, 8), "c2_fleet": (10, 30)}
BENIGN_OTHER = ("ntp", "dns", "update_check", "web", "backup", "cdn_keepalive")


@dataclass
class Pair:
    """One labelled pair and its records (times in seconds since T0)."""

    src: int
    dst: int
    dport: int
    proto: int
    family: str
    label: str
    params: dict
    app_proto: int = 0
    start: np.ndarray = field(default_factory=lambda: np.zeros(0))
    end: np.ndarray = field(default_factory=lambda: np.zeros(0))
    sport: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint16))
    nbytes: np.ndarray = field(default_factory=lambda: np.zeros(0))
    packets: np.ndarray = field(default_factory=lambda: np.zeros(0))
    flags: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint8))

    @property
    def in_limits(self) -> bool:
        """A C2 pair within DESIGN §4's limits (recall is asked on these)."""
        return self.label == "c2" and self.family not in OUT_OF_LIMITS and self.params.get("resolvable", True)


@dataclass
class World:
    """The pairs, the flows as one FlowBatch (time-ordered), and the duration."""

    seed: int
    duration_s: float
    pairs: list[Pair]
    batch: FlowBatch

    def batches(self, step_s: float = 3600.0):
        """The flows in time-ordered batches of step_s seconds (as a collector would deliver them)."""
        start = self.batch.columns["start_ns"]
        edges = np.searchsorted(start, T0 * NS + np.arange(0, self.duration_s + step_s, step_s) * NS)
        for lo, hi in zip(edges[:-1], edges[1:]):
            if hi > lo:
                yield self.batch.select(np.arange(lo, hi))


# --------------------------------------------------------------------------------------------- exporter model


@numba.njit(cache=True)
def _slice_connection(t, size, idle, active):
    """Records (start, end, bytes, packets) of one connection's packets under idle/active timeouts."""
    n = t.shape[0]
    rs = np.empty(n)
    re = np.empty(n)
    rb = np.empty(n)
    rp = np.empty(n)
    k = -1
    for i in range(n):
        if k < 0 or t[i] - re[k] > idle or t[i] - rs[k] >= active:
            k += 1
            rs[k] = t[i]
            rb[k] = 0.0
            rp[k] = 0.0
        re[k] = t[i]
        rb[k] += size[i]
        rp[k] += 1.0
    return rs[: k + 1], re[: k + 1], rb[: k + 1], rp[: k + 1]


class Exporter:
    """Idle and active timeouts, and whether TCP flags are exported."""

    def __init__(self, rng: np.random.Generator):
        self.idle = float(rng.choice([15.0, 15.0, 30.0, 60.0]))
        self.active = float(rng.choice([60.0, 120.0, 300.0, 1800.0]))
        self.flags = bool(rng.random() < 0.85)


def _beats(rng, start, end, period, jitter, missed):
    n = int((end - start) / (period * (1 - jitter / 2))) + 2
    t = start + rng.uniform(0, period) + np.cumsum(rng.uniform(period * (1 - jitter), period, n))
    t = t[t < end]
    return t[rng.random(len(t)) >= missed]


def _short_connections(p: Pair, rng, times, exp: Exporter, bytes_lo=300, bytes_hi=1500, pk_lo=5, pk_hi=12):
    """One short TCP connection per time (SYN ... FIN in one record, new source port each)."""
    n = len(times)
    dur = rng.uniform(0.02, 1.5, n)
    _append(p, times, times + dur, rng.integers(32768, 61000, n), rng.uniform(bytes_lo, bytes_hi, n).round(),
            rng.integers(pk_lo, pk_hi, n), np.full(n, SYN | ACK | PSH | FIN) if exp.flags else np.zeros(n), exp)


def _session(p: Pair, rng, t_start, t_end, exp: Exporter, keepalive, publishes=None, pub_bytes=(150, 600),
             ping_bytes=54, closed=True):
    """One long TCP connection: keepalive pings when idle for `keepalive` s, publishes at the given times."""
    publishes = np.zeros(0) if publishes is None else publishes[(publishes >= t_start) & (publishes < t_end)]
    grid = np.arange(t_start, t_end, keepalive)
    if len(publishes):  # MQTT sends PINGREQ only when nothing else was sent within the keepalive
        prev = np.searchsorted(publishes, grid) - 1
        gap_ok = (prev < 0) | (grid - publishes[np.maximum(prev, 0)] >= keepalive * 0.9)
        grid = grid[gap_ok]
    t = np.concatenate([grid, publishes, grid + 0.03])  # ping, publish, and the ACK of the broker's answer
    size = np.concatenate([np.full(len(grid), float(ping_bytes)),
                           rng.uniform(pub_bytes[0], pub_bytes[1], len(publishes)).round() + 52.0,
                           np.full(len(grid), 52.0)])
    order = np.argsort(t, kind="stable")
    t, size = t[order], size[order]
    if not len(t):
        return
    rs, re, rb, rp = _slice_connection(t, size, exp.idle, exp.active)
    fl = np.full(len(rs), ACK | PSH)
    fl[0] |= SYN
    if closed:
        fl[-1] |= FIN
    sport = np.full(len(rs), rng.integers(32768, 61000))
    _append(p, rs, re, sport, rb, rp, fl if exp.flags else np.zeros(len(rs)), exp)


def _append(p: Pair, start, end, sport, nbytes, packets, flags, exp: Exporter):
    p.start = np.concatenate([p.start, start])
    p.end = np.concatenate([p.end, end])
    p.sport = np.concatenate([p.sport, np.asarray(sport, np.uint16)])
    p.nbytes = np.concatenate([p.nbytes, nbytes])
    p.packets = np.concatenate([p.packets, packets])
    p.flags = np.concatenate([p.flags, np.asarray(flags, np.uint8)])


# --------------------------------------------------------------------------------------------- families


def _c2_params(rng):
    return {"period_s": float(np.exp(rng.uniform(np.log(1.0), np.log(3600.0)))),
            "jitter": float(rng.uniform(0, 0.5)), "missed": float(rng.uniform(0, 0.3))}


def _pubsub_port(rng):
    proto = str(rng.choice(list(PUBSUB_PORTS)))
    return proto, int(rng.choice(PUBSUB_PORTS[proto]))


def make_c2(family: str, p: Pair, rng, dur, exp: Exporter | None = None):
    q = p.params
    exp = Exporter(rng) if exp is None else exp
    q["exporter"] = {"idle_s": exp.idle, "active_s": exp.active, "flags": exp.flags}
    S, j, m = q["period_s"], q["jitter"], q["missed"]
    if family in ("c2_reconnect", "c2_nonstd_port", "c2_fleet"):
        _short_connections(p, rng, _beats(rng, 0, dur, S, j, m), exp)
    elif family == "c2_bursty":
        t = _beats(rng, 0, dur, S, j, m)
        extra = [t + rng.uniform(0.005, min(0.15, S * 0.1), len(t)) for _ in range(int(rng.integers(1, 3)))]
        _short_connections(p, rng, np.sort(np.concatenate([t] + extra)), exp)
    elif family == "c2_sleep_change":
        cut = rng.uniform(0.3, 0.7) * dur
        S2 = min(3600.0, max(1.0, S * float(rng.choice([1 / 8, 1 / 4, 4, 8]))))
        q["period2_s"] = S2
        t = np.concatenate([_beats(rng, 0, cut, S, j, m), _beats(rng, cut, dur, S2, j, m)])
        _short_connections(p, rng, t, exp)
    elif family == "c2_interleaved":
        S2 = min(3600.0, S * rng.uniform(2.5, 6.0))
        q["period2_s"] = S2
        t = np.sort(np.concatenate([_beats(rng, 0, dur, S, j, m), _beats(rng, 0, dur, S2, j, m)]))
        _short_connections(p, rng, t, exp)
    elif family == "c2_exfil":
        _short_connections(p, rng, _beats(rng, 0, dur, S, j, m), exp)
        k = int(rng.integers(3, 10))
        t = np.sort(rng.uniform(0, dur, k))
        n_pk = rng.integers(200, 4000, k)
        _append(p, t, t + n_pk * 0.01, rng.integers(32768, 61000, k), n_pk * 1400.0, n_pk,
                np.full(k, SYN | ACK | PSH | FIN) if exp.flags else np.zeros(k), exp)
    elif family == "c2_sampled":
        keep = rng.uniform(0.2, 0.6)
        q["sampling_keep"] = keep
        t = _beats(rng, 0, dur, S, j, m)
        _short_connections(p, rng, t[rng.random(len(t)) < keep], exp)
    elif family in ("c2_persistent", "c2_persistent_fast"):
        keepalive = float(rng.choice([15.0, 30.0, 60.0, 120.0]))
        q["keepalive_s"] = keepalive
        # what the flow records can resolve: publishes get their own records when the connection goes idle
        # longer than the exporter's idle timeout between them, else only active-timeout slices show them
        granularity = exp.idle if keepalive > exp.idle else exp.active
        q["resolvable"] = S * (1 - j) >= 2 * granularity
        _session(p, rng, 0.0, dur, exp, keepalive, _beats(rng, 0, dur, S, j, m), closed=False)
    else:
        raise ValueError(family)


def make_benign(family: str, p: Pair, rng, dur, exp: Exporter | None = None):
    exp = Exporter(rng) if exp is None else exp
    p.params["exporter"] = {"idle_s": exp.idle, "active_s": exp.active, "flags": exp.flags}
    if family == "iot_allowlisted":
        S = float(rng.choice([10.0, 30.0, 60.0, 300.0, 900.0]))
        _short_connections(p, rng, _beats(rng, 0, dur, S, 0.05, 0.02), exp, 120, 400)
    elif family == "iot_allowlisted_session":
        _session(p, rng, 0.0, dur, exp, 60.0, _beats(rng, 0, dur, float(rng.choice([30.0, 60.0, 300.0])), 0.02, 0.0),
                 pub_bytes=(60, 200), closed=False)
    elif family == "keepalive_session":
        keepalive = float(rng.choice([15.0, 30.0, 60.0, 120.0, 300.0]))
        p.params["keepalive_s"] = keepalive
        # reconnects at random (network changes), random sparse publishes (push notifications)
        cuts = np.sort(np.concatenate([[0.0, dur], rng.uniform(0, dur, rng.poisson(dur / rng.uniform(7200, 43200)))]))
        rate = rng.uniform(0, 2.0) / 3600.0
        pubs = np.sort(rng.uniform(0, dur, rng.poisson(rate * dur)))
        for a, b in zip(cuts[:-1], cuts[1:]):
            if b - a > 1.0:
                _session(p, rng, a + rng.uniform(0, 1.0), b, exp, keepalive, pubs, closed=b < dur)
    elif family == "chat_client":
        keepalive = float(rng.choice([60.0, 90.0, 300.0]))
        conv = rng.uniform(0, dur, rng.poisson(dur / 3600.0 * rng.uniform(0.3, 3)))
        msgs = [c + np.cumsum(rng.exponential(rng.uniform(5, 60), rng.integers(2, 20))) for c in conv]
        pubs = np.sort(np.concatenate(msgs)) if msgs else np.zeros(0)
        _session(p, rng, 0.0, dur, exp, keepalive, pubs, pub_bytes=(120, 1400), ping_bytes=53, closed=False)
    elif family == "manual_pub":
        # a developer running mosquitto_pub by hand: clusters of one-shot connections at random times
        _by_hand(p, rng, dur, exp, 12, 15, 900)
    elif family == "ntp":
        _short_connections(p, rng, _beats(rng, 0, dur, float(rng.choice([64.0, 128.0, 256.0, 1024.0])), 0.01, 0.0),
                           exp, 76, 77, 1, 2)
        p.flags[:] = 0
    elif family == "dns":
        _short_connections(p, rng, np.sort(rng.uniform(0, dur, rng.poisson(dur / rng.uniform(30, 900)))), exp,
                           60, 120, 1, 2)
        p.flags[:] = 0
    elif family == "update_check":
        _short_connections(p, rng, _beats(rng, 0, dur, float(rng.choice([3600.0, 14400.0, 1800.0])), 0.05, 0.0),
                           exp, 2000, 9000)
    elif family == "web":
        visits = rng.uniform(0, dur, rng.poisson(dur / 3600 * rng.uniform(1, 20)))
        t = [v + np.cumsum(rng.exponential(2.0, rng.integers(1, 30))) for v in visits]
        if t:
            _short_connections(p, rng, np.sort(np.concatenate(t)), exp, 800, 60000)
    elif family == "backup":
        t = _beats(rng, 0, dur, float(rng.choice([3600.0, 86400.0 / 4])), 0.0, 0.0)
        _short_connections(p, rng, t, exp, 1e6, 5e7, 1000, 40000)
    elif family == "cdn_keepalive":
        # a browser or an app holding a connection to a CDN edge open: a small keepalive every 30-120 s
        _session(p, rng, 0.0, dur, exp, float(rng.choice([30.0, 45.0, 60.0, 120.0])), closed=False)
    elif family in ("internal_sensor_fleet", "cloud_sensor_fleet"):
        # the group's firmware decides the rhythm (p.params from _group_params); each sensor its own phase
        S = p.params["period_s"]
        if p.params["mode"] == "session":
            _session(p, rng, 0.0, dur, exp, 60.0, _beats(rng, 0, dur, S, 0.05, 0.02), pub_bytes=(80, 400),
                     closed=False)
        else:
            _short_connections(p, rng, _beats(rng, 0, dur, S, 0.05, 0.02), exp, 150, 600)
    elif family == "internal_jobqueue":
        # an app server publishing jobs in bursts (batch runs, user activity): one connection per burst carrying
        # 1-20 messages of 0.5-5 MB each
        bursts = np.sort(rng.uniform(0, dur, rng.poisson(dur / 3600.0 * rng.uniform(1.0, 10.0))))
        k = len(bursts)
        msgs = rng.integers(1, 21, k)
        nbytes = np.array([rng.uniform(0.5e6, 5e6, m).sum() for m in msgs]).round()
        n_pk = np.ceil(nbytes / 1400.0) + 4
        _append(p, bursts, bursts + n_pk * 0.002 + rng.exponential(2.0, k), rng.integers(32768, 61000, k),
                nbytes, n_pk, np.full(k, SYN | ACK | PSH | FIN) if exp.flags else np.zeros(k), exp)
    elif family == "internal_lab_broker":
        # people trying things by hand against the lab broker: clusters of one-shot publishes, some large payloads
        _by_hand(p, rng, dur, exp, 15, 20, 20000)
    elif family == "backup_sync":
        # a host syncing to the site's broker on the group's schedule: large transfers, each host its own phase
        t = _beats(rng, 0, dur, p.params["period_s"], 0.02, 0.0)
        _short_connections(p, rng, t, exp, 1e6, 2e8, 1000, 140000)
    elif family == "monitoring_poll":
        # the monitor's check: connect, CONNECT/CONNACK (or AMQP handshake), disconnect, on the monitor's period
        _short_connections(p, rng, _beats(rng, 0, dur, p.params["period_s"], 0.02, 0.0), exp, 180, 420, 6, 11)
    else:
        raise ValueError(family)


def _by_hand(p: Pair, rng, dur, exp: Exporter, sessions_hi, per_session_hi, bytes_hi):
    """A person publishing by hand: a few clusters at random times of one-shot connections seconds to minutes apart."""
    starts = rng.uniform(0, dur, rng.poisson(rng.uniform(2, sessions_hi)))
    t = [s + np.cumsum(rng.exponential(rng.uniform(3, 120), rng.integers(1, per_session_hi))) for s in starts]
    if t:
        _short_connections(p, rng, np.sort(np.concatenate(t)), exp, 100, bytes_hi)


def _group_sizes(rng, total: int, lo: int, hi: int) -> list[int]:
    """Group sizes in [lo, hi] adding up to total (a remainder below lo joins the group before it)."""
    sizes: list[int] = []
    while sum(sizes) < total:
        sizes.append(int(rng.integers(lo, hi + 1)))
    sizes[-1] -= sum(sizes) - total
    if sizes[-1] < lo and len(sizes) > 1:
        last = sizes.pop()
        sizes[-1] += last
    return sizes


def _group_params(family: str, rng) -> tuple[str, tuple[int, ...], dict]:
    """The protocol, the ports to choose from and the parameters shared by a group's pairs."""
    if family in ("internal_sensor_fleet", "cloud_sensor_fleet"):
        return "mqtt", (1883, 8883), {"period_s": 60.0, "mode": str(rng.choice(["reconnect", "session"]))}
    if family == "internal_jobqueue":
        return "amqp", (5672, 5671), {}
    if family == "internal_lab_broker":
        return "mqtt", (1883,), {}
    if family == "backup_sync":
        proto, _ = _pubsub_port(rng)
        proto = "amqp" if proto != "mqtt" else "mqtt"
        return proto, PUBSUB_PORTS[proto], {"period_s": float(rng.choice([900.0, 3600.0, 21600.0]))}
    raise ValueError(family)


_OTHER_PORTS = {"ntp": (123, 17), "dns": (53, 17), "update_check": (443, 6), "web": (443, 6), "backup": (22, 6),
                "cdn_keepalive": (443, 6)}


def _quotas(n: int, families: tuple[str, ...]) -> dict[str, int]:
    """Pairs per family: n spread over the families in turn."""
    return {f: len(range(i, n, len(families))) for i, f in enumerate(families)}


def build_world(seed: int, n_c2: int = 100, n_benign_pubsub: int = 5000, n_benign_other: int = 5000,
                duration_s: float = 86400.0) -> World:
    """A labelled world: n_c2 C2 pairs spread over C2_FAMILIES, benign pub/sub and other pairs (group families
    in groups of pairs sharing one broker)."""
    rng = np.random.default_rng(seed)
    pairs: list[Pair] = []
    host = iter(range(1, 1 << 20))
    broker = iter(range(1, 1 << 16))

    def src():
        h = next(host)
        return (10 << 24) | (h % 250 + 1) | (((h // 250) % 250) << 8) | ((h // 62500 + 1) << 16)

    def ext():
        return (198 << 24) | (18 << 16) | int(rng.integers(1, 1 << 16))

    def site_broker():  # the site's own brokers: 10.200.0.0/16, inside InternalNetworks' default, not allowlisted
        h = next(broker)
        return (10 << 24) | (200 << 16) | ((h // 250) << 8) | (h % 250 + 1)

    def cloud_broker():  # outside brokers shared by a fleet: 198.19.0.0/17 (not allowlisted)
        h = next(broker)
        return (198 << 24) | (19 << 16) | ((h // 250) << 8) | (h % 250 + 1)

    def allowlisted():  # the user's cloud IoT brokers (ALLOWLIST), a few addresses
        return (198 << 24) | (19 << 16) | (250 << 8) | int(rng.integers(1, 9))

    for fam, quota in _quotas(n_c2, C2_FAMILIES).items():
        if fam == "c2_fleet":  # one implant on many hosts: one broker, one schedule
            for size in _group_sizes(rng, quota, *GROUPS[fam]):
                proto, port = _pubsub_port(rng)
                dst, q = ext(), dict(_c2_params(rng), protocol=proto, group_size=size)
                exp = Exporter(rng)  # one site: its hosts' flows go through the same exporter
                for _ in range(size):
                    p = Pair(src(), dst, port, 6, fam, "c2", dict(q))
                    make_c2(fam, p, rng, duration_s, exp)
                    pairs.append(p)
            continue
        for _ in range(quota):
            proto, port = _pubsub_port(rng)
            app = 0
            if fam == "c2_nonstd_port":
                proto, port, app = "mqtt", int(rng.choice([4444, 8080, 9001, 10443, 2883, 31337])), \
                    APP_PROTOCOL_ID["mqtt"]
            q = _c2_params(rng)
            if fam == "c2_persistent":
                q["period_s"] = float(np.exp(rng.uniform(np.log(150.0), np.log(3600.0))))
            if fam == "c2_persistent_fast":
                q["period_s"] = float(rng.uniform(1.0, 10.0))
            p = Pair(src(), ext(), port, 6, fam, "c2", dict(q, protocol=proto), app)
            make_c2(fam, p, rng, duration_s)
            pairs.append(p)
    site_brokers: list[tuple[int, int, str]] = []
    quotas = _quotas(n_benign_pubsub, BENIGN_PUBSUB)
    for fam, quota in quotas.items():
        if fam == "monitoring_poll":
            continue
        if fam in GROUPS:
            for size in _group_sizes(rng, quota, *GROUPS[fam]):
                proto, ports, q = _group_params(fam, rng)
                port = int(rng.choice(ports))
                dst = cloud_broker() if fam == "cloud_sensor_fleet" else site_broker()
                if fam != "cloud_sensor_fleet":
                    site_brokers.append((dst, port, proto))
                exp = Exporter(rng)  # a group sits on one network segment: one exporter sees all its flows
                for _ in range(size):
                    p = Pair(src(), dst, port, 6, fam, "benign", dict(q, protocol=proto, group_size=size))
                    make_benign(fam, p, rng, duration_s, exp)
                    pairs.append(p)
            continue
        for _ in range(quota):
            proto, port = _pubsub_port(rng)
            if fam == "chat_client":
                proto, port = "xmpp", 5222
            dst = allowlisted() if fam.startswith("iot_allowlisted") else ext()
            p = Pair(src(), dst, port, 6, fam, "benign", {"protocol": proto})
            make_benign(fam, p, rng, duration_s)
            pairs.append(p)
    # monitors: each checks every site broker's port on its own period, until the family's quota is used
    quota = quotas["monitoring_poll"]
    while quota > 0 and site_brokers:
        mon, period, exp = src(), float(rng.uniform(60.0, 300.0)), Exporter(rng)
        for dst, port, proto in site_brokers[:quota]:
            p = Pair(mon, dst, port, 6, "monitoring_poll", "benign", {"protocol": proto, "period_s": period})
            make_benign("monitoring_poll", p, rng, duration_s, exp)
            pairs.append(p)
        quota -= min(quota, len(site_brokers))
    for fam, quota in _quotas(n_benign_other, BENIGN_OTHER).items():
        port, ipproto = _OTHER_PORTS[fam]
        for _ in range(quota):
            p = Pair(src(), ext(), port, ipproto, fam, "benign", {})
            make_benign(fam, p, rng, duration_s)
            pairs.append(p)
    return World(seed, duration_s, pairs, _to_batch(pairs, duration_s))


def _to_batch(pairs: list[Pair], duration_s: float) -> FlowBatch:
    counts = np.array([len(p.start) for p in pairs])
    n = int(counts.sum())
    cols = {k: np.zeros(n, FLOW_DTYPE[k]) for k in COLUMNS}
    rep = lambda attr: np.repeat(np.array([getattr(p, attr) for p in pairs], np.uint64), counts)  # noqa: E731
    start = np.concatenate([p.start for p in pairs]) if pairs else np.zeros(0)
    end = np.concatenate([p.end for p in pairs]) if pairs else np.zeros(0)
    cols["start_ns"][:] = (T0 + start) * NS
    cols["end_ns"][:] = (T0 + end) * NS
    cols["src_lo"][:] = np.uint64(0xFFFF00000000) | rep("src")
    cols["dst_lo"][:] = np.uint64(0xFFFF00000000) | rep("dst")
    cols["dst_port"][:] = rep("dport").astype(np.uint16)
    cols["proto"][:] = rep("proto").astype(np.uint8)
    cols["app_proto"][:] = rep("app_proto").astype(np.uint8)
    cols["src_port"][:] = np.concatenate([p.sport for p in pairs]) if pairs else 0
    cols["bytes"][:] = np.concatenate([p.nbytes for p in pairs]).astype(np.uint64) if pairs else 0
    cols["packets"][:] = np.concatenate([p.packets for p in pairs]).astype(np.uint64) if pairs else 0
    cols["tcp_flags"][:] = np.concatenate([p.flags for p in pairs]) if pairs else 0
    cols["sampling_rate"][:] = 1
    order = np.argsort(cols["start_ns"], kind="stable")
    keep = order[(cols["start_ns"][order] < (T0 + duration_s) * NS)]
    return FlowBatch({k: v[keep] for k, v in cols.items()})


def pair_key(p: Pair) -> tuple[int, int, int]:
    """(src low word, dst low word, dst port) as the detector's alerts carry them."""
    return (0xFFFF00000000 | p.src, 0xFFFF00000000 | p.dst, p.dport)
