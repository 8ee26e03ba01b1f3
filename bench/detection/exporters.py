"""Real exporters over a raw-traffic pcap: what softflowd and pmacct export of it, as a pcap ``brokerwatch replay`` reads.

    python -m bench.detection.exporters RAW.pcap OUT_DIR [--inputs NAME ...]

Each input of ``INPUTS`` (issue #13, ``evalsuite.md`` section 2) runs one exporter on the raw pcap (Ethernet IPv4,
virtual time), receives its UDP export on 127.0.0.1 with a socket of 256 MB (``SO_RCVBUFFORCE``), checks the
export's sequence numbers and what the records account for, and writes ``OUT_DIR/NAME.pcap``: one Ethernet/IPv4/UDP
frame per export datagram, stamped with the data's time so that replay's clock follows the data. ``meter`` exports
nothing: brokerwatch's flow meter reads the raw pcap itself.

What was found (softflowd 1.1.0 and pmacct 1.7.7 as Debian ships them; softflowd's source read at
github.com/irino/softflowd, tag softflowd-v1.1.0, softflowd.c):

- **softflowd in file mode (-r) expires no flow on time.** Its main loop calls ``check_expired(...,
  CE_EXPIRE_FORCED)`` when reading a file ("If we are reading from a capture file, we never expire flows based on
  time"), which exports only flows whose expiry is 0: those over the table size (``force_expire`` picks the flows
  whose expiry comes first, i.e. the ones a live exporter would have sent already) and those marked by
  ``flow_update_expiry`` when a packet arrives more than ``maxlife`` after the flow's first packet. That check runs
  once per ``pcap_dispatch(pcap, max_flows, ...)``: ``-m`` is both the table size and the number of packets read
  between two checks. With ``-m 65536`` a 3 h file of 4205 packets is one dispatch, so ``maxlife`` never acts (the
  fixtures' finding). So **maxlife does apply in file mode, but late**: a flow is cut at its first packet more than
  300 s after its start, plus whatever packets of it come until the end of that dispatch. The 300 s input therefore
  runs softflowd with ``-m`` = 30 s of the capture's mean packet rate (``active_table``), so a dispatch spans about
  30 s of virtual time: its records last 300 s plus up to one packet gap of the flow and a dispatch (median 357 s,
  like pmacct's 357 s, on the measured day; 360-420 s for a session with 60 s keepalives). The small table makes
  softflowd force-expire flows before their timeout when more flows are live than it holds (0.9 % of the records
  on the measured day, counted in ``evicted_before_due``), as a live softflowd with that ``-m`` would. Live replay
  onto an interface was not used: it needs wall-clock record times mapped back to virtual time and timeouts scaled
  by the replay speed.
- **softflowd's table** without active timeout: ``-m 262144`` (``TABLE``); ``evicted_before_due`` counts records
  exported (not at the end of the file) before their idle/FIN timeout (or maxlife) had passed, i.e. flows the full
  table cut early; 0 on every capture measured (docs/detection.md).
- **pmacct nfprobe** applies its timeouts in capture time (``nfprobe_timeouts``) and exports everything left at the
  end of the file when pmacctd exits (``pcap_savefile_wait`` unset: it exits at EOF; the plugin flushes its cache on
  exit). Its core process hands packets to the plugin through a pipe that drops when full; the check
  ``packets_accounted == raw_packets`` (sum of the records' packets against the pcap's frames) catches that loss.
  A large ``plugin_buffer_size`` (1 MB) loses the last buffer at the end of the file (3167 of 4205 packets of the
  beacon world accounted for); pmacct's defaults lose nothing, so they are kept (``PMACCT_BUFFERS``).
- **Loss**: the exporters send as fast as they read. The receiving socket's buffer is 256 MB and its kernel drop
  count is read from /proc/net/udp (``kernel_drops``). Sequence numbers are checked on the datagrams as received
  (``flow_sequence_gaps``: v5 flow_sequence per engine, v9 package sequence per source id, IPFIX data-record
  sequence per domain; sFlow datagram sequence per sub-agent), and brokerwatch's decoder checks the written sFlow
  export's datagram and sample sequences. softflowd's IPFIX sequence counts the data records including the
  message's own (its first message says 24 with 24 records; RFC 7011 counts those sent before): the check takes
  the convention from the first message, while brokerwatch's decoder counts the difference as lost/reordered
  (``decoder_sequence_counters``, reported beside). A gap, a kernel drop, a rejected datagram or packets the
  records do not account for fail the export (``ExportError``) unless ``allow_loss``.
- **Timing**: NetFlow/IPFIX datagrams are stamped with their header's export time (softflowd ``-a`` and pmacct take
  it from the capture, so it is virtual time). sFlow (pmacct sfprobe) carries no time and pmacct reads the file far
  faster than real time, so each flow sample is matched to the raw frame it sampled (the sampled header bytes equal
  the frame's first bytes; the IP id, checksum and TCP sequence make them unique) and the datagram is split into
  datagrams whose samples share one capture time, each stamped with that time: every sample's time is its packet's
  time. Split datagrams are renumbered 1, 2, ... (the sFlow datagram sequence stays gap-free); sample sequences are
  pmacct's. The 1:8 sampling is pmacct's own (random).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import time
from collections import Counter, OrderedDict, defaultdict, deque
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as `python bench/detection/exporters.py`
    sys.path[0] = str(Path(__file__).resolve().parents[2])

import numpy as np  # noqa: E402

from analytics.schema import FlowBatchBuilder, ip_to_words  # noqa: E402
from collector.flows.decoders import FlowDecoders  # noqa: E402
from collector.metrics import Counters  # noqa: E402
from collector.pcap import frame_blocks  # noqa: E402


@dataclass(frozen=True)
class Input:
    """One input of the evaluation: how the raw pcap reaches brokerwatch, and which limits class scores it."""

    name: str
    limit_class: str  # "raw" | "flow" | "flow_active" | "sflow" (pcapworld labels' limits keys)
    dataset: str  # event.dataset of its records (analytics.schema's dataset names)
    exporter: str  # "softflowd" | "pmacct_nfprobe" | "pmacct_sfprobe" | "" (the meter)
    version: int = 0  # NetFlow/IPFIX version (5, 9, 10)
    active: int = 0  # active timeout in seconds, 0: none


INPUTS: "OrderedDict[str, Input]" = OrderedDict((i.name, i) for i in (
    Input("softflowd_v9", "flow", "netflow.v9", "softflowd", 9),
    Input("softflowd_ipfix", "flow", "ipfix", "softflowd", 10),
    Input("softflowd_v9_active300", "flow_active", "netflow.v9", "softflowd", 9, 300),
    Input("softflowd_v5", "flow", "netflow.v5", "softflowd", 5),
    Input("pmacct_v9_active300", "flow_active", "netflow.v9", "pmacct_nfprobe", 9, 300),
    Input("pmacct_sflow8", "sflow", "sflow", "pmacct_sfprobe"),
    Input("meter", "raw", "pcap", ""),
))

#: Idle timeouts of every flow exporter (s): an established TCP flow lives an hour idle, a closed or reset one a
#: minute after its FIN/RST, UDP 5 minutes; expiry checked every 60 s. The fixtures use the same (fixtures/README).
TIMEOUTS = {"tcp": 3600, "tcp.fin": 60, "tcp.rst": 60, "udp": 300, "expint": 60}
#: softflowd's table without active timeout: large, so the table never cuts a flow before its timeout.
TABLE = 262_144
#: softflowd with maxlife: its table (= packets read between two expiry checks, see the docstring) holds this many
#: seconds of the capture's mean packet rate, between the bounds below, so that a flow over maxlife leaves within
#: about that much virtual time (live softflowd clusters its expiries on the 60 s expint); a full table
#: force-expires the flows due first.
ACTIVE_DISPATCH_S = 30.0
ACTIVE_TABLE_MIN, ACTIVE_TABLE_MAX = 16, 65536
#: pmacct nfprobe's flow cache: 65536 lost 831 of 3.42M packets of a day at scale 0.2 (no sequence gap shows it;
#: the packet accounting does), 1M lost none.
PMACCT_MAXFLOWS = 1_048_576
#: Extra pmacctd config lines for the pipe from its core to the plugin: none, pmacct's defaults lost nothing while
#: ``plugin_buffer_size: 1048576`` lost the file's last buffer (see the module docstring).
PMACCT_BUFFERS: list[str] = []
#: sfprobe samples 1 packet in SFLOW_RATE (pmacct's own random sampling).
SFLOW_RATE = 8
#: Receive buffer of the export socket (bytes): the exporters send as fast as they read the file.
RCVBUF = 256 << 20
#: Ports written in the output pcap (what tshark and a collector expect; replay recognises formats by content).
PORTS = {"netflow": 2055, "ipfix": 4739, "sflow": 6343}
#: A run that sends nothing for this long after its exporter exited is complete.
QUIET_S = 1.0
#: Wall-clock bound of one exporter run.
TIMEOUT_S = 3 * 3600

_SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
_PCAP_HEADER = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1)
_LOCAL = socket.inet_aton("127.0.0.1")


class ExportError(RuntimeError):
    """An exporter failed, lost data, or exported something that does not account for the raw pcap."""


def tool(name: str) -> str | None:
    """Absolute path of an exporter binary (Debian puts them in /usr/sbin), None if missing."""
    return shutil.which(name) or (f"/usr/sbin/{name}" if os.path.exists(f"/usr/sbin/{name}") else None)


# ---- receiving -------------------------------------------------------------------------------------------------

def _kernel_drops(port: int) -> int:
    """The drops column of /proc/net/udp for the socket bound to 127.0.0.1:port (0 if not found)."""
    try:
        lines = Path("/proc/net/udp").read_text().splitlines()[1:]
    except OSError:
        return 0
    want = f"0100007F:{port:04X}"
    for line in lines:
        f = line.split()
        if len(f) > 12 and f[1] == want:
            return int(f[12])
    return 0


def receive_while(make_cmd, workdir: Path) -> dict:
    """Run make_cmd(port) (port: a fresh UDP port on 127.0.0.1) and take every datagram it sends there.

    Returns {"datagrams": [bytes], "seconds": exporter wall time, "kernel_drops": n, "returncode": rc,
    "foreign": n}: datagrams from another source than the exporter's (the one most datagrams come from) are left out
    and counted, since the machine's other processes may send to a port that was theirs a moment ago.
    """
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        rx.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, RCVBUF)
    except OSError:  # not root: as large as net.core.rmem_max allows
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(0.2)
    port = rx.getsockname()[1]
    got: list[tuple[bytes, tuple]] = []
    out = open(workdir / "exporter.out", "wb")
    t0 = time.monotonic()
    cmd = make_cmd(port)
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=workdir)
    seconds = None
    quiet_since = None
    try:
        while True:
            try:
                got.append(rx.recvfrom(65535))
                quiet_since = None
                continue
            except socket.timeout:
                pass
            if proc.poll() is None:
                if time.monotonic() - t0 > TIMEOUT_S:
                    raise ExportError(f"{cmd[0]} still running after {TIMEOUT_S} s")
                continue
            if seconds is None:
                seconds = time.monotonic() - t0
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since > QUIET_S:
                break
        drops = _kernel_drops(port)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        out.close()
        rx.close()
    sources = Counter(addr for _d, addr in got)
    main_src = sources.most_common(1)[0][0] if sources else None
    kept = [d for d, addr in got if addr == main_src]
    return {"datagrams": kept, "seconds": seconds, "kernel_drops": drops, "returncode": proc.returncode,
            "foreign": len(got) - len(kept)}


# ---- exporters -------------------------------------------------------------------------------------------------

def active_table(raw_n: int, span_s: float) -> int:
    """softflowd's -m with maxlife for a capture of raw_n packets over span_s seconds (ACTIVE_DISPATCH_S of them)."""
    rate = raw_n / max(span_s, 1.0)
    return int(min(ACTIVE_TABLE_MAX, max(ACTIVE_TABLE_MIN, round(rate * ACTIVE_DISPATCH_S))))


def _softflowd_cmd(inp: Input, raw: Path, port: int, table: int) -> list[str]:
    exe = tool("softflowd")
    if exe is None:
        raise ExportError("softflowd is not installed")
    # No -c: -r turns the control socket off and a -c after it makes softflowd 1.1.0 poll an uninitialised pollfd
    # (fixtures/README). -a: flow and export times from the capture.
    cmd = [exe, "-d", "-r", str(raw), "-a", "-n", f"127.0.0.1:{port}", "-v", str(inp.version),
           "-m", str(table)]
    for k, v in TIMEOUTS.items():
        cmd += ["-t", f"{k}={v}"]
    # maxlife=0 disables the active timeout (softflowd's default is a week)
    return cmd + ["-t", f"maxlife={inp.active}"]


def _pmacct_cmd(inp: Input, raw: Path, workdir: Path, port: int) -> list[str]:
    exe = tool("pmacctd")
    if exe is None:
        raise ExportError("pmacctd is not installed")
    lines = [
        "daemonize: false",
        f"pcap_savefile: {raw}",  # pcap_savefile_wait unset: pmacctd exits at the end of the file
        f"logfile: {workdir}/pmacctd.log",
        f"pidfile: {workdir}/pmacctd.pid",
    ] + PMACCT_BUFFERS
    if inp.exporter == "pmacct_nfprobe":
        t = TIMEOUTS
        lines += ["plugins: nfprobe", f"nfprobe_receiver: 127.0.0.1:{port}", f"nfprobe_version: {inp.version}",
                  f"nfprobe_maxflows: {PMACCT_MAXFLOWS}", "nfprobe_engine: 1",
                  f"nfprobe_timeouts: tcp={t['tcp']}:tcp.fin={t['tcp.fin']}:tcp.rst={t['tcp.rst']}:udp={t['udp']}"
                  f":maxlife={inp.active or 86400 * 365}:expint={t['expint']}"]
    else:
        lines += ["plugins: sfprobe", f"sfprobe_receiver: 127.0.0.1:{port}", "sfprobe_agentip: 127.0.0.1",
                  f"sampling_rate: {SFLOW_RATE}"]
    conf = workdir / "pmacctd.conf"
    conf.write_text("\n".join(lines) + "\n")
    return [exe, "-f", str(conf)]


# ---- decoding, checks ------------------------------------------------------------------------------------------

def _header_time_ns(d: bytes) -> int | None:
    """Export time in a NetFlow v5/v9 or IPFIX header (ns since the epoch); None for anything else."""
    if len(d) < 16:
        return None
    version = d[0] << 8 | d[1]
    if version == 5 and len(d) >= 24:
        secs, nsecs = struct.unpack_from(">II", d, 8)
        return secs * 1_000_000_000 + nsecs
    if version == 9 and len(d) >= 20:
        return struct.unpack_from(">I", d, 8)[0] * 1_000_000_000
    if version == 10:
        return struct.unpack_from(">I", d, 4)[0] * 1_000_000_000
    return None


def decode(datagrams: list[bytes], times_ns: list[int], per_datagram: bool = True) -> tuple:
    """brokerwatch's decoders over the datagrams in order: (FlowBatch, Counters, rows per datagram, rejections).

    per_datagram=False decodes in blocks (the service's path; much faster for sFlow's many small datagrams) and
    returns no per-datagram rows.
    """
    counters = Counters()
    dec = FlowDecoders(counters)
    builder = FlowBatchBuilder()
    exporter = ip_to_words("127.0.0.1")
    per = np.zeros(len(datagrams), np.int64)
    if per_datagram:
        for i, (d, t) in enumerate(zip(datagrams, times_ns)):
            per[i] = dec.decode(d, exporter, t, builder)
    else:
        for s in range(0, len(datagrams), 8192):
            part = datagrams[s:s + 8192]
            dec.decode_many(part, [exporter] * len(part), times_ns[s:s + 8192], builder)
    return builder.build(), counters, per, dec.rejected()


def sequence_gaps(counters: Counters) -> int:
    """Lost or reordered sequence numbers brokerwatch's decoders counted (used for sFlow datagrams and samples)."""
    return sum(v for name, series in counters.snapshot().items()
               if re.search(r"sequence_(lost|reordered)_total$", name) for v in series.values())


def _sequence_counters(counters: Counters) -> dict[str, int]:
    return {name: sum(series.values()) for name, series in counters.snapshot().items() if "sequence" in name}


def flow_sequence_gaps(datagrams: list[bytes], records: np.ndarray) -> int:
    """Sequence numbers missing or out of order in a NetFlow v5/v9 or IPFIX stream, as received.

    v5: flow_sequence counts flows, next = seq + count (per engine type/id). v9: package sequence, next = seq + 1
    (per source id). IPFIX: RFC 7011 counts the data records sent before this message (next = seq + records of
    this one); softflowd 1.1.0 counts them including this message's (its first message says 24 with 24 records),
    so next = seq + records of the next one. The convention is taken from the first message (seq 0: RFC) and a gap
    is a jump from what it predicts. ``records`` is the data records of each datagram (the decoder's rows).
    """
    nxt: dict = {}
    gaps = 0
    ipfix_inclusive = None
    for d, n in zip(datagrams, records.tolist()):
        version = d[0] << 8 | d[1]
        if version == 5:
            key, seq, step = (5, d[20], d[21]), struct.unpack_from(">I", d, 16)[0], d[2] << 8 | d[3]
        elif version == 9:
            key, seq, step = (9, d[16:20]), struct.unpack_from(">I", d, 12)[0], 1
        else:
            key, seq, step = (10, d[12:16]), struct.unpack_from(">I", d, 8)[0], n
            if ipfix_inclusive is None:
                ipfix_inclusive = seq != 0 and seq == n
            if ipfix_inclusive:
                seq, step = (seq - n) & 0xFFFFFFFF, n  # the sequence before this message's records
        if key in nxt and seq != nxt[key]:
            gaps += min((seq - nxt[key]) & 0xFFFFFFFF, (nxt[key] - seq) & 0xFFFFFFFF)
        nxt[key] = (seq + step) & 0xFFFFFFFF
    return gaps


def raw_packets(raw: Path) -> tuple[int, int, int]:
    """(frames, first and last frame time in ns) of a pcap."""
    n, first, last = 0, None, None
    for b in frame_blocks(str(raw)):
        k = len(b)
        if k:
            first = int(b.ts_ns[0]) if first is None else first
            last = int(b.ts_ns[k - 1])
            n += k
    return n, first or 0, last or 0


def _due_s(proto: np.ndarray, flags: np.ndarray) -> np.ndarray:
    """Each record's idle timeout under TIMEOUTS (FIN/RST: tcp.fin; TCP: tcp; UDP: udp; others: tcp)."""
    due = np.full(len(proto), TIMEOUTS["tcp"], np.int64)
    due[proto == 17] = TIMEOUTS["udp"]
    due[(proto == 6) & ((flags & 0x05) != 0)] = TIMEOUTS["tcp.fin"]
    return due


def flow_checks(inp: Input, datagrams: list[bytes], times: list[int], raw_n: int, raw_last_ns: int) -> dict:
    """Records, packets accounted, sequence gaps, rejections, early evictions, record durations of a flow export."""
    batch, counters, per, rejected = decode(datagrams, times)
    c = batch.columns
    n = len(c["start_ns"])
    export_ns = np.repeat(np.asarray(times, np.int64), per)
    dur_s = (c["end_ns"] - c["start_ns"]) / 1e9
    # exported before the end of the file and before the flow's idle/FIN timeout had passed (nor maxlife reached):
    # the exporter's table was full and cut the flow early
    before_eof = export_ns < raw_last_ns - TIMEOUTS["expint"] * 1_000_000_000
    idle_ns = _due_s(c["proto"], c["tcp_flags"]) * 1_000_000_000
    not_due = export_ns < c["end_ns"] + idle_ns - TIMEOUTS["expint"] * 1_000_000_000
    if inp.active:
        not_due &= dur_s < inp.active
    out = {
        "records": n,
        "packets_accounted": int(c["packets"].sum()),
        "raw_packets": raw_n,
        "sequence_gaps": flow_sequence_gaps(datagrams, per),
        # what brokerwatch's decoders count (softflowd's IPFIX convention shows there as lost/reordered, see above)
        "decoder_sequence_counters": _sequence_counters(counters),
        "rejected": rejected,
        "evicted_before_due": int((before_eof & not_due).sum()),
        "max_record_s": round(float(dur_s.max()), 3) if n else 0.0,
    }
    if inp.active:  # records the active timeout cut: how far past it (the exporter's check comes late, see above)
        cut = dur_s[dur_s >= inp.active]
        out["sliced_records"] = {"n": int(len(cut)), "median_s": round(float(np.median(cut)), 1) if len(cut) else 0,
                                 "max_s": round(float(cut.max()), 1) if len(cut) else 0}
    return out


# ---- sFlow: sample times from the raw packets -----------------------------------------------------------------

@dataclass
class _SflowDatagram:
    head: bytes  # version .. sub-agent id (the sequence, uptime and sample count are rewritten)
    seq: int
    samples: list  # [(sample bytes incl. its format/length words, sampled header or None)]


def _parse_sflow(d: bytes) -> _SflowDatagram:
    """Split an sFlow v5 datagram into its samples and the raw header each flow sample carries."""
    version, atype = struct.unpack_from(">II", d, 0)
    if version != 5:
        raise ExportError(f"not sFlow v5 (version {version})")
    alen = 4 if atype == 1 else 16
    at = 8 + alen
    head = d[:at + 4]
    _sub, seq, _uptime, nsamples = struct.unpack_from(">IIII", d, at)
    pos = at + 16
    samples = []
    for _ in range(nsamples):
        fmt, length = struct.unpack_from(">II", d, pos)
        body = d[pos + 8:pos + 8 + length]
        header = None
        if fmt & 0xFFF == 1:  # flow sample: 8 words, then its records
            nrec = struct.unpack_from(">I", body, 28)[0]
            rp = 32
            for _r in range(nrec):
                rfmt, rlen = struct.unpack_from(">II", body, rp)
                if rfmt == 1:  # raw packet header: protocol, frame length, stripped, header length, bytes
                    hlen = struct.unpack_from(">I", body, rp + 20)[0]
                    header = bytes(body[rp + 24:rp + 24 + hlen])
                rp += 8 + rlen
        samples.append((d[pos:pos + 8 + length], header))
        pos += 8 + length
    return _SflowDatagram(head, seq, samples)


def _frame_key(b: bytes) -> int:
    """IP id, flags/fragment, TTL, protocol, header checksum of an Ethernet/IPv4 frame: a cheap first match."""
    return int.from_bytes(b[18:26], "little") if len(b) >= 26 else -1


def sample_times(raw: Path, headers: list[bytes | None]) -> tuple[np.ndarray, int]:
    """The capture time (ns) of the frame each sampled header came from (-1: none), and how many found none.

    A frame matches a sample when its first bytes equal the sampled header; candidates are found with an 8-byte
    key (IP id .. checksum) over each block of frames, and samples are taken in order per key, since pmacct reads
    and samples the file in order.
    """
    times = np.full(len(headers), -1, np.int64)
    pending: dict[int, deque] = defaultdict(deque)
    for i, h in enumerate(headers):
        if h is not None:
            pending[_frame_key(h)].append(i)
    keys = np.fromiter(pending.keys(), np.uint64, len(pending))
    keys.sort()
    lanes = np.arange(8)
    for blk in frame_blocks(str(raw)):
        k = len(blk)
        if not k:
            continue
        ok = blk.caplens >= 26
        fk = np.zeros(k, np.uint64)
        idx = blk.offs[ok][:, None] + 18 + lanes
        fk[ok] = blk.buf[idx].copy().view("<u8").ravel()
        pos = np.searchsorted(keys, fk)
        hit = np.nonzero(ok & (pos < len(keys)) & (keys[np.minimum(pos, len(keys) - 1)] == fk))[0]
        buf = blk.buf
        for j in hit.tolist():
            q = pending.get(int(fk[j]))
            if not q:
                continue
            off, ln = int(blk.offs[j]), int(blk.caplens[j])
            for pos_in_q, s in enumerate(q):
                h = headers[s]
                if len(h) <= ln and buf[off:off + len(h)].tobytes() == h:
                    times[s] = blk.ts_ns[j]
                    del q[pos_in_q]
                    break
    missing = sum(1 for i, h in enumerate(headers) if h is not None and times[i] < 0)
    return times, missing


def retime_sflow(datagrams: list[bytes], raw: Path) -> tuple[list[bytes], list[int], dict]:
    """Split pmacct's sFlow datagrams into datagrams of samples with one capture time, stamped with it."""
    parsed = [_parse_sflow(d) for d in datagrams]
    flat = [(di, s) for di, p in enumerate(parsed) for s in p.samples]
    headers = [h for _, (_, h) in flat]
    times, missing = sample_times(raw, headers)
    if missing:
        raise ExportError(f"{missing} of {len(flat)} sFlow samples match no frame of {raw}")
    # a sample without a packet header (a counter sample) takes the time of the flow sample before it (after it at
    # the start), so it stays in its datagram's place
    known = np.flatnonzero(times >= 0)
    if len(known) and len(known) < len(times):
        prev = np.maximum.accumulate(np.where(times >= 0, np.arange(len(times)), -1))
        times = np.where(prev >= 0, times[np.maximum(prev, 0)], times[known[0]])
    out, out_t = [], []
    spread = []
    seq = 0
    k = 0
    t_first = int(times[0]) if len(times) else 0
    for p in parsed:
        n = len(p.samples)
        ts = times[k:k + n]
        if n:
            spread.append(int(ts.max() - ts.min()))
        group: list[bytes] = []
        for i in range(n):
            group.append(p.samples[i][0])
            if i == n - 1 or ts[i + 1] != ts[i]:
                seq += 1
                uptime = ((int(ts[i]) - t_first) // 1_000_000) & 0xFFFFFFFF
                out.append(p.head + struct.pack(">III", seq, uptime, len(group)) + b"".join(group))
                out_t.append(int(ts[i]))
                group = []
        k += n
    sp = np.asarray(spread or [0], np.int64) / 1e9
    return out, out_t, {
        "samples": len(flat),
        "flow_samples": sum(h is not None for h in headers),  # the rest: counter samples (pmacct sends on a timer)
        "datagrams_received": len(datagrams),
        "received_spread_s": {"median": round(float(np.median(sp)), 3), "p99": round(float(np.quantile(sp, 0.99)), 3),
                              "max": round(float(sp.max()), 3)},
    }


def _sflow_datagram_gaps(datagrams: list[bytes]) -> int:
    """Missing or reordered datagram sequence numbers per (agent, sub-agent) in pmacct's export as received."""
    nxt: dict[bytes, int] = {}
    gaps = 0
    for d in datagrams:
        atype = struct.unpack_from(">I", d, 4)[0]
        at = 8 + (4 if atype == 1 else 16)
        key = d[8:at + 4]
        seq = struct.unpack_from(">I", d, at + 4)[0]
        if key in nxt and seq != nxt[key]:
            gaps += abs(seq - nxt[key])
        nxt[key] = seq + 1
    return gaps


def sflow_checks(datagrams: list[bytes], times: list[int], raw_n: int, raw_first: int, raw_last: int) -> dict:
    """Samples, pool and drops as pmacct counted them, sequence gaps and rejections of the retimed export."""
    batch, counters, _per, rejected = decode(datagrams, times, per_datagram=False)
    pool = drops = 0
    for d in datagrams:  # the last flow sample's pool: packets pmacct's sampler saw
        for body, _h in _parse_sflow(d).samples:
            if struct.unpack_from(">I", body, 0)[0] & 0xFFF == 1:
                pool, d_ = struct.unpack_from(">II", body, 8 + 12)
                drops = max(drops, d_)
    t = batch.columns["start_ns"]
    return {
        "records": len(t),
        "sample_pool": pool,
        "sampler_drops": drops,
        "raw_packets": raw_n,
        "sequence_gaps": sequence_gaps(counters),
        "sequence_counters": _sequence_counters(counters),
        "rejected": rejected,
        "times_within_raw": bool(len(t) == 0 or (t.min() >= raw_first and t.max() <= raw_last)),
    }


# ---- output ----------------------------------------------------------------------------------------------------

def write_pcap(path: Path, datagrams: list[bytes], times_ns: list[int], dport: int) -> None:
    """Classic pcap (µs, Ethernet) of UDP datagrams 127.0.0.1:50000 -> 127.0.0.1:dport, one frame each."""
    with open(path, "wb") as f:
        f.write(_PCAP_HEADER)
        for d, t in zip(datagrams, times_ns):
            udp = struct.pack(">HHHH", 50000, dport, 8 + len(d), 0)
            ip = bytearray(struct.pack(">BBHHHBBH4s4s", 0x45, 0, 28 + len(d), 0, 0x4000, 64, 17, 0, _LOCAL, _LOCAL))
            s = sum(struct.unpack(">10H", ip))
            s = (s & 0xFFFF) + (s >> 16)
            struct.pack_into(">H", ip, 10, ~((s & 0xFFFF) + (s >> 16)) & 0xFFFF)
            frame = b"\x00" * 12 + b"\x08\x00" + bytes(ip) + udp + d
            sec, us = divmod(t // 1000, 1_000_000)
            f.write(struct.pack("<IIII", sec, us, len(frame), len(frame)))
            f.write(frame)


# ---- the API ---------------------------------------------------------------------------------------------------

def export(name: str, raw_pcap, out_pcap, workdir, allow_loss: bool = False) -> dict:
    """Run input `name`'s exporter over raw_pcap; write its export to out_pcap; the stats (evalsuite.md §2).

    Returns {"path", "datagrams", "seconds", "sequence_gaps", "kernel_drops", "timing", ...checks}; raises
    ExportError when the exporter fails or loses data (unless allow_loss). ``meter`` returns the raw pcap's path.
    """
    inp = INPUTS[name]
    raw = Path(raw_pcap).resolve()
    if not inp.exporter:
        return {"path": str(raw), "datagrams": 0, "seconds": 0.0, "sequence_gaps": 0,
                "timing": "raw pcap: brokerwatch's flow meter reads the packets' own times"}
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    out_pcap = Path(out_pcap)
    raw_n, raw_first, raw_last = raw_packets(raw)
    if inp.exporter == "softflowd":
        table = active_table(raw_n, (raw_last - raw_first) / 1e9) if inp.active else TABLE
        got = receive_while(lambda port: _softflowd_cmd(inp, raw, port, table), workdir)
    else:
        (workdir / "pmacctd.log").unlink(missing_ok=True)  # pmacctd appends
        got = receive_while(lambda port: _pmacct_cmd(inp, raw, workdir, port), workdir)
    log = (workdir / "exporter.out").read_text(errors="replace")
    # pmacctd exits 1 at the end of a savefile once its plugin is gone ("no more plugins active"); its export is
    # judged by the accounting checks below instead
    if got["returncode"] != 0 and not (inp.exporter.startswith("pmacct") and got["returncode"] == 1):
        raise ExportError(f"{name}: {inp.exporter} exited {got['returncode']}: {log[-500:]}")
    datagrams = got["datagrams"]
    stats: dict = {"path": str(out_pcap), "seconds": round(got["seconds"], 2), "kernel_drops": got["kernel_drops"],
                   "foreign_datagrams": got["foreign"]}
    if inp.exporter == "softflowd":
        stats["table"] = table
    if inp.exporter == "pmacct_sfprobe":
        gaps_rx = _sflow_datagram_gaps(datagrams)
        t = time.monotonic()
        out, times, info = retime_sflow(datagrams, raw)
        stats.update(info)
        stats["retime_seconds"] = round(time.monotonic() - t, 2)
        stats.update(sflow_checks(out, times, raw_n, raw_first, raw_last))
        stats["sequence_gaps"] += gaps_rx
        stats["timing"] = ("each sample stamped with its sampled packet's capture time (datagrams split per time, "
                           "renumbered)")
        # the last sample's pool counts the packets pmacct's sampler had seen by then: the raw packets but a tail
        # (at 1 in 8, a tail of 16 x 8 unsampled packets has probability (7/8)**128 = 4e-8); less means pmacct's
        # core dropped packets before the sampler
        lost = bool(stats["sampler_drops"] or stats["sample_pool"] > raw_n
                    or raw_n - stats["sample_pool"] > 16 * SFLOW_RATE)
        write_pcap(out_pcap, out, times, PORTS["sflow"])
    else:
        times = []
        for d in datagrams:
            t = _header_time_ns(d)
            if t is None:
                raise ExportError(f"{name}: a datagram that is not NetFlow/IPFIX ({d[:4].hex()})")
            times.append(t)
        stats.update(flow_checks(inp, datagrams, times, raw_n, raw_last))
        stats["timing"] = "export header time (the exporter's clock follows the capture)"
        lost = stats["packets_accounted"] != raw_n
        out = datagrams
        write_pcap(out_pcap, out, times, PORTS["ipfix" if inp.version == 10 else "netflow"])
    stats["datagrams"] = len(out)
    pm_log = workdir / "pmacctd.log"
    if pm_log.exists():
        # its normal end of a savefile logs three warnings (plugin shut down, connection lost, no more plugins)
        normal = ("Shutting down on user request", "connection lost to", "no more plugins active")
        warn = [ln for ln in pm_log.read_text(errors="replace").splitlines()
                if ("WARN" in ln or "ERROR" in ln) and not any(m in ln for m in normal)]
        stats["exporter_warnings"] = warn[:5]
        lost = lost or any("missing data" in ln.lower() for ln in warn)
    else:
        stats["exporter_summary"] = [ln.strip() for ln in log.splitlines()
                                     if re.match(r"\s*(Flows expired|Flows exported|Packets processed)", ln)]
    if not allow_loss and (stats["sequence_gaps"] or stats["kernel_drops"] or stats["rejected"] or lost):
        raise ExportError(f"{name}: loss or rejection in the export: {json.dumps(stats, default=str)}")
    return stats


def main(argv: list[str] | None = None) -> int:
    """CLI: export RAW.pcap through the chosen inputs into OUT_DIR/NAME.pcap and print the stats as JSON lines."""
    ap = argparse.ArgumentParser(prog="python -m bench.detection.exporters", description=__doc__.split("\n\n")[0])
    ap.add_argument("raw", metavar="RAW.pcap", help="raw traffic: classic pcap, Ethernet IPv4, in time order")
    ap.add_argument("out_dir", metavar="OUT_DIR", help="writes NAME.pcap and NAME/ (the exporter's work files)")
    ap.add_argument("--inputs", nargs="+", default=[n for n in INPUTS if n != "meter"], choices=list(INPUTS),
                    help="inputs to export (default: every exporter)")
    ap.add_argument("--allow-loss", action="store_true", help="report loss instead of failing")
    args = ap.parse_args(argv)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rc = 0
    for name in args.inputs:
        try:
            stats = export(name, args.raw, out / f"{name}.pcap", out / name, allow_loss=args.allow_loss)
        except ExportError as e:
            print(json.dumps({"input": name, "error": str(e)}), flush=True)
            rc = 1
            continue
        print(json.dumps({"input": name, **stats}), flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
