"""Sysmon events rendered the way each forwarder ships them, for tests, scenarios and the benchmark.

``sysmon_event(eid, ...)`` makes the event data of one Sysmon event with every field of its schema, in the schema's
order (Microsoft Sysinternals, "Sysmon" event reference: event 1 ProcessCreate, 3 NetworkConnect, 5
ProcessTerminate, 22 DNSEvent, Sysmon 13+ field lists). The renderers write that one event as:

- ``winlogbeat()``: a Winlogbeat 8 / Elastic Agent ``winlog`` input document before any ingest pipeline
  (Elastic, "Winlogbeat exported fields" and the windows package's sysmon_operational pipeline test events):
  ``@timestamp`` = TimeCreated; ``winlog.channel``, ``winlog.computer_name``, ``winlog.event_id`` (a string),
  ``winlog.provider_name``/``provider_guid``, ``winlog.record_id``, ``winlog.process.pid``/``thread.id`` (the Sysmon
  service's), ``winlog.user`` (the SID that logged), ``winlog.event_data`` = the event data under Sysmon's names;
  ``event.code``/``provider``/``kind``/``created``/``action``; ``host.*``, ``agent.*``, ``ecs.version``,
  ``log.level``, and ``message`` = the rendered text (``Name: value`` lines, as Sysmon's message template renders).
- ``wazuh()``: Wazuh agent eventchannel JSON (Wazuh, "Using Wazuh to monitor Sysmon events" / the ruleset's
  sysmon tests): ``win.system`` {providerName, providerGuid, eventID, version, level, task, opcode, keywords,
  systemTime, eventRecordID, processID, threadID, channel, computer, severityValue, message} and
  ``win.eventdata`` with each Name's first letter lower-cased and every backslash doubled, as the agent writes it.
- ``nxlog()``: NXLog im_msvistalog flat JSON (NXLog reference manual, im_msvistalog fields): EventTime (local,
  ``YYYY-MM-DD HH:MM:SS``), Hostname, Keywords, EventType, SeverityValue, Severity, EventID, SourceName,
  ProviderGuid, Version, Task, OpcodeValue, RecordNumber, ProcessID/ThreadID (the logging service's), Channel,
  Domain, AccountName, UserID, AccountType, Category, Opcode, the event data at the top level, Message,
  EventReceivedTime, SourceModuleName, SourceModuleType.
- ``event_xml()``: the rendered event XML as wevtutil and Windows Event Forwarding write it (single-quoted
  attributes, TimeCreated SystemTime with 7 fractional digits, empty elements self-closed), as in Elastic's
  ``event.original``.
"""

from __future__ import annotations

import calendar
import time
from xml.sax.saxutils import escape

SYSMON_PROVIDER = "Microsoft-Windows-Sysmon"
SYSMON_GUID = "{5770385f-c22a-43e0-bf4c-06f5698ffbd9}"
SYSMON_CHANNEL = "Microsoft-Windows-Sysmon/Operational"

#: Event data fields of each event id, in Sysmon's schema order.
SCHEMA = {
    1: ("RuleName", "UtcTime", "ProcessGuid", "ProcessId", "Image", "FileVersion", "Description", "Product",
        "Company", "OriginalFileName", "CommandLine", "CurrentDirectory", "User", "LogonGuid", "LogonId",
        "TerminalSessionId", "IntegrityLevel", "Hashes", "ParentProcessGuid", "ParentProcessId", "ParentImage",
        "ParentCommandLine", "ParentUser"),
    3: ("RuleName", "UtcTime", "ProcessGuid", "ProcessId", "Image", "User", "Protocol", "Initiated", "SourceIsIpv6",
        "SourceIp", "SourceHostname", "SourcePort", "SourcePortName", "DestinationIsIpv6", "DestinationIp",
        "DestinationHostname", "DestinationPort", "DestinationPortName"),
    5: ("RuleName", "UtcTime", "ProcessGuid", "ProcessId", "Image", "User"),
    22: ("RuleName", "UtcTime", "ProcessGuid", "ProcessId", "QueryName", "QueryStatus", "QueryResults", "Image",
         "User"),
}
TITLES = {1: "Process Create", 3: "Network connection detected", 5: "Process terminated", 22: "Dns query"}
ACTIONS = {1: "Process Create (rule: ProcessCreate)", 3: "Network connection detected (rule: NetworkConnect)",
           5: "Process terminated (rule: ProcessTerminate)", 22: "Dns query (rule: DnsQuery)"}

_DEFAULTS = {
    "RuleName": "-", "FileVersion": "10.0.19041.546 (WinBuild.160101.0800)", "Description": "Windows PowerShell",
    "Product": "Microsoft\u00ae Windows\u00ae Operating System", "Company": "Microsoft Corporation",
    "OriginalFileName": "PowerShell.EXE", "CurrentDirectory": "C:\\Users\\alice\\", "LogonGuid":
    "{4dc16835-596f-6089-d6a0-040000000000}", "LogonId": "0x4a0d6", "TerminalSessionId": "1", "IntegrityLevel":
    "Medium", "Hashes": "SHA256=DE96A6E69944335375DC1AC238336066889D9FFC7D73628EF4FE1B1B160AB32C",
    "ParentProcessGuid": "{4dc16835-c18b-6089-a203-000000002e00}", "ParentProcessId": "4120",
    "ParentImage": "C:\\Windows\\explorer.exe", "ParentCommandLine": "C:\\Windows\\Explorer.EXE",
    "ParentUser": "CORP\\alice", "Protocol": "tcp", "Initiated": "true", "SourceIsIpv6": "false",
    "SourceHostname": "-", "SourcePortName": "-", "DestinationIsIpv6": "false", "DestinationHostname": "-",
    "DestinationPortName": "-", "QueryStatus": "0",
}


def utc_time(ts: float) -> str:
    """Sysmon's UtcTime text of an epoch time: ``YYYY-MM-DD HH:MM:SS.mmm``."""
    ms = int(round(ts * 1000))
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}"


def sysmon_event(eid: int, ts: float, *, host: str = "WS01.corp.example", record_id: int = 1000, **fields) -> dict:
    """One Sysmon event: ``{"eid", "ts", "host", "record_id", "data"}`` with ``data`` holding every schema field
    (``fields`` override the defaults; ``UtcTime`` is made from ``ts``)."""
    values = dict(_DEFAULTS)
    values["UtcTime"] = utc_time(ts)
    values.update({k: str(v) for k, v in fields.items()})
    if eid == 3 and ":" in values.get("DestinationIp", ""):
        values["DestinationIsIpv6"] = "true"
    data = {name: values.get(name, "-") for name in SCHEMA[eid]}
    return {"eid": eid, "ts": ts, "host": host, "record_id": record_id, "data": data}


def _created(ev: dict) -> float:
    # Sysmon writes the event a little after it happened (network events are batched).
    return ev["ts"] + 0.75


def _iso(ts: float, digits: int = 3) -> str:
    frac = f"{ts % 1:.{digits}f}"[2:]
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(int(ts))) + f".{frac}Z"


def message(ev: dict) -> str:
    """The rendered message text of an event (its title, then ``Name: value`` lines)."""
    lines = [TITLES.get(ev["eid"], "Event") + ":"] + [f"{k}: {v}" for k, v in ev["data"].items()]
    return "\n".join(lines)


def winlogbeat(ev: dict) -> dict:
    """The event as a Winlogbeat 8 / Elastic Agent document (raw, before an ingest pipeline)."""
    created = _created(ev)
    short = ev["host"].split(".")[0]
    return {
        "@timestamp": _iso(created),
        "agent": {"ephemeral_id": "a7c7b5d6-3f0e-4c7e-9d8f-2c1b0f6a9e11", "id": "d1c5f1a2-8e3b-4b8e-9a55-3b9f2f7c4e20",
                  "name": short, "type": "winlogbeat", "version": "8.11.1"},
        "ecs": {"version": "8.0.0"},
        "event": {"action": ACTIONS.get(ev["eid"], "Event"), "code": str(ev["eid"]), "created": _iso(created + 0.2),
                  "kind": "event", "provider": SYSMON_PROVIDER},
        "host": {"architecture": "x86_64", "hostname": short.lower(), "id": "7ae3ba5b-6b0c-4a47-a0a6-94e43a0bb2f6",
                 "ip": ["fe80::4d3c:a1b2:77e1:9c1d", "10.1.1.10"], "mac": ["00-15-5D-01-02-03"],
                 "name": short.lower(),
                 "os": {"build": "19045.3693", "family": "windows", "kernel": "10.0.19041.3693 (WinBuild.160101.0800)",
                        "name": "Windows 10 Pro", "platform": "windows", "type": "windows", "version": "10.0"}},
        "log": {"level": "information"},
        "message": message(ev),
        "winlog": {
            "api": "wineventlog", "channel": SYSMON_CHANNEL, "computer_name": ev["host"],
            "event_data": dict(ev["data"]), "event_id": str(ev["eid"]), "opcode": "Info",
            "process": {"pid": 3100, "thread": {"id": 4012}}, "provider_guid": SYSMON_GUID,
            "provider_name": SYSMON_PROVIDER, "record_id": str(ev["record_id"]),
            "task": ACTIONS.get(ev["eid"], "Event"),
            "user": {"domain": "NT AUTHORITY", "identifier": "S-1-5-18", "name": "SYSTEM", "type": "Well Known Group"},
            "version": 5,
        },
    }


def wazuh(ev: dict) -> dict:
    """The event as Wazuh agent eventchannel JSON (``win.system``/``win.eventdata``, backslashes doubled)."""
    created = _created(ev)
    eventdata = {k[0].lower() + k[1:]: v.replace("\\", "\\\\") for k, v in ev["data"].items()}
    return {"win": {
        "system": {
            "providerName": SYSMON_PROVIDER, "providerGuid": SYSMON_GUID, "eventID": str(ev["eid"]), "version": "5",
            "level": "4", "task": str(ev["eid"]), "opcode": "0", "keywords": "0x8000000000000000",
            "systemTime": _iso(created, 7), "eventRecordID": str(ev["record_id"]), "processID": "3100",
            "threadID": "4012", "channel": SYSMON_CHANNEL, "computer": ev["host"], "severityValue": "INFORMATION",
            "message": '"' + message(ev).replace("\n", "\r\n") + '"',
        },
        "eventdata": eventdata,
    }}


def nxlog(ev: dict, utc_offset_s: int = 0) -> dict:
    """The event as NXLog im_msvistalog flat JSON (EventTime in the host's local time, ``utc_offset_s`` east)."""
    created = _created(ev)
    local = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(int(created) + utc_offset_s))
    out = {
        "EventTime": local, "Hostname": ev["host"], "Keywords": -9223372036854775808, "EventType": "INFO",
        "SeverityValue": 2, "Severity": "INFO", "EventID": ev["eid"], "SourceName": SYSMON_PROVIDER,
        "ProviderGuid": SYSMON_GUID, "Version": 5, "Task": ev["eid"], "OpcodeValue": 0,
        "RecordNumber": ev["record_id"], "ProcessID": 3100, "ThreadID": 4012, "Channel": SYSMON_CHANNEL,
        "Domain": "NT AUTHORITY", "AccountName": "SYSTEM", "UserID": "S-1-5-18", "AccountType": "User",
        "Category": ACTIONS.get(ev["eid"], "Event"), "Opcode": "Info",
    }
    out.update(ev["data"])
    out.update({"Message": message(ev).replace("\n", "\r\n"), "EventReceivedTime": local,
                "SourceModuleName": "in_sysmon", "SourceModuleType": "im_msvistalog"})
    return out


def event_xml(ev: dict) -> str:
    """The event as wevtutil / WEF rendered XML (one ``<Event>`` element, no line breaks)."""
    created = _created(ev)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(int(created))) + f".{int(created % 1 * 1e7):07d}Z"
    data = "".join(f"<Data Name='{k}'>{escape(v)}</Data>" for k, v in ev["data"].items())
    return (
        "<Event xmlns='http://schemas.microsoft.com/win/2004/08/events/event'><System>"
        f"<Provider Name='{SYSMON_PROVIDER}' Guid='{SYSMON_GUID}'/><EventID>{ev['eid']}</EventID>"
        f"<Version>5</Version><Level>4</Level><Task>{ev['eid']}</Task><Opcode>0</Opcode>"
        f"<Keywords>0x8000000000000000</Keywords><TimeCreated SystemTime='{stamp}'/>"
        f"<EventRecordID>{ev['record_id']}</EventRecordID><Correlation/>"
        "<Execution ProcessID='3100' ThreadID='4012'/>"
        f"<Channel>{SYSMON_CHANNEL}</Channel><Computer>{escape(ev['host'])}</Computer>"
        "<Security UserID='S-1-5-18'/></System>"
        f"<EventData>{data}</EventData></Event>"
    )


def epoch(text: str) -> float:
    """Epoch seconds of ``YYYY-MM-DD HH:MM:SS`` (UTC), for writing scenario times readably."""
    return float(calendar.timegm(time.strptime(text, "%Y-%m-%d %H:%M:%S")))
