"""Batches and their process steps; steps drive the rooms' operational state.

A step is recorded when it starts (GMP 2010 Art. 174: each operation recorded when done) and
ended by its operator with an e-signature meaning ``performed``. While a step runs, its room
and every room containing it are ``in_operation`` (an :class:`OperationPeriod` per step), and
readings already stored for the affected window are judged again at once, so a step
recorded a little late never leaves readings judged by at-rest limits.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from sqlmodel import Session, select

from tracker.core import audit
from tracker.core.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    Reason,
    zh_word,
)
from tracker.core.pseudonyms import identity_key
from tracker.core.settings import get_settings
from tracker.core.timeutil import iso_utc, utcnow
from tracker.facility.models import Room, Site, containing_rooms, find_room
from tracker.facility.policy import compliance_of
from tracker.facility.roomstate import OperationPeriod
from tracker.identity import signatures
from tracker.identity.users import Authenticated, require_role
from tracker.monitoring.reevaluate import reevaluate
from tracker.quality.batches.models import Batch, ProcessStep
from tracker.quality.batches.viable import plan_for_step

STEP_SOURCE = "batch_step"
#: a step may be stamped this far ahead of the recording clock (clock differences), no more
FUTURE_TOLERANCE = timedelta(minutes=5)


def get_batch(session: Session, number: str) -> Batch:
    batch = session.exec(select(Batch).where(Batch.number == number)).first()
    if batch is None:
        raise NotFoundError(Reason(f"no batch {number!r}", f"没有批次 {number!r}"))
    return batch


def steps_of(session: Session, batch: Batch) -> list[ProcessStep]:
    return list(
        session.exec(
            select(ProcessStep)
            .where(ProcessStep.batch_id == batch.id)
            .order_by(ProcessStep.start, ProcessStep.id)
        )
    )


def protect(kind: str, clear: str | None) -> tuple[str | None, str | None]:
    """``(pseudonym, ciphertext)`` of a clear donor or patient identifier (none: none)."""
    clear = (clear or "").strip()
    if not clear:
        return None, None
    key = identity_key()
    return key.pseudonym(kind, clear), key.encrypt(clear)


def _batch_json(batch: Batch) -> dict:
    return {
        "number": batch.number,
        "product": batch.product,
        "donor_id": batch.donor_id,
        "patient_id": batch.patient_id,
        "status": batch.status,
    }


def create_batch(
    session: Session,
    *,
    actor: Authenticated,
    site: Site,
    number: str,
    product: str,
    donor_id: str,
    patient_id: str | None = None,
    now: datetime | None = None,
) -> Batch:
    """Open a batch record; the donor identifier is mandatory (chain of identity, guideline §6.4)."""
    require_role(
        actor, "operator", "production_head", action=Reason("opening a batch record", "开启批生产记录")
    )
    for name, zh, value in (
        ("batch number", "批号", number),
        ("product", "产品", product),
        ("donor identifier", "供者编号", donor_id),
    ):
        if not value or not value.strip():
            raise InvalidInputError(Reason(f"a batch record needs a {name}", f"批生产记录须填写{zh}"))
    pattern = get_settings().batch_number_pattern
    if not re.fullmatch(pattern, number.strip()):
        raise InvalidInputError(
            Reason(
                f"batch number {number.strip()[:80]!r} does not have the site's form ({pattern}): letters, "
                "digits, '.', '_' and '-', starting with a letter or digit",
                f"批号 {number.strip()[:80]!r} 不符合本厂格式（{pattern}）：只能使用字母、数字以及“.”“_”“-”，"
                "并以字母或数字开头",
            )
        )
    if session.exec(select(Batch).where(Batch.number == number.strip())).first():
        raise InvalidInputError(
            Reason(
                f"batch number {number!r} exists already (GMP 2010 Art. 186: a batch number is unique)",
                f"批号 {number!r} 已存在（GMP（2010）第一百八十六条：批号唯一）",
            )
        )
    now = now or utcnow()
    # only pseudonyms and ciphertext are stored, and the audit event carries the pseudonyms
    # (PIPL Art. 51; GB/T 39725-2020; docs/data-protection.md)
    donor_ref, donor_enc = protect("donor", donor_id)
    patient_ref, patient_enc = protect("patient", patient_id)
    batch = Batch(
        site_id=site.id,
        number=number.strip(),
        product=product.strip(),
        donor_id=donor_ref,
        patient_id=patient_ref,
        donor_enc=donor_enc,
        patient_enc=patient_enc,
        created_at=now,
        created_by=actor.username,
        updated_at=now,
    )
    session.add(batch)
    audit.record(
        session,
        actor=actor.username,
        action="batch.create",
        entity="batch",
        entity_key=batch.number,
        after=_batch_json(batch),
        at=now,
    )
    return batch


def _step_json(step: ProcessStep, room: Room) -> dict:
    return {
        "id": step.id,
        "name": step.name,
        "room": room.code,
        "start": iso_utc(step.start),
        "end": iso_utc(step.end),
        "open_processing": step.open_processing,
        "operator": step.operator,
    }


def step_content(session: Session, step: ProcessStep) -> dict:
    """What the operator signs when ending a step (Art. 174)."""
    batch = session.get(Batch, step.batch_id)
    return {"batch": batch.number, **_step_json(step, session.get(Room, step.room_id))}


def _rejudge(
    session: Session, *, room: Room, site: Site, start: datetime, end: datetime | None, actor: str, why: str
) -> None:
    """Judge again what was measured in the step's rooms over the window whose state changed."""
    top = containing_rooms(session, room)[-1]
    reevaluate(
        session,
        room_code=top.code,
        start=start,
        end=end,
        actor=actor,
        site_code=site.code,
        reason=why,
    )


def _check_times(start: datetime, end: datetime | None, now: datetime) -> None:
    if start > now + FUTURE_TOLERANCE:
        raise InvalidInputError(Reason("a step cannot start in the future", "工序开始时间不能在未来"))
    if end is not None:
        if end <= start:
            raise InvalidInputError(Reason("a step must end after it starts", "工序结束时间须晚于开始时间"))
        if end > now + FUTURE_TOLERANCE:
            raise InvalidInputError(Reason("a step cannot end in the future", "工序结束时间不能在未来"))


def start_step(
    session: Session,
    *,
    actor: Authenticated,
    batch: Batch,
    name: str,
    room_code: str,
    start: datetime,
    open_processing: bool,
    late_reason: str | None = None,
    now: datetime | None = None,
) -> ProcessStep:
    """Record a step that has started; its operator is the authenticated actor (attributable).

    Records are contemporaneous (同步记录): a step entered more than the facility file's
    ``[records] late_entry_after_min`` after it started needs the reason it is late, and one older
    than ``backdate_max_h`` is refused — a backdated step re-judges the readings of its window by
    in-operation limits, so it must not become a quiet way of moving limits.
    """
    require_role(actor, "operator", "production_head", action=Reason("recording a process step", "记录工序"))
    if batch.status != "in_progress":
        raise ConflictError(
            Reason(
                f"batch {batch.number} is {batch.status}; steps are added while in progress",
                f"批次 {batch.number} 处于“{zh_word(batch.status)}”；只有生产中的批次可以添加工序",
            )
        )
    if not name or not name.strip():
        raise InvalidInputError(Reason("a step needs a name", "工序须填写名称"))
    now = now or utcnow()
    _check_times(start, None, now)
    site = session.get(Site, batch.site_id)
    records = compliance_of(session, site)
    if now - start > timedelta(hours=records.backdate_max_h):
        raise InvalidInputError(
            Reason(
                f"a step cannot be recorded more than {records.backdate_max_h:g} h after it started; "
                "record it as a deviation instead",
                f"工序开始超过 {records.backdate_max_h:g} 小时后不能再补记；请作为偏差记录",
            )
        )
    late = now - start > timedelta(minutes=records.late_entry_min)
    if late and not (late_reason and late_reason.strip()):
        minutes = int((now - start).total_seconds() // 60)
        raise InvalidInputError(
            Reason(
                f"the step started {minutes} min ago: say why it is recorded late",
                f"工序已开始 {minutes} 分钟：请说明补记原因",
            )
        )
    room = find_room(session, room_code, site_code=site.code)
    if not room.active:
        raise InvalidInputError(Reason(f"room {room_code} is deactivated", f"房间 {room_code} 已停用"))
    step = ProcessStep(
        batch_id=batch.id,
        name=name.strip(),
        room_id=room.id,
        start=start,
        open_processing=open_processing,
        operator=actor.username,
        recorded_at=now,
    )
    session.add(step)
    session.flush()
    session.add(OperationPeriod(room_id=room.id, start=start, source=STEP_SOURCE, source_key=str(step.id)))
    audit.record(
        session,
        actor=actor.username,
        action="batch.step_start",
        entity="batch",
        entity_key=batch.number,
        after=_step_json(step, room),
        at=now,
        reason=f"recorded late: {late_reason.strip()}" if late else None,
    )
    session.flush()
    _rejudge(
        session,
        room=room,
        site=site,
        start=start,
        end=None,
        actor=actor.username,
        why=f"step {step.id} of batch {batch.number} put {room.code} in operation",
    )
    # a grade A/B processing session generates its viable samples (docs/viable.md)
    plan_for_step(session, batch=batch, step=step, actor=actor.username, now=now)
    return step


def end_step(
    session: Session,
    *,
    signer: Authenticated,
    step_id: int,
    end: datetime,
    comment: str | None = None,
    now: datetime | None = None,
) -> ProcessStep:
    """The operator ends their step and signs it ``performed`` (Art. 174: confirms, signs, dates).
    If the operator cannot (absent, deactivated), the production head ends it with the reason."""
    step = session.get(ProcessStep, step_id)
    if step is None:
        raise NotFoundError(Reason(f"no process step {step_id}", f"没有工序 {step_id}"))
    if step.end is not None:
        raise ConflictError(Reason(f"step {step_id} ended already", f"工序 {step_id} 已结束"))
    on_behalf = signer.username != step.operator
    if on_behalf and not signer.has("production_head"):
        raise PermissionDeniedError(
            Reason(
                f"step {step_id} is {step.operator}'s; only its operator signs it "
                "as performed (or the production head ends it, with the reason)",
                f"工序 {step_id} 由 {step.operator} 操作；只有其操作人可以签名确认执行（或由生产负责人说明原因后"
                "结束）",
            )
        )
    if on_behalf and not (comment and comment.strip()):
        raise InvalidInputError(
            Reason(
                f"ending {step.operator}'s step for them needs the reason",
                f"代 {step.operator} 结束工序须说明原因",
            )
        )
    now = now or utcnow()
    _check_times(step.start, end, now)
    batch = session.get(Batch, step.batch_id)
    room = session.get(Room, step.room_id)
    step.end = end
    session.add(step)
    period = session.exec(
        select(OperationPeriod).where(
            OperationPeriod.source == STEP_SOURCE, OperationPeriod.source_key == str(step.id)
        )
    ).one()
    period.end, period.version = end, period.version + 1
    session.add(period)
    if on_behalf:
        meaning, statement = (
            "approved",
            (
                f"production head ends the step of {step.operator}, who could "
                "not (their own performed signature is missing)"
            ),
        )
    else:
        meaning, statement = "performed", "operator confirms the step as performed (GMP 2010 Art. 174)"
    signatures.sign(
        session,
        signer=signer,
        meaning=meaning,
        entity="process_step",
        entity_key=str(step.id),
        scope="step",
        statement=statement,
        content=step_content(session, step),
        comment=comment,
        now=now,
    )
    audit.record(
        session,
        actor=signer.username,
        action="batch.step_end",
        entity="batch",
        entity_key=batch.number,
        after=_step_json(step, room),
        at=now,
    )
    session.flush()
    _rejudge(
        session,
        room=room,
        site=session.get(Site, batch.site_id),
        start=end,
        end=None,
        actor=signer.username,
        why=f"step {step.id} of batch {batch.number} ended",
    )
    return step


def complete_batch(
    session: Session, *, actor: Authenticated, batch: Batch, now: datetime | None = None
) -> Batch:
    """Production is over: every step has ended and been signed by its operator."""
    require_role(actor, "operator", "production_head", action=Reason("completing a batch", "完成批生产"))
    if batch.status != "in_progress":
        raise ConflictError(
            Reason(
                f"batch {batch.number} is {batch.status}, not in progress",
                f"批次 {batch.number} 处于“{zh_word(batch.status)}”，不在生产中",
            )
        )
    steps = steps_of(session, batch)
    if not steps:
        raise ConflictError(
            Reason(f"batch {batch.number} has no process steps", f"批次 {batch.number} 没有工序")
        )
    running = [s.id for s in steps if s.end is None]
    if running:
        raise ConflictError(
            Reason(f"batch {batch.number} cannot complete", f"批次 {batch.number} 尚不能完成"),
            [Reason(f"step {i} has not ended", f"工序 {i} 尚未结束") for i in running],
        )
    now = now or utcnow()
    batch.status, batch.completed_at, batch.updated_at = "completed", now, now
    session.add(batch)
    audit.record(
        session,
        actor=actor.username,
        action="batch.complete",
        entity="batch",
        entity_key=batch.number,
        before={"status": "in_progress"},
        after={"status": "completed"},
        at=now,
    )
    return batch


def list_batches(session: Session, *, status: str | None = None) -> list[Batch]:
    query = select(Batch).order_by(Batch.created_at, Batch.id)
    if status:
        query = query.where(Batch.status == status)
    return list(session.exec(query))
