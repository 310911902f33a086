"""Stored readings: the original GMP record of every measurement, kept exactly once.

``raw_message`` keeps the bytes as received, keyed by (monitor, seq): the identity that
makes duplicates and broker redeliveries harmless. ``reading`` holds one row per channel
in canonical units with its verdict and the evaluation basis (limit set + facility revision).
Inserts go through SQLAlchemy Core in batches: the ingest hot path (platform.md).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Column, Index, Integer, LargeBinary, Text, bindparam, text, update
from sqlmodel import Field, Session, SQLModel, select

from tracker.core.db import UTCDateTime, time_param
from tracker.facility.basis import EvaluationBasis  # noqa: F401  (target of reading.basis_id)

#: the wire allows any seq below 2⁶³ (some monitors count milliseconds): BIGINT on PostgreSQL,
#: INTEGER on SQLite (64-bit there already, and what migration 0001 created)
SEQ_TYPE = BigInteger().with_variant(Integer(), "sqlite")


class RawMessage(SQLModel, table=True):
    __tablename__ = "raw_message"

    monitor_id: int = Field(foreign_key="monitor.id", primary_key=True)
    seq: int = Field(primary_key=True, sa_type=SEQ_TYPE)
    received_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    topic: str = Field(sa_column=Column(Text, nullable=False))
    payload: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    digest: str = Field(max_length=32)


class Reading(SQLModel, table=True):
    """One channel value of one message. On PostgreSQL the table is partitioned by month of
    ``event_time`` and its primary key includes ``event_time`` (migration 0007,
    ``tracker.core.partitions``); (monitor, seq) stays unique through ``raw_message``."""

    __tablename__ = "reading"
    __table_args__ = (Index("ix_reading_series_time", "monitor_id", "channel", "event_time"),)

    monitor_id: int = Field(foreign_key="monitor.id", primary_key=True)
    seq: int = Field(primary_key=True, sa_type=SEQ_TYPE)
    channel: str = Field(default="", primary_key=True, max_length=8)
    event_time: datetime = Field(sa_type=UTCDateTime, nullable=False)
    value: float
    status: str = Field(default="ok", max_length=20)
    level: str = Field(max_length=16)  # ok | alert | action | not_evaluated | invalid
    direction: str | None = Field(default=None, max_length=4)
    state: str = Field(max_length=16)  # at_rest | in_operation at event_time
    basis_id: int = Field(foreign_key="evaluation_basis.id")
    #: why an ``invalid`` reading proves nothing: status_fault|status_calibration|
    #: status_maintenance|calibration_overdue|outside_instrument_range
    invalid_reason: str | None = Field(default=None, max_length=40)
    #: particles: the sampled volume in litres, as sent (``sample.volume``), so a channel can
    #: be judged over a rolling sampled volume (``tracker.monitoring.rules.volume``); ``None`` for other kinds
    sample_volume_l: float | None = None


class ReadingVerdict(SQLModel, table=True):
    """A verdict a reading had before it was judged again (re-evaluation after a backdated
    room state or an inhibit, or late samples changing a rolling window): kept, not
    overwritten, so a reader sees what was shown at the time and why it changed (GMP 2010
    Art. 163: a change to a record keeps the original; issue 14 item 7)."""

    __tablename__ = "reading_verdict"
    __table_args__ = (Index("ix_reading_verdict_reading", "monitor_id", "seq", "channel"),)

    id: int | None = Field(default=None, primary_key=True)
    monitor_id: int = Field(foreign_key="monitor.id")
    seq: int = Field(sa_type=SEQ_TYPE)
    channel: str = Field(default="", max_length=8)
    event_time: datetime = Field(sa_type=UTCDateTime, nullable=False)
    level: str = Field(max_length=16)
    direction: str | None = Field(default=None, max_length=4)
    state: str = Field(max_length=16)
    basis_id: int
    invalid_reason: str | None = Field(default=None, max_length=40)
    #: when it was replaced, and why
    replaced_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    cause: str = Field(sa_column=Column(Text, nullable=False))


_KEEP_PREVIOUS = text(
    "INSERT INTO reading_verdict (monitor_id, seq, channel, event_time, level, direction, state, "
    "basis_id, invalid_reason, replaced_at, cause) "
    "SELECT monitor_id, seq, channel, event_time, level, direction, state, basis_id, invalid_reason, "
    ":replaced_at, :cause FROM reading "
    "WHERE monitor_id = :m AND seq = :s AND channel = :c AND event_time = :t"
)


def keep_previous_verdicts(session: Session, keys: list[dict], *, cause: str, now: datetime) -> None:
    """Copy the current verdict of each reading (``m``, ``s``, ``c``, ``t``) into the history,
    in the caller's transaction, right before it is overwritten."""
    if not keys:
        return
    as_param = time_param(session.get_bind().dialect.name)
    at = as_param(now)
    session.connection().execute(
        _KEEP_PREVIOUS,
        [
            {"m": k["m"], "s": k["s"], "c": k["c"], "t": as_param(k["t"]), "replaced_at": at, "cause": cause}
            for k in keys
        ],
    )


def overwrite_verdicts(session: Session, rows: list[dict], *, cause: str, now: datetime) -> None:
    """Re-judge stored readings: keep each one's previous verdict, then write the new one.

    ``rows`` hold the key (``m``, ``s``, ``c``, ``t``) and the new ``level``, ``direction`` and
    ``basis``; with ``state`` and ``invalid`` too when the judging state may have changed
    (re-evaluation), without them when only a rolling window moved (late samples)."""
    if not rows:
        return
    keep_previous_verdicts(session, rows, cause=cause, now=now)
    table = Reading.__table__
    values = {
        "level": bindparam("level"),
        "direction": bindparam("direction"),
        "basis_id": bindparam("basis"),
    }
    if "state" in rows[0]:
        values |= {"state": bindparam("state"), "invalid_reason": bindparam("invalid")}
    session.connection().execute(
        # event_time is implied by the key, but lets PostgreSQL go to one month's partition
        update(table)
        .where(
            table.c.monitor_id == bindparam("m"),
            table.c.seq == bindparam("s"),
            table.c.channel == bindparam("c"),
            table.c.event_time == bindparam("t"),
        )
        .values(**values),
        rows,
    )


def verdict_history(
    session: Session, monitor_id: int, *, start: datetime | None = None, end: datetime | None = None
) -> list[ReadingVerdict]:
    """Previous verdicts of a monitor's readings, oldest reading first."""
    query = select(ReadingVerdict).where(ReadingVerdict.monitor_id == monitor_id)
    if start is not None:
        query = query.where(ReadingVerdict.event_time >= start)
    if end is not None:
        query = query.where(ReadingVerdict.event_time < end)
    return list(
        session.exec(query.order_by(ReadingVerdict.event_time, ReadingVerdict.channel, ReadingVerdict.id))
    )


class MonitorStatusEvent(SQLModel, table=True):
    """Retained ``online|offline`` messages (and last wills) as received."""

    __tablename__ = "monitor_status_event"

    id: int | None = Field(default=None, primary_key=True)
    monitor_id: int = Field(foreign_key="monitor.id", index=True)
    online: bool
    received_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
