"""system alarms, ingest heartbeats, alarm challenges and the dispatcher lease (issue 16 items 4, 5)

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-06 07:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import tracker.core.db

revision: str = "0023"
down_revision: str | None = "0022"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_str = sqlmodel.sql.sqltypes.AutoString
_time = tracker.core.db.UTCDateTime


def upgrade() -> None:
    op.create_table(
        "service_heartbeat",
        sa.Column("name", _str(length=120), nullable=False),
        sa.Column("kind", _str(length=20), nullable=False),
        sa.Column("beat_at", _time(), nullable=False),
        sa.Column("started_at", _time(), nullable=False),
        sa.Column("connected", sa.Boolean(), nullable=False),
        sa.Column("disconnected_since", _time(), nullable=True),
        sa.Column("oldest_pending_at", _time(), nullable=True),
        sa.Column("db_errors", sa.Integer(), nullable=False),
        sa.Column("last_db_error_at", _time(), nullable=True),
        sa.Column("last_db_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_service_heartbeat")),
    )
    op.create_table(
        "system_alarm",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("kind", _str(length=40), nullable=False),
        sa.Column("subject", _str(length=255), nullable=False),
        sa.Column("level", _str(length=16), nullable=False),
        sa.Column("status", _str(length=16), nullable=False),
        sa.Column("room_id", sa.Integer(), nullable=True),
        sa.Column("started_at", _time(), nullable=False),
        sa.Column("ended_at", _time(), nullable=True),
        sa.Column("last_seen_at", _time(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("acknowledged_by", _str(length=60), nullable=True),
        sa.Column("acknowledged_at", _time(), nullable=True),
        sa.Column("ack_comment", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["site_id"], ["site.id"], name=op.f("fk_system_alarm_site_id_site")),
        sa.ForeignKeyConstraint(["room_id"], ["room.id"], name=op.f("fk_system_alarm_room_id_room")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_system_alarm")),
    )
    with op.batch_alter_table("system_alarm", schema=None) as batch_op:
        batch_op.create_index("ix_system_alarm_condition", ["kind", "subject", "status"], unique=False)
        batch_op.create_index(batch_op.f("ix_system_alarm_site_id"), ["site_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_system_alarm_status"), ["status"], unique=False)
    op.create_table(
        "alarm_challenge",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("monitor_id", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("starts_at", _time(), nullable=False),
        sa.Column("ends_at", _time(), nullable=False),
        sa.Column("ended_at", _time(), nullable=True),
        sa.Column("started_by", _str(length=60), nullable=False),
        sa.Column("start_signature_id", sa.Integer(), nullable=True),
        sa.Column("record", sa.Text(), nullable=True),
        sa.Column("record_signature_id", sa.Integer(), nullable=True),
        sa.Column("created_at", _time(), nullable=False),
        sa.ForeignKeyConstraint(["site_id"], ["site.id"], name=op.f("fk_alarm_challenge_site_id_site")),
        sa.ForeignKeyConstraint(
            ["monitor_id"], ["monitor.id"], name=op.f("fk_alarm_challenge_monitor_id_monitor")
        ),
        sa.ForeignKeyConstraint(
            ["start_signature_id"],
            ["signature.id"],
            name=op.f("fk_alarm_challenge_start_signature_id_signature"),
        ),
        sa.ForeignKeyConstraint(
            ["record_signature_id"],
            ["signature.id"],
            name=op.f("fk_alarm_challenge_record_signature_id_signature"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alarm_challenge")),
    )
    with op.batch_alter_table("alarm_challenge", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_alarm_challenge_monitor_id"), ["monitor_id"], unique=False)
    with op.batch_alter_table("excursion", schema=None) as batch_op:
        batch_op.add_column(sa.Column("challenge_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_excursion_challenge_id_alarm_challenge"),
            "alarm_challenge",
            ["challenge_id"],
            ["id"],
        )
        batch_op.create_index(batch_op.f("ix_excursion_challenge_id"), ["challenge_id"], unique=False)
    with op.batch_alter_table("notification_outbox", schema=None) as batch_op:
        batch_op.alter_column("excursion_id", existing_type=sa.Integer(), nullable=True)
        batch_op.add_column(sa.Column("system_alarm_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("leased_by", _str(length=80), nullable=True))
        batch_op.add_column(sa.Column("lease_until", _time(), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_notification_outbox_system_alarm_id_system_alarm"),
            "system_alarm",
            ["system_alarm_id"],
            ["id"],
        )
        batch_op.create_index(
            batch_op.f("ix_notification_outbox_system_alarm_id"), ["system_alarm_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("notification_outbox", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_notification_outbox_system_alarm_id"))
        batch_op.drop_constraint(
            batch_op.f("fk_notification_outbox_system_alarm_id_system_alarm"), type_="foreignkey"
        )
        batch_op.drop_column("lease_until")
        batch_op.drop_column("leased_by")
        batch_op.drop_column("system_alarm_id")
        batch_op.alter_column("excursion_id", existing_type=sa.Integer(), nullable=False)
    with op.batch_alter_table("excursion", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_excursion_challenge_id"))
        batch_op.drop_constraint(batch_op.f("fk_excursion_challenge_id_alarm_challenge"), type_="foreignkey")
        batch_op.drop_column("challenge_id")
    with op.batch_alter_table("alarm_challenge", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_alarm_challenge_monitor_id"))
    op.drop_table("alarm_challenge")
    with op.batch_alter_table("system_alarm", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_system_alarm_status"))
        batch_op.drop_index(batch_op.f("ix_system_alarm_site_id"))
        batch_op.drop_index("ix_system_alarm_condition")
    op.drop_table("system_alarm")
    op.drop_table("service_heartbeat")
