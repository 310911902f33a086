"""room-state changes under QA control: who superseded an excursion, why, with which signature

``excursion`` gains ``superseded_by``, ``superseded_reason`` and ``superseded_signature_id``;
``room_state_change`` gains ``approval_signature_id`` and ``affected_excursions`` (JSON ids),
so a correction that re-judged readings keeps QA's approval and what it touched.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06 04:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("excursion", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("superseded_by", sqlmodel.sql.sqltypes.AutoString(length=120), nullable=True)
        )
        batch_op.add_column(sa.Column("superseded_reason", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("superseded_signature_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_excursion_superseded_signature_id_signature"),
            "signature",
            ["superseded_signature_id"],
            ["id"],
        )
    with op.batch_alter_table("room_state_change", schema=None) as batch_op:
        batch_op.add_column(sa.Column("approval_signature_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("affected_excursions", sa.Text(), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_room_state_change_approval_signature_id_signature"),
            "signature",
            ["approval_signature_id"],
            ["id"],
        )


def downgrade() -> None:
    with op.batch_alter_table("room_state_change", schema=None) as batch_op:
        batch_op.drop_constraint(
            batch_op.f("fk_room_state_change_approval_signature_id_signature"), type_="foreignkey"
        )
        batch_op.drop_column("affected_excursions")
        batch_op.drop_column("approval_signature_id")
    with op.batch_alter_table("excursion", schema=None) as batch_op:
        batch_op.drop_constraint(
            batch_op.f("fk_excursion_superseded_signature_id_signature"), type_="foreignkey"
        )
        batch_op.drop_column("superseded_signature_id")
        batch_op.drop_column("superseded_reason")
        batch_op.drop_column("superseded_by")
