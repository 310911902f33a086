"""keyed seals: the key that sealed each audit event and signature

``audit_event.key_id`` and ``signature.key_id`` name the site key (``tracker.core.keys``) whose
HMAC-SHA256 is in ``hash`` / ``seal``. Rows written before this revision keep their plain
SHA-256 and an empty ``key_id``; the chain accepts no unkeyed event after a keyed one.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06 05:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    for table in ("audit_event", "signature"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(
                sa.Column(
                    "key_id", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False, server_default=""
                )
            )


def downgrade() -> None:
    for table in ("signature", "audit_event"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("key_id")
