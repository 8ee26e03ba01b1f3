"""Placeholder while the macos decoder is written (this session); DIALECTS is its JSON detect/decode table."""

DIALECTS: dict = {}
