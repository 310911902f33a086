"""revocable API tokens; the size of each quarantined payload as received

``api_token`` keeps the SHA-256 of each token with its owner, expiry and revocation (issue 15:
tokens revocable, revoked at logout). ``quarantined_message.payload_size`` is the number of
bytes received: a payload over the size limit is kept as a bounded prefix, and its size and
digest (``payload_sha256``, over the whole message) say what arrived. Existing rows hold their
whole payload: their size is its length.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-08 09:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import tracker.core.db

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "api_token",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("password_fp", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("created_at", tracker.core.db.UTCDateTime(), nullable=False),
        sa.Column("expires_at", tracker.core.db.UTCDateTime(), nullable=False),
        sa.Column("client", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("revoked_at", tracker.core.db.UTCDateTime(), nullable=True),
        sa.Column("revoked_by", sqlmodel.sql.sqltypes.AutoString(length=60), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["app_user.id"], name=op.f("fk_api_token_user_id_app_user")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_token")),
    )
    with op.batch_alter_table("api_token", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_api_token_token_hash"), ["token_hash"], unique=True)
        batch_op.create_index(batch_op.f("ix_api_token_user_id"), ["user_id"], unique=False)
    with op.batch_alter_table("quarantined_message", schema=None) as batch_op:
        batch_op.add_column(sa.Column("payload_size", sa.Integer(), nullable=True))
    op.execute("UPDATE quarantined_message SET payload_size = length(payload)")
    with op.batch_alter_table("quarantined_message", schema=None) as batch_op:
        batch_op.alter_column("payload_size", existing_type=sa.Integer(), nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("quarantined_message", schema=None) as batch_op:
        batch_op.drop_column("payload_size")
    with op.batch_alter_table("api_token", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_api_token_user_id"))
        batch_op.drop_index(batch_op.f("ix_api_token_token_hash"))
    op.drop_table("api_token")
