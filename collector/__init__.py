"""brokerwatch's I/O side: sockets, listeners, pure decoders, the pipeline, transports, SNMP and the CLI."""

__version__ = "0.1.0"
