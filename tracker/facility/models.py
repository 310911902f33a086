"""Facility tables (sites, rooms/zones, monitoring points, facility levels) and lookups.

Rows are never deleted: a room or monitor missing from a new facility file is
deactivated (GMP records stay).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import Column, Text, UniqueConstraint
from sqlmodel import Field, Session, SQLModel, select

from tracker.core.db import UTCDateTime
from tracker.core.errors import (
    InvalidInputError,
    NotFoundError,
    Reason,
)
from tracker.facility.limits import (
    FacilityLevel,
    MonitorLimits,
    MonitorSpec,
    load_limit_set,
    resolve_monitor_limits,
)

#: the rolling volume of the volume-aware particle rule when ``[rules]`` sets none: the
#: grade A classification volume (regulatory.md §1.1, §11; ``tracker.monitoring.rules.volume``)
DEFAULT_ROLLING_VOLUME_M3 = 1.0
#: the rolling window holds no sample more than an hour older than its newest one: a 1 m³
#: window takes 35 min at 28.3 L/min, so a quiet hour always separates two events
DEFAULT_ROLLING_WINDOW_S = 3600.0

#: EU GMP Annex 1 (2022) Table 5 note / China Annex 1 第十条(七): at-rest limits are met
#: after a short clean-up of 15–20 min (guidance; regulatory.md §5.1–5.3)
DEFAULT_RECOVERY_S = 20 * 60.0


# --------------------------------------------------------------------------- tables


class Site(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    code: str = Field(max_length=40, unique=True)
    name: str = Field(max_length=200)
    name_en: str = Field(default="", max_length=200)
    timezone: str = Field(default="Asia/Shanghai", max_length=64)
    limit_set: str = Field(default="CN-GMP-2010", max_length=40)
    revision: int = 0
    file_sha256: str = Field(default="", max_length=64)
    #: ``[rules]`` of the facility file: rolling volume of the volume-aware particle rule
    #: (m³) and the recovery (clean-up) window after an operation (seconds)
    rolling_volume_m3: float = DEFAULT_ROLLING_VOLUME_M3
    recovery_s: float = DEFAULT_RECOVERY_S
    #: the rolling window's time bound (seconds): ``[rules] particle_window_max_min``
    rolling_window_s: float = DEFAULT_ROLLING_WINDOW_S
    #: ``[separation] qa_reviewer_may_release``: the QA reviewer of a batch may also release it
    #: as QP (GMP 2010 Art. 20 allows the QA head to be the QP); off unless the file says so
    qa_reviewer_may_release: bool = False
    updated_at: datetime = Field(sa_type=UTCDateTime, nullable=False)


class FacilityRevision(SQLModel, table=True):
    """One loaded revision of a site's facility file: what it decided about evaluation.

    Rooms and monitors are updated in place; this row keeps, per revision, the settings that
    judged readings (``settings``) and what changed from the revision before (``changes``), so
    a QA approval signed over them can be checked later and a reader of an old reading can see
    the rules that judged it (the evaluation basis names the revision).
    """

    __tablename__ = "facility_revision"
    __table_args__ = (UniqueConstraint("site_id", "revision"),)

    id: int | None = Field(default=None, primary_key=True)
    site_id: int = Field(foreign_key="site.id", index=True)
    revision: int
    file_sha256: str = Field(max_length=64)
    #: JSON: rules, rooms and monitors as they judge readings (``tracker.facility.load``)
    settings: str = Field(sa_column=Column(Text, nullable=False))
    #: JSON list of the evaluation settings changed from the previous revision
    changes: str = Field(default="[]", sa_column=Column(Text, nullable=False))
    loaded_by: str = Field(max_length=80)
    loaded_at: datetime = Field(sa_type=UTCDateTime, nullable=False)


class Room(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("site_id", "code"),)

    id: int | None = Field(default=None, primary_key=True)
    site_id: int = Field(foreign_key="site.id", index=True)
    code: str = Field(max_length=40)
    name: str = Field(max_length=200)
    name_en: str = Field(default="", max_length=200)
    grade: str = Field(max_length=3)
    background_id: int | None = Field(default=None, foreign_key="room.id")
    area_m2: float | None = None
    active: bool = True


class Monitor(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("site_id", "code"),)

    id: int | None = Field(default=None, primary_key=True)
    site_id: int = Field(foreign_key="site.id", index=True)
    room_id: int = Field(foreign_key="room.id", index=True)
    code: str = Field(max_length=60)
    kind: str = Field(max_length=20)
    interval_s: float
    reference_room_id: int | None = Field(default=None, foreign_key="room.id")
    channels: str = Field(default="", max_length=40)  # "0.5,5.0" for particles
    sample_volume_l: float | None = None
    setpoint: float | None = None
    calibration_due: date | None = None
    range_low: float | None = None
    range_high: float | None = None
    active: bool = True


class FacilityLimit(SQLModel, table=True):
    """One ``[[limits]]`` row of a facility revision; older revisions stay for the record."""

    __tablename__ = "facility_limit"

    id: int | None = Field(default=None, primary_key=True)
    site_id: int = Field(foreign_key="site.id", index=True)
    revision: int
    position: int
    kind: str = Field(max_length=20)
    state: str = Field(default="any", max_length=20)
    monitor_code: str | None = Field(default=None, max_length=60)
    room_code: str | None = Field(default=None, max_length=40)
    grade: str | None = Field(default=None, max_length=3)
    channel: str | None = Field(default=None, max_length=8)
    alert_low: float | None = None
    alert_high: float | None = None
    action_low: float | None = None
    action_high: float | None = None
    delay_s: float | None = None
    note: str | None = Field(default=None, sa_column=Column(Text))
    #: None: from the facility file; ``proposal:<id>``: an approved data-driven level
    source: str | None = Field(default=None, max_length=40)

    def to_level(self) -> FacilityLevel:
        return FacilityLevel(
            kind=self.kind,
            state=self.state,
            monitor=self.monitor_code,
            room=self.room_code,
            grade=self.grade,
            channel=self.channel,
            alert_low=self.alert_low,
            alert_high=self.alert_high,
            action_low=self.action_low,
            action_high=self.action_high,
            delay_s=self.delay_s,
            note=self.note or "",
            index=self.position,
        )


# --------------------------------------------------------------------------- the file


def get_site(session: Session, code: str | None = None) -> Site:
    """The named site, or the only one when there is just one."""
    query = select(Site) if code is None else select(Site).where(Site.code == code)
    sites = session.exec(query).all()
    if not sites:
        raise NotFoundError(
            Reason(f"no site {code!r}", f"没有场地 {code!r}")
            if code
            else Reason(
                "no facility loaded yet: run `tracker facility load FILE`",
                "尚未载入设施文件：请运行 `tracker facility load FILE`",
            )
        )
    if len(sites) > 1:
        raise InvalidInputError(Reason("several sites: name one with --site", "有多个场地：请用 --site 指定"))
    return sites[0]


def find_room(session: Session, code: str, *, site_code: str | None = None) -> Room:
    site = get_site(session, site_code)
    room = session.exec(select(Room).where(Room.site_id == site.id, Room.code == code)).first()
    if room is None:
        raise NotFoundError(
            Reason(f"no room {code!r} at site {site.code}", f"场地 {site.code} 没有房间 {code!r}")
        )
    return room


def containing_rooms(session: Session, room: Room) -> list[Room]:
    """The room and the rooms it sits in, innermost first (a zone, its room, …)."""
    chain, seen = [room], {room.id}
    while chain[-1].background_id is not None and chain[-1].background_id not in seen:
        parent = session.get(Room, chain[-1].background_id)
        chain.append(parent)
        seen.add(parent.id)
    return chain


@dataclass(frozen=True, slots=True)
class ResolvedMonitor:
    """An active monitor with its room, reference room and limits resolved for every state."""

    monitor: Monitor
    room: Room
    channels: tuple[str, ...]
    limits: MonitorLimits


def resolved_monitors(session: Session, site: Site) -> Iterator[ResolvedMonitor]:
    """Resolve each active monitor's limits from the site's limit set and the facility levels of
    its current revision; raises ``LimitTooLooseError`` where a level is looser than the
    regulation. The facility load checks with it, the ingest snapshot is built from it."""
    limit_set = load_limit_set(site.limit_set)
    rooms = {r.id: r for r in session.exec(select(Room).where(Room.site_id == site.id))}
    levels = [
        row.to_level()
        for row in session.exec(
            select(FacilityLimit).where(
                FacilityLimit.site_id == site.id, FacilityLimit.revision == site.revision
            )
        )
    ]
    for mon in session.exec(select(Monitor).where(Monitor.site_id == site.id, Monitor.active)):
        room = rooms[mon.room_id]
        ref = rooms.get(mon.reference_room_id) if mon.reference_room_id else None
        channels = tuple(c for c in mon.channels.split(",") if c)
        spec = MonitorSpec(
            code=mon.code,
            room=room.code,
            grade=room.grade,
            kind=mon.kind,
            reference_grade=ref.grade if ref else None,
            channels=channels,
        )
        yield ResolvedMonitor(mon, room, channels, resolve_monitor_limits(limit_set, spec, levels))


#: calibration due within this many days is reported as due soon (viewLinc-style warning)
CALIBRATION_WARNING_DAYS = 30


def calibration_status(due: date | None, today: date, warn_days: int = CALIBRATION_WARNING_DAYS) -> str:
    """``overdue`` after the due date (its readings are invalid), ``due_soon`` within
    ``warn_days`` of it, ``ok`` otherwise, ``unknown`` when no date is on file."""
    if due is None:
        return "unknown"
    if today > due:
        return "overdue"
    return "due_soon" if (due - today).days <= warn_days else "ok"


def list_monitors(session: Session, *, today: date, site_code: str | None = None) -> list[dict]:
    """Every active monitor with its room, grade and calibration status, for read-outs."""
    site = get_site(session, site_code)
    rooms = {r.id: r for r in session.exec(select(Room).where(Room.site_id == site.id))}
    out = []
    for m in session.exec(
        select(Monitor).where(Monitor.site_id == site.id, Monitor.active).order_by(Monitor.code)
    ):
        room = rooms[m.room_id]
        out.append(
            {
                "monitor": m.code,
                "room": room.code,
                "grade": room.grade,
                "kind": m.kind,
                "interval_s": m.interval_s,
                "reference": rooms[m.reference_room_id].code if m.reference_room_id else None,
                "calibration_due": m.calibration_due.isoformat() if m.calibration_due else None,
                "calibration": calibration_status(m.calibration_due, today),
                "range": [m.range_low, m.range_high],
            }
        )
    return out
