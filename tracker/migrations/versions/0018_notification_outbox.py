"""notification_outbox and notification_attempt: alarms that reach people (issue 16)

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-06 05:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import tracker.core.db

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_str = sqlmodel.sql.sqltypes.AutoString


def upgrade() -> None:
    op.create_table(
        "notification_outbox",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", _str(length=255), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("excursion_id", sa.Integer(), nullable=False),
        sa.Column("rule", _str(length=120), nullable=False),
        sa.Column("step", _str(length=20), nullable=False),
        sa.Column("level", _str(length=16), nullable=False),
        sa.Column("target", sa.Text(), nullable=False),
        sa.Column("status", _str(length=12), nullable=False),
        sa.Column("due_at", tracker.core.db.UTCDateTime(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("sent_at", tracker.core.db.UTCDateTime(), nullable=True),
        sa.Column("created_at", tracker.core.db.UTCDateTime(), nullable=False),
        sa.Column("repeat_every_s", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["excursion_id"], ["excursion.id"], name=op.f("fk_notification_outbox_excursion_id_excursion")
        ),
        sa.ForeignKeyConstraint(["site_id"], ["site.id"], name=op.f("fk_notification_outbox_site_id_site")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notification_outbox")),
        sa.UniqueConstraint("key", name=op.f("uq_notification_outbox_key")),
    )
    with op.batch_alter_table("notification_outbox", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_notification_outbox_excursion_id"), ["excursion_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_notification_outbox_status"), ["status"], unique=False)
    op.create_table(
        "notification_attempt",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("outbox_id", sa.Integer(), nullable=False),
        sa.Column("rule", _str(length=120), nullable=False),
        sa.Column("target", sa.Text(), nullable=False),
        sa.Column("at", tracker.core.db.UTCDateTime(), nullable=False),
        sa.Column("outcome", _str(length=12), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["outbox_id"],
            ["notification_outbox.id"],
            name=op.f("fk_notification_attempt_outbox_id_notification_outbox"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notification_attempt")),
    )
    with op.batch_alter_table("notification_attempt", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_notification_attempt_outbox_id"), ["outbox_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("notification_attempt", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_notification_attempt_outbox_id"))
    op.drop_table("notification_attempt")
    with op.batch_alter_table("notification_outbox", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_notification_outbox_status"))
        batch_op.drop_index(batch_op.f("ix_notification_outbox_excursion_id"))
    op.drop_table("notification_outbox")
