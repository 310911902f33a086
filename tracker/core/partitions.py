"""Monthly partitions of ``reading`` on PostgreSQL: list them, create the months data needs.

Migration 0007 makes ``reading`` a table RANGE-partitioned on ``event_time`` (UTC calendar
months, ``reading_yYYYYmMM``) with a DEFAULT partition as a safety net, so that a query over
a month or a year reads only those months' partitions and old months can later be moved to
cheaper storage or detached whole. Rows must find their month's partition when they arrive:

* the ingester's :class:`PartitionKeeper` creates the month of every reading it is about to
  store, the first time it sees that month, in a short transaction of its own just before
  the batch's (a set lookup per batch afterwards);
* ``tracker db upgrade`` and ``tracker db partitions --ensure`` create the coming months.

A partition is created as a plain table and then ATTACHed: ``CREATE TABLE … PARTITION OF``
would take an ACCESS EXCLUSIVE lock on the whole ``reading`` table, ATTACH only a SHARE
UPDATE EXCLUSIVE one (readers and writers of other months go on). PostgreSQL refuses to
attach a range for which the DEFAULT partition holds rows, so those rows are moved into the
new partition first, in the same transaction (moved, not deleted: the record is unchanged).
SQLite has no partitions; every function here is then a no-op.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import SQLAlchemyError

log = logging.getLogger(__name__)
PARENT = "reading"
#: serialises partition creation between ingest workers (pg_advisory_xact_lock key)
LOCK_KEY = 0x7472_6B70_6172_7431  # "trkpart1"
_BOUND = re.compile(r"FROM \('([^']+)'\) TO \('([^']+)'\)")


@dataclass(frozen=True, slots=True)
class Partition:
    name: str
    start: datetime | None  # None for the DEFAULT partition
    end: datetime | None
    rows: int | None  # planner estimate (exact for DEFAULT); None if never analysed

    @property
    def is_default(self) -> bool:
        return self.start is None


def month_start(value: datetime) -> datetime:
    """First instant of ``value``'s UTC calendar month."""
    value = value.astimezone(UTC)
    return datetime(value.year, value.month, 1, tzinfo=UTC)


def add_months(month: datetime, n: int) -> datetime:
    index = month.year * 12 + month.month - 1 + n
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


def partition_name(month: datetime) -> str:
    return f"{PARENT}_y{month.year:04d}m{month.month:02d}"


def is_partitioned(connection: Connection) -> bool:
    """Whether ``reading`` is a partitioned table here (PostgreSQL after migration 0007)."""
    if connection.dialect.name != "postgresql":
        return False
    kind = connection.execute(
        text("SELECT c.relkind FROM pg_class c WHERE c.oid = to_regclass(:t)"), {"t": PARENT}
    ).scalar()
    return kind == "p"


def _timestamp(value: str) -> datetime:
    """A bound as PostgreSQL prints it (session time zone, ``+08`` style offsets) → aware UTC."""
    value = re.sub(r"([+-]\d\d)$", r"\1:00", value.strip())
    return datetime.fromisoformat(value).astimezone(UTC)


def list_partitions(connection: Connection) -> list[Partition]:
    """The partitions of ``reading``, months in order, DEFAULT last."""
    if not is_partitioned(connection):
        return []
    rows = connection.execute(
        text(
            "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid), c.reltuples::bigint, "
            "       c.oid = p.partdefid "
            "FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "JOIN pg_partitioned_table p ON p.partrelid = i.inhparent "
            "WHERE i.inhparent = to_regclass(:t)"
        ),
        {"t": PARENT},
    ).all()
    months, default = [], []
    for name, bound, estimate, is_default in rows:
        if is_default:
            exact = connection.exec_driver_sql(f'SELECT count(*) FROM "{name}"').scalar()
            default.append(Partition(name, None, None, int(exact)))
            continue
        found = _BOUND.search(bound)
        if found is None:  # not one of ours (e.g. MINVALUE bounds): listed without a range
            months.append(Partition(name, None, None, None))
            continue
        rows_estimate = int(estimate) if estimate is not None and estimate >= 0 else None
        months.append(Partition(name, _timestamp(found.group(1)), _timestamp(found.group(2)), rows_estimate))
    months.sort(key=lambda p: (p.start is None, p.start or datetime.min.replace(tzinfo=UTC)))
    return months + default


def ensure_months(connection: Connection, months: Iterable[datetime]) -> list[str]:
    """Create the partitions of the given months that no partition covers yet; their names.

    Runs in the caller's transaction (the caller commits). Concurrent callers are serialised
    by an advisory lock and see each other's committed partitions, so a month is never
    created twice.
    """
    wanted = sorted({month_start(m) for m in months})
    if not wanted or not is_partitioned(connection):
        return []
    connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": LOCK_KEY})
    existing = list_partitions(connection)
    covered = [(p.start, p.end) for p in existing if p.start is not None]
    default = next((p.name for p in existing if p.is_default), None)
    created = []
    for month in wanted:
        end = add_months(month, 1)
        if any(start <= month and end <= stop for start, stop in covered):
            continue
        if any(start < end and month < stop for start, stop in covered):
            raise RuntimeError(
                f"a partition of {PARENT} overlaps {month:%Y-%m} partly; "
                "create this month's partition by hand"
            )
        name = partition_name(month)
        lo, hi = f"'{month.isoformat()}'", f"'{end.isoformat()}'"
        connection.exec_driver_sql(
            f'CREATE TABLE "{name}" (LIKE "{PARENT}" INCLUDING DEFAULTS INCLUDING CONSTRAINTS)'
        )
        if default is not None:
            # rows that arrived before their month existed: PostgreSQL refuses to attach a
            # range the DEFAULT partition holds rows of, so they move with the new partition
            connection.exec_driver_sql(
                f'WITH moved AS (DELETE FROM "{default}" WHERE event_time >= {lo} '
                f"AND event_time < {hi} RETURNING *) "
                f'INSERT INTO "{name}" SELECT * FROM moved'
            )
        connection.exec_driver_sql(
            f'ALTER TABLE "{PARENT}" ATTACH PARTITION "{name}" FOR VALUES FROM ({lo}) TO ({hi})'
        )
        covered.append((month, end))
        created.append(name)
    return created


def ensure_ahead(connection: Connection, *, now: datetime, months: int = 3) -> list[str]:
    """This month's partition and the next ``months`` ones (run by ``tracker db upgrade``)."""
    first = month_start(now)
    return ensure_months(connection, [add_months(first, i) for i in range(months + 1)])


def ensure_strays(connection: Connection) -> list[str]:
    """Partitions for the months of rows that landed in the DEFAULT partition (moving them)."""
    default = next((p for p in list_partitions(connection) if p.is_default), None)
    if default is None or not default.rows:
        return []
    months = (
        connection.exec_driver_sql(
            f"SELECT DISTINCT date_trunc('month', event_time AT TIME ZONE 'UTC') FROM \"{default.name}\""
        )
        .scalars()
        .all()
    )
    return ensure_months(connection, [m.replace(tzinfo=UTC) for m in months])


class PartitionKeeper:
    """The ingester's memory of which months already have a partition.

    ``cover`` costs a set of (year, month) per batch; only a month not seen before in this
    process goes to the database, in a short transaction of its own committed *before* the
    batch's: ATTACH holds a lock on the DEFAULT partition until commit, and inside a batch
    that lock would be held while the batch waits for another worker's monitor rows, which
    may in turn be reading DEFAULT (a deadlock). It is best effort: a month whose partition
    cannot be made now (no privilege, a hand-made overlapping partition) is logged and its
    readings go to DEFAULT, stored and judged like any other; ``tracker db partitions
    --ensure`` moves them once the cause is fixed. Refusing the batch instead would have
    quarantined a month of valid readings.
    """

    def __init__(self) -> None:
        self.known: set[tuple[int, int]] = set()
        self.enabled: bool | None = None

    def cover(self, engine: Engine, times: Iterable[datetime]) -> list[str]:
        """Make sure a partition exists for the month of each of ``times`` (aware datetimes)."""
        if self.enabled is False:
            return []
        months = {(t.year, t.month) for t in (t if t.tzinfo is UTC else t.astimezone(UTC) for t in times)}
        missing = months - self.known
        if not missing:
            return []
        if self.enabled is None and engine.dialect.name != "postgresql":
            self.enabled = False
            return []
        try:
            with engine.begin() as connection:
                if self.enabled is None:
                    self.enabled = is_partitioned(connection)
                created = (
                    ensure_months(connection, [datetime(y, m, 1, tzinfo=UTC) for y, m in missing])
                    if self.enabled
                    else []
                )
        except (SQLAlchemyError, RuntimeError) as exc:
            log.warning(
                "could not create the partitions of %s for months %s (%s): their "
                "readings go to the DEFAULT partition; run `tracker db partitions "
                "--ensure` once this is fixed",
                PARENT,
                sorted(missing),
                exc,
            )
            created = []
        self.known |= missing  # created, existing, or logged once: not retried every batch
        return created

    def forget(self) -> None:
        """Nothing to do after a rolled-back batch: partitions are committed on their own."""
