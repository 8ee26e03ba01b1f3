"""Transports between the receive side and the analytics side: the bounded channel (Kafka joins it later)."""
