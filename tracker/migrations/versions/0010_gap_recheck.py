"""ingest state for several workers: deferred gap re-checks, the highest stored seq

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-23 07:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import tracker.core.db

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # NULL until a worker has looked the highest seq up once (then kept exact under the lock)
    with op.batch_alter_table("ingest_state", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("max_seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True)
        )
        batch_op.add_column(
            sa.Column("gap_recheck_from", tracker.core.db.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(
            sa.Column("gap_recheck_to", tracker.core.db.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(
            sa.Column("gap_recheck_due", tracker.core.db.UTCDateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("ingest_state", schema=None) as batch_op:
        batch_op.drop_column("gap_recheck_due")
        batch_op.drop_column("gap_recheck_to")
        batch_op.drop_column("gap_recheck_from")
        batch_op.drop_column("max_seq")
