"""Enrichment: who each exporter is (SNMP names, config overrides) and its per-exporter quirks."""
