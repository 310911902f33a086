"""Operational state timeline of rooms (静态 at rest / 动态 in operation).

Readings are judged by the state of their room *at the reading's event time*, so the
timeline is a list of dated changes, not a current flag. For now it is set by hand
(``tracker room state``); batch process steps will drive it later.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Column, Text, func
from sqlmodel import Field, Session, SQLModel, select

from tracker import audit
from tracker.db import UTCDateTime
from tracker.errors import InvalidInputError
from tracker.facility import Site, find_room
from tracker.limits import STATES
from tracker.timeutil import utcnow

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


def set_room_state(session: Session, *, room_code: str, state: str, effective_at: datetime,
                   actor: str, reason: str | None = None, site_code: str | None = None,
                   source: str = "manual", now: datetime | None = None) -> RoomStateChange:
    """Record that ``room_code`` is in ``state`` from ``effective_at`` on (audited)."""
    if state not in STATES:
        raise InvalidInputError(f"state must be one of {', '.join(STATES)}, not {state!r}")
    room = find_room(session, room_code, site_code=site_code)
    now = now or utcnow()
    before = state_at(session, room_id=room.id, at=effective_at)
    change = RoomStateChange(room_id=room.id, state=state, effective_at=effective_at,
                             recorded_at=now, recorded_by=actor, source=source, reason=reason)
    session.add(change)
    site = session.get(Site, room.site_id)
    audit.record(session, actor=actor, action="room.state", entity="room",
                 entity_key=f"{site.code}/{room.code}", before={"state": before},
                 after={"state": state, "effective_at": effective_at.isoformat()},
                 reason=reason, at=now)
    return change


def state_at(session: Session, *, room_id: int, at: datetime) -> str:
    """State of one room at one instant (latest change effective at or before it)."""
    row = session.exec(select(RoomStateChange.state)
                       .where(RoomStateChange.room_id == room_id,
                              RoomStateChange.effective_at <= at)
                       .order_by(RoomStateChange.effective_at.desc(), RoomStateChange.id.desc())
                       .limit(1)).first()
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
        return [t for i, t in enumerate(self.times)
                if i and self.states[i] == "at_rest" and self.states[i - 1] == "in_operation"]

    def judging(self, when: datetime, recovery_s: float) -> str:
        """The state whose limits judge a reading: in-operation limits still apply inside
        the recovery window after the room leaves operation (``tracker.recovery``)."""
        state = self.at(when)
        if recovery_s and state == "at_rest":
            left = self.left_operation(when)
            if left is not None and (when - left[0]).total_seconds() < recovery_s:
                return "in_operation"
        return state


class RoomStates:
    """All rooms' timelines, reloaded only when a change has been recorded since."""

    def __init__(self) -> None:
        self._marker: tuple[int, int] | None = None
        self._timelines: dict[int, Timeline] = {}

    def refresh(self, session: Session) -> bool:
        marker = session.exec(select(func.coalesce(func.max(RoomStateChange.id), 0),
                                     func.count(RoomStateChange.id))).one()
        marker = (int(marker[0]), int(marker[1]))
        if marker == self._marker:
            return False
        rows: Iterable[RoomStateChange] = session.exec(
            select(RoomStateChange).order_by(RoomStateChange.room_id,
                                             RoomStateChange.effective_at, RoomStateChange.id))
        timelines: dict[int, Timeline] = {}
        for row in rows:
            tl = timelines.setdefault(row.room_id, Timeline([], []))
            if tl.times and tl.times[-1] == row.effective_at:
                tl.states[-1] = row.state  # the later record of the same instant wins
                if len(tl.states) > 1 and tl.states[-2] == row.state:
                    tl.times.pop()
                    tl.states.pop()
            elif (tl.states[-1] if tl.states else DEFAULT_STATE) != row.state:
                tl.times.append(row.effective_at)   # a repeat of the same state is no change
                tl.states.append(row.state)
        self._timelines, self._marker = timelines, marker
        return True

    def state(self, room_id: int, at: datetime) -> str:
        tl = self._timelines.get(room_id)
        return tl.at(at) if tl else DEFAULT_STATE

    def judging_state(self, room_id: int, at: datetime, recovery_s: float) -> str:
        """``state``, but in-operation inside the recovery window after an operation."""
        tl = self._timelines.get(room_id)
        return tl.judging(at, recovery_s) if tl else DEFAULT_STATE

    def timeline(self, room_id: int) -> Timeline | None:
        return self._timelines.get(room_id)
