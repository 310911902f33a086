"""What a floor view shows: every room, its state, latest values against limits, open excursions.

Plain data built from one session, so the terminal demo now and the web dashboard later
render the same picture.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func
from sqlmodel import Session, select

from tracker.facility.limits import LEVEL_RANK, Level
from tracker.facility.models import Monitor, Room, Site
from tracker.facility.roomstate import RoomStates
from tracker.monitoring.excursions import Excursion, breaches
from tracker.monitoring.readings import Reading


@dataclass(frozen=True)
class LatestValue:
    monitor: str
    kind: str
    channel: str
    value: float
    level: str
    at: datetime


@dataclass
class RoomTile:
    code: str
    name: str
    name_en: str
    grade: str
    background: str | None
    state: str
    values: list[LatestValue] = field(default_factory=list)
    open_excursions: int = 0

    @property
    def worst(self) -> str:
        """Colour of the tile: the worst of open excursions and latest values."""
        if not self.values:
            return "no_data"
        levels = [Level(v.level) for v in self.values]
        worst = max(levels, key=lambda lv: LEVEL_RANK[lv])
        if self.open_excursions and LEVEL_RANK[worst] < LEVEL_RANK[Level.ALERT]:
            return Level.ALERT.value
        return worst.value


@dataclass
class FloorView:
    site: str
    site_name: str
    timezone: str
    as_of: datetime | None
    rooms: list[RoomTile]


GRADE_ORDER = {"A": 0, "B": 1, "C": 2, "D": 3, "CNC": 4}


def latest_event_time(session: Session) -> datetime | None:
    return session.exec(select(func.max(Reading.event_time))).one()


def floor_view(session: Session, *, site: Site, as_of: datetime | None = None) -> FloorView:
    """Latest reading per monitor and channel, room state at ``as_of`` (default: newest data)."""
    as_of = as_of or latest_event_time(session)
    rooms = session.exec(select(Room).where(Room.site_id == site.id, Room.active)).all()
    by_id = {r.id: r for r in rooms}
    states = RoomStates()
    states.refresh(session)
    tiles = {
        r.id: RoomTile(
            code=r.code,
            name=r.name,
            name_en=r.name_en,
            grade=r.grade,
            background=by_id[r.background_id].code if r.background_id else None,
            state=states.state(r.id, as_of) if as_of else "at_rest",
        )
        for r in rooms
    }
    newest = (
        select(Reading.monitor_id, Reading.channel, func.max(Reading.seq).label("seq"))
        .group_by(Reading.monitor_id, Reading.channel)
        .subquery()
    )
    rows = session.exec(
        select(
            Monitor.code,
            Monitor.kind,
            Monitor.room_id,
            Reading.channel,
            Reading.value,
            Reading.level,
            Reading.event_time,
        )
        .join(
            newest,
            (newest.c.monitor_id == Reading.monitor_id)
            & (newest.c.channel == Reading.channel)
            & (newest.c.seq == Reading.seq),
        )
        .join(Monitor, Monitor.id == Reading.monitor_id)
        .where(Monitor.site_id == site.id, Monitor.active)
        .order_by(Monitor.code, Reading.channel)
    ).all()
    for code, kind, room_id, channel, value, level, at in rows:
        if room_id in tiles:
            tiles[room_id].values.append(LatestValue(code, kind, channel, value, level, at))
    for room_id, n in session.exec(
        select(Excursion.room_id, func.count())
        .where(Excursion.status == "open", Excursion.site_id == site.id, breaches())
        .group_by(Excursion.room_id)
    ).all():
        if room_id in tiles:
            tiles[room_id].open_excursions = int(n)
    ordered = sorted(tiles.values(), key=lambda t: (GRADE_ORDER.get(t.grade, 9), t.code))
    return FloorView(site=site.code, site_name=site.name, timezone=site.timezone, as_of=as_of, rooms=ordered)
