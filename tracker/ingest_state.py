"""Per-monitor ingest state shared by every ingest worker (scale-out, docs/scale-out.md).

Several ``tracker ingest`` workers on one MQTT v5 shared subscription receive one monitor's
messages round robin, so a worker's in-memory rule state (episode machines, gap, recurrence
and recovery caches, rolling windows, the highest stored seq) can lag behind what another
worker has committed. One row per monitor serialises and versions the writers:

* every batch, first thing in its transaction, locks the rows of the monitors it carries —
  PostgreSQL ``SELECT … FOR UPDATE`` in monitor order (no deadlock between two batches),
  SQLite by the ``UPDATE`` itself, which takes the database-wide write lock before anything
  is read — and bumps their version;
* a version other than the one this worker last *committed* means another writer changed
  the monitor since: the caller drops that monitor's in-memory state, which is then rebuilt
  from the database by the exact path late (backfilled) data already take;
* the row carries the newest reading's event and receipt time, so the wall-clock silence
  check sees every worker's traffic, not only its own share of it.

A worker alone finds its own versions every time and keeps its warm caches.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime

from sqlalchemy import bindparam, case, event, or_, select, text, update
from sqlmodel import Field, Session, SQLModel

from tracker.db import UTCDateTime


class IngestState(SQLModel, table=True):
    """One row per monitor that has been ingested: who wrote it last, and its newest reading."""

    __tablename__ = "ingest_state"

    monitor_id: int = Field(foreign_key="monitor.id", primary_key=True)
    #: bumped by every transaction that writes the monitor's readings or excursions
    version: int = 0
    #: the worker of the last such transaction (for people: which process wrote last)
    writer: str = Field(default="", max_length=120)
    #: the newest reading by event time, and when it was received (silence check)
    last_event_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    last_received_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


TABLE = IngestState.__table__
_ENSURE = text("INSERT INTO ingest_state (monitor_id, version, writer) VALUES (:m, 0, '') "
               "ON CONFLICT (monitor_id) DO NOTHING")
_NEWER = or_(TABLE.c.last_event_at.is_(None),
             TABLE.c.last_event_at <= bindparam("e", type_=UTCDateTime()))
_LATEST = (update(TABLE).where(TABLE.c.monitor_id == bindparam("m"))
           .values(last_event_at=case((_NEWER, bindparam("e", type_=UTCDateTime())),
                                      else_=TABLE.c.last_event_at),
                   last_received_at=case((_NEWER, bindparam("r", type_=UTCDateTime())),
                                         else_=TABLE.c.last_received_at)))


def default_writer(name: str | None = None) -> str:
    """A name unique to this process: host, pid and a random tail (the pid may be reused)."""
    return f"{name or socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"[:120]


class WriterGuard:
    """This worker's side of the per-monitor versions."""

    def __init__(self, writer: str | None = None) -> None:
        self.writer = writer or default_writer()
        #: monitor → the version this worker's last *committed* transaction left
        self.committed: dict[int, int] = {}
        #: monitors known to have a row (rows are never deleted)
        self.existing: set[int] = set()

    def forget(self) -> None:
        """After a rollback: nothing this worker staged or created can be trusted."""
        self.committed.clear()
        self.existing.clear()

    def claim(self, session: Session, monitor_ids: Iterable[int]) -> set[int]:
        """Lock the monitors' rows for the caller's transaction and bump their versions;
        returns the monitors another writer has changed since this worker's last commit."""
        ids = sorted(set(monitor_ids))
        if not ids:
            return set()
        self._ensure_rows(session, ids)
        before = self._bump(session, ids)
        staged = {m: v + 1 for m, v in before.items()}
        # trusted only once committed: a rolled-back bump never happened
        event.listen(session, "after_commit", lambda _s: self.committed.update(staged), once=True)
        return {m for m in ids if self.committed.get(m) != before.get(m)}

    def _ensure_rows(self, session: Session, ids: list[int]) -> None:
        """Create the rows of monitors nobody has ingested yet, before any row is locked: a
        row created after others were locked would break the monitor order and could
        deadlock with another worker doing the same for other monitors."""
        unknown = [m for m in ids if m not in self.existing]
        if not unknown:
            return
        connection = session.connection()
        present = set(connection.execute(
            select(TABLE.c.monitor_id).where(TABLE.c.monitor_id.in_(unknown))).scalars())
        missing = [m for m in unknown if m not in present]
        if missing:   # first time anyone ingests these monitors
            connection.execute(_ENSURE, [{"m": m} for m in missing])
        self.existing.update(unknown)   # rows are never deleted

    def _bump(self, session: Session, ids: list[int]) -> dict[int, int]:
        """Versions before the bump, under the lock."""
        connection = session.connection()
        if connection.dialect.name != "sqlite":
            # lock in monitor order, so two batches sharing monitors queue instead of deadlocking
            connection.execute(select(TABLE.c.monitor_id).where(TABLE.c.monitor_id.in_(ids))
                               .order_by(TABLE.c.monitor_id).with_for_update())
        rows = connection.execute(
            update(TABLE).where(TABLE.c.monitor_id.in_(ids))
            .values(version=TABLE.c.version + 1, writer=self.writer)
            .returning(TABLE.c.monitor_id, TABLE.c.version)).all()
        return {m: v - 1 for m, v in rows}

    @staticmethod
    def record_latest(session: Session, latest: Mapping[int, tuple[datetime, datetime]]) -> None:
        """Keep each monitor's newest reading (event time, receipt time) on its row; the
        caller holds the row's lock (``claim``)."""
        if latest:
            session.connection().execute(_LATEST, [{"m": m, "e": e, "r": r}
                                                   for m, (e, r) in latest.items()])


def latest_readings(session: Session, monitor_ids: Iterable[int] | None = None
                    ) -> dict[int, tuple[datetime, datetime]]:
    """Newest reading (event time, receipt time) of every ingested monitor, from any worker."""
    query = select(TABLE.c.monitor_id, TABLE.c.last_event_at, TABLE.c.last_received_at).where(
        TABLE.c.last_event_at.is_not(None))
    if monitor_ids is not None:
        query = query.where(TABLE.c.monitor_id.in_(sorted(set(monitor_ids))))
    return {m: (e, r) for m, e, r in session.connection().execute(query)}
