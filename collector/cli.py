"""The ``brokerwatch`` command line: run, replay, decode, report, rules export, config check (DESIGN §3).

Exit codes: 0 success, 2 bad usage / bad config / unreadable input (one-line reason on stderr), 1 internal error.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time

from collector.errors import EXIT_INTERNAL, EXIT_OK, EXIT_USAGE, UsageError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse exits 2 too; keep its one-line reason
        self.print_usage(sys.stderr)
        print(f"brokerwatch: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand and its help text."""
    p = _Parser(
        prog="brokerwatch",
        description="Detect command-and-control traffic hidden in pub/sub protocols (MQTT, AMQP, XMPP, STOMP, NATS) "
        "from NetFlow v5/v9, IPFIX, sFlow and firewall syslog; MITRE ATT&CK T1071.005, detection strategy DET0002.",
    )
    p.add_argument("-v", "--verbose", action="count", default=0, help="more log output on stderr (repeatable)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    run = sub.add_parser(
        "run",
        help="run the collector service",
        description="Listen for NetFlow v5/v9 and IPFIX (UDP 2055 and 4739, IPFIX also TCP 4739), sFlow (UDP 6343) "
        "and syslog (UDP and TCP 5514 by default), and host logs (TCP 5515: Sysmon, auditd, macOS, osquery); score "
        "(source, broker) pairs (AN0005) and (host, process, broker) triples (AN0002-AN0004) every analysis cadence, "
        "attribute network alerts to the process that made the traffic, and print alerts as JSON lines on stdout "
        "and to the alerts file. Receiving and analysing run in separate processes joined by a bounded channel; "
        "every kernel is compiled (or loaded from NUMBA_CACHE_DIR) before a socket is bound, and 'ready' is printed "
        "on stderr once every worker listens. Ctrl-C or SIGTERM flushes and exits 0.",
    )
    run.add_argument("--config", metavar="FILE", help="YAML config (defaults are used for every key it omits)")
    run.add_argument("--role", choices=("all", "collector", "analytics"), default="all",
                     help="all: receive and analyse on this machine (default); collector: receive and publish the "
                          "flows to the Kafka flows topic; analytics: a worker of the consumer group that reads the "
                          "flows topic (and goflow2's, when configured) and writes alerts to the alerts topic")
    run.add_argument("--kafka", metavar="BOOTSTRAP",
                     help="Kafka bootstrap servers (host:port[,host:port]); overrides Kafka.bootstrap of the config. "
                          "With --role all the alerts also go to the alerts topic")
    run.add_argument("--alerts", metavar="FILE", default="alerts.jsonl",
                     help="JSONL file alerts are appended to (default: alerts.jsonl; '-' for stdout only)")
    run.add_argument("--listen", metavar="HOST", default="0.0.0.0",
                     help="address to bind the listeners to (default: 0.0.0.0)")
    run.add_argument("--netflow-port", type=int, default=2055, metavar="PORT", help="NetFlow/IPFIX UDP port (2055)")
    run.add_argument("--ipfix-port", type=int, default=4739, metavar="PORT", help="IPFIX UDP and TCP port (4739)")
    run.add_argument("--sflow-port", type=int, default=6343, metavar="PORT", help="sFlow UDP port (6343)")
    run.add_argument("--syslog-port", type=int, default=5514, metavar="PORT", help="syslog UDP port (5514)")
    run.add_argument("--hostlog-port", type=int, default=5515, metavar="PORT",
                     help="TCP port for host logs as lines: Sysmon (Winlogbeat/Elastic Agent/NXLog/Wazuh JSON, event "
                          "XML), auditd, macOS (eslogger, unified log ndjson, Elastic Endpoint), osquery results "
                          "(5515; 0 to turn it off). Host-log records wrapped in syslog are taken on the syslog "
                          "port too")
    run.add_argument("--hostlog-tls-cert", metavar="FILE", help="serve the host-log port over TLS with this "
                     "certificate chain (PEM; needs --hostlog-tls-key)")
    run.add_argument("--hostlog-tls-key", metavar="FILE", help="the private key of --hostlog-tls-cert (PEM)")
    run.add_argument("--hostlog-tls-client-ca", metavar="FILE",
                     help="mutual TLS on the host-log port: clients must present a certificate this CA (PEM) signed; "
                          "others are refused and counted (brokerwatch_tls_refused_total)")
    run.add_argument("--syslog-tls-port", type=int, default=0, metavar="PORT",
                     help="syslog over TLS (RFC 5425; 6514 is its registered port) on PORT, with --syslog-tls-cert "
                          "and --syslog-tls-key (default: 0, off)")
    run.add_argument("--syslog-tls-cert", metavar="FILE", help="certificate chain of the syslog TLS port (PEM)")
    run.add_argument("--syslog-tls-key", metavar="FILE", help="the private key of --syslog-tls-cert (PEM)")
    run.add_argument("--syslog-tls-client-ca", metavar="FILE",
                     help="mutual TLS on the syslog TLS port: clients must present a certificate this CA (PEM) "
                          "signed; others are refused and counted")
    run.add_argument("--interface", metavar="IF",
                     help="also capture raw traffic on interface IF (AF_PACKET TPACKET_V3 ring, needs CAP_NET_RAW: "
                          "root or setcap cap_net_raw+ep) and build it into flows with the built-in flow meter "
                          "(softflowd's timeouts, L7 evidence, each MQTT PUBLISH an event; event.dataset pcap)")
    run.add_argument("--cadence", type=float, metavar="SECONDS",
                     help="seconds between analysis passes (default: from TimeWindow.cadence)")
    run.add_argument("--metrics", metavar="HOST:PORT",
                     help="serve every counter (records, rejections by reason, sequence gaps per exporter, drops) "
                          "and the histograms of decode time per block and analysis time per pass in Prometheus "
                          "text format over HTTP on HOST:PORT (prometheus-client), and GET /healthz: JSON saying "
                          "whether the listeners, the analytics process and the workers are alive, 200 or 503 "
                          "(default: off)")
    run.add_argument("--state", metavar="FILE", default="state/decoders.json",
                     help="where NetFlow v9/IPFIX templates and sampling rates are kept across restarts "
                          "(default: state/decoders.json; '' to keep none; worker N>0 uses FILE's name + .wN)")
    run.add_argument("--workers", type=int, default=1, metavar="N",
                     help="receive worker processes sharing the ports through SO_REUSEPORT; the kernel sends each "
                          "exporter to one worker, so its templates stay there; a worker that dies is restarted "
                          "(default: 1)")
    run.add_argument("--analytics-threads", type=int, default=0, metavar="N",
                     help="numba threads of the analytics process (default: cores - 1, so receiving keeps a core)")
    run.add_argument("--window-rows", type=int, default=20_000_000, metavar="N",
                     help="the analytics memory budget: flow rows kept over the TimeWindow (pairs seen least "
                          "recently are evicted whole beyond it; each pair keeps at most 50,000); about 2.5 GB "
                          "of the analytics process per 10M rows (default: 20,000,000)")
    run.add_argument("--channel-mb", type=int, default=1024, metavar="MB",
                     help="bound of each receive worker's queue towards the analytics process (it holds what "
                          "arrives during an analysis pass: about 100 bytes a record); when it is full batches are "
                          "dropped and counted, the receive loop never waits (default: 1024)")

    replay = sub.add_parser(
        "replay",
        help="run the detections offline over captures and logs",
        description="Decode captures of exported datagrams (pcap/pcapng, NetFlow/IPFIX/sFlow/syslog recognised by "
        "content), raw export payloads and syslog text files in the order given, with time taken from the data, "
        "and write alerts as JSON lines. Host-log files (Sysmon JSON/XML/EVTX, auditd, macOS, osquery; recognised "
        "by content, given in any order among the captures) are read first: they raise the endpoint analytics "
        "(AN0002-AN0004) and attribute network alerts (AN0005) to the process, host and user that made the "
        "traffic. On a terminal, progress (bytes, records/s, ETA) goes to stderr.",
    )
    replay.add_argument("inputs", nargs="+", metavar="INPUT", help="capture or log files, processed in order")
    replay.add_argument("--config", metavar="FILE", help="YAML config")
    replay.add_argument("--alerts", metavar="FILE", help="write alerts to FILE instead of stdout")
    replay.add_argument("-q", "--quiet", action="store_true", help="no progress bar on stderr")
    replay.add_argument("--kafka", metavar="BOOTSTRAP",
                        help="Kafka bootstrap servers; with --role all the alerts also go to the alerts topic")
    replay.add_argument("--role", choices=("all", "collector"), default="all",
                        help="all: run the detections here (default); collector: publish the decoded flows to the "
                             "Kafka flows topic (data time kept) for the analytics workers, and detect nothing here")

    decode = sub.add_parser(
        "decode",
        help="print every normalised record as JSON lines",
        description="Decode the inputs in the order given with one decoder state (templates in one file apply to "
        "data in the next) and print one JSON object per record on stdout, nothing else: flow records from "
        "captures, export payloads and firewall syslog; endpoint events (process_start, network_connect, "
        "dns_query, ...) from host logs (Sysmon JSON/XML/EVTX, auditd, macOS, osquery), each recognised by content.",
    )
    decode.add_argument("inputs", nargs="+", metavar="INPUT", help="capture or log files, processed in order")
    decode.add_argument("--count", action="store_true",
                        help='print only {"records": {dataset: N}, "rejected": {reason: N}}')
    decode.add_argument("-q", "--quiet", action="store_true",
                        help="no progress bar on stderr (it is drawn only when stderr is a terminal)")
    decode.add_argument("--config", metavar="FILE",
                        help="YAML config: its Exporters key adds observer.name and interface names and aliases "
                             "(its own, or polled over SNMP when it enables SNMP: each exporter's first poll is "
                             "waited for, bounded by its timeout) and applies per-exporter sampling rates")

    report = sub.add_parser(
        "report",
        help="write alerts as one self-contained HTML page with plots",
        description="Write one HTML page (no network fetches; script and style inlined) listing the alerts by "
        "severity, each with its pair's event timeline, inter-arrival histogram (detected period and jitter band "
        "marked), bytes per event against the other pairs to the same broker, the evidence (which DET0002 elements "
        "fired and why), the attributed process and host, and the ATT&CK mapping. The events are read from the "
        "INPUTs, the same captures and logs replay takes; without them the page has the alerts but no plots.",
    )
    report.add_argument("alerts", metavar="ALERTS.jsonl", help="alerts as JSON lines (replay --alerts, run's file)")
    report.add_argument("inputs", nargs="*", metavar="INPUT", help="the captures and logs the alerts came from")
    report.add_argument("-o", "--output", metavar="FILE.html", required=True, help="where to write the page")
    report.add_argument("-q", "--quiet", action="store_true", help="no progress bar on stderr")

    rules = sub.add_parser("rules", help="detection rules for other tools",
                           description="Detection rules for the tools endpoint teams already run.")
    rsub = rules.add_subparsers(dest="rules_command", required=True, metavar="ACTION", parser_class=_Parser)
    export = rsub.add_parser(
        "export", help="export the process-side logic of AN0002-AN0004",
        description="Write the process-side logic of AN0002 (Windows), AN0003 (Linux) and AN0004 (macOS) as Sigma "
        "rules, built from the validated config (UnusualProcessList, AppContextFilter, KnownPubSubClients, "
        "ProtocolPortList, URIPathRegex), so tuning flows into the rules. One YAML document per rule.",
    )
    export.add_argument("--format", choices=("sigma",), default="sigma", help="rule format (sigma)")
    export.add_argument("--config", metavar="FILE", help="YAML config (defaults for every key it omits)")
    export.add_argument("-o", "--output", metavar="PATH",
                        help="a directory (one .yml file per rule) or a file (all rules); default: stdout")

    warmup = sub.add_parser("warmup", help="compile every kernel into NUMBA_CACHE_DIR and exit",
                            description="Compile (or load) every decoder and analytics kernel, so that the next "
                            "start-up is fast; the Docker image runs it at build time.")
    warmup.add_argument("--config", metavar="FILE", help="YAML config")

    config = sub.add_parser("config", help="config file tools", description="Config file tools.")
    csub = config.add_subparsers(dest="config_command", required=True, metavar="ACTION", parser_class=_Parser)
    check = csub.add_parser("check", help="validate a config file",
                            description="Validate a config file; exit 0, or 2 with every problem (key, file, line).")
    check.add_argument("file", metavar="FILE")
    return p


def _progress(args: argparse.Namespace):
    """A progress bar over the command's inputs on stderr (drawn only on a terminal, never with --quiet)."""
    from collector.progress import Progress

    return Progress(list(args.inputs), enabled=False if args.quiet else None)


def cmd_decode(args: argparse.Namespace) -> int:
    """``brokerwatch decode``: flow records and endpoint events, input by input in the order given."""
    from analytics.schema import dataset_name
    from collector.config import ConfigError, load_config
    from collector.ecs import dumps, flow_records
    from collector.enrich.devices import SamplingOverride
    from collector.enrich.observers import Enricher, enrichment_wanted
    from collector.inputs import InputError, OfflineSource, is_hostlog

    try:
        exporters = load_config(args.config, resolve=False).Exporters
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    progress = _progress(args)
    src = OfflineSource(progress=progress.file, sampling=SamplingOverride(exporters))
    enricher = Enricher(exporters) if enrichment_wanted(exporters) and not args.count else None
    counts: dict[str, int] = {}
    out = sys.stdout
    try:
        src.check(args.inputs)
        for path in args.inputs:
            if is_hostlog(path):
                for eb in src.endpoint_batches([path]):
                    progress.add_records(len(eb))
                    if args.count:
                        ids, n = _value_counts(eb.rows["dataset"])
                        for i, k in zip(ids, n):
                            counts[dataset_name(int(i))] = counts.get(dataset_name(int(i)), 0) + int(k)
                    else:
                        out.write("".join(dumps(eb.to_ecs(i)) + "\n" for i in range(len(eb))))
                progress.file(path, os.path.getsize(path), 0)
                continue
            for batch in src.batches([path]):
                progress.add_records(len(batch))
                if args.count:
                    ids, n = _value_counts(batch.columns["dataset"])
                    for i, k in zip(ids, n):
                        counts[dataset_name(int(i))] = counts.get(dataset_name(int(i)), 0) + int(k)
                else:
                    names = None
                    if enricher is not None:
                        enricher.wait(enricher.seen(batch))
                        names = enricher.names
                    out.write("".join(dumps(r) + "\n" for r in flow_records(batch, names)))
    except InputError as exc:
        raise UsageError(str(exc)) from None
    finally:
        progress.close()
        if enricher is not None:
            enricher.close()
    if args.count:
        rejected = dict(src.decoders.rejected())
        for reason, n in src.hostlog_rejected.items():
            rejected[f"hostlog.{reason}"] = rejected.get(f"hostlog.{reason}", 0) + n
        out.write(json.dumps({"records": counts, "rejected": rejected}) + "\n")
    return EXIT_OK


def _value_counts(col):
    import numpy as np

    return np.unique(col, return_counts=True)


def cmd_config_check(args: argparse.Namespace) -> int:
    """``brokerwatch config check FILE``."""
    from collector.config import ConfigError, load_config

    try:
        load_config(args.file)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    print(f"{args.file}: ok")
    return EXIT_OK


def cmd_replay(args: argparse.Namespace) -> int:
    """``brokerwatch replay``."""
    from collector.replay import replay

    return replay(args, _progress(args))


def cmd_report(args: argparse.Namespace) -> int:
    """``brokerwatch report``."""
    from collector.inputs import InputError
    from collector.progress import Progress
    from collector.report import ReportError, build_report

    progress = Progress(list(args.inputs), enabled=False if args.quiet else None)
    try:
        done = build_report(args.alerts, list(args.inputs), args.output, progress.file, progress.add_records)
    except (ReportError, InputError) as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:
        raise UsageError(f"{args.output}: {exc.strerror or exc}") from None
    finally:
        progress.close()
    print(f"brokerwatch: {args.output}: {done['alerts']} alerts, {done['with_events']} with events from the inputs "
          f"({done['rows_read']} records read)", file=sys.stderr)
    return EXIT_OK


def cmd_rules(args: argparse.Namespace) -> int:
    """``brokerwatch rules export``."""
    from collector.config import ConfigError, load_config
    from collector.rules import write_sigma

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    try:
        write_sigma(config, args.output, sys.stdout)
    except OSError as exc:
        raise UsageError(f"{args.output}: {exc.strerror or exc}") from None
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    """``brokerwatch run``."""
    from collector.service import serve

    return serve(args)


def cmd_warmup(args: argparse.Namespace) -> int:
    """``brokerwatch warmup``."""
    from collector.config import ConfigError, load_config
    from collector.warmup import warm_all

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    t0 = time.monotonic()
    warm_all(config)
    print(f"brokerwatch: kernels ready in {time.monotonic() - t0:.1f} s "
          f"(cache: {os.environ.get('NUMBA_CACHE_DIR') or 'next to the modules'})", file=sys.stderr)
    return EXIT_OK


COMMANDS = {"decode": cmd_decode, "replay": cmd_replay, "report": cmd_report, "rules": cmd_rules, "run": cmd_run,
            "warmup": cmd_warmup}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING - 10 * min(args.verbose, 2), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler = cmd_config_check if args.command == "config" else COMMANDS[args.command]
    try:
        return handler(args)
    except UsageError as exc:
        print(f"brokerwatch: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except KeyboardInterrupt:
        return EXIT_OK
    except Exception as exc:  # noqa: BLE001 - the last line of defence: a one-line reason, exit 1
        logging.getLogger("brokerwatch").debug("internal error", exc_info=True)
        print(f"brokerwatch: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
