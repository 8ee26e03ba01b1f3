"""Transports between the receive side and the analytics side: the in-process bus (Kafka joins it later)."""
