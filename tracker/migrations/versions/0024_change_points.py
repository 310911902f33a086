"""change points: sustained level shifts of a series, detected by CUSUM and annotated by QA
(docs/trending.md); later control-chart baselines start at the latest one not dismissed

``change_point`` is new; ``predicted`` warnings need no schema change (an excursion type).
Numbered 0050 on the trending branch; renumbered when merged after 0021.

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-08 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import tracker.core.db

revision: str = "0024"
down_revision: str | None = "0023"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "change_point",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("monitor_id", sa.Integer(), nullable=False),
        sa.Column("channel", sqlmodel.sql.sqltypes.AutoString(length=8), nullable=False),
        sa.Column("at", tracker.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("detected_at", tracker.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("direction", sqlmodel.sql.sqltypes.AutoString(length=4), nullable=False),
        sa.Column("before", sa.Float(), nullable=False),
        sa.Column("after", sa.Float(), nullable=False),
        sa.Column("method", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=12), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("annotated_by", sqlmodel.sql.sqltypes.AutoString(length=60), nullable=True),
        sa.Column("annotated_at", tracker.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", tracker.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["monitor_id"], ["monitor.id"], name=op.f("fk_change_point_monitor_id_monitor")
        ),
        sa.ForeignKeyConstraint(["site_id"], ["site.id"], name=op.f("fk_change_point_site_id_site")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_change_point")),
        sa.UniqueConstraint(
            "monitor_id", "channel", "at", name=op.f("uq_change_point_monitor_id_channel_at")
        ),
    )
    with op.batch_alter_table("change_point", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_change_point_site_id"), ["site_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("change_point", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_change_point_site_id"))
    op.drop_table("change_point")
