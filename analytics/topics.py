"""Topic-name anomaly scoring (TopicAnomalyScore): entropy, length, character classes and depth → 0-1.

Topics are few (one string table per batch), so this is plain Python over unique names, cached. A topic under a
known-good prefix (homeassistant/, zigbee2mqtt/, tele/, stat/, cmnd/, $SYS/, ...) scores 0. Otherwise each
feature contributes a bounded share and the explanation names the ones that fired:
- entropy of the characters of the non-separator text (random or encoded names are near 4-6 bits/char; words ~3-4),
- the longest level looking like hex, base64 or a long random token,
- length against ``max_length``, depth (levels), and characters outside the usual topic alphabet.
"""

from __future__ import annotations

import math
import re
from functools import lru_cache

from analytics.config import TopicAnomalyScore

_HEX = re.compile(r"^[0-9a-fA-F]{16,}$")
_B64 = re.compile(r"^[A-Za-z0-9+_=-]{20,}$")
_USUAL = re.compile(r"^[A-Za-z0-9/_.\-+#$ ]*$")
_VOWELS = set("aeiouAEIOU")


def entropy_bits(text: str) -> float:
    """Shannon entropy of the characters of text (bits per character)."""
    if not text:
        return 0.0
    counts: dict[str, int] = {}
    for ch in text:
        counts[ch] = counts.get(ch, 0) + 1
    n = len(text)
    return -sum(c / n * math.log2(c / n) for c in counts.values())


def _token_randomness(level: str) -> float:
    """0-1: how much one topic level looks like an encoded or random token rather than a word or number."""
    if len(level) < 12 or level.isdigit():
        return 0.0
    if _HEX.match(level):
        return 1.0
    if _B64.match(level):
        letters = [c for c in level if c.isalpha()]
        vowels = sum(c in _VOWELS for c in letters) / max(len(letters), 1)
        classes = sum(bool(re.search(p, level)) for p in (r"[a-z]", r"[A-Z]", r"[0-9]"))
        # words have vowels (~35-45%); tokens mix classes and are vowel-poor
        if classes >= 3 or vowels < 0.2:
            return min(1.0, 0.4 + entropy_bits(level) / 8)
    return 0.0


@lru_cache(maxsize=65536)
def _score(topic: str, max_length: int, known_good: tuple[str, ...]) -> tuple[float, tuple[str, ...]]:
    if not topic:
        return 0.0, ()
    for prefix in known_good:
        if topic.startswith(prefix):
            return 0.0, ("known_good:" + prefix,)
    levels = [lv for lv in topic.split("/") if lv]
    text = "".join(levels)
    reasons = []
    ent = entropy_bits(text)
    s_ent = min(1.0, max(0.0, (ent - 3.8) / 1.2))
    if s_ent > 0:
        reasons.append(f"entropy {ent:.2f} bits/char")
    s_tok = max((_token_randomness(lv) for lv in levels), default=0.0)
    if s_tok > 0:
        reasons.append("encoded-looking level")
    s_len = min(1.0, max(0.0, (len(topic) - max_length) / max_length))
    if s_len > 0:
        reasons.append(f"length {len(topic)} > {max_length}")
    s_depth = min(1.0, max(0.0, (len(levels) - 7) / 5))
    if s_depth > 0:
        reasons.append(f"depth {len(levels)}")
    s_chars = 0.0 if _USUAL.match(topic) else 1.0
    if s_chars:
        reasons.append("characters outside the usual topic alphabet")
    score = min(1.0, 0.35 * s_ent + 0.75 * s_tok + 0.25 * s_len + 0.15 * s_depth + 0.3 * s_chars)
    return round(score, 3), tuple(reasons)


def topic_score(topic: str, config: TopicAnomalyScore = TopicAnomalyScore()) -> tuple[float, tuple[str, ...]]:
    """(0-1 anomaly score, reasons) for one topic name under the TopicAnomalyScore settings."""
    return _score(topic, config.max_length, tuple(config.known_good))


def score_topics(strings: list[str], config: TopicAnomalyScore = TopicAnomalyScore()) -> list[float]:
    """Scores for a batch's string table (index 0, "no topic", scores 0)."""
    return [topic_score(s, config)[0] if i else 0.0 for i, s in enumerate(strings)]
