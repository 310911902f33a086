"""Tables of the batch-record side: batches, process steps, exposure links, review assessments."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, Index, Text, UniqueConstraint
from sqlalchemy import false as sa_false
from sqlmodel import Field, SQLModel

from tracker.core.classification import REVEAL_ROLE, classified
from tracker.core.db import UTCDateTime

#: in_progress → completed → production_signed → qa_reviewed → released | rejected
BATCH_STATUSES = ("in_progress", "completed", "production_signed", "qa_reviewed", "released", "rejected")
LINK_STATUSES = ("proposed", "confirmed", "rejected", "withdrawn")


_PERSONAL_ID = {"clear_roles": (REVEAL_ROLE,), "export": "pseudonymised"}
_ENCRYPTED = {"clear_roles": (REVEAL_ROLE,), "export": "omitted"}


class Batch(SQLModel, table=True):
    """One batch record (批生产记录). ``donor_id`` carries the chain of identity (供者).

    Since migration 0026 ``donor_id`` and ``patient_id`` hold keyed pseudonyms
    (:mod:`tracker.core.pseudonyms`), equal for equal identifiers, so segregation and counts need
    no clear value; the clear identifiers are kept encrypted in ``donor_enc``/``patient_enc``
    and shown only by an audited reveal (PIPL Art. 51; GB/T 39725-2020; docs/data-protection.md)."""

    __table_args__ = (UniqueConstraint("number"),)

    id: int | None = Field(default=None, primary_key=True)
    site_id: int = Field(foreign_key="site.id", index=True)
    number: str = Field(max_length=60)
    product: str = Field(max_length=200)
    donor_id: str = Field(
        max_length=100,
        index=True,
        sa_column_kwargs={
            "info": classified("personal", **_PERSONAL_ID, why="donor pseudonym (chain of identity)")
        },
    )
    patient_id: str | None = Field(
        default=None,
        max_length=100,
        sa_column_kwargs={"info": classified("personal", **_PERSONAL_ID, why="patient pseudonym")},
    )
    donor_enc: str | None = Field(
        default=None,
        sa_column=Column(
            Text, info=classified("personal", **_ENCRYPTED, why="donor identifier, encrypted (Fernet)")
        ),
    )
    patient_enc: str | None = Field(
        default=None,
        sa_column=Column(
            Text, info=classified("personal", **_ENCRYPTED, why="patient identifier, encrypted (Fernet)")
        ),
    )
    status: str = Field(default="in_progress", max_length=20, index=True)
    created_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    created_by: str = Field(max_length=60)
    completed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    updated_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    #: after release, the environmental picture last registered (at release, at each post-release
    #: event and assessment) and its hash: what the watcher compares the picture now with
    env_hash: str = Field(default="", max_length=64)
    env_picture: str | None = Field(default=None, sa_column=Column(Text))
    #: released by the QP while viable results were still open (shelf life, clinical need), with
    #: the reason; a signed viable review follows when the last result arrives (docs/viable.md)
    conditional_release: bool = Field(default=False, sa_column_kwargs={"server_default": sa_false()})
    conditional_reason: str | None = Field(default=None, sa_column=Column(Text))


class ProcessStep(SQLModel, table=True):
    """One processing step: where (room or grade A zone), when, open or closed processing, who."""

    __tablename__ = "process_step"
    __table_args__ = (Index("ix_process_step_room_time", "room_id", "start"),)

    id: int | None = Field(default=None, primary_key=True)
    batch_id: int = Field(foreign_key="batch.id", index=True)
    name: str = Field(max_length=200)
    room_id: int = Field(foreign_key="room.id")
    start: datetime = Field(sa_type=UTCDateTime, nullable=False)
    end: datetime | None = Field(default=None, sa_type=UTCDateTime)
    open_processing: bool
    operator: str = Field(max_length=60)
    recorded_at: datetime = Field(sa_type=UTCDateTime, nullable=False)


class ExcursionLink(SQLModel, table=True):
    """A possible exposure of a step to an excursion: proposed by the system, decided by QA."""

    __tablename__ = "excursion_link"
    __table_args__ = (UniqueConstraint("excursion_id", "step_id"),)

    id: int | None = Field(default=None, primary_key=True)
    excursion_id: int = Field(foreign_key="excursion.id", index=True)
    step_id: int = Field(foreign_key="process_step.id", index=True)
    batch_id: int = Field(foreign_key="batch.id", index=True)
    status: str = Field(default="proposed", max_length=20)
    proposed_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    decided_by: str | None = Field(default=None, max_length=60)
    decided_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    reason: str | None = Field(default=None, sa_column=Column(Text))
    #: the excursion as it stood when QA decided; if it changes later the decision reopens
    decided_level: str | None = Field(default=None, max_length=16)
    decided_started_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    decided_ended_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class ReviewAssessment(SQLModel, table=True):
    """QA's exposure verdict on a review-by-exception item that is not an excursion
    (a period of invalid readings during a step)."""

    __tablename__ = "review_assessment"
    __table_args__ = (UniqueConstraint("batch_id", "item_key"),)

    id: int | None = Field(default=None, primary_key=True)
    batch_id: int = Field(foreign_key="batch.id", index=True)
    item_key: str = Field(max_length=200)
    exposed: bool
    reason: str = Field(sa_column=Column(Text, nullable=False))
    assessed_by: str = Field(max_length=60)
    assessed_at: datetime = Field(sa_type=UTCDateTime, nullable=False)


POST_RELEASE_OUTCOMES = ("no_impact", "deviation")


class PostReleaseEvent(SQLModel, table=True):
    """New environmental facts that reached a released batch (a late reading, a new excursion or
    link, a re-evaluation, a deviation): raised by the watcher, assessed by QA with an e-signature."""

    __tablename__ = "post_release_event"

    id: int | None = Field(default=None, primary_key=True)
    batch_id: int = Field(foreign_key="batch.id", index=True)
    raised_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    raised_by: str = Field(max_length=60)
    #: what changed from the picture registered before, as JSON [{kind, en, zh}]
    changes: str = Field(sa_column=Column(Text, nullable=False))
    kinds: str = Field(max_length=200)  # comma-separated change kinds
    previous_hash: str = Field(max_length=64)
    picture_hash: str = Field(max_length=64)
    #: the picture when raised (JSON), so the change can be shown and checked later
    picture: str = Field(sa_column=Column(Text, nullable=False))
    status: str = Field(default="open", max_length=20, index=True)  # open | assessed
    assessment_id: int | None = Field(default=None, foreign_key="post_release_assessment.id")


class PostReleaseAssessment(SQLModel, table=True):
    """QA's signed conclusion on a released batch's open post-release events: no impact, or a
    deviation opened (named, linked to the batch)."""

    __tablename__ = "post_release_assessment"

    id: int | None = Field(default=None, primary_key=True)
    batch_id: int = Field(foreign_key="batch.id", index=True)
    outcome: str = Field(max_length=20)  # no_impact | deviation
    deviation_id: int | None = Field(default=None, foreign_key="deviation.id")
    assessment: str = Field(sa_column=Column(Text, nullable=False))
    assessed_by: str = Field(max_length=60)
    assessed_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    picture_hash: str = Field(max_length=64)
    picture: str = Field(sa_column=Column(Text, nullable=False))


VIABLE_REVIEW_OUTCOMES = ("acceptable", "deviation")


class ViableReleaseReview(SQLModel, table=True):
    """The signed review of a conditionally released batch's viable results once the last one is
    in: acceptable, or a deviation with its impact on the patient and how the patient's physician
    was informed (regulatory.md §6.5; GMP 2010 Art. 230, 250)."""

    __tablename__ = "viable_release_review"

    id: int | None = Field(default=None, primary_key=True)
    batch_id: int = Field(foreign_key="batch.id", index=True)
    outcome: str = Field(max_length=20)  # acceptable | deviation
    deviation_id: int | None = Field(default=None, foreign_key="deviation.id")
    patient_impact: str | None = Field(default=None, sa_column=Column(Text))
    patient_informed: str | None = Field(default=None, sa_column=Column(Text))
    assessment: str = Field(sa_column=Column(Text, nullable=False))
    reviewed_by: str = Field(max_length=60)
    reviewed_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    #: the results as reviewed (JSON list), what the signature covers
    results: str = Field(sa_column=Column(Text, nullable=False))
