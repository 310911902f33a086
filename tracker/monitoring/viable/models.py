"""The viable sample: one plate, air sample or glove print, from planning to its closed result.

Every step of its life is a column pair (who, when) on the row and an audit event written in the
same transaction (GMP 2010 Art. 163; 21 CFR 11.10(e)); a sample is never deleted — a dropped
plate, an exposure over 4 h or expired media makes it ``missed`` or ``invalid`` with its reason,
itself a finding the annual report counts.

The batch and step a sample belongs to are kept as plain ids (foreign keys by table name): the
monitoring layer does not know batch records; ``tracker.quality.batches.viable`` plans a
processing step's samples and reads them for the batch.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, Index, Text
from sqlmodel import Field, SQLModel

from tracker.core.db import UTCDateTime

#: planned → taken → incubating → read → identified → closed; missed / invalid from any open status
STATUSES = ("planned", "taken", "incubating", "read", "identified", "closed", "missed", "invalid")
OPEN_STATUSES = ("planned", "taken", "incubating", "read", "identified")
FINAL_STATUSES = ("closed", "missed", "invalid")
STATUS_ZH = {
    "planned": "已计划",
    "taken": "已采样",
    "incubating": "培养中",
    "read": "已读数",
    "identified": "已鉴定",
    "closed": "已关闭",
    "missed": "漏采",
    "invalid": "无效",
}


class ViableSample(SQLModel, table=True):
    """One viable sample and its lifecycle (``tracker.monitoring.viable.lifecycle``)."""

    __tablename__ = "viable_sample"
    __table_args__ = (Index("ix_viable_sample_location_time", "location", "planned_for"),)

    id: int | None = Field(default=None, primary_key=True)
    #: the identifier printed on the label (QR / DataMatrix) and typed or scanned to record a step
    code: str = Field(max_length=40, unique=True)
    site_id: int = Field(foreign_key="site.id", index=True)
    room_id: int = Field(foreign_key="room.id", index=True)
    location: str = Field(max_length=60)
    #: the room's grade when planned (what the result is judged against)
    grade: str = Field(max_length=3)
    method: str = Field(max_length=10)  # air | settle | contact | glove_l | glove_r
    frequency: str = Field(max_length=10)
    status: str = Field(default="planned", max_length=12, index=True)
    #: the facility revision whose plan asked for it
    revision: int
    batch_id: int | None = Field(default=None, foreign_key="batch.id", index=True)
    step_id: int | None = Field(default=None, foreign_key="process_step.id", index=True)
    #: plates of one location in one session are summed (step id, or the day for calendar samples)
    session_key: str = Field(max_length=40)
    planned_for: datetime = Field(sa_type=UTCDateTime, nullable=False)
    planned_by: str = Field(max_length=60)
    planned_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    air_volume_l: float | None = None
    exposure_min: float | None = None
    # taken
    taken_by: str | None = Field(default=None, max_length=60)
    taken_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    media_lot: str | None = Field(default=None, max_length=60)
    exposure_start: datetime | None = Field(default=None, sa_type=UTCDateTime)
    exposure_end: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # incubating
    incubator: str | None = Field(default=None, max_length=60)
    incubation_by: str | None = Field(default=None, max_length=60)
    incubation_start: datetime | None = Field(default=None, sa_type=UTCDateTime)
    read_due: datetime | None = Field(default=None, sa_type=UTCDateTime, index=True)
    # read (and verified by a second person in grade A and B)
    count: int | None = None
    read_by: str | None = Field(default=None, max_length=60)
    read_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    verified_by: str | None = Field(default=None, max_length=60)
    verified_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    #: the count judged (settle plates per 4 h, summed over the session) and its verdict
    judged_value: float | None = None
    limit_value: float | None = None
    verdict: str | None = Field(default=None, max_length=16)
    # identified
    organism: str | None = Field(default=None, max_length=200)
    id_method: str | None = Field(default=None, max_length=100)
    identified_by: str | None = Field(default=None, max_length=60)
    identified_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # closed, or missed / invalid with the reason
    closed_by: str | None = Field(default=None, max_length=60)
    closed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    void_reason: str | None = Field(default=None, sa_column=Column(Text))

    @property
    def open(self) -> bool:
        return self.status in OPEN_STATUSES

    @property
    def needs_verification(self) -> bool:
        """Grade A and B counts are checked by a second person (GMP 2010 Annex 1 第十一条, Art. 163)."""
        return self.grade in ("A", "B") and self.count is not None and self.verified_by is None

    @property
    def needs_identification(self) -> bool:
        """Isolates from grade A and B are identified (Annex 1 (2022) §9.30; regulatory.md §2.2)."""
        return self.grade in ("A", "B") and bool(self.count) and self.organism is None
