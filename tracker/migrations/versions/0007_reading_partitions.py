"""readings partitioned by month on PostgreSQL; 64-bit seq

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-23 03:10:00.000000

On PostgreSQL ``reading`` becomes a table RANGE-partitioned on ``event_time``: one partition
per UTC calendar month (``reading_y2026m11``) and a DEFAULT partition as a safety net for rows
whose month has no partition yet. A query over a month or a year (rollup verification,
level proposals, charts, re-evaluation windows) then reads only those months' partitions,
and a month past its retention can be detached and archived whole. On SQLite this revision
does nothing: one file per site stays small enough, and SQLite has no partitioning.

Keys. PostgreSQL requires the partition key in every unique constraint of a partitioned
table, so the primary key becomes (monitor_id, seq, channel, event_time). Uniqueness of
(monitor_id, seq) — the identity that absorbs duplicates and redeliveries exactly once — is
still guaranteed by ``raw_message``'s primary key: every reading row is inserted in the same
transaction as the raw message it comes from (``tracker.monitoring.intake``), and that message's one
event time is the rows' event time, so a second (monitor, seq, channel) cannot exist.

``raw_message`` stays unpartitioned: it has no event time (the payload's time is parsed,
not stored as a column), and it is the table whose primary key enforces (monitor, seq)
across all time. Partitioned on anything time-like, that key would have to include the
partition column and would only be unique within a partition: a redelivered or reused seq
stamped in another month would slip past it. It is never scanned by time (reports read the
hourly rollups; the ingester looks up keys), so a single B-tree keyed by (monitor, seq)
is what it needs.

Partitions are created here for every month that already holds readings and for the
current month and the next three; afterwards the ingester creates the month of each
reading it stores before inserting (``tracker.core.partitions.PartitionKeeper``) and
``tracker db upgrade`` / ``tracker db partitions --ensure`` create the months ahead.
PostgreSQL refuses to create a partition for a range of which the DEFAULT partition holds
rows; ``tracker.core.partitions.ensure_months`` moves such rows into the new partition first.
A BRIN index on ``event_time`` (a few pages per month, readings arrive in time order)
serves whole-site time windows; the series index serves per-monitor windows.

``seq`` becomes BIGINT in ``raw_message`` and ``reading``: the wire contract accepts any
64-bit sequence number (monitors that count milliseconds exceed 2³¹), which SQLite's INTEGER
always stored and PostgreSQL's 32-bit ``integer`` refused. On SQLite nothing changes.
"""

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MONTHS_AHEAD = 3


def _month(value: datetime) -> datetime:
    value = value.astimezone(UTC)
    return datetime(value.year, value.month, 1, tzinfo=UTC)


def _next(month: datetime) -> datetime:
    return datetime(month.year + month.month // 12, month.month % 12 + 1, 1, tzinfo=UTC)


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    op.execute("ALTER TABLE raw_message ALTER COLUMN seq TYPE bigint")
    op.execute("ALTER TABLE reading RENAME TO reading_unpartitioned")
    op.execute("ALTER TABLE reading_unpartitioned RENAME CONSTRAINT pk_reading TO pk_reading_unpartitioned")
    op.execute("ALTER INDEX ix_reading_series_time RENAME TO ix_reading_unpartitioned_series_time")
    op.execute(
        "ALTER TABLE reading_unpartitioned RENAME CONSTRAINT fk_reading_monitor_id_monitor "
        "TO fk_reading_unpartitioned_monitor"
    )
    op.execute(
        "ALTER TABLE reading_unpartitioned RENAME CONSTRAINT fk_reading_basis_id_evaluation_basis "
        "TO fk_reading_unpartitioned_basis"
    )

    # same columns in the same order (INSERT … SELECT * below relies on it)
    op.execute(
        "CREATE TABLE reading (LIKE reading_unpartitioned INCLUDING DEFAULTS INCLUDING CONSTRAINTS) "
        "PARTITION BY RANGE (event_time)"
    )
    op.execute("ALTER TABLE reading ALTER COLUMN seq TYPE bigint")
    op.execute(
        "ALTER TABLE reading ADD CONSTRAINT pk_reading PRIMARY KEY (monitor_id, seq, channel, event_time)"
    )
    op.execute(
        "ALTER TABLE reading ADD CONSTRAINT fk_reading_monitor_id_monitor "
        "FOREIGN KEY (monitor_id) REFERENCES monitor (id)"
    )
    op.execute(
        "ALTER TABLE reading ADD CONSTRAINT fk_reading_basis_id_evaluation_basis "
        "FOREIGN KEY (basis_id) REFERENCES evaluation_basis (id)"
    )
    op.execute("CREATE INDEX ix_reading_series_time ON reading (monitor_id, channel, event_time)")
    op.execute("CREATE INDEX ix_reading_event_time_brin ON reading USING brin (event_time)")
    op.execute("CREATE TABLE reading_default PARTITION OF reading DEFAULT")

    months: set[datetime] = set()
    for (first,) in bind.execute(
        sa.text(
            "SELECT DISTINCT date_trunc('month', event_time AT TIME ZONE 'UTC') FROM reading_unpartitioned"
        )
    ):
        months.add(first.replace(tzinfo=UTC))
    month = _month(datetime.now(UTC))
    for _ in range(MONTHS_AHEAD + 1):
        months.add(month)
        month = _next(month)
    for month in sorted(months):
        name = f"reading_y{month.year:04d}m{month.month:02d}"
        op.execute(
            f"CREATE TABLE {name} PARTITION OF reading "
            f"FOR VALUES FROM ('{month.isoformat()}') TO ('{_next(month).isoformat()}')"
        )

    op.execute("INSERT INTO reading SELECT * FROM reading_unpartitioned")
    op.execute("DROP TABLE reading_unpartitioned")


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    op.execute("CREATE TABLE reading_unpartitioned (LIKE reading INCLUDING DEFAULTS INCLUDING CONSTRAINTS)")
    op.execute("INSERT INTO reading_unpartitioned SELECT * FROM reading")
    op.execute("DROP TABLE reading")  # the partitions go with it
    op.execute("ALTER TABLE reading_unpartitioned RENAME TO reading")
    op.execute("ALTER TABLE reading ADD CONSTRAINT pk_reading PRIMARY KEY (monitor_id, seq, channel)")
    op.execute(
        "ALTER TABLE reading ADD CONSTRAINT fk_reading_monitor_id_monitor "
        "FOREIGN KEY (monitor_id) REFERENCES monitor (id)"
    )
    op.execute(
        "ALTER TABLE reading ADD CONSTRAINT fk_reading_basis_id_evaluation_basis "
        "FOREIGN KEY (basis_id) REFERENCES evaluation_basis (id)"
    )
    op.execute("CREATE INDEX ix_reading_series_time ON reading (monitor_id, channel, event_time)")
    op.execute("ALTER TABLE reading ALTER COLUMN seq TYPE integer")
    op.execute("ALTER TABLE raw_message ALTER COLUMN seq TYPE integer")
