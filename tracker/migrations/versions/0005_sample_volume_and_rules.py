"""sampled volume per reading; per-facility rule settings

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23 00:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # readings stored before this revision keep NULL: the rules fall back to the monitor's
    # registered sample volume for them (docs/limits.md)
    with op.batch_alter_table("reading", schema=None) as batch_op:
        batch_op.add_column(sa.Column("sample_volume_l", sa.Float(), nullable=True))
    with op.batch_alter_table("site", schema=None) as batch_op:
        batch_op.add_column(sa.Column("rolling_volume_m3", sa.Float(), nullable=False, server_default="1.0"))
        batch_op.add_column(sa.Column("recovery_s", sa.Float(), nullable=False, server_default="1200.0"))


def downgrade() -> None:
    with op.batch_alter_table("site", schema=None) as batch_op:
        batch_op.drop_column("recovery_s")
        batch_op.drop_column("rolling_volume_m3")
    with op.batch_alter_table("reading", schema=None) as batch_op:
        batch_op.drop_column("sample_volume_l")
