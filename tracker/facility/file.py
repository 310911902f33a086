"""The facility file (TOML): parsed and validated into frozen definitions, without a database."""

from __future__ import annotations

import hashlib
import json
import tomllib
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tracker.core.errors import (
    FacilityFileError,
    InvalidInputError,
    Reason,
)
from tracker.facility.limits import (
    GRADES,
    KINDS,
    PARTICLE_CHANNELS,
    FacilityLevel,
    MonitorSpec,
    load_limit_set,
    resolve_monitor_limits,
)
from tracker.facility.models import DEFAULT_RECOVERY_S, DEFAULT_ROLLING_VOLUME_M3


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
        raise FacilityFileError(
            Reason(
                f"{where}: '{key}' must be a number, got {value!r}",
                f"{where}：'{key}' 须为数字，实际为 {value!r}",
            )
        )
    return float(value)


def parse_facility(text: str, *, source: str = "facility file") -> FacilityDef:
    """Parse and validate a facility file; every refusal names the entry and the rule."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise FacilityFileError(
            Reason(f"{source}: not valid TOML: {exc}", f"{source}：不是有效的 TOML：{exc}")
        ) from None
    site = data.get("site") or {}
    code = _need(site, "code", "[site]")
    tz = site.get("timezone", "Asia/Shanghai")
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise FacilityFileError(
            Reason(f"[site]: unknown time zone {tz!r}", f"[site]：未知时区 {tz!r}")
        ) from None
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
            raise FacilityFileError(
                Reason(
                    f"{where} ({entry.get('code')}): unknown grade {grade!r}; use one of {', '.join(GRADES)}",
                    f"{where}（{entry.get('code')}）：未知洁净级别 {grade!r}；请使用 {'、'.join(GRADES)} 之一",
                )
            )
        rooms.append(
            RoomDef(
                code=_need(entry, "code", where),
                name=_need(entry, "name", where),
                grade=grade,
                name_en=entry.get("name_en", ""),
                background=entry.get("background"),
                area_m2=_num(entry, "area_m2", where),
            )
        )
    room_by_code: dict[str, RoomDef] = {}
    for i, room in enumerate(rooms):
        if room.code in room_by_code:
            raise FacilityFileError(
                Reason(
                    f"rooms[{i}]: duplicate room code {room.code!r}",
                    f"rooms[{i}]：房间代码 {room.code!r} 重复",
                )
            )
        room_by_code[room.code] = room
    for i, room in enumerate(rooms):
        if room.background is not None and room.background not in room_by_code:
            raise FacilityFileError(
                Reason(
                    f"rooms[{i}] ({room.code}): unknown background room {room.background!r}",
                    f"rooms[{i}]（{room.code}）：未知的背景房间 {room.background!r}",
                )
            )
        seen, cur = {room.code}, room
        while cur.background is not None:
            cur = room_by_code[cur.background]
            if cur.code in seen:
                raise FacilityFileError(
                    Reason(
                        f"rooms[{i}] ({room.code}): background rooms form a loop",
                        f"rooms[{i}]（{room.code}）：背景房间构成循环",
                    )
                )
            seen.add(cur.code)

    monitors: list[MonitorDef] = []
    seen_monitors: set[str] = set()
    for i, entry in enumerate(data.get("monitors", [])):
        where = f"monitors[{i}] ({entry.get('code')})"
        mcode = _need(entry, "code", f"monitors[{i}]")
        if mcode in seen_monitors:
            raise FacilityFileError(
                Reason(f"{where}: duplicate monitor code {mcode!r}", f"{where}：监测点代码 {mcode!r} 重复")
            )
        seen_monitors.add(mcode)
        if "/" in mcode or "+" in mcode or "#" in mcode:
            raise FacilityFileError(
                Reason(
                    f"{where}: codes may not contain MQTT topic characters / + #",
                    f"{where}：代码不能包含 MQTT 主题字符 / + #",
                )
            )
        room = _need(entry, "room", where)
        if room not in room_by_code:
            raise FacilityFileError(Reason(f"{where}: unknown room {room!r}", f"{where}：未知房间 {room!r}"))
        kind = _need(entry, "kind", where)
        if kind not in KINDS:
            raise FacilityFileError(
                Reason(
                    f"{where}: unknown kind {kind!r}; use one of {', '.join(KINDS)}",
                    f"{where}：未知类型 {kind!r}；请使用 {'、'.join(KINDS)} 之一",
                )
            )
        interval = _num(entry, "interval_s", where)
        if interval is None or interval <= 0:
            raise FacilityFileError(
                Reason(
                    f"{where}: 'interval_s' must be a positive number of seconds",
                    f"{where}：'interval_s' 须为正的秒数",
                )
            )
        reference = entry.get("reference")
        if kind == "pressure":
            if not reference:
                raise FacilityFileError(
                    Reason(
                        f"{where}: a pressure monitor needs 'reference' "
                        "(the low-side room it is measured against)",
                        f"{where}：压差监测点须指定 'reference'（测量所对照的低压侧房间）",
                    )
                )
            if reference not in room_by_code:
                raise FacilityFileError(
                    Reason(
                        f"{where}: unknown reference room {reference!r}",
                        f"{where}：未知的参照房间 {reference!r}",
                    )
                )
            if reference == room:
                raise FacilityFileError(
                    Reason(
                        f"{where}: reference room is the monitor's own room",
                        f"{where}：参照房间不能是监测点自身所在的房间",
                    )
                )
        elif reference:
            raise FacilityFileError(
                Reason(
                    f"{where}: only pressure monitors have a reference room",
                    f"{where}：只有压差监测点才有参照房间",
                )
            )
        channels: tuple[str, ...] = ()
        volume = None
        if kind == "particles":
            channels = tuple(str(c) for c in entry.get("channels", PARTICLE_CHANNELS))
            bad = [c for c in channels if c not in PARTICLE_CHANNELS]
            if bad or not channels:
                raise FacilityFileError(
                    Reason(
                        f"{where}: channels must be among {PARTICLE_CHANNELS}",
                        f"{where}：通道须为 {PARTICLE_CHANNELS} 中的值",
                    )
                )
            volume = _num(entry, "sample_volume_l", where) or 28.3
        due = entry.get("calibration_due")
        if due is not None and not isinstance(due, date):
            raise FacilityFileError(
                Reason(
                    f"{where}: calibration_due must be a TOML date (2027-03-01)",
                    f"{where}：calibration_due 须为 TOML 日期（如 2027-03-01）",
                )
            )
        monitors.append(
            MonitorDef(
                code=mcode,
                room=room,
                kind=kind,
                interval_s=interval,
                reference=reference,
                channels=channels,
                sample_volume_l=volume,
                setpoint=_num(entry, "setpoint", where),
                calibration_due=due,
                range_low=_num(entry, "range_low", where),
                range_high=_num(entry, "range_high", where),
            )
        )

    levels: list[FacilityLevel] = []
    for i, entry in enumerate(data.get("limits", [])):
        where = f"limits[{i}]"
        selectors = [k for k in ("monitor", "room", "grade") if entry.get(k)]
        if len(selectors) != 1:
            raise FacilityFileError(
                Reason(
                    f"{where}: give exactly one of monitor, room or grade",
                    f"{where}：monitor、room、grade 须给出且只能给出其中一个",
                )
            )
        if entry.get("room") and entry["room"] not in room_by_code:
            raise FacilityFileError(
                Reason(f"{where}: unknown room {entry['room']!r}", f"{where}：未知房间 {entry['room']!r}")
            )
        if entry.get("monitor") and entry["monitor"] not in seen_monitors:
            raise FacilityFileError(
                Reason(
                    f"{where}: unknown monitor {entry['monitor']!r}",
                    f"{where}：未知监测点 {entry['monitor']!r}",
                )
            )
        if entry.get("grade") and entry["grade"] not in GRADES:
            raise FacilityFileError(
                Reason(
                    f"{where}: unknown grade {entry['grade']!r}", f"{where}：未知洁净级别 {entry['grade']!r}"
                )
            )
        kind = _need(entry, "kind", where)
        if kind not in KINDS:
            raise FacilityFileError(Reason(f"{where}: unknown kind {kind!r}", f"{where}：未知类型 {kind!r}"))
        state = entry.get("state", "any")
        if state not in ("any", "at_rest", "in_operation"):
            raise FacilityFileError(
                Reason(
                    f"{where}: state must be at_rest, in_operation or any",
                    f"{where}：state 须为 at_rest、in_operation 或 any",
                )
            )
        channel = entry.get("channel")
        channel = None if channel is None else str(channel)
        values = {
            k: _num(entry, k, where)
            for k in ("alert_low", "alert_high", "action_low", "action_high", "delay_s")
        }
        if kind == "particles":
            if channel is not None and channel not in PARTICLE_CHANNELS:
                raise FacilityFileError(
                    Reason(
                        f"{where}: unknown particle channel {channel!r}",
                        f"{where}：未知的悬浮粒子通道 {channel!r}",
                    )
                )
            if channel is None and any(values[k] is not None for k in values if k != "delay_s"):
                raise FacilityFileError(
                    Reason(
                        f"{where}: particle levels need a 'channel' (0.5 or 5.0)",
                        f"{where}：悬浮粒子限度须指定 'channel'（0.5 或 5.0）",
                    )
                )
        elif channel is not None:
            raise FacilityFileError(
                Reason(f"{where}: only particle limits have a channel", f"{where}：只有悬浮粒子限度才有通道")
            )
        if values["delay_s"] is not None and values["delay_s"] < 0:
            raise FacilityFileError(
                Reason(f"{where}: delay_s cannot be negative", f"{where}：delay_s 不能为负数")
            )
        levels.append(
            FacilityLevel(
                kind=kind,
                state=state,
                monitor=entry.get("monitor"),
                room=entry.get("room"),
                grade=entry.get("grade"),
                channel=channel,
                note=entry.get("note", ""),
                index=i,
                **values,
            )
        )

    facility = FacilityDef(
        code=code,
        name=_need(site, "name", "[site]"),
        name_en=site.get("name_en", ""),
        timezone=tz,
        limit_set=limit_set_code,
        rooms=tuple(rooms),
        monitors=tuple(monitors),
        levels=tuple(levels),
        rules=_parse_rules(data.get("rules") or {}, limit_set),
    )
    # Resolve every monitor's limits now, so a looser-than-regulation level is refused at load.
    for spec in monitor_specs(facility):
        resolve_monitor_limits(limit_set, spec, facility.levels)
    return facility


RULE_KEYS = ("particle_rolling_volume_m3", "recovery_min")


def _parse_rules(entry: dict, limit_set) -> RulesDef:
    """``[rules]``: ``particle_rolling_volume_m3`` (default 1) and ``recovery_min`` (default 20)."""
    unknown = sorted(set(entry) - set(RULE_KEYS))
    if unknown:
        raise FacilityFileError(
            Reason(
                f"[rules]: unknown key(s) {', '.join(unknown)}; known: {', '.join(RULE_KEYS)}",
                f"[rules]：未知的键 {', '.join(unknown)}；可用的键：{', '.join(RULE_KEYS)}",
            )
        )
    volume = _num(entry, "particle_rolling_volume_m3", "[rules]")
    if volume is None:
        volume = DEFAULT_ROLLING_VOLUME_M3
    lowest = min((lim.high for lim in limit_set.particles.values() if lim.high), default=None)
    if volume <= 0 or (lowest is not None and 1.0 / volume > lowest):
        raise FacilityFileError(
            Reason(
                f"[rules]: particle_rolling_volume_m3 {volume:g} is too small: one particle in it "
                f"would already exceed {limit_set.code}'s lowest particle limit {lowest:g} /m³ "
                "(ISO 14644-1 minimum sample volume Vs = 20 / limit m³; regulatory.md §11)",
                f"[rules]：particle_rolling_volume_m3 {volume:g} 过小：其中只要有一个粒子就已超过 "
                f"{limit_set.code} 最低的悬浮粒子限度 {lowest:g} /m³"
                "（ISO 14644-1 最小采样量 Vs = 20 / 限度 m³；regulatory.md §11）",
            )
        )
    recovery = _num(entry, "recovery_min", "[rules]")
    if recovery is None:
        recovery = DEFAULT_RECOVERY_S / 60
    if not 0 <= recovery <= 240:
        raise FacilityFileError(
            Reason(
                f"[rules]: recovery_min {recovery:g} must be 0…240 minutes "
                "(0 switches the recovery rule off)",
                f"[rules]：recovery_min {recovery:g} 须在 0…240 分钟之间（0 表示关闭恢复规则）",
            )
        )
    return RulesDef(rolling_volume_m3=volume, recovery_s=recovery * 60.0)


def monitor_specs(facility: FacilityDef) -> list[MonitorSpec]:
    grade = {r.code: r.grade for r in facility.rooms}
    return [
        MonitorSpec(
            code=m.code,
            room=m.room,
            grade=grade[m.room],
            kind=m.kind,
            reference_grade=grade[m.reference] if m.reference else None,
            channels=m.channels,
        )
        for m in facility.monitors
    ]


def read_facility_file(path: Path) -> FacilityDef:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise FacilityFileError(
            Reason(f"cannot read {path}: {exc.strerror}", f"无法读取 {path}：{exc.strerror}")
        ) from None
    return parse_facility(text, source=str(path))


# --------------------------------------------------------------------------- persistence
