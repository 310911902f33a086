"""fill ingest_state's newest reading (event and receipt time) from the stored readings

Migration 0008 created ``ingest_state`` with ``last_event_at`` only and ``last_received_at``
NULL; the silence check (``tracker.monitoring.rules.gaps``) needs both, so a monitor that went quiet before the
upgrade was watched again only once it reported. This fills, where they are NULL, each
monitor's newest reading by event time and the receipt time of its message (``raw_message``),
and creates the rows of monitors with readings that have none. Data only: the schema is
unchanged. A per-monitor max over ``reading`` (partitioned by month on PostgreSQL) is a scan
of each monitor's index range, paid once.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-23 06:40:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # monitors with readings but no row (0008 made rows only for what it found)
    op.execute(
        "INSERT INTO ingest_state (monitor_id, version, writer) "
        "SELECT m.id, 0, '' FROM monitor m "
        "WHERE NOT EXISTS (SELECT 1 FROM ingest_state s WHERE s.monitor_id = m.id) "
        "AND EXISTS (SELECT 1 FROM reading r WHERE r.monitor_id = m.id)"
    )
    op.execute(
        "UPDATE ingest_state SET last_event_at = ("
        "SELECT MAX(r.event_time) FROM reading r WHERE r.monitor_id = ingest_state.monitor_id) "
        "WHERE last_event_at IS NULL"
    )
    # the receipt time of that newest reading's message, as the ingester records it
    # (tracker.monitoring.ingest_state.WriterGuard.record_latest); the latest receipt when several share it
    op.execute(
        "UPDATE ingest_state SET last_received_at = ("
        "SELECT MAX(m.received_at) FROM reading r JOIN raw_message m "
        "ON m.monitor_id = r.monitor_id AND m.seq = r.seq "
        "WHERE r.monitor_id = ingest_state.monitor_id AND r.event_time = ingest_state.last_event_at) "
        "WHERE last_received_at IS NULL AND last_event_at IS NOT NULL"
    )


def downgrade() -> None:
    # nothing to undo: the values filled are what the ingester would have written, and 0009's
    # schema holds them as they are
    pass
