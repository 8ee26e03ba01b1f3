"""Flow export: NetFlow v5/v9, IPFIX (UDP and TCP), sFlow v5 — receivers, pure decoders, templates and their state."""
