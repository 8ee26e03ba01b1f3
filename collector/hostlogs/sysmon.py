"""Placeholder while the sysmon decoder is written (this session); DIALECTS is its JSON detect/decode table."""

DIALECTS: dict = {}


def decode_xml(data, b, dec):
    """Not yet written."""
    dec.reject("unsupported", "Windows event XML")


def decode_evtx(path, b, dec):
    """Not yet written."""
    dec.reject("unsupported", "EVTX")
