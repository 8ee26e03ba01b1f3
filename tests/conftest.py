"""Shared test fixtures: where the public corpus is, and real tools the tests drive."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "fixtures"

# One absolute numba cache for the suite and the services it starts (in other working directories), so each
# kernel is compiled once per machine rather than once per process.
os.environ["NUMBA_CACHE_DIR"] = str((REPO / os.environ.get("NUMBA_CACHE_DIR", ".numba_cache")).resolve())


def corpus_path() -> Path:
    """The public corpus: $BROKERWATCH_CORPUS, else ../shared/corpus beside the repository."""
    return Path(os.environ.get("BROKERWATCH_CORPUS", REPO.parent / "shared" / "corpus"))


@pytest.fixture(scope="session")
def corpus() -> Path:
    """The corpus directory; skips the test with the reason when it is absent."""
    path = corpus_path()
    if not (path / "MANIFEST.tsv").is_file():
        pytest.skip(f"public corpus not found at {path} (set BROKERWATCH_CORPUS to its directory)")
    return path


def require_tool(name: str) -> str:
    """Absolute path of an external tool; fails (not skips) when it is missing, since `make test` installs it."""
    path = shutil.which(name) or (f"/usr/sbin/{name}" if os.path.exists(f"/usr/sbin/{name}") else None)
    if path is None:
        pytest.fail(f"{name} is not installed; `make test` installs it (Makefile TEST_DEBS)")
    return path
