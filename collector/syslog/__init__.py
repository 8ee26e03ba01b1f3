"""Firewall syslog: framing, headers, device profiles (reference and block paths), and the UDP/TCP/TLS listeners."""
