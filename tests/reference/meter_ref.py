"""Plain-Python twins of the flow meter's kernels (collector/flows/meter.py): frame parsing and the flow table.

Written from the same rules (softflowd's expiry, the client side by SYN / server port / port range / first packet),
with dicts and bytes instead of arrays, so that the kernels can be checked against them packet by packet.
"""

from __future__ import annotations

from collector.flows.meter import (R_END, R_FIN, R_FULL, R_GENERAL, R_ICMP, R_MAXLIFE, R_OVERBYTES, R_RST, R_TCP,
                                   R_UDP, S_FIRST, S_PORT, S_RANGE, S_SYN, MeterParams)

NS = 1_000_000_000


def _v4(b: bytes) -> tuple[int, int]:
    return 0, 0xFFFF00000000 | int.from_bytes(b, "big")


def _v6(b: bytes) -> tuple[int, int]:
    return int.from_bytes(b[:8], "big"), int.from_bytes(b[8:], "big")


def parse_frame(frame: bytes, linktype: int) -> dict:
    """The parsed packet as a dict (status, src, dst, sport, dport, proto, tcp_flags, bytes, payload, tunnel)."""
    out = {"status": 0, "tunnel": 0, "sport": 0, "dport": 0, "tcp_flags": 0, "payload": b""}
    eth = linktype == 1
    p = 0
    end = len(frame)
    if linktype in (0, 108):
        p = 4
    elif linktype == 113:
        if end < 16:
            return {**out, "status": 2}
        if frame[14:16] not in (b"\x08\x00", b"\x86\xdd"):
            return {**out, "status": 1}
        p = 16
    elif linktype == 276:
        if end < 20:
            return {**out, "status": 2}
        if frame[0:2] not in (b"\x08\x00", b"\x86\xdd"):
            return {**out, "status": 1}
        p = 20
    elif linktype not in (1, 101, 228, 229):
        return {**out, "status": 4}
    for depth in range(4):
        if eth:
            if end - p < 14:
                return {**out, "status": 2}
            et = int.from_bytes(frame[p + 12:p + 14], "big")
            p += 14
            while et in (0x8100, 0x88A8, 0x9100) and p + 4 <= end:
                et = int.from_bytes(frame[p + 2:p + 4], "big")
                p += 4
            if et in (0x8847, 0x8848):
                while p + 4 <= end and not frame[p + 2] & 1:
                    p += 4
                p += 4
                out["tunnel"] = 4
                if p >= end:
                    return {**out, "status": 2}
                v = frame[p] >> 4
                et = 0x0800 if v == 4 else 0x86DD if v == 6 else 0
            if et not in (0x0800, 0x86DD):
                return {**out, "status": 1}
            eth = False
        if end - p < 1:
            return {**out, "status": 2}
        ver = frame[p] >> 4
        first = True
        if ver == 4:
            if end - p < 20:
                return {**out, "status": 2}
            ihl = (frame[p] & 15) * 4
            total = int.from_bytes(frame[p + 2:p + 4], "big")
            if ihl < 20 or total < ihl:
                return {**out, "status": 3}
            if end - p < ihl:
                return {**out, "status": 2}
            first = int.from_bytes(frame[p + 6:p + 8], "big") & 0x1FFF == 0
            proto = frame[p + 9]
            out["src"], out["dst"] = _v4(frame[p + 12:p + 16]), _v4(frame[p + 16:p + 20])
            out["bytes"] = total
            l4, l4_end = p + ihl, min(p + total, end)
        elif ver == 6:
            if end - p < 40:
                return {**out, "status": 2}
            plen = int.from_bytes(frame[p + 4:p + 6], "big")
            proto = frame[p + 6]
            out["src"], out["dst"] = _v6(frame[p + 8:p + 24]), _v6(frame[p + 24:p + 40])
            out["bytes"] = 40 + plen
            l4, l4_end = p + 40, (min(p + 40 + plen, end) if plen else end)
            while proto in (0, 43, 60, 44, 51) and l4 + 8 <= l4_end:
                nxt = frame[l4]
                if proto == 44:
                    first = first and int.from_bytes(frame[l4 + 2:l4 + 4], "big") & 0xFFF8 == 0
                    l4 += 8
                elif proto == 51:
                    l4 += (frame[l4 + 1] + 2) * 4
                else:
                    l4 += (frame[l4 + 1] + 1) * 8
                proto = nxt
        else:
            return {**out, "status": 3 if depth else 1}
        out.update(proto=proto, sport=0, dport=0, tcp_flags=0, payload=b"")
        if not first:
            return out
        body = frame[l4:l4_end]
        if proto == 6:
            if len(body) < 20:
                return out
            doff = (body[12] >> 4) * 4
            out.update(sport=int.from_bytes(body[0:2], "big"), dport=int.from_bytes(body[2:4], "big"),
                       tcp_flags=body[13], payload=body[doff:] if 20 <= doff <= len(body) else b"")
            return out
        if proto == 17:
            if len(body) < 8:
                return out
            out.update(sport=int.from_bytes(body[0:2], "big"), dport=int.from_bytes(body[2:4], "big"),
                       payload=body[8:])
            if out["dport"] == 4789 and len(body) >= 30 and body[8] & 8 and depth < 3:
                out["tunnel"] = 2
                p, end, eth = l4 + 16, l4_end, True
                continue
            return out
        if proto == 47:
            if len(body) < 4 or depth >= 3:
                return out
            gf = body[0]
            ptype = int.from_bytes(body[2:4], "big")
            hl = 4 + 4 * bool(gf & 0x80) + 4 * bool(gf & 0x20) + 4 * bool(gf & 0x10)
            if body[1] & 7 or hl > len(body) or ptype not in (0x0800, 0x86DD, 0x6558):
                return out
            out["tunnel"] = 1
            p, end, eth = l4 + hl, l4_end, ptype == 0x6558
            continue
        if proto in (4, 41):
            if depth >= 3:
                return out
            out["tunnel"] = 3
            p, end = l4, l4_end
            continue
        if proto in (1, 58) and len(body) >= 2:
            out["dport"] = body[0] * 256 + body[1]
        return out
    return out


class MeterRef:
    """The flow table in Python: dict of flows by canonical key, sweeps every expint of packet time."""

    def __init__(self, params: MeterParams, server_ports: set[int]):
        self.p = params
        self.server_ports = server_ports
        self.flows: dict[tuple, dict] = {}
        self.seq = 1
        self.next_check = 0
        self.out: list[dict] = []

    def _expiry(self, f: dict) -> tuple[int, int]:
        p = self.p
        to = {k: int(getattr(p, k) * NS) for k in ("tcp", "tcp_rst", "tcp_fin", "udp", "icmp", "general", "maxlife")}
        if f["bytes"][0] > 1 << 31 or f["bytes"][1] > 1 << 31:
            return -1, R_OVERBYTES
        if to["maxlife"] > 0 and f["end"] - f["start"] > to["maxlife"]:
            return -1, R_MAXLIFE
        flags = f["flags"][0] | f["flags"][1]
        if f["proto"] == 6 and to["tcp_rst"] > 0 and flags & 4:
            at, why = f["end"] + to["tcp_rst"], R_RST
        elif f["proto"] == 6 and to["tcp_fin"] > 0 and f["flags"][0] & 1 and f["flags"][1] & 1:
            at, why = f["end"] + to["tcp_fin"], R_FIN
        elif f["proto"] == 6 and to["tcp"] > 0:
            at, why = f["end"] + to["tcp"], R_TCP
        elif f["proto"] == 17 and to["udp"] > 0:
            at, why = f["end"] + to["udp"], R_UDP
        elif f["proto"] in (1, 58) and to["icmp"] > 0:
            at, why = f["end"] + to["icmp"], R_ICMP
        else:
            at, why = f["end"] + to["general"], R_GENERAL
        if to["maxlife"] > 0 and f["start"] + to["maxlife"] < at:
            at, why = f["start"] + to["maxlife"], R_MAXLIFE
        return at, why

    def _emit(self, key: tuple, reason: int) -> None:
        f = self.flows.pop(key)
        self.out.append({**f, "reason": reason})

    def packet(self, ts: int, pk: dict) -> None:
        """Meter one parsed packet (status 0 only; others are skipped)."""
        if pk["status"]:
            return
        expint = int(self.p.expint * NS)
        if expint > 0 and ts >= self.next_check:
            if self.next_check:
                for key in [k for k, f in self.flows.items() if f["expires"] <= ts]:
                    self._emit(key, self.flows[key]["reason"])
            self.next_check = ts + expint
        src, dst = (pk["src"], pk["sport"]), (pk["dst"], pk["dport"])
        side = 1 if src > dst else 0
        a, b = (dst, src) if side else (src, dst)
        key = (a, b, pk["proto"])
        f = self.flows.get(key)
        if f is None:
            if len(self.flows) >= self.p.max_flows:
                live = sorted(self.flows, key=lambda k: self.flows[k]["expires"])
                for k in live[:max(1, len(live) // 8)]:
                    self._emit(k, R_FULL)
            client, strength = self._by_ports(a[1], b[1])
            f = self.flows[key] = {"start": ts, "end": ts, "a": a, "b": b, "proto": pk["proto"], "bytes": [0, 0],
                                   "packets": [0, 0], "flags": [0, 0], "seq": self.seq, "expires": 0,
                                   "client": side if client < 0 else client, "strength": strength}
            self.seq += 1
        f["bytes"][side] += pk["bytes"]
        f["packets"][side] += 1
        f["flags"][side] |= pk["tcp_flags"]
        f["start"] = min(f["start"], ts)
        f["end"] = max(f["end"], ts)
        if pk["proto"] == 6 and pk["tcp_flags"] & 2 and f["strength"] < S_SYN:
            f["client"] = 1 - side if pk["tcp_flags"] & 0x10 else side
            f["strength"] = S_SYN
        if f["expires"] != -1:
            f["expires"], f["reason"] = self._expiry(f)

    def _by_ports(self, pa: int, pb: int) -> tuple[int, int]:
        sa, sb = pa in self.server_ports, pb in self.server_ports
        if sa and not sb:
            return 1, S_PORT
        if sb and not sa:
            return 0, S_PORT
        if pa < 1024 <= pb:
            return 1, S_RANGE
        if pb < 1024 <= pa:
            return 0, S_RANGE
        return -1, S_FIRST

    def flush(self) -> list[dict]:
        """Every flow emitted so far plus those left at the end."""
        for key in list(self.flows):
            self._emit(key, R_END)
        return self.out
