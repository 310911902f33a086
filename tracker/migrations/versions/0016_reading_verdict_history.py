"""reading_verdict: the previous verdicts of re-judged readings, kept instead of overwritten

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06 05:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import tracker.core.db

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "reading_verdict",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("monitor_id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("channel", sqlmodel.sql.sqltypes.AutoString(length=8), nullable=False),
        sa.Column("event_time", tracker.core.db.UTCDateTime(), nullable=False),
        sa.Column("level", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("direction", sqlmodel.sql.sqltypes.AutoString(length=4), nullable=True),
        sa.Column("state", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("basis_id", sa.Integer(), nullable=False),
        sa.Column("invalid_reason", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=True),
        sa.Column("replaced_at", tracker.core.db.UTCDateTime(), nullable=False),
        sa.Column("cause", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["monitor_id"], ["monitor.id"], name=op.f("fk_reading_verdict_monitor_id_monitor")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reading_verdict")),
    )
    with op.batch_alter_table("reading_verdict", schema=None) as batch_op:
        batch_op.create_index("ix_reading_verdict_reading", ["monitor_id", "seq", "channel"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("reading_verdict", schema=None) as batch_op:
        batch_op.drop_index("ix_reading_verdict_reading")
    op.drop_table("reading_verdict")
