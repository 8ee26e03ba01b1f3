"""Exporter and interface names over SNMP (pysnmp's asyncio API), cached and refreshed in the background.

A flow record says "exporter 10.0.0.1, ifIndex 17"; the analyst thinks "edge-rtr-2, Gi0/0/1 (uplink to ISP-B)".
``SnmpPoller`` asks each exporter's agent (v1, v2c with a community, v3 USM with auth and priv, from the
``Exporters`` config key) for sysName, sysDescr and, per ifIndex, ifName/ifDescr/ifAlias/ifSpeed (which OIDs: the
``device_profiles/snmp/`` profile whose ``match`` fits sysDescr). Results are cached and refreshed every ``ttl``;
requests in flight are bounded (``concurrency``) and each has a timeout; an agent that does not answer is retried
after 1, 2, 4 ... polls' time, at most ``backoff_max``, and every failure is counted
(``brokerwatch_snmp_polls_total{result}``, ``brokerwatch_snmp_failures_total{exporter,reason}``).

Nothing on a receive path waits for it: ``watch()`` only notes an address, and the lookups (``name``,
``interface``) read the cache. It runs on an event loop of its own in a daemon thread (``start()``), beside
whatever the process does. Offline tools (``decode``, ``replay``) may ``wait_tried`` for the first answer of the
exporters they have seen, bounded by the polls' own timeouts.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from analytics.exporters import ExportersConfig, SnmpSettings
from collector.metrics import Counters, RateLimitedLog

log = logging.getLogger("brokerwatch.snmp")
_ratelog = RateLimitedLog(1.0, log)

#: The shipped SNMP profiles.
PROFILE_DIR = Path(__file__).resolve().parents[2] / "device_profiles" / "snmp"
#: Interfaces kept per exporter at most (a hostile or broken agent cannot fill memory).
MAX_INTERFACES = 65536
#: Exporters polled at most (a spoofed flood of exporter addresses cannot grow the table without bound).
MAX_EXPORTERS = 65536


@dataclass(frozen=True)
class Interface:
    """What the agent says of one ifIndex."""

    name: str = ""
    descr: str = ""
    alias: str = ""
    speed: int = 0  # bit/s


@dataclass
class ExporterInfo:
    """What the agent says of one exporter, and when."""

    name: str = ""
    descr: str = ""
    profile: str = ""
    interfaces: dict[int, Interface] = field(default_factory=dict)
    fetched: float = 0.0  # time.monotonic()


@dataclass(frozen=True)
class SnmpProfile:
    """OIDs to read from an agent, from ``device_profiles/snmp/<name>.yaml``."""

    name: str
    match: re.Pattern | None
    sys_name: str
    sys_descr: str
    columns: dict[str, tuple[tuple[str, int], ...]]  # field -> ((column OID, scale), ...) in order of preference

    @staticmethod
    def load(path: Path) -> "SnmpProfile":
        """A profile from its YAML file; ValueError naming the file when it is malformed."""
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        try:
            rx = (data.get("match") or {}).get("sysDescr")
            cols = {}
            for f in ("name", "descr", "alias", "speed"):
                entries = []
                for e in data["interfaces"].get(f, []):
                    oid, scale = (e["oid"], int(e.get("scale", 1))) if isinstance(e, dict) else (e, 1)
                    entries.append((_oid(oid), scale))
                cols[f] = tuple(entries)
            return SnmpProfile(str(data["name"]), re.compile(rx) if rx else None, _oid(data["system"]["name"]),
                               _oid(data["system"]["descr"]), cols)
        except (KeyError, TypeError, AttributeError, ValueError, re.error) as exc:
            raise ValueError(f"{path}: not an SNMP profile: {exc!r}") from None


def _oid(text) -> str:
    text = str(text).strip(".")
    if not re.fullmatch(r"\d+(\.\d+)+", text):
        raise ValueError(f"not a numeric OID: {text!r}")
    return text


def load_profiles(directory: Path = PROFILE_DIR) -> list[SnmpProfile]:
    """The profiles of a directory: those with a sysDescr match first (file-name order), the fallback last."""
    profiles = [SnmpProfile.load(p) for p in sorted(Path(directory).glob("*.yaml"))]
    profiles.sort(key=lambda p: p.match is None)
    if not profiles or profiles[-1].match is not None:
        raise ValueError(f"{directory}: no fallback SNMP profile (one with an empty match)")
    return profiles


class _Target:
    __slots__ = ("address", "settings", "due", "failures", "tried", "inflight", "delays")

    def __init__(self, address: str, settings: SnmpSettings):
        self.address = address
        self.settings = settings
        self.due = 0.0
        self.failures = 0
        self.tried = threading.Event()  # set once the first poll ended, answered or not
        self.inflight = False
        self.delays: list[float] = []  # the back-off waits since the last answer


class SnmpPoller:
    """Polls every watched exporter that the config allows, caches what the agents say; see the module doc."""

    def __init__(self, config: ExportersConfig, counters: Counters | None = None,
                 profiles: list[SnmpProfile] | None = None):
        self.config = config
        self.counters = counters if counters is not None else Counters()
        self.profiles = profiles if profiles is not None else load_profiles()
        self.cache: dict[str, ExporterInfo] = {}
        self._targets: dict[str, _Target] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._task: asyncio.Task | None = None
        self._engine = None
        # every configured single address is polled from the start, seen or not
        for d in config.devices:
            if d.cidr.endswith(("/32", "/128")):
                self.watch(d.cidr.rsplit("/", 1)[0])

    # ---------------------------------------------------------------------------------------------- lookups

    def name(self, address: str) -> str | None:
        """observer.name of an exporter: the config's name, else the agent's sysName (None when neither)."""
        d = self.config.device_for(address)
        if d is not None and d.name:
            return d.name
        info = self.cache.get(address)
        return info.name if info is not None and info.name else None

    def interface(self, address: str, index: int) -> tuple[str | None, str | None]:
        """(name, alias) of an exporter's ifIndex: the config's name, else the agent's; None where unknown."""
        d = self.config.device_for(address)
        info = self.cache.get(address)
        itf = info.interfaces.get(index) if info is not None else None
        name = d.interfaces.get(index) if d is not None else None
        if name is None and itf is not None:
            name = itf.name or itf.descr or None
        return name, (itf.alias or None) if itf is not None else None

    # ---------------------------------------------------------------------------------------------- control

    def watch(self, address: str) -> None:
        """Poll address from now on if the config allows it (cheap, idempotent, callable from any thread)."""
        if address in self._targets or len(self._targets) >= MAX_EXPORTERS:
            return
        settings = self.config.snmp_for(address)
        if settings is None:
            return
        self._targets[address] = _Target(address, settings)
        if self._loop is not None and self._wake is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    def wait_tried(self, addresses, timeout: float) -> None:
        """Block until each watched address among ``addresses`` had its first poll end, or ``timeout`` passes."""
        end = time.monotonic() + timeout
        for a in addresses:
            t = self._targets.get(a)
            if t is not None:
                t.tried.wait(max(0.0, end - time.monotonic()))

    def start(self) -> "SnmpPoller":
        """Run the poller on its own event loop in a daemon thread."""
        ready = threading.Event()

        def main() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            loop.set_exception_handler(self._loop_error)
            self._loop = loop
            self._task = loop.create_task(self.run())
            loop.call_soon(ready.set)
            try:
                loop.run_until_complete(self._task)
            except asyncio.CancelledError:
                pass
            finally:
                loop.close()

        self._thread = threading.Thread(target=main, name="brokerwatch-snmp", daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def _loop_error(self, loop: asyncio.AbstractEventLoop, context: dict) -> None:
        # An answer that arrives after its request timed out finds its transport closed by pysnmp, which raises in
        # a callback: harmless, counted rather than printed as a traceback.
        exc = context.get("exception")
        if type(exc).__name__ == "CarrierError" and "Unregistered transport" in str(exc):
            self.counters.inc("brokerwatch_snmp_late_answers_total")
            return
        loop.default_exception_handler(context)

    def stop(self) -> None:
        """End the thread started by ``start`` (requests in flight are abandoned)."""
        if self._loop is not None and self._task is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._task.cancel)
            self._thread.join(10)

    # ---------------------------------------------------------------------------------------------- polling

    async def run(self) -> None:
        """Poll due targets for ever with at most ``concurrency`` requests in flight."""
        from pysnmp.hlapi.v3arch.asyncio import SnmpEngine

        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._engine = SnmpEngine()
        sem = asyncio.Semaphore(self.config.snmp.concurrency)
        tasks: set[asyncio.Task] = set()
        try:
            while True:
                now = time.monotonic()
                next_due = now + 1.0
                for t in list(self._targets.values()):
                    if t.inflight:
                        continue
                    if t.due <= now:
                        t.inflight = True
                        task = asyncio.create_task(self._poll_bounded(sem, t))
                        tasks.add(task)
                        task.add_done_callback(tasks.discard)
                    else:
                        next_due = min(next_due, t.due)
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), max(0.01, next_due - time.monotonic()))
                except asyncio.TimeoutError:
                    pass
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._engine.close_dispatcher()

    async def _poll_bounded(self, sem: asyncio.Semaphore, t: _Target) -> None:
        try:
            async with sem:
                await self.poll(t)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a poll must never end the poller; counted and logged
            self._failed(t, "internal")
            _ratelog.warning("snmp-internal", "SNMP poll of %s failed: %r", t.address, exc)
        finally:
            t.inflight = False
            t.tried.set()

    async def poll(self, t: _Target) -> bool:
        """Ask one agent for everything the profile names; True when it answered (cache updated)."""
        s = t.settings
        # one poll may make several requests, each with its own timeout and retries; this bounds the whole
        budget = s.timeout_s * (s.retries + 1) * 16
        try:
            info = await asyncio.wait_for(self._query(t.address, s), budget)
        except asyncio.TimeoutError:
            info = "timeout"
        if isinstance(info, str):
            self._failed(t, info)
            return False
        self.cache[t.address] = info
        t.failures = 0
        t.delays = []
        t.due = time.monotonic() + s.ttl_s
        self.counters.inc("brokerwatch_snmp_polls_total", ("ok",))
        return True

    def _failed(self, t: _Target, reason: str) -> None:
        s = t.settings
        t.failures += 1
        # back off: 1, 2, 4 ... polls' worth of time, at most backoff_max; a cached answer is kept meanwhile
        delay = min(s.timeout_s * (s.retries + 1) * (1 << min(t.failures - 1, 20)), s.backoff_max_s)
        if len(t.delays) < 64:
            t.delays.append(delay)
        t.due = time.monotonic() + delay
        self.counters.inc("brokerwatch_snmp_polls_total", (reason,))
        self.counters.inc("brokerwatch_snmp_failures_total", (t.address, reason))
        _ratelog.warning(f"snmp-{reason}", "SNMP poll of %s: %s (%d in a row; next try in %.1f s)", t.address,
                         reason, t.failures, t.due - time.monotonic())

    async def _query(self, address: str, s: SnmpSettings) -> ExporterInfo | str:
        """The agent's answers, or the reason for failing ('timeout', 'error', 'auth')."""
        from pysnmp.hlapi.v3arch.asyncio import ContextData, Udp6TransportTarget, UdpTransportTarget

        auth = _auth_data(s)
        kind = Udp6TransportTarget if ":" in address else UdpTransportTarget
        target = await kind.create((address, s.port), timeout=s.timeout_s, retries=s.retries)
        engine = self._engine
        ctx = ContextData()
        # sysDescr first: it chooses the profile, whose OIDs say what else to read
        fallback = self.profiles[-1]
        got = await _system(engine, auth, target, ctx, fallback)
        if isinstance(got, str):
            return got
        name, descr = got
        profile = next((p for p in self.profiles if p.match is not None and p.match.search(descr)), fallback)
        if (profile.sys_name, profile.sys_descr) != (fallback.sys_name, fallback.sys_descr):
            got = await _system(engine, auth, target, ctx, profile)
            if isinstance(got, str):
                return got
            name, descr = got
        tables: dict[str, dict[int, object]] = {}
        reps = 16
        for oid in dict.fromkeys(o for cols in profile.columns.values() for o, _scale in cols):
            got = await self._walk(engine, auth, target, ctx, oid, s.version, reps)
            if isinstance(got, str):
                return got
            tables[oid] = got
            # the first column tells how many rows the others have: ask for them in one GETBULK each (decoding
            # the rows past a column's end, which an agent returns up to max-repetitions, was most of a poll's CPU)
            reps = min(64, max(4, len(got) + 1))
        interfaces: dict[int, Interface] = {}
        indexes = sorted({i for t in tables.values() for i in t})[:MAX_INTERFACES]
        for i in indexes:
            values = {}
            for f, cols in profile.columns.items():
                for oid, scale in cols:
                    v = tables[oid].get(i)
                    if v is None:
                        continue
                    if f == "speed":
                        try:
                            n = int(v) * scale
                        except (TypeError, ValueError):
                            continue
                        if n:
                            values[f] = n
                            break
                    elif _text(v):
                        values[f] = _text(v)
                        break
            interfaces[i] = Interface(**values)
        return ExporterInfo(name, descr, profile.name, interfaces, time.monotonic())

    async def _walk(self, engine, auth, target, ctx, oid: str, version: str,
                    reps: int = 16) -> dict[int, object] | str:
        from pysnmp.hlapi.v3arch.asyncio import ObjectIdentity, ObjectType, bulk_walk_cmd, walk_cmd

        out: dict[int, object] = {}
        prefix = tuple(int(x) for x in oid.split("."))
        if version == "1":
            walker = walk_cmd(engine, auth, target, ctx, ObjectType(ObjectIdentity(oid)), lexicographicMode=False,
                              lookupMib=False)
        else:
            walker = bulk_walk_cmd(engine, auth, target, ctx, 0, reps, ObjectType(ObjectIdentity(oid)),
                                   lexicographicMode=False, lookupMib=False)
        async for err, status, _i, binds in walker:
            if err or status:
                if status and str(status.prettyPrint()) in ("noSuchName",):  # v1: end of the column
                    break
                return _reason(err, status)
            for name, value in binds:
                o = tuple(name)
                if o[:len(prefix)] != prefix or len(o) != len(prefix) + 1 or _absent(value):
                    continue
                out[o[-1]] = value
                if len(out) >= MAX_INTERFACES:
                    return out
        return out


async def _system(engine, auth, target, ctx, profile: SnmpProfile) -> tuple[str, str] | str:
    """(sysName, sysDescr) as the profile's OIDs give them, or the reason for failing."""
    from pysnmp.hlapi.v3arch.asyncio import ObjectIdentity, ObjectType, get_cmd

    # lookupMib=False: answers stay numeric OIDs; resolving each against the MIBs was most of a poll's CPU
    err, status, _i, binds = await get_cmd(engine, auth, target, ctx, ObjectType(ObjectIdentity(profile.sys_name)),
                                           ObjectType(ObjectIdentity(profile.sys_descr)), lookupMib=False)
    if err or status:
        return _reason(err, status)
    name, descr = (_text(v) for _o, v in binds)
    return name, descr


def _absent(value) -> bool:
    return type(value).__name__ in ("NoSuchObject", "NoSuchInstance", "EndOfMibView", "Null")


def _text(value) -> str:
    if _absent(value):
        return ""
    if hasattr(value, "asOctets"):
        return value.asOctets().decode("utf-8", "replace").strip("\x00").strip()
    return str(value.prettyPrint() if hasattr(value, "prettyPrint") else value)


def _reason(err, status) -> str:
    text = str(err or (status.prettyPrint() if status else "")).lower()
    if "timeout" in text or "no snmp response" in text:
        return "timeout"
    if "auth" in text or "unknown user" in text or "decrypt" in text or "usm" in text:
        return "auth"
    return "error"


def _auth_data(s: SnmpSettings):
    from pysnmp.hlapi.v3arch import asyncio as h

    if s.version in ("1", "2c"):
        return h.CommunityData(s.community, mpModel=0 if s.version == "1" else 1)
    auth = {"": h.usmNoAuthProtocol, "MD5": h.usmHMACMD5AuthProtocol, "SHA": h.usmHMACSHAAuthProtocol,
            "SHA-224": h.usmHMAC128SHA224AuthProtocol, "SHA-256": h.usmHMAC192SHA256AuthProtocol,
            "SHA-384": h.usmHMAC256SHA384AuthProtocol, "SHA-512": h.usmHMAC384SHA512AuthProtocol}[s.auth_protocol]
    priv = {"": h.usmNoPrivProtocol, "DES": h.usmDESPrivProtocol, "3DES": h.usm3DESEDEPrivProtocol,
            "AES": h.usmAesCfb128Protocol, "AES-192": h.usmAesCfb192Protocol,
            "AES-256": h.usmAesCfb256Protocol}[s.priv_protocol]
    return h.UsmUserData(s.user, s.auth_key or None, s.priv_key or None, authProtocol=auth, privProtocol=priv)
