"""Scenario files: operations, scripted faults and the excursions they must produce.

A scenario is validated against its facility when loaded, and every error names the entry
(``events[3] (particle_burst at 2h)``) so a typo fails loudly instead of silently simulating
a healthy day.
"""

from __future__ import annotations

import itertools
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from simulators.facility import CHANNELS, Facility, Monitor
from simulators.payloads import MALFORMED_VARIANTS, UNITS_BY_KIND

LEVELS = ("alert", "action")
STATES = ("at_rest", "in_operation")
EVENT_TYPES = (
    "particle_burst",
    "pressure_drop",
    "hold",
    "drift",
    "step",
    "offline",
    "malformed",
    "duplicate",
    "units",
)
#: kinds a drift or a step can move (trending, docs/trending.md)
SLOW_KINDS = ("pressure", "temperature", "humidity")
#: Variants that put a real monitor's code in the payload or topic.
VARIANTS_WITH_MONITOR = (
    "bad_json",
    "schema",
    "room_mismatch",
    "bad_unit",
    "future_timestamp",
    "out_of_range",
    "too_large",
)
_DURATION_RE = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")

_EVENT_KEYS: dict[str, set[str]] = {
    "particle_burst": {"monitor", "duration", "concentrations"},
    "pressure_drop": {"monitor", "duration", "value"},
    "hold": {"monitor", "duration", "value"},
    #: a linear ramp of ``rate`` canonical units per hour from ``at``, held at its end value
    #: from ``at + duration`` to the end of the scenario (a clogging filter, a slipping damper)
    "drift": {"monitor", "duration", "rate"},
    #: a sustained shift: ``offset`` canonical units (or particle ``concentrations`` added to
    #: the baseline) from ``at`` for ``duration`` (a filter change, a new process)
    "step": {"monitor", "duration", "offset", "concentrations"},
    "offline": {"monitor", "duration", "backfill"},
    "malformed": {"variant", "count", "monitor"},
    "duplicate": {"monitor", "count"},
    "units": {"monitor", "unit"},
}
_EVENT_KINDS = {
    "particle_burst": ("particles",),
    "pressure_drop": ("pressure",),
    "hold": ("temperature", "humidity"),
    "drift": SLOW_KINDS,
    "step": (*SLOW_KINDS, "particles"),
}


@dataclass(frozen=True, slots=True)
class Operation:
    """Processing in a room: its signals (and those of its zones) at in-operation levels."""

    room: str
    start: timedelta
    end: timedelta


@dataclass(frozen=True, slots=True)
class Event:
    """One scripted fault; fields beyond ``type``/``at`` are used by the types that need them."""

    type: str
    at: timedelta
    monitor: str | None = None
    duration: timedelta = timedelta(0)
    value: float | None = None
    #: drift: canonical units per hour; step: canonical units
    rate: float | None = None
    offset: float | None = None
    concentrations: tuple[tuple[str, float], ...] = ()
    backfill: bool = True
    variant: str | None = None
    count: int = 1
    unit: str | None = None

    @property
    def end(self) -> timedelta:
        """When a lasting event stops acting."""
        return self.at + self.duration

    def label(self) -> str:
        """Short description used in error messages."""
        return f"{self.type} at {format_duration(self.at)}"


@dataclass(frozen=True, slots=True)
class Expectation:
    """An excursion episode the scenario must produce (test oracle and documentation)."""

    monitor: str
    level: str
    state: str
    start: timedelta
    channel: str | None = None


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    description: str
    duration: timedelta
    start: datetime | None = None
    operations: tuple[Operation, ...] = ()
    events: tuple[Event, ...] = ()
    expect: tuple[Expectation, ...] = ()


def parse_duration(text: str | int) -> timedelta:
    """Parse ``"90s"``, ``"5m"``, ``"2h"``, ``"1h30m"``, ``"1d"`` (or an int of seconds)."""
    if isinstance(text, bool):
        raise ValueError(f"not a duration: {text!r}")
    if isinstance(text, int):
        if text < 0:
            raise ValueError(f"duration must not be negative: {text!r}")
        return timedelta(seconds=text)
    match = _DURATION_RE.match(text.strip()) if isinstance(text, str) else None
    if not match or not any(match.groups()):
        raise ValueError(f"not a duration like '90s', '5m', '2h' or '1h30m': {text!r}")
    days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
    return timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)


def format_duration(delta: timedelta) -> str:
    """Inverse of :func:`parse_duration` for messages (``1h30m``)."""
    total = int(delta.total_seconds())
    hours, rest = divmod(total, 3600)
    minutes, seconds = divmod(rest, 60)
    parts = [f"{hours}h" if hours else "", f"{minutes}m" if minutes else "", f"{seconds}s" if seconds else ""]
    return "".join(parts) or "0s"


def load_scenario(path: str | Path, facility: Facility) -> Scenario:
    """Read a scenario TOML file and validate it against ``facility``."""
    path = Path(path)
    with path.open("rb") as fh:
        data = tomllib.load(fh)
    try:
        return parse_scenario(data, facility)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def parse_scenario(data: Mapping[str, Any], facility: Facility) -> Scenario:
    """Build a :class:`Scenario` from parsed TOML; ``ValueError`` names the bad entry."""
    _check_keys("scenario file", data, {"scenario", "operations", "events", "expect"})
    head = data.get("scenario")
    if not isinstance(head, Mapping):
        raise ValueError("[scenario]: table is required")
    _check_keys("[scenario]", head, {"name", "description", "duration", "start"})
    duration = _duration("[scenario]", head, "duration")
    if duration <= timedelta(0):
        raise ValueError("[scenario]: duration must be positive")
    operations = tuple(
        _parse_operation(i, op, facility, duration) for i, op in enumerate(data.get("operations", []))
    )
    _check_no_overlap("operations", [(op.room, op.start, op.end, i) for i, op in enumerate(operations)])
    events = tuple(_parse_event(i, ev, facility, duration) for i, ev in enumerate(data.get("events", [])))
    _check_event_overlaps(events)
    expect = tuple(
        _parse_expect(i, ex, facility, duration, operations) for i, ex in enumerate(data.get("expect", []))
    )
    return Scenario(
        name=str(head.get("name", "unnamed")),
        description=str(head.get("description", "")),
        duration=duration,
        start=_parse_start(head.get("start")),
        operations=operations,
        events=tuple(sorted(events, key=lambda e: e.at)),
        expect=expect,
    )


def room_in_operation(facility: Facility, operations: tuple[Operation, ...], room: str, t: timedelta) -> bool:
    """Whether ``room`` is in operation at ``t``: an operation in it, its background or a zone in it.

    Windows are half-open ``[start, end)``; the signal generator uses the open interval so a
    reading exactly on a boundary reads at-rest levels whichever convention the tracker uses.
    """
    return any(op.start <= t < op.end and _affects(facility, op.room, room) for op in operations)


def _affects(facility: Facility, op_room: str, room: str) -> bool:
    """An operation in a room covers the zones inside it, and a zone's operation its background."""
    return (
        op_room == room
        or facility.room(room).background == op_room
        or facility.room(op_room).background == room
    )


def _check_keys(where: str, entry: Mapping[str, Any], allowed: set[str]) -> None:
    """Refuse unknown keys so a misspelt field is not silently ignored."""
    unknown = sorted(set(entry) - allowed)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}")


def _duration(where: str, entry: Mapping[str, Any], key: str) -> timedelta:
    """A required duration field."""
    if key not in entry:
        raise ValueError(f"{where}: {key!r} is required")
    try:
        return parse_duration(entry[key])
    except ValueError as exc:
        raise ValueError(f"{where}: {key}: {exc}") from None


def _parse_start(value: Any) -> datetime | None:
    """Optional absolute start: TOML datetime or ISO string, must carry a UTC offset."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"[scenario]: start is not an ISO 8601 time: {value!r}") from None
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise ValueError("[scenario]: start must be a time with offset, e.g. 2026-11-20T00:00:00Z")
    if value.microsecond:
        raise ValueError("[scenario]: start must be whole seconds")
    return value.astimezone(UTC)


def _within(where: str, at: timedelta, end: timedelta, duration: timedelta) -> None:
    """Scripted times must fall inside the scenario."""
    if at < timedelta(0) or end > duration:
        raise ValueError(
            f"{where}: {format_duration(at)}..{format_duration(end)} lies outside "
            f"the scenario's {format_duration(duration)}"
        )


def _parse_operation(i: int, entry: Mapping[str, Any], facility: Facility, duration: timedelta) -> Operation:
    """Parse one ``[[operations]]`` entry."""
    where = f"operations[{i}] ({entry.get('room', '?')})"
    _check_keys(where, entry, {"room", "start", "end"})
    room = entry.get("room")
    if not isinstance(room, str) or not facility.has_room(room):
        raise ValueError(f"{where}: room {room!r} is not a room of {facility.site.code}")
    start, end = _duration(where, entry, "start"), _duration(where, entry, "end")
    if end <= start:
        raise ValueError(f"{where}: end must be after start")
    _within(where, start, end, duration)
    return Operation(room, start, end)


def _event_monitor(
    where: str, entry: Mapping[str, Any], facility: Facility, required: bool
) -> Monitor | None:
    """The event's monitor, checked against the facility."""
    code = entry.get("monitor")
    if code is None:
        if required:
            raise ValueError(f"{where}: 'monitor' is required")
        return None
    if not isinstance(code, str) or not facility.has_monitor(code):
        raise ValueError(f"{where}: monitor {code!r} is not a monitor of {facility.site.code}")
    return facility.monitor(code)


def _parse_event(i: int, entry: Mapping[str, Any], facility: Facility, duration: timedelta) -> Event:
    """Parse and validate one ``[[events]]`` entry."""
    kind = entry.get("type")
    where = f"events[{i}] ({kind} at {entry.get('at', '?')})"
    if kind not in EVENT_TYPES:
        raise ValueError(f"{where}: type must be one of {', '.join(EVENT_TYPES)}")
    _check_keys(where, entry, {"type", "at"} | _EVENT_KEYS[kind])
    at = _duration(where, entry, "at")
    monitor = _event_monitor(where, entry, facility, required=kind != "malformed")
    fields: dict[str, Any] = {"type": kind, "at": at, "monitor": monitor.code if monitor else None}
    if kind in _EVENT_KINDS and monitor is not None and monitor.kind not in _EVENT_KINDS[kind]:
        raise ValueError(
            f"{where}: monitor {monitor.code} is a {monitor.kind} monitor; "
            f"{kind} needs {' or '.join(_EVENT_KINDS[kind])}"
        )
    if kind in ("particle_burst", "pressure_drop", "hold", "drift", "step", "offline"):
        fields["duration"] = _duration(where, entry, "duration")
        if fields["duration"] <= timedelta(0):
            raise ValueError(f"{where}: duration must be positive")
    _within(where, at, at + fields.get("duration", timedelta(0)), duration)
    fields.update(_EVENT_PARSERS[kind](where, entry, monitor))
    return Event(**fields)


def _burst_fields(where: str, entry: Mapping[str, Any], monitor: Monitor | None) -> dict:
    """``concentrations`` per m³ by channel, cumulative (≥0.5 µm includes ≥5.0 µm)."""
    conc = entry.get("concentrations")
    if not isinstance(conc, Mapping) or not conc:
        raise ValueError(f'{where}: concentrations = {{"0.5" = ..., "5.0" = ...}} is required')
    assert monitor is not None
    for channel, value in conc.items():
        if channel not in CHANNELS or channel not in monitor.channels:
            raise ValueError(f"{where}: channel {channel!r} is not a channel of {monitor.code}")
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ValueError(f"{where}: concentration for {channel} must be a number ≥ 0")
    if "0.5" in conc and "5.0" in conc and conc["0.5"] < conc["5.0"]:
        raise ValueError(f"{where}: counts are cumulative, so 0.5 µm must be ≥ 5.0 µm")
    return {"concentrations": tuple((c, float(conc[c])) for c in CHANNELS if c in conc)}


def _value_fields(where: str, entry: Mapping[str, Any], monitor: Monitor | None) -> dict:
    """``value`` in canonical units (Pa, °C, %RH)."""
    value = entry.get("value")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{where}: value must be a number (canonical unit)")
    kind = monitor.kind if monitor else None
    if kind == "humidity" and not 0 <= value <= 100:
        raise ValueError(
            f"{where}: a humidity hold must lie within 0..100 %RH "
            "(impossible values belong to a malformed out_of_range event)"
        )
    if kind == "temperature" and value <= -273.15:
        raise ValueError(f"{where}: a temperature hold must be above absolute zero")
    return {"value": float(value)}


def _drift_fields(where: str, entry: Mapping[str, Any], monitor: Monitor | None) -> dict:
    """``rate`` per hour in canonical units (Pa/h, °C/h, %RH/h), not zero."""
    rate = entry.get("rate")
    if isinstance(rate, bool) or not isinstance(rate, int | float) or rate == 0:
        raise ValueError(f"{where}: rate must be a non-zero number (canonical unit per hour)")
    return {"rate": float(rate)}


def _step_fields(where: str, entry: Mapping[str, Any], monitor: Monitor | None) -> dict:
    """``offset`` (canonical units) for a slow quantity, ``concentrations`` added for particles."""
    assert monitor is not None
    if monitor.kind == "particles":
        if "offset" in entry:
            raise ValueError(f"{where}: a particle step adds concentrations, not an offset")
        return _burst_fields(where, entry, monitor)
    offset = entry.get("offset")
    if (
        "concentrations" in entry
        or isinstance(offset, bool)
        or not isinstance(offset, int | float)
        or offset == 0
    ):
        raise ValueError(f"{where}: offset must be a non-zero number (canonical unit)")
    return {"offset": float(offset)}


def _offline_fields(where: str, entry: Mapping[str, Any], monitor: Monitor | None) -> dict:
    """``backfill``: whether buffered readings are sent on return (default true)."""
    backfill = entry.get("backfill", True)
    if not isinstance(backfill, bool):
        raise ValueError(f"{where}: backfill must be true or false")
    return {"backfill": backfill}


def _count(where: str, entry: Mapping[str, Any]) -> int:
    """A positive message count (default 1)."""
    count = entry.get("count", 1)
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"{where}: count must be a positive whole number")
    return count


def _malformed_fields(where: str, entry: Mapping[str, Any], monitor: Monitor | None) -> dict:
    """``variant`` and ``count``; out_of_range needs a monitor kind that has an impossible value."""
    variant = entry.get("variant")
    if variant not in MALFORMED_VARIANTS:
        raise ValueError(f"{where}: variant must be one of {', '.join(MALFORMED_VARIANTS)}")
    if (
        variant == "out_of_range"
        and monitor is not None
        and monitor.kind not in ("humidity", "particles", "temperature")
    ):
        raise ValueError(
            f"{where}: out_of_range needs a humidity, particles or temperature "
            f"monitor, {monitor.code} is {monitor.kind}"
        )
    return {"variant": variant, "count": _count(where, entry)}


def _duplicate_fields(where: str, entry: Mapping[str, Any], monitor: Monitor | None) -> dict:
    """``count`` of the monitor's last messages to send again."""
    return {"count": _count(where, entry)}


def _units_fields(where: str, entry: Mapping[str, Any], monitor: Monitor | None) -> dict:
    """The unit the monitor switches to; it must measure the monitor's quantity."""
    unit = entry.get("unit")
    assert monitor is not None
    allowed = UNITS_BY_KIND[monitor.kind]
    if unit not in allowed:
        raise ValueError(f"{where}: unit {unit!r} is not a {monitor.kind} unit ({', '.join(allowed)})")
    return {"unit": unit}


_EVENT_PARSERS = {
    "particle_burst": _burst_fields,
    "pressure_drop": _value_fields,
    "hold": _value_fields,
    "drift": _drift_fields,
    "step": _step_fields,
    "offline": _offline_fields,
    "malformed": _malformed_fields,
    "duplicate": _duplicate_fields,
    "units": _units_fields,
}


def _check_no_overlap(what: str, spans: list[tuple[str, timedelta, timedelta, int]]) -> None:
    """Two spans of the same target must not overlap: their effect would be ambiguous."""
    by_target: dict[str, list[tuple[timedelta, timedelta, int]]] = {}
    for target, start, end, index in spans:
        by_target.setdefault(target, []).append((start, end, index))
    for target, items in by_target.items():
        items.sort()
        for (_, end_a, i_a), (start_b, _, i_b) in itertools.pairwise(items):
            if start_b < end_a:
                raise ValueError(f"{what}[{i_b}]: overlaps {what}[{i_a}] on {target}")


def _check_event_overlaps(events: tuple[Event, ...]) -> None:
    """Lasting faults of one monitor must not overlap (offline ones checked separately)."""
    lasting = [
        (e.monitor or "", e.at, e.end, i)
        for i, e in enumerate(events)
        if e.type in ("particle_burst", "pressure_drop", "hold", "drift", "step")
    ]
    _check_no_overlap("events", lasting)
    offline = [(e.monitor or "", e.at, e.end, i) for i, e in enumerate(events) if e.type == "offline"]
    _check_no_overlap("events", offline)


def _parse_expect(
    i: int,
    entry: Mapping[str, Any],
    facility: Facility,
    duration: timedelta,
    operations: tuple[Operation, ...],
) -> Expectation:
    """Parse one ``[[expect]]`` entry and check its state against the operations."""
    where = f"expect[{i}] ({entry.get('monitor', '?')})"
    _check_keys(where, entry, {"monitor", "channel", "level", "state", "start"})
    monitor = _event_monitor(where, entry, facility, required=True)
    assert monitor is not None
    channel = entry.get("channel")
    if channel is not None and channel not in monitor.channels:
        raise ValueError(f"{where}: channel {channel!r} is not a channel of {monitor.code}")
    if entry.get("level") not in LEVELS:
        raise ValueError(f"{where}: level must be one of {', '.join(LEVELS)}")
    if entry.get("state") not in STATES:
        raise ValueError(f"{where}: state must be one of {', '.join(STATES)}")
    start = _duration(where, entry, "start")
    _within(where, start, start, duration)
    in_op = room_in_operation(facility, operations, monitor.room, start)
    if in_op != (entry["state"] == "in_operation"):
        actual = "in_operation" if in_op else "at_rest"
        raise ValueError(
            f"{where}: state {entry['state']!r} but room {monitor.room} is "
            f"{actual} at {format_duration(start)} per [[operations]]"
        )
    return Expectation(monitor.code, entry["level"], entry["state"], start, channel)


#: what a challenge injects per kind: far beyond any grade's action level, yet a value the
#: instrument can report (a challenge tests the alarm chain, not the parser)
CHALLENGE_SIGNAL: dict[str, dict[str, Any]] = {
    "particles": {"type": "particle_burst", "concentrations": (("0.5", 2.0e7), ("5.0", 3.0e5))},
    "pressure": {"type": "pressure_drop", "value": -5.0},
    "temperature": {"type": "hold", "value": 40.0},
    "humidity": {"type": "hold", "value": 95.0},
}


def challenge_event(facility: Facility, monitor: str, at: timedelta, duration: timedelta) -> Event:
    """The alarm-challenge signal for one monitor (``tracker challenge`` marks the window as a
    test on the tracker's side; the simulator only makes the readings go out of limits)."""
    if not facility.has_monitor(monitor):
        raise ValueError(f"challenge: {monitor!r} is not a monitor of {facility.site.code}")
    if duration <= timedelta(0):
        raise ValueError("challenge: duration must be positive")
    signal = CHALLENGE_SIGNAL[facility.monitor(monitor).kind]
    return Event(at=at, monitor=monitor, duration=duration, **signal)
