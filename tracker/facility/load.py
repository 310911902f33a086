"""Facility registry: sites, rooms/zones and monitoring points, loaded from a TOML file.

``tracker facility load FILE`` is idempotent: the same file twice changes nothing; a
changed file makes a new revision, every change is audited, and rooms or monitors
missing from the new file are deactivated, never deleted (GMP records stay).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import date, datetime

from sqlmodel import Session, select

from tracker.core import audit
from tracker.core.errors import (
    PermissionDeniedError,
    Reason,
)
from tracker.core.timeutil import utcnow
from tracker.facility.basis import basis_id
from tracker.facility.file import FacilityDef, RoomDef
from tracker.facility.limits import load_limit_set
from tracker.facility.models import FacilityLimit, FacilityRevision, Monitor, Room, Site, resolved_monitors
from tracker.facility.policy import compliance_of, notify_settings_of, viable_plan_of
from tracker.facility.viable import ViablePlan
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
    #: evaluation settings changed with QA approval (``evaluation_changes``)
    evaluation_changes: tuple[str, ...] = ()


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


#: What a facility file decides about evaluation beyond the levels: changing one of these for
#: a room or monitor that stays, or a ``[rules]`` value, changes what counts as an excursion and
#: a ``[separation]`` value what a release needs; either needs QA's e-signed approval (GMP 2010 Art. 161, 163; 计算机化系统附录 on changes to
#: critical data; regulatory.md §9). Adding or deactivating a room or monitor is audited.
ROOM_EVALUATION = ("grade", "background")
MONITOR_EVALUATION = (
    "room",
    "kind",
    "interval_s",
    "range_low",
    "range_high",
    "sample_volume_l",
    "reference",
    "calibration_due",
    "channels",
)


def _plain(value: object) -> object:
    """A value as signed content holds it (dates as ISO text, numbers as floats)."""
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return value


def _places_view(session: Session, site: Site, *, active: bool) -> dict:
    """Rooms and monitors as they judge readings (the active ones, or the deactivated ones as
    they were when they left)."""
    every_room = {r.id: r for r in session.exec(select(Room).where(Room.site_id == site.id))}
    code = {rid: r.code for rid, r in every_room.items()}
    rooms = [r for r in every_room.values() if r.active == active]
    monitors = session.exec(select(Monitor).where(Monitor.site_id == site.id, Monitor.active == active)).all()
    return {
        "rooms": {r.code: {"grade": r.grade, "background": code.get(r.background_id)} for r in rooms},
        "monitors": {
            m.code: {
                "room": code.get(m.room_id),
                "kind": m.kind,
                "interval_s": _plain(m.interval_s),
                "range_low": _plain(m.range_low),
                "range_high": _plain(m.range_high),
                "sample_volume_l": _plain(m.sample_volume_l),
                "reference": code.get(m.reference_room_id),
                "calibration_due": _plain(m.calibration_due),
                "channels": m.channels,
            }
            for m in monitors
        },
    }


def retired_view(session: Session, site: Site) -> dict:
    """The deactivated rooms and monitors as they were: bringing one back is an evaluation
    change (else dropping it in one load and returning it changed in the next would pass a
    change QA never approved)."""
    return _places_view(session, site, active=False)


def evaluation_view(session: Session, site: Site) -> dict:
    """What the stored facility decides about evaluation, as it stands."""
    return {
        "rules": {
            "rolling_volume_m3": site.rolling_volume_m3,
            "recovery_s": site.recovery_s,
            "rolling_window_s": site.rolling_window_s,
        },
        "compliance": compliance_of(session, site).as_dict(),
        "notify": notify_settings_of(session, site),
        "separation": {"qa_reviewer_may_release": site.qa_reviewer_may_release},
        "viable": viable_plan_of(session, site).as_json(),
        **_places_view(session, site, active=True),
    }


def file_evaluation_view(facility: FacilityDef) -> dict:
    """What the facility file decides about evaluation (the same shape as :func:`evaluation_view`)."""
    return {
        "rules": {
            "rolling_volume_m3": facility.rules.rolling_volume_m3,
            "recovery_s": facility.rules.recovery_s,
            "rolling_window_s": facility.rules.rolling_window_s,
        },
        "compliance": facility.compliance.as_dict(),
        "notify": file_notify_settings(facility),
        "separation": {"qa_reviewer_may_release": facility.separation.qa_reviewer_may_release},
        "viable": facility.viable.as_json(),
        "rooms": {r.code: {"grade": r.grade, "background": r.background} for r in facility.rooms},
        "monitors": {
            m.code: {
                key: _plain(",".join(m.channels) if key == "channels" else getattr(m, key))
                for key in MONITOR_EVALUATION
            }
            for m in facility.monitors
        },
    }


def _shown(value: object) -> str:
    return (
        ", ".join(str(v) for v in value)
        if isinstance(value, list)
        else f"{value:g}"
        if isinstance(value, float)
        else str(value)
    )


def file_notify_settings(facility: FacilityDef) -> dict:
    """Who is alarmed and how the messages read, as a revision stores them."""
    return {
        "rules": [r.as_dict() for r in facility.notify],
        "rotas": [r.as_dict() for r in facility.rota],
        "language": facility.language,
        "base_url": facility.base_url,
    }


def notify_changes(before: dict, after: dict) -> list[str]:
    """Each change of who is alarmed (DESIGN §10: QA approves it like an evaluation setting)."""
    old = {r["name"]: r for r in before.get("rules", [])}
    new = {r["name"]: r for r in after.get("rules", [])}
    changes = [f"[notify] rule '{n}' added" for n in new if n not in old]
    changes += [f"[notify] rule '{n}' removed" for n in old if n not in new]
    for name, rule in new.items():
        if name in old:
            changes += [
                f"[notify] rule '{name}': {k} {_shown(old[name].get(k))} → {_shown(v)}"
                for k, v in rule.items()
                if old[name].get(k) != v
            ]
    old_rotas = {r["name"]: r for r in before.get("rotas", [])}
    new_rotas = {r["name"]: r for r in after.get("rotas", [])}
    changes += [f"[rota] '{n}' added" for n in new_rotas if n not in old_rotas]
    changes += [f"[rota] '{n}' removed" for n in old_rotas if n not in new_rotas]
    changes += [
        f"[rota] '{n}': duties or fallback changed"
        for n, r in new_rotas.items()
        if n in old_rotas and old_rotas[n] != r
    ]
    for key in ("language", "base_url"):
        if before.get(key, after.get(key)) != after.get(key):
            changes.append(f"[notify] {key}: {before.get(key)} → {after.get(key)}")
    return changes


def viable_changes(before: dict, after: dict) -> list[str]:
    """Each change of the viable sampling plan: it decides which samples are taken, how they are
    incubated and judged, so QA approves it like an evaluation setting (DESIGN §10)."""
    empty = ViablePlan().as_json()
    before, after = before or empty, after or empty
    changes = [
        f"[viable] {key}: {_shown(before.get(key))} → {_shown(after.get(key))}"
        for key in ("media", "reading_grace_h")
        if before.get(key) != after.get(key)
    ]
    if before.get("incubation") != after.get("incubation"):
        changes.append("[viable] incubation scheme changed")
    old = {loc["code"]: loc for loc in before.get("locations", [])}
    new = {loc["code"]: loc for loc in after.get("locations", [])}
    changes += [f"[viable] location {c} added" for c in new if c not in old]
    changes += [f"[viable] location {c} removed" for c in old if c not in new]
    for code, loc in new.items():
        if code in old:
            changes += [
                f"[viable] location {code}: {k} {_shown(old[code].get(k))} → {_shown(v)}"
                for k, v in loc.items()
                if old[code].get(k) != v
            ]
    if before.get("levels") != after.get("levels"):
        changes.append("[viable] alert/action levels changed")
    return changes


def evaluation_changes(before: dict, after: dict, retired: dict | None = None) -> list[str]:
    """Each change of an evaluation setting, e.g. ``room B01: grade B → C``; ``retired``: the
    deactivated rooms and monitors (:func:`retired_view`), whose return is a change too."""
    changes = [
        f"[rules] {key}: {before['rules'][key]:g} → {value:g}"
        for key, value in after["rules"].items()
        if before["rules"][key] != value
    ]
    changes += [
        f"[compliance] {key}: {_shown(before['compliance'][key])} → {_shown(value)}"
        for key, value in after["compliance"].items()
        if before["compliance"][key] != value
    ]
    changes += notify_changes(before.get("notify") or {}, after.get("notify") or {})
    was = before.get("separation", {})
    changes += [
        f"[separation] {key}: {str(was.get(key, False)).lower()} → {str(value).lower()}"
        for key, value in after.get("separation", {}).items()
        if was.get(key, False) != value
    ]
    changes += viable_changes(before.get("viable") or {}, after.get("viable") or {})
    for table, label in (("rooms", "room"), ("monitors", "monitor")):
        for code, values in after[table].items():
            old = before[table].get(code)
            if old is None:
                gone = (retired or {}).get(table, {}).get(code)
                if gone is not None:  # back after a deactivation: as a change, with what differs
                    changes.append(f"{label} {code}: reactivated")
                    changes += [
                        f"{label} {code}: {key} {gone[key]} → {v}"
                        for key, v in values.items()
                        if gone.get(key) != v
                    ]
                continue
            changes += [
                f"{label} {code}: {key} {old[key]} → {v}" for key, v in values.items() if old[key] != v
            ]
    return changes


def record_revision(
    session: Session, site: Site, facility: FacilityDef, changes: list[str], *, actor: str, now: datetime
) -> None:
    """Keep what this revision decides about evaluation (rooms and monitors change in place;
    the compliance rules live only here)."""
    settings = {
        **evaluation_view(session, site),
        "compliance": facility.compliance.as_dict(),
        "notify": file_notify_settings(facility),
        "viable": facility.viable.as_json(),
    }
    if facility.devices:  # input-path configuration, kept with the revision (not QA-approved)
        settings["devices"] = facility.devices.as_dict()
    session.add(
        FacilityRevision(
            site_id=site.id,
            revision=site.revision,
            file_sha256=site.file_sha256,
            settings=json.dumps(settings, sort_keys=True, ensure_ascii=False),
            changes=json.dumps(changes, ensure_ascii=False),
            loaded_by=actor,
            loaded_at=now,
        )
    )
    session.flush()


def evaluation_content(session: Session, site: Site, revision: int) -> dict:
    """A revision's evaluation settings and changes as QA signs them when approving."""
    row = session.exec(
        select(FacilityRevision).where(
            FacilityRevision.site_id == site.id, FacilityRevision.revision == revision
        )
    ).first()
    if row is None:
        return {"site": site.code, "revision": revision, "missing": True}
    return {
        "site": site.code,
        "revision": revision,
        "changes": json.loads(row.changes),
        "settings": json.loads(row.settings),
    }


def _require_approval(
    site: Site, approver: Authenticated | None, limits_change: bool, changes: list[str]
) -> None:
    """A change of levels, limit set or evaluation settings needs a QA approver (signed later)."""
    if not (limits_change or changes):
        return
    if approver is None:
        policy = all(c.startswith("[separation]") for c in changes)
        what_en = (
            "the limits"
            if limits_change
            else ("the separation-of-duties policy" if policy else "how readings are judged")
        )
        what_zh = "限度" if limits_change else ("职责分离规定" if policy else "读数的判定依据")
        listed = "; ".join(changes[:5]) + (f"; … ({len(changes)} in all)" if len(changes) > 5 else "")
        detail = f" ({listed})" if changes else ""
        raise PermissionDeniedError(
            Reason(
                f"the file changes {what_en} of {site.code}{detail}: QA must approve the change with an "
                "e-signature (tracker facility load … --approve-as QA_USER)",
                f"该文件更改了 {site.code} 的{what_zh}{detail}：须由 QA 以电子签名批准此更改"
                "（tracker facility load … --approve-as QA_USER）",
            )
        )
    require_role(approver, "qa", action=Reason("approving a change of facility limits", "批准设施限度变更"))


def load_facility(
    session: Session,
    facility: FacilityDef,
    *,
    actor: str,
    approver: Authenticated | None = None,
    now: datetime | None = None,
) -> LoadResult:
    """Apply a parsed facility file; unchanged files are a no-op (idempotent).

    A file that changes the facility's alert/action levels, its regulatory limit set or an
    evaluation setting (``ROOM_EVALUATION``, ``MONITOR_EVALUATION``, ``[rules]``) needs QA's
    approval by e-signature (``approver``; GMP 2010 Art. 23, 161, 163; 计算机化系统附录 on
    changes to critical data). The first load of a site sets its validated starting point and
    needs none.
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
    changes = (
        evaluation_changes(
            evaluation_view(session, site), file_evaluation_view(facility), retired_view(session, site)
        )
        if site
        else []
    )
    if site is not None:
        _require_approval(site, approver, limits_change, changes)
    site = _apply_site(session, site, facility, digest, actor=actor, now=now)
    room_ids, deactivated = _apply_rooms(session, site, facility, actor=actor, now=now)
    deactivated += _apply_monitors(session, site, facility, room_ids, actor=actor, now=now)
    _apply_levels(session, site, facility, carried, actor=actor, now=now)
    record_revision(session, site, facility, changes, actor=actor, now=now)
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
    if changes:
        signatures.sign(
            session,
            signer=approver,
            meaning="approved",
            entity="site",
            entity_key=site.code,
            scope=f"facility_evaluation:{site.revision}",
            statement=f"QA approves the change of evaluation settings (facility revision {site.revision})",
            content=evaluation_content(session, site, site.revision),
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
        tuple(changes),
    )


def _apply_site(
    session: Session, site: Site | None, facility: FacilityDef, digest: str, *, actor: str, now: datetime
) -> Site:
    """Create or update the site row as a new revision; audited."""
    before_site = site.model_dump(exclude={"updated_at"}) if site else None
    if site is None:
        site = Site(code=facility.code, name=facility.name, updated_at=now)
    site.name, site.name_en, site.timezone = facility.name, facility.name_en, facility.timezone
    site.limit_set, site.revision, site.file_sha256 = (facility.limit_set, site.revision + 1, digest)
    site.rolling_volume_m3 = facility.rules.rolling_volume_m3
    site.recovery_s = facility.rules.recovery_s
    site.rolling_window_s = facility.rules.rolling_window_s
    site.qa_reviewer_may_release = facility.separation.qa_reviewer_may_release
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
    return site


def _apply_rooms(
    session: Session, site: Site, facility: FacilityDef, *, actor: str, now: datetime
) -> tuple[dict[str, int], list[str]]:
    """Upsert the file's rooms, deactivate the missing ones (never deleted); audited."""
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

    return room_ids, deactivated


def _apply_monitors(
    session: Session,
    site: Site,
    facility: FacilityDef,
    room_ids: dict[str, int],
    *,
    actor: str,
    now: datetime,
) -> list[str]:
    """Upsert the file's monitors, deactivate the missing ones (never deleted); audited."""
    deactivated: list[str] = []
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

    return deactivated


def _apply_levels(
    session: Session, site: Site, facility: FacilityDef, carried: list[dict], *, actor: str, now: datetime
) -> None:
    """Store the revision's levels (the file's and the carried data-driven ones); a level
    looser than the regulation, carried ones included, refuses the whole load."""
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
        # the revision's evaluation basis is made here, not by the first batch judged by it: an
        # ingest batch that inserted it would hold the row lock an ATTACH PARTITION of
        # ``reading`` (whose basis_id refers to it) waits for (tracker.core.partitions)
        limit_set = load_limit_set(site_row.limit_set)
        basis_id(
            session,
            site_id=site_row.id,
            code=limit_set.code,
            version=limit_set.version,
            sha256=limit_set.sha256,
            revision=site_row.revision,
        )
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


def site_signed_content(session: Session, site: Site, scope: str) -> dict:
    """The record a site-level approval signed, rebuilt from the database for checking:
    ``facility_limits:N`` covers the levels of revision N, ``facility_evaluation:N`` its
    evaluation settings and their changes."""
    kind, _, number = scope.partition(":")
    if kind == "facility_evaluation":
        return evaluation_content(session, site, int(number))
    return limits_content(session, site, int(number))
