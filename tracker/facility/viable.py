"""Viable (microbial) monitoring: the sampling plan of the facility file, the viable limit sets
and the pure judging of a colony count.

The plan lives in the facility file (``[viable]``, ``[[viable_locations]]``,
``[[viable_levels]]``) so it is versioned with the facility's revisions and changed only with
QA's e-signed approval, like every setting that decides what is judged (DESIGN §10; GMP 2010
Art. 161, 163). The regulatory limits are data files with a citation on every row
(``tracker/data/limitsets/viable-*.toml``: China GMP 2010 Annex 1 第十一条 and EU GMP Annex 1
(2022) Table 6, regulatory.md §2). A facility's own alert/action levels may only be tighter.

Judging (``judge``) is pure: a count *equal* to the limit complies (最大允许数), one more is an
action; grade A's "<1" / "no growth" is a limit of 0, so any growth is an action excursion.
Settle plates are normalised to 4 h (``normalised``) and several plates of one location in one
session are summed (Annex 1 第十一条 note 2: 可使用多个沉降碟连续进行监测并累积计数).
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any

from tracker.core.errors import FacilityFileError, InvalidInputError, LimitTooLooseError, Reason

#: sampling methods: active air (cfu/m³), settle plate Ø90 mm (cfu/4 h), contact plate Ø55 mm
#: (cfu/plate), glove print of the left and the right hand (5 fingers, cfu/glove)
METHODS = ("air", "settle", "contact", "glove_l", "glove_r")
#: the limit column each method is judged by (both hands against the glove limit)
LIMIT_COLUMN = {
    "air": "air",
    "settle": "settle",
    "contact": "contact",
    "glove_l": "glove",
    "glove_r": "glove",
}
UNITS = {
    "air": "cfu/m³",
    "settle": "cfu/4 h",
    "contact": "cfu/plate",
    "glove_l": "cfu/glove",
    "glove_r": "cfu/glove",
}
METHOD_EN = {
    "air": "active air",
    "settle": "settle plate",
    "contact": "contact plate",
    "glove_l": "glove print (left)",
    "glove_r": "glove print (right)",
}
METHOD_ZH = {
    "air": "浮游菌",
    "settle": "沉降菌",
    "contact": "表面微生物（接触碟）",
    "glove_l": "手套（左）",
    "glove_r": "手套（右）",
}
#: session: every processing step (session) in the location's room generates samples (grade A/B
#: processing, regulatory.md §6.5); batch: the first step of a batch in the room; the others by calendar
FREQUENCIES = ("session", "batch", "daily", "weekly", "monthly")
#: a settle plate is exposed for at most 4 h (Annex 1 (2022) §9.x; China Annex 1 第十一条 note)
SETTLE_REFERENCE_MIN = 240.0
VIABLE_LIMIT_FILES = {
    "CN-GMP-2010": "viable-cn-gmp-2010.toml",
    "EU-GMP-ANNEX1-2022": "viable-eu-gmp-annex1-2022.toml",
}


# --------------------------------------------------------------------------- limit sets


@dataclass(frozen=True)
class ViableLimit:
    """The regulation's maximum count that complies, with its citation."""

    high: float
    citation: str


@dataclass(frozen=True)
class ViableLimitSet:
    code: str
    version: str
    sha256: str
    #: (grade, limit column) → limit; a column a grade does not set (glove in C, D) is absent
    limits: dict[tuple[str, str], ViableLimit]

    def regulatory(self, grade: str, method: str) -> ViableLimit | None:
        return self.limits.get((grade, LIMIT_COLUMN[method]))


def parse_viable_limits(raw: bytes) -> ViableLimitSet:
    """Validate a viable limit file: known grades and columns, counts ≥ 0, a citation on every row."""
    data = tomllib.loads(raw.decode("utf-8"))
    head = data["viable_limits"]
    limits: dict[tuple[str, str], ViableLimit] = {}
    for i, row in enumerate(data.get("viable", [])):
        where = f"viable[{i}]"
        cite = row.get("cite")
        if not cite:
            raise InvalidInputError(
                Reason(f"{where}: every limit needs a citation", f"{where}：每条限度都须注明出处")
            )
        if row.get("grade") not in ("A", "B", "C", "D"):
            raise InvalidInputError(Reason(f"{where}: unknown grade", f"{where}：未知的洁净级别"))
        for column in ("air", "settle", "contact", "glove"):
            if column in row:
                value = float(row[column])
                if value < 0:
                    raise InvalidInputError(Reason(f"{where}: {column} below 0", f"{where}：{column} 小于 0"))
                limits[(row["grade"], column)] = ViableLimit(value, str(cite))
    return ViableLimitSet(
        code=head["code"], version=str(head["version"]), sha256=hashlib.sha256(raw).hexdigest(), limits=limits
    )


@lru_cache
def load_viable_limits(code: str) -> ViableLimitSet:
    """The viable limits that belong to the limit set ``code`` (kept in their own file, so the
    particle limit sets keep their hash and every stored reading its evaluation basis)."""
    try:
        filename = VIABLE_LIMIT_FILES[code]
    except KeyError:
        raise InvalidInputError(
            Reason(f"no viable limits for limit set {code!r}", f"限度标准 {code!r} 没有微生物限度")
        ) from None
    limits = parse_viable_limits(resources.files("tracker.data.limitsets").joinpath(filename).read_bytes())
    if limits.code != code:
        raise InvalidInputError(
            Reason(
                f"{filename} declares {limits.code}, expected {code}",
                f"{filename} 声明的是 {limits.code}，应为 {code}",
            )
        )
    return limits


# --------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class IncubationStage:
    """One stage of the incubation scheme, e.g. 20–25 °C for 72 h then 30–35 °C for 48 h."""

    temperature: str
    hours: float


@dataclass(frozen=True)
class ViableLocation:
    """One ``[[viable_locations]]`` entry: where, how and how often samples are taken."""

    code: str
    room: str
    methods: tuple[str, ...]
    frequency: str
    #: position on the floor plan, metres from the room's origin (x, y)
    position: tuple[float, float] | None = None
    #: active air: litres per sample (1,000 L in A/B is common practice, regulatory.md §2.3)
    air_volume_l: float | None = None
    #: settle plates: planned exposure per plate (≤ 240 min)
    exposure_min: float | None = None


@dataclass(frozen=True)
class ViableLevel:
    """A facility alert/action level (``[[viable_levels]]``): only tighter than the regulation."""

    method: str
    grade: str | None = None
    room: str | None = None
    location: str | None = None
    alert: float | None = None
    action: float | None = None
    index: int = 0


@dataclass(frozen=True)
class ViablePlan:
    """The sampling plan of a facility: media, incubation, locations and levels."""

    media: str = ""
    incubation: tuple[IncubationStage, ...] = ()
    #: hours after the reading is due before it is flagged overdue
    reading_grace_h: float = 4.0
    locations: tuple[ViableLocation, ...] = ()
    levels: tuple[ViableLevel, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.locations

    @property
    def incubation_h(self) -> float:
        return sum(stage.hours for stage in self.incubation)

    def as_dict(self) -> dict[str, Any]:
        """As a facility revision stores it (what QA approves when it changes)."""
        return asdict(self)

    def as_json(self) -> dict[str, Any]:
        """The plan as JSON holds it (lists, not tuples): what a revision stores and compares."""
        return json.loads(json.dumps(self.as_dict()))

    @classmethod
    def from_dict(cls, data: dict | None) -> ViablePlan:
        """From a revision's stored settings (an empty plan where it stored none)."""
        if not data:
            return cls()
        return cls(
            media=data.get("media", ""),
            incubation=tuple(IncubationStage(**st) for st in data.get("incubation", [])),
            reading_grace_h=float(data.get("reading_grace_h", 4.0)),
            locations=tuple(
                ViableLocation(
                    **{
                        **loc,
                        "methods": tuple(loc["methods"]),
                        "position": tuple(loc["position"]) if loc.get("position") else None,
                    }
                )
                for loc in data.get("locations", [])
            ),
            levels=tuple(ViableLevel(**lv) for lv in data.get("levels", [])),
        )

    def location(self, code: str) -> ViableLocation | None:
        return next((loc for loc in self.locations if loc.code == code), None)


VIABLE_KEYS = ("media", "incubation", "reading_grace_h")
LOCATION_KEYS = ("code", "room", "methods", "frequency", "position", "air_volume_l", "exposure_min")
LEVEL_KEYS = ("method", "grade", "room", "location", "alert", "action")


def _refuse(where: str, en: str, zh: str) -> FacilityFileError:
    return FacilityFileError(Reason(f"{where}: {en}", f"{where}：{zh}"))


def _number(entry: dict, key: str, where: str, *, low: float, high: float) -> float | None:
    value = entry.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not low < value <= high:
        raise _refuse(
            where,
            f"'{key}' must be a number in ({low:g}, {high:g}], got {value!r}",
            f"'{key}' 须为 ({low:g}, {high:g}] 之间的数字，实际为 {value!r}",
        )
    return float(value)


def _stages(raw: Any) -> tuple[IncubationStage, ...]:
    if raw is None:
        # the common two-temperature scheme for TSA (regulatory.md §2.3 practice)
        return (IncubationStage("20-25 °C", 72.0), IncubationStage("30-35 °C", 48.0))
    if not isinstance(raw, list) or not raw:
        raise _refuse(
            "[viable]",
            "incubation must be a list of {temperature, hours}",
            "incubation 须为 {temperature, hours} 的列表",
        )
    stages = []
    for i, stage in enumerate(raw):
        where = f"[viable] incubation[{i}]"
        if not isinstance(stage, dict) or set(stage) - {"temperature", "hours"} or "temperature" not in stage:
            raise _refuse(where, "give temperature and hours only", "只能给出 temperature 和 hours")
        hours = _number(stage, "hours", where, low=0, high=14 * 24)
        if hours is None:
            raise _refuse(where, "missing 'hours'", "缺少 'hours'")
        stages.append(IncubationStage(str(stage["temperature"]), hours))
    return tuple(stages)


def _location(i: int, entry: dict, rooms: dict[str, str], seen: set[str]) -> ViableLocation:
    where = f"viable_locations[{i}]"
    code = entry.get("code")
    if not code or not isinstance(code, str):
        raise _refuse(where, "missing 'code'", "缺少 'code'")
    where = f"{where} ({code})"
    if code in seen:
        raise _refuse(where, f"duplicate location code {code!r}", f"采样点代码 {code!r} 重复")
    room = entry.get("room")
    if room not in rooms:
        raise _refuse(where, f"unknown room {room!r}", f"未知房间 {room!r}")
    if rooms[room] not in ("A", "B", "C", "D"):
        raise _refuse(
            where,
            f"room {room} is not a clean area: no viable limits apply",
            f"房间 {room} 不是洁净区：没有微生物限度",
        )
    methods = entry.get("methods")
    if not isinstance(methods, list) or not methods or any(m not in METHODS for m in methods):
        raise _refuse(
            where,
            f"methods must be a list among {', '.join(METHODS)}",
            f"methods 须为 {'、'.join(METHODS)} 中的值的列表",
        )
    frequency = entry.get("frequency", "session")
    if frequency not in FREQUENCIES:
        raise _refuse(
            where,
            f"frequency must be one of {', '.join(FREQUENCIES)}",
            f"frequency 须为 {'、'.join(FREQUENCIES)} 之一",
        )
    position = entry.get("position")
    if position is not None and (
        not isinstance(position, list)
        or len(position) != 2
        or not all(isinstance(v, int | float) for v in position)
    ):
        raise _refuse(where, "position must be [x, y] in metres", "position 须为以米计的 [x, y]")
    volume = _number(entry, "air_volume_l", where, low=0, high=2000)
    if "air" in methods and volume is None:
        raise _refuse(where, "active air needs 'air_volume_l'", "浮游菌采样须给出 'air_volume_l'")
    exposure = _number(entry, "exposure_min", where, low=0, high=SETTLE_REFERENCE_MIN)
    if "settle" in methods and exposure is None:
        raise _refuse(
            where,
            "settle plates need 'exposure_min' (at most 240)",
            "沉降菌须给出 'exposure_min'（不超过 240）",
        )
    return ViableLocation(
        code=code,
        room=room,
        methods=tuple(methods),
        frequency=frequency,
        position=None if position is None else (float(position[0]), float(position[1])),
        air_volume_l=volume,
        exposure_min=exposure,
    )


def _level(i: int, entry: dict, rooms: dict[str, str], locations: set[str]) -> ViableLevel:
    where = f"viable_levels[{i}]"
    if entry.get("method") not in METHODS:
        raise _refuse(
            where, f"method must be one of {', '.join(METHODS)}", f"method 须为 {'、'.join(METHODS)} 之一"
        )
    if len([k for k in ("grade", "room", "location") if entry.get(k)]) != 1:
        raise _refuse(
            where,
            "give exactly one of grade, room or location",
            "grade、room、location 须给出且只能给出其中一个",
        )
    if entry.get("room") and entry["room"] not in rooms:
        raise _refuse(where, f"unknown room {entry['room']!r}", f"未知房间 {entry['room']!r}")
    if entry.get("location") and entry["location"] not in locations:
        raise _refuse(where, f"unknown location {entry['location']!r}", f"未知采样点 {entry['location']!r}")
    if entry.get("grade") and entry["grade"] not in ("A", "B", "C", "D"):
        raise _refuse(where, f"unknown grade {entry['grade']!r}", f"未知洁净级别 {entry['grade']!r}")
    alert = entry.get("alert")
    action = entry.get("action")
    for key, value in (("alert", alert), ("action", action)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float) or value < 0):
            raise _refuse(where, f"'{key}' must be a count ≥ 0", f"'{key}' 须为 ≥ 0 的计数")
    if alert is not None and action is not None and alert > action:
        raise _refuse(where, f"alert {alert} is above action {action}", f"警戒限 {alert} 高于纠偏限 {action}")
    return ViableLevel(
        method=entry["method"],
        grade=entry.get("grade"),
        room=entry.get("room"),
        location=entry.get("location"),
        alert=None if alert is None else float(alert),
        action=None if action is None else float(action),
        index=i,
    )


def parse_plan(
    viable: dict, locations: list[dict], levels: list[dict], *, rooms: dict[str, str], limit_set: str
) -> ViablePlan:
    """``[viable]``, ``[[viable_locations]]`` and ``[[viable_levels]]`` of a facility file
    (``rooms``: code → grade). Every facility level is checked against the regulation at once."""
    if not (viable or locations or levels):
        return ViablePlan()
    unknown = set(viable) - set(VIABLE_KEYS)
    if unknown:
        raise _refuse(
            "[viable]",
            f"unknown key {sorted(unknown)[0]!r}; known: {', '.join(VIABLE_KEYS)}",
            f"未知的键 {sorted(unknown)[0]!r}；可用的有：{', '.join(VIABLE_KEYS)}",
        )
    seen: set[str] = set()
    locs = []
    for i, entry in enumerate(locations):
        locs.append(_location(i, entry, rooms, seen))
        seen.add(locs[-1].code)
    plan = ViablePlan(
        media=str(viable.get("media", "TSA")),
        incubation=_stages(viable.get("incubation")),
        reading_grace_h=_number(viable, "reading_grace_h", "[viable]", low=0, high=72) or 4.0,
        locations=tuple(locs),
        levels=tuple(_level(i, entry, rooms, seen) for i, entry in enumerate(levels)),
    )
    regulation = load_viable_limits(limit_set)
    for loc in plan.locations:
        for method in loc.methods:
            resolve_limit(regulation, plan, location=loc, grade=rooms[loc.room], method=method)
    return plan


# --------------------------------------------------------------------------- judging


@dataclass(frozen=True)
class ViableBounds:
    """The alert and action count of one location, method and grade (``None``: none set)."""

    alert: float | None
    action: float | None
    citation: str = ""
    unit: str = ""


@dataclass(frozen=True)
class ViableVerdict:
    level: str  # ok | alert | action | not_evaluated
    value: float  # the count judged (normalised / summed)
    limit: float | None = None


def resolve_limit(
    regulation: ViableLimitSet, plan: ViablePlan, *, location: ViableLocation | None, grade: str, method: str
) -> ViableBounds:
    """The regulation's action limit, then the facility's levels from grade to location; a level
    looser than the regulation is refused (facility levels may only be tighter, DESIGN §3)."""
    reg = regulation.regulatory(grade, method)
    alert, action = None, reg.high if reg else None
    scope = {"grade": 1, "room": 2, "location": 3}
    applying = [
        lv
        for lv in plan.levels
        if lv.method == method
        and (
            (lv.grade is not None and lv.grade == grade)
            or (location is not None and lv.room is not None and lv.room == location.room)
            or (location is not None and lv.location is not None and lv.location == location.code)
        )
    ]
    for lv in sorted(
        applying, key=lambda lv: scope["location" if lv.location else "room" if lv.room else "grade"]
    ):
        for name, value in (("alert", lv.alert), ("action", lv.action)):
            if value is not None and reg is not None and value > reg.high:
                raise LimitTooLooseError(
                    Reason(
                        f"viable_levels[{lv.index}]: {name} {value:g} {UNITS[method]} for {METHOD_EN[method]} in grade "
                        f"{grade} is above {regulation.code}'s limit {reg.high:g} ({reg.citation}); facility levels "
                        "may only be tighter than the regulation",
                        f"viable_levels[{lv.index}]：{grade} 级{METHOD_ZH[method]}的 {name} {value:g} {UNITS[method]} "
                        f"高于 {regulation.code} 的限度 {reg.high:g}（{reg.citation}）；设施限度只能严于法规",
                    )
                )
        alert = lv.alert if lv.alert is not None else alert
        action = lv.action if lv.action is not None else action
    if alert is not None and action is not None and alert > action:
        alert = action
    return ViableBounds(alert=alert, action=action, citation=reg.citation if reg else "", unit=UNITS[method])


def normalised(count: float, exposure_min: float) -> float:
    """A settle plate's count per 4 h: a plate exposed for less is scaled up (2 h, 3 cfu → 6);
    never scaled down (a plate out longer than 4 h is invalid, not diluted)."""
    if exposure_min <= 0:
        raise InvalidInputError(Reason("exposure must be longer than 0 min", "暴露时间须大于 0 分钟"))
    return count * max(1.0, SETTLE_REFERENCE_MIN / exposure_min)


def session_total(plates: list[tuple[float, float]]) -> float:
    """Several settle plates of one location over one session, each (count, exposure min): their
    counts summed (Annex 1 第十一条 note 2), normalised to 4 h only when together they were out
    for less."""
    total_count = sum(count for count, _ in plates)
    total_exposure = sum(exposure for _, exposure in plates)
    return normalised(total_count, total_exposure)


def judge(value: float, bounds: ViableBounds) -> ViableVerdict:
    """A count equal to a limit complies; above the action limit is an action (grade A: any growth)."""
    if bounds.action is None and bounds.alert is None:
        return ViableVerdict("not_evaluated", value)
    if bounds.action is not None and value > bounds.action:
        return ViableVerdict("action", value, bounds.action)
    if bounds.alert is not None and value > bounds.alert:
        return ViableVerdict("alert", value, bounds.alert)
    return ViableVerdict("ok", value, bounds.action)


@dataclass(frozen=True)
class PlannedSample:
    """A sample the plan asks for: location, method and what it needs."""

    location: str
    room: str
    method: str
    frequency: str
    air_volume_l: float | None = None
    exposure_min: float | None = None
    extra: dict = field(default_factory=dict)


def samples_for_session(
    plan: ViablePlan, rooms: list[str], *, first_of_batch: set[str]
) -> list[PlannedSample]:
    """The samples a processing session in ``rooms`` (the step's room and the zones inside it)
    generates: every location there with frequency ``session``, and ``batch`` where this is the
    batch's first step in that room (``first_of_batch``)."""
    out = []
    for loc in plan.locations:
        if loc.room not in rooms:
            continue
        if loc.frequency == "session" or (loc.frequency == "batch" and loc.room in first_of_batch):
            out += [
                PlannedSample(
                    location=loc.code,
                    room=loc.room,
                    method=m,
                    frequency=loc.frequency,
                    air_volume_l=loc.air_volume_l if m == "air" else None,
                    exposure_min=loc.exposure_min if m == "settle" else None,
                )
                for m in loc.methods
            ]
    return out
