"""Read views across the quality package: deviation documents name their batches, and
:mod:`tracker.quality.deviations` may not import the batch records that number them, so the
documents are put together here (the layer above both). Like every read view, these write
nothing; the CLI, the JSON API and the pages only format them."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import case, func
from sqlmodel import Session, select

from tracker.core.audit import AuditEvent
from tracker.core.errors import NotFoundError, Reason
from tracker.core.timeutil import utcnow
from tracker.facility.limits import STATES, Bounds
from tracker.facility.models import Monitor, Room, Site, resolved_monitors
from tracker.facility.notify import redact
from tracker.facility.roomstate import RoomStates
from tracker.monitoring.excursions import (
    Excursion,
    ExcursionDoc,
    needs_acknowledgement_clause,
    source_code,
    to_json,
)
from tracker.monitoring.outbox import NotificationAttempt, NotificationOutbox
from tracker.monitoring.readings import Reading
from tracker.quality.batches.models import Batch, ExcursionLink, ProcessStep
from tracker.quality.deviations import (
    Deviation,
    DeviationDoc,
    DeviationExcursion,
    deviation_document,
    list_deviations,
)


def _batch_numbers(session: Session) -> dict[int, str]:
    return dict(session.exec(select(Batch.id, Batch.number)).all())


def deviation_view(session: Session, dev: Deviation) -> DeviationDoc:
    """One deviation (``tracker deviation show``, its page, ``GET /api/v1/deviations/{number}``)."""
    return deviation_document(session, dev, batch_numbers=_batch_numbers(session))


def deviation_views(session: Session, *, status: str | None = None) -> list[DeviationDoc]:
    """The deviations in ``status`` (``not_closed``: every one still open), by number."""
    numbers = _batch_numbers(session)
    return [
        deviation_document(session, dev, batch_numbers=numbers)
        for dev in list_deviations(session, status=status)
    ]


# --------------------------------------------------------------------------- the excursion queue

#: the queue's order: action before alert, measured breaches before data gaps (a burst of gaps
#: from a gateway outage must never push a measured action excursion off the first page), then
#: the newest first
LEVELS = ("action", "alert")


@dataclass(frozen=True)
class QueueFilter:
    """What the queue and the dashboard's list show (every field optional)."""

    room: str | None = None
    grade: str | None = None
    type: str | None = None
    level: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    pending: bool = True  # only those awaiting an acknowledgement


class QueueRow(ExcursionDoc):
    """An excursion as the queue lists it: with its room's grade and the deviations raised from it."""

    grade: str
    deviations: list[str]
    needs_acknowledgement: bool


@dataclass
class QueuePage:
    rows: list[QueueRow]
    total: int  # every excursion the filter matches
    by_level: dict[str, int]  # the same, counted by level: the counts add up to ``total``
    offset: int
    limit: int

    @property
    def first(self) -> int:
        return self.offset + 1 if self.rows else 0

    @property
    def last(self) -> int:
        return self.offset + len(self.rows)


def _queue_conditions(f: QueueFilter) -> list:
    found = []
    if f.pending:
        found.append(needs_acknowledgement_clause())
    else:
        found.append(Excursion.status != "superseded")
    if f.room:
        found.append(Room.code == f.room)
    if f.grade:
        found.append(Room.grade == f.grade)
    if f.type:
        found.append(Excursion.type == f.type)
    if f.level:
        found.append(Excursion.level == f.level)
    if f.since is not None:
        found.append(func.coalesce(Excursion.ended_at, Excursion.started_at) >= f.since)
    if f.until is not None:
        found.append(Excursion.started_at <= f.until)
    return found


def queue_page(session: Session, *, filters: QueueFilter, offset: int = 0, limit: int = 30) -> QueuePage:
    """One page of excursions, worst first, with the filter's total and its counts by level (in the
    database: a page costs the same with 60 excursions pending or 6,000)."""
    where = _queue_conditions(filters)
    counts = dict(
        session.exec(
            select(Excursion.level, func.count())
            .join(Room, Room.id == Excursion.room_id)
            .where(*where)
            .group_by(Excursion.level)
        ).all()
    )
    by_level = {level: int(counts.pop(level, 0)) for level in LEVELS}
    by_level.update({k: int(v) for k, v in counts.items()})
    severity = case((Excursion.level == "action", 0), (Excursion.level == "alert", 1), else_=2)
    measured = case((Excursion.type == "data_gap", 1), else_=0)
    found = session.exec(
        select(Excursion, Monitor.code, Room.code, Room.grade)
        .join(Monitor, Monitor.id == Excursion.monitor_id)
        .join(Room, Room.id == Excursion.room_id)
        .where(*where)
        .order_by(severity, measured, Excursion.started_at.desc(), Excursion.id.desc())
        .offset(offset)
        .limit(limit)
    ).all()
    devs: dict[int, list[str]] = {}
    ids = [ex.id for ex, *_ in found]
    if ids:
        for ex_id, number in session.exec(
            select(DeviationExcursion.excursion_id, Deviation.number)
            .join(Deviation, Deviation.id == DeviationExcursion.deviation_id)
            .where(DeviationExcursion.excursion_id.in_(ids))
            .order_by(Deviation.number)
        ):
            devs.setdefault(ex_id, []).append(number)
    rows = [
        QueueRow(
            **to_json(ex, monitor, room),
            grade=grade,
            deviations=devs.get(ex.id, []),
            needs_acknowledgement=ex.needs_acknowledgement,
        )
        for ex, monitor, room, grade in found
    ]
    return QueuePage(rows=rows, total=sum(by_level.values()), by_level=by_level, offset=offset, limit=limit)


# --------------------------------------------------------------------------- one excursion

#: the audit actions that concern an excursion row (``audit_event.action`` is indexed)
EXCURSION_ACTIONS = (
    "excursion.acknowledge",
    "excursion.reshape",
    "excursion.supersede",
    "excursion.another_deviation",
)
#: the chart shows this much before and after the episode
CHART_MARGIN = timedelta(minutes=30)


@dataclass
class ExcursionView:
    """Everything QA needs to decide on one excursion (``/excursions/{id}``)."""

    excursion: QueueRow
    room_name: str
    room_name_en: str
    unit_kind: str
    chart_start: datetime
    chart_end: datetime
    #: the bounds in force for the monitor and channel now, per room state
    bounds: dict[str, Bounds]
    #: the room's state over the chart window: (from, to, state)
    states: list[tuple[datetime, datetime, str]]
    readings: list[dict]
    readings_total: int
    links: list[dict]
    deviations: list[dict]
    notifications: list[dict]
    audit: list[dict]


def excursion_view(session: Session, excursion_id: int, *, now: datetime | None = None) -> ExcursionView:
    ex = session.get(Excursion, excursion_id)
    if ex is None:
        raise NotFoundError(Reason(f"no excursion {excursion_id}", f"没有超标记录 {excursion_id}"))
    now = now or utcnow()
    monitor = session.get(Monitor, ex.monitor_id) if ex.monitor_id is not None else None  # viable: none
    room = session.get(Room, ex.room_id)
    devs = session.exec(
        select(Deviation)
        .join(DeviationExcursion, DeviationExcursion.deviation_id == Deviation.id)
        .where(DeviationExcursion.excursion_id == ex.id)
        .order_by(Deviation.number)
    ).all()
    row = QueueRow(
        **to_json(ex, monitor.code if monitor else source_code(session, ex), room.code),
        grade=room.grade,
        deviations=[d.number for d in devs],
        needs_acknowledgement=ex.needs_acknowledgement,
    )
    end = ex.ended_at or ex.last_out_at or now
    start_c, end_c = ex.started_at - CHART_MARGIN, end + CHART_MARGIN
    site = session.get(Site, ex.site_id)
    bounds: dict[str, Bounds] = {}
    for resolved in resolved_monitors(session, site):
        if monitor is not None and resolved.monitor.id == monitor.id:
            for state in STATES:
                found = resolved.limits.for_reading(ex.channel, state)
                if found is not None and not found.empty:
                    bounds[state] = found
    states = RoomStates()
    states.refresh(session)
    timeline = states.timeline(room.id)
    spans: list[tuple[datetime, datetime, str]] = []
    cuts = [start_c, *(t for t in (timeline.times if timeline else []) if start_c < t < end_c), end_c]
    for a, b in itertools.pairwise(cuts):
        state = states.state(room.id, a)
        if spans and spans[-1][2] == state:
            spans[-1] = (spans[-1][0], b, state)
        else:
            spans.append((a, b, state))
    readings: list[dict] = []
    total = 0
    if monitor is not None:  # a viable result has no series of readings
        in_episode = (
            (Reading.monitor_id == monitor.id)
            & (Reading.channel == ex.channel)
            & (Reading.event_time >= ex.started_at)
            & (Reading.event_time <= end)
        )
        rows = session.exec(select(Reading).where(in_episode).order_by(Reading.event_time).limit(200))
        readings = [{"at": r.event_time, "value": r.value, "level": r.level, "state": r.state} for r in rows]
        total = session.exec(select(func.count()).select_from(Reading).where(in_episode)).one()
    links = [
        {
            "id": link.id,
            "status": link.status,
            "batch": batch.number,
            "step": step.name,
            "step_id": step.id,
            "step_room": step_room,
            "start": step.start,
            "end": step.end,
            "open_processing": step.open_processing,
            "decided_by": link.decided_by,
            "decided_at": link.decided_at,
            "reason": link.reason,
        }
        for link, step, batch, step_room in session.exec(
            select(ExcursionLink, ProcessStep, Batch, Room.code)
            .join(ProcessStep, ProcessStep.id == ExcursionLink.step_id)
            .join(Batch, Batch.id == ExcursionLink.batch_id)
            .join(Room, Room.id == ProcessStep.room_id)
            .where(ExcursionLink.excursion_id == ex.id)
            .order_by(ProcessStep.start, ExcursionLink.id)
        )
    ]
    notifications = []
    for out in session.exec(
        select(NotificationOutbox)
        .where(NotificationOutbox.excursion_id == ex.id)
        .order_by(NotificationOutbox.id)
    ):
        attempts = session.exec(
            select(NotificationAttempt)
            .where(NotificationAttempt.outbox_id == out.id)
            .order_by(NotificationAttempt.id)
        ).all()
        notifications.append(
            {
                "rule": out.rule,
                "step": out.step,
                "level": out.level,
                "target": redact(out.target),
                "status": out.status,
                "due_at": out.due_at,
                "sent_at": out.sent_at,
                "attempts": [{"at": a.at, "outcome": a.outcome, "error": a.error} for a in attempts],
            }
        )
    audit_rows = [
        {"at": e.at, "actor": e.actor, "action": e.action, "reason": e.reason, "after": e.after}
        for e in session.exec(
            select(AuditEvent)
            .where(
                AuditEvent.action.in_(EXCURSION_ACTIONS),
                AuditEvent.entity == "excursion",
                AuditEvent.entity_key == str(ex.id),
            )
            .order_by(AuditEvent.id)
        )
    ]
    return ExcursionView(
        excursion=row,
        room_name=room.name,
        room_name_en=room.name_en,
        unit_kind=ex.kind,
        chart_start=start_c,
        chart_end=end_c,
        bounds=bounds,
        states=spans,
        readings=readings,
        readings_total=int(total),
        links=links,
        deviations=[{"number": d.number, "title": d.title, "status": d.status} for d in devs],
        notifications=notifications,
        audit=audit_rows,
    )
