"""Facility registry: sites, rooms/zones and monitoring points, loaded from a TOML file.

``tracker facility load FILE`` is idempotent: the same file twice changes nothing; a
changed file makes a new revision, every change is audited, and rooms or monitors
missing from the new file are deactivated, never deleted (GMP records stay).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime

from sqlmodel import Session, select

from tracker.core import audit
from tracker.core.errors import (
    PermissionDeniedError,
    Reason,
)
from tracker.core.timeutil import utcnow
from tracker.facility.file import FacilityDef, RoomDef
from tracker.facility.models import FacilityLimit, Monitor, Room, Site, resolved_monitors
from tracker.identity import signatures
from tracker.identity.users import Authenticated, require_role


@dataclass(frozen=True)
class LoadResult:
    site: str
    revision: int
    changed: bool
    rooms: int
    monitors: int
    limits: int
    deactivated: tuple[str, ...] = ()


def _room_row(r: RoomDef) -> dict:
    return {"name": r.name, "name_en": r.name_en, "grade": r.grade, "area_m2": r.area_m2}


_LIMIT_FIELDS = (
    "kind",
    "state",
    "monitor_code",
    "room_code",
    "grade",
    "channel",
    "alert_low",
    "alert_high",
    "action_low",
    "action_high",
    "delay_s",
    "note",
    "source",
)


def _limit_rows(facility: FacilityDef) -> list[dict]:
    return [
        {
            "kind": lv.kind,
            "state": lv.state,
            "monitor_code": lv.monitor,
            "room_code": lv.room,
            "grade": lv.grade,
            "channel": lv.channel,
            "alert_low": lv.alert_low,
            "alert_high": lv.alert_high,
            "action_low": lv.action_low,
            "action_high": lv.action_high,
            "delay_s": lv.delay_s,
            "note": lv.note or None,
            "source": None,
        }
        for lv in facility.levels
    ]


def _carried_levels(session: Session, site: Site | None, facility: FacilityDef) -> list[dict]:
    """Approved data-driven levels of the current revision that stay in force under the new
    file: not when the file sets that scope itself (any row of the room covering the parameter,
    channel and state), nor when the room is gone, changed grade, or the limit set changed —
    dropping one is a limit change QA approves like any other."""
    if site is None or site.limit_set != facility.limit_set:
        return []
    grades_now = dict(session.exec(select(Room.code, Room.grade).where(Room.site_id == site.id)).all())
    grades_new = {r.code: r.grade for r in facility.rooms}

    def overridden(row: dict) -> bool:
        return any(
            lv.room == row["room_code"]
            and lv.kind == row["kind"]
            and lv.channel in (None, row["channel"])
            and lv.state in ("any", row["state"])
            for lv in facility.levels
        )

    return [
        row
        for row in limits_content(session, site, site.revision)["levels"]
        if row["source"]
        and not overridden(row)
        and grades_new.get(row["room_code"]) == grades_now.get(row["room_code"])
    ]


def limits_content(session: Session, site: Site, revision: int) -> dict:
    """The facility limits of one revision as signed when a change is approved."""
    rows = session.exec(
        select(FacilityLimit)
        .where(FacilityLimit.site_id == site.id, FacilityLimit.revision == revision)
        .order_by(FacilityLimit.position)
    ).all()
    return {
        "site": site.code,
        "revision": revision,
        "limit_set": site.limit_set,
        "levels": [{k: getattr(r, k) for k in _LIMIT_FIELDS} for r in rows],
    }


def load_facility(
    session: Session,
    facility: FacilityDef,
    *,
    actor: str,
    approver: Authenticated | None = None,
    now: datetime | None = None,
) -> LoadResult:
    """Apply a parsed facility file; unchanged files are a no-op (idempotent).

    A file that changes the facility's alert/action levels or its regulatory limit set needs
    QA's approval by e-signature (``approver``; a change of quality-relevant settings is
    approved by QA — GMP 2010 Art. 23, 计算机化系统附录 on changes to critical data). The first
    load of a site sets its validated starting point and needs none.
    """
    now = now or utcnow()
    digest = facility.digest()
    site = session.exec(select(Site).where(Site.code == facility.code)).first()
    if site is not None and site.file_sha256 == digest:
        return LoadResult(
            site.code, site.revision, False, len(facility.rooms), len(facility.monitors), len(facility.levels)
        )
    carried = _carried_levels(session, site, facility)
    limits_change = site is not None and (
        limits_content(session, site, site.revision)["levels"] != _limit_rows(facility) + carried
        or site.limit_set != facility.limit_set
    )
    if limits_change:
        if approver is None:
            raise PermissionDeniedError(
                Reason(
                    f"the file changes the limits of {site.code}: QA must approve the change with an "
                    "e-signature (tracker facility load … --approve-as QA_USER)",
                    f"该文件更改了 {site.code} 的限度：须由 QA 以电子签名批准此更改"
                    "（tracker facility load … --approve-as QA_USER）",
                )
            )
        require_role(
            approver, "qa", action=Reason("approving a change of facility limits", "批准设施限度变更")
        )
    before_site = site.model_dump(exclude={"updated_at"}) if site else None
    if site is None:
        site = Site(code=facility.code, name=facility.name, updated_at=now)
    site.name, site.name_en, site.timezone = facility.name, facility.name_en, facility.timezone
    site.limit_set, site.revision, site.file_sha256 = (facility.limit_set, site.revision + 1, digest)
    site.rolling_volume_m3 = facility.rules.rolling_volume_m3
    site.recovery_s = facility.rules.recovery_s
    site.updated_at = now
    session.add(site)
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="facility.load",
        entity="site",
        entity_key=site.code,
        before=before_site,
        after=site.model_dump(exclude={"updated_at"}),
        at=now,
        reason=f"facility file revision {site.revision}",
    )

    existing_rooms = {r.code: r for r in session.exec(select(Room).where(Room.site_id == site.id))}
    code_by_id = {r.id: code for code, r in existing_rooms.items()}
    before_rooms = {
        code: {
            "name": r.name,
            "name_en": r.name_en,
            "grade": r.grade,
            "area_m2": r.area_m2,
            "background": code_by_id.get(r.background_id),
            "active": r.active,
        }
        for code, r in existing_rooms.items()
    }
    for rdef in facility.rooms:
        row = existing_rooms.get(rdef.code) or Room(site_id=site.id, code=rdef.code, **_room_row(rdef))
        for key, value in _room_row(rdef).items():
            setattr(row, key, value)
        row.active = True
        session.add(row)
        existing_rooms[rdef.code] = row
    session.flush()
    room_ids = {code: r.id for code, r in existing_rooms.items()}
    for rdef in facility.rooms:
        existing_rooms[rdef.code].background_id = room_ids[rdef.background] if rdef.background else None
        after = {**_room_row(rdef), "background": rdef.background, "active": True}
        if before_rooms.get(rdef.code) != after:
            audit.record(
                session,
                actor=actor,
                action="room.upsert",
                entity="room",
                entity_key=f"{site.code}/{rdef.code}",
                before=before_rooms.get(rdef.code),
                after=after,
                at=now,
            )
    deactivated: list[str] = []
    wanted_rooms = {r.code for r in facility.rooms}
    for code, row in existing_rooms.items():
        if code not in wanted_rooms and row.active:
            row.active = False
            deactivated.append(f"room {code}")
            audit.record(
                session,
                actor=actor,
                action="room.deactivate",
                entity="room",
                entity_key=f"{site.code}/{code}",
                before={"active": True},
                after={"active": False},
                at=now,
                reason="absent from facility file",
            )

    existing_mon = {m.code: m for m in session.exec(select(Monitor).where(Monitor.site_id == site.id))}
    for mdef in facility.monitors:
        values = {
            "room_id": room_ids[mdef.room],
            "kind": mdef.kind,
            "interval_s": mdef.interval_s,
            "reference_room_id": room_ids[mdef.reference] if mdef.reference else None,
            "channels": ",".join(mdef.channels),
            "sample_volume_l": mdef.sample_volume_l,
            "setpoint": mdef.setpoint,
            "calibration_due": mdef.calibration_due,
            "range_low": mdef.range_low,
            "range_high": mdef.range_high,
            "active": True,
        }
        row = existing_mon.get(mdef.code)
        before = {k: getattr(row, k) for k in values} if row else None
        if row is None:
            row = Monitor(site_id=site.id, code=mdef.code, **values)
        else:
            for key, value in values.items():
                setattr(row, key, value)
        session.add(row)
        if before != values:
            audit.record(
                session,
                actor=actor,
                action="monitor.upsert",
                entity="monitor",
                entity_key=f"{site.code}/{mdef.code}",
                before=before,
                after=values,
                at=now,
            )
    wanted_mon = {m.code for m in facility.monitors}
    for code, row in existing_mon.items():
        if code not in wanted_mon and row.active:
            row.active = False
            deactivated.append(f"monitor {code}")
            audit.record(
                session,
                actor=actor,
                action="monitor.deactivate",
                entity="monitor",
                entity_key=f"{site.code}/{code}",
                before={"active": True},
                after={"active": False},
                at=now,
                reason="absent from facility file",
            )

    for level in facility.levels:
        session.add(
            FacilityLimit(
                site_id=site.id,
                revision=site.revision,
                position=level.index,
                kind=level.kind,
                state=level.state,
                monitor_code=level.monitor,
                room_code=level.room,
                grade=level.grade,
                channel=level.channel,
                alert_low=level.alert_low,
                alert_high=level.alert_high,
                action_low=level.action_low,
                action_high=level.action_high,
                delay_s=level.delay_s,
                note=level.note or None,
            )
        )
    for position, row in enumerate(carried, start=len(facility.levels)):
        session.add(FacilityLimit(site_id=site.id, revision=site.revision, position=position, **row))
    session.flush()
    for site_row in session.exec(select(Site)).all():  # carried levels included: refuses a looser one
        list(resolved_monitors(session, site_row))
    audit.record(
        session,
        actor=actor,
        action="limits.revise",
        entity="site",
        entity_key=site.code,
        after=[asdict(lv) for lv in facility.levels],
        at=now,
        reason=f"facility levels of revision {site.revision}",
    )
    session.flush()
    if limits_change:
        signatures.sign(
            session,
            signer=approver,
            meaning="approved",
            entity="site",
            entity_key=site.code,
            scope=f"facility_limits:{site.revision}",
            statement=f"QA approves the change of facility limits (revision {site.revision})",
            content=limits_content(session, site, site.revision),
            now=now,
        )
    return LoadResult(
        site.code,
        site.revision,
        True,
        len(facility.rooms),
        len(facility.monitors),
        len(facility.levels),
        tuple(deactivated),
    )
