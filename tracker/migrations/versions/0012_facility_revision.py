"""facility_revision: the evaluation settings of each loaded facility revision

Rooms and monitors are updated in place, so what a revision decided about evaluation (room
grades and backgrounds, monitor intervals, ranges, sample volumes, reference rooms,
calibration dates, channels, ``[rules]``) is kept per revision here; a QA approval of a change
of them is signed over this row. Existing sites get a row for their current revision, built
from the stored rooms and monitors, so the next change has a previous revision to compare
with (``tracker.facility.load.record_revision`` writes the same shape).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06 04:20:00.000000
"""

import json
from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
import sqlmodel
from alembic import op

import tracker.core.db

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _settings(conn, site) -> dict:
    rooms = {
        r.id: r
        for r in conn.execute(
            sa.text("SELECT id, code, grade, background_id FROM room WHERE site_id = :s AND active"),
            {"s": site.id},
        )
    }
    code = {rid: r.code for rid, r in rooms.items()}
    monitors = conn.execute(
        sa.text(
            "SELECT code, room_id, kind, interval_s, range_low, range_high, sample_volume_l, "
            "reference_room_id, calibration_due, channels FROM monitor WHERE site_id = :s AND active"
        ),
        {"s": site.id},
    )

    def num(v):
        return None if v is None else float(v)

    return {
        "rules": {"rolling_volume_m3": site.rolling_volume_m3, "recovery_s": site.recovery_s},
        "rooms": {
            r.code: {"grade": r.grade, "background": code.get(r.background_id)} for r in rooms.values()
        },
        "monitors": {
            m.code: {
                "room": code.get(m.room_id),
                "kind": m.kind,
                "interval_s": num(m.interval_s),
                "range_low": num(m.range_low),
                "range_high": num(m.range_high),
                "sample_volume_l": num(m.sample_volume_l),
                "reference": code.get(m.reference_room_id),
                "calibration_due": None if m.calibration_due is None else str(m.calibration_due)[:10],
                "channels": m.channels,
            }
            for m in monitors
        },
    }


def upgrade() -> None:
    op.create_table(
        "facility_revision",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("file_sha256", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("settings", sa.Text(), nullable=False),
        sa.Column("changes", sa.Text(), nullable=False),
        sa.Column("loaded_by", sqlmodel.sql.sqltypes.AutoString(length=80), nullable=False),
        sa.Column("loaded_at", tracker.core.db.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["site_id"], ["site.id"], name=op.f("fk_facility_revision_site_id_site")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_facility_revision")),
        sa.UniqueConstraint("site_id", "revision", name=op.f("uq_facility_revision_site_id_revision")),
    )
    with op.batch_alter_table("facility_revision", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_facility_revision_site_id"), ["site_id"], unique=False)
    conn = op.get_bind()
    table = sa.table(
        "facility_revision",
        sa.column("site_id", sa.Integer()),
        sa.column("revision", sa.Integer()),
        sa.column("file_sha256", sa.String()),
        sa.column("settings", sa.Text()),
        sa.column("changes", sa.Text()),
        sa.column("loaded_by", sa.String()),
        sa.column("loaded_at", tracker.core.db.UTCDateTime()),
    )
    now = datetime.now(UTC)
    rows = [
        {
            "site_id": site.id,
            "revision": site.revision,
            "file_sha256": site.file_sha256,
            "settings": json.dumps(_settings(conn, site), sort_keys=True),
            "changes": "[]",
            "loaded_by": "migration 0012",
            "loaded_at": now,
        }
        for site in conn.execute(
            sa.text("SELECT id, revision, file_sha256, rolling_volume_m3, recovery_s FROM site")
        ).all()
    ]
    if rows:
        op.bulk_insert(table, rows)


def downgrade() -> None:
    with op.batch_alter_table("facility_revision", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_facility_revision_site_id"))
    op.drop_table("facility_revision")
