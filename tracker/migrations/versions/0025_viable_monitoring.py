"""viable (microbial) monitoring: samples and their lifecycle, viable excursions without a
monitor, conditional release and its post-release viable review (issue 18)

Revision ID: 0025
Revises: 0024
Create Date: 2026-12-06 08:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import tracker.core.db

revision: str = "0025"
down_revision: str | None = "0024"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_str = sqlmodel.sql.sqltypes.AutoString
_time = tracker.core.db.UTCDateTime


def upgrade() -> None:
    op.create_table(
        "viable_sample",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("code", _str(length=40), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("room_id", sa.Integer(), nullable=False),
        sa.Column("location", _str(length=60), nullable=False),
        sa.Column("grade", _str(length=3), nullable=False),
        sa.Column("method", _str(length=10), nullable=False),
        sa.Column("frequency", _str(length=10), nullable=False),
        sa.Column("status", _str(length=12), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("batch_id", sa.Integer(), nullable=True),
        sa.Column("step_id", sa.Integer(), nullable=True),
        sa.Column("session_key", _str(length=40), nullable=False),
        sa.Column("planned_for", _time(), nullable=False),
        sa.Column("planned_by", _str(length=60), nullable=False),
        sa.Column("planned_at", _time(), nullable=False),
        sa.Column("air_volume_l", sa.Float(), nullable=True),
        sa.Column("exposure_min", sa.Float(), nullable=True),
        sa.Column("taken_by", _str(length=60), nullable=True),
        sa.Column("taken_at", _time(), nullable=True),
        sa.Column("media_lot", _str(length=60), nullable=True),
        sa.Column("exposure_start", _time(), nullable=True),
        sa.Column("exposure_end", _time(), nullable=True),
        sa.Column("incubator", _str(length=60), nullable=True),
        sa.Column("incubation_by", _str(length=60), nullable=True),
        sa.Column("incubation_start", _time(), nullable=True),
        sa.Column("read_due", _time(), nullable=True),
        sa.Column("count", sa.Integer(), nullable=True),
        sa.Column("read_by", _str(length=60), nullable=True),
        sa.Column("read_at", _time(), nullable=True),
        sa.Column("verified_by", _str(length=60), nullable=True),
        sa.Column("verified_at", _time(), nullable=True),
        sa.Column("judged_value", sa.Float(), nullable=True),
        sa.Column("limit_value", sa.Float(), nullable=True),
        sa.Column("verdict", _str(length=16), nullable=True),
        sa.Column("organism", _str(length=200), nullable=True),
        sa.Column("id_method", _str(length=100), nullable=True),
        sa.Column("identified_by", _str(length=60), nullable=True),
        sa.Column("identified_at", _time(), nullable=True),
        sa.Column("closed_by", _str(length=60), nullable=True),
        sa.Column("closed_at", _time(), nullable=True),
        sa.Column("void_reason", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["site_id"], ["site.id"], name=op.f("fk_viable_sample_site_id_site")),
        sa.ForeignKeyConstraint(["room_id"], ["room.id"], name=op.f("fk_viable_sample_room_id_room")),
        sa.ForeignKeyConstraint(["batch_id"], ["batch.id"], name=op.f("fk_viable_sample_batch_id_batch")),
        sa.ForeignKeyConstraint(
            ["step_id"], ["process_step.id"], name=op.f("fk_viable_sample_step_id_process_step")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_viable_sample")),
        sa.UniqueConstraint("code", name=op.f("uq_viable_sample_code")),
    )
    with op.batch_alter_table("viable_sample", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_viable_sample_site_id"), ["site_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_viable_sample_room_id"), ["room_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_viable_sample_status"), ["status"], unique=False)
        batch_op.create_index(batch_op.f("ix_viable_sample_batch_id"), ["batch_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_viable_sample_step_id"), ["step_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_viable_sample_read_due"), ["read_due"], unique=False)
        batch_op.create_index("ix_viable_sample_location_time", ["location", "planned_for"], unique=False)

    # a viable result is an excursion without a monitor: the sample names where it was taken
    with op.batch_alter_table("excursion", schema=None) as batch_op:
        batch_op.alter_column("monitor_id", existing_type=sa.Integer(), nullable=True)
        batch_op.add_column(sa.Column("viable_sample_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_excursion_viable_sample_id_viable_sample"),
            "viable_sample",
            ["viable_sample_id"],
            ["id"],
        )
        batch_op.create_index(batch_op.f("ix_excursion_viable_sample_id"), ["viable_sample_id"], unique=False)

    with op.batch_alter_table("batch", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("conditional_release", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.add_column(sa.Column("conditional_reason", sa.Text(), nullable=True))

    op.create_table(
        "viable_release_review",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("batch_id", sa.Integer(), nullable=False),
        sa.Column("outcome", _str(length=20), nullable=False),
        sa.Column("deviation_id", sa.Integer(), nullable=True),
        sa.Column("patient_impact", sa.Text(), nullable=True),
        sa.Column("patient_informed", sa.Text(), nullable=True),
        sa.Column("assessment", sa.Text(), nullable=False),
        sa.Column("reviewed_by", _str(length=60), nullable=False),
        sa.Column("reviewed_at", _time(), nullable=False),
        sa.Column("results", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["batch_id"], ["batch.id"], name=op.f("fk_viable_release_review_batch_id_batch")
        ),
        sa.ForeignKeyConstraint(
            ["deviation_id"], ["deviation.id"], name=op.f("fk_viable_release_review_deviation_id_deviation")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_viable_release_review")),
    )
    with op.batch_alter_table("viable_release_review", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_viable_release_review_batch_id"), ["batch_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("viable_release_review", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_viable_release_review_batch_id"))
    op.drop_table("viable_release_review")
    with op.batch_alter_table("batch", schema=None) as batch_op:
        batch_op.drop_column("conditional_reason")
        batch_op.drop_column("conditional_release")
    with op.batch_alter_table("excursion", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_excursion_viable_sample_id"))
        batch_op.drop_constraint(
            batch_op.f("fk_excursion_viable_sample_id_viable_sample"), type_="foreignkey"
        )
        batch_op.drop_column("viable_sample_id")
        batch_op.alter_column("monitor_id", existing_type=sa.Integer(), nullable=False)
    with op.batch_alter_table("viable_sample", schema=None) as batch_op:
        for name in ("site_id", "room_id", "status", "batch_id", "step_id", "read_due"):
            batch_op.drop_index(batch_op.f(f"ix_viable_sample_{name}"))
        batch_op.drop_index("ix_viable_sample_location_time")
    op.drop_table("viable_sample")
