"""Linux audit (raw ``audit.log``) into endpoint events: records assembled into events by serial.

The kernel writes one audit event as several records that share ``msg=audit(SECONDS.MILLIS:SERIAL)``: a SYSCALL
record, auxiliary records (EXECVE, SOCKADDR, CWD, PATH, ...), PROCTITLE and, on kernels since 2.6.x with auditd 2.x,
an EOE ("end of event") record. Field meanings follow Red Hat's audit documentation (RHEL Security Hardening,
"Understanding audit log files" and the audit field dictionary, ``audit-documentation/specs/fields/field-dictionary``).

- ``connect`` (x86_64 42, and the other architectures' numbers from ``arch=``; the resolved name where auditd wrote it,
  as ``syscall=connect`` in interpreted logs or ``SYSCALL=connect`` in the enriched format) with its SOCKADDR
  ``saddr`` (hex of the ``struct sockaddr``: AF_INET and AF_INET6 kept; AF_UNIX, AF_NETLINK and others skipped and
  counted) -> ``network_connect``; ``accept``/``accept4`` -> ``network_accept`` (the peer is the source).
- ``execve``/``execveat`` that succeeded, with EXECVE (``argc``, ``aN`` quoted or hex, long arguments split as
  ``aN_len`` + ``aN[i]``) and PROCTITLE (hex, NUL-separated argv, truncated by the kernel at 128 bytes)
  -> ``process_start`` with the command line.
- ``exe``/``comm`` (quoted, or hex when they hold unusual bytes), ``pid``, ``ppid``, ``uid`` (the enriched ``UID=``
  name when present) and ``node=`` (host.name) fill the process, user and host fields.

An event is emitted when its EOE arrives, when it is evidently complete (SYSCALL, all argc arguments, the SOCKADDR a
socket call needs and PROCTITLE, the kernel's last record), or else once ``LAG`` other events have been seen since
its last record (out-of-order records from different CPUs arrive within a few events of each other), and at flush.
Memory is bounded: at most ``LAG`` + 1 events are pending, each capped in records and argument bytes.
"""

from __future__ import annotations

import calendar
import re
import shlex
import time
from collections import OrderedDict

from analytics.endpoint import NETWORK_ACCEPT, NETWORK_CONNECT, OS_ID, PROCESS_START
from collector.hostlogs.common import INT64_MAX, checked_ns
from collector.hostlogs.errors import HostLogError

DATASET = "auditd"
LINUX = OS_ID["linux"]

#: Other events seen after a pending event's last record before it is emitted without an EOE.
LAG = 32
#: Records and argument bytes one event may hold (EXECVE of a huge argv is split over many records).
MAX_EVENT_RECORDS = 1024
MAX_ARG_BYTES = 128 * 1024
#: Executables remembered per (node, pid), so a connect made by a process carries its exec's command line and id.
MAX_PROCESSES = 8192
#: Serials of emitted events remembered, so a record arriving after its event was emitted is counted, not re-held.
MAX_DONE = 1024

#: ``arch=`` (AUDIT_ARCH_*: ELF machine | 64-bit 0x80000000 | little-endian 0x40000000) -> (name, {number: syscall}).
#: Numbers from the kernel's syscall tables (arch/x86/entry/syscalls, include/uapi/asm-generic/unistd.h, arch/arm,
#: arch/powerpc, arch/s390); i386 also reaches the socket calls through socketcall(2) (102), read from ``a0``.
_GENERIC = {203: "connect", 202: "accept", 242: "accept4", 221: "execve", 281: "execveat"}
ARCHES: dict[int, tuple[str, dict[int, str]]] = {
    0xC000003E: ("x86_64", {42: "connect", 43: "accept", 288: "accept4", 59: "execve", 322: "execveat"}),
    0x40000003: ("i386", {362: "connect", 364: "accept4", 11: "execve", 358: "execveat", 102: "socketcall"}),
    0xC00000B7: ("aarch64", _GENERIC),
    0xC00000F3: ("riscv64", _GENERIC),
    0x40000028: ("arm", {283: "connect", 285: "accept", 366: "accept4", 11: "execve", 387: "execveat"}),
    0x80000015: ("ppc64", {328: "connect", 330: "accept", 344: "accept4", 11: "execve", 362: "execveat"}),
    0xC0000015: ("ppc64le", {328: "connect", 330: "accept", 344: "accept4", 11: "execve", 362: "execveat"}),
    0x80000016: ("s390x", {362: "connect", 364: "accept4", 11: "execve", 354: "execveat", 102: "socketcall"}),
}
_ARCH_BY_NAME = {name: (code, table) for code, (name, table) in ARCHES.items()}
_ARCH_BY_NAME.update({"i686": _ARCH_BY_NAME["i386"], "b64": _ARCH_BY_NAME["x86_64"], "b32": _ARCH_BY_NAME["i386"]})
#: socketcall(2) call numbers (include/uapi/linux/net.h).
_SOCKETCALL = {3: "connect", 5: "accept", 18: "accept4"}
_NETWORK_CALLS = {"connect": NETWORK_CONNECT, "accept": NETWORK_ACCEPT, "accept4": NETWORK_ACCEPT}
_EXEC_CALLS = ("execve", "execveat")

#: Address families in ``saddr`` (include/linux/socket.h) that carry no IP address, by counter label.
_FAMILY_LABELS = {0: "af_unspec", 1: "af_unix", 16: "af_netlink", 17: "af_packet"}

_HEADER = re.compile(rb"(?:node=(\S+) )?type=([A-Z_0-9\[\]]+) msg=audit\(([0-9./: ]+?):(\d+)\):? ?")
_KV = re.compile(rb"([A-Za-z_][\w-]*(?:\[\d+\])?)=(\"[^\"]*\"?|'[^']*'?|\{[^}]*\}?|\S*)")
_ARGN = re.compile(rb"a(\d+)(?:\[(\d+)\]|(_len))?$")
_HEXCHARS = frozenset(b"0123456789ABCDEFabcdef")
_USED = frozenset((b"SYSCALL", b"EXECVE", b"SOCKADDR", b"PROCTITLE", b"EOE"))


def _ubytes(v: bytes) -> bytes | None:
    """An auditd untrusted-string value as bytes: quoted is literal, unquoted is hex (auditd's encoding of values
    with spaces, quotes or control bytes); ``(null)``/``(none)`` are None."""
    if v[:1] == b'"':
        return v[1:-1] if v.endswith(b'"') and len(v) > 1 else v[1:]
    if not v or v in (b"(null)", b"(none)", b"?"):
        return None
    if len(v) % 2 == 0 and _HEXCHARS.issuperset(v):
        return bytes.fromhex(v.decode("ascii"))
    return v


def _ustr(v: bytes | None) -> str | None:
    if v is None:
        return None
    raw = _ubytes(v)
    return None if raw is None else raw.decode("utf-8", "replace")


def _time_ns(text: bytes) -> int:
    """``SECONDS.MILLIS`` (raw logs), or ``MM/DD/YYYY HH:MM:SS.mmm`` as ausearch -i writes it (read as UTC)."""
    if b"/" not in text:
        sec, _, frac = text.partition(b".")
        if not sec.isdigit() or (frac and not frac.isdigit()):
            raise HostLogError("bad_time", text[:40].decode("ascii", "replace"))
        return checked_ns(int(sec) * 1_000_000_000 + (int(frac[:9].ljust(9, b"0")) if frac else 0))
    try:
        day, clock = text.decode("ascii").split(" ", 1)
        whole, _, frac_s = clock.partition(".")
        t = time.strptime(f"{day} {whole}", "%m/%d/%Y %H:%M:%S")
    except ValueError:
        raise HostLogError("bad_time", text[:40].decode("ascii", "replace")) from None
    frac_ns = int(frac_s[:9].ljust(9, "0")) if frac_s.isdigit() else 0
    return checked_ns(calendar.timegm(t) * 1_000_000_000 + frac_ns)


class _Event:
    """The records of one audit event gathered so far (only what the endpoint event needs)."""

    __slots__ = ("key", "ts_ns", "node", "syscall", "call", "enriched", "args", "argc", "arg_bytes", "proctitle",
                 "saddr", "records", "touched", "eoe")

    def __init__(self, key, ts_ns: int, node: bytes | None) -> None:
        self.key = key
        self.ts_ns = ts_ns
        self.node = node
        self.syscall: dict | None = None
        self.call = ""  # the syscall's name, once SYSCALL is here
        self.enriched: dict = {}
        self.args: dict[int, list] = {}  # index -> [whole value] or chunks by position
        self.argc = -1
        self.arg_bytes = 0
        self.proctitle: bytes | None = None
        self.saddr: bytes | None = None
        self.records = 0
        self.touched = 0
        self.eoe = False

    def complete(self) -> bool:
        """True when every record the kernel writes for this event before EOE is here."""
        if self.syscall is None or self.proctitle is None:
            return False
        name = self.call
        if name in _EXEC_CALLS:
            return 0 <= self.argc == len(self.args)
        if name in _NETWORK_CALLS:
            return self.saddr is not None
        return True


def _fields(rest: bytes) -> tuple[dict, dict]:
    """The raw key=value fields of a record, and the enriched (after ASCII GS, 0x1d) interpreted ones."""
    raw, _, enriched = rest.partition(b"\x1d")
    f = dict(_KV.findall(raw))
    e = dict(_KV.findall(enriched)) if enriched else {}
    return f, e


def sockaddr(saddr: bytes, little_endian: bool = True) -> tuple[int, str | None, int]:
    """(family, address, port) of a ``struct sockaddr`` as SOCKADDR's ``saddr`` holds it (raw bytes).

    The family is in host byte order (``little_endian`` from the record's arch), the port and address in network
    order. Address is None for families other than AF_INET (2) and AF_INET6 (10)."""
    if len(saddr) < 2:
        raise HostLogError("truncated", "saddr shorter than its family")
    family = int.from_bytes(saddr[:2], "little" if little_endian else "big")
    if family == 2:
        if len(saddr) < 8:
            raise HostLogError("truncated", "AF_INET saddr shorter than 8 bytes")
        return family, ".".join(str(x) for x in saddr[4:8]), int.from_bytes(saddr[2:4], "big")
    if family == 10:
        if len(saddr) < 24:
            raise HostLogError("truncated", "AF_INET6 saddr shorter than 24 bytes")
        a = saddr[8:24].hex()
        return family, ":".join(a[i:i + 4] for i in range(0, 32, 4)), int.from_bytes(saddr[2:4], "big")
    return family, None, 0


class AuditAssembler:
    """Assembles raw audit records into events by (node, serial) and appends the endpoint events they make."""

    def __init__(self, dec) -> None:
        self.dec = dec
        self._pending: OrderedDict = OrderedDict()  # key -> _Event, least recently touched first
        self._done: OrderedDict = OrderedDict()  # keys of emitted events (bounded)
        self._procs: OrderedDict = OrderedDict()  # (node, pid) -> (exe, entity_id, command_line)
        self._switches = 0
        self._last_key = None

    # -- records --------------------------------------------------------------------------------------------------
    def feed(self, line: bytes, b) -> None:
        """One audit.log line (a record); events that it completes, or that it pushes past LAG, are appended to b."""
        m = _HEADER.match(line)
        if m is None:
            self.dec.reject("bad_record", line[:80].decode("utf-8", "replace"))
            return
        node, rtype, ts_text, serial = m.groups()
        key = (node, serial)
        pending = self._pending
        ev = pending.get(key)
        if key != self._last_key:
            self._last_key = key
            self._switches += 1
            if ev is not None:
                ev.touched = self._switches
                pending.move_to_end(key)
            self._expire(b)
        if rtype not in _USED:
            if ev is None and key not in self._done:
                self.dec.skip(DATASET, "other_record")
            return
        if ev is None:
            if key in self._done:
                if rtype != b"EOE":  # the EOE of an event emitted as evidently complete is expected, not late
                    self.dec.skip(DATASET, "late_record")
                return
            try:
                ts_ns = _time_ns(ts_text)
            except HostLogError as e:
                self.dec.reject(e.reason, str(e))
                return
            ev = _Event(key, ts_ns, node)
            ev.touched = self._switches
            pending[key] = ev
        ev.records += 1
        if ev.records > MAX_EVENT_RECORDS:
            if ev.records == MAX_EVENT_RECORDS + 1:
                self.dec.reject("too_large", f"audit event {serial.decode()} has more than {MAX_EVENT_RECORDS} records")
            return
        try:
            self._record(ev, rtype, line[m.end():])
        except HostLogError as e:
            self.dec.reject(e.reason, str(e))
            return
        if ev.eoe or ev.complete():
            self._emit(pending.pop(key), b)

    def _record(self, ev: _Event, rtype: bytes, rest: bytes) -> None:
        if rtype == b"EOE":
            ev.eoe = True
            return
        if rtype == b"PROCTITLE":
            _, _, value = rest.partition(b"proctitle=")
            ev.proctitle = _ubytes(value.split(b"\x1d", 1)[0].strip()) or b""
            return
        f, e = _fields(rest)
        if rtype == b"SYSCALL":
            ev.syscall = f
            ev.enriched = e
            ev.call = self._call(ev)
        elif rtype == b"SOCKADDR":
            v = f.get(b"saddr")
            if v is None:
                raise HostLogError("missing_field", "SOCKADDR without saddr")
            if v[:1] == b"{":  # ausearch -i: saddr={ fam=inet laddr=1.2.3.4 lport=80 }
                ev.saddr = v
            elif _HEXCHARS.issuperset(v) and len(v) % 2 == 0:
                ev.saddr = bytes.fromhex(v.decode("ascii"))
            else:
                raise HostLogError("bad_value", "saddr is not hex")
        else:  # EXECVE
            self._execve(ev, f)

    def _execve(self, ev: _Event, f: dict) -> None:
        argc = f.get(b"argc")
        if argc is not None:
            if not argc.isdigit():
                raise HostLogError("bad_value", "EXECVE argc is not a number")
            ev.argc = int(argc)
        for k, v in f.items():
            if k[:1] != b"a":
                continue
            if k[1:].isdigit():  # the common case, a whole argument: aN="..." or aN=HEX
                idx, chunk = int(k[1:]), None
            else:
                m = _ARGN.match(k)
                if m is None:
                    continue
                idx, chunk = int(m.group(1)), m.group(2)
                if m.group(3):  # aN_len: the argument follows in aN[0], aN[1], ...
                    ev.args.setdefault(idx, [])
                    continue
            part = _ubytes(v) or b""
            ev.arg_bytes += len(part)
            if ev.arg_bytes > MAX_ARG_BYTES:
                raise HostLogError("too_large", f"EXECVE arguments over {MAX_ARG_BYTES} bytes")
            if chunk is None:
                ev.args[idx] = [part]
            else:
                chunks = ev.args.setdefault(idx, [])
                pos = int(chunk)
                if pos > MAX_EVENT_RECORDS:
                    raise HostLogError("bad_value", "EXECVE argument chunk index out of range")
                chunks.extend([b""] * (pos + 1 - len(chunks)))
                chunks[pos] = part

    # -- events ---------------------------------------------------------------------------------------------------
    def _arch(self, ev: _Event) -> tuple[bool, dict[int, str]]:
        """(little-endian, syscall table) of the event's ``arch=``."""
        arch = ev.syscall.get(b"arch", b"") if ev.syscall else b""
        try:
            code = int(arch, 16)
        except ValueError:
            code, table = _ARCH_BY_NAME.get(arch.decode("ascii", "replace"), (0xC000003E, {}))
            return bool(code & 0x40000000), table
        return bool(code & 0x40000000), ARCHES.get(code, ("", {}))[1]

    def _call(self, ev: _Event) -> str:
        """The syscall's name: as auditd resolved it, else by number from the arch's table."""
        sc = ev.syscall
        if sc is None:
            return ""
        name = ev.enriched.get(b"SYSCALL") or sc.get(b"syscall", b"")
        if name and not name.isdigit():
            text = name.decode("ascii", "replace")
        else:
            text = self._arch(ev)[1].get(int(name) if name else -1, "")
        if text == "socketcall":
            try:
                text = _SOCKETCALL.get(int(sc.get(b"a0", b"-1"), 16), "")
            except ValueError:
                text = ""
        return text

    def _expire(self, b) -> None:
        pending = self._pending
        limit = self._switches - LAG
        while pending:
            ev = next(iter(pending.values()))
            if ev.touched >= limit:
                break
            self._emit(pending.popitem(last=False)[1], b)

    def flush(self, b) -> None:
        """Emit every pending event (end of a file or a connection)."""
        while self._pending:
            self._emit(self._pending.popitem(last=False)[1], b)

    def _emit(self, ev: _Event, b) -> None:
        done = self._done
        done[ev.key] = None
        if len(done) > MAX_DONE:
            done.popitem(last=False)
        sc = ev.syscall
        if sc is None:
            self.dec.skip(DATASET, "no_syscall_record")
            return
        try:
            name = ev.call
            if name in _EXEC_CALLS:
                n = self._process_start(ev, sc, b)
            elif name in _NETWORK_CALLS:
                n = self._network(ev, sc, name, b)
            else:
                self.dec.skip(DATASET, "other_syscall")
                return
        except HostLogError as e:
            self.dec.reject(e.reason, str(e))
            return
        except (ValueError, OverflowError) as e:
            self.dec.reject("bad_value", f"{type(e).__name__}: {e}")
            return
        self.dec.count(DATASET, n)

    def _common(self, ev: _Event, sc: dict) -> dict:
        host = ev.node.decode("utf-8", "replace") if ev.node else None
        pid = _int(sc.get(b"pid"))
        ppid = _int(sc.get(b"ppid"))
        user = _ustr(ev.enriched.get(b"UID"))
        if user is None:
            uid = _int(sc.get(b"uid"))
            user = str(uid) if 0 <= uid < 4294967295 else None
        parent = self._procs.get((host, ppid)) if ppid >= 0 else None
        return {
            "host": host, "pid": pid, "ppid": ppid, "user": user,
            "executable": _ustr(sc.get(b"exe")), "comm": _ustr(sc.get(b"comm")),
            "parent_executable": parent[0] if parent else None,
        }

    def _command_line(self, ev: _Event) -> str | None:
        if ev.args and (ev.argc < 0 or len(ev.args) == ev.argc):
            argv = [b"".join(ev.args[i]) if i in ev.args else b"" for i in range(max(ev.args) + 1)]
        elif ev.proctitle:
            argv = ev.proctitle.split(b"\x00")
            if ev.proctitle[:1] == b"(" and len(argv) == 1:  # a kernel thread's or a renamed process's "(sshd)"
                return ev.proctitle.decode("utf-8", "replace")
        else:
            return None
        return shlex.join(a.decode("utf-8", "replace") for a in argv)

    def _process_start(self, ev: _Event, sc: dict, b) -> int:
        if sc.get(b"success", b"yes") != b"yes":
            self.dec.skip(DATASET, "execve_failed")
            return 0
        c = self._common(ev, sc)
        cmd = self._command_line(ev)
        entity = f"auditd:{c['host'] or ''}:{c['pid']}:{ev.ts_ns}"
        procs = self._procs
        procs[(c["host"], c["pid"])] = (c["executable"], entity, cmd)
        procs.move_to_end((c["host"], c["pid"]))
        if len(procs) > MAX_PROCESSES:
            procs.popitem(last=False)
        b.add(ev.ts_ns, PROCESS_START, LINUX, DATASET, host=c["host"], pid=c["pid"], ppid=c["ppid"],
              executable=c["executable"], name=_name(c), command_line=cmd,
              parent_executable=c["parent_executable"], user=c["user"], entity_id=entity,
              code=_code(sc))
        return 1

    def _network(self, ev: _Event, sc: dict, name: str, b) -> int:
        if ev.saddr is None:
            self.dec.skip(DATASET, "no_sockaddr")
            return 0
        if ev.saddr[:1] == b"{":
            family, addr, port = _interpreted_sockaddr(ev.saddr)
        else:
            family, addr, port = sockaddr(ev.saddr, self._arch(ev)[0])
        if addr is None:
            self.dec.skip(DATASET, _FAMILY_LABELS.get(family, "af_other"))
            return 0
        c = self._common(ev, sc)
        known = self._procs.get((c["host"], c["pid"]))
        if known is not None and known[0] != c["executable"]:
            known = None  # the pid was reused or re-exec'd since: its command line is not this process's
        if known is not None:
            entity, cmd = known[1], known[2]
        else:
            entity = f"auditd:{c['host'] or ''}:{c['pid']}"
            cmd = self._command_line(ev)
        action = _NETWORK_CALLS[name]
        peer = {"src_ip": addr, "src_port": port} if action == NETWORK_ACCEPT else {"dst_ip": addr, "dst_port": port}
        b.add(ev.ts_ns, action, LINUX, DATASET, host=c["host"], pid=c["pid"], ppid=c["ppid"],
              executable=c["executable"], name=_name(c), command_line=cmd,
              parent_executable=c["parent_executable"], user=c["user"], entity_id=entity,
              code=_code(sc), inbound=action == NETWORK_ACCEPT, **peer)
        return 1


def _code(sc: dict) -> int:
    """event.code: the syscall number (0 when auditd wrote it as a name, or it does not fit the uint32 column)."""
    n = _int(sc.get(b"syscall"), 0)
    return n if n < 1 << 32 else 0


def _name(c: dict) -> str | None:
    """process.name: the executable's file name, else ``comm`` (the kernel's 15-byte task name)."""
    exe = c["executable"]
    if exe:
        return exe[exe.rfind("/") + 1:]
    return c["comm"]


def _int(v: bytes | None, default: int = -1) -> int:
    """A decimal field as an int; default when absent, not decimal, or outside 0..INT64_MAX (the int64 columns)."""
    if v is None or not v.isdigit():
        return default
    n = int(v)
    return n if n <= INT64_MAX else default


_FAMILY_NAMES = {b"inet": 2, b"inet6": 10, b"local": 1, b"unix": 1, b"netlink": 16, b"unspec": 0}


def _interpreted_sockaddr(v: bytes) -> tuple[int, str | None, int]:
    """``{ fam=inet laddr=1.2.3.4 lport=80 }`` (ausearch -i, and the enriched SADDR= field)."""
    f = dict(_KV.findall(v.strip(b"{} ")))
    family = _FAMILY_NAMES.get(f.get(b"fam") or f.get(b"saddr_fam") or b"", -1)
    if family not in (2, 10):
        return family, None, 0
    addr = f.get(b"laddr")
    if not addr:
        raise HostLogError("missing_field", "interpreted saddr without laddr")
    return family, addr.decode("ascii", "replace"), _int(f.get(b"lport"), 0)
