"""The facility file (TOML): parsed and validated into frozen definitions, without a database.

Nothing in the file is taken on trust: an unknown table or key is refused with its line and
the nearest valid name (a misspelt ``intervall_s`` must not silently drop a setting that
decides what counts as an excursion), numbers that steer evaluation are bounded, and the
room hierarchy is checked against the cell-therapy rule that grade A core operations sit
in at least a grade C background (南宁试点 Art. 6; regulatory.md §6.3).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
import tomllib
from dataclasses import asdict, dataclass, field, replace
from datetime import date
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tracker.core.errors import FacilityFileError, InvalidInputError, Reason
from tracker.facility.devices import MODBUS_KEYS, SPARKPLUG_KEYS, DevicesDef, parse_devices
from tracker.facility.limits import (
    GRADES,
    KINDS,
    PARTICLE_CHANNELS,
    FacilityLevel,
    LimitSet,
    MonitorSpec,
    load_limit_set,
    resolve_monitor_limits,
)
from tracker.facility.models import DEFAULT_RECOVERY_S, DEFAULT_ROLLING_VOLUME_M3, DEFAULT_ROLLING_WINDOW_S
from tracker.facility.notify import (
    LANGUAGES,
    NOTIFY_KEYS,
    ROTA_KEYS,
    NotifyRule,
    Rota,
    parse_rotas,
    parse_rules,
)
from tracker.facility.policy import Compliance
from tracker.facility.viable import LEVEL_KEYS, LOCATION_KEYS, VIABLE_KEYS, ViablePlan, parse_plan

#: Every table the file may hold, whether it is one table ``[x]`` or an array ``[[x]]``, and
#: the keys each may carry. A key or table outside this list is refused, never ignored.
TABLES: dict[str, tuple[bool, tuple[str, ...]]] = {
    "site": (False, ("code", "name", "name_en", "timezone", "limit_set", "language", "base_url")),
    "rooms": (True, ("code", "name", "name_en", "grade", "background", "area_m2")),
    "monitors": (
        True,
        (
            "code",
            "room",
            "kind",
            "interval_s",
            "reference",
            "channels",
            "sample_volume_l",
            "setpoint",
            "calibration_due",
            "range_low",
            "range_high",
        ),
    ),
    "limits": (
        True,
        (
            "monitor",
            "room",
            "grade",
            "kind",
            "state",
            "channel",
            "alert_low",
            "alert_high",
            "action_low",
            "action_high",
            "delay_s",
            "note",
        ),
    ),
    "rules": (
        False,
        (
            "particle_rolling_volume_m3",
            "particle_window_max_min",
            "recovery_min",
            "episode_close_after",
            "gap_factor",
            "trend_alerts",
            "trend_window_h",
            "forecast_horizon_h",
            "forecast_window_min",
        ),
    ),
    "quality": (False, ("deviation_classes", "capa_required", "major_incident_classes")),
    "records": (False, ("late_entry_after_min", "backdate_max_h")),
    "notify": (True, NOTIFY_KEYS),
    "rota": (True, ROTA_KEYS),
    "separation": (False, ("qa_reviewer_may_release",)),
    "sparkplug": (True, SPARKPLUG_KEYS),
    "modbus": (True, MODBUS_KEYS),
    # the viable sampling plan (tracker.facility.viable, docs/viable.md)
    "viable": (False, VIABLE_KEYS),
    "viable_locations": (True, LOCATION_KEYS),
    "viable_levels": (True, LEVEL_KEYS),
}

#: Bounds of the numbers that steer evaluation: (lowest, highest, lowest allowed itself).
#: A day is the longest interval a monitor may report at and still count as monitoring; a
#: sample of more than 1 m³ is not one sample.
INTERVAL_MAX_S = 86_400.0
SAMPLE_VOLUME_MAX_L = 1000.0
#: Annex 1 (2022) Table 5 note / China Annex 1 第十条(七): at-rest limits are met after a short
#: clean-up, 15–20 min as guidance; an hour is the most a validated recovery may claim.
RECOVERY_MIN_RANGE = (1.0, 60.0)
#: The rolling window never exceeds the grade A classification volume (Annex 1 第九条 note:
#: 1 m³ per location); a larger window would dilute a transient event (第十条(二)).
ROLLING_VOLUME_MAX_M3 = 1.0
#: the rolling window's time bound: at least 10 min (a window must hold some samples), at
#: most 4 h (it must not reach back across a shift)
WINDOW_MAX_MIN_RANGE = (10.0, 240.0)


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
    rolling_window_s: float = DEFAULT_ROLLING_WINDOW_S


@dataclass(frozen=True)
class SeparationDef:
    """``[separation]``: the separation-of-duties policy where the regulation leaves a choice.

    Fixed whatever the file says (GMP 2010 Art. 20, 25): the production head is never the QA
    reviewer or the QP releaser of the same batch, nobody reviews a batch they performed a step
    of, nobody approves or closes a deviation they wrote part of or own a CAPA action of. A
    site where the QA head is also the QP (Art. 20: 可以兼任) says so with
    ``qa_reviewer_may_release = true``; by default the QA reviewer and the QP are two persons.
    """

    qa_reviewer_may_release: bool = False


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
    #: ``[rules]`` episode/gap/trend settings and ``[quality]`` classes (``tracker.facility.policy``)
    compliance: Compliance = field(default_factory=Compliance)
    #: ``[[notify]]``: who is alarmed about which excursions (``tracker.facility.notify``)
    notify: tuple[NotifyRule, ...] = field(default=())
    #: ``[[rota]]``: on-call rotas a rule's target ``rota:NAME`` calls (``tracker.facility.notify``)
    rota: tuple[Rota, ...] = field(default=())
    #: the language of messages to people (``[site] language``) and the link base for them
    language: str = "zh-CN"
    base_url: str = ""
    #: ``[separation]``: which separations of duties the site relaxes (none by default)
    separation: SeparationDef = field(default_factory=SeparationDef)
    #: ``[[sparkplug]]`` and ``[[modbus]]``: where readings come from (``tracker.facility.devices``)
    devices: DevicesDef = field(default_factory=DevicesDef)
    #: ``[viable]``, ``[[viable_locations]]``, ``[[viable_levels]]``: the viable sampling plan
    viable: ViablePlan = field(default_factory=ViablePlan)
    #: things a reviewer should see that do not stop the load (not part of the digest)
    warnings: tuple[Reason, ...] = field(default=(), compare=False)

    def digest(self) -> str:
        content = asdict(replace(self, warnings=()))
        content.pop("warnings")
        content["notify"] = [r.as_dict() for r in self.notify]  # a rule's unset keys as before
        # a file without notify rules keeps the digest it had before they existed (no new revision)
        for key, default in (
            ("notify", []),
            ("rota", []),
            ("language", "zh-CN"),
            ("base_url", ""),
            ("devices", {"sparkplug": (), "modbus": ()}),
            ("viable", ViablePlan().as_dict()),
        ):
            if content[key] in (default, ()):
                content.pop(key)
        body = json.dumps(content, sort_keys=True, default=str, ensure_ascii=False)
        return hashlib.sha256(body.encode()).hexdigest()


# --------------------------------------------------------------------------- where in the file


class _Source:
    """The file's text and name, so a refusal can say on which line the problem is."""

    def __init__(self, text: str, name: str) -> None:
        self.name = name
        self.lines = text.splitlines()

    def header_line(self, table: str, index: int | None = None) -> int | None:
        """The line of ``[table]`` or of the ``index``-th ``[[table]]`` header (1-based)."""
        seen = -1
        pattern = re.compile(r"^\s*\[\[?\s*" + re.escape(table) + r"\s*\]\]?\s*(#.*)?$")
        for number, line in enumerate(self.lines, start=1):
            if pattern.match(line):
                seen += 1
                if index is None or seen == index:
                    return number
        return None

    def key_line(self, table: str, index: int | None, key: str) -> int | None:
        """The line of ``key = …`` inside that table, or of the table's header."""
        start = self.header_line(table, index)
        if start is None:
            return None
        key_re = re.compile(r"^\s*[\"']?" + re.escape(key) + r"[\"']?\s*=")
        for number in range(start + 1, len(self.lines) + 1):
            line = self.lines[number - 1]
            if line.lstrip().startswith("["):
                break
            if key_re.match(line):
                return number
        return start

    def refuse(self, line: int | None, en: str, zh: str) -> FacilityFileError:
        where_en = f"{self.name} line {line}: " if line else f"{self.name}: "
        where_zh = f"{self.name} 第 {line} 行：" if line else f"{self.name}："
        return FacilityFileError(Reason(where_en + en, where_zh + zh))


def _suggestion(name: str, known: tuple[str, ...] | list[str], wrap: str = "'{}'") -> tuple[str, str]:
    """'did you mean …?' for the nearest known name, else the list of known names."""
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    if close:
        return f"did you mean {wrap.format(close[0])}?", f"是否应为 {wrap.format(close[0])}？"
    listed = ", ".join(known)
    return f"known: {listed}", f"可用的有：{listed}"


def _check_shape(data: dict[str, Any], src: _Source) -> None:
    """Refuse an unknown table or key, a table written as an array or the other way round."""
    for table, value in data.items():
        if table not in TABLES:
            form = "[[{}]]" if isinstance(value, list) else "[{}]"
            hint_en, hint_zh = _suggestion(table, list(TABLES), wrap=form)
            raise src.refuse(
                src.header_line(table),
                f"unknown table {form.format(table)}; {hint_en}",
                f"未知的表 {form.format(table)}；{hint_zh}",
            )
        is_array, keys = TABLES[table]
        entries = value if isinstance(value, list) else [value]
        if is_array != isinstance(value, list) or not all(isinstance(e, dict) for e in entries):
            want = f"[[{table}]]" if is_array else f"[{table}]"
            raise src.refuse(
                src.header_line(table), f"{table} must be written as {want}", f"{table} 须写作 {want}"
            )
        for i, entry in enumerate(entries):
            for key in entry:
                if key not in keys:
                    index = i if is_array else None
                    where = f"{table}[{i}]" if is_array else f"[{table}]"
                    hint_en, hint_zh = _suggestion(key, keys)
                    raise src.refuse(
                        src.key_line(table, index, key),
                        f"{where}: unknown key '{key}'; {hint_en}",
                        f"{where}：未知的键 '{key}'；{hint_zh}",
                    )


# --------------------------------------------------------------------------- values


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


def _bounded(value: float, key: str, where: str, low: float, high: float, *, open_low: bool) -> float:
    """``value`` if it lies in (low, high] (``open_low``) or [low, high], else a refusal."""
    inside = (value > low if open_low else value >= low) and value <= high
    if not inside:
        span = f"({low:g}, {high:g}]" if open_low else f"[{low:g}, {high:g}]"
        raise FacilityFileError(
            Reason(
                f"{where}: '{key}' {value:g} is outside {span}",
                f"{where}：'{key}' {value:g} 超出范围 {span}",
            )
        )
    return value


# --------------------------------------------------------------------------- the tables


def _parse_site(site: dict) -> tuple[str, str, str, LimitSet]:
    """The site's code, time zone, limit set code and limit set; unknown ones are refused."""
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
    return code, tz, limit_set_code, limit_set


def _parse_room(i: int, entry: dict) -> RoomDef:
    where = f"rooms[{i}]"
    grade = _need(entry, "grade", where)
    if grade not in GRADES:
        raise FacilityFileError(
            Reason(
                f"{where} ({entry.get('code')}): unknown grade {grade!r}; use one of {', '.join(GRADES)}",
                f"{where}（{entry.get('code')}）：未知洁净级别 {grade!r}；请使用 {'、'.join(GRADES)} 之一",
            )
        )
    area = _num(entry, "area_m2", where)
    return RoomDef(
        code=_need(entry, "code", where),
        name=_need(entry, "name", where),
        grade=grade,
        name_en=entry.get("name_en", ""),
        background=entry.get("background"),
        area_m2=None if area is None else _bounded(area, "area_m2", where, 0, 1e6, open_low=True),
    )


def _check_rooms(rooms: list[RoomDef]) -> dict[str, RoomDef]:
    """Unique codes, known backgrounds, no loops; returns the rooms by code."""
    by_code: dict[str, RoomDef] = {}
    for i, room in enumerate(rooms):
        if room.code in by_code:
            raise FacilityFileError(
                Reason(
                    f"rooms[{i}]: duplicate room code {room.code!r}",
                    f"rooms[{i}]：房间代码 {room.code!r} 重复",
                )
            )
        by_code[room.code] = room
    for i, room in enumerate(rooms):
        if room.background is not None and room.background not in by_code:
            raise FacilityFileError(
                Reason(
                    f"rooms[{i}] ({room.code}): unknown background room {room.background!r}",
                    f"rooms[{i}]（{room.code}）：未知的背景房间 {room.background!r}",
                )
            )
        seen, cur = {room.code}, room
        while cur.background is not None:
            cur = by_code[cur.background]
            if cur.code in seen:
                raise FacilityFileError(
                    Reason(
                        f"rooms[{i}] ({room.code}): background rooms form a loop",
                        f"rooms[{i}]（{room.code}）：背景房间构成循环",
                    )
                )
            seen.add(cur.code)
    return by_code


def _grade_a_backgrounds(rooms: list[RoomDef], by_code: dict[str, RoomDef]) -> list[Reason]:
    """Refuse a grade A zone in a background worse than C; warn where it is C, not B, or unnamed.

    南宁试点 Art. 6: core operations in local grade A within at least a grade C background;
    Annex 1 names B as the background of A for aseptic preparation (regulatory.md §1.1, §6.3).
    """
    warnings: list[Reason] = []
    for i, room in enumerate(rooms):
        if room.grade != "A":
            continue
        background = by_code[room.background].grade if room.background else None
        if background in ("D", "CNC"):
            raise FacilityFileError(
                Reason(
                    f"rooms[{i}] ({room.code}): a grade A zone needs at least a grade C background, "
                    f"not {background} (Nanning pilot rules Art. 6)",
                    f"rooms[{i}]（{room.code}）：A 级区域的背景至少应为 C 级，不能为 {background}"
                    "（南宁试点管理办法第六条）",
                )
            )
        if background == "C":
            warnings.append(
                Reason(
                    f"rooms[{i}] ({room.code}): grade A zone in a grade C background; Annex 1 names B "
                    "as the background of aseptic preparation (a C background needs a closed process "
                    "or isolator and a risk assessment)",
                    f"rooms[{i}]（{room.code}）：A 级区域位于 C 级背景中；附录1 规定无菌配制的背景为 B 级"
                    "（C 级背景须为密闭工艺或隔离器并有风险评估）",
                )
            )
        if background is None:
            warnings.append(
                Reason(
                    f"rooms[{i}] ({room.code}): grade A zone without a background room; name the room "
                    "it stands in (background = …)",
                    f"rooms[{i}]（{room.code}）：A 级区域未指定背景房间；请用 background = … 指定其所在房间",
                )
            )
    return warnings


def _reference(entry: dict, where: str, kind: str, room: str, rooms: dict[str, RoomDef]) -> str | None:
    """The low-side room of a pressure monitor; other kinds have none."""
    reference = entry.get("reference")
    if kind != "pressure":
        if reference:
            raise FacilityFileError(
                Reason(
                    f"{where}: only pressure monitors have a reference room",
                    f"{where}：只有压差监测点才有参照房间",
                )
            )
        return None
    if not reference:
        raise FacilityFileError(
            Reason(
                f"{where}: a pressure monitor needs 'reference' (the low-side room it is measured against)",
                f"{where}：压差监测点须指定 'reference'（测量所对照的低压侧房间）",
            )
        )
    if reference not in rooms:
        raise FacilityFileError(
            Reason(f"{where}: unknown reference room {reference!r}", f"{where}：未知的参照房间 {reference!r}")
        )
    if reference == room:
        raise FacilityFileError(
            Reason(
                f"{where}: reference room is the monitor's own room",
                f"{where}：参照房间不能是监测点自身所在的房间",
            )
        )
    return reference


def _particle_channels(entry: dict, where: str) -> tuple[tuple[str, ...], float]:
    """The channels and the sample volume (L) of a particle counter."""
    channels = tuple(str(c) for c in entry.get("channels", PARTICLE_CHANNELS))
    if not channels or any(c not in PARTICLE_CHANNELS for c in channels):
        raise FacilityFileError(
            Reason(
                f"{where}: channels must be among {PARTICLE_CHANNELS}",
                f"{where}：通道须为 {PARTICLE_CHANNELS} 中的值",
            )
        )
    volume = _num(entry, "sample_volume_l", where) or 28.3
    return channels, _bounded(volume, "sample_volume_l", where, 0, SAMPLE_VOLUME_MAX_L, open_low=True)


def _instrument_range(entry: dict, where: str) -> tuple[float | None, float | None]:
    low, high = _num(entry, "range_low", where), _num(entry, "range_high", where)
    if low is not None and high is not None and low >= high:
        raise FacilityFileError(
            Reason(
                f"{where}: range_low {low:g} must be below range_high {high:g}",
                f"{where}：range_low {low:g} 须小于 range_high {high:g}",
            )
        )
    return low, high


def _parse_monitor(i: int, entry: dict, rooms: dict[str, RoomDef], seen: set[str]) -> MonitorDef:
    where = f"monitors[{i}] ({entry.get('code')})"
    code = _need(entry, "code", f"monitors[{i}]")
    if code in seen:
        raise FacilityFileError(
            Reason(f"{where}: duplicate monitor code {code!r}", f"{where}：监测点代码 {code!r} 重复")
        )
    if "/" in code or "+" in code or "#" in code:
        raise FacilityFileError(
            Reason(
                f"{where}: codes may not contain MQTT topic characters / + #",
                f"{where}：代码不能包含 MQTT 主题字符 / + #",
            )
        )
    room = _need(entry, "room", where)
    if room not in rooms:
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
    _bounded(interval, "interval_s", where, 0, INTERVAL_MAX_S, open_low=True)
    channels, volume = _particle_channels(entry, where) if kind == "particles" else ((), None)
    due = entry.get("calibration_due")
    if due is not None and not isinstance(due, date):
        raise FacilityFileError(
            Reason(
                f"{where}: calibration_due must be a TOML date (2027-03-01)",
                f"{where}：calibration_due 须为 TOML 日期（如 2027-03-01）",
            )
        )
    range_low, range_high = _instrument_range(entry, where)
    return MonitorDef(
        code=code,
        room=room,
        kind=kind,
        interval_s=interval,
        reference=_reference(entry, where, kind, room, rooms),
        channels=channels,
        sample_volume_l=volume,
        setpoint=_num(entry, "setpoint", where),
        calibration_due=due,
        range_low=range_low,
        range_high=range_high,
    )


def _level_target(entry: dict, where: str, rooms: dict[str, RoomDef], monitors: set[str]) -> None:
    """Exactly one of monitor, room or grade, and it must exist."""
    if len([k for k in ("monitor", "room", "grade") if entry.get(k)]) != 1:
        raise FacilityFileError(
            Reason(
                f"{where}: give exactly one of monitor, room or grade",
                f"{where}：monitor、room、grade 须给出且只能给出其中一个",
            )
        )
    if entry.get("room") and entry["room"] not in rooms:
        raise FacilityFileError(
            Reason(f"{where}: unknown room {entry['room']!r}", f"{where}：未知房间 {entry['room']!r}")
        )
    if entry.get("monitor") and entry["monitor"] not in monitors:
        raise FacilityFileError(
            Reason(
                f"{where}: unknown monitor {entry['monitor']!r}", f"{where}：未知监测点 {entry['monitor']!r}"
            )
        )
    if entry.get("grade") and entry["grade"] not in GRADES:
        raise FacilityFileError(
            Reason(f"{where}: unknown grade {entry['grade']!r}", f"{where}：未知洁净级别 {entry['grade']!r}")
        )


def _level_channel(entry: dict, where: str, kind: str, values: dict[str, float | None]) -> str | None:
    channel = entry.get("channel")
    channel = None if channel is None else str(channel)
    if kind != "particles":
        if channel is not None:
            raise FacilityFileError(
                Reason(f"{where}: only particle limits have a channel", f"{where}：只有悬浮粒子限度才有通道")
            )
        return None
    if channel is not None and channel not in PARTICLE_CHANNELS:
        raise FacilityFileError(
            Reason(
                f"{where}: unknown particle channel {channel!r}", f"{where}：未知的悬浮粒子通道 {channel!r}"
            )
        )
    if channel is None and any(values[k] is not None for k in values if k != "delay_s"):
        raise FacilityFileError(
            Reason(
                f"{where}: particle levels need a 'channel' (0.5 or 5.0)",
                f"{where}：悬浮粒子限度须指定 'channel'（0.5 或 5.0）",
            )
        )
    return channel


def _parse_level(i: int, entry: dict, rooms: dict[str, RoomDef], monitors: set[str]) -> FacilityLevel:
    where = f"limits[{i}]"
    _level_target(entry, where, rooms, monitors)
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
    values = {
        k: _num(entry, k, where) for k in ("alert_low", "alert_high", "action_low", "action_high", "delay_s")
    }
    channel = _level_channel(entry, where, kind, values)
    if values["delay_s"] is not None and values["delay_s"] < 0:
        raise FacilityFileError(
            Reason(f"{where}: delay_s cannot be negative", f"{where}：delay_s 不能为负数")
        )
    return FacilityLevel(
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


def _parse_rules(entry: dict, limit_set: LimitSet) -> RulesDef:
    """``[rules]``: the rolling volume, its time bound and the recovery window (unknown keys
    are refused before, with their line, by ``_check_shape``)."""
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
    _bounded(volume, "particle_rolling_volume_m3", "[rules]", 0, ROLLING_VOLUME_MAX_M3, open_low=True)
    recovery = _num(entry, "recovery_min", "[rules]")
    if recovery is None:
        recovery = DEFAULT_RECOVERY_S / 60
    _bounded(recovery, "recovery_min", "[rules]", *RECOVERY_MIN_RANGE, open_low=False)
    window = _num(entry, "particle_window_max_min", "[rules]")
    window = DEFAULT_ROLLING_WINDOW_S / 60 if window is None else window
    _bounded(window, "particle_window_max_min", "[rules]", *WINDOW_MAX_MIN_RANGE, open_low=False)
    return RulesDef(rolling_volume_m3=volume, recovery_s=recovery * 60.0, rolling_window_s=window * 60.0)


#: bounds of the compliance rules: an episode ends after 1-20 in-limit readings; a gap is 1.5-20
#: intervals of silence; an adverse trend is 2-20 alerts within 1 h to 30 days; a record (a step,
#: a room state) entered more than 1 min to 24 h after the fact needs its reason, and one older
#: than 1 h to 30 days is refused (steps) or needs QA's approval (room states)
COMPLIANCE_BOUNDS = {
    "episode_close_after": (1, 20),
    "gap_factor": (1.5, 20.0),
    "trend_alerts": (2, 20),
    "trend_window_h": (1.0, 720.0),
    "late_entry_after_min": (1.0, 1440.0),
    "backdate_max_h": (1.0, 720.0),
    # the breach forecast (docs/trending.md): 0 switches it off; at most a day ahead, fitted
    # on 30 min to 12 h of readings
    "forecast_horizon_h": (0.0, 24.0),
    "forecast_window_min": (30.0, 720.0),
}


def _classes(
    entry: dict, key: str, default: tuple[str, ...], within: tuple[str, ...] | None
) -> tuple[str, ...]:
    value = entry.get(key)
    if value is None:
        return default
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
        raise FacilityFileError(
            Reason(
                f"[quality]: '{key}' must be a list of class names",
                f"[quality]：'{key}' 须为偏差分级名称的列表",
            )
        )
    unknown = [v for v in value if within is not None and v not in within]
    if unknown:
        raise FacilityFileError(
            Reason(
                f"[quality]: '{key}' names {', '.join(unknown)}, not among deviation_classes",
                f"[quality]：'{key}' 中的 {'、'.join(unknown)} 不在 deviation_classes 之内",
            )
        )
    return tuple(v.strip() for v in value)


def _parse_compliance(rules: dict, quality: dict, records: dict) -> Compliance:
    """``[rules]`` episode, gap and trend settings, ``[quality]`` classes and ``[records]``
    lateness limits, bounded."""
    base = Compliance()
    values = {}
    for table, entry, key, attr in (
        ("[rules]", rules, "episode_close_after", "close_after"),
        ("[rules]", rules, "gap_factor", "gap_factor"),
        ("[rules]", rules, "trend_alerts", "trend_alerts"),
        ("[rules]", rules, "trend_window_h", "trend_window_h"),
        ("[rules]", rules, "forecast_horizon_h", "forecast_horizon_h"),
        ("[rules]", rules, "forecast_window_min", "forecast_window_min"),
        ("[records]", records, "late_entry_after_min", "late_entry_min"),
        ("[records]", records, "backdate_max_h", "backdate_max_h"),
    ):
        number = _num(entry, key, table)
        if number is not None:
            low, high = COMPLIANCE_BOUNDS[key]
            _bounded(number, key, table, low, high, open_low=False)
            if isinstance(getattr(base, attr), int) and number != int(number):
                raise FacilityFileError(
                    Reason(f"{table}: '{key}' must be a whole number", f"{table}：'{key}' 须为整数")
                )
            values[attr] = type(getattr(base, attr))(number)
    classes = _classes(quality, "deviation_classes", base.deviation_classes, None)
    return Compliance(
        **values,
        deviation_classes=classes,
        capa_required=_classes(
            quality, "capa_required", tuple(c for c in base.capa_required if c in classes), classes
        ),
        major_incident_classes=_classes(
            quality,
            "major_incident_classes",
            tuple(c for c in base.major_incident_classes if c in classes),
            classes,
        ),
    )


def _language(site: dict) -> str:
    """The language messages to people are written in (zh-CN unless the site says en)."""
    language = site.get("language", "zh-CN")
    if language not in LANGUAGES:
        raise FacilityFileError(
            Reason(
                f"[site] language must be one of {', '.join(LANGUAGES)}",
                f"[site] language 须为 {'、'.join(LANGUAGES)} 之一",
            )
        )
    return language


def _parse_separation(entry: dict) -> SeparationDef:
    """``[separation]``: booleans only, each default the strict choice."""
    for key, value in entry.items():
        if not isinstance(value, bool):
            raise FacilityFileError(
                Reason(
                    f"[separation]: '{key}' must be true or false, got {value!r}",
                    f"[separation]：'{key}' 须为 true 或 false，实际为 {value!r}",
                )
            )
    return SeparationDef(**entry)


def parse_facility(text: str, *, source: str = "facility file") -> FacilityDef:
    """Parse and validate a facility file; every refusal names the entry and the rule."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise FacilityFileError(
            Reason(f"{source}: not valid TOML: {exc}", f"{source}：不是有效的 TOML：{exc}")
        ) from None
    _check_shape(data, _Source(text, source))
    site = data.get("site") or {}
    code, tz, limit_set_code, limit_set = _parse_site(site)
    rooms = [_parse_room(i, entry) for i, entry in enumerate(data.get("rooms", []))]
    room_by_code = _check_rooms(rooms)
    warnings = _grade_a_backgrounds(rooms, room_by_code)
    monitors: list[MonitorDef] = []
    seen: set[str] = set()
    for i, entry in enumerate(data.get("monitors", [])):
        monitors.append(_parse_monitor(i, entry, room_by_code, seen))
        seen.add(monitors[-1].code)
    levels = [_parse_level(i, entry, room_by_code, seen) for i, entry in enumerate(data.get("limits", []))]
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
        compliance=_parse_compliance(
            data.get("rules") or {}, data.get("quality") or {}, data.get("records") or {}
        ),
        notify=parse_rules(
            data.get("notify", []), set(room_by_code), rotas := parse_rotas(data.get("rota", []))
        ),
        rota=rotas,
        language=_language(site),
        base_url=str(site.get("base_url", "")).rstrip("/"),
        separation=_parse_separation(data.get("separation") or {}),
        devices=parse_devices(
            data.get("sparkplug", []),
            data.get("modbus", []),
            {m.code: (m.kind, m.channels) for m in monitors},
        ),
        viable=parse_plan(
            data.get("viable") or {},
            data.get("viable_locations", []),
            data.get("viable_levels", []),
            rooms={r.code: r.grade for r in rooms},
            limit_set=limit_set_code,
        ),
        warnings=tuple(warnings),
    )
    # Resolve every monitor's limits now, so a looser-than-regulation level is refused at load.
    for spec in monitor_specs(facility):
        resolve_monitor_limits(limit_set, spec, facility.levels)
    return facility


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
