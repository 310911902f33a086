"""The suite's databases on the backend chosen by ``TRACKER_TEST_BACKEND``.

``sqlite`` (default): a migrated template file, copied per test. ``postgresql``: a migrated
template database in the cluster named by ``TRACKER_TEST_PG_URL`` (an admin URL such as
``postgresql+psycopg://postgres@127.0.0.1:55433/postgres``), and one database per test made
with ``CREATE DATABASE … TEMPLATE`` — a file-level copy, far cheaper than running the
migrations again — dropped with ``FORCE`` afterwards. Names carry the pytest process id, so
two pytest processes can share one cluster.
"""

from __future__ import annotations

import itertools
import os
import shutil
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from tracker.core.db import dispose_engine, get_engine
from tracker.core.migrate import upgrade

BACKEND = os.environ.get("TRACKER_TEST_BACKEND", "sqlite")
if BACKEND not in ("sqlite", "postgresql"):
    raise RuntimeError(f"TRACKER_TEST_BACKEND must be sqlite or postgresql, not {BACKEND!r}")
ON_POSTGRES = BACKEND == "postgresql"


class SQLiteDatabases:
    """Copies of one migrated SQLite file."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.template = root / "template.db"
        self._names = itertools.count(1)
        url = f"sqlite:///{self.template}"
        upgrade(url)
        self._checkpoint(url)
        dispose_engine(url)

    @staticmethod
    def _checkpoint(url: str) -> None:
        """Fold the WAL into the file, so that a plain copy of the file is complete."""
        with get_engine(url).connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")

    def new(self, path: Path | None = None) -> str:
        path = path or self.root / f"db{next(self._names)}.db"
        shutil.copy(self.template, path)
        return f"sqlite:///{path}"

    def empty(self) -> str:
        """A database without any schema (for migration tests)."""
        return f"sqlite:///{self.root / f'db{next(self._names)}.db'}"

    def clone(self, url: str, path: Path | None = None) -> str:
        self._checkpoint(url)
        path = path or self.root / f"db{next(self._names)}.db"
        shutil.copy(make_url(url).database, path)
        return f"sqlite:///{path}"

    def drop(self, url: str) -> None:
        dispose_engine(url)

    def close(self) -> None:
        """Nothing to do: the files live in pytest's temporary directory."""


class PostgresDatabases:
    """Databases of one PostgreSQL cluster, made from a migrated template database."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = make_url(admin_url)
        self.prefix = f"trk{os.getpid()}_"
        self._names = itertools.count(1)
        # AUTOCOMMIT: CREATE/DROP DATABASE cannot run inside a transaction block
        self.admin: Engine = create_engine(self.admin_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
        self.template = self.prefix + "template"
        self._execute(f'DROP DATABASE IF EXISTS "{self.template}" WITH (FORCE)')
        self._execute(f'CREATE DATABASE "{self.template}"')
        url = self.url(self.template)
        upgrade(url)
        dispose_engine(url)  # a template must have no open connection when it is copied
        # CREATE DATABASE copies the template block by block (≈ 0.1 s idle, more under load):
        # the next test's database is made in the background while the current test runs
        self._maker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pg-next-db")
        self._next: Future[str] = self._maker.submit(self._create)

    def url(self, name: str) -> str:
        return self.admin_url.set(database=name).render_as_string(hide_password=False)

    def _execute(self, sql: str) -> None:
        with self.admin.connect() as conn:
            conn.exec_driver_sql(sql)

    def _create(self) -> str:
        name = f"{self.prefix}{next(self._names)}"
        self._execute(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
        return self.url(name)

    def new(self, path: Path | None = None) -> str:
        url = self._next.result()
        self._next = self._maker.submit(self._create)
        return url

    def empty(self) -> str:
        """A database without any schema (for migration tests)."""
        name = f"{self.prefix}{next(self._names)}"
        self._execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def clone(self, url: str, path: Path | None = None) -> str:
        """A copy of ``url``'s database as it is now (its pooled connections are closed; the
        engine stays usable and opens new ones on demand)."""
        get_engine(url).dispose()
        name = f"{self.prefix}{next(self._names)}"
        self._execute(f'CREATE DATABASE "{name}" TEMPLATE "{make_url(url).database}"')
        return self.url(name)

    def drop(self, url: str) -> None:
        dispose_engine(url)
        self._execute(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')

    def close(self) -> None:
        self._maker.shutdown(wait=True)
        self.drop(self._next.result())
        self.drop(self.url(self.template))
        self.admin.dispose()


def open_databases(root: Path) -> SQLiteDatabases | PostgresDatabases:
    """The backend's database factory for one pytest session."""
    if not ON_POSTGRES:
        return SQLiteDatabases(root)
    admin_url = os.environ.get("TRACKER_TEST_PG_URL")
    if not admin_url:
        raise RuntimeError(
            "TRACKER_TEST_BACKEND=postgresql needs TRACKER_TEST_PG_URL, the admin URL "
            "of a running cluster (scripts/test starts one)"
        )
    return PostgresDatabases(admin_url)
