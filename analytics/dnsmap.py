"""A bounded passive-DNS map: which name a host resolved to an address, from host DNS events (Sysmon 22, osquery).

A flow to an address that a host resolved from a reputation domain or a dynamic-DNS suffix in
``BrokerReputationList`` then carries that name as evidence. Least recently seen entries are evicted first.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np


class PassiveDNS:
    """address words -> (name, last seen ns), and name -> addresses, bounded to ``max_entries`` addresses."""

    def __init__(self, max_entries: int = 262_144) -> None:
        self.max_entries = max_entries
        self._by_addr: OrderedDict[tuple[int, int], tuple[str, int]] = OrderedDict()
        self._by_name: dict[str, set[tuple[int, int]]] = {}
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._by_addr)

    def add(self, name: str, addr: tuple[int, int], ts_ns: int) -> None:
        """Remember that ``name`` resolved to ``addr`` at ts_ns (a later answer for the address replaces it)."""
        name = name.rstrip(".").lower()
        if not name:
            return
        old = self._by_addr.pop(addr, None)
        if old is not None and old[0] != name:
            self._by_name.get(old[0], set()).discard(addr)
        self._by_addr[addr] = (name, ts_ns)
        self._by_name.setdefault(name, set()).add(addr)
        while len(self._by_addr) > self.max_entries:
            gone, (gname, _) = self._by_addr.popitem(last=False)
            addrs = self._by_name.get(gname)
            if addrs is not None:
                addrs.discard(gone)
                if not addrs:
                    del self._by_name[gname]
            self.evicted += 1

    def add_rows(self, names: list[str], hi: np.ndarray, lo: np.ndarray, ts: np.ndarray) -> None:
        """Many answers at once (dns_query rows of an endpoint batch)."""
        for name, h, l_, t in zip(names, hi.tolist(), lo.tolist(), ts.tolist()):
            self.add(name, (h, l_), t)

    def name_of(self, addr: tuple[int, int]) -> str:
        """The name last resolved to addr, or ''."""
        hit = self._by_addr.get(addr)
        return hit[0] if hit else ""

    def addresses_of(self, name: str) -> set[tuple[int, int]]:
        """The addresses name was seen to resolve to."""
        return set(self._by_name.get(name.rstrip(".").lower(), ()))


def domain_matches(name: str, reputation_domains: tuple[str, ...]) -> str:
    """The ``BrokerReputationList`` entry a host name falls under ('.suffix' or '=exact' entries), or ''."""
    name = name.rstrip(".").lower()
    if not name:
        return ""
    for entry in reputation_domains:
        if entry.startswith("="):
            if name == entry[1:]:
                return entry[1:]
        elif name.endswith(entry) or name == entry[1:]:
            return entry
    return ""
