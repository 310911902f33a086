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
  check sees every worker's traffic, not only its own share of it;
* a data gap found in a monitor another worker is writing at the same time may be nothing but
  that worker's share, received but not committed yet: the row keeps the stretch to check
  again once that share has landed (``defer_gap_check`` / ``take_gap_checks``), so any worker
  — not only the one that found it — draws the gap if it is real.

A worker alone finds its own versions every time and keeps its warm caches.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime

from sqlalchemy import bindparam, case, event, or_, select, text, update
from sqlmodel import Field, Session, SQLModel

from tracker.core.db import UTCDateTime
from tracker.monitoring.readings import SEQ_TYPE


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
    #: the highest stored seq (dedupe); NULL until a worker has looked it up once
    max_seq: int | None = Field(default=None, sa_type=SEQ_TYPE)
    #: a stretch of event time whose data gaps wait for a re-check, and when it is due
    gap_recheck_from: datetime | None = Field(default=None, sa_type=UTCDateTime)
    gap_recheck_to: datetime | None = Field(default=None, sa_type=UTCDateTime)
    gap_recheck_due: datetime | None = Field(default=None, sa_type=UTCDateTime)


#: another worker wrote the monitor within this many seconds: its share may be in flight
SHARED_WINDOW_S = 60.0

TABLE = IngestState.__table__
_ENSURE = text(
    "INSERT INTO ingest_state (monitor_id, version, writer) VALUES (:m, 0, '') "
    "ON CONFLICT (monitor_id) DO NOTHING"
)
_NEWER = or_(TABLE.c.last_event_at.is_(None), TABLE.c.last_event_at <= bindparam("e", type_=UTCDateTime()))
_LATEST = (
    update(TABLE)
    .where(TABLE.c.monitor_id == bindparam("m"))
    .values(
        last_event_at=case((_NEWER, bindparam("e", type_=UTCDateTime())), else_=TABLE.c.last_event_at),
        last_received_at=case((_NEWER, bindparam("r", type_=UTCDateTime())), else_=TABLE.c.last_received_at),
    )
)
_MAX_SEQ = (
    update(TABLE)
    .where(TABLE.c.monitor_id == bindparam("m"))
    .values(
        max_seq=case(
            (
                TABLE.c.max_seq.is_(None) | (TABLE.c.max_seq < bindparam("q", type_=SEQ_TYPE)),
                bindparam("q", type_=SEQ_TYPE),
            ),
            else_=TABLE.c.max_seq,
        )
    )
)
_recheck_from, _recheck_to = TABLE.c.gap_recheck_from, TABLE.c.gap_recheck_to
_recheck_due = TABLE.c.gap_recheck_due
_DEFER = (
    update(TABLE)
    .where(TABLE.c.monitor_id == bindparam("m"))
    .values(
        gap_recheck_from=case(
            (
                _recheck_from.is_(None) | (_recheck_from > bindparam("s", type_=UTCDateTime())),
                bindparam("s", type_=UTCDateTime()),
            ),
            else_=_recheck_from,
        ),
        gap_recheck_to=case(
            (
                _recheck_to.is_(None) | (_recheck_to < bindparam("t", type_=UTCDateTime())),
                bindparam("t", type_=UTCDateTime()),
            ),
            else_=_recheck_to,
        ),
        # the first deferral sets the time: a steady stream must not push it away
        gap_recheck_due=case(
            (_recheck_due.is_(None), bindparam("d", type_=UTCDateTime())), else_=_recheck_due
        ),
    )
)


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
        #: the newest stored reading (event time) of each monitor of the last claim, before
        #: its batch: what every worker committed, where this worker's caches may not know it
        self.newest: dict[int, datetime | None] = {}
        #: … and their highest stored seq, where a worker has recorded it
        self.max_seq: dict[int, int | None] = {}
        #: monitor → when (monotonic) a claim last found another worker's write
        self._foreign_seen: dict[int, float] = {}

    def forget(self) -> None:
        """After a rollback: nothing this worker staged or created can be trusted."""
        self.committed.clear()
        self.existing.clear()
        self.newest.clear()
        self.max_seq.clear()

    def shared(self, monitor_id: int) -> bool:
        """Another worker wrote this monitor lately, so part of its stream may be in flight
        there (received, not yet committed): a hole in the data may be only that."""
        seen = self._foreign_seen.get(monitor_id)
        return seen is not None and time.monotonic() - seen < SHARED_WINDOW_S

    def claim(self, session: Session, monitor_ids: Iterable[int]) -> set[int]:
        """Lock the monitors' rows for the caller's transaction and bump their versions;
        returns the monitors another writer has changed since this worker's last commit."""
        ids = sorted(set(monitor_ids))
        if not ids:
            self.newest, self.max_seq = {}, {}
            return set()
        self._ensure_rows(session, ids)
        before, self.newest, self.max_seq = self._bump(session, ids)
        staged = {m: v + 1 for m, v in before.items()}
        # trusted only once committed: a rolled-back bump never happened
        event.listen(session, "after_commit", lambda _s: self.committed.update(staged), once=True)
        changed = {m for m in ids if self.committed.get(m) != before.get(m)}
        # a monitor this worker has written before and another has written since (a worker's
        # first claim after its start is not evidence of another worker)
        seen = time.monotonic()
        self._foreign_seen.update((m, seen) for m in changed if m in self.committed)
        return changed

    def _ensure_rows(self, session: Session, ids: list[int]) -> None:
        """Create the rows of monitors nobody has ingested yet, before any row is locked: a
        row created after others were locked would break the monitor order and could
        deadlock with another worker doing the same for other monitors."""
        unknown = [m for m in ids if m not in self.existing]
        if not unknown:
            return
        connection = session.connection()
        present = set(
            connection.execute(select(TABLE.c.monitor_id).where(TABLE.c.monitor_id.in_(unknown))).scalars()
        )
        missing = [m for m in unknown if m not in present]
        if missing:  # first time anyone ingests these monitors
            connection.execute(_ENSURE, [{"m": m} for m in missing])
        self.existing.update(unknown)  # rows are never deleted

    def _bump(
        self, session: Session, ids: list[int]
    ) -> tuple[dict[int, int], dict[int, datetime | None], dict[int, int | None]]:
        """Versions before the bump, newest stored readings and seqs, under the lock."""
        connection = session.connection()
        if connection.dialect.name != "sqlite":
            # lock in monitor order, so two batches sharing monitors queue instead of deadlocking
            connection.execute(
                select(TABLE.c.monitor_id)
                .where(TABLE.c.monitor_id.in_(ids))
                .order_by(TABLE.c.monitor_id)
                .with_for_update()
            )
        rows = connection.execute(
            update(TABLE)
            .where(TABLE.c.monitor_id.in_(ids))
            .values(version=TABLE.c.version + 1, writer=self.writer)
            .returning(TABLE.c.monitor_id, TABLE.c.version, TABLE.c.last_event_at, TABLE.c.max_seq)
        ).all()
        return (
            {m: v - 1 for m, v, _, _ in rows},
            {m: e for m, _, e, _ in rows},
            {m: q for m, _, _, q in rows},
        )

    @staticmethod
    def record_latest(
        session: Session,
        latest: Mapping[int, tuple[datetime, datetime]],
        max_seq: Mapping[int, int] | None = None,
    ) -> None:
        """Keep each monitor's newest reading (event time, receipt time) and highest stored
        seq on its row (neither ever goes back); the caller holds the row's lock (``claim``).
        Workers of a release before migration 0010 do not keep ``max_seq``: stop them all
        before upgrading (docs/scale-out.md)."""
        if latest:
            session.connection().execute(_LATEST, [{"m": m, "e": e, "r": r} for m, (e, r) in latest.items()])
        if max_seq:
            session.connection().execute(_MAX_SEQ, [{"m": m, "q": q} for m, q in max_seq.items()])


def defer_gap_check(session: Session, monitor_id: int, start: datetime, end: datetime, due: datetime) -> None:
    """Widen the monitor's stretch of event time to re-check for data gaps at ``due``; the
    caller holds the row's lock."""
    session.connection().execute(_DEFER, [{"m": monitor_id, "s": start, "t": end, "d": due}])


def due_gap_checks(session: Session, now: datetime) -> list[int]:
    """Monitors with a gap re-check due (read without a lock: claim them, then take)."""
    return list(
        session.connection()
        .execute(
            select(TABLE.c.monitor_id)
            .where(_recheck_due <= bindparam("now", type_=UTCDateTime()))
            .order_by(TABLE.c.monitor_id),
            {"now": now},
        )
        .scalars()
    )


def take_gap_checks(
    session: Session, monitor_ids: Iterable[int], now: datetime
) -> dict[int, tuple[datetime, datetime]]:
    """The due stretches of claimed monitors, cleared in the caller's transaction (if it rolls
    back they stay due)."""
    ids = sorted(set(monitor_ids))
    if not ids:
        return {}
    due = (TABLE.c.monitor_id.in_(ids), _recheck_due <= bindparam("now", type_=UTCDateTime()))
    connection = session.connection()
    stretches = {
        m: (s, t)
        for m, s, t in connection.execute(
            select(TABLE.c.monitor_id, _recheck_from, _recheck_to).where(*due), {"now": now}
        )
    }
    if stretches:
        connection.execute(
            update(TABLE)
            .where(*due)
            .values(gap_recheck_from=None, gap_recheck_to=None, gap_recheck_due=None),
            {"now": now},
        )
    return stretches


def latest_readings(
    session: Session, monitor_ids: Iterable[int] | None = None
) -> dict[int, tuple[datetime, datetime]]:
    """Newest reading (event time, receipt time) of every ingested monitor, from any worker."""
    query = select(TABLE.c.monitor_id, TABLE.c.last_event_at, TABLE.c.last_received_at).where(
        TABLE.c.last_event_at.is_not(None)
    )
    if monitor_ids is not None:
        query = query.where(TABLE.c.monitor_id.in_(sorted(set(monitor_ids))))
    return {m: (e, r) for m, e, r in session.connection().execute(query)}
