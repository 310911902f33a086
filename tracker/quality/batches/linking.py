"""Linking excursions to the batch steps they may have exposed (DESIGN §4, issue 3 item 5).

An excursion of a monitor in room R over [t0, t1] is proposed against every step whose room
is R or lies inside R (a grade A zone in a grade B room), and, for a pressure excursion, also
against steps in the reference room on the other side of the differential (or inside it),
whenever the step's window overlaps [t0, t1]. QA confirms (exposed) or rejects (not exposed)
each proposal with a reason, by e-signature.

Proposals are a function of the stored excursions and steps, materialised idempotently by
:func:`sync_links` before anything reads them. When re-evaluation supersedes an excursion or
a step's window stops overlapping, an undecided proposal is withdrawn (decided ones stay as
history; the replacing excursion gets its own proposal). A decision is about the excursion as
it stood: when the same excursion later grows (a higher level, a longer window — it was still
open, or late data reshaped it), the decision reopens and QA decides again.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import or_
from sqlmodel import Session, select

from tracker.core import audit
from tracker.core.errors import ConflictError, InvalidInputError, NotFoundError, Reason, zh_word
from tracker.core.timeutil import iso_utc, utcnow
from tracker.facility.models import Monitor, Room, Site, containing_rooms
from tracker.identity import signatures
from tracker.identity.users import Authenticated, require_role
from tracker.monitoring.excursions import Excursion, breaches, source_code
from tracker.monitoring.viable.models import ViableSample
from tracker.quality.batches.models import Batch, ExcursionLink, ProcessStep
from tracker.quality.deviations import (
    Deviation,
    DeviationBatch,
    DeviationExcursion,
    attach_batch,
    open_deviation,
)

SYSTEM = "system:linking"


def _candidates(session: Session, step: ProcessStep) -> list[Excursion]:
    """Non-superseded excursions that may have exposed ``step``: those of its rooms whose window
    overlaps it, and the viable results of samples taken for it (a contact plate or glove print
    taken at the end of the session belongs to it wherever its window falls)."""
    rooms = [r.id for r in containing_rooms(session, session.get(Room, step.room_id))]
    overlapping = or_(Excursion.ended_at.is_(None), Excursion.ended_at > step.start)
    if step.end is not None:
        overlapping = overlapping & (Excursion.started_at < step.end)
    in_rooms = or_(
        Excursion.room_id.in_(rooms),
        (Excursion.kind == "pressure") & Monitor.reference_room_id.in_(rooms),
    )
    own_samples = Excursion.viable_sample_id.in_(
        select(ViableSample.id).where(ViableSample.step_id == step.id)
    )
    query = (
        select(Excursion)
        .outerjoin(Monitor, Monitor.id == Excursion.monitor_id)  # a viable result has none
        .where(
            Excursion.status != "superseded",
            Excursion.challenge_id.is_(None),  # an alarm challenge exposes no batch
            breaches(),  # a forecast warning exposed nothing
            or_(in_rooms & overlapping, own_samples),
        )
    )
    return list(session.exec(query.order_by(Excursion.started_at, Excursion.id)))


def exposure_candidates(session: Session, step: ProcessStep) -> list[Excursion]:
    """The standing excursions that may have exposed ``step``: what :func:`sync_links` proposes,
    read without writing (the annual report counts an exposure nobody has decided yet even where
    no proposal has been materialised)."""
    return _candidates(session, step)


def sync_links(session: Session, *, batch: Batch | None = None, now: datetime | None = None) -> int:
    """Propose the missing links and withdraw undecided ones that no longer apply (of one
    batch, or of every batch). Returns how many links changed."""
    now = now or utcnow()
    query = select(ProcessStep)
    if batch is not None:
        query = query.where(ProcessStep.batch_id == batch.id)
    changed = 0
    batch_numbers: dict[int, str] = {}
    for step in session.exec(query).all():
        number = batch_numbers.setdefault(step.batch_id, session.get(Batch, step.batch_id).number)
        wanted = {ex.id: ex for ex in _candidates(session, step)}
        existing = {
            link.excursion_id: link
            for link in session.exec(select(ExcursionLink).where(ExcursionLink.step_id == step.id))
        }
        for excursion_id, ex in wanted.items():
            if excursion_id in existing:
                continue
            session.add(
                ExcursionLink(
                    excursion_id=excursion_id, step_id=step.id, batch_id=step.batch_id, proposed_at=now
                )
            )
            audit.record(
                session,
                actor=SYSTEM,
                action="link.propose",
                entity="batch",
                entity_key=number,
                after={"excursion": excursion_id, "step": step.id, "type": ex.type, "level": ex.level},
                at=now,
            )
            changed += 1
        for excursion_id, link in existing.items():
            ex = wanted.get(excursion_id)
            if ex is not None and link.status in ("confirmed", "rejected") and _changed(link, ex):
                _reopen(session, link, ex, number, now)
                changed += 1
            if link.status == "proposed" and excursion_id not in wanted:
                link.status, link.decided_by, link.decided_at = "withdrawn", SYSTEM, now
                link.reason = "the excursion was superseded or no longer overlaps the step"
                session.add(link)
                audit.record(
                    session,
                    actor=SYSTEM,
                    action="link.withdraw",
                    entity="batch",
                    entity_key=number,
                    after={"excursion": excursion_id, "step": step.id},
                    reason=link.reason,
                    at=now,
                )
                changed += 1
    session.flush()
    return changed


def _changed(link: ExcursionLink, ex: Excursion) -> bool:
    """Has the excursion changed since QA decided on it?"""
    return (link.decided_level, link.decided_started_at, link.decided_ended_at) != (
        ex.level,
        ex.started_at,
        ex.ended_at,
    )


def _reopen(session: Session, link: ExcursionLink, ex: Excursion, number: str, now: datetime) -> None:
    before = {
        "status": link.status,
        "level": link.decided_level,
        "started_at": iso_utc(link.decided_started_at),
        "ended_at": iso_utc(link.decided_ended_at),
    }
    link.status, link.decided_by, link.decided_at, link.reason = "proposed", None, None, None
    link.decided_level = link.decided_started_at = link.decided_ended_at = None
    session.add(link)
    audit.record(
        session,
        actor=SYSTEM,
        action="link.reopen",
        entity="batch",
        entity_key=number,
        before=before,
        after={
            "link": link.id,
            "status": "proposed",
            "level": ex.level,
            "started_at": iso_utc(ex.started_at),
            "ended_at": iso_utc(ex.ended_at),
        },
        reason="the excursion changed after QA decided",
        at=now,
    )


def links_of(session: Session, batch: Batch) -> list[ExcursionLink]:
    return list(
        session.exec(
            select(ExcursionLink)
            .where(ExcursionLink.batch_id == batch.id)
            .order_by(ExcursionLink.excursion_id, ExcursionLink.step_id)
        )
    )


def decision_content(session: Session, link: ExcursionLink) -> dict:
    """What QA signs when deciding a link: the step, the excursion as it stood when decided,
    the verdict and its reason (the decided_* fields do not move when the excursion does)."""
    ex = session.get(Excursion, link.excursion_id)
    step = session.get(ProcessStep, link.step_id)
    return {
        "link": link.id,
        "batch": session.get(Batch, link.batch_id).number,
        "step": step.id,
        "step_name": step.name,
        "excursion": ex.id,
        "monitor": source_code(session, ex),
        "type": ex.type,
        "kind": ex.kind,
        "channel": ex.channel or None,
        "level": link.decided_level,
        "started_at": iso_utc(link.decided_started_at),
        "ended_at": iso_utc(link.decided_ended_at),
        "exposed": link.status == "confirmed",
        "reason": link.reason,
        "decided_by": link.decided_by,
    }


def decision_checks(session: Session, link: ExcursionLink) -> list[signatures.SignatureCheck]:
    """The link's decision signatures: the newest checked against the decision as it stands
    while the link is decided; once reopened (the excursion changed) every one is superseded,
    still proving what was decided then."""
    sigs = signatures.signatures_of(session, "exposure_link", str(link.id))
    decided = link.status in ("confirmed", "rejected")
    return [
        signatures.check(sig, decision_content(session, link))
        if decided and i == len(sigs) - 1
        else signatures.sealed_only(sig)
        for i, sig in enumerate(sigs)
    ]


def decide_link(
    session: Session,
    *,
    signer: Authenticated,
    link_id: int,
    exposed: bool,
    reason: str,
    now: datetime | None = None,
) -> ExcursionLink:
    """QA confirms (the step was exposed) or rejects (it was not) a proposed link, with a reason,
    by e-signature (it decides what the batch record says about its environment). A confirmed
    exposure joins the batch to the open deviations raised from that excursion."""
    require_role(signer, "qa", action=Reason("deciding an exposure link", "确认或否定关联建议"))
    link = session.get(ExcursionLink, link_id)
    if link is None:
        raise NotFoundError(Reason(f"no link {link_id}", f"没有关联建议 {link_id}"))
    if link.status != "proposed":
        raise ConflictError(
            Reason(
                f"link {link_id} is {link.status} already", f"关联建议 {link_id} 已是“{zh_word(link.status)}”"
            )
        )
    if not reason or not reason.strip():
        raise InvalidInputError(Reason("a link decision needs its reason", "关联决定须说明理由"))
    now = now or utcnow()
    batch = session.get(Batch, link.batch_id)
    ex = session.get(Excursion, link.excursion_id)
    link.status = "confirmed" if exposed else "rejected"
    link.decided_by, link.decided_at, link.reason = signer.username, now, reason.strip()
    link.decided_level, link.decided_started_at, link.decided_ended_at = ex.level, ex.started_at, ex.ended_at
    session.add(link)
    session.flush()
    sig = signatures.sign(
        session,
        signer=signer,
        meaning="reviewed",
        entity="exposure_link",
        entity_key=str(link.id),
        scope="decision",
        statement=f"QA confirms that step {link.step_id} of batch {batch.number} was "
        f"{'' if exposed else 'not '}exposed to excursion {link.excursion_id}",
        content=decision_content(session, link),
        now=now,
    )
    audit.record(
        session,
        actor=signer.username,
        action=f"link.{link.status}",
        entity="batch",
        entity_key=batch.number,
        before={"status": "proposed"},
        after={
            "link": link_id,
            "excursion": link.excursion_id,
            "step": link.step_id,
            "status": link.status,
            "signature": sig.seal,
        },
        reason=link.reason,
        at=now,
    )
    if exposed:
        _join_open_deviations(session, link, batch, signer.username, now)
    return link


def decide_links(
    session: Session,
    *,
    signer: Authenticated,
    link_ids: list[int],
    exposed: bool,
    reason: str,
    now: datetime | None = None,
) -> list[ExcursionLink]:
    """Decide several proposed links together (the links of one step, or of one excursion) with one
    reason and one re-authentication: each link is decided, signed and audited on its own exactly
    as :func:`decide_link` does, so every record keeps its own signature. All or none: a link that
    cannot be decided refuses the lot with its reason."""
    if not link_ids:
        raise InvalidInputError(Reason("choose the links to decide", "请选择要决定的关联建议"))
    now = now or utcnow()
    return [
        decide_link(session, signer=signer, link_id=link_id, exposed=exposed, reason=reason, now=now)
        for link_id in sorted(set(link_ids))
    ]


def _join_open_deviations(
    session: Session, link: ExcursionLink, batch: Batch, actor: str, now: datetime
) -> None:
    """A confirmed exposure links the batch to the open deviations raised from the excursion."""
    for dev in session.exec(
        select(Deviation)
        .join(DeviationExcursion, DeviationExcursion.deviation_id == Deviation.id)
        .where(DeviationExcursion.excursion_id == link.excursion_id, Deviation.status != "closed")
    ).all():
        attach_batch(session, dev=dev, batch_id=batch.id, batch_number=batch.number, actor=actor, now=now)


def raise_deviation(
    session: Session,
    *,
    actor: Authenticated,
    site: Site,
    excursion_ids: list[int],
    title: str,
    classification: str,
    category: str,
    description: str,
    batch_numbers: list[str] | tuple[str, ...] = (),
    again_reason: str = "",
    now: datetime | None = None,
) -> Deviation:
    """Raise a deviation from excursions (or by hand, with batches named directly); every batch
    with a confirmed exposure to one of the excursions is linked for impact assessment. An
    excursion that is the source of a deviation already starts another one only with QA's reason
    why (``again_reason``, audited on the excursion): otherwise one event is investigated twice."""
    now = now or utcnow()
    earlier = _deviations_of(session, excursion_ids)
    if earlier and not again_reason.strip():
        listed = "; ".join(f"{ex_id} → {', '.join(numbers)}" for ex_id, numbers in sorted(earlier.items()))
        raise ConflictError(
            Reason(
                f"an excursion already has a deviation ({listed}): give the reason for another one",
                f"超标已有偏差（{listed}）：另开偏差须说明理由",
            )
        )
    dev = open_deviation(
        session,
        actor=actor,
        site=site,
        title=title,
        classification=classification,
        category=category,
        description=description,
        excursion_ids=excursion_ids,
        now=now,
    )
    batch_ids: dict[int, str] = {}
    if excursion_ids:
        for link in session.exec(
            select(ExcursionLink).where(
                ExcursionLink.excursion_id.in_(excursion_ids), ExcursionLink.status == "confirmed"
            )
        ):
            batch_ids[link.batch_id] = session.get(Batch, link.batch_id).number
    for number in batch_numbers:
        found = session.exec(select(Batch).where(Batch.number == number)).first()
        if found is None:
            raise NotFoundError(Reason(f"no batch {number!r}", f"没有批次 {number!r}"))
        batch_ids[found.id] = found.number
    for batch_id, number in sorted(batch_ids.items()):
        attach_batch(session, dev=dev, batch_id=batch_id, batch_number=number, actor=actor.username, now=now)
    for ex_id, numbers in sorted(earlier.items()):
        audit.record(
            session,
            actor=actor.username,
            action="excursion.another_deviation",
            entity="excursion",
            entity_key=str(ex_id),
            before={"deviations": numbers},
            after={"deviations": [*numbers, dev.number]},
            reason=again_reason.strip(),
            at=now,
        )
    return dev


def _deviations_of(session: Session, excursion_ids: list[int]) -> dict[int, list[str]]:
    """The deviations each of ``excursion_ids`` is a source of already (by number)."""
    found: dict[int, list[str]] = {}
    if excursion_ids:
        for ex_id, number in session.exec(
            select(DeviationExcursion.excursion_id, Deviation.number)
            .join(Deviation, Deviation.id == DeviationExcursion.deviation_id)
            .where(DeviationExcursion.excursion_id.in_(excursion_ids))
            .order_by(Deviation.number)
        ):
            found.setdefault(ex_id, []).append(number)
    return found


def uncovered_action_exposures(session: Session, batch: Batch) -> list[ExcursionLink]:
    """Confirmed exposures to action-level excursions with no deviation linked to this batch
    that was raised from the excursion (GMP 2010 Art. 250: report and investigate)."""
    found = []
    for link in session.exec(
        select(ExcursionLink).where(ExcursionLink.batch_id == batch.id, ExcursionLink.status == "confirmed")
    ):
        ex = session.get(Excursion, link.excursion_id)
        if ex.level != "action":
            continue
        covered = session.exec(
            select(DeviationBatch.id)
            .join(DeviationExcursion, DeviationExcursion.deviation_id == DeviationBatch.deviation_id)
            .where(DeviationBatch.batch_id == batch.id, DeviationExcursion.excursion_id == link.excursion_id)
        ).first()
        if covered is None:
            found.append(link)
    return found
