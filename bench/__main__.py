"""`make bench` / `python -m bench`: every benchmark in turn, each printing its figures beside its peers'."""

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: (script, arguments): the order puts the quick ones first.
BENCHES = [
    ("pcap_read.py", []),
    ("decode.py", []),
    ("e2e_udp.py", ["--seconds", "4"]),
    ("e2e_udp.py", ["--seconds", "5", "--format", "v9", "--exporters", "8"]),
    ("e2e_udp.py", ["--seconds", "5", "--format", "v9", "--exporters", "8", "--workers", "2", "--cadence", "3600",
                    "--rate", "3000000", "--fast-sender"]),
    ("receive_under_analysis.py", []),
    ("analytics_incremental.py", []),
    ("overload.py", []),
    ("syslog.py", []),
    ("hostlogs.py", []),
    ("hostlogs_unix.py", ["--events", "30000"]),
    ("meter.py", []),
    ("analytics.py", []),
    ("detection/run.py", []),
    ("fuzz.py", ["--datagrams", "1000000"]),
    ("report.py", []),
]


def main() -> int:
    status = 0
    for script, args in BENCHES:
        path = HERE / script
        if not path.exists():
            print(f"== {script}: not present in this version", flush=True)
            continue
        print(f"== {script} {' '.join(args)}", flush=True)
        status |= subprocess.run([sys.executable, str(path), *args]).returncode
    return status


if __name__ == "__main__":
    sys.exit(main())
