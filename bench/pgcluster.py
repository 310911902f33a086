"""A throwaway PostgreSQL cluster on loopback for the benchmarks (Debian's PostgreSQL 15).

Used by ``bench/budget.py`` when no ``--pg-url`` is given. ``initdb`` refuses to run as
root, so as root the server binaries run as the ``postgres`` user (platform.md).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)


def server_binary(name: str) -> str:
    """``initdb``/``pg_ctl`` from the newest installed PostgreSQL (not on Debian's PATH)."""
    for directory in BIN_DIRS:
        if (directory / name).exists():
            return str(directory / name)
    found = shutil.which(name)
    if found is None:
        raise SystemExit(f"{name} not found: install Debian's postgresql package "
                         "(scripts/bootstrap does)")
    return found


def _run(argv: list[str]) -> None:
    if os.geteuid() == 0:
        argv = ["runuser", "-u", "postgres", "--", *argv]
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def throwaway_cluster() -> Iterator[str]:
    """Start a cluster in a temporary directory; yields its admin URL; removes it after."""
    workdir = Path(tempfile.mkdtemp(prefix="gmp-bench-pg-"))
    workdir.chmod(0o777)   # the postgres user writes here
    data, port = workdir / "data", free_port()
    _run([server_binary("initdb"), "-D", str(data), "-A", "trust", "-U", "postgres",
          "--no-sync"])
    _run([server_binary("pg_ctl"), "-D", str(data), "-l", str(workdir / "log"), "-w", "-o",
          f"-p {port} -k {workdir} -c listen_addresses=127.0.0.1 -c fsync=on", "start"])
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        _run([server_binary("pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"])
        shutil.rmtree(workdir, ignore_errors=True)
