"""The facility file (DESIGN §8) as frozen dataclasses: the simulator's view of the hardware.

The tracker loads the same TOML with its own registry; this loader validates just enough
to refuse a file whose monitors could not be simulated faithfully.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

GRADES = ("A", "B", "C", "D", "CNC")
KINDS = ("particles", "pressure", "temperature", "humidity")
CHANNELS = ("0.5", "5.0")
LIMIT_STATES = ("at_rest", "in_operation", "any")
LIMIT_LEVELS = ("alert_low", "alert_high", "action_low", "action_high")
DEFAULT_SAMPLE_VOLUME_L = 28.3

_SITE_KEYS = {"code", "name", "name_en", "timezone", "limit_set"}
_ROOM_KEYS = {"code", "name", "name_en", "grade", "background", "area_m2"}
_MONITOR_KEYS = {
    "code",
    "room",
    "kind",
    "interval_s",
    "reference",
    "channels",
    "sample_volume_l",
    "setpoint",
    "calibration_due",
}
_LIMIT_KEYS = {"monitor", "room", "grade", "kind", "channel", "state", *LIMIT_LEVELS, "delay_s", "note"}


@dataclass(frozen=True, slots=True)
class Site:
    code: str
    name: str
    name_en: str = ""
    timezone: str = "Asia/Shanghai"
    limit_set: str = "CN-GMP-2010"


@dataclass(frozen=True, slots=True)
class Room:
    code: str
    name: str
    grade: str
    name_en: str = ""
    background: str | None = None
    area_m2: float | None = None


@dataclass(frozen=True, slots=True)
class Monitor:
    code: str
    room: str
    kind: str
    interval_s: int
    reference: str | None = None
    channels: tuple[str, ...] = ()
    sample_volume_l: float | None = None
    setpoint: float | None = None
    calibration_due: date | None = None


@dataclass(frozen=True, slots=True)
class Limit:
    kind: str
    state: str
    monitor: str | None = None
    room: str | None = None
    grade: str | None = None
    channel: str | None = None
    alert_low: float | None = None
    alert_high: float | None = None
    action_low: float | None = None
    action_high: float | None = None
    delay_s: int = 0
    note: str = ""


@dataclass(frozen=True)
class Facility:
    site: Site
    rooms: tuple[Room, ...]
    monitors: tuple[Monitor, ...]
    limits: tuple[Limit, ...] = ()
    _rooms: Mapping[str, Room] = field(init=False, repr=False, compare=False)
    _monitors: Mapping[str, Monitor] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_rooms", {r.code: r for r in self.rooms})
        object.__setattr__(self, "_monitors", {m.code: m for m in self.monitors})

    def room(self, code: str) -> Room:
        """Look a room up by code; ``KeyError`` names it when unknown."""
        try:
            return self._rooms[code]
        except KeyError:
            raise KeyError(f"unknown room {code!r}") from None

    def monitor(self, code: str) -> Monitor:
        """Look a monitor up by code; ``KeyError`` names it when unknown."""
        try:
            return self._monitors[code]
        except KeyError:
            raise KeyError(f"unknown monitor {code!r}") from None

    def has_room(self, code: str) -> bool:
        """Whether ``code`` is a room or zone of this facility."""
        return code in self._rooms

    def has_monitor(self, code: str) -> bool:
        """Whether ``code`` is a monitor of this facility."""
        return code in self._monitors

    def zones_inside(self, room: str) -> tuple[str, ...]:
        """Codes of the zones whose background is ``room`` (e.g. the A zones in a B room)."""
        return tuple(r.code for r in self.rooms if r.background == room)


def load_facility(path: str | Path) -> Facility:
    """Read and validate a facility TOML file."""
    path = Path(path)
    with path.open("rb") as fh:
        data = tomllib.load(fh)
    try:
        return parse_facility(data)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def parse_facility(data: Mapping[str, Any]) -> Facility:
    """Build a :class:`Facility` from parsed TOML, raising ``ValueError`` naming the bad entry."""
    _check_keys("facility file", data, {"site", "rooms", "monitors", "limits"})
    site = _parse_site(data.get("site"))
    rooms = tuple(_parse_room(i, r) for i, r in enumerate(_table_list(data, "rooms")))
    _check_unique("rooms", [r.code for r in rooms])
    codes = {r.code for r in rooms}
    for i, room in enumerate(rooms):
        _check_room_links(i, room, codes, rooms)
    monitors = tuple(_parse_monitor(i, m, codes) for i, m in enumerate(_table_list(data, "monitors")))
    _check_unique("monitors", [m.code for m in monitors])
    monitor_codes = {m.code for m in monitors}
    limits = tuple(_parse_limit(i, lim, codes, monitor_codes) for i, lim in enumerate(data.get("limits", [])))
    return Facility(site=site, rooms=rooms, monitors=monitors, limits=limits)


def _table_list(data: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    """Return a required non-empty array of tables."""
    value = data.get(key)
    if not isinstance(value, list) or not value:
        raise ValueError(f"[[{key}]]: at least one entry is required")
    return value


def _check_keys(where: str, entry: Mapping[str, Any], allowed: set[str]) -> None:
    """Refuse unknown keys so a typo does not silently fall back to a default."""
    unknown = sorted(set(entry) - allowed)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}")


def _check_unique(what: str, codes: list[str]) -> None:
    """Refuse duplicate codes: the wire contract addresses everything by code."""
    seen: set[str] = set()
    for code in codes:
        if code in seen:
            raise ValueError(f"[[{what}]]: duplicate code {code!r}")
        seen.add(code)


def _required_str(where: str, entry: Mapping[str, Any], key: str) -> str:
    """Return a required non-empty string field."""
    value = entry.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{where}: {key!r} is required and must be a non-empty string")
    return value


def _code(where: str, entry: Mapping[str, Any]) -> str:
    """Return a code that is safe inside an MQTT topic level."""
    code = _required_str(where, entry, "code")
    if any(ch in code for ch in "/+# ") or code != code.strip():
        raise ValueError(f"{where}: code {code!r} must not contain '/', '+', '#' or spaces")
    return code


def _number(where: str, entry: Mapping[str, Any], key: str) -> float | None:
    """Return an optional number field as float."""
    value = entry.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{where}: {key!r} must be a number, got {value!r}")
    return float(value)


def _parse_site(entry: Any) -> Site:
    """Parse the ``[site]`` table."""
    if not isinstance(entry, Mapping):
        raise ValueError("[site]: table is required")
    _check_keys("[site]", entry, _SITE_KEYS)
    return Site(
        code=_code("[site]", entry),
        name=_required_str("[site]", entry, "name"),
        name_en=entry.get("name_en", ""),
        timezone=entry.get("timezone", "Asia/Shanghai"),
        limit_set=entry.get("limit_set", "CN-GMP-2010"),
    )


def _parse_room(i: int, entry: Mapping[str, Any]) -> Room:
    """Parse one ``[[rooms]]`` entry."""
    where = f"rooms[{i}] ({entry.get('code', '?')})"
    _check_keys(where, entry, _ROOM_KEYS)
    grade = entry.get("grade")
    if grade not in GRADES:
        raise ValueError(f"{where}: grade must be one of {', '.join(GRADES)}, got {grade!r}")
    return Room(
        code=_code(where, entry),
        name=_required_str(where, entry, "name"),
        name_en=entry.get("name_en", ""),
        grade=grade,
        background=entry.get("background"),
        area_m2=_number(where, entry, "area_m2"),
    )


def _check_room_links(i: int, room: Room, codes: set[str], rooms: tuple[Room, ...]) -> None:
    """A background must exist, differ from the room and not form a cycle."""
    if room.background is None:
        return
    where = f"rooms[{i}] ({room.code})"
    if room.background not in codes:
        raise ValueError(f"{where}: background {room.background!r} is not a room")
    by_code = {r.code: r for r in rooms}
    seen = {room.code}
    current: str | None = room.background
    while current is not None:
        if current in seen:
            raise ValueError(f"{where}: background chain loops through {current!r}")
        seen.add(current)
        current = by_code[current].background


def _parse_channels(where: str, entry: Mapping[str, Any]) -> tuple[str, ...]:
    """Particle size channels, in the canonical order; both when not given."""
    channels = entry.get("channels", list(CHANNELS))
    if not isinstance(channels, list) or not channels:
        raise ValueError(f"{where}: channels must be a non-empty list like ['0.5', '5.0']")
    bad = [c for c in channels if c not in CHANNELS]
    if bad or len(set(channels)) != len(channels):
        raise ValueError(f"{where}: channels must be distinct values of {list(CHANNELS)}, got {channels!r}")
    return tuple(c for c in CHANNELS if c in channels)


def _parse_monitor(i: int, entry: Mapping[str, Any], rooms: set[str]) -> Monitor:
    """Parse one ``[[monitors]]`` entry and check its kind-specific fields."""
    where = f"monitors[{i}] ({entry.get('code', '?')})"
    _check_keys(where, entry, _MONITOR_KEYS)
    code = _code(where, entry)
    room = _required_str(where, entry, "room")
    if room not in rooms:
        raise ValueError(f"{where}: room {room!r} is not a room")
    kind = entry.get("kind")
    if kind not in KINDS:
        raise ValueError(f"{where}: kind must be one of {', '.join(KINDS)}, got {kind!r}")
    interval = entry.get("interval_s")
    if isinstance(interval, bool) or not isinstance(interval, int) or interval <= 0:
        raise ValueError(f"{where}: interval_s must be a positive whole number of seconds")
    reference = entry.get("reference")
    if kind == "pressure":
        if reference is None:
            raise ValueError(f"{where}: a pressure monitor needs reference = '<low-side room>'")
        if reference not in rooms or reference == room:
            raise ValueError(f"{where}: reference {reference!r} must be another room")
    elif reference is not None:
        raise ValueError(f"{where}: reference is only for pressure monitors")
    if kind != "particles" and ("channels" in entry or "sample_volume_l" in entry):
        raise ValueError(f"{where}: channels and sample_volume_l are only for particle counters")
    volume = _number(where, entry, "sample_volume_l")
    if kind == "particles" and volume is None:
        volume = DEFAULT_SAMPLE_VOLUME_L
    if volume is not None and volume <= 0:
        raise ValueError(f"{where}: sample_volume_l must be positive")
    due = entry.get("calibration_due")
    if due is not None and not isinstance(due, date):
        raise ValueError(f"{where}: calibration_due must be a TOML date like 2027-03-01")
    return Monitor(
        code=code,
        room=room,
        kind=kind,
        interval_s=interval,
        reference=reference,
        channels=_parse_channels(where, entry) if kind == "particles" else (),
        sample_volume_l=volume,
        setpoint=_number(where, entry, "setpoint"),
        calibration_due=due,
    )


def _parse_limit(i: int, entry: Mapping[str, Any], rooms: set[str], monitors: set[str]) -> Limit:
    """Parse one ``[[limits]]`` row: exactly one selector, alert inside action."""
    where = f"limits[{i}]"
    _check_keys(where, entry, _LIMIT_KEYS)
    selectors = [k for k in ("monitor", "room", "grade") if entry.get(k) is not None]
    if len(selectors) != 1:
        raise ValueError(f"{where}: exactly one of monitor, room, grade is required")
    selector = selectors[0]
    target = entry[selector]
    known = {"monitor": monitors, "room": rooms, "grade": set(GRADES)}[selector]
    if target not in known:
        raise ValueError(f"{where}: {selector} {target!r} does not exist")
    kind = entry.get("kind")
    if kind not in KINDS:
        raise ValueError(f"{where}: kind must be one of {', '.join(KINDS)}, got {kind!r}")
    channel = entry.get("channel")
    if channel is not None and (kind != "particles" or channel not in CHANNELS):
        raise ValueError(f"{where}: channel must be one of {list(CHANNELS)} on a particles row")
    state = entry.get("state", "any")
    if state not in LIMIT_STATES:
        raise ValueError(f"{where}: state must be one of {', '.join(LIMIT_STATES)}")
    levels = {k: _number(where, entry, k) for k in LIMIT_LEVELS}
    if all(v is None for v in levels.values()):
        raise ValueError(f"{where}: give at least one of {', '.join(LIMIT_LEVELS)}")
    _check_level_order(where, levels)
    delay = entry.get("delay_s", 0)
    if isinstance(delay, bool) or not isinstance(delay, int) or delay < 0:
        raise ValueError(f"{where}: delay_s must be a non-negative whole number of seconds")
    return Limit(
        kind=kind,
        state=state,
        channel=channel,
        delay_s=delay,
        note=entry.get("note", ""),
        **{selector: target},
        **levels,
    )


def _check_level_order(where: str, levels: Mapping[str, float | None]) -> None:
    """Action bounds lie outside alert bounds: action_low <= alert_low < alert_high <= action_high."""
    ordered = [levels[k] for k in ("action_low", "alert_low", "alert_high", "action_high")]
    present = [v for v in ordered if v is not None]
    if present != sorted(present):
        raise ValueError(
            f"{where}: levels must satisfy action_low <= alert_low <= alert_high "
            f"<= action_high, got {dict(levels)}"
        )
