"""Inhibits: planned maintenance windows per monitor or room that expire by themselves.

Readings during an inhibit are stored and flagged (``invalid_reason = "inhibited"``), never
alarmed. Every inhibit has an end: nothing can be switched off indefinitely and forgotten
(anchors.md §5 item 10). Inhibits are never deleted; ending one early is a recorded
cancellation. All changes are audited.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Column, Text
from sqlmodel import Field, Session, SQLModel, select

from tracker.core import audit
from tracker.core.db import UTCDateTime
from tracker.core.errors import InvalidInputError, NotFoundError, Reason
from tracker.core.timeutil import iso_utc, utcnow
from tracker.facility.models import Monitor, Room, Site, get_site

#: the longest window one inhibit may cover; longer maintenance needs a new, reasoned inhibit
MAX_INHIBIT = timedelta(days=14)


class Inhibit(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    site_id: int = Field(foreign_key="site.id", index=True)
    monitor_id: int | None = Field(default=None, foreign_key="monitor.id")
    room_id: int | None = Field(default=None, foreign_key="room.id")
    starts_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    ends_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    reason: str = Field(sa_column=Column(Text, nullable=False))
    created_by: str = Field(max_length=120)
    created_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    cancelled_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    cancelled_by: str | None = Field(default=None, max_length=120)
    cancel_reason: str | None = Field(default=None, sa_column=Column(Text))

    @property
    def effective_end(self) -> datetime:
        return min(self.ends_at, self.cancelled_at) if self.cancelled_at else self.ends_at


def add_inhibit(
    session: Session,
    *,
    starts_at: datetime,
    ends_at: datetime,
    reason: str,
    actor: str,
    monitor_code: str | None = None,
    room_code: str | None = None,
    site_code: str | None = None,
    now: datetime | None = None,
) -> Inhibit:
    """Inhibit one monitor, or every monitor of a room and the zones inside it."""
    if (monitor_code is None) == (room_code is None):
        raise InvalidInputError(
            Reason("name exactly one of a monitor or a room", "请指定一个监测点或一个房间（只能二选一）")
        )
    if not reason or not reason.strip():
        raise InvalidInputError(Reason("an inhibit needs a reason", "监测屏蔽须填写原因"))
    if ends_at <= starts_at:
        raise InvalidInputError(
            Reason("an inhibit must end after it starts", "监测屏蔽的结束时间须晚于开始时间")
        )
    if ends_at - starts_at > MAX_INHIBIT:
        raise InvalidInputError(
            Reason(
                f"an inhibit may cover at most {MAX_INHIBIT.days} days; record a new one for longer work",
                f"一次监测屏蔽最长 {MAX_INHIBIT.days} 天；更长的工作请另行记录新的屏蔽",
            )
        )
    site = get_site(session, site_code)
    monitor = room = None
    if monitor_code is not None:
        monitor = session.exec(
            select(Monitor).where(Monitor.site_id == site.id, Monitor.code == monitor_code)
        ).first()
        if monitor is None:
            raise NotFoundError(
                Reason(
                    f"no monitor {monitor_code!r} at site {site.code}",
                    f"场地 {site.code} 没有监测点 {monitor_code!r}",
                )
            )
    else:
        room = session.exec(select(Room).where(Room.site_id == site.id, Room.code == room_code)).first()
        if room is None:
            raise NotFoundError(
                Reason(
                    f"no room {room_code!r} at site {site.code}", f"场地 {site.code} 没有房间 {room_code!r}"
                )
            )
    now = now or utcnow()
    row = Inhibit(
        site_id=site.id,
        monitor_id=monitor.id if monitor else None,
        room_id=room.id if room else None,
        starts_at=starts_at,
        ends_at=ends_at,
        reason=reason.strip(),
        created_by=actor,
        created_at=now,
    )
    session.add(row)
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="inhibit.add",
        entity="inhibit",
        entity_key=str(row.id),
        after=describe(session, row),
        reason=row.reason,
        at=now,
    )
    return row


def cancel_inhibit(
    session: Session, inhibit_id: int, *, actor: str, reason: str, now: datetime | None = None
) -> Inhibit:
    """End an inhibit early (the row stays, with who, when and why)."""
    row = session.get(Inhibit, inhibit_id)
    if row is None:
        raise NotFoundError(Reason(f"no inhibit {inhibit_id}", f"没有监测屏蔽 {inhibit_id}"))
    now = now or utcnow()
    if row.cancelled_at is not None or row.ends_at <= now:
        raise InvalidInputError(
            Reason(f"inhibit {inhibit_id} has already ended", f"监测屏蔽 {inhibit_id} 已经结束")
        )
    if not reason.strip():
        raise InvalidInputError(
            Reason("ending an inhibit early needs a reason", "提前结束监测屏蔽须填写原因")
        )
    before = describe(session, row)
    row.cancelled_at, row.cancelled_by, row.cancel_reason = now, actor, reason.strip()
    session.add(row)
    audit.record(
        session,
        actor=actor,
        action="inhibit.cancel",
        entity="inhibit",
        entity_key=str(row.id),
        before=before,
        after=describe(session, row),
        reason=row.cancel_reason,
        at=now,
    )
    return row


def describe(session: Session, row: Inhibit) -> dict:
    monitor = session.get(Monitor, row.monitor_id) if row.monitor_id else None
    room = session.get(Room, row.room_id) if row.room_id else None
    site = session.get(Site, row.site_id)
    return {
        "id": row.id,
        "site": site.code,
        "monitor": monitor.code if monitor else None,
        "room": room.code if room else None,
        "starts_at": iso_utc(row.starts_at),
        "ends_at": iso_utc(row.ends_at),
        "cancelled_at": iso_utc(row.cancelled_at),
        "reason": row.reason,
        "created_by": row.created_by,
    }


def list_inhibits(session: Session, *, active_at: datetime | None = None) -> list[dict]:
    """Inhibits in force at ``active_at`` (all of them when ``None``)."""
    rows = session.exec(select(Inhibit).order_by(Inhibit.starts_at)).all()
    if active_at is not None:
        rows = [r for r in rows if r.starts_at <= active_at < r.effective_end]
    return [describe(session, r) for r in rows]


def windows_by_monitor(session: Session) -> dict[int, list[tuple[datetime, datetime]]]:
    """Every monitor's inhibit windows (room inhibits cover the room's zones too)."""
    rooms = session.exec(select(Room)).all()
    children: dict[int, list[int]] = {}
    for r in rooms:
        if r.background_id is not None:
            children.setdefault(r.background_id, []).append(r.id)
    monitors_by_room: dict[int, list[int]] = {}
    for m in session.exec(select(Monitor)).all():
        monitors_by_room.setdefault(m.room_id, []).append(m.id)
    out: dict[int, list[tuple[datetime, datetime]]] = {}
    for row in session.exec(select(Inhibit)).all():
        window = (row.starts_at, row.effective_end)
        if row.monitor_id is not None:
            out.setdefault(row.monitor_id, []).append(window)
            continue
        frontier = [row.room_id]
        while frontier:
            room_id = frontier.pop()
            for monitor_id in monitors_by_room.get(room_id, []):
                out.setdefault(monitor_id, []).append(window)
            frontier += children.get(room_id, [])
    return out
