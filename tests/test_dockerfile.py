"""The Dockerfile cannot be built here (no Docker engine); hadolint checks it instead, and we check its contract."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO


def test_hadolint_clean():
    exe = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    result = subprocess.run([exe, "--no-color", str(REPO / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ports_user_and_entrypoint():
    text = (REPO / "Dockerfile").read_text()
    exposed = set(re.findall(r"\b(\d+/(?:udp|tcp))\b", " ".join(l for l in text.splitlines() if l.startswith("EXPOSE"))))
    assert {"2055/udp", "4739/udp", "4739/tcp", "6343/udp", "5514/udp", "5514/tcp"} <= exposed
    assert re.search(r"^USER (?!0\b|root\b)\S+", text, re.M), "the image must not run as root"
    assert 'ENTRYPOINT ["brokerwatch"]' in text and 'CMD ["run"]' in text
    assert re.search(r"^FROM python:3\.\d+-slim", text, re.M)


def test_the_image_warms_the_numba_cache_at_build_time():
    """The service compiles before it binds; in the image that compile happens at build time, into the cache dir."""
    text = (REPO / "Dockerfile").read_text()
    assert "NUMBA_CACHE_DIR=/var/cache/brokerwatch/numba" in text
    assert "brokerwatch warmup" in text
    assert text.index("brokerwatch warmup") < text.index("USER ")
