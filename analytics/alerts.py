"""The explainable DET0002 alert (DESIGN §3) and its ECS dict form."""

from __future__ import annotations

import datetime as _dt
import functools
import hashlib
from dataclasses import dataclass, field

from analytics.schema import ip_to_words, words_to_ip

RULE_NAMES = {
    "AN0002": "Non-standard Windows process beaconing to a pub/sub broker",
    "AN0003": "Linux CLI tool or script talking to a pub/sub broker unusually",
    "AN0004": "macOS application with no pub/sub context reaching a broker",
    "AN0005": "Pub/sub C2 pattern seen by network devices",
}


@functools.lru_cache(maxsize=1 << 16)
def _seconds_text(secs: int) -> str:
    return _dt.datetime.fromtimestamp(secs, _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")


def rfc3339(ns: int) -> str:
    """RFC 3339 UTC text of a time in ns since the epoch, with microseconds where they are not zero."""
    secs, rem = divmod(int(ns), 1_000_000_000)
    t = _seconds_text(secs)  # cached: records and alerts of one pass share their seconds
    return f"{t}.{rem // 1000:06d}Z" if rem else t + "Z"


def severity_of(score: float) -> int:
    """ECS event.severity (1 low .. 4 critical) from a 0-100 score."""
    return 4 if score >= 90 else 3 if score >= 70 else 2 if score >= 50 else 1


@dataclass
class Alert:
    """One alert for one (analytic, pair) in one window; ``revision`` counts later updates of it."""

    rule_id: str
    timestamp_ns: int
    src: tuple[int, int]
    dst: tuple[int, int]
    dst_port: int
    protocol: str
    score: float
    evidence: dict
    window_start_ns: int
    revision: int = 0
    process: dict | None = None
    host: dict | None = None
    extra: dict = field(default_factory=dict)

    @property
    def key(self) -> tuple:
        """(analytic, pair, window): the identity that later evidence updates instead of repeating."""
        key = (self.rule_id, self.src, self.dst, self.dst_port, self.window_start_ns)
        if self.rule_id != "AN0005" and self.process:  # endpoint analytics: one alert per process on the pair
            key += (self.process.get("name", ""),)
        return key

    @property
    def id(self) -> str:
        """A stable id for the alert across its revisions."""
        text = "|".join(str(x) for x in self.key)
        return hashlib.sha1(text.encode()).hexdigest()[:20]

    def to_dict(self) -> dict:
        """The alert as a nested ECS object, ready for JSON."""
        out = {
            "@timestamp": rfc3339(self.timestamp_ns),
            "event": {"kind": "alert", "id": self.id, "severity": severity_of(self.score)},
            "rule": {"id": self.rule_id, "ruleset": "DET0002", "name": RULE_NAMES[self.rule_id]},
            "threat": {"technique": {"id": ["T1071.005"]}, "framework": "MITRE ATT&CK"},
            # (0, 0): an endpoint alert whose host address or broker address no log gave
            "source": {"ip": words_to_ip(*self.src)} if self.src != (0, 0) else {},
            "destination": {"ip": words_to_ip(*self.dst), "port": self.dst_port} if self.dst != (0, 0)
            else {"port": self.dst_port},
            "network": {"protocol": self.protocol},
            "brokerwatch": {"score": round(float(self.score), 1), "revision": self.revision,
                            "window": {"start": rfc3339(self.window_start_ns)}, "evidence": self.evidence},
        }
        if self.process:
            out["process"] = self.process
        if self.host:
            out["host"] = self.host
        for k, v in self.extra.items():
            have = out.get(k)
            if isinstance(have, dict) and isinstance(v, dict):
                for k2, v2 in v.items():
                    have.setdefault(k2, v2)
            else:
                out.setdefault(k, v)
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "Alert":
        """An alert back from its ECS dict (as read from the alerts topic): its key, score, revision and evidence."""
        bw = d["brokerwatch"]
        return cls(rule_id=d["rule"]["id"], timestamp_ns=parse_rfc3339(d["@timestamp"]),
                   src=ip_to_words(d["source"]["ip"]), dst=ip_to_words(d["destination"]["ip"]),
                   dst_port=int(d["destination"]["port"]), protocol=d.get("network", {}).get("protocol", ""),
                   score=float(bw["score"]), evidence=bw["evidence"],
                   window_start_ns=parse_rfc3339(bw["window"]["start"]), revision=int(bw["revision"]),
                   process=d.get("process"), host=d.get("host"))


def parse_rfc3339(text: str) -> int:
    """ns since the epoch of an RFC 3339 UTC time as ``rfc3339`` writes it (microseconds at most)."""
    t = _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return (int(t.replace(microsecond=0).timestamp()) * 1_000_000 + t.microsecond) * 1000
