"""What a floor view shows: every room, its state, latest values against limits, open excursions.

Plain data built from one session, so the terminal demo now and the web dashboard later
render the same picture.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func
from sqlmodel import Session, select

from tracker.core.timeutil import utcnow
from tracker.facility.models import Monitor, Room, Site, resolved_monitors
from tracker.facility.policy import compliance_of
from tracker.facility.roomstate import RoomStates
from tracker.monitoring.alarm_records import SystemAlarm
from tracker.monitoring.excursions import Excursion, breaches
from tracker.monitoring.ingest_state import IngestState
from tracker.monitoring.outbox import NotificationOutbox
from tracker.monitoring.readings import Reading


@dataclass(frozen=True)
class LatestValue:
    monitor: str
    kind: str
    channel: str
    value: float | None  # None: the monitor has never reported
    level: str
    at: datetime | None
    #: the bounds that judged it (the room's state at ``at``); ``None`` where none applies
    alert_low: float | None = None
    alert_high: float | None = None
    action_low: float | None = None
    action_high: float | None = None
    #: seconds between ``at`` and the view's clock (None: never reported); ``stale`` past the
    #: data-gap threshold
    age_s: float | None = 0.0
    stale: bool = False

    @property
    def shown_level(self) -> str:
        """What the value's colour says: ``no_data`` once it is older than the gap threshold."""
        return "no_data" if self.stale else self.level


@dataclass(frozen=True)
class OpenExcursion:
    """An open excursion as a tile names it (the reason for its colour)."""

    id: int
    type: str
    level: str
    monitor: str
    channel: str
    started_at: datetime


#: a tile's colour, worst first (a colour is never milder than any reason under it)
COLOUR_RANK = {"action": 5, "alert": 4, "invalid": 3, "no_data": 2, "ok": 1, "not_evaluated": 0}


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
    #: the room's open excursions, worst first (at most ``TILE_EXCURSIONS`` of them)
    excursions: list[OpenExcursion] = field(default_factory=list)
    #: the worst level among *all* its open excursions (``None``: none open)
    open_level: str | None = None

    @property
    def worst(self) -> str:
        """Colour of the tile: the worst of its open excursions (an open action excursion is
        red whatever the latest values say), its fresh latest values and its silent monitors
        (``no_data`` outranks a green value: a silent monitor proves nothing)."""
        found = [v.shown_level for v in self.values]
        if self.open_level:
            found.append(self.open_level)
        if not found:
            return "no_data"
        return max(found, key=lambda lv: COLOUR_RANK.get(lv, 0))

    @property
    def reasons(self) -> list[dict]:
        """Why the tile has its colour: every open excursion shown, then each latest value that is
        not plainly in limit (out of limit, invalid, stale), worst first."""
        out: list[dict] = [{"what": "excursion", "level": e.level, "excursion": e} for e in self.excursions]
        hidden = self.open_excursions - len(self.excursions)
        if hidden > 0:
            out.append({"what": "more", "level": self.open_level or "alert", "count": hidden})
        for v in self.values:
            if v.stale:
                out.append({"what": "stale", "level": "no_data", "value": v})
            elif v.level in ("alert", "action", "invalid"):
                out.append({"what": "value", "level": v.level, "value": v})
        return sorted(out, key=lambda r: -COLOUR_RANK.get(r["level"], 0))


@dataclass
class FloorView:
    site: str
    site_name: str
    timezone: str
    as_of: datetime | None
    rooms: list[RoomTile]
    #: the clock the ages are measured against
    now: datetime | None = None


#: open excursions a tile names one by one (the rest are counted)
TILE_EXCURSIONS = 5
LEVEL_ORDER = {"action": 0, "alert": 1}


GRADE_ORDER = {"A": 0, "B": 1, "C": 2, "D": 3, "CNC": 4}


def latest_event_time(session: Session) -> datetime | None:
    return session.exec(select(func.max(Reading.event_time))).one()


def floor_view(
    session: Session, *, site: Site, as_of: datetime | None = None, now: datetime | None = None
) -> FloorView:
    """Latest reading per monitor and channel with the bounds that judged it, room state at ``as_of``
    (default: newest data), each room's open excursions; a value older than the site's data-gap
    threshold (``gap_factor`` × the monitor's interval) at ``now`` (default: the wall clock) is stale."""
    now = now or utcnow()
    as_of = as_of or latest_event_time(session)
    rooms = session.exec(select(Room).where(Room.site_id == site.id, Room.active)).all()
    by_id = {r.id: r for r in rooms}
    states = RoomStates()
    states.refresh(session)
    gap_factor = compliance_of(session, site).gap_factor
    limits = {r.monitor.id: r.limits for r in resolved_monitors(session, site)}
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
            Monitor.id,
            Monitor.code,
            Monitor.kind,
            Monitor.room_id,
            Monitor.interval_s,
            Reading.channel,
            Reading.value,
            Reading.level,
            Reading.event_time,
            Reading.state,
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
    for mid, code, kind, room_id, interval_s, channel, value, level, at, state in rows:
        if room_id not in tiles:
            continue
        mon_limits = limits.get(mid)
        bounds = mon_limits.for_reading(channel, state) if mon_limits else None
        age = max(0.0, (now - at).total_seconds())
        tiles[room_id].values.append(
            LatestValue(
                code,
                kind,
                channel,
                value,
                level,
                at,
                alert_low=bounds.alert_low if bounds else None,
                alert_high=bounds.alert_high if bounds else None,
                action_low=bounds.action_low if bounds else None,
                action_high=bounds.action_high if bounds else None,
                age_s=age,
                stale=age > (interval_s or 60) * gap_factor,
            )
        )
    reported = {mid for mid, *_ in rows}
    for mid, code, kind, room_id in session.exec(
        select(Monitor.id, Monitor.code, Monitor.kind, Monitor.room_id)
        .where(Monitor.site_id == site.id, Monitor.active)
        .order_by(Monitor.code)
    ).all():
        if mid not in reported and room_id in tiles:  # silent since it was installed: no data
            tiles[room_id].values.append(
                LatestValue(code, kind, "", None, "no_data", None, age_s=None, stale=True)
            )
    codes = dict(session.exec(select(Monitor.id, Monitor.code).where(Monitor.site_id == site.id)).all())
    open_rows = session.exec(
        select(
            Excursion.id,
            Excursion.room_id,
            Excursion.type,
            Excursion.level,
            Excursion.monitor_id,
            Excursion.channel,
            Excursion.started_at,
        ).where(Excursion.status == "open", Excursion.site_id == site.id, breaches())
    ).all()
    for ex_id, room_id, type_, level, mid, channel, started in sorted(
        open_rows, key=lambda r: (LEVEL_ORDER.get(r[3], 2), r[2] == "data_gap", -r[6].timestamp(), -r[0])
    ):
        tile = tiles.get(room_id)
        if tile is None:
            continue
        tile.open_excursions += 1
        if tile.open_level is None:  # sorted worst first: the first is the worst
            tile.open_level = level
        if len(tile.excursions) < TILE_EXCURSIONS:
            tile.excursions.append(OpenExcursion(ex_id, type_, level, codes.get(mid, "?"), channel, started))
    ordered = sorted(tiles.values(), key=lambda t: (GRADE_ORDER.get(t.grade, 9), t.code))
    return FloorView(
        site=site.code, site_name=site.name, timezone=site.timezone, as_of=as_of, rooms=ordered, now=now
    )


@dataclass(frozen=True)
class LiveMarker:
    """What the live dashboard watches, read in a few cheap statements (``tracker.web.live`` reads
    it a few times a second per process, whatever the number of screens open)."""

    #: count, newest id, newest update and newest acknowledgement of the excursions
    excursions: tuple
    #: open action excursions: a new id here is a new action excursion (sound, notification)
    open_action: frozenset[int]
    #: open system alarms and failing notifications
    alarms: tuple
    #: bumped by every ingest transaction (``ingest_state.version``, one row per monitor)
    data: int


def live_marker(session: Session) -> LiveMarker:
    excursions = session.exec(
        select(
            func.count(Excursion.id),
            func.max(Excursion.id),
            func.max(Excursion.updated_at),
            func.max(Excursion.acknowledged_at),
        )
    ).one()
    open_action = frozenset(
        session.exec(
            select(Excursion.id).where(Excursion.status == "open", Excursion.level == "action", breaches())
        ).all()
    )
    alarms = session.exec(
        select(func.count(SystemAlarm.id), func.max(SystemAlarm.id)).where(SystemAlarm.status == "open")
    ).one()
    failing = session.exec(
        select(func.count(NotificationOutbox.id), func.max(NotificationOutbox.id)).where(
            NotificationOutbox.last_error.is_not(None), NotificationOutbox.status != "sent"
        )
    ).one()
    data = session.exec(select(func.coalesce(func.sum(IngestState.version), 0))).one()
    return LiveMarker(
        excursions=tuple(excursions), open_action=open_action, alarms=(*alarms, *failing), data=int(data)
    )
