"""Placeholder while the osquery decoder is written (this session); DIALECTS is its JSON detect/decode table."""

DIALECTS: dict = {}
