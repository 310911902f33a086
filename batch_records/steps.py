"""Batches and their process steps; steps drive the rooms' operational state.

A step is recorded when it starts (GMP 2010 Art. 174: each operation recorded when done) and
ended by its operator with an e-signature meaning ``performed``. While a step runs, its room
and every room containing it are ``in_operation`` (an :class:`OperationPeriod` per step), and
readings already stored for the affected window are judged again at once, so a step
recorded a little late never leaves readings judged by at-rest limits.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlmodel import Session, select

from batch_records.models import Batch, ProcessStep
from tracker import audit, signatures
from tracker.errors import ConflictError, InvalidInputError, NotFoundError, PermissionDeniedError
from tracker.facility import Room, Site, containing_rooms, find_room
from tracker.reevaluate import reevaluate
from tracker.roomstate import OperationPeriod
from tracker.settings import get_settings
from tracker.timeutil import iso_utc, utcnow
from tracker.users import Authenticated, require_role

STEP_SOURCE = "batch_step"
#: a step may be stamped this far ahead of the recording clock (clock differences), no more
FUTURE_TOLERANCE = timedelta(minutes=5)


def get_batch(session: Session, number: str) -> Batch:
    batch = session.exec(select(Batch).where(Batch.number == number)).first()
    if batch is None:
        raise NotFoundError(f"no batch {number!r}")
    return batch


def steps_of(session: Session, batch: Batch) -> list[ProcessStep]:
    return list(session.exec(select(ProcessStep).where(ProcessStep.batch_id == batch.id)
                             .order_by(ProcessStep.start, ProcessStep.id)))


def _batch_json(batch: Batch) -> dict:
    return {"number": batch.number, "product": batch.product, "donor_id": batch.donor_id,
            "patient_id": batch.patient_id, "status": batch.status}


def create_batch(session: Session, *, actor: Authenticated, site: Site, number: str, product: str,
                 donor_id: str, patient_id: str | None = None, now: datetime | None = None) -> Batch:
    """Open a batch record; the donor identifier is mandatory (chain of identity, guideline §6.4)."""
    require_role(actor, "operator", "production_head", action="opening a batch record")
    for name, value in (("batch number", number), ("product", product), ("donor identifier", donor_id)):
        if not value or not value.strip():
            raise InvalidInputError(f"a batch record needs a {name}")
    if session.exec(select(Batch).where(Batch.number == number.strip())).first():
        raise InvalidInputError(f"batch number {number!r} exists already (GMP 2010 Art. 186: "
                                "a batch number is unique)")
    now = now or utcnow()
    batch = Batch(site_id=site.id, number=number.strip(), product=product.strip(),
                  donor_id=donor_id.strip(), patient_id=(patient_id or "").strip() or None,
                  created_at=now, created_by=actor.username, updated_at=now)
    session.add(batch)
    audit.record(session, actor=actor.username, action="batch.create", entity="batch",
                 entity_key=batch.number, after=_batch_json(batch), at=now)
    return batch


def _step_json(step: ProcessStep, room: Room) -> dict:
    return {"id": step.id, "name": step.name, "room": room.code, "start": iso_utc(step.start),
            "end": iso_utc(step.end), "open_processing": step.open_processing, "operator": step.operator}


def step_content(session: Session, step: ProcessStep) -> dict:
    """What the operator signs when ending a step (Art. 174)."""
    batch = session.get(Batch, step.batch_id)
    return {"batch": batch.number, **_step_json(step, session.get(Room, step.room_id))}


def _rejudge(session: Session, *, room: Room, site: Site, start: datetime, end: datetime | None,
             actor: str, why: str) -> None:
    """Judge again what was measured in the step's rooms over the window whose state changed."""
    top = containing_rooms(session, room)[-1]
    reevaluate(session, room_code=top.code, start=start, end=end, actor=actor, site_code=site.code,
               close_after=get_settings().excursion_close_after, reason=why)


def _check_times(start: datetime, end: datetime | None, now: datetime) -> None:
    if start > now + FUTURE_TOLERANCE:
        raise InvalidInputError("a step cannot start in the future")
    if end is not None:
        if end <= start:
            raise InvalidInputError("a step must end after it starts")
        if end > now + FUTURE_TOLERANCE:
            raise InvalidInputError("a step cannot end in the future")


def start_step(session: Session, *, actor: Authenticated, batch: Batch, name: str, room_code: str,
               start: datetime, open_processing: bool, late_reason: str | None = None,
               now: datetime | None = None) -> ProcessStep:
    """Record a step that has started; its operator is the authenticated actor (attributable).

    Records are contemporaneous (同步记录): a step entered more than ``TRACKER_STEP_LATE_AFTER_MIN``
    after it started needs the reason it is late, and one older than
    ``TRACKER_STEP_BACKDATE_MAX_H`` is refused — a backdated step re-judges the readings of its
    window by in-operation limits, so it must not become a quiet way of moving limits.
    """
    require_role(actor, "operator", "production_head", action="recording a process step")
    if batch.status != "in_progress":
        raise ConflictError(f"batch {batch.number} is {batch.status}; steps are added while in progress")
    if not name or not name.strip():
        raise InvalidInputError("a step needs a name")
    now = now or utcnow()
    _check_times(start, None, now)
    settings = get_settings()
    if now - start > timedelta(hours=settings.step_backdate_max_h):
        raise InvalidInputError(f"a step cannot be recorded more than {settings.step_backdate_max_h:g} h "
                                "after it started; record it as a deviation instead")
    late = now - start > timedelta(minutes=settings.step_late_after_min)
    if late and not (late_reason and late_reason.strip()):
        raise InvalidInputError(f"the step started {int((now - start).total_seconds() // 60)} min ago: "
                                "say why it is recorded late")
    site = session.get(Site, batch.site_id)
    room = find_room(session, room_code, site_code=site.code)
    if not room.active:
        raise InvalidInputError(f"room {room_code} is deactivated")
    step = ProcessStep(batch_id=batch.id, name=name.strip(), room_id=room.id, start=start,
                       open_processing=open_processing, operator=actor.username, recorded_at=now)
    session.add(step)
    session.flush()
    session.add(OperationPeriod(room_id=room.id, start=start, source=STEP_SOURCE, source_key=str(step.id)))
    audit.record(session, actor=actor.username, action="batch.step_start", entity="batch",
                 entity_key=batch.number, after=_step_json(step, room), at=now,
                 reason=f"recorded late: {late_reason.strip()}" if late else None)
    session.flush()
    _rejudge(session, room=room, site=site, start=start, end=None, actor=actor.username,
             why=f"step {step.id} of batch {batch.number} put {room.code} in operation")
    return step


def end_step(session: Session, *, signer: Authenticated, step_id: int, end: datetime,
             comment: str | None = None, now: datetime | None = None) -> ProcessStep:
    """The operator ends their step and signs it ``performed`` (Art. 174: confirms, signs, dates).
    If the operator cannot (absent, deactivated), the production head ends it with the reason."""
    step = session.get(ProcessStep, step_id)
    if step is None:
        raise NotFoundError(f"no process step {step_id}")
    if step.end is not None:
        raise ConflictError(f"step {step_id} ended already")
    on_behalf = signer.username != step.operator
    if on_behalf and not signer.has("production_head"):
        raise PermissionDeniedError(f"step {step_id} is {step.operator}'s; only its operator signs it "
                                    "as performed (or the production head ends it, with the reason)")
    if on_behalf and not (comment and comment.strip()):
        raise InvalidInputError(f"ending {step.operator}'s step for them needs the reason")
    now = now or utcnow()
    _check_times(step.start, end, now)
    batch = session.get(Batch, step.batch_id)
    room = session.get(Room, step.room_id)
    step.end = end
    session.add(step)
    period = session.exec(select(OperationPeriod).where(OperationPeriod.source == STEP_SOURCE,
                                                        OperationPeriod.source_key == str(step.id))).one()
    period.end, period.version = end, period.version + 1
    session.add(period)
    if on_behalf:
        meaning, statement = "approved", (f"production head ends the step of {step.operator}, who could "
                                          "not (their own performed signature is missing)")
    else:
        meaning, statement = "performed", "operator confirms the step as performed (GMP 2010 Art. 174)"
    signatures.sign(session, signer=signer, meaning=meaning, entity="process_step", entity_key=str(step.id),
                    scope="step", statement=statement, content=step_content(session, step),
                    comment=comment, now=now)
    audit.record(session, actor=signer.username, action="batch.step_end", entity="batch",
                 entity_key=batch.number, after=_step_json(step, room), at=now)
    session.flush()
    _rejudge(session, room=room, site=session.get(Site, batch.site_id), start=end, end=None,
             actor=signer.username, why=f"step {step.id} of batch {batch.number} ended")
    return step


def complete_batch(session: Session, *, actor: Authenticated, batch: Batch,
                   now: datetime | None = None) -> Batch:
    """Production is over: every step has ended and been signed by its operator."""
    require_role(actor, "operator", "production_head", action="completing a batch")
    if batch.status != "in_progress":
        raise ConflictError(f"batch {batch.number} is {batch.status}, not in progress")
    steps = steps_of(session, batch)
    if not steps:
        raise ConflictError(f"batch {batch.number} has no process steps")
    running = [s.id for s in steps if s.end is None]
    if running:
        raise ConflictError(f"batch {batch.number} cannot complete",
                            [f"step {i} has not ended" for i in running])
    now = now or utcnow()
    batch.status, batch.completed_at, batch.updated_at = "completed", now, now
    session.add(batch)
    audit.record(session, actor=actor.username, action="batch.complete", entity="batch",
                 entity_key=batch.number, before={"status": "in_progress"},
                 after={"status": "completed"}, at=now)
    return batch


def list_batches(session: Session, *, status: str | None = None) -> list[Batch]:
    query = select(Batch).order_by(Batch.created_at, Batch.id)
    if status:
        query = query.where(Batch.status == status)
    return list(session.exec(query))
