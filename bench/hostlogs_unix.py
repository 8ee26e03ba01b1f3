"""Host-log decoding speed for the Linux and macOS formats and osquery: events per second on one core, beside a
plain reading of the same lines.

    .venv/bin/python bench/hostlogs_unix.py [--events 50000] [--format NAME]

For each format, N events are written in memory in the format's real shape (auditd records with PROCTITLE and EOE as
a kernel >= 3.x writes them; ``log show --style ndjson`` connection summaries; ``log show`` default-style text with
its tab-indented continuation lines; eslogger exec lines; Elastic Endpoint network documents; osquery differential
``socket_events`` and batched ``process_open_sockets`` lines), pids and ports varied so that no two events are equal.
Then, taking turns, the best of REPEAT runs each, in the process's CPU time (time.process_time, so that other work
on a shared machine does not count):
- ``brokerwatch``: ``HostLogDecoder.feed_lines`` + ``finish`` into an EndpointBatchBuilder, and ``build()``: format
  recognised by content, events assembled, every field normalised, rejections counted;
- ``plain``: what a script would do with the same lines: ``json.loads`` and direct key access to the same fields
  (for auditd: a regex over each record, grouped by serial in a dict; for the text style: a regex per line), the
  fields collected in a list of tuples. No recognition, no validation, no counters.
The last column is brokerwatch's rate over plain's.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

#: Each loop runs this many times and the fastest counts (other work on a shared machine only ever slows a run).
REPEAT = 3
T0 = 1796290000


def _hex(s: str) -> str:
    return s.encode().hex().upper()


def gen_auditd(n: int) -> list[bytes]:
    """n events, alternately an execve of mosquitto_pub and its connect, each with PROCTITLE and EOE."""
    out = []
    argv = ["mosquitto_pub", "-h", "203.0.113.50", "-p", "8883", "-t", "dev/a9f3k2/x", "-m", "aGVsbG8gd29ybGQ="]
    title = _hex("\x00".join(argv))
    for i in range(n):
        ts = f"{T0 + i // 10}.{i % 1000:03d}"
        pid = 20000 + i // 2
        head = f"type={{}} msg=audit({ts}:{1000 + i}): "
        if i % 2 == 0:
            out += [
                head.format("SYSCALL") + f"arch=c000003e syscall=59 success=yes exit=0 a0=5581 a1=5582 a2=5583 "
                f"a3=0 items=2 ppid=1900 pid={pid} auid=1000 uid=1000 gid=1000 euid=1000 suid=1000 fsuid=1000 "
                f'egid=1000 sgid=1000 fsgid=1000 tty=pts0 ses=3 comm="mosquitto_pub" exe="/usr/bin/mosquitto_pub" '
                f'key="exec"',
                head.format("EXECVE") + f"argc={len(argv)} " + " ".join(f'a{k}="{a}"' for k, a in enumerate(argv)),
                head.format("CWD") + 'cwd="/home/ana"',
                head.format("PATH") + 'item=0 name="/usr/bin/mosquitto_pub" inode=2512 dev=08:01 mode=0100755 '
                'ouid=0 ogid=0 rdev=00:00 nametype=NORMAL',
                head.format("PROCTITLE") + f"proctitle={title}",
                head.format("EOE"),
            ]
        else:
            port = 1024 + i % 60000
            out += [
                head.format("SYSCALL") + f"arch=c000003e syscall=42 success=no exit=-115 a0=3 a1=7ffd a2=10 a3=0 "
                f"items=0 ppid=1900 pid={pid} auid=1000 uid=1000 gid=1000 euid=1000 suid=1000 fsuid=1000 egid=1000 "
                f'sgid=1000 fsgid=1000 tty=pts0 ses=3 comm="mosquitto_pub" exe="/usr/bin/mosquitto_pub" key="net"',
                head.format("SOCKADDR") + f"saddr=0200{port:04X}CB0071320000000000000000",
                head.format("PROCTITLE") + f"proctitle={title}",
                head.format("EOE"),
            ]
    return [ln.encode() for ln in out]


_AUD = re.compile(rb"type=(\w+) msg=audit\(([\d.]+):(\d+)\): ?(.*)")
_AUDF = re.compile(rb'(\w+)=("[^"]*"|\S+)')


def plain_auditd(lines: list[bytes]) -> int:
    events: dict = {}
    for line in lines:
        m = _AUD.match(line)
        events.setdefault(m.group(3), []).append((m.group(1), dict(_AUDF.findall(m.group(4)))))
    out = []
    for recs in events.values():
        by = dict(recs)
        sc = by[b"SYSCALL"]
        if b"SOCKADDR" in by:
            raw = bytes.fromhex(by[b"SOCKADDR"][b"saddr"].decode())
            dst = (".".join(str(x) for x in raw[4:8]), int.from_bytes(raw[2:4], "big"))
        else:
            dst = None
        cmd = bytes.fromhex(by[b"PROCTITLE"][b"proctitle"].decode()).replace(b"\x00", b" ")
        out.append((int(sc[b"pid"]), sc[b"exe"].strip(b'"'), cmd, dst))
    return len(out)


_MSG = ("[C{c} 90B95967-CD66-4EDD-AD9E-5BA99B3B1C62 Hostname#ea5d1e75:443 tcp, url hash: 15f2f095, tls, definite, "
        "attribution: developer] cancelled\n\t[C{c}.1.1 C84B1419-27A0-421C-8140-8478E1AC40F3 "
        "172.20.1.254:{p}<->198.51.100.{h}:443]\n\tConnected Path: satisfied (Path is satisfied), viable, interface: "
        "en0[802.11], ipv4, dns, uses wifi\n\tPrivacy Stance: Not Eligible\n\tDuration: 2.046s, DNS @0.000s took "
        "0.045s, TCP @0.047s took 0.048s, TLS 1.3 took 0.151s\n\tbytes in/out: 5210/1012, packets in/out: 11/6, rtt: "
        "0.135s, retransmitted bytes: 0, out-of-order bytes: 0\n\tecn packets sent/acked/marked/lost: 0/0/0/0")


def gen_unified_json(n: int) -> list[bytes]:
    """n ``log show --style ndjson`` connection summaries (the shape of the corpus sample)."""
    out = []
    for i in range(n):
        out.append(json.dumps({
            "timezoneName": "", "messageType": "Default", "eventType": "logEvent", "source": None,
            "formatString": "[C%u %{public,uuid_t}.16P %{public}s %{public}@] cancelled", "userID": 501,
            "activityIdentifier": 0, "subsystem": "com.apple.network", "category": "connection", "threadID": 1132574,
            "senderImageUUID": "E481CDB0-9C0C-3BBC-87FA-006C66D3223E", "backtrace": {"frames": []},
            "bootUUID": "218031E6-E47F-4A77-B7FC-5A57B049F4BC", "processImagePath": "/usr/bin/osascript",
            "senderImagePath": "/System/Library/Frameworks/Network.framework/Versions/A/Network",
            "timestamp": f"2026-12-03 10:{i // 60 % 60:02d}:{i % 60:02d}.886344+0000", "machTimestamp": 7391 + i,
            "eventMessage": _MSG.format(c=i, p=1024 + i % 60000, h=i % 250), "processImageUUID": "5CF1C24C",
            "traceID": 589370805553725444, "processID": 4000 + i % 3000, "senderProgramCounter": 9418645,
            "parentActivityIdentifier": 0}).encode())
    return out


_PATHRX = re.compile(r"(\S+):(\d+)<->(\S+):(\d+)\]")


def plain_unified_json(lines: list[bytes]) -> int:
    out = []
    for line in lines:
        rec = json.loads(line)
        m = _PATHRX.search(rec["eventMessage"])
        out.append((rec["processID"], rec["processImagePath"], rec["timestamp"], m.groups() if m else None))
    return len(out)


def gen_unified_text(n: int) -> list[bytes]:
    """n ``log show`` default-style records, each a header line and its tab-indented continuation lines."""
    out = []
    for i in range(n):
        first, *more = _MSG.format(c=i, p=1024 + i % 60000, h=i % 250).split("\n")
        out.append(f"2026-12-03 10:{i // 60 % 60:02d}:{i % 60:02d}.886344+0000 0x1148de   Default     0x0"
                   f"                  {4000 + i % 3000}   0    osascript: (Network) [com.apple.network:connection] "
                   f"{first}".encode())
        out += [m.encode() for m in more]
    return out


_TEXTRX = re.compile(rb"^(\S+ \S+)\s+0x\S+\s+\S+\s+0x\S+\s+(\d+)\s+\d+\s+(.+?): ")
_PATHRXB = re.compile(rb"(\S+):(\d+)<->(\S+):(\d+)\]")


def plain_unified_text(lines: list[bytes]) -> int:
    out = []
    for line in lines:
        m = _TEXTRX.match(line)
        if m:
            out.append([m.group(1), int(m.group(2)), m.group(3), None])
        else:
            p = _PATHRXB.search(line)
            if p and out:
                out[-1][3] = p.groups()
    return len(out)


def gen_eslogger(n: int) -> list[bytes]:
    """n eslogger ``exec`` lines (the shape of es_message_t as eslogger writes it)."""
    out = []
    for i in range(n):
        pid = 4000 + i
        proc = {"audit_token": {"asid": 100001, "auid": 501, "euid": 501, "egid": 20, "pid": pid - 1,
                                "pidversion": 7, "ruid": 501, "rgid": 20}, "ppid": 1, "original_ppid": 1,
                "group_id": pid, "session_id": 100, "codesigning_flags": 570522385, "is_platform_binary": True,
                "is_es_client": False, "signing_id": "com.apple.zsh", "team_id": None, "cdhash": "5f1c",
                "executable": {"path": "/bin/zsh", "path_truncated": False}, "tty": None,
                "start_time": "2026-12-03T09:00:00.000000Z"}
        target = dict(proc, audit_token=dict(proc["audit_token"], pid=pid, pidversion=8),
                      executable={"path": "/usr/bin/curl", "path_truncated": False})
        out.append(json.dumps({
            "schema_version": 1, "mach_time": 1000 + i, "event_type": 9, "thread": {"thread_id": 9001},
            "version": 7, "seq_num": i, "process": proc, "action_type": 1, "global_seq_num": i,
            "time": f"2026-12-03T10:00:{i % 60:02d}.123456789Z",
            "event": {"exec": {"target": target, "args": ["curl", "-s", "-X", "POST", "https://x.example/mqtt",
                                                          "-d", f"beat-{i}"],
                               "cwd": {"path": "/Users/ana", "path_truncated": False}, "script": None,
                               "last_fd": 3}}}).encode())
    return out


def plain_eslogger(lines: list[bytes]) -> int:
    out = []
    for line in lines:
        ev = json.loads(line)
        t = ev["event"]["exec"]["target"]
        out.append((t["audit_token"]["pid"], t["executable"]["path"], " ".join(ev["event"]["exec"]["args"]),
                    ev["time"]))
    return len(out)


def gen_elastic(n: int) -> list[bytes]:
    """n Elastic Endpoint ``connection_attempted`` documents."""
    out = []
    for i in range(n):
        out.append(json.dumps({
            "@timestamp": f"2026-12-03T10:00:{i % 60:02d}.{i % 1000:03d}Z", "agent": {"type": "endpoint",
                                                                                       "version": "8.11.0"},
            "event": {"action": "connection_attempted", "category": ["network"], "type": ["start"],
                      "dataset": "endpoint.events.network", "module": "endpoint", "kind": "event"},
            "host": {"name": "mac-1", "hostname": "mac-1", "os": {"type": "macos", "family": "macos"}},
            "process": {"pid": 4000 + i % 3000, "executable": "/usr/bin/osascript", "name": "osascript",
                        "entity_id": f"e{i}"},
            "user": {"name": "ana", "id": "501"}, "network": {"transport": "tcp", "type": "ipv4",
                                                             "direction": "egress"},
            "source": {"ip": "10.1.1.5", "port": 1024 + i % 60000},
            "destination": {"ip": f"198.51.100.{i % 250}", "port": 443}}).encode())
    return out


def plain_elastic(lines: list[bytes]) -> int:
    out = []
    for line in lines:
        d = json.loads(line)
        out.append((d["process"]["pid"], d["process"]["executable"], d["destination"]["ip"],
                    d["destination"]["port"], d["source"]["port"], d["@timestamp"]))
    return len(out)


def gen_osquery_events(n: int) -> list[bytes]:
    """n osquery differential ``socket_events`` lines (numerics false)."""
    out = []
    for i in range(n):
        out.append(json.dumps({
            "name": "socket_events", "hostIdentifier": "edge-gw-07", "calendarTime": "Thu Dec  3 10:00:00 2026 UTC",
            "unixTime": str(T0 + i), "epoch": "0", "counter": str(i), "numerics": False,
            "decorations": {"host_uuid": "4c4c4544", "os": "Ubuntu"},
            "columns": {"action": "connect", "pid": str(20000 + i % 3000), "path": "/usr/bin/mosquitto_pub",
                        "fd": "3", "auid": "1000", "status": "in_progress", "family": "2", "protocol": "6",
                        "local_address": "10.1.1.10", "remote_address": f"203.0.113.{i % 250}",
                        "local_port": str(1024 + i % 60000), "remote_port": "8883", "socket": "",
                        "time": str(T0 + i), "uptime": "86400", "eid": str(i), "success": "1"},
            "action": "added"}).encode())
    return out


def gen_osquery_batched(n: int) -> list[bytes]:
    """n ``process_open_sockets`` rows, 8 to a batched (diffResults) line."""
    out = []
    for j in range(0, n, 8):
        rows = [{"pid": str(6000 + k), "process_path": "C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe",
                 "name": "powershell.exe", "fd": "0", "socket": "0", "family": "2", "protocol": "6",
                 "local_address": "10.1.1.31", "remote_address": f"203.0.113.{k % 250}",
                 "local_port": str(1024 + k % 60000), "remote_port": "8883", "path": "", "state": "ESTABLISHED"}
                for k in range(j, min(j + 8, n))]
        out.append(json.dumps({"diffResults": {"added": rows, "removed": []}, "name": "open_sockets",
                               "hostIdentifier": "WS-0231", "calendarTime": "Thu Dec  3 10:00:00 2026 UTC",
                               "unixTime": str(T0 + j), "epoch": "0", "counter": "1", "numerics": False}).encode())
    return out


def plain_osquery(lines: list[bytes]) -> int:
    out = []
    for line in lines:
        d = json.loads(line)
        rows = [d["columns"]] if "columns" in d else d["diffResults"]["added"]
        for r in rows:
            out.append((int(r["pid"]), r.get("process_path") or r.get("path"), r["remote_address"],
                        int(r["remote_port"]), int(r["local_port"]), d["hostIdentifier"]))
    return len(out)


FORMATS = {
    "auditd": (gen_auditd, plain_auditd),
    "macos_unified_ndjson": (gen_unified_json, plain_unified_json),
    "macos_unified_text": (gen_unified_text, plain_unified_text),
    "eslogger": (gen_eslogger, plain_eslogger),
    "elastic_endpoint": (gen_elastic, plain_elastic),
    "osquery_differential": (gen_osquery_events, plain_osquery),
    "osquery_batched": (gen_osquery_batched, plain_osquery),
}


def ours(lines: list[bytes]) -> int:
    from analytics.endpoint import EndpointBatchBuilder
    from collector.hostlogs.decoder import HostLogDecoder

    dec, b = HostLogDecoder(), EndpointBatchBuilder()
    dec.feed_lines(lines, b)
    dec.finish(b)
    batch = b.build()
    if dec.rejected:
        raise SystemExit(f"rejections in the benchmark input: {dict(dec.rejected)}")
    return len(batch)


def timed(fn, lines) -> tuple[float, int]:
    t0 = time.process_time()
    n = fn(lines)
    return time.process_time() - t0, n


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=50_000, help="events per format (default 50000)")
    ap.add_argument("--format", choices=sorted(FORMATS), action="append", help="only this format (repeatable)")
    args = ap.parse_args(argv)
    from collector.hostlogs.decoder import HostLogDecoder

    HostLogDecoder()  # imports and the dialect table, outside the timings
    print(f"{'format':22} {'events':>8} {'brokerwatch ev/s':>17} {'plain ev/s':>12} {'ratio':>6}")
    for name in args.format or FORMATS:
        gen, plain = FORMATS[name]
        lines = gen(args.events)
        best_ours = best_plain = float("inf")
        n_ours = n_plain = 0
        for _ in range(REPEAT):
            t, n_ours = timed(ours, lines)
            best_ours = min(best_ours, t)
            t, n_plain = timed(plain, lines)
            best_plain = min(best_plain, t)
        if n_ours != n_plain:
            print(f"{name}: brokerwatch made {n_ours} events, plain {n_plain}", file=sys.stderr)
            return 1
        r_ours, r_plain = n_ours / best_ours, n_plain / best_plain
        print(f"{name:22} {n_ours:8d} {r_ours:17,.0f} {r_plain:12,.0f} {r_ours / r_plain:6.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
