"""released batches keep listening: the registered environmental picture, post-release events
and QA's signed assessments of them

``batch`` gains ``env_hash`` and ``env_picture`` (empty for batches released before: the
watcher's first look registers their picture as it stands, without an event);
``post_release_assessment`` and ``post_release_event`` are new.

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-07 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import tracker.core.db

revision: str = "0021"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "batch",
        sa.Column("env_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False, server_default=""),
    )
    op.add_column("batch", sa.Column("env_picture", sa.Text(), nullable=True))
    op.create_table(
        "post_release_assessment",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("batch_id", sa.Integer(), nullable=False),
        sa.Column("outcome", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
        sa.Column("deviation_id", sa.Integer(), nullable=True),
        sa.Column("assessment", sa.Text(), nullable=False),
        sa.Column("assessed_by", sqlmodel.sql.sqltypes.AutoString(length=60), nullable=False),
        sa.Column("assessed_at", tracker.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("picture_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("picture", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["batch_id"], ["batch.id"], name=op.f("fk_post_release_assessment_batch_id_batch")
        ),
        sa.ForeignKeyConstraint(
            ["deviation_id"], ["deviation.id"], name=op.f("fk_post_release_assessment_deviation_id_deviation")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_post_release_assessment")),
    )
    with op.batch_alter_table("post_release_assessment", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_post_release_assessment_batch_id"), ["batch_id"], unique=False)
    op.create_table(
        "post_release_event",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("batch_id", sa.Integer(), nullable=False),
        sa.Column("raised_at", tracker.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("raised_by", sqlmodel.sql.sqltypes.AutoString(length=60), nullable=False),
        sa.Column("changes", sa.Text(), nullable=False),
        sa.Column("kinds", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("previous_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("picture_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("picture", sa.Text(), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
        sa.Column("assessment_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["assessment_id"],
            ["post_release_assessment.id"],
            name=op.f("fk_post_release_event_assessment_id_post_release_assessment"),
        ),
        sa.ForeignKeyConstraint(
            ["batch_id"], ["batch.id"], name=op.f("fk_post_release_event_batch_id_batch")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_post_release_event")),
    )
    with op.batch_alter_table("post_release_event", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_post_release_event_batch_id"), ["batch_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_post_release_event_status"), ["status"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("post_release_event", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_post_release_event_status"))
        batch_op.drop_index(batch_op.f("ix_post_release_event_batch_id"))
    op.drop_table("post_release_event")
    with op.batch_alter_table("post_release_assessment", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_post_release_assessment_batch_id"))
    op.drop_table("post_release_assessment")
    with op.batch_alter_table("batch", schema=None) as batch_op:
        batch_op.drop_column("env_picture")
        batch_op.drop_column("env_hash")
