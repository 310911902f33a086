"""separation by person: accounts belong to persons, signing roles and enrolment take two people

``app_user`` gains ``person_id`` (filled with the user name: each existing account its own
person until an admin knows better — it is fixed at creation from now on), ``enrolled_at`` and
``enrolled_witness``. Accounts whose owner had already replaced the admin's password are
marked enrolled with the witness ``migration 0020`` (``tracker user list`` shows them; a reset
ends it like any enrolment). ``role_grant`` keeps signing roles asked for and not yet
approved; ``deviation_author`` every contributor to a deviation's root cause and impact
assessments (filled from the last writers stored so far); ``site`` gains the
``[separation] qa_reviewer_may_release`` policy.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-07 09:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import tracker.core.db

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MIGRATED = "migration 0020"


def _users() -> None:
    with op.batch_alter_table("app_user", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "person_id", sqlmodel.sql.sqltypes.AutoString(length=60), nullable=False, server_default=""
            )
        )
        batch_op.add_column(
            sa.Column("enrolled_at", tracker.core.db.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(
            sa.Column("enrolled_witness", sqlmodel.sql.sqltypes.AutoString(length=60), nullable=True)
        )
        batch_op.create_index(batch_op.f("ix_app_user_person_id"), ["person_id"], unique=False)
    op.execute("UPDATE app_user SET person_id = username")
    op.execute(
        "UPDATE app_user SET enrolled_at = password_changed_at, "
        f"enrolled_witness = '{MIGRATED}' WHERE must_change_password = false AND roles <> 'admin'"
    )
    op.create_table(
        "role_grant",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("roles", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("requested_by", sqlmodel.sql.sqltypes.AutoString(length=60), nullable=False),
        sa.Column("requested_by_person", sqlmodel.sql.sqltypes.AutoString(length=60), nullable=False),
        sa.Column("requested_at", tracker.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
        sa.Column("decided_by", sqlmodel.sql.sqltypes.AutoString(length=60), nullable=True),
        sa.Column("decided_at", tracker.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["app_user.id"], name=op.f("fk_role_grant_user_id_app_user")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_role_grant")),
    )
    with op.batch_alter_table("role_grant", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_role_grant_user_id"), ["user_id"], unique=False)


def _authors() -> None:
    op.create_table(
        "deviation_author",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("deviation_id", sa.Integer(), nullable=False),
        sa.Column("part", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("username", sqlmodel.sql.sqltypes.AutoString(length=60), nullable=False),
        sa.Column("person", sqlmodel.sql.sqltypes.AutoString(length=60), nullable=False),
        sa.Column("at", tracker.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["deviation_id"], ["deviation.id"], name=op.f("fk_deviation_author_deviation_id_deviation")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deviation_author")),
        sa.UniqueConstraint(
            "deviation_id", "part", "username", name=op.f("uq_deviation_author_deviation_id_part_username")
        ),
    )
    with op.batch_alter_table("deviation_author", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_deviation_author_deviation_id"), ["deviation_id"], unique=False)
    op.execute(
        "INSERT INTO deviation_author (deviation_id, part, username, person, at) "
        "SELECT id, 'root_cause', root_cause_by, root_cause_by, updated_at FROM deviation "
        "WHERE root_cause_by IS NOT NULL"
    )
    op.execute(
        "INSERT INTO deviation_author (deviation_id, part, username, person, at) "
        "SELECT deviation_id, 'impact:' || CAST(batch_id AS VARCHAR(20)), assessed_by, assessed_by, "
        "assessed_at FROM deviation_batch WHERE assessed_by IS NOT NULL"
    )


def upgrade() -> None:
    _users()
    _authors()
    op.add_column(
        "site", sa.Column("qa_reviewer_may_release", sa.Boolean(), nullable=False, server_default=sa.false())
    )


def downgrade() -> None:
    with op.batch_alter_table("site", schema=None) as batch_op:
        batch_op.drop_column("qa_reviewer_may_release")
    with op.batch_alter_table("deviation_author", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_deviation_author_deviation_id"))
    op.drop_table("deviation_author")
    with op.batch_alter_table("role_grant", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_role_grant_user_id"))
    op.drop_table("role_grant")
    with op.batch_alter_table("app_user", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_app_user_person_id"))
        batch_op.drop_column("enrolled_witness")
        batch_op.drop_column("enrolled_at")
        batch_op.drop_column("person_id")
