"""Operational state timeline of rooms (静态 at rest / 动态 in operation).

Readings are judged by the state of their room *at the reading's event time*, so the
timeline is a list of dated changes, not a current flag. Two sources feed it:

* manual changes (``tracker room state``), a step function of time;
* operation periods: an active batch process step puts its room and every room containing
  it in operation for the step's window (``tracker.quality.batches``). Periods overlay the manual
  timeline — while any period of a room's containment subtree is open the room is
  ``in_operation`` whatever the manual timeline says.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Column, Text, UniqueConstraint, func
from sqlmodel import Field, Session, SQLModel, select

from tracker.core import audit
from tracker.core.db import UTCDateTime
from tracker.core.errors import InvalidInputError, Reason, zh_words
from tracker.core.timeutil import utcnow
from tracker.facility.limits import STATES
from tracker.facility.models import Room, Site, find_room
from tracker.identity.signatures import Signature  # noqa: F401  (target of a foreign key)

DEFAULT_STATE = "at_rest"


class RoomStateChange(SQLModel, table=True):
    __tablename__ = "room_state_change"

    id: int | None = Field(default=None, primary_key=True)
    room_id: int = Field(foreign_key="room.id", index=True)
    state: str = Field(max_length=20)
    effective_at: datetime = Field(sa_type=UTCDateTime, nullable=False, index=True)
    recorded_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    recorded_by: str = Field(max_length=120)
    source: str = Field(default="manual", max_length=40)
    reason: str | None = Field(default=None, sa_column=Column(Text))
    #: a change recorded past the backdating limit, or one that superseded or reshaped
    #: excursions, carries QA's approving e-signature and the excursions it touched (JSON ids)
    approval_signature_id: int | None = Field(default=None, foreign_key="signature.id")
    affected_excursions: str | None = Field(default=None, sa_column=Column(Text))


def set_room_state(
    session: Session,
    *,
    room_code: str,
    state: str,
    effective_at: datetime,
    actor: str,
    reason: str | None = None,
    site_code: str | None = None,
    source: str = "manual",
    now: datetime | None = None,
) -> RoomStateChange:
    """Record that ``room_code`` is in ``state`` from ``effective_at`` on (audited)."""
    if state not in STATES:
        raise InvalidInputError(
            Reason(
                f"state must be one of {', '.join(STATES)}, not {state!r}",
                f"状态须为 {zh_words(STATES)} 之一，而不是 {state!r}",
            )
        )
    room = find_room(session, room_code, site_code=site_code)
    now = now or utcnow()
    before = manual_state_at(session, room_id=room.id, at=effective_at)
    change = RoomStateChange(
        room_id=room.id,
        state=state,
        effective_at=effective_at,
        recorded_at=now,
        recorded_by=actor,
        source=source,
        reason=reason,
    )
    session.add(change)
    site = session.get(Site, room.site_id)
    audit.record(
        session,
        actor=actor,
        action="room.state",
        entity="room",
        entity_key=f"{site.code}/{room.code}",
        before={"state": before},
        after={"state": state, "effective_at": effective_at.isoformat()},
        reason=reason,
        at=now,
    )
    return change


class OperationPeriod(SQLModel, table=True):
    """A window in which a room is in operation because something ran in it (a process step)."""

    __tablename__ = "operation_period"
    __table_args__ = (UniqueConstraint("source", "source_key"),)

    id: int | None = Field(default=None, primary_key=True)
    room_id: int = Field(foreign_key="room.id", index=True)
    start: datetime = Field(sa_type=UTCDateTime, nullable=False)
    end: datetime | None = Field(default=None, sa_type=UTCDateTime)  # open while running
    source: str = Field(max_length=40)  # e.g. batch_step
    source_key: str = Field(max_length=120)  # e.g. the step id
    #: bumped on every change, so caches notice an edited period (see RoomStates.refresh)
    version: int = 1


def manual_state_at(session: Session, *, room_id: int, at: datetime) -> str:
    """State of one room at one instant by the manual timeline alone."""
    row = session.exec(
        select(RoomStateChange.state)
        .where(RoomStateChange.room_id == room_id, RoomStateChange.effective_at <= at)
        .order_by(RoomStateChange.effective_at.desc(), RoomStateChange.id.desc())
        .limit(1)
    ).first()
    return row or DEFAULT_STATE


@dataclass
class Timeline:
    """In-memory timeline of one room, for the ingest hot path."""

    times: list[datetime]
    states: list[str]

    def at(self, when: datetime) -> str:
        i = bisect.bisect_right(self.times, when)
        return self.states[i - 1] if i else DEFAULT_STATE

    def left_operation(self, when: datetime) -> tuple[datetime, datetime | None] | None:
        """When the room is at rest at ``when`` after an operation: ``(the end of that
        operation, the start of the next one or None)``; otherwise ``None``."""
        i = bisect.bisect_right(self.times, when)
        if i < 2 or self.states[i - 1] != "at_rest" or self.states[i - 2] != "in_operation":
            return None
        return self.times[i - 1], self.times[i] if i < len(self.times) else None

    def operation_ends(self) -> list[datetime]:
        return [
            t
            for i, t in enumerate(self.times)
            if i and self.states[i] == "at_rest" and self.states[i - 1] == "in_operation"
        ]

    def judging(self, when: datetime, recovery_s: float) -> str:
        """The state whose limits judge a reading: in-operation limits still apply inside
        the recovery window after the room leaves operation (``tracker.monitoring.rules.recovery``)."""
        state = self.at(when)
        if recovery_s and state == "at_rest":
            left = self.left_operation(when)
            if left is not None and (when - left[0]).total_seconds() < recovery_s:
                return "in_operation"
        return state


def _merge(spans: list[tuple[datetime, datetime | None]]) -> tuple[list[datetime], list[datetime | None]]:
    """Union of half-open spans ``[start, end)``; ``None`` as end means still running."""
    starts: list[datetime] = []
    ends: list[datetime | None] = []
    for start, end in sorted(spans, key=lambda s: s[0]):
        if starts and (ends[-1] is None or start <= ends[-1]):
            if ends[-1] is not None and (end is None or end > ends[-1]):
                ends[-1] = end
            continue
        starts.append(start)
        ends.append(end)
    return starts, ends


def _overlay(manual: Timeline, spans: tuple[list[datetime], list[datetime | None]]) -> Timeline:
    """One step-function timeline: in operation inside any span, the manual timeline elsewhere."""
    starts, ends = spans

    def operating(at: datetime) -> bool:
        i = bisect.bisect_right(starts, at) - 1
        return i >= 0 and (ends[i] is None or at < ends[i])

    combined = Timeline([], [])
    for point in sorted({*manual.times, *starts, *(e for e in ends if e is not None)}):
        state = "in_operation" if operating(point) else manual.at(point)
        if (combined.states[-1] if combined.states else DEFAULT_STATE) != state:
            combined.times.append(point)
            combined.states.append(state)
    return combined


class RoomStates:
    """All rooms' timelines, reloaded only when a change has been recorded since.

    Each room's timeline combines its manual changes with the operation periods of the room
    and the zones inside it, so every rule (evaluation, recovery after an operation, re-
    evaluation) sees one timeline whatever fed it.
    """

    def __init__(self) -> None:
        self._marker: tuple[int, ...] | None = None
        self._timelines: dict[int, Timeline] = {}

    def refresh(self, session: Session) -> bool:
        changes = session.exec(
            select(func.coalesce(func.max(RoomStateChange.id), 0), func.count(RoomStateChange.id))
        ).one()
        periods = session.exec(
            select(
                func.coalesce(func.max(OperationPeriod.id), 0),
                func.count(OperationPeriod.id),
                func.coalesce(func.sum(OperationPeriod.version), 0),
            )
        ).one()
        marker = tuple(int(v) for v in (*changes, *periods))
        if marker == self._marker:
            return False
        rows: Iterable[RoomStateChange] = session.exec(
            select(RoomStateChange).order_by(
                RoomStateChange.room_id, RoomStateChange.effective_at, RoomStateChange.id
            )
        )
        timelines: dict[int, Timeline] = {}
        for row in rows:
            tl = timelines.setdefault(row.room_id, Timeline([], []))
            if tl.times and tl.times[-1] == row.effective_at:
                tl.states[-1] = row.state  # the later record of the same instant wins
                if len(tl.states) > 1 and tl.states[-2] == row.state:
                    tl.times.pop()
                    tl.states.pop()
            elif (tl.states[-1] if tl.states else DEFAULT_STATE) != row.state:
                tl.times.append(row.effective_at)  # a repeat of the same state is no change
                tl.states.append(row.state)
        for room_id, spans in self._load_periods(session).items():
            timelines[room_id] = _overlay(timelines.get(room_id, Timeline([], [])), spans)
        self._timelines, self._marker = timelines, marker
        return True

    @staticmethod
    def _load_periods(session: Session) -> dict[int, tuple[list[datetime], list[datetime | None]]]:
        """Each room's merged operation spans: its own periods and those of rooms inside it."""
        parent = dict(session.exec(select(Room.id, Room.background_id)).all())
        spans: dict[int, list[tuple[datetime, datetime | None]]] = {}
        for period in session.exec(select(OperationPeriod)):
            room_id, seen = period.room_id, set()
            while room_id is not None and room_id not in seen:  # the room and its containers
                seen.add(room_id)
                spans.setdefault(room_id, []).append((period.start, period.end))
                room_id = parent.get(room_id)
        return {room_id: _merge(s) for room_id, s in spans.items()}

    def state(self, room_id: int, at: datetime) -> str:
        tl = self._timelines.get(room_id)
        return tl.at(at) if tl else DEFAULT_STATE

    def judging_state(self, room_id: int, at: datetime, recovery_s: float) -> str:
        """``state``, but in-operation inside the recovery window after an operation."""
        tl = self._timelines.get(room_id)
        return tl.judging(at, recovery_s) if tl else DEFAULT_STATE

    def timeline(self, room_id: int) -> Timeline | None:
        return self._timelines.get(room_id)
