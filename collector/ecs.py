"""JSON at the edge: FlowBatch rows as nested Elastic Common Schema objects (DESIGN §3 record fields)."""

from __future__ import annotations

import json
from typing import Iterator

from analytics.alerts import rfc3339
from analytics.schema import (
    ACTIONS,
    APP_PROTOCOLS,
    FLAG_NO_COUNTERS,
    FLAG_NO_INTERFACES,
    FLAG_NO_PACKETS,
    FLAG_NO_PORTS,
    FLAG_REVERSE,
    FLAG_MESSAGE,
    FlowBatch,
    dataset_name,
    words_to_ip,
)


def flow_records(batch: FlowBatch, names=None) -> Iterator[dict]:
    """One ECS dict per row of the batch, in row order; ``names`` (collector.enrich.observers.ObserverNames)
    adds ``observer.name`` and the interfaces' ``name``/``alias`` where the config or the exporter's agent has them."""
    c = {name: col.tolist() for name, col in batch.columns.items()}
    extra = batch.extra
    for i in range(len(batch)):
        flags = c["flags"][i]
        exporter = words_to_ip(c["exporter_hi"][i], c["exporter_lo"][i])
        rec: dict = {
            "event": {"dataset": dataset_name(c["dataset"][i]), "start": rfc3339(c["start_ns"][i]),
                      "end": rfc3339(c["end_ns"][i])},
            "source": {"ip": words_to_ip(c["src_hi"][i], c["src_lo"][i])},
            "destination": {"ip": words_to_ip(c["dst_hi"][i], c["dst_lo"][i])},
            "network": {"iana_number": c["proto"][i]},
            "observer": {"ip": exporter},
        }
        if names is not None:
            oname = names.name(exporter)
            if oname:
                rec["observer"]["name"] = oname
        if not flags & FLAG_NO_PORTS:
            rec["source"]["port"] = c["src_port"][i]
            rec["destination"]["port"] = c["dst_port"][i]
        if not flags & FLAG_NO_COUNTERS:
            if flags & FLAG_REVERSE:  # both directions: ECS network.* is their total, source/destination.* each one
                rec["source"]["bytes"] = c["bytes"][i]
                rec["destination"]["bytes"] = c["rev_bytes"][i]
                rec["network"]["bytes"] = c["bytes"][i] + c["rev_bytes"][i]
                if not flags & FLAG_NO_PACKETS:
                    rec["source"]["packets"] = c["packets"][i]
                    rec["destination"]["packets"] = c["rev_packets"][i]
                    rec["network"]["packets"] = c["packets"][i] + c["rev_packets"][i]
            else:
                rec["network"]["bytes"] = c["bytes"][i]
                if not flags & FLAG_NO_PACKETS:
                    rec["network"]["packets"] = c["packets"][i]
        if c["app_proto"][i]:
            rec["network"]["protocol"] = APP_PROTOCOLS[c["app_proto"][i]]
        if c["proto"][i] == 6 and c["tcp_flags"][i]:
            rec["tcp_flags"] = c["tcp_flags"][i]
        if not flags & FLAG_NO_INTERFACES:
            ingress = {"id": c["in_if"][i]}
            egress = {"id": c["out_if"][i]}
            if names is not None:
                names.describe(exporter, ingress)
                names.describe(exporter, egress)
            rec["observer"]["ingress"] = {"interface": ingress}
            rec["observer"]["egress"] = {"interface": egress}
        if c["action"][i]:
            rec["event"]["action"] = ACTIONS[c["action"][i]]
        if rec["event"]["dataset"] == "pcap":  # the flow meter has no exporter
            rec.pop("observer", None)
        if flags & FLAG_MESSAGE:  # one message inside a session, not a flow record
            rec["event"]["kind"] = "event"
            rec["event"]["action"] = "publish"
        if c["topic_id"][i]:
            rec["mqtt"] = {"topic": batch.strings[c["topic_id"][i]]}
        rec["brokerwatch"] = {"sampling_rate": c["sampling_rate"][i]}
        if extra and i in extra:
            _merge(rec, extra[i])
        yield rec


def _merge(into: dict, more: dict) -> None:
    for k, v in more.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            _merge(into[k], v)
        else:
            into[k] = v


def dumps(obj: dict) -> str:
    """Compact JSON for one record or alert line (orjson: ten times the standard library's encoder on alert storms;
    UTF-8 text rather than \\u escapes, and null for a non-finite float, which JSON cannot carry)."""
    return _orjson_dumps(obj).decode()


try:
    from orjson import dumps as _orjson_dumps
except ImportError:  # pragma: no cover - the package depends on orjson; this keeps a stripped install working
    def _orjson_dumps(obj: dict) -> bytes:
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()
