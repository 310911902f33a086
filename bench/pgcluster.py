"""A throwaway PostgreSQL cluster on loopback for the benchmarks: ``scripts/pg`` (the one the
test suite uses), with PostgreSQL's durability settings left on as in production."""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

PG_SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "pg"


def server_version() -> str:
    """``postgres --version`` of the newest installed server (Debian keeps it off the PATH)."""
    bins = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"))
    if not bins:
        return "PostgreSQL not installed"
    return subprocess.run([str(bins[-1]), "--version"], capture_output=True, text=True).stdout.strip()


@contextlib.contextmanager
def throwaway_cluster() -> Iterator[str]:
    """Start a durable cluster in a temporary directory; yields its admin URL; removes it after."""
    directory = tempfile.mkdtemp(prefix="gmp-bench-pg-")
    url = subprocess.run(
        [str(PG_SCRIPT), "start", directory],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "TRACKER_PG_DURABLE": "1"},
    ).stdout.strip()
    try:
        yield url
    finally:
        subprocess.run([str(PG_SCRIPT), "stop", directory], check=False)
