"""The endpoint analytics of DET0002 (AN0002 Windows, AN0003 Linux, AN0004 macOS) and flow-to-process attribution.

Input: EndpointBatches (analytics/endpoint.py) from host logs, and the FlowBatches the network analytics see.

1. **Process contexts.** ``process_start`` events fill a bounded table (least recently used evicted, counted) keyed by
   (host, entity id) and (host, pid), so a network event that names only its process id (Sysmon 3, auditd connect)
   gets the executable, command line, parent and user of the process that made it.
2. **Activities.** A network event, or a process start whose command line names a broker (analytics/cmdline.py:
   mosquitto_pub -h, paho one-liners, nc/socat, curl/wget to a broker URI, osascript, PowerShell sockets), is an
   activity of (host, process, broker). Brokers named on a command line resolve through the hosts' own DNS answers
   (analytics/dnsmap.py).
3. **Attribution.** Endpoint network events join flow records by (host address, source port, destination, port,
   time ± skew); where the host log gives no source address or port (auditd's SOCKADDR is the destination only), the
   host's address is learned from the flows to that destination at that time and the join falls back to the pair.
   An AN0005 alert then carries ``process.*``, ``host.*`` and ``user.name``; its destination gains the name the host
   resolved, and a reputation domain or dynamic-DNS suffix matched by that name is evidence.
4. **The three analytics.** For each (host, process, broker) whose activities are pub/sub (a ``ProtocolPortList``
   port, a broker on the command line, a ``URIPathRegex`` path) and whose broker is not in ``BrokerAllowList``:
   the process must be suspicious (``UnusualProcessList``, ``AppContextFilter``, or an executable in a user-writable
   place) and not a ``KnownPubSubClients`` application, and the evidence is scored — beaconing of its activities
   (the analytics core's beacon kernels), reputation, ``TopicAnomalyScore``, obfuscated messages (entropy,
   base64/hex, ``PayloadLengthThreshold``), ``URIPathRegex``, high-frequency publication, an encrypted channel.
   A score of at least ``EndpointParams.alert_score`` (0-100) alerts; the evidence names every element that fired.

Pure computation over batches and config: no I/O (DESIGN §2).
"""

from __future__ import annotations

import re
from collections import Counter, OrderedDict, defaultdict, deque
from dataclasses import dataclass, field

import numpy as np

from analytics.alerts import Alert
from analytics.beacon import F as BF
from analytics.beacon import BeaconParams, score_segments
from analytics.cmdline import PubSubInvocation, parse_command_line, payload_score
from analytics.config import Config
from analytics.dnsmap import PassiveDNS, domain_matches
from analytics.endpoint import (DNS_QUERY, EFLAG_HAS_DST, EFLAG_HAS_SRC, EFLAG_INBOUND, NETWORK_ACCEPT,
                                NETWORK_CONNECT, OS_TYPES, PROCESS_START, EndpointBatch, address_words)
from analytics.schema import APP_PROTOCOLS, FlowBatch, words_to_ip
from analytics.topics import topic_score

NS = 1_000_000_000
RULE_BY_OS = {"windows": "AN0002", "linux": "AN0003", "macos": "AN0004"}
_MIX = (np.uint64(0x9E3779B97F4A7C15), np.uint64(0xC2B2AE3D27D4EB4F), np.uint64(0x165667B19E3779F9),
        np.uint64(0x27D4EB2F165667C5), np.uint64(0xFF51AFD7ED558CCD))

#: Places only installers and package managers write to; an executable elsewhere (temp, downloads, a home
#: directory) running a pub/sub client is evidence.
_SYSTEM_PATHS = re.compile(
    r"^(?:[a-z]:\\(?:windows|program files(?: \(x86\))?)\\|/(?:usr|bin|sbin|lib|lib64|opt|snap|nix|system|"
    r"applications|library)/)", re.I)
_USER_WRITABLE = re.compile(
    r"(?:^/tmp/|^/var/tmp/|^/dev/shm/|^/private/tmp/|^/private/var/folders/|^/users/[^/]+/(?:downloads|library/"
    r"caches)/|^/home/[^/]+/|\\appdata\\|\\temp\\|\\downloads\\|^c:\\users\\public\\|^c:\\programdata\\)", re.I)


@dataclass(frozen=True)
class EndpointParams:
    """Decision levels and bounds of the endpoint analytics (not DET0002 keys; documented in docs/hostlogs.md)."""

    alert_score: float = 60.0  # 0-100 score that alerts
    skew_s: float = 120.0  # host clock against the exporter's: a flow joins a host event within this
    max_processes: int = 200_000  # process contexts kept
    max_pairs: int = 500_000  # (source, destination, port) entries of the attribution table
    max_activities: int = 2_000_000  # endpoint activities kept in the window
    hf_max_period_s: float = 10.0  # high-frequency publication: a median gap of at most this ...
    hf_min_events: int = 30  # ... over at least this many publications
    weights: tuple[tuple[str, float], ...] = (
        ("process", 40.0), ("beaconing", 35.0), ("reputation", 25.0), ("topic", 20.0), ("payload", 20.0),
        ("uri_path", 20.0), ("high_frequency", 25.0), ("encrypted", 5.0), ("repeated", 5.0))


@dataclass
class ProcessContext:
    """What the host logs said about one process."""

    host: str
    os: str
    pid: int
    entity: str
    executable: str
    name: str
    command_line: str = ""
    parent: str = ""
    user: str = ""
    start_ns: int = 0

    @property
    def invocation(self) -> PubSubInvocation | None:
        """The pub/sub invocation its command line describes, if any."""
        return parse_command_line(self.command_line) if self.command_line else None

    def ecs(self) -> tuple[dict, dict, str]:
        """(process, host, user name) as alert fields."""
        proc = {"name": self.name, "executable": self.executable}
        if self.pid >= 0:
            proc["pid"] = self.pid
        if self.command_line:
            proc["command_line"] = self.command_line
        if self.entity:
            proc["entity_id"] = self.entity
        if self.parent:
            proc["parent"] = {"executable": self.parent}
        host = {"name": self.host} if self.host else {}
        if self.os:
            host["os"] = {"type": self.os}
        return proc, host, self.user


@dataclass
class _Activity:
    ts_ns: int
    proc: ProcessContext
    dst: tuple[int, int] | None
    dst_port: int
    src: tuple[int, int] | None
    src_port: int
    domain: str
    via: str  # "connect" or "exec"


@dataclass
class EndpointStats:
    """Counters of the endpoint analytics (served as brokerwatch_endpoint_*)."""

    events: int = 0
    processes_evicted: int = 0
    activities_dropped: int = 0
    flows_attributed_port: int = 0
    hosts_learned: int = 0
    suppressed_known_client: int = 0
    alerts: int = 0
    by_action: Counter = field(default_factory=Counter)


def _hash(src_hi, src_lo, sport, dst_hi, dst_lo, dport) -> np.ndarray:
    with np.errstate(over="ignore"):
        h = (np.asarray(src_lo, np.uint64) * _MIX[0]) ^ (np.asarray(src_hi, np.uint64) * _MIX[1])
        h ^= np.asarray(dst_lo, np.uint64) * _MIX[2] ^ np.asarray(dst_hi, np.uint64) * _MIX[3]
        h ^= ((np.asarray(sport, np.uint64) << np.uint64(16)) | np.asarray(dport, np.uint64)) * _MIX[4]
    return h


class EndpointDetector:
    """Keeps endpoint state for the current TimeWindow: processes, activities, DNS, attribution; alerts AN0002-4."""

    def __init__(self, config: Config, params: EndpointParams = EndpointParams(),
                 beacon: BeaconParams = BeaconParams()) -> None:
        self.config = config
        self.params = params
        self.beacon_params = beacon
        self.stats = EndpointStats()
        self._window_ns = int(config.TimeWindow.window_s * NS)
        self._skew_ns = int(params.skew_s * NS)
        self._ports = config.port_protocols()
        self._uri = [re.compile(p) for p in config.URIPathRegex]
        lower = lambda d: {os_: {n.lower() for n in names} for os_, names in d.items()}  # noqa: E731
        self._unusual = lower(config.UnusualProcessList)
        self._appctx = lower(config.AppContextFilter)
        self._known = lower(config.KnownPubSubClients)
        self._weights = dict(params.weights)
        self.dns = PassiveDNS()
        self._procs: OrderedDict[tuple, ProcessContext] = OrderedDict()
        self._activities: deque[_Activity] = deque()
        self._host_addr: dict[str, tuple[int, int]] = {}
        # attribution: (src, dst, dport) -> recent (ts, sport, process); exact-port index for the flow join
        self._pairs: OrderedDict[tuple, deque] = OrderedDict()
        self._port_index: dict[int, list] = {}
        self._port_hashes = np.zeros(0, np.uint64)
        self._port_dirty = False
        # (src, dst, dport) -> {id(process): [flows joined by source port, process]}
        self._pair_by_port: dict[tuple, dict[int, list]] = defaultdict(dict)
        # connects with no source address (auditd): (dst, dport) -> [(ts, host)], placed by the flows
        self._unplaced: dict[tuple, list] = defaultdict(list)
        self._alerts: dict[tuple, Alert] = {}
        self.latest_ns = 0

    # ------------------------------------------------------------------------------------------------ ingest

    def _process(self, host: str, os_: str, pid: int, entity: str, exe: str, name: str) -> ProcessContext:
        """The context of a process named by a network event: known from its start, or made from what it says."""
        keys = [("e", host, entity) if entity else None, ("p", host, pid) if pid >= 0 else None]
        if host:  # a process log that names no host (eslogger, a file of one machine): its pid on this host
            keys += [("e", "", entity) if entity else None, ("p", "", pid) if pid >= 0 else None]
        for key in keys:
            if key is not None:
                ctx = self._procs.get(key)
                if ctx is not None and (not exe or not ctx.executable or ctx.executable == exe):
                    self._procs.move_to_end(key)
                    if not ctx.host:
                        ctx.host = host  # the network event says which host the process ran on
                    return ctx
        return ProcessContext(host, os_, pid, entity, exe, name or exe)

    def _remember(self, ctx: ProcessContext) -> None:
        if ctx.entity:
            self._procs[("e", ctx.host, ctx.entity)] = ctx
        if ctx.pid >= 0:
            self._procs[("p", ctx.host, ctx.pid)] = ctx
        while len(self._procs) > self.params.max_processes:
            self._procs.popitem(last=False)
            self.stats.processes_evicted += 1

    def ingest(self, batch: EndpointBatch) -> None:
        """Take a batch of endpoint events (any order of process, network and DNS events within it)."""
        if not len(batch):
            return
        rows = batch.rows
        self.stats.events += len(rows)
        self.latest_ns = max(self.latest_ns, int(rows["ts_ns"].max()))
        order = np.argsort(rows["ts_ns"], kind="stable")
        # process starts first within a batch at equal times, so a connect finds its process
        order = order[np.lexsort((rows["action"][order] != PROCESS_START, rows["ts_ns"][order]))]
        s = batch.strings
        cols = {n: rows[n][order].tolist() for n in ("ts_ns", "src_hi", "src_lo", "dst_hi", "dst_lo", "pid",
                                                        "host_id", "exe_id", "name_id", "cmd_id", "parent_exe_id",
                                                        "user_id", "domain_id", "entity_id", "src_port", "dst_port",
                                                        "action", "os", "flags")}
        for i in range(len(order)):
            action = cols["action"][i]
            self.stats.by_action[action] += 1
            ts = cols["ts_ns"][i]
            host = s[cols["host_id"][i]]
            os_ = OS_TYPES[cols["os"][i]]
            flags = cols["flags"][i]
            if action == DNS_QUERY:
                if flags & EFLAG_HAS_DST:
                    self.dns.add(s[cols["domain_id"][i]], (cols["dst_hi"][i], cols["dst_lo"][i]), ts)
                continue
            pid = cols["pid"][i]
            entity = s[cols["entity_id"][i]]
            exe = s[cols["exe_id"][i]]
            if action == PROCESS_START:
                ctx = ProcessContext(host, os_, pid, entity, exe, s[cols["name_id"][i]] or exe, s[cols["cmd_id"][i]],
                                     s[cols["parent_exe_id"][i]], s[cols["user_id"][i]], ts)
                self._remember(ctx)
                inv = ctx.invocation
                if inv is not None and (inv.broker or inv.path):
                    dst = address_words(inv.broker) if inv.broker else None
                    self._add_activity(_Activity(ts, ctx, dst, inv.port, None, 0, "" if dst else inv.broker, "exec"))
                continue
            if action not in (NETWORK_CONNECT, NETWORK_ACCEPT) or flags & EFLAG_INBOUND or action == NETWORK_ACCEPT:
                continue
            ctx = self._process(host, os_, pid, entity, exe, s[cols["name_id"][i]])
            if not ctx.user and cols["user_id"][i]:
                ctx.user = s[cols["user_id"][i]]
            src = (cols["src_hi"][i], cols["src_lo"][i]) if flags & EFLAG_HAS_SRC else None
            dst = (cols["dst_hi"][i], cols["dst_lo"][i]) if flags & EFLAG_HAS_DST else None
            if dst is None:
                continue
            if src is not None and host and _routable(src):
                if self._host_addr.get(host) != src:
                    self._host_addr[host] = src
            elif src is None and host in self._host_addr:
                src = self._host_addr[host]
            sport, dport = cols["src_port"][i], cols["dst_port"][i]
            domain = s[cols["domain_id"][i]]
            if domain:  # the host's own view of the name it connected to (Elastic Endpoint, Sysmon 3)
                self.dns.add(domain, dst, ts)
            act = _Activity(ts, ctx, dst, dport, src, sport, domain, "connect")
            self._add_activity(act)
            self._index_connection(act)

    def _add_activity(self, act: _Activity) -> None:
        self._activities.append(act)
        if len(self._activities) > self.params.max_activities:
            self._activities.popleft()
            self.stats.activities_dropped += 1

    def _index_connection(self, act: _Activity) -> None:
        if act.src is None:
            self._unplaced[(act.dst, act.dst_port)].append((act.ts_ns, act.proc))
            return
        key = (act.src, act.dst, act.dst_port)
        q = self._pairs.get(key)
        if q is None:
            q = self._pairs[key] = deque(maxlen=256)
            while len(self._pairs) > self.params.max_pairs:
                self._pairs.popitem(last=False)
        else:
            self._pairs.move_to_end(key)
        q.append((act.ts_ns, act.src_port, act.proc))
        if act.src_port:
            h = int(_hash(act.src[0], act.src[1], act.src_port, act.dst[0], act.dst[1], act.dst_port))
            self._port_index.setdefault(h, []).append((act.ts_ns, key, act.proc))
            self._port_dirty = True

    # ------------------------------------------------------------------------------------------ flows join

    def observe_flows(self, batch: FlowBatch) -> None:
        """Join a batch of flow records to the endpoint network events (by source port where the host log gives it,
        else by destination and time to learn the host's address); call it for every batch the network analytics
        ingest."""
        if not len(batch) or not (self._port_index or self._unplaced):
            return
        c = batch.columns
        if self._port_index:
            if self._port_dirty:
                self._port_hashes = np.fromiter(self._port_index.keys(), np.uint64, len(self._port_index))
                self._port_dirty = False
            h = _hash(c["src_hi"], c["src_lo"], c["src_port"], c["dst_hi"], c["dst_lo"], c["dst_port"])
            hit = np.flatnonzero(np.isin(h, self._port_hashes))
            for j in hit.tolist():
                t = int(c["start_ns"][j])
                for ts, key, proc in self._port_index.get(int(h[j]), ()):
                    if abs(ts - t) <= self._skew_ns:
                        slot = self._pair_by_port[key].setdefault(id(proc), [0, proc])
                        slot[0] += 1
                        self.stats.flows_attributed_port += 1
                        break
        if self._unplaced:
            self._place_hosts(c)

    def _place_hosts(self, c: dict) -> None:
        keys = list(self._unplaced)
        dhi = np.array([k[0][0] for k in keys], np.uint64)
        dlo = np.array([k[0][1] for k in keys], np.uint64)
        dp = np.array([k[1] for k in keys], np.uint64)
        kh = _hash(0, 0, 0, dhi, dlo, dp)
        fh = _hash(0, 0, 0, c["dst_hi"], c["dst_lo"], c["dst_port"])
        by_hash = dict(zip(kh.tolist(), keys))
        for j in np.flatnonzero(np.isin(fh, kh)).tolist():
            key = by_hash[int(fh[j])]
            t = int(c["start_ns"][j])
            src = (int(c["src_hi"][j]), int(c["src_lo"][j]))
            for ts, proc in self._unplaced.get(key, ()):
                if abs(ts - t) <= self._skew_ns and proc.host and proc.host not in self._host_addr:
                    self._host_addr[proc.host] = src
                    self.stats.hosts_learned += 1
        # every connect whose host now has an address joins the pair table
        for key in keys:
            pending = self._unplaced[key]
            rest = []
            for ts, proc in pending:
                src = self._host_addr.get(proc.host)
                if src is None:
                    rest.append((ts, proc))
                    continue
                pk = (src, key[0], key[1])
                q = self._pairs.get(pk)
                if q is None:
                    q = self._pairs[pk] = deque(maxlen=256)
                q.append((ts, 0, proc))
            if rest:
                self._unplaced[key] = rest[-1024:]
            else:
                del self._unplaced[key]

    def _expire_joins(self, lo: int) -> None:
        """Forget join entries older than the window (the source-port index, connects still waiting for their host's
        address, port joins of pairs the attribution table no longer holds): a long-running service stays bounded."""
        index = self._port_index
        for h in list(index):
            kept = [e for e in index[h] if e[0] >= lo]
            if len(kept) != len(index[h]):
                self._port_dirty = True
                if kept:
                    index[h] = kept
                else:
                    del index[h]
        for key in list(self._unplaced):
            kept = [e for e in self._unplaced[key] if e[0] >= lo]
            if kept:
                self._unplaced[key] = kept
            else:
                del self._unplaced[key]
        for key in [k for k in self._pair_by_port if k not in self._pairs]:
            del self._pair_by_port[key]

    def process_for_pair(self, src: tuple[int, int], dst: tuple[int, int], dport: int) -> tuple[ProcessContext | None,
                                                                                                  str, int]:
        """(process, how it was found: 'source_port' or 'pair', connections) that made a pair's traffic, if known."""
        key = (src, dst, dport)
        ports = self._pair_by_port.get(key)
        if ports:
            n, proc = max(ports.values(), key=lambda slot: slot[0])
            return proc, "source_port", n
        q = self._pairs.get(key)
        if q:
            counts = Counter(id(p) for _, _, p in q)
            best, n = counts.most_common(1)[0]
            proc = next(p for _, _, p in q if id(p) == best)
            return proc, "pair", n
        return None, "", 0

    # ------------------------------------------------------------------------------------------ AN0005 enrichment

    def attribute(self, alerts: list[Alert]) -> list[Alert]:
        """Network alerts with the process, host and user that made the traffic and the name the host resolved;
        alerts whose traffic comes from a KnownPubSubClients application are dropped unless a reputation list
        alerted on them."""
        out = []
        rep_domains = self.config.reputation_domains
        for a in alerts:
            name = self.dns.name_of(a.dst)
            if name:
                a.extra.setdefault("destination", {})["domain"] = name
                hit = domain_matches(name, rep_domains)
                if hit:
                    a.evidence["dns_reputation"] = f"the host resolved {name} (matches {hit.lstrip('=')})"
            proc, how, n = self.process_for_pair(a.src, a.dst, a.dst_port)
            if proc is not None:
                if self._is_known(proc) and "reputation" not in a.evidence.get("analytics", ()):
                    self.stats.suppressed_known_client += 1
                    continue
                p, h, user = proc.ecs()
                a.process = p
                if h:
                    a.host = h
                if user:
                    a.extra["user"] = {"name": user}
                a.evidence["process_attribution"] = {"method": how, "connections": n}
            out.append(a)
        return out

    # ------------------------------------------------------------------------------------------ AN0002-AN0004

    def _is_known(self, proc: ProcessContext) -> bool:
        names = self._known.get(proc.os, set())
        return _matches(proc, names)

    def _classify(self, proc: ProcessContext) -> list[tuple[str, str]]:
        """(element, reason) pairs that make the process suspicious as a pub/sub client."""
        out = []
        if _matches(proc, self._unusual.get(proc.os, set())):
            out.append(("UnusualProcessList", f"{proc.name} is in UnusualProcessList.{proc.os}"))
        if _matches(proc, self._appctx.get(proc.os, set())):
            out.append(("AppContextFilter", f"{proc.name} is not known to use pub/sub (AppContextFilter.{proc.os})"))
        if proc.executable and _USER_WRITABLE.search(proc.executable) and not _SYSTEM_PATHS.search(proc.executable):
            out.append(("executable_location", f"{proc.executable} is in a user-writable place"))
        return out

    def evaluate(self, now_ns: int | None = None) -> list[Alert]:
        """Score every (host, process, broker) of the window ending at now_ns; new and changed alerts."""
        now = self.latest_ns if now_ns is None else int(now_ns)
        lo = now - self._window_ns
        while self._activities and self._activities[0].ts_ns < lo:
            self._activities.popleft()
        self._expire_joins(lo)
        groups: dict[tuple, list[_Activity]] = defaultdict(list)
        # where a process's own connects say where it went, its command line's broker name is that address
        connected = {id(a.proc): a.dst for a in self._activities if a.via == "connect" and a.ts_ns <= now}
        for act in self._activities:
            if act.ts_ns > now:
                continue
            rule = RULE_BY_OS.get(act.proc.os)
            if rule is None or self._is_known(act.proc):
                continue
            dst, domain = act.dst, act.domain
            if dst is None and domain:
                addrs = self.dns.addresses_of(domain)
                dst = min(addrs) if addrs else connected.get(id(act.proc))
            broker = dst if dst is not None else domain
            groups[(rule, act.proc.host, act.proc.name.lower(), broker, act.dst_port)].append(act)
        # a process that only names the broker on its command line (osascript running curl, a shell loop) while
        # another process on the host made the connections to it: one alert, on the one that connected
        # (a launcher whose log names no host goes with the host that connected to that broker)
        connecting: dict[tuple, list[str]] = defaultdict(list)  # (rule, broker, port) -> hosts that connected
        for k, g in groups.items():
            if any(a.via == "connect" for a in g):
                connecting[(k[0], k[3], k[4])].append(k[1])
        launchers: dict[tuple, list[str]] = defaultdict(list)
        for k in list(groups):
            hosts = connecting.get((k[0], k[3], k[4]), ())
            if all(a.via == "exec" for a in groups[k]) and (k[1] in hosts or (not k[1] and len(set(hosts)) == 1)):
                launchers[(k[0], k[1] or hosts[0], k[3], k[4])].append(groups.pop(k)[-1].proc.name)
        if not groups:
            return []
        keys = list(groups)
        acts = [sorted(groups[k], key=lambda a: a.ts_ns) for k in keys]
        counts = np.array([len(a) for a in acts], np.int64)
        offsets = np.zeros(len(keys) + 1, np.int64)
        np.cumsum(counts, out=offsets[1:])
        t_s = np.fromiter((a.ts_ns / NS for g in acts for a in g), np.float64, int(offsets[-1]))
        beacon = score_segments(offsets, t_s, self.beacon_params)
        window_start = (now // self._window_ns) * self._window_ns
        alerts = []
        for j, key in enumerate(keys):
            alert = self._decide(key, acts[j], beacon[j], window_start)
            named_by = launchers.get((key[0], key[1], key[3], key[4]))
            if alert is not None and named_by:
                alert.evidence["broker_named_by"] = sorted(set(named_by))
            if alert is not None:
                alerts.append(alert)
        self._alerts = {k: a for k, a in self._alerts.items()
                        if a.window_start_ns >= window_start - self._window_ns}
        out = []
        for a in alerts:
            prev = self._alerts.get(a.key)
            if prev is not None:
                if prev.evidence["fired"] == a.evidence["fired"] and abs(prev.score - a.score) < 5.0:
                    continue
                a.revision = prev.revision + 1
            self._alerts[a.key] = a
            out.append(a)
        self.stats.alerts += len(out)
        return out

    def _decide(self, key: tuple, acts: list[_Activity], b: np.ndarray, window_start: int) -> Alert | None:
        rule, host, _, broker, dport = key
        cfg, w = self.config, self._weights
        last = acts[-1]
        proc = next((a.proc for a in reversed(acts) if a.proc.command_line), last.proc)
        inv = next((i for i in (a.proc.invocation for a in reversed(acts)) if i is not None), None)
        dst = broker if isinstance(broker, tuple) else None
        domain = broker if isinstance(broker, str) else next((a.domain for a in acts if a.domain), "")
        if dst is not None and not domain:
            domain = self.dns.name_of(dst)
        reasons: dict[str, str] = {}
        fired: list[str] = []
        # is it pub/sub at all?
        listed = self._ports.get(dport)
        path = inv.path if inv is not None else ""
        uri_hit = bool(path) and any(r.search(path) for r in self._uri)
        named_broker = inv is not None and inv.tool != "curl" and inv.tool != "wget" and bool(inv.broker) and \
            (inv.library or inv.tool.startswith("mosquitto") or inv.scheme.startswith(("mqtt", "amqp")))
        if listed:
            reasons["ProtocolPortList"] = f"destination port {dport} is listed for {listed}"
        if uri_hit:
            reasons["URIPathRegex"] = f"URI path {path!r} matches a broker path"
        if not (listed or uri_hit or named_broker):
            return None
        # allowlist
        if dst is not None and len(cfg.allow):
            if cfg.allow.match(np.array([dst[0]], np.uint64), np.array([dst[1]], np.uint64),
                               np.array([dport], np.int32))[0] >= 0:
                return None
        if domain and domain.lower() in {h.lower() for h in cfg.allow.hostnames}:
            return None
        reasons["BrokerAllowList"] = "destination is not in the allowlist"
        # the process
        cls = self._classify(proc)
        if not cls:
            return None
        score = w["process"]
        for element, why in cls:
            reasons[element] = why
        analytics = ["suspicious_process"]
        evidence: dict = {"events": len(acts), "connections": sum(a.via == "connect" for a in acts),
                          "process_starts": sum(a.via == "exec" for a in acts)}
        # beaconing
        bscore = float(b[BF["score"]]) if int(b[BF["events"]]) >= self.beacon_params.min_beats else 0.0
        if bscore >= 0.5:
            score += w["beaconing"] * bscore
            analytics.append("beaconing")
            reasons["TimeWindow"] = (f"beaconing over the {cfg.TimeWindow.window_s:g} s window: period "
                                     f"{b[BF['period_s']]:.1f} s, jitter {b[BF['jitter']]:.2f}, "
                                     f"{b[BF['missed_fraction']]:.0%} beats missed, beacon score {bscore:.2f}")
        evidence.update(period_s=round(float(b[BF["period_s"]]), 3), jitter=round(float(b[BF["jitter"]]), 3),
                        missed_beat_fraction=round(float(b[BF["missed_fraction"]]), 3), beacon_score=round(bscore, 3))
        # one publication = the activities within a second of each other (a tool's start and its connect)
        t = np.array([a.ts_ns for a in acts], np.int64)
        starts = t[np.concatenate(([True], np.diff(t) > NS))]
        gaps = np.diff(starts) / NS
        if len(starts) >= self.params.hf_min_events and float(np.median(gaps)) <= self.params.hf_max_period_s:
            score += w["high_frequency"]
            analytics.append("high_frequency_publication")
            text = f"high-frequency publication: {len(starts)} over {float(gaps.sum()):.0f} s"
            reasons["TimeWindow"] = reasons["TimeWindow"] + "; " + text if "TimeWindow" in reasons else text
        elif len(starts) >= 3 and "beaconing" not in analytics:
            score += w["repeated"]
        # reputation: the address, or the name the host used
        rep = ""
        if dst is not None and len(cfg.reputation):
            i = cfg.reputation.match(np.array([dst[0]], np.uint64), np.array([dst[1]], np.uint64),
                                     np.array([dport], np.int32))[0]
            if i >= 0:
                rep = cfg.reputation.labels[i]
        if not rep and domain:
            hit = domain_matches(domain, cfg.reputation_domains)
            if hit:
                rep = f"{domain} (matches {hit.lstrip('=')})"
        if rep:
            score += w["reputation"]
            analytics.append("reputation")
            reasons["BrokerReputationList"] = f"destination matches {rep}"
            evidence["reputation_hit"] = rep
        # what the command line says
        if inv is not None:
            evidence["invocation"] = inv.evidence()
            if inv.topic:
                ts, why = topic_score(inv.topic, cfg.TopicAnomalyScore)
                evidence["topic_score"] = ts
                if ts >= cfg.TopicAnomalyScore.threshold:
                    score += w["topic"]
                    analytics.append("topic_anomaly")
                    reasons["TopicAnomalyScore"] = f"topic {inv.topic!r} scores {ts:.2f} ({', '.join(why)})"
            if inv.message:
                ps, why = payload_score(inv.message, cfg.PayloadLengthThreshold)
                evidence["payload_score"] = ps
                if ps >= 0.5:
                    score += w["payload"]
                    analytics.append("obfuscated_payload")
                    reasons["PayloadLengthThreshold"] = "message on the command line: " + ", ".join(why)
            if inv.tls or dport in (8883, 5671, 5223, 61614, 443, 8084):
                score += w["encrypted"]
                evidence["encrypted"] = True
        elif dport in (8883, 5671, 5223, 61614, 443, 8084):
            score += w["encrypted"]
            evidence["encrypted"] = True
        if uri_hit:
            score += w["uri_path"]
            analytics.append("broker_uri")
        score = min(100.0, score)
        if score < self.params.alert_score:
            return None
        fired_list = [k for k in reasons]
        evidence.update(analytics=analytics, fired=fired_list, why=reasons)
        src = next((a.src for a in reversed(acts) if a.src is not None), self._host_addr.get(host))
        protocol = listed or (APP_PROTOCOLS[6] if uri_hit else (inv.scheme.rstrip("s") if inv and inv.scheme else
                                                               "unknown"))
        p, h, user = proc.ecs()
        extra: dict = {}
        if user:
            extra["user"] = {"name": user}
        if domain:
            extra["destination"] = {"domain": domain}
        return Alert(rule, last.ts_ns, src or (0, 0), dst or (0, 0), dport, protocol, score, evidence, window_start,
                     process=p, host=h, extra=extra)

    def counters(self) -> dict[str, int]:
        """The counters as brokerwatch_endpoint_* name -> value."""
        s = self.stats
        return {"brokerwatch_endpoint_events_total": s.events,
                "brokerwatch_endpoint_processes_evicted_total": s.processes_evicted,
                "brokerwatch_endpoint_activities_dropped_total": s.activities_dropped,
                "brokerwatch_endpoint_flows_attributed_total": s.flows_attributed_port,
                "brokerwatch_endpoint_hosts_learned_total": s.hosts_learned,
                "brokerwatch_endpoint_suppressed_known_client_total": s.suppressed_known_client,
                "brokerwatch_endpoint_alerts_total": s.alerts}


def _matches(proc: ProcessContext, names: set[str]) -> bool:
    """True when the process's name (with or without .exe) or its executable path is in names."""
    if not names:
        return False
    n = proc.name.lower()
    if n in names or (n.endswith(".exe") and n[:-4] in names) or n + ".exe" in names:
        return True
    exe = proc.executable.lower()
    return bool(exe) and (exe in names or any(exe.endswith("/" + k) or exe.endswith("\\" + k) for k in names
                                              if "/" in k or "\\" in k))


def _routable(addr: tuple[int, int]) -> bool:
    """False for loopback, unspecified and link-local addresses (a host's address is none of them)."""
    text = words_to_ip(*addr)
    return not (text.startswith(("127.", "0.", "169.254.", "fe80:")) or text in ("::", "::1"))
