"""Host logs (Sysmon, auditd, macOS, osquery) into columnar endpoint events (analytics/endpoint.py)."""
