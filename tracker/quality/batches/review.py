"""Review by exception (China GMP Annex 1 第十一条 via regulatory.md §6.5: batch review includes EM).

For a batch, everything environmental that happened in its rooms during its steps and needs a
verdict: every excursion (limit, data gap, recurrence, adverse trend, recovery) proposed
against a step, and every period of invalid readings (fault, calibration, maintenance,
calibration overdue, out of instrument range). Each carries ``exposed: yes | no |
unassessed``. Excursion verdicts are the link decisions (:mod:`tracker.quality.batches.linking`);
invalid periods are assessed here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import pairwise
from typing import NotRequired

from sqlalchemy import or_
from sqlmodel import Session, select
from typing_extensions import TypedDict

from tracker.core import audit
from tracker.core.errors import ConflictError, InvalidInputError, Reason
from tracker.core.timeutil import iso_utc, utcnow
from tracker.facility.models import Monitor, Room, Site, containing_rooms
from tracker.facility.policy import compliance_of
from tracker.identity.users import Authenticated, require_role
from tracker.monitoring.excursions import Excursion, source_code
from tracker.monitoring.readings import Reading
from tracker.quality.batches.linking import sync_links
from tracker.quality.batches.models import Batch, ExcursionLink, ProcessStep, ReviewAssessment
from tracker.quality.batches.steps import steps_of

EXPOSED = {"confirmed": "yes", "rejected": "no", "proposed": "unassessed"}


class ReviewItemDoc(TypedDict):
    """One review item as shown. ``kind`` is ``invalid_period`` for invalid readings; for an
    excursion the excursion's own ``kind`` (particles, pressure, …) takes its place, so the
    ``key`` (``link:…`` or ``invalid:…``) is what tells the two apart."""

    key: str
    kind: str
    step: int
    monitor: str
    room: str
    start: str
    end: str | None
    exposed: str  # yes | no | unassessed
    decided_by: str | None
    reason: str | None
    # an excursion's item
    link: NotRequired[int]
    excursion: NotRequired[int]
    type: NotRequired[str]
    level: NotRequired[str]
    channel: NotRequired[str | None]
    peak: NotRequired[int | float | None]
    limit: NotRequired[int | float | None]
    excursion_status: NotRequired[str]
    # an invalid period's item
    invalid_reasons: NotRequired[str]


@dataclass
class ReviewItem:
    key: str
    kind: str  # excursion | invalid_period
    step_id: int
    monitor: str
    room: str
    start: datetime
    end: datetime | None
    exposed: str  # yes | no | unassessed
    detail: dict = field(default_factory=dict)

    def to_json(self) -> ReviewItemDoc:
        return {
            "key": self.key,
            "kind": self.kind,
            "step": self.step_id,
            "monitor": self.monitor,
            "room": self.room,
            "start": iso_utc(self.start),
            "end": iso_utc(self.end),
            "exposed": self.exposed,
            **self.detail,
        }


def monitors_for(session: Session, step: ProcessStep) -> list[Monitor]:
    rooms = [r.id for r in containing_rooms(session, session.get(Room, step.room_id))]
    return list(
        session.exec(
            select(Monitor).where(
                or_(
                    Monitor.room_id.in_(rooms),
                    (Monitor.kind == "pressure") & Monitor.reference_room_id.in_(rooms),
                )
            )
        )
    )


def invalid_periods(
    session: Session, step: ProcessStep, *, now: datetime
) -> list[tuple[Monitor, datetime, datetime, str]]:
    """Runs of invalid readings during the step per monitor: (monitor, first, last, reasons).
    A run breaks where valid data or a silence longer than the gap rule lies between."""
    site = session.get(Site, session.get(Room, step.room_id).site_id)
    factor = compliance_of(session, site).gap_factor
    periods = []
    for monitor in monitors_for(session, step):
        rows = session.exec(
            select(Reading.event_time, Reading.invalid_reason)
            .where(
                Reading.monitor_id == monitor.id,
                Reading.event_time >= step.start,
                Reading.event_time <= (step.end or now),
            )
            .order_by(Reading.event_time)
        ).all()
        run: list[tuple[datetime, str]] = []
        gap = timedelta(seconds=monitor.interval_s * factor)
        for at, reason in [*rows, (None, None)]:
            if reason is not None and (not run or at - run[-1][0] <= gap):
                run.append((at, reason))
                continue
            if run:
                periods.append((monitor, run[0][0], run[-1][0], ",".join(sorted({r for _, r in run}))))
                run = []
            if reason is not None:
                run.append((at, reason))
    return periods


#: grades whose steps must run under particle monitoring (Annex 1 第十条(二)-(三); regulatory.md §5)
COVERED_GRADES = ("A", "B")


def coverage_holes(
    session: Session, step: ProcessStep, *, now: datetime
) -> list[tuple[str, datetime, datetime | None]]:
    """Stretches of a grade A or B step during which a particle monitor of its room was silent
    (longer than the gap factor × its interval): ``(monitor code, from, to)``; ``("", start,
    end)`` when the room has no particle monitor at all. A silence still going on in a running
    step has no end (``None``): what the item says does not change from one look to the next.

    Annex 1 第十条 asks grade A/B operations to be monitored throughout; a stretch without
    readings proves nothing, so the release gate asks QA to assess it like an invalid period
    (issue 14 item 5). Readings that arrived but were invalid (fault, calibration overdue,
    inhibited) are not holes here: they are the step's invalid periods already, one item each.
    Nor is a silence the gap rule found already: a data gap excursion of the monitor linked to
    the step (proposed, confirmed or rejected) is that silence's item, decided through its link."""
    room = session.get(Room, step.room_id)
    if room.grade not in COVERED_GRADES:
        return []
    end = step.end or now
    monitors = session.exec(
        select(Monitor).where(Monitor.room_id == room.id, Monitor.kind == "particles", Monitor.active)
    ).all()
    if not monitors:
        return [("", step.start, step.end)]
    factor = compliance_of(session, session.get(Site, room.site_id)).gap_factor
    holes = []
    for monitor in monitors:
        threshold = timedelta(seconds=monitor.interval_s * factor)
        times = session.exec(
            select(Reading.event_time)
            .where(
                Reading.monitor_id == monitor.id,
                Reading.event_time >= step.start,
                Reading.event_time <= end,
            )
            .distinct()
            .order_by(Reading.event_time)
        ).all()
        bounds = [step.start, *times, end]
        judged = _linked_gaps(session, step, monitor)
        holes += [
            (monitor.code, a, b if step.end is not None or b is not end else None)
            for a, b in pairwise(bounds)
            if b - a > threshold and not any(g < b and (h is None or h > a) for g, h in judged)
        ]
    return holes


def _linked_gaps(
    session: Session, step: ProcessStep, monitor: Monitor
) -> list[tuple[datetime, datetime | None]]:
    """The monitor's data gap excursions linked to the step (a link not withdrawn), as
    ``(from, to)``: no reading lies inside a hole, so a gap that overlaps one spans it."""
    return list(
        session.exec(
            select(Excursion.started_at, Excursion.ended_at)
            .join(ExcursionLink, ExcursionLink.excursion_id == Excursion.id)
            .where(
                ExcursionLink.step_id == step.id,
                ExcursionLink.status != "withdrawn",
                Excursion.monitor_id == monitor.id,
                Excursion.type == "data_gap",
                Excursion.status != "superseded",
            )
        ).all()
    )


def review_items(session: Session, batch: Batch, *, now: datetime | None = None) -> list[ReviewItem]:
    """Every exception around the batch, with its exposure verdict, from the links as stored: a
    read that writes nothing (callers bring the proposals up to date first where they must,
    :func:`tracker.quality.batches.linking.sync_links`)."""
    now = now or utcnow()
    assessed = {
        a.item_key: a
        for a in session.exec(select(ReviewAssessment).where(ReviewAssessment.batch_id == batch.id))
    }
    items: list[ReviewItem] = []
    for step in steps_of(session, batch):
        for link, ex in session.exec(
            select(ExcursionLink, Excursion)
            .join(Excursion, Excursion.id == ExcursionLink.excursion_id)
            .where(ExcursionLink.step_id == step.id, ExcursionLink.status != "withdrawn")
            .order_by(Excursion.started_at)
        ).all():
            monitor_code = source_code(session, ex)
            items.append(
                ReviewItem(
                    key=f"link:{link.id}",
                    kind="excursion",
                    step_id=step.id,
                    monitor=monitor_code,
                    room=session.get(Room, ex.room_id).code,
                    start=ex.started_at,
                    end=ex.ended_at,
                    exposed=EXPOSED[link.status],
                    detail={
                        "link": link.id,
                        "excursion": ex.id,
                        "type": ex.type,
                        "level": ex.level,
                        "kind": ex.kind,
                        "channel": ex.channel or None,
                        "peak": ex.peak,
                        "limit": ex.limit_value,
                        "excursion_status": ex.status,
                        "decided_by": link.decided_by,
                        "reason": link.reason,
                    },
                )
            )
        for monitor, first, last, reasons in invalid_periods(session, step, now=now):
            key = f"invalid:{monitor.code}:{iso_utc(first)}"
            verdict = assessed.get(key)
            items.append(
                ReviewItem(
                    key=key,
                    kind="invalid_period",
                    step_id=step.id,
                    monitor=monitor.code,
                    room=session.get(Room, monitor.room_id).code,
                    start=first,
                    end=last,
                    exposed="unassessed" if verdict is None else ("yes" if verdict.exposed else "no"),
                    detail={
                        "invalid_reasons": reasons,
                        "decided_by": verdict.assessed_by if verdict else None,
                        "reason": verdict.reason if verdict else None,
                    },
                )
            )
        for code, first, last in coverage_holes(session, step, now=now):
            key = f"coverage:{code or step.id}:{iso_utc(first)}"
            verdict = assessed.get(key)
            items.append(
                ReviewItem(
                    key=key,
                    kind="coverage_gap",
                    step_id=step.id,
                    monitor=code,
                    room=session.get(Room, step.room_id).code,
                    start=first,
                    end=last,
                    exposed="unassessed" if verdict is None else ("yes" if verdict.exposed else "no"),
                    detail={
                        "invalid_reasons": "no_particle_monitor" if not code else "no_readings",
                        "decided_by": verdict.assessed_by if verdict else None,
                        "reason": verdict.reason if verdict else None,
                    },
                )
            )
    return items


def assess_item(
    session: Session,
    *,
    actor: Authenticated,
    batch: Batch,
    item_key: str,
    exposed: bool,
    reason: str,
    now: datetime | None = None,
) -> ReviewAssessment:
    """QA's verdict on an invalid period (excursions are decided through their link)."""
    require_role(actor, "qa", action=Reason("assessing a review item", "评估例外审核项"))
    if not reason or not reason.strip():
        raise InvalidInputError(Reason("an assessment needs its reason", "评估须说明理由"))
    if item_key.startswith("link:"):
        raise InvalidInputError(
            Reason(
                "excursions are assessed by deciding their link (tracker link decide)",
                "超标通过确认或否定其关联建议来评估（tracker link decide）",
            )
        )
    now = now or utcnow()
    sync_links(session, batch=batch, now=now)
    if item_key not in {i.key for i in review_items(session, batch, now=now)}:
        raise InvalidInputError(
            Reason(
                f"{item_key!r} is not a review item of batch {batch.number}",
                f"{item_key!r} 不是批次 {batch.number} 的例外审核项",
            )
        )
    if session.exec(
        select(ReviewAssessment).where(
            ReviewAssessment.batch_id == batch.id, ReviewAssessment.item_key == item_key
        )
    ).first():
        raise ConflictError(
            Reason(
                f"{item_key} of batch {batch.number} is assessed already",
                f"批次 {batch.number} 的 {item_key} 已评估",
            )
        )
    row = ReviewAssessment(
        batch_id=batch.id,
        item_key=item_key,
        exposed=exposed,
        reason=reason.strip(),
        assessed_by=actor.username,
        assessed_at=now,
    )
    session.add(row)
    audit.record(
        session,
        actor=actor.username,
        action="batch.assess_item",
        entity="batch",
        entity_key=batch.number,
        after={"item": item_key, "exposed": exposed},
        reason=row.reason,
        at=now,
    )
    return row
