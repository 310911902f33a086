"""donor and patient identifiers as keyed pseudonyms plus encrypted clear values (issue 20)

Existing clear identifiers are replaced by their pseudonym (HMAC under the identity key,
``tracker.core.pseudonyms``) and kept encrypted beside it. The key is read as the application
reads it (``TRACKER_IDENTITY_KEY_FILE``, ``TRACKER_IDENTITY_KEY``, or the embedded default file
created under ``TRACKER_DATA_DIR``), and only when there are rows to protect; a configured key
that cannot be read stops the migration before anything is changed (docs/data-protection.md,
"Migrating existing identifiers"). Events and signatures written before keep the clear values
they sealed: they cannot be rewritten without breaking the chain.

Revision ID: 0026
Revises: 0025
Create Date: 2026-12-06 08:20:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0026"
down_revision: str | None = "0025"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("batch") as batch_op:
        batch_op.add_column(sa.Column("donor_enc", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("patient_enc", sa.Text(), nullable=True))
    bind = op.get_bind()
    rows = bind.execute(sa.text("SELECT id, donor_id, patient_id FROM batch ORDER BY id")).all()
    if not rows:
        return
    from tracker.core.pseudonyms import identity_key, is_pseudonym

    key = identity_key()
    update = sa.text(
        "UPDATE batch SET donor_id = :donor, patient_id = :patient, donor_enc = :donor_enc, "
        "patient_enc = :patient_enc WHERE id = :id"
    )
    for id_, donor, patient in rows:
        if is_pseudonym("donor", donor):
            continue
        bind.execute(
            update,
            {
                "id": id_,
                "donor": key.pseudonym("donor", donor),
                "donor_enc": key.encrypt(donor.strip()),
                "patient": key.pseudonym("patient", patient) if patient else None,
                "patient_enc": key.encrypt(patient.strip()) if patient else None,
            },
        )


def downgrade() -> None:
    """Back to clear identifiers (needs the identity key when rows are protected)."""
    bind = op.get_bind()
    rows = bind.execute(
        sa.text("SELECT id, donor_enc, patient_enc FROM batch WHERE donor_enc IS NOT NULL")
    ).all()
    if rows:
        from tracker.core.pseudonyms import identity_key

        key = identity_key()
        for id_, donor_enc, patient_enc in rows:
            bind.execute(
                sa.text("UPDATE batch SET donor_id = :d, patient_id = :p WHERE id = :id"),
                {
                    "id": id_,
                    "d": key.decrypt(donor_enc),
                    "p": key.decrypt(patient_enc) if patient_enc else None,
                },
            )
    with op.batch_alter_table("batch") as batch_op:
        batch_op.drop_column("patient_enc")
        batch_op.drop_column("donor_enc")
