"""Observer names on records and alerts: ``observer.name``, ``observer.ingress/egress.interface.name/.alias``.

``ObserverNames`` answers from the config's overrides and the SNMP poller's cache (never waiting on an agent).
``Enricher`` is what ``decode``, ``replay`` and the analytics process hold: per batch, ``seen(batch)`` notes the
exporters (vectorised: the rows of one datagram share an exporter, so only the first row of each run is looked at)
for the poller, and remembers which exporter and interfaces last carried each (source, destination, port) in a
direct-mapped table of numpy arrays, so that ``alerts(...)`` can say which device saw an alert's pair.
"""

from __future__ import annotations

import numpy as np

from analytics.alerts import Alert
from analytics.exporters import ExportersConfig
from analytics.schema import FLAG_NO_INTERFACES, FlowBatch, words_to_ip
from collector.enrich.snmp import SnmpPoller
from collector.metrics import Counters

#: Slots of the pair -> observer table (a cache: a collision replaces the older pair).
PAIR_SLOTS = 1 << 18
_SHIFT = np.uint64(64 - (PAIR_SLOTS.bit_length() - 1))


class ObserverNames:
    """Names of exporters and their interfaces: the config's, else what the SNMP poller cached."""

    def __init__(self, config: ExportersConfig, poller: SnmpPoller | None):
        self.config = config
        self.poller = poller

    def name(self, exporter: str) -> str | None:
        """observer.name of an exporter address, or None."""
        if self.poller is not None:
            return self.poller.name(exporter)
        d = self.config.device_for(exporter)
        return d.name if d is not None else None

    def describe(self, exporter: str, interface: dict) -> None:
        """Add ``name`` and ``alias`` to an ECS interface object ({"id": ifIndex}) where they are known."""
        if self.poller is not None:
            name, alias = self.poller.interface(exporter, interface["id"])
        else:
            d = self.config.device_for(exporter)
            name, alias = (d.interfaces.get(interface["id"]) if d is not None else None), None
        if name:
            interface["name"] = name
        if alias:
            interface["alias"] = alias


def enrichment_wanted(config: ExportersConfig) -> bool:
    """Whether the config names any exporter or interface, or polls SNMP."""
    return config.snmp_enabled or any(d.name or d.interfaces for d in config.devices)


class Enricher:
    """The SNMP poller (when the config enables it), the names, and the pair -> observer table."""

    def __init__(self, config: ExportersConfig, counters: Counters | None = None, start: bool = True):
        self.counters = counters if counters is not None else Counters()
        self.poller = SnmpPoller(config, self.counters) if config.snmp_enabled else None
        if self.poller is not None and start:
            self.poller.start()
        self.names = ObserverNames(config, self.poller)
        self._known: set[tuple[int, int]] = set()
        n = PAIR_SLOTS
        self._key = np.zeros((n, 5), np.uint64)  # src_hi, src_lo, dst_hi, dst_lo, dst_port
        self._obs = np.zeros((n, 4), np.uint64)  # exporter_hi, exporter_lo, in_if, out_if
        self._used = np.zeros(n, bool)
        self._noif = np.zeros(n, bool)

    def seen(self, batch: FlowBatch) -> list[str]:
        """Note a batch: its new exporters go to the poller (returned), its pairs to the observer table."""
        if not len(batch):
            return []
        c = batch.columns
        hi, lo = c["exporter_hi"], c["exporter_lo"]
        starts = np.flatnonzero(np.r_[True, (hi[1:] != hi[:-1]) | (lo[1:] != lo[:-1])])
        new = []
        for h, l in set(zip(hi[starts].tolist(), lo[starts].tolist())):  # per run of one exporter, not per row
            if (h, l) not in self._known and len(self._known) < 65536:
                self._known.add((h, l))
                address = words_to_ip(h, l)
                new.append(address)
                if self.poller is not None:
                    self.poller.watch(address)
        slot = _slot(c["src_lo"], c["dst_lo"], c["dst_port"])
        self._key[slot] = np.stack([c["src_hi"], c["src_lo"], c["dst_hi"], c["dst_lo"],
                                    c["dst_port"].astype(np.uint64)], axis=1)
        self._obs[slot] = np.stack([hi, lo, c["in_if"].astype(np.uint64), c["out_if"].astype(np.uint64)], axis=1)
        self._used[slot] = True
        self._noif[slot] = (c["flags"] & FLAG_NO_INTERFACES) != 0
        return new

    def wait(self, addresses: list[str], timeout: float | None = None) -> None:
        """Offline tools only: wait for the first poll of these exporters to end (each bounded by its timeout)."""
        if self.poller is not None and addresses:
            s = self.poller.config.snmp
            self.poller.wait_tried(addresses, timeout if timeout is not None else
                                   s.timeout_s * (s.retries + 1) * 16)

    def settle(self, timeout: float = 5.0) -> None:
        """Wait (at most ``timeout`` s in all) for the first poll of every exporter seen so far: the service's final
        pass, which already waits for its own work, names what it can."""
        if self.poller is not None:
            self.poller.wait_tried([words_to_ip(h, l) for h, l in self._known], timeout)

    def observer(self, src: tuple[int, int], dst: tuple[int, int], dst_port: int) -> dict | None:
        """The ECS ``observer`` object of the device that last carried this pair, or None."""
        i = int(_slot(np.array([src[1]], np.uint64), np.array([dst[1]], np.uint64),
                      np.array([dst_port], np.uint64))[0])
        if not self._used[i] or self._key[i].tolist() != [src[0], src[1], dst[0], dst[1], dst_port]:
            return None
        ex_hi, ex_lo, in_if, out_if = self._obs[i].tolist()
        exporter = words_to_ip(ex_hi, ex_lo)
        out: dict = {"ip": exporter}
        name = self.names.name(exporter)
        if name:
            out["name"] = name
        if not self._noif[i]:
            ingress, egress = {"id": in_if}, {"id": out_if}
            self.names.describe(exporter, ingress)
            self.names.describe(exporter, egress)
            out["ingress"] = {"interface": ingress}
            out["egress"] = {"interface": egress}
        return out

    def alerts(self, alerts: list[Alert]) -> list[Alert]:
        """Add ``observer`` (the device that saw the pair, its name and interfaces) to each alert."""
        for a in alerts:
            obs = self.observer(a.src, a.dst, a.dst_port)
            if obs is not None:
                a.extra["observer"] = obs
        return alerts

    def close(self) -> None:
        """Stop the poller's thread."""
        if self.poller is not None:
            self.poller.stop()


def _slot(src_lo: np.ndarray, dst_lo: np.ndarray, dst_port: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        h = (src_lo.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)) ^ (
            dst_lo.astype(np.uint64) * np.uint64(0xC2B2AE3D27D4EB4F)) ^ (
            dst_port.astype(np.uint64) * np.uint64(0x165667B19E3779F9))
    return (h >> _SHIFT).astype(np.int64)
