"""After release, the batch keeps listening (issue 15 item 2; GMP 2010 Art. 230, 250; the
suggested EM mapping's "impact assessment of in-process and released batches", regulatory.md §8).

At release the QP signed the batch's environmental picture (:mod:`.environment`); it is kept on
the batch (``env_hash``, ``env_picture``). :func:`watch` compares each released batch's picture
as it stands with the one registered: a buffered counter coming back with an action excursion,
any late or backfilled reading during a step, a new excursion or proposed link, a re-evaluation
that judged the step's readings again or reshaped or superseded an excursion, a deviation linked
or changing — each difference
raises a :class:`~.models.PostReleaseEvent` naming what changed. QA assesses the open events
with an e-signature (:func:`assess`): no impact, or a deviation opened (linked to the batch).
The batch view, ``tracker audit verify`` and the annual report show them.

Who runs the watcher: ``tracker batch watch`` (once, or ``--every SECONDS`` beside the
ingesters), and every reader that brings the exposure proposals up to date (``batch show``,
the batch page, the API), before it reads.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import update
from sqlmodel import Session, select
from typing_extensions import TypedDict

from tracker.core import audit
from tracker.core.errors import ConflictError, InvalidInputError, Reason
from tracker.core.timeutil import iso_utc, utcnow
from tracker.identity import signatures
from tracker.identity.users import Authenticated, require_role
from tracker.quality.batches.environment import Environment, environment_content, environment_hash
from tracker.quality.batches.linking import links_of, sync_links, uncovered_action_exposures
from tracker.quality.batches.models import (
    POST_RELEASE_OUTCOMES,
    Batch,
    PostReleaseAssessment,
    PostReleaseEvent,
)
from tracker.quality.batches.review import review_items
from tracker.quality.deviations import Deviation, attach_batch, get_deviation

SYSTEM = "system:post-release"
Change = dict[str, str]  # {"kind", "en", "zh"}


# --------------------------------------------------------------------------- what changed


def _by(rows: list[dict], key: Callable[[dict], object]) -> dict:
    return {key(r): r for r in rows}


def _excursion_changes(before: list[dict], after: list[dict]) -> list[Change]:
    old, out = _by(before, lambda r: r["id"]), []
    for ex in after:
        was = old.get(ex["id"])
        what = f"{ex['type']} {ex['level']} {ex['monitor']} {ex['started_at']}–{ex['ended_at'] or '…'}"
        if was is None:
            out.append(
                {
                    "kind": "excursion",
                    "en": f"new excursion {ex['id']}: {what}",
                    "zh": f"新增超标 {ex['id']}：{what}",
                }
            )
            continue
        moved = [k for k in ("level", "status", "started_at", "ended_at", "peak") if was[k] != ex[k]]
        if moved:
            said = ", ".join(f"{k} {was[k]} → {ex[k]}" for k in moved)
            out.append(
                {
                    "kind": "excursion",
                    "en": f"excursion {ex['id']} changed: {said}",
                    "zh": f"超标 {ex['id']} 发生变化：{said}",
                }
            )
    return out


def _link_changes(before: list[dict], after: list[dict]) -> list[Change]:
    old, out = _by(before, lambda r: r["id"]), []
    for link in after:
        was = old.get(link["id"])
        if was is None:
            out.append(
                {
                    "kind": "link",
                    "en": f"exposure link {link['id']} proposed: excursion {link['excursion']} × step {link['step']}",
                    "zh": f"新增关联建议 {link['id']}：超标 {link['excursion']} × 工序 {link['step']}",
                }
            )
        elif (was["status"], was["reason"]) != (link["status"], link["reason"]):
            out.append(
                {
                    "kind": "link",
                    "en": f"exposure link {link['id']}: {was['status']} → {link['status']}",
                    "zh": f"关联建议 {link['id']}：{was['status']} → {link['status']}",
                }
            )
    return out


def _coverage_changes(before: list[dict], after: list[dict]) -> list[Change]:
    zero = {"readings": 0, "invalid": 0, "alert": 0, "action": 0}
    old, out = _by(before, lambda r: (r["step"], r["monitor"])), []
    for row in after:
        was = {**zero, **old.get((row["step"], row["monitor"]), {})}
        more, bad = row["readings"] - was["readings"], row["invalid"] - was["invalid"]
        if more or bad:
            where = f"{row['monitor']} during step {row['step']}"
            out.append(
                {
                    "kind": "late_readings",
                    "en": f"late readings: {where}: {more:+d} values ({bad:+d} invalid)",
                    "zh": f"迟到读数：{row['monitor']}（工序 {row['step']} 期间）：{more:+d} 个数值（无效 {bad:+d}）",
                }
            )
        elif (was["alert"], was["action"]) != (row.get("alert", 0), row.get("action", 0)):
            verdicts = f"alert {was['alert']} → {row['alert']}, action {was['action']} → {row['action']}"
            out.append(
                {
                    "kind": "reevaluation",
                    "en": f"readings judged again: {row['monitor']} during step {row['step']}: {verdicts}",
                    "zh": f"读数重新评价：{row['monitor']}（工序 {row['step']} 期间）：警戒 {was['alert']} → "
                    f"{row['alert']}，纠偏 {was['action']} → {row['action']}",
                }
            )
    return out


def _invalid_changes(before: list[dict], after: list[dict]) -> list[Change]:
    old, out = _by(before, lambda r: r["key"]), []
    for row in after:
        was = old.get(row["key"])
        what = f"{row['monitor']} {row['start']}–{row['end']} ({row['reasons']})"
        if was is None:
            out.append(
                {"kind": "invalid_period", "en": f"new invalid period {what}", "zh": f"新增无效时段 {what}"}
            )
        elif was != row:
            out.append(
                {
                    "kind": "invalid_period",
                    "en": f"invalid period {what}: exposed {was['exposed']} → {row['exposed']}",
                    "zh": f"无效时段 {what}：评估 {was['exposed']} → {row['exposed']}",
                }
            )
    return out


def _deviation_changes(before: list[dict], after: list[dict]) -> list[Change]:
    old, out = _by(before, lambda r: r["number"]), []
    for dev in after:
        was = old.get(dev["number"])
        if was is None:
            out.append(
                {
                    "kind": "deviation",
                    "en": f"deviation {dev['number']} linked to the batch ({dev['status']})",
                    "zh": f"偏差 {dev['number']} 关联到本批（{dev['status']}）",
                }
            )
        elif (was["status"], was["impact"]) != (dev["status"], dev["impact"]):
            out.append(
                {
                    "kind": "deviation",
                    "en": f"deviation {dev['number']}: {was['status']} → {dev['status']}, impact {was['impact']} → {dev['impact']}",
                    "zh": f"偏差 {dev['number']}：{was['status']} → {dev['status']}，影响 {was['impact']} → {dev['impact']}",
                }
            )
    return out


def _viable_changes(before: list[dict], after: list[dict]) -> list[Change]:
    """Viable results that arrived (or samples added) since the picture registered before."""
    old, out = _by(before, lambda r: r["code"]), []
    for s in after:
        was = old.get(s["code"])
        if was is not None and was == s:
            continue
        what = f"{s['code']} ({s['method']} at {s['location']})"
        if s["result"] == "open":
            en, zh = f"viable sample {what} added", f"新增微生物样品 {what}"
        elif s["result"] == "closed":
            en = f"viable result {what}: {s['count']} cfu, {s['verdict']}" + (
                f", {s['organism']}" if s["organism"] else ""
            )
            zh = f"微生物结果 {what}：{s['count']} cfu，{s['verdict']}" + (
                f"，{s['organism']}" if s["organism"] else ""
            )
        else:
            en = f"viable sample {what} {s['result']}: {s['void_reason']}"
            zh = f"微生物样品 {what} {s['result']}：{s['void_reason']}"
        out.append({"kind": "viable", "en": en, "zh": zh})
    return out


def changes_between(before: Environment, after: Environment) -> list[Change]:
    """Every difference between two pictures, in words (what QA assesses)."""
    return (
        _coverage_changes(before.get("coverage", []), after["coverage"])
        + _excursion_changes(before.get("excursions", []), after["excursions"])
        + _link_changes(before.get("links", []), after["links"])
        + _invalid_changes(before.get("invalid_periods", []), after["invalid_periods"])
        + _deviation_changes(before.get("deviations", []), after["deviations"])
        + _viable_changes(before.get("viable", []), after.get("viable", []))
    )


# --------------------------------------------------------------------------- the watcher


def _register(session: Session, batch: Batch, env: Environment, old_hash: str) -> bool:
    """Make ``env`` the batch's registered picture, unless another writer did first."""
    moved = session.execute(
        update(Batch)
        .where(Batch.id == batch.id, Batch.env_hash == old_hash)
        .values(
            env_hash=environment_hash(env), env_picture=json.dumps(env, ensure_ascii=False, sort_keys=True)
        )
    ).rowcount
    session.refresh(batch)
    return moved == 1


def remember_release(session: Session, batch: Batch, *, now: datetime | None = None) -> None:
    """At release: the picture the QP signed becomes the one the watcher compares with."""
    _register(session, batch, environment_content(session, batch, now=now), batch.env_hash)


def _watch_one(session: Session, batch: Batch, *, actor: str, now: datetime) -> PostReleaseEvent | None:
    sync_links(session, batch=batch, now=now)
    env = environment_content(session, batch, now=now)
    old_hash = batch.env_hash
    if environment_hash(env) == old_hash:
        return None
    if not old_hash:  # released before the watcher existed: its picture now is where it starts
        _register(session, batch, env, old_hash)
        return None
    before = json.loads(batch.env_picture or "{}")
    if not _register(session, batch, env, old_hash):
        return None
    changes = changes_between(before, env)
    event = PostReleaseEvent(
        batch_id=batch.id,
        raised_at=now,
        raised_by=actor,
        changes=json.dumps(changes, ensure_ascii=False),
        kinds=",".join(sorted({c["kind"] for c in changes})),
        previous_hash=old_hash,
        picture_hash=batch.env_hash,
        picture=batch.env_picture,
    )
    session.add(event)
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="batch.post_release_event",
        entity="batch",
        entity_key=batch.number,
        after={"event": event.id, "kinds": event.kinds, "picture_hash": event.picture_hash},
        reason="; ".join(c["en"] for c in changes)[:2000],
        at=now,
    )
    return event


def watch(
    session: Session, *, batch: Batch | None = None, actor: str = SYSTEM, now: datetime | None = None
) -> list[PostReleaseEvent]:
    """Raise a post-release event for each released batch (or ``batch``, if released) whose
    environmental picture changed since it was last registered."""
    now = now or utcnow()
    if batch is not None:
        batches = [batch] if batch.status == "released" else []
    else:
        batches = list(session.exec(select(Batch).where(Batch.status == "released").order_by(Batch.id)))
    return [e for b in batches if (e := _watch_one(session, b, actor=actor, now=now)) is not None]


# --------------------------------------------------------------------------- QA's assessment


def events_of(session: Session, batch: Batch, *, status: str | None = None) -> list[PostReleaseEvent]:
    query = select(PostReleaseEvent).where(PostReleaseEvent.batch_id == batch.id)
    if status:
        query = query.where(PostReleaseEvent.status == status)
    return list(session.exec(query.order_by(PostReleaseEvent.id)))


def assessment_content(session: Session, row: PostReleaseAssessment) -> dict:
    """What QA signs: the events assessed, with what changed, the conclusion and the picture."""
    batch = session.get(Batch, row.batch_id)
    events = session.exec(
        select(PostReleaseEvent).where(PostReleaseEvent.assessment_id == row.id).order_by(PostReleaseEvent.id)
    ).all()
    return {
        "batch": batch.number,
        "assessment": row.id,
        "events": [
            {
                "id": e.id,
                "raised_at": iso_utc(e.raised_at),
                "changes": json.loads(e.changes),
                "picture_hash": e.picture_hash,
            }
            for e in events
        ],
        "outcome": row.outcome,
        "deviation": get_number(session, row.deviation_id),
        "text": row.assessment,
        "picture": json.loads(row.picture),
    }


def get_number(session: Session, deviation_id: int | None) -> str | None:
    return session.get(Deviation, deviation_id).number if deviation_id else None


def assessment_gaps(session: Session, batch: Batch, *, now: datetime) -> list[Reason]:
    """What QA must settle before concluding: undecided links, unassessed invalid periods, a
    confirmed action exposure with no deviation raised from it (as the release gate)."""
    gaps = [
        Reason(f"exposure link {link.id} is undecided", f"关联建议 {link.id} 尚未确认或否定")
        for link in links_of(session, batch)
        if link.status == "proposed"
    ]
    gaps += [
        Reason(f"review item {item.key} is unassessed", f"例外审核项 {item.key} 尚未评估")
        for item in review_items(session, batch, now=now)
        if item.kind != "excursion" and item.exposed == "unassessed"
    ]
    gaps += [
        Reason(
            f"confirmed exposure to action excursion {link.excursion_id} has no deviation linked to this batch",
            f"已确认受纠偏超标 {link.excursion_id} 影响，但没有与本批关联的偏差",
        )
        for link in uncovered_action_exposures(session, batch)
    ]
    return gaps


def _check_outcome(
    session: Session,
    batch: Batch,
    outcome: str,
    text: str,
    deviation: str | None,
    *,
    actor: str,
    now: datetime,
) -> Deviation | None:
    """The outcome and reasoning given; a named deviation is linked to the batch."""
    if outcome not in POST_RELEASE_OUTCOMES:
        raise InvalidInputError(
            Reason(
                "the outcome is no_impact or deviation",
                "评估结论须为 no_impact（无影响）或 deviation（已开启偏差）",
            )
        )
    if not text or not text.strip():
        raise InvalidInputError(Reason("an assessment needs its reasoning in words", "评估须以文字说明理由"))
    if (outcome == "deviation") != bool(deviation):
        raise InvalidInputError(
            Reason(
                "name the deviation opened (and only with the outcome deviation)",
                "结论为已开启偏差时须写明偏差编号（且仅此时）",
            )
        )
    if deviation is None:
        return None
    dev = get_deviation(session, deviation)
    attach_batch(session, dev=dev, batch_id=batch.id, batch_number=batch.number, actor=actor, now=now)
    return dev


def assess(
    session: Session,
    *,
    signer: Authenticated,
    batch: Batch,
    outcome: str,
    assessment: str,
    deviation: str | None = None,
    now: datetime | None = None,
) -> PostReleaseAssessment:
    """QA concludes on every open post-release event of a released batch, by e-signature."""
    require_role(signer, "qa", action=Reason("assessing post-release events", "评估放行后事件"))
    now = now or utcnow()
    watch(session, batch=batch, actor=signer.username, now=now)
    open_events = events_of(session, batch, status="open")
    if not open_events:
        raise ConflictError(
            Reason(
                f"batch {batch.number} has no open post-release event",
                f"批次 {batch.number} 没有待评估的放行后事件",
            )
        )
    dev = _check_outcome(session, batch, outcome, assessment, deviation, actor=signer.username, now=now)
    gaps = assessment_gaps(session, batch, now=now)
    if gaps:
        raise ConflictError(
            Reason(
                f"the post-release events of {batch.number} cannot be concluded yet",
                f"批次 {batch.number} 的放行后事件尚不能作出结论",
            ),
            gaps,
        )
    env = environment_content(session, batch, now=now)
    row = PostReleaseAssessment(
        batch_id=batch.id,
        outcome=outcome,
        deviation_id=dev.id if dev else None,
        assessment=assessment.strip(),
        assessed_by=signer.username,
        assessed_at=now,
        picture_hash=environment_hash(env),
        picture=json.dumps(env, ensure_ascii=False, sort_keys=True),
    )
    session.add(row)
    session.flush()
    for event in open_events:
        event.status, event.assessment_id = "assessed", row.id
        session.add(event)
    session.flush()
    _sign(session, signer, batch, row, dev, now)
    _register(session, batch, env, batch.env_hash)
    return row


def _sign(
    session: Session, signer: Authenticated, batch: Batch, row: PostReleaseAssessment, dev, now: datetime
) -> None:
    said = "no impact" if row.outcome == "no_impact" else f"deviation {dev.number}"
    sig = signatures.sign(
        session,
        signer=signer,
        meaning="reviewed",
        entity="batch",
        entity_key=batch.number,
        scope=f"post_release:{row.id}",
        statement=f"QA assesses the environmental facts that reached batch {batch.number} after its release: {said}",
        content=assessment_content(session, row),
        now=now,
    )
    audit.record(
        session,
        actor=signer.username,
        action="batch.post_release_assess",
        entity="batch",
        entity_key=batch.number,
        after={
            "assessment": row.id,
            "outcome": row.outcome,
            "deviation": dev.number if dev else None,
            "signature": sig.seal,
        },
        reason=row.assessment,
        at=now,
    )


# --------------------------------------------------------------------------- read view


class PostReleaseDoc(TypedDict):
    """One post-release event as the batch view, the API and the report show it."""

    id: int
    raised_at: str
    raised_by: str
    kinds: list[str]
    changes: list[Change]
    status: str  # open | assessed
    outcome: str | None  # no_impact | deviation
    deviation: str | None
    assessment: str | None
    assessed_by: str | None
    assessed_at: str | None


def event_doc(session: Session, event: PostReleaseEvent) -> PostReleaseDoc:
    row = session.get(PostReleaseAssessment, event.assessment_id) if event.assessment_id else None
    return {
        "id": event.id,
        "raised_at": iso_utc(event.raised_at),
        "raised_by": event.raised_by,
        "kinds": [k for k in event.kinds.split(",") if k],
        "changes": json.loads(event.changes),
        "status": event.status,
        "outcome": row.outcome if row else None,
        "deviation": get_number(session, row.deviation_id) if row else None,
        "assessment": row.assessment if row else None,
        "assessed_by": row.assessed_by if row else None,
        "assessed_at": iso_utc(row.assessed_at) if row else None,
    }


def post_release_docs(session: Session, batch: Batch) -> list[PostReleaseDoc]:
    return [event_doc(session, e) for e in events_of(session, batch)]
