"""per-monitor ingest state for several ingest workers (scale-out)

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-23 03:20:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import tracker.core.db

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "ingest_state",
        sa.Column("monitor_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("writer", sqlmodel.sql.sqltypes.AutoString(length=120), nullable=False),
        sa.Column("last_event_at", tracker.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_received_at", tracker.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["monitor_id"], ["monitor.id"], name=op.f("fk_ingest_state_monitor_id_monitor")
        ),
        sa.PrimaryKeyConstraint("monitor_id", name=op.f("pk_ingest_state")),
    )
    # monitors ingested before this revision: their newest reading, so the silence check
    # (now read from this table) knows them from the first run
    op.execute(
        "INSERT INTO ingest_state (monitor_id, version, writer, last_event_at) "
        "SELECT monitor_id, 0, '', MAX(event_time) FROM reading GROUP BY monitor_id"
    )


def downgrade() -> None:
    op.drop_table("ingest_state")
