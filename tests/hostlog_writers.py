"""Host-log lines in the real formats, for scenario tests: auditd records, macOS unified-log ndjson, eslogger, osquery.

Field by field after the vendors' documents (docs/hostlogs.md names them): what a kernel >= 3.x with auditd writes
for an execve and a connect (SYSCALL, EXECVE, CWD, PATH, SOCKADDR, PROCTITLE, EOE; untrusted strings quoted, or hex
when they hold a space, quote or control byte); Network.framework's connection summary as ``log show --style
ndjson`` prints it; eslogger's exec event (es_message_t as JSON); an osquery differential result line.
"""

from __future__ import annotations

import datetime
import json

_SAFE = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/._-:=+,@%")


def _audit_str(value: str) -> str:
    """An untrusted string as auditd logs it: quoted when plain, hex (upper case) otherwise."""
    if value and set(value) <= _SAFE:
        return f'"{value}"'
    return value.encode().hex().upper()


class AuditdWriter:
    """Audit records of one host, serials counting up as the kernel's do."""

    def __init__(self, node: str = "", serial: int = 1000, uid: int = 1000) -> None:
        self.node, self.serial, self.uid = node, serial, uid

    def _head(self, rtype: str, ts: float) -> str:
        node = f"node={self.node} " if self.node else ""
        return f"{node}type={rtype} msg=audit({ts:.3f}:{self.serial}): "

    def _syscall(self, ts: float, number: int, pid: int, ppid: int, exe: str, success: str, exit_code: int,
                 items: int) -> str:
        comm = exe.rsplit("/", 1)[-1][:15]
        return (self._head("SYSCALL", ts) + f"arch=c000003e syscall={number} success={success} exit={exit_code} "
                f"a0=3 a1=7ffd5a3c2e10 a2=10 a3=0 items={items} ppid={ppid} pid={pid} auid={self.uid} "
                f"uid={self.uid} gid={self.uid} euid={self.uid} suid={self.uid} fsuid={self.uid} egid={self.uid} "
                f"sgid={self.uid} fsgid={self.uid} tty=pts0 ses=4 comm={_audit_str(comm)} exe={_audit_str(exe)} "
                f"subj=unconfined key=\"brokerwatch\"")

    def execve(self, ts: float, pid: int, ppid: int, exe: str, argv: list[str], cwd: str = "/home/user") -> list[str]:
        """The records of one successful execve(2) (x86_64 syscall 59)."""
        lines = [
            self._syscall(ts, 59, pid, ppid, exe, "yes", 0, 2),
            self._head("EXECVE", ts) + f"argc={len(argv)} " + " ".join(
                f"a{i}={_audit_str(a)}" for i, a in enumerate(argv)),
            self._head("CWD", ts) + f"cwd={_audit_str(cwd)}",
            self._head("PATH", ts) + f"item=0 name={_audit_str(exe)} inode=2512 dev=08:01 mode=0100755 ouid=0 "
                                     "ogid=0 rdev=00:00 nametype=NORMAL cap_fp=0 cap_fi=0 cap_fe=0 cap_fver=0",
            self._head("PROCTITLE", ts) + "proctitle=" + "\x00".join(argv).encode()[:128].hex().upper(),
            self._head("EOE", ts),
        ]
        self.serial += 1
        return lines

    def connect(self, ts: float, pid: int, ppid: int, exe: str, argv: list[str], dst_ip: str,
                dst_port: int) -> list[str]:
        """The records of one connect(2) (x86_64 syscall 42) to an IPv4 address; non-blocking: EINPROGRESS."""
        addr = bytes(int(x) for x in dst_ip.split("."))
        saddr = (b"\x02\x00" + dst_port.to_bytes(2, "big") + addr + bytes(8)).hex().upper()
        lines = [
            self._syscall(ts, 42, pid, ppid, exe, "no", -115, 0),
            self._head("SOCKADDR", ts) + f"saddr={saddr}",
            self._head("PROCTITLE", ts) + "proctitle=" + "\x00".join(argv).encode()[:128].hex().upper(),
            self._head("EOE", ts),
        ]
        self.serial += 1
        return lines


def _local_time(ts: float, fmt: str) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime(fmt)


def unified_log_connection(ts_end: float, duration: float, pid: int, exe: str, conn: int, local: str, lport: int,
                           remote: str, rport: int, host_name: str = "Hostname#ea5d1e75") -> str:
    """One Network.framework connection summary (subsystem com.apple.network, category connection) as ``log show
    --style ndjson`` prints it, logged when the connection is cancelled, ``duration`` seconds after it began."""
    msg = (f"[C{conn} 90B95967-CD66-4EDD-AD9E-5BA99B3B1C62 {host_name}:{rport} tcp, url hash: 15f2f095, tls, "
           f"definite, attribution: developer] cancelled\n\t[C{conn}.1.1 C84B1419-27A0-421C-8140-8478E1AC40F3 "
           f"{local}:{lport}<->{remote}:{rport}]\n\tConnected Path: satisfied (Path is satisfied), viable, "
           f"interface: en0[802.11], ipv4, dns, uses wifi\n\tPrivacy Stance: Not Eligible\n\tDuration: "
           f"{duration:.3f}s, DNS @0.000s took 0.012s, TCP @0.013s took 0.021s, TLS 1.3 took 0.048s\n\tbytes "
           f"in/out: 2310/1012, packets in/out: 9/8, rtt: 0.021s, retransmitted bytes: 0, out-of-order bytes: 0\n"
           f"\tecn packets sent/acked/marked/lost: 0/0/0/0")
    return json.dumps({
        "timezoneName": "", "messageType": "Default", "eventType": "logEvent", "source": None,
        "formatString": "[C%u %{public,uuid_t}.16P %{public}s %{public}@] cancelled", "userID": 501,
        "activityIdentifier": 0, "subsystem": "com.apple.network", "category": "connection", "threadID": 1132574,
        "senderImageUUID": "E481CDB0-9C0C-3BBC-87FA-006C66D3223E", "backtrace": {"frames": []},
        "bootUUID": "218031E6-E47F-4A77-B7FC-5A57B049F4BC", "processImagePath": exe,
        "senderImagePath": "/System/Library/Frameworks/Network.framework/Versions/A/Network",
        "timestamp": _local_time(ts_end, "%Y-%m-%d %H:%M:%S.%f+0000"), "machTimestamp": int(ts_end * 1e6),
        "eventMessage": msg, "processImageUUID": "5CF1C24C-80AC-35A6-A065-986216BBD0B2", "traceID": 0,
        "processID": pid, "senderProgramCounter": 9418645, "parentActivityIdentifier": 0})


def eslogger_exec(ts: float, pid: int, ppid: int, exe: str, argv: list[str], parent_exe: str = "/bin/zsh",
                  euid: int = 501) -> str:
    """One eslogger ``exec`` event: the process before the exec in ``process``, the new image in
    ``event.exec.target``."""
    def proc(p: int, path: str, version: int) -> dict:
        return {"audit_token": {"asid": 100001, "auid": euid, "euid": euid, "egid": 20, "pid": p,
                                "pidversion": version, "ruid": euid, "rgid": 20}, "ppid": ppid,
                "original_ppid": ppid, "group_id": p, "session_id": 100, "codesigning_flags": 570522385,
                "is_platform_binary": True, "is_es_client": False, "signing_id": "com.apple." + path.rsplit("/")[-1],
                "team_id": None, "cdhash": "5f1c", "executable": {"path": path, "path_truncated": False},
                "tty": None, "start_time": _local_time(ts, "%Y-%m-%dT%H:%M:%S.%fZ")}
    return json.dumps({
        "schema_version": 1, "mach_time": int(ts * 1e6), "event_type": 9, "thread": {"thread_id": 9001},
        "version": 7, "seq_num": 1, "process": proc(pid, parent_exe, 1), "action_type": 1, "global_seq_num": 1,
        "time": _local_time(ts, "%Y-%m-%dT%H:%M:%S.%f000Z"),
        "event": {"exec": {"target": proc(pid, exe, 2), "args": argv,
                           "cwd": {"path": "/Users/carol", "path_truncated": False}, "script": None, "last_fd": 3}},
    })


def osquery_process_event(ts: float, host: str, pid: int, ppid: int, exe: str, cmdline: str, uid: int = 1000) -> str:
    """One osquery differential result line of ``process_events`` (Linux audit backend, numerics as strings)."""
    return json.dumps({
        "name": "pack_incident-response_process_events", "hostIdentifier": host,
        "calendarTime": _local_time(ts, "%a %b %d %H:%M:%S %Y UTC"), "unixTime": str(int(ts)), "epoch": "0",
        "counter": "1", "numerics": False, "decorations": {"host_uuid": "4c4c4544", "os": "Ubuntu"},
        "columns": {"pid": str(pid), "path": exe, "mode": "0100755", "cmdline": cmdline, "cwd": "/tmp",
                    "auid": str(uid), "uid": str(uid), "euid": str(uid), "gid": str(uid), "egid": str(uid),
                    "parent": str(ppid), "time": str(int(ts)), "uptime": "86400", "eid": str(pid),
                    "syscall": "execve"},
        "action": "added"})
