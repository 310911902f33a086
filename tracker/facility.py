"""Facility registry: sites, rooms/zones and monitoring points, loaded from a TOML file.

``tracker facility load FILE`` is idempotent: the same file twice changes nothing; a
changed file makes a new revision, every change is audited, and rooms or monitors
missing from the new file are deactivated, never deleted (GMP records stay).
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import Column, Text, UniqueConstraint
from sqlmodel import Field, Session, SQLModel, select

from tracker import audit, signatures
from tracker.db import UTCDateTime
from tracker.errors import FacilityFileError, InvalidInputError, NotFoundError, PermissionDeniedError, Reason
from tracker.limits import (
    GRADES,
    KINDS,
    PARTICLE_CHANNELS,
    FacilityLevel,
    MonitorSpec,
    load_limit_set,
    resolve_monitor_limits,
)
from tracker.timeutil import utcnow
from tracker.users import Authenticated, require_role
from tracker.volume import DEFAULT_ROLLING_VOLUME_M3

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
    updated_at: datetime = Field(sa_type=UTCDateTime, nullable=False)


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
        return FacilityLevel(kind=self.kind, state=self.state, monitor=self.monitor_code,
                             room=self.room_code, grade=self.grade, channel=self.channel,
                             alert_low=self.alert_low, alert_high=self.alert_high,
                             action_low=self.action_low, action_high=self.action_high,
                             delay_s=self.delay_s, note=self.note or "", index=self.position)


# --------------------------------------------------------------------------- the file


@dataclass(frozen=True)
class RoomDef:
    code: str
    name: str
    grade: str
    name_en: str = ""
    background: str | None = None
    area_m2: float | None = None


@dataclass(frozen=True)
class MonitorDef:
    code: str
    room: str
    kind: str
    interval_s: float
    reference: str | None = None
    channels: tuple[str, ...] = ()
    sample_volume_l: float | None = None
    setpoint: float | None = None
    calibration_due: date | None = None
    range_low: float | None = None
    range_high: float | None = None


@dataclass(frozen=True)
class RulesDef:
    """``[rules]``: per-facility settings of the rules that are not limits."""

    rolling_volume_m3: float = DEFAULT_ROLLING_VOLUME_M3
    recovery_s: float = DEFAULT_RECOVERY_S


@dataclass(frozen=True)
class FacilityDef:
    code: str
    name: str
    name_en: str
    timezone: str
    limit_set: str
    rooms: tuple[RoomDef, ...]
    monitors: tuple[MonitorDef, ...]
    levels: tuple[FacilityLevel, ...] = field(default=())
    rules: RulesDef = field(default_factory=RulesDef)

    def digest(self) -> str:
        body = json.dumps(asdict(self), sort_keys=True, default=str, ensure_ascii=False)
        return hashlib.sha256(body.encode()).hexdigest()


def _need(entry: dict, key: str, where: str):
    if key not in entry or entry[key] in (None, ""):
        raise FacilityFileError(Reason(f"{where}: missing '{key}'", f"{where}：缺少 '{key}'"))
    return entry[key]


def _num(entry: dict, key: str, where: str) -> float | None:
    value = entry.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FacilityFileError(Reason(f"{where}: '{key}' must be a number, got {value!r}",
                                       f"{where}：'{key}' 须为数字，实际为 {value!r}"))
    return float(value)


def parse_facility(text: str, *, source: str = "facility file") -> FacilityDef:
    """Parse and validate a facility file; every refusal names the entry and the rule."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise FacilityFileError(Reason(f"{source}: not valid TOML: {exc}",
                                       f"{source}：不是有效的 TOML：{exc}")) from None
    site = data.get("site") or {}
    code = _need(site, "code", "[site]")
    tz = site.get("timezone", "Asia/Shanghai")
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise FacilityFileError(Reason(f"[site]: unknown time zone {tz!r}",
                                       f"[site]：未知时区 {tz!r}")) from None
    limit_set_code = site.get("limit_set", "CN-GMP-2010")
    try:
        limit_set = load_limit_set(limit_set_code)
    except InvalidInputError as exc:
        raise FacilityFileError(Reason(f"[site]: {exc}", f"[site]：{exc.said('zh-CN')}")) from None

    rooms: list[RoomDef] = []
    for i, entry in enumerate(data.get("rooms", [])):
        where = f"rooms[{i}]"
        grade = _need(entry, "grade", where)
        if grade not in GRADES:
            raise FacilityFileError(Reason(
                f"{where} ({entry.get('code')}): unknown grade {grade!r}; use one of {', '.join(GRADES)}",
                f"{where}（{entry.get('code')}）：未知洁净级别 {grade!r}；请使用 {'、'.join(GRADES)} 之一"))
        rooms.append(RoomDef(code=_need(entry, "code", where), name=_need(entry, "name", where),
                             grade=grade, name_en=entry.get("name_en", ""),
                             background=entry.get("background"),
                             area_m2=_num(entry, "area_m2", where)))
    room_by_code: dict[str, RoomDef] = {}
    for i, room in enumerate(rooms):
        if room.code in room_by_code:
            raise FacilityFileError(Reason(f"rooms[{i}]: duplicate room code {room.code!r}",
                                           f"rooms[{i}]：房间代码 {room.code!r} 重复"))
        room_by_code[room.code] = room
    for i, room in enumerate(rooms):
        if room.background is not None and room.background not in room_by_code:
            raise FacilityFileError(Reason(f"rooms[{i}] ({room.code}): unknown background room "
                                           f"{room.background!r}",
                                           f"rooms[{i}]（{room.code}）：未知的背景房间 {room.background!r}"))
        seen, cur = {room.code}, room
        while cur.background is not None:
            cur = room_by_code[cur.background]
            if cur.code in seen:
                raise FacilityFileError(Reason(f"rooms[{i}] ({room.code}): background rooms form a loop",
                                               f"rooms[{i}]（{room.code}）：背景房间构成循环"))
            seen.add(cur.code)

    monitors: list[MonitorDef] = []
    seen_monitors: set[str] = set()
    for i, entry in enumerate(data.get("monitors", [])):
        where = f"monitors[{i}] ({entry.get('code')})"
        mcode = _need(entry, "code", f"monitors[{i}]")
        if mcode in seen_monitors:
            raise FacilityFileError(Reason(f"{where}: duplicate monitor code {mcode!r}",
                                           f"{where}：监测点代码 {mcode!r} 重复"))
        seen_monitors.add(mcode)
        if "/" in mcode or "+" in mcode or "#" in mcode:
            raise FacilityFileError(Reason(f"{where}: codes may not contain MQTT topic characters / + #",
                                           f"{where}：代码不能包含 MQTT 主题字符 / + #"))
        room = _need(entry, "room", where)
        if room not in room_by_code:
            raise FacilityFileError(Reason(f"{where}: unknown room {room!r}", f"{where}：未知房间 {room!r}"))
        kind = _need(entry, "kind", where)
        if kind not in KINDS:
            raise FacilityFileError(Reason(f"{where}: unknown kind {kind!r}; use one of {', '.join(KINDS)}",
                                           f"{where}：未知类型 {kind!r}；请使用 {'、'.join(KINDS)} 之一"))
        interval = _num(entry, "interval_s", where)
        if interval is None or interval <= 0:
            raise FacilityFileError(Reason(f"{where}: 'interval_s' must be a positive number of seconds",
                                           f"{where}：'interval_s' 须为正的秒数"))
        reference = entry.get("reference")
        if kind == "pressure":
            if not reference:
                raise FacilityFileError(Reason(f"{where}: a pressure monitor needs 'reference' "
                                               "(the low-side room it is measured against)",
                                               f"{where}：压差监测点须指定 'reference'"
                                               "（测量所对照的低压侧房间）"))
            if reference not in room_by_code:
                raise FacilityFileError(Reason(f"{where}: unknown reference room {reference!r}",
                                               f"{where}：未知的参照房间 {reference!r}"))
            if reference == room:
                raise FacilityFileError(Reason(f"{where}: reference room is the monitor's own room",
                                               f"{where}：参照房间不能是监测点自身所在的房间"))
        elif reference:
            raise FacilityFileError(Reason(f"{where}: only pressure monitors have a reference room",
                                           f"{where}：只有压差监测点才有参照房间"))
        channels: tuple[str, ...] = ()
        volume = None
        if kind == "particles":
            channels = tuple(str(c) for c in entry.get("channels", PARTICLE_CHANNELS))
            bad = [c for c in channels if c not in PARTICLE_CHANNELS]
            if bad or not channels:
                raise FacilityFileError(Reason(f"{where}: channels must be among {PARTICLE_CHANNELS}",
                                               f"{where}：通道须为 {PARTICLE_CHANNELS} 中的值"))
            volume = _num(entry, "sample_volume_l", where) or 28.3
        due = entry.get("calibration_due")
        if due is not None and not isinstance(due, date):
            raise FacilityFileError(Reason(f"{where}: calibration_due must be a TOML date (2027-03-01)",
                                           f"{where}：calibration_due 须为 TOML 日期（如 2027-03-01）"))
        monitors.append(MonitorDef(
            code=mcode, room=room, kind=kind, interval_s=interval, reference=reference,
            channels=channels, sample_volume_l=volume, setpoint=_num(entry, "setpoint", where),
            calibration_due=due, range_low=_num(entry, "range_low", where),
            range_high=_num(entry, "range_high", where)))

    levels: list[FacilityLevel] = []
    for i, entry in enumerate(data.get("limits", [])):
        where = f"limits[{i}]"
        selectors = [k for k in ("monitor", "room", "grade") if entry.get(k)]
        if len(selectors) != 1:
            raise FacilityFileError(Reason(f"{where}: give exactly one of monitor, room or grade",
                                           f"{where}：monitor、room、grade 须给出且只能给出其中一个"))
        if entry.get("room") and entry["room"] not in room_by_code:
            raise FacilityFileError(Reason(f"{where}: unknown room {entry['room']!r}",
                                           f"{where}：未知房间 {entry['room']!r}"))
        if entry.get("monitor") and entry["monitor"] not in seen_monitors:
            raise FacilityFileError(Reason(f"{where}: unknown monitor {entry['monitor']!r}",
                                           f"{where}：未知监测点 {entry['monitor']!r}"))
        if entry.get("grade") and entry["grade"] not in GRADES:
            raise FacilityFileError(Reason(f"{where}: unknown grade {entry['grade']!r}",
                                           f"{where}：未知洁净级别 {entry['grade']!r}"))
        kind = _need(entry, "kind", where)
        if kind not in KINDS:
            raise FacilityFileError(Reason(f"{where}: unknown kind {kind!r}", f"{where}：未知类型 {kind!r}"))
        state = entry.get("state", "any")
        if state not in ("any", "at_rest", "in_operation"):
            raise FacilityFileError(Reason(f"{where}: state must be at_rest, in_operation or any",
                                           f"{where}：state 须为 at_rest、in_operation 或 any"))
        channel = entry.get("channel")
        channel = None if channel is None else str(channel)
        values = {k: _num(entry, k, where) for k in
                  ("alert_low", "alert_high", "action_low", "action_high", "delay_s")}
        if kind == "particles":
            if channel is not None and channel not in PARTICLE_CHANNELS:
                raise FacilityFileError(Reason(f"{where}: unknown particle channel {channel!r}",
                                               f"{where}：未知的悬浮粒子通道 {channel!r}"))
            if channel is None and any(values[k] is not None for k in values if k != "delay_s"):
                raise FacilityFileError(Reason(f"{where}: particle levels need a 'channel' (0.5 or 5.0)",
                                               f"{where}：悬浮粒子限度须指定 'channel'（0.5 或 5.0）"))
        elif channel is not None:
            raise FacilityFileError(Reason(f"{where}: only particle limits have a channel",
                                           f"{where}：只有悬浮粒子限度才有通道"))
        if values["delay_s"] is not None and values["delay_s"] < 0:
            raise FacilityFileError(Reason(f"{where}: delay_s cannot be negative",
                                           f"{where}：delay_s 不能为负数"))
        levels.append(FacilityLevel(kind=kind, state=state, monitor=entry.get("monitor"),
                                    room=entry.get("room"), grade=entry.get("grade"),
                                    channel=channel, note=entry.get("note", ""), index=i,
                                    **values))

    facility = FacilityDef(code=code, name=_need(site, "name", "[site]"),
                           name_en=site.get("name_en", ""), timezone=tz,
                           limit_set=limit_set_code, rooms=tuple(rooms),
                           monitors=tuple(monitors), levels=tuple(levels),
                           rules=_parse_rules(data.get("rules") or {}, limit_set))
    # Resolve every monitor's limits now, so a looser-than-regulation level is refused at load.
    for spec in monitor_specs(facility):
        resolve_monitor_limits(limit_set, spec, facility.levels)
    return facility


RULE_KEYS = ("particle_rolling_volume_m3", "recovery_min")


def _parse_rules(entry: dict, limit_set) -> RulesDef:
    """``[rules]``: ``particle_rolling_volume_m3`` (default 1) and ``recovery_min`` (default 20)."""
    unknown = sorted(set(entry) - set(RULE_KEYS))
    if unknown:
        raise FacilityFileError(Reason(f"[rules]: unknown key(s) {', '.join(unknown)}; "
                                       f"known: {', '.join(RULE_KEYS)}",
                                       f"[rules]：未知的键 {', '.join(unknown)}；"
                                       f"可用的键：{', '.join(RULE_KEYS)}"))
    volume = _num(entry, "particle_rolling_volume_m3", "[rules]")
    if volume is None:
        volume = DEFAULT_ROLLING_VOLUME_M3
    lowest = min((lim.high for lim in limit_set.particles.values() if lim.high), default=None)
    if volume <= 0 or (lowest is not None and 1.0 / volume > lowest):
        raise FacilityFileError(Reason(
            f"[rules]: particle_rolling_volume_m3 {volume:g} is too small: one particle in it "
            f"would already exceed {limit_set.code}'s lowest particle limit {lowest:g} /m³ "
            "(ISO 14644-1 minimum sample volume Vs = 20 / limit m³; regulatory.md §11)",
            f"[rules]：particle_rolling_volume_m3 {volume:g} 过小：其中只要有一个粒子就已超过 "
            f"{limit_set.code} 最低的悬浮粒子限度 {lowest:g} /m³"
            "（ISO 14644-1 最小采样量 Vs = 20 / 限度 m³；regulatory.md §11）"))
    recovery = _num(entry, "recovery_min", "[rules]")
    if recovery is None:
        recovery = DEFAULT_RECOVERY_S / 60
    if not 0 <= recovery <= 240:
        raise FacilityFileError(Reason(f"[rules]: recovery_min {recovery:g} must be 0…240 minutes "
                                       "(0 switches the recovery rule off)",
                                       f"[rules]：recovery_min {recovery:g} 须在 0…240 分钟之间"
                                       "（0 表示关闭恢复规则）"))
    return RulesDef(rolling_volume_m3=volume, recovery_s=recovery * 60.0)


def monitor_specs(facility: FacilityDef) -> list[MonitorSpec]:
    grade = {r.code: r.grade for r in facility.rooms}
    return [MonitorSpec(code=m.code, room=m.room, grade=grade[m.room], kind=m.kind,
                        reference_grade=grade[m.reference] if m.reference else None,
                        channels=m.channels) for m in facility.monitors]


def read_facility_file(path: Path) -> FacilityDef:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise FacilityFileError(Reason(f"cannot read {path}: {exc.strerror}",
                                       f"无法读取 {path}：{exc.strerror}")) from None
    return parse_facility(text, source=str(path))


# --------------------------------------------------------------------------- persistence


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


_LIMIT_FIELDS = ("kind", "state", "monitor_code", "room_code", "grade", "channel", "alert_low",
                 "alert_high", "action_low", "action_high", "delay_s", "note", "source")


def _limit_rows(facility: FacilityDef) -> list[dict]:
    return [{"kind": lv.kind, "state": lv.state, "monitor_code": lv.monitor, "room_code": lv.room,
             "grade": lv.grade, "channel": lv.channel, "alert_low": lv.alert_low,
             "alert_high": lv.alert_high, "action_low": lv.action_low, "action_high": lv.action_high,
             "delay_s": lv.delay_s, "note": lv.note or None, "source": None} for lv in facility.levels]


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
        return any(lv.room == row["room_code"] and lv.kind == row["kind"]
                   and lv.channel in (None, row["channel"]) and lv.state in ("any", row["state"])
                   for lv in facility.levels)

    return [row for row in limits_content(session, site, site.revision)["levels"]
            if row["source"] and not overridden(row)
            and grades_new.get(row["room_code"]) == grades_now.get(row["room_code"])]


def limits_content(session: Session, site: Site, revision: int) -> dict:
    """The facility limits of one revision as signed when a change is approved."""
    rows = session.exec(select(FacilityLimit).where(FacilityLimit.site_id == site.id,
                                                    FacilityLimit.revision == revision)
                        .order_by(FacilityLimit.position)).all()
    return {"site": site.code, "revision": revision, "limit_set": site.limit_set,
            "levels": [{k: getattr(r, k) for k in _LIMIT_FIELDS} for r in rows]}


def load_facility(session: Session, facility: FacilityDef, *, actor: str,
                  approver: Authenticated | None = None, now: datetime | None = None) -> LoadResult:
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
        return LoadResult(site.code, site.revision, False, len(facility.rooms),
                          len(facility.monitors), len(facility.levels))
    carried = _carried_levels(session, site, facility)
    limits_change = site is not None and (
        limits_content(session, site, site.revision)["levels"] != _limit_rows(facility) + carried
        or site.limit_set != facility.limit_set)
    if limits_change:
        if approver is None:
            raise PermissionDeniedError(Reason(
                f"the file changes the limits of {site.code}: QA must approve the change with an "
                "e-signature (tracker facility load … --approve-as QA_USER)",
                f"该文件更改了 {site.code} 的限度：须由 QA 以电子签名批准此更改"
                "（tracker facility load … --approve-as QA_USER）"))
        require_role(approver, "qa", action=Reason("approving a change of facility limits",
                                                   "批准设施限度变更"))
    before_site = site.model_dump(exclude={"updated_at"}) if site else None
    if site is None:
        site = Site(code=facility.code, name=facility.name, updated_at=now)
    site.name, site.name_en, site.timezone = facility.name, facility.name_en, facility.timezone
    site.limit_set, site.revision, site.file_sha256 = (facility.limit_set, site.revision + 1,
                                                       digest)
    site.rolling_volume_m3 = facility.rules.rolling_volume_m3
    site.recovery_s = facility.rules.recovery_s
    site.updated_at = now
    session.add(site)
    session.flush()
    audit.record(session, actor=actor, action="facility.load", entity="site",
                 entity_key=site.code, before=before_site,
                 after=site.model_dump(exclude={"updated_at"}), at=now,
                 reason=f"facility file revision {site.revision}")

    existing_rooms = {r.code: r for r in session.exec(select(Room).where(Room.site_id == site.id))}
    code_by_id = {r.id: code for code, r in existing_rooms.items()}
    before_rooms = {code: {"name": r.name, "name_en": r.name_en, "grade": r.grade,
                           "area_m2": r.area_m2, "background": code_by_id.get(r.background_id),
                           "active": r.active}
                    for code, r in existing_rooms.items()}
    for rdef in facility.rooms:
        row = existing_rooms.get(rdef.code) or Room(site_id=site.id, code=rdef.code,
                                                    **_room_row(rdef))
        for key, value in _room_row(rdef).items():
            setattr(row, key, value)
        row.active = True
        session.add(row)
        existing_rooms[rdef.code] = row
    session.flush()
    room_ids = {code: r.id for code, r in existing_rooms.items()}
    for rdef in facility.rooms:
        existing_rooms[rdef.code].background_id = (room_ids[rdef.background]
                                                   if rdef.background else None)
        after = {**_room_row(rdef), "background": rdef.background, "active": True}
        if before_rooms.get(rdef.code) != after:
            audit.record(session, actor=actor, action="room.upsert", entity="room",
                         entity_key=f"{site.code}/{rdef.code}", before=before_rooms.get(rdef.code),
                         after=after, at=now)
    deactivated: list[str] = []
    wanted_rooms = {r.code for r in facility.rooms}
    for code, row in existing_rooms.items():
        if code not in wanted_rooms and row.active:
            row.active = False
            deactivated.append(f"room {code}")
            audit.record(session, actor=actor, action="room.deactivate", entity="room",
                         entity_key=f"{site.code}/{code}", before={"active": True},
                         after={"active": False}, at=now, reason="absent from facility file")

    existing_mon = {m.code: m for m in session.exec(select(Monitor).where(Monitor.site_id == site.id))}
    for mdef in facility.monitors:
        values = {"room_id": room_ids[mdef.room], "kind": mdef.kind, "interval_s": mdef.interval_s,
                  "reference_room_id": room_ids[mdef.reference] if mdef.reference else None,
                  "channels": ",".join(mdef.channels), "sample_volume_l": mdef.sample_volume_l,
                  "setpoint": mdef.setpoint, "calibration_due": mdef.calibration_due,
                  "range_low": mdef.range_low, "range_high": mdef.range_high, "active": True}
        row = existing_mon.get(mdef.code)
        before = ({k: getattr(row, k) for k in values} if row else None)
        if row is None:
            row = Monitor(site_id=site.id, code=mdef.code, **values)
        else:
            for key, value in values.items():
                setattr(row, key, value)
        session.add(row)
        if before != values:
            audit.record(session, actor=actor, action="monitor.upsert", entity="monitor",
                         entity_key=f"{site.code}/{mdef.code}", before=before, after=values, at=now)
    wanted_mon = {m.code for m in facility.monitors}
    for code, row in existing_mon.items():
        if code not in wanted_mon and row.active:
            row.active = False
            deactivated.append(f"monitor {code}")
            audit.record(session, actor=actor, action="monitor.deactivate", entity="monitor",
                         entity_key=f"{site.code}/{code}", before={"active": True},
                         after={"active": False}, at=now, reason="absent from facility file")

    for level in facility.levels:
        session.add(FacilityLimit(
            site_id=site.id, revision=site.revision, position=level.index, kind=level.kind,
            state=level.state, monitor_code=level.monitor, room_code=level.room,
            grade=level.grade, channel=level.channel, alert_low=level.alert_low,
            alert_high=level.alert_high, action_low=level.action_low,
            action_high=level.action_high, delay_s=level.delay_s, note=level.note or None))
    for position, row in enumerate(carried, start=len(facility.levels)):
        session.add(FacilityLimit(site_id=site.id, revision=site.revision, position=position, **row))
    session.flush()
    from tracker.registry import build_registry  # (registry builds on this module)

    build_registry(session)  # every monitor's resolved limits, carried levels included: refuses a looser one
    audit.record(session, actor=actor, action="limits.revise", entity="site", entity_key=site.code,
                 after=[asdict(lv) for lv in facility.levels], at=now,
                 reason=f"facility levels of revision {site.revision}")
    session.flush()
    if limits_change:
        signatures.sign(session, signer=approver, meaning="approved", entity="site", entity_key=site.code,
                        scope=f"facility_limits:{site.revision}", statement="QA approves the change of "
                        f"facility limits (revision {site.revision})",
                        content=limits_content(session, site, site.revision), now=now)
    return LoadResult(site.code, site.revision, True, len(facility.rooms),
                      len(facility.monitors), len(facility.levels), tuple(deactivated))


def get_site(session: Session, code: str | None = None) -> Site:
    """The named site, or the only one when there is just one."""
    query = select(Site) if code is None else select(Site).where(Site.code == code)
    sites = session.exec(query).all()
    if not sites:
        raise NotFoundError(Reason(f"no site {code!r}", f"没有场地 {code!r}") if code else
                            Reason("no facility loaded yet: run `tracker facility load FILE`",
                                   "尚未载入设施文件：请运行 `tracker facility load FILE`"))
    if len(sites) > 1:
        raise InvalidInputError(Reason("several sites: name one with --site", "有多个场地：请用 --site 指定"))
    return sites[0]


def find_room(session: Session, code: str, *, site_code: str | None = None) -> Room:
    site = get_site(session, site_code)
    room = session.exec(select(Room).where(Room.site_id == site.id, Room.code == code)).first()
    if room is None:
        raise NotFoundError(Reason(f"no room {code!r} at site {site.code}",
                                   f"场地 {site.code} 没有房间 {code!r}"))
    return room


def containing_rooms(session: Session, room: Room) -> list[Room]:
    """The room and the rooms it sits in, innermost first (a zone, its room, …)."""
    chain, seen = [room], {room.id}
    while chain[-1].background_id is not None and chain[-1].background_id not in seen:
        parent = session.get(Room, chain[-1].background_id)
        chain.append(parent)
        seen.add(parent.id)
    return chain


#: calibration due within this many days is reported as due soon (viewLinc-style warning)
CALIBRATION_WARNING_DAYS = 30


def calibration_status(due: date | None, today: date,
                       warn_days: int = CALIBRATION_WARNING_DAYS) -> str:
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
    for m in session.exec(select(Monitor).where(Monitor.site_id == site.id, Monitor.active)
                          .order_by(Monitor.code)):
        room = rooms[m.room_id]
        out.append({"monitor": m.code, "room": room.code, "grade": room.grade, "kind": m.kind,
                    "interval_s": m.interval_s,
                    "reference": rooms[m.reference_room_id].code if m.reference_room_id else None,
                    "calibration_due": m.calibration_due.isoformat() if m.calibration_due else None,
                    "calibration": calibration_status(m.calibration_due, today),
                    "range": [m.range_low, m.range_high]})
    return out
