"""Viable results on the batch-record side: the samples a processing step generates, the batch's
viable picture, conditional release and the signed review when the last result arrives.

* A step in a grade A or B room generates the plan's ``session`` samples of its room and of the
  rooms it sits in (the whole containment tree is in operation while it runs), and ``batch``
  ones on the batch's first step there (regulatory.md §6.5: EM during every aseptic session).
* Batch-record review includes the EM results (China GMP 2010 Annex 1 第十一条): the batch's
  samples are part of its signed environmental picture (``picture``).
* A cell-therapy product's shelf life is often shorter than a culture's incubation, so it may be
  released with results open only as a **conditional release**: the QP signs with the reason
  (``release(..., conditional_reason=…)`` in :mod:`tracker.quality.batches.release`). When the
  last result is in, QA or the QP signs a **viable review** (:func:`review_results`): acceptable,
  or a deviation with its impact on the patient and how the patient's physician was informed.
* ``tracker audit verify`` flags a conditional release still without that review once the
  incubation period (plus the reading grace) has run since release (:func:`integrity_problems`).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta

from sqlmodel import Session, select

from tracker.core import audit
from tracker.core.errors import ConflictError, InvalidInputError, NotFoundError, Reason
from tracker.core.timeutil import iso_utc, utcnow
from tracker.facility.models import Room, Site, containing_rooms
from tracker.facility.policy import viable_plan_of
from tracker.facility.viable import samples_for_session
from tracker.identity import signatures
from tracker.identity.users import Authenticated, require_role
from tracker.monitoring.viable.lifecycle import plan_samples
from tracker.monitoring.viable.models import FINAL_STATUSES, OPEN_STATUSES, ViableSample
from tracker.quality.batches.models import (
    VIABLE_REVIEW_OUTCOMES,
    Batch,
    ProcessStep,
    ViableReleaseReview,
)
from tracker.quality.deviations import Deviation, attach_batch

SYSTEM = "system:viable-plan"


def plan_for_step(
    session: Session, *, batch: Batch, step: ProcessStep, actor: str, now: datetime
) -> list[ViableSample]:
    """The samples the plan asks for during this step (none outside grade A/B processing)."""
    room = session.get(Room, step.room_id)
    if room.grade not in ("A", "B"):
        return []
    site = session.get(Site, batch.site_id)
    plan = viable_plan_of(session, site)
    if plan.empty:
        return []
    rooms = [r.code for r in containing_rooms(session, room)]
    earlier = session.exec(
        select(ProcessStep.room_id).where(ProcessStep.batch_id == batch.id, ProcessStep.id != step.id)
    ).all()
    earlier_codes = {session.get(Room, rid).code for rid in earlier}
    already = {
        code
        for rid in earlier
        for code in (r.code for r in containing_rooms(session, session.get(Room, rid)))
    } | earlier_codes
    planned = samples_for_session(plan, rooms, first_of_batch={c for c in rooms if c not in already})
    return plan_samples(
        session,
        site=site,
        planned=planned,
        planned_for=step.start,
        session_key=f"step:{step.id}",
        actor=actor,
        batch_id=batch.id,
        step_id=step.id,
        now=now,
    )


def samples_of(session: Session, batch: Batch) -> list[ViableSample]:
    return list(
        session.exec(select(ViableSample).where(ViableSample.batch_id == batch.id).order_by(ViableSample.id))
    )


def open_samples(session: Session, batch: Batch) -> list[ViableSample]:
    """Samples whose result is not final yet (still to take, incubating, to read, verify, identify)."""
    return [s for s in samples_of(session, batch) if s.status in OPEN_STATUSES]


def picture(session: Session, batch: Batch) -> list[dict]:
    """The batch's viable samples as its signed environmental picture holds them: a result only
    once final, so the picture moves when a result arrives, not at every lab step."""
    rooms = {r.id: r.code for r in session.exec(select(Room))}
    return [
        {
            "code": s.code,
            "location": s.location,
            "room": rooms.get(s.room_id),
            "grade": s.grade,
            "method": s.method,
            "step": s.step_id,
            "result": "open" if s.status in OPEN_STATUSES else s.status,
            "count": s.count if s.status in FINAL_STATUSES else None,
            "judged": s.judged_value if s.status in FINAL_STATUSES else None,
            "verdict": s.verdict if s.status in FINAL_STATUSES else None,
            "organism": s.organism if s.status in FINAL_STATUSES else None,
            "void_reason": s.void_reason,
        }
        for s in samples_of(session, batch)
    ]


def open_reasons(session: Session, batch: Batch) -> list[Reason]:
    """Why an unconditional release is refused: the open viable samples, one reason each."""
    return [
        Reason(
            f"viable sample {s.code} ({s.method} at {s.location}) is {s.status}: its result is not in; "
            "release only as a conditional release with the reason",
            f"微生物样品 {s.code}（{s.location}）处于“{s.status}”，结果尚未出来；只能附理由有条件放行",
        )
        for s in open_samples(session, batch)
    ]


def display_status(session: Session, batch: Batch) -> str:
    """``conditionally_released`` until the viable review is signed; the stored status otherwise."""
    if batch.status == "released" and batch.conditional_release and review_of(session, batch) is None:
        return "conditionally_released"
    return batch.status


def review_of(session: Session, batch: Batch) -> ViableReleaseReview | None:
    return session.exec(
        select(ViableReleaseReview)
        .where(ViableReleaseReview.batch_id == batch.id)
        .order_by(ViableReleaseReview.id.desc())
    ).first()


def review_content(session: Session, review: ViableReleaseReview) -> dict:
    """What the viable review signs: the batch, the results reviewed, the conclusion."""
    batch = session.get(Batch, review.batch_id)
    dev = session.get(Deviation, review.deviation_id) if review.deviation_id else None
    return {
        "batch": batch.number,
        "conditional_reason": batch.conditional_reason,
        "results": json.loads(review.results),
        "outcome": review.outcome,
        "deviation": dev.number if dev else None,
        "patient_impact": review.patient_impact,
        "patient_informed": review.patient_informed,
        "assessment": review.assessment,
    }


def review_results(
    session: Session,
    *,
    signer: Authenticated,
    batch: Batch,
    outcome: str,
    assessment: str,
    deviation: str | None = None,
    patient_impact: str | None = None,
    patient_informed: str | None = None,
    now: datetime | None = None,
) -> ViableReleaseReview:
    """QA or the QP signs the review of a conditionally released batch's viable results, once the
    last is in: acceptable, or a deviation (named, linked to the batch) with the impact on the
    patient and how the patient's physician was informed per the site's procedure."""
    require_role(signer, "qa", "qp", action=Reason("the post-release viable review", "放行后微生物结果审核"))
    now = now or utcnow()
    if not batch.conditional_release or batch.status != "released":
        raise ConflictError(
            Reason(
                f"batch {batch.number} was not conditionally released",
                f"批次 {batch.number} 不是有条件放行",
            )
        )
    if review_of(session, batch) is not None:
        raise ConflictError(
            Reason(
                f"batch {batch.number}'s viable review is signed already",
                f"批次 {batch.number} 的微生物结果审核已签署",
            )
        )
    still_open = open_samples(session, batch)
    if still_open:
        raise ConflictError(
            Reason(
                f"batch {batch.number} still has open viable results; review when the last is in",
                f"批次 {batch.number} 仍有未出的微生物结果；须待全部结果出来后审核",
            ),
            [Reason(s.code, s.code) for s in still_open],
        )
    if outcome not in VIABLE_REVIEW_OUTCOMES:
        raise InvalidInputError(
            Reason(
                "outcome must be acceptable or deviation", "结论须为 acceptable（可接受）或 deviation（偏差）"
            )
        )
    if not (assessment or "").strip():
        raise InvalidInputError(Reason("the review needs its assessment", "审核须填写评估意见"))
    dev = None
    if outcome == "deviation":
        if not (patient_impact or "").strip() or not (patient_informed or "").strip():
            raise InvalidInputError(
                Reason(
                    "a deviation needs the impact on the patient and how the patient's physician was informed",
                    "偏差须说明对患者的影响以及如何通知患者的医生",
                )
            )
        dev = session.exec(select(Deviation).where(Deviation.number == (deviation or "").strip())).first()
        if dev is None:
            raise NotFoundError(Reason(f"no deviation {deviation!r}", f"没有偏差 {deviation!r}"))
        attach_batch(
            session, dev=dev, batch_id=batch.id, actor=signer.username, batch_number=batch.number, now=now
        )
    row = ViableReleaseReview(
        batch_id=batch.id,
        outcome=outcome,
        deviation_id=dev.id if dev else None,
        patient_impact=(patient_impact or "").strip() or None,
        patient_informed=(patient_informed or "").strip() or None,
        assessment=assessment.strip(),
        reviewed_by=signer.username,
        reviewed_at=now,
        results=json.dumps(picture(session, batch), ensure_ascii=False, sort_keys=True),
    )
    session.add(row)
    session.flush()
    signatures.sign(
        session,
        signer=signer,
        meaning="reviewed",
        entity="batch",
        entity_key=batch.number,
        scope=f"viable_review:{row.id}",
        statement="post-release review of the viable results of a conditionally released batch "
        "(China GMP 2010 Annex 1 第十一条; regulatory.md §6.5)",
        content=review_content(session, row),
        now=now,
    )
    audit.record(
        session,
        actor=signer.username,
        action="batch.viable_review",
        entity="batch",
        entity_key=batch.number,
        after={"outcome": outcome, "deviation": dev.number if dev else None},
        at=now,
    )
    return row


def check_review_signature(session: Session, sig: signatures.Signature) -> signatures.SignatureCheck:
    row = session.get(ViableReleaseReview, int(sig.scope.partition(":")[2]))
    return signatures.check(sig, review_content(session, row) if row else {"missing": sig.scope})


def _release_time(session: Session, batch: Batch) -> datetime | None:
    sigs = [s for s in signatures.signatures_of(session, "batch", batch.number) if s.scope == "release"]
    return sigs[-1].signed_at if sigs else None


def review_due(session: Session, batch: Batch) -> datetime | None:
    """When the viable review of a conditional release is due: release + incubation + grace."""
    released = _release_time(session, batch)
    if released is None:
        return None
    plan = viable_plan_of(session, session.get(Site, batch.site_id))
    return released + timedelta(hours=(plan.incubation_h or 120.0) + plan.reading_grace_h)


def integrity_problems(session: Session, *, now: datetime | None = None) -> list[str]:
    """Conditional releases still without their signed viable review after the incubation period."""
    now = now or utcnow()
    problems = []
    for batch in session.exec(
        select(Batch).where(Batch.conditional_release, Batch.status == "released").order_by(Batch.id)
    ):
        if review_of(session, batch) is not None:
            continue
        due = review_due(session, batch)
        if due is not None and now > due:
            still = len(open_samples(session, batch))
            problems.append(
                f"batch {batch.number} was conditionally released and has no signed viable review "
                f"{(now - due).total_seconds() / 3600:.0f} h after the incubation period ended "
                f"(due {iso_utc(due)}; {still} result(s) still open)"
            )
    return problems
