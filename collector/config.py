"""Loading the YAML config (with file and line in every error) and the BrokerReputationList files it names.

Validation itself is pure and lives in ``analytics.config``; this module does the I/O: reading the YAML with line
marks, reading reputation sources (plain lists, CSV, STIX 2.1 bundles, the shipped default list), and resolving
host names to addresses with a bounded wait (results cached, refreshed on ``refresh``).
"""

from __future__ import annotations

import concurrent.futures
import csv
import dataclasses
import io
import json
import re
import socket
from pathlib import Path

import yaml

from analytics.config import AddressSet, Config, ConfigError, parse_address_entry

DEFAULT_REPUTATION = Path(__file__).with_name("data") / "default_reputation.txt"

__all__ = ["ConfigError", "load_config", "load_reputation"]


def _line_index(node: yaml.Node, path: tuple, out: dict) -> None:
    out[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            key = k.value
            out[path + (key,)] = k.start_mark.line + 1
            _line_index(v, path + (key,), out)
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            _line_index(v, path + (i,), out)


def load_config(path: str | None, resolve: bool = True, resolve_timeout: float = 2.0) -> Config:
    """The validated Config from a YAML file (defaults when path is None), reputation sources loaded."""
    if path is None:
        config = Config()
        return _with_reputation(config, "<defaults>", resolve, resolve_timeout)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{path}: cannot read config: {exc}"]) from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else path
        raise ConfigError([f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}"]) from None
    lines: dict = {}
    if node is not None:
        _line_index(node, (), lines)

    def locate(key_path: tuple) -> str:
        for n in range(len(key_path), -1, -1):
            if key_path[:n] in lines:
                return f"{path}:{lines[key_path[:n]]}"
        return path

    config = Config.from_mapping(data, locate)
    base = Path(path).parent
    sources = tuple(str((base / s) if not Path(s).is_absolute() else Path(s))
                    for s in config.BrokerReputationList.sources)
    config = dataclasses.replace(config, BrokerReputationList=dataclasses.replace(
        config.BrokerReputationList, sources=sources))
    return _with_reputation(config, locate(("BrokerReputationList",)), resolve, resolve_timeout)


def _with_reputation(config: Config, where: str, resolve: bool, timeout: float) -> Config:
    entries: list[tuple[str, str]] = []  # (entry, label)
    problems = []
    files = list(config.BrokerReputationList.sources)
    if config.BrokerReputationList.use_default:
        files.insert(0, str(DEFAULT_REPUTATION))
    for f in files:
        try:
            entries.extend((e, f"{Path(f).name}") for e in load_reputation(f))
        except (OSError, ValueError) as exc:
            problems.append(f"{where}: BrokerReputationList: {f}: {exc}")
    if problems:
        raise ConfigError(problems)
    rows, names, suffixes = [], [], []
    name_labels: dict[str, str] = {}  # host name -> the source file it came from (first seen)
    for entry, label in entries:
        if entry.startswith("."):
            suffixes.append(entry.lower())
            continue
        parsed = parse_address_entry(entry)
        if parsed is None:
            continue  # counted below as skipped; a threat feed with junk lines must not stop the service
        if parsed[0] is None:
            names.append(entry.lower())
            name_labels.setdefault(entry.lower(), label)
            suffixes.append("=" + entry.lower())  # exact host name match for endpoint destination.domain
        else:
            rows.append((parsed[0], 0, parsed[1], f"{label}:{entry}"))
    allow_rows = []
    if resolve:
        for name, addrs in resolve_names(names + list(config.allow.hostnames), timeout).items():
            for a in addrs:
                if name in config.allow.hostnames:
                    allow_rows.append((a, 0, -1, name))
                else:
                    rows.append((a, 0, -1, f"{name_labels.get(name, 'reputation')}:{name}"))
    allow = config.allow
    if allow_rows:
        allow = _extend(allow, allow_rows)
    return dataclasses.replace(config, reputation=AddressSet.build(rows, tuple(names)), allow=allow,
                               reputation_domains=tuple(suffixes))


def _extend(base: AddressSet, rows: list) -> AddressSet:
    extra = AddressSet.build(rows)
    import numpy as np

    return AddressSet(*(np.concatenate([getattr(base, f), getattr(extra, f)])
                        for f in ("net_hi", "net_lo", "mask_hi", "mask_lo", "ports")),
                      hostnames=base.hostnames, labels=base.labels + extra.labels)


_STIX_VALUE = re.compile(r"\[(ipv4-addr|ipv6-addr|domain-name|url):value\s*=\s*'([^']+)'\]")


def load_reputation(path: str) -> list[str]:
    """Entries (addresses, CIDRs, host names, '.suffix') from a plain list, CSV or STIX 2.1 bundle file."""
    raw = Path(path).read_bytes()
    if len(raw) > 64 << 20:
        raise ValueError("larger than 64 MiB")
    text = raw.decode("utf-8", errors="replace")
    stripped = text.lstrip()
    if stripped.startswith("{"):
        return _stix_entries(json.loads(text))
    if path.lower().endswith(".csv"):
        return _csv_entries(text)
    out = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            out.append(line)
    return out


def _csv_entries(text: str) -> list[str]:
    rows = list(csv.reader(io.StringIO(text)))
    if not rows:
        return []
    header = [h.strip().lower() for h in rows[0]]
    col = next((header.index(h) for h in ("indicator", "ioc", "value", "ip", "domain", "host") if h in header), None)
    body = rows[1:] if col is not None else rows
    col = col or 0
    return [r[col].strip() for r in body if len(r) > col and r[col].strip() and not r[col].startswith("#")]


def _stix_entries(bundle: dict) -> list[str]:
    if bundle.get("type") != "bundle":
        raise ValueError("JSON file is not a STIX 2.1 bundle")
    out = []
    for obj in bundle.get("objects", []):
        kind = obj.get("type")
        if kind in ("ipv4-addr", "ipv6-addr", "domain-name") and isinstance(obj.get("value"), str):
            out.append(obj["value"])
        elif kind == "indicator" and isinstance(obj.get("pattern"), str):
            for typ, value in _STIX_VALUE.findall(obj["pattern"]):
                if typ == "url":
                    host = re.sub(r"^[a-z]+://", "", value).split("/", 1)[0]
                    out.append(host)
                else:
                    out.append(value)
    return out


_resolved_cache: dict[str, list[str]] = {}


def resolve_names(names: list[str], timeout: float) -> dict[str, list[str]]:
    """Addresses of host names, looked up in parallel with one overall deadline; failures resolve to nothing."""
    todo = [n for n in dict.fromkeys(names) if n not in _resolved_cache]
    if todo:
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=min(16, len(todo)))
        futures = {pool.submit(_lookup, n): n for n in todo}
        done, _ = concurrent.futures.wait(futures, timeout=timeout)
        for fut in done:
            _resolved_cache[futures[fut]] = fut.result()
        pool.shutdown(wait=False, cancel_futures=True)
    return {n: _resolved_cache.get(n, []) for n in names}


def _lookup(name: str) -> list[str]:
    host = name.split(":")[0] if name.count(":") == 1 else name
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return []
    return sorted({info[4][0] for info in infos})
