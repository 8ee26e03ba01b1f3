"""What a command line says about pub/sub: the broker, port, topic and message a tool was told to use.

Host logs give a process's command line (Sysmon 1, auditd EXECVE/PROCTITLE, eslogger exec, osquery
process_events). For the tools C2 kits and operators use to talk to brokers this reads:
- mosquitto_pub / mosquitto_sub (``-h -p -t -m``, ``-L mqtt[s]://user@host:port/topic``, ``--cafile`` = TLS);
- python one-liners with paho-mqtt or a raw socket (``python -c "...connect('h', 1883)...publish('t', 'm')"``);
- nc / ncat / netcat ``host port``, socat ``TCP:host:port`` / ``OPENSSL:host:port``;
- curl / wget and PowerShell's Invoke-WebRequest/Invoke-RestMethod to a URL (method, path: ``URIPathRegex`` applies);
- osascript (``do shell script "..."`` is read as the command inside; JXA URLs);
- PowerShell with System.Net.Sockets.TcpClient or an MQTT library (M2Mqtt, MQTTnet), ``-EncodedCommand`` decoded.
A message given on the command line is scored for obfuscation (``payload_score``). Pure functions, no I/O.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
import shlex
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import urlsplit

#: Ports of URL schemes where the URL gives none.
SCHEME_PORTS = {"mqtt": 1883, "mqtts": 8883, "tcp": 1883, "ssl": 8883, "ws": 80, "wss": 443, "http": 80,
                "https": 443, "amqp": 5672, "amqps": 5671, "stomp": 61613, "nats": 4222, "xmpp": 5222}
#: Schemes that are encrypted channels.
TLS_SCHEMES = frozenset({"mqtts", "ssl", "wss", "https", "amqps"})


@dataclass(frozen=True)
class PubSubInvocation:
    """What one command line asks a tool to do with a broker; '' and 0 where the command line does not say."""

    tool: str  # mosquitto_pub, mosquitto_sub, python, nc, socat, curl, wget, osascript, powershell
    broker: str = ""  # host name or address
    port: int = 0
    topic: str = ""
    message: str = ""
    scheme: str = ""  # mqtt, mqtts, https, tcp, ...
    path: str = ""  # URL path (curl, wget, WebSocket brokers)
    method: str = ""  # HTTP method (curl -X, -d implies POST)
    tls: bool = False
    library: str = ""  # paho, M2Mqtt, MQTTnet, System.Net.Sockets

    def evidence(self) -> dict:
        """The fields that are set, for an alert's evidence."""
        return {k: v for k, v in self.__dict__.items() if v not in ("", 0, False)}


def _basename(arg: str) -> str:
    cut = max(arg.rfind("/"), arg.rfind("\\"))
    name = arg[cut + 1:] if cut >= 0 else arg
    return name.lower()


def _tool_name(arg: str) -> str:
    name = _basename(arg)
    return name[:-4] if name.endswith(".exe") else name


def split_args(cmd: str) -> list[str]:
    """Arguments of a command line: POSIX shell quoting, or Windows' (backslashes kept) for a .exe path."""
    head = cmd.lstrip()[:300].lower()
    windows = ".exe" in head or (len(head) > 2 and head[1] == ":" and head[2] == "\\") or head.startswith('"')
    try:
        if windows:
            lex = shlex.shlex(cmd, posix=True)
            lex.whitespace_split = True
            lex.escape = ""  # Windows command lines: a backslash is a path separator, not an escape
            lex.quotes = '"'
            return list(lex)
        return shlex.split(cmd)
    except ValueError:  # an unbalanced quote: fall back to whitespace
        return cmd.split()


_URL = re.compile(r"\b(mqtts?|wss?|https?|tcp|ssl|amqps?|stomp|nats|xmpp)://[^\s'\"<>`)]+", re.I)


def _url(text: str) -> tuple[str, str, int, str, str] | None:
    """(scheme, host, port, path, topic-from-path) of a URL in text, or None."""
    m = _URL.search(text)
    if not m:
        return None
    try:
        u = urlsplit(m.group(0))
        host = u.hostname or ""
        port = u.port or SCHEME_PORTS.get(u.scheme.lower(), 0)
    except ValueError:
        return None
    scheme = u.scheme.lower()
    path = u.path or ""
    topic = path[1:] if scheme.startswith("mqtt") and path.startswith("/") else ""
    return scheme, host, port, path, topic


def _port(text: str) -> int:
    try:
        p = int(text)
    except (TypeError, ValueError):
        return 0
    return p if 0 < p < 65536 else 0


def _mosquitto(tool: str, args: list[str]) -> PubSubInvocation:
    host = topic = message = scheme = ""
    port = 0
    tls = False
    i = 0
    while i < len(args):
        a = args[i]
        nxt = args[i + 1] if i + 1 < len(args) else ""
        if a in ("-h", "--host"):
            host, i = nxt, i + 2
        elif a in ("-p", "--port"):
            port, i = _port(nxt), i + 2
        elif a in ("-t", "--topic"):
            topic = topic or nxt
            i += 2
        elif a in ("-m", "--message"):
            message, i = nxt, i + 2
        elif a in ("-L", "--url"):
            u = _url(nxt)
            if u:
                scheme, host, port, _, topic = u[0], u[1], u[2], u[3], u[4] or topic
            i += 2
        elif a in ("--cafile", "--capath", "--cert", "--tls-use-os-certs", "--insecure"):
            tls = True
            i += 1 if a in ("--tls-use-os-certs", "--insecure") else 2
        else:
            i += 1
    if not port and host:
        port = 8883 if tls else 1883
    tls = tls or scheme in TLS_SCHEMES or port == 8883
    return PubSubInvocation(tool, host, port, topic, message, scheme or ("mqtts" if tls else "mqtt"), tls=tls)


_PY_CONNECT = re.compile(r"""\.connect(?:_async)?\s*\(\s*\(?\s*['"]([^'"]+)['"]\s*(?:,\s*(\d+))?""")
_PY_PUBLISH = re.compile(r"""\.publish\s*\(\s*['"]([^'"]*)['"]\s*(?:,\s*(?:payload\s*=\s*)?['"]([^'"]*)['"])?""")
_PY_SEND = re.compile(r"""\.send(?:all)?\s*\(\s*b?['"]([^'"]*)['"]""")


def _python(tool: str, args: list[str]) -> PubSubInvocation | None:
    code = ""
    for i, a in enumerate(args[:-1]):
        if a == "-c":
            code = args[i + 1]
            break
    if not code:
        if "-m" in args:  # python -m paho... is not a thing; a module run with a broker URL is
            u = _url(" ".join(args))
            if u:
                return PubSubInvocation(tool, u[1], u[2], u[4], scheme=u[0], path=u[3], tls=u[0] in TLS_SCHEMES)
        return None
    lib = "paho" if "paho" in code else "socket" if "socket" in code else ""
    c = _PY_CONNECT.search(code)
    u = _url(code)
    if not c and not u:
        return None
    host, port = (c.group(1), _port(c.group(2)) or (1883 if lib == "paho" else 0)) if c else (u[1], u[2])
    p = _PY_PUBLISH.search(code)
    topic, message = (p.group(1), p.group(2) or "") if p else ("", "")
    if not p:
        s = _PY_SEND.search(code)
        message = s.group(1) if s else ""
    tls = "tls_set" in code or "ssl" in code or port in (8883, 5671, 443)
    return PubSubInvocation(tool, host, port, topic, message, "mqtts" if tls and lib == "paho" else "", tls=tls,
                            library=lib)


def _netcat(tool: str, args: list[str]) -> PubSubInvocation | None:
    pos = [a for a in args[1:] if not a.startswith("-")]
    # options that take a value (nc -w 3, ncat --send-only is a flag): drop the value that follows them
    skip = set()
    for i, a in enumerate(args[1:], 1):
        if a in ("-w", "-i", "-p", "-s", "-q", "-x", "-X", "--wait", "--source-port", "-e", "-c"):
            skip.add(i + 1)
    pos = [a for i, a in enumerate(args[1:], 1) if not a.startswith("-") and i not in skip]
    if len(pos) >= 2 and _port(pos[1]):
        tls = "--ssl" in args
        return PubSubInvocation(tool, pos[0], _port(pos[1]), tls=tls)
    return None


_SOCAT = re.compile(r"^(?:TCP4?|TCP6|OPENSSL|SSL|TCP-CONNECT)[:-]([^:,]+|\[[^\]]+\]):(\d+)", re.I)


def _socat(tool: str, args: list[str]) -> PubSubInvocation | None:
    for a in args[1:]:
        m = _SOCAT.match(a)
        if m:
            return PubSubInvocation(tool, m.group(1).strip("[]"), _port(m.group(2)),
                                    tls=a[:3].upper() in ("OPE", "SSL"))
    return None


def _http_client(tool: str, args: list[str]) -> PubSubInvocation | None:
    method = ""
    data = ""
    url = None
    i = 1
    while i < len(args):
        a = args[i]
        nxt = args[i + 1] if i + 1 < len(args) else ""
        if a in ("-X", "--request", "-Method", "--method"):
            method, i = nxt.upper(), i + 2
            continue
        if a in ("-d", "--data", "--data-binary", "--data-raw", "--data-urlencode", "-F", "--form", "--post-data",
                 "-Body", "--body-data"):
            data, i = nxt, i + 2
            method = method or "POST"
            continue
        if url is None:
            url = _url(a)
        i += 1
    if url is None:
        return None
    scheme, host, port, path, _ = url
    return PubSubInvocation(tool, host, port, "", data, scheme, path, method or "GET", tls=scheme in TLS_SCHEMES)


_PS_TCP = re.compile(r"""(?:TcpClient|Sockets\.TCPClient)\s*(?:\]::new)?\s*\(\s*['"]([^'"]+)['"]\s*,\s*(\d+)""", re.I)
_PS_MQTT_LIB = re.compile(r"(M2Mqtt|MQTTnet|MqttClient|uPLibrary\.Networking)", re.I)
_PS_MQTT_HOST = re.compile(r"""MqttClient\s*(?:\]::new)?\s*\(\s*['"]([^'"]+)['"](?:\s*,\s*(\d+))?""", re.I)
_PS_WEB = re.compile(r"\b(Invoke-WebRequest|Invoke-RestMethod|iwr|irm|Net\.WebClient|UploadString)\b", re.I)
_PS_METHOD = re.compile(r"-Method\s+['\"]?(\w+)", re.I)
_PS_ENC = re.compile(r"^-(?:e|ec|en|enc|enco|encod|encode|encoded|encodedc\w*)$", re.I)


def _powershell(tool: str, args: list[str], depth: int) -> PubSubInvocation | None:
    for i, a in enumerate(args[:-1]):
        if _PS_ENC.match(a):
            try:
                script = base64.b64decode(args[i + 1], validate=False).decode("utf-16-le", "replace")
            except (binascii.Error, ValueError):
                return None
            return _powershell_script(tool, script) if depth < 3 else None
    return _powershell_script(tool, " ".join(args[1:]))


def _powershell_script(tool: str, script: str) -> PubSubInvocation | None:
    m = _PS_MQTT_HOST.search(script)
    if m:
        port = _port(m.group(2)) or 1883
        return PubSubInvocation(tool, m.group(1), port, library="M2Mqtt" if "m2mqtt" in script.lower() else "MQTTnet",
                                tls=port in (8883, 443))
    lib = _PS_MQTT_LIB.search(script)
    t = _PS_TCP.search(script)
    if t:
        port = _port(t.group(2))
        return PubSubInvocation(tool, t.group(1), port, library=lib.group(1) if lib else "System.Net.Sockets",
                                tls="SslStream" in script or port in (8883, 5671, 443))
    if _PS_WEB.search(script):
        u = _url(script)
        if u:
            m = _PS_METHOD.search(script)
            method = m.group(1).upper() if m else ("POST" if "UploadString" in script or "-Body" in script else "GET")
            return PubSubInvocation(tool, u[1], u[2], scheme=u[0], path=u[3], method=method,
                                    tls=u[0] in TLS_SCHEMES)
    if lib:
        return PubSubInvocation(tool, library=lib.group(1))
    return None


_OSA_SHELL = re.compile(r"""do shell script\s+"((?:[^"\\]|\\.)*)\"""", re.I)


def _osascript(tool: str, args: list[str], depth: int) -> PubSubInvocation | None:
    script = " ".join(a for a in args[1:] if a not in ("-e", "-l", "JavaScript", "AppleScript"))
    m = _OSA_SHELL.search(script)
    if m and depth < 3:
        inner = _parse(m.group(1).replace('\\"', '"'), depth + 1)
        if inner is not None:
            return PubSubInvocation("osascript", inner.broker, inner.port, inner.topic, inner.message, inner.scheme,
                                    inner.path, inner.method, inner.tls, inner.library or inner.tool)
    u = _url(script)
    if u:
        method = "POST" if re.search(r"POST", script) else ""
        return PubSubInvocation(tool, u[1], u[2], u[4], scheme=u[0], path=u[3], method=method,
                                tls=u[0] in TLS_SCHEMES)
    return None


_SHELLS = {"sh", "bash", "zsh", "dash", "ksh", "cmd", "busybox"}


_TOOLS = {"mosquitto_pub", "mosquitto_sub", "mosquitto_rr", "nc", "ncat", "netcat", "nc.openbsd", "nc.traditional",
          "socat", "curl", "wget", "powershell", "pwsh", "osascript"}
_WRAPPERS = {"env", "nohup", "sudo", "doas", "timeout", "exec", "stdbuf", "nice", "ionice", "setsid", "command",
             "xargs", "watch"}
_SCRIPT_SPLIT = re.compile(r"\s*(?:;|&&|\|\||\||\n)\s*")
_SCRIPT_KEYWORDS = ("do ", "then ", "else ", "{ ", "( ")


def _known(tool: str) -> bool:
    return tool in _TOOLS or tool.startswith(("python", "pypy")) or tool in _SHELLS


def _script(script: str, depth: int) -> PubSubInvocation | None:
    """The first pub/sub invocation among the commands of a shell script (``while ...; do mosquitto_pub ...``)."""
    for part in _SCRIPT_SPLIT.split(script):
        part = part.strip()
        while part.startswith(_SCRIPT_KEYWORDS):
            part = part.split(" ", 1)[1].lstrip()
        if part:
            found = _parse(part, depth + 1)
            if found is not None:
                return found
    return None


def _expand_long_options(args: list[str]) -> list[str]:
    out = []
    for a in args:
        if a.startswith("--") and "=" in a:
            out.extend(a.split("=", 1))
        else:
            out.append(a)
    return out


def _parse(cmd: str, depth: int = 0) -> PubSubInvocation | None:
    args = _expand_long_options(split_args(cmd))
    if not args:
        return None
    tool = _tool_name(args[0])
    if tool in _WRAPPERS and len(args) > 1:
        for i in range(1, len(args)):
            if _known(_tool_name(args[i])):
                return _parse(shlex.join(args[i:]), depth + 1) if depth < 3 else None
        return None
    if tool in _SHELLS:
        for i, a in enumerate(args[:-1]):
            if a in ("/c", "/C", "/k", "/K") and depth < 3:  # cmd.exe: the rest of the line is the command
                return _script(" ".join(args[i + 1:]), depth)
            if a in ("-c", "-lc") and depth < 3:
                return _script(args[i + 1], depth)
        return None
    if tool in ("mosquitto_pub", "mosquitto_sub", "mosquitto_rr"):
        return _mosquitto(tool, args)
    if tool.startswith(("python", "pypy")):
        return _python(tool, args)
    if tool in ("nc", "ncat", "netcat", "nc.openbsd", "nc.traditional"):
        return _netcat(tool, args)
    if tool == "socat":
        return _socat(tool, args)
    if tool in ("curl", "wget"):
        return _http_client(tool, args)
    if tool in ("powershell", "pwsh"):
        return _powershell(tool, args, depth)
    if tool == "osascript":
        return _osascript(tool, args, depth)
    return None


@lru_cache(maxsize=16384)
def parse_command_line(cmd: str) -> PubSubInvocation | None:
    """The pub/sub invocation a command line describes, or None when it is not one of the tools read here."""
    if not cmd or len(cmd) > 32768:
        return None
    return _parse(cmd)


# ---------------------------------------------------------------------------------------- payload obfuscation

_B64_SHAPE = re.compile(r"^[A-Za-z0-9+/_-]{16,}={0,2}$")
_HEX_SHAPE = re.compile(r"^(?:[0-9a-fA-F]{2}){8,}$")


def _entropy(text: str) -> float:
    counts: dict[str, int] = {}
    for ch in text:
        counts[ch] = counts.get(ch, 0) + 1
    n = len(text)
    return -sum(c / n * math.log2(c / n) for c in counts.values()) if n else 0.0


@lru_cache(maxsize=16384)
def payload_score(message: str, length_threshold: int = 1024) -> tuple[float, tuple[str, ...]]:
    """(0-1 obfuscation score, reasons) of a message given on a command line.

    Encoded payloads (base64 or hex shape that decodes), high character entropy (above ~4.5 bits/char for
    text of 24+ characters: English is ~4.1, base64 of random bytes ~5.9) and length over
    ``PayloadLengthThreshold`` each add; telemetry such as ``{"temp": 21.5}`` or ``on`` scores 0.
    """
    m = message.strip()
    if not m:
        return 0.0, ()
    reasons = []
    score = 0.0
    if _HEX_SHAPE.match(m):
        score += 0.6
        reasons.append(f"hex-encoded ({len(m) // 2} bytes)")
    elif _B64_SHAPE.match(m) and not m.isalpha() and not m.isdigit():
        try:
            raw = base64.b64decode(m + "=" * (-len(m) % 4), altchars=b"-_" if ("-" in m or "_" in m) else None)
            ok = len(raw) >= 12
        except (binascii.Error, ValueError):
            ok = False
        if ok:
            score += 0.6
            reasons.append(f"base64-encoded ({len(raw)} bytes)")
    ent = _entropy(m)
    if len(m) >= 24 and ent > 4.5:
        score += min(0.4, (ent - 4.5) / 2.5 + 0.15)
        reasons.append(f"entropy {ent:.2f} bits/char")
    if len(m.encode()) > length_threshold:
        score += 0.3
        reasons.append(f"length {len(m.encode())} > PayloadLengthThreshold {length_threshold}")
    return round(min(1.0, score), 3), tuple(reasons)
