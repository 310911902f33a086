"""device input paths: ``device_event`` (Sparkplug gaps, rebirths, deaths; Modbus outages and
backfill) for docs/devices.md

Numbered 0030 on a branch; the lead renumbers it at merge.

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-06 08:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import tracker.core.db

revision: str = "0022"
down_revision: str | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "device_event",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", tracker.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("source", sqlmodel.sql.sqltypes.AutoString(length=300), nullable=False),
        sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("monitor_code", sqlmodel.sql.sqltypes.AutoString(length=60), nullable=True),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_device_event")),
    )
    with op.batch_alter_table("device_event", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_device_event_at"), ["at"], unique=False)
        batch_op.create_index(batch_op.f("ix_device_event_kind"), ["kind"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("device_event", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_device_event_kind"))
        batch_op.drop_index(batch_op.f("ix_device_event_at"))
    op.drop_table("device_event")
