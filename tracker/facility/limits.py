"""The limit model: regulatory limit sets (data files) plus facility alert/action levels.

A facility may only be *tighter* than the regulation (DESIGN §3): a looser level is
refused with the rule it breaks. ``evaluate`` is pure and table-tested.
"""

from __future__ import annotations

import hashlib
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from functools import lru_cache
from importlib import resources

from tracker.core.errors import InvalidInputError, LimitTooLooseError, Reason

GRADES = ("A", "B", "C", "D", "CNC")
CLEAN_GRADES = ("A", "B", "C", "D")
KINDS = ("particles", "pressure", "temperature", "humidity")
STATES = ("at_rest", "in_operation")
PARTICLE_CHANNELS = ("0.5", "5.0")
UNITS = {"particles": "/m³", "pressure": "Pa", "temperature": "°C", "humidity": "%RH"}


class Level(StrEnum):
    OK = "ok"
    ALERT = "alert"
    ACTION = "action"
    #: no limit applies (e.g. grade D in operation without facility levels): stored only
    NOT_EVALUATED = "not_evaluated"
    #: the reading proves nothing (sensor status not ok, calibration overdue, outside the
    #: instrument's range): stored with its reason, never a breach, never closes an episode
    INVALID = "invalid"


LEVEL_RANK = {Level.INVALID: -2, Level.NOT_EVALUATED: -1, Level.OK: 0, Level.ALERT: 1, Level.ACTION: 2}


@dataclass(frozen=True, slots=True)
class Bounds:
    """Effective alert/action bounds for one monitor, channel and operational state."""

    alert_low: float | None = None
    alert_high: float | None = None
    action_low: float | None = None
    action_high: float | None = None
    delay_s: float = 0.0
    regulatory_low: float | None = None
    regulatory_high: float | None = None
    citation: str = ""
    #: pressure cascades: a negative differential (airflow reversal) is an action at once,
    #: whatever the delay (which is for door openings that dip but stay positive)
    inversion_action: bool = False

    @property
    def empty(self) -> bool:
        return not self.inversion_action and all(
            v is None for v in (self.alert_low, self.alert_high, self.action_low, self.action_high)
        )

    def delay_for(self, value: float) -> float:
        """Seconds a value must persist before it counts; none for an inversion."""
        return 0.0 if self.inversion_action and value < 0 else self.delay_s


@dataclass(frozen=True, slots=True)
class Verdict:
    level: Level
    direction: str | None = None  # "high" | "low" when out of limit
    limit: float | None = None  # the bound that was crossed (the highest one crossed)


OK = Verdict(Level.OK)
NOT_EVALUATED = Verdict(Level.NOT_EVALUATED)
INVALID = Verdict(Level.INVALID)


def evaluate(value: float, bounds: Bounds | None) -> Verdict:
    """Judge one value: a value *equal* to a limit complies (最大允许数 / 不低于)."""
    if bounds is None or bounds.empty:
        return NOT_EVALUATED
    if bounds.action_high is not None and value > bounds.action_high:
        return Verdict(Level.ACTION, "high", bounds.action_high)
    if bounds.action_low is not None and value < bounds.action_low:
        return Verdict(Level.ACTION, "low", bounds.action_low)
    if bounds.alert_high is not None and value > bounds.alert_high:
        return Verdict(Level.ALERT, "high", bounds.alert_high)
    if bounds.inversion_action and value < 0:
        return Verdict(Level.ACTION, "low", 0.0)
    if bounds.alert_low is not None and value < bounds.alert_low:
        return Verdict(Level.ALERT, "low", bounds.alert_low)
    return OK


# --------------------------------------------------------------------------- limit sets


@dataclass(frozen=True, slots=True)
class RegulatoryLimit:
    low: float | None
    high: float | None
    citation: str
    #: False for design-code defaults (T/RH): a facility may replace them with its process
    #: requirement (GMP Art. 170); True for regulatory limits it may only tighten
    binding: bool = True


@dataclass(frozen=True)
class LimitSet:
    """One regulatory table, loaded from ``tracker/data/limitsets/*.toml``."""

    code: str
    version: str
    name: str
    name_en: str
    sha256: str
    particles: Mapping[tuple[str, str, str], RegulatoryLimit]  # (grade, state, channel)
    pressure: Mapping[str, RegulatoryLimit]  # boundary kind
    ranges: Mapping[tuple[str, str], RegulatoryLimit]  # (kind, grade) for T/RH
    particles_alert_fraction: float
    pressure_margin_pa: float
    range_inset_fraction: float
    #: counts in one sample above the limit that no false count explains (``[single_sample]``)
    burst_counts: int = 2

    @property
    def label(self) -> str:
        return f"{self.code}@{self.version}"

    def regulatory(
        self, *, kind: str, grade: str, state: str, channel: str | None, reference_grade: str | None = None
    ) -> RegulatoryLimit | None:
        """The regulation's own limit for a monitor, or ``None`` where it gives no number."""
        if kind == "particles":
            return self.particles.get((grade, state, channel or ""))
        if kind == "pressure":
            if reference_grade is None or reference_grade == grade:
                return None  # Art. 48: same grade needs "an appropriate gradient", no number
            if "CNC" in (grade, reference_grade):
                return self.pressure.get("clean_to_non_clean")
            return self.pressure.get("different_grades")
        return self.ranges.get((kind, grade))


LIMIT_SET_FILES = {"CN-GMP-2010": "cn-gmp-2010.toml", "EU-GMP-ANNEX1-2022": "eu-gmp-annex1-2022.toml"}


def _need_cite(row: dict, where: str) -> str:
    cite = row.get("cite")
    if not cite:
        raise InvalidInputError(
            Reason(f"{where}: every limit needs a citation", f"{where}：每条限度都须注明出处")
        )
    return str(cite)


def parse_limit_set(raw: bytes) -> LimitSet:
    """Validate and index a limit-set file; every row must cite its source."""
    data = tomllib.loads(raw.decode("utf-8"))
    head = data["limit_set"]
    particles: dict[tuple[str, str, str], RegulatoryLimit] = {}
    for i, row in enumerate(data.get("particles", [])):
        where = f"particles[{i}]"
        if row["grade"] not in CLEAN_GRADES or row["state"] not in STATES:
            raise InvalidInputError(
                Reason(f"{where}: unknown grade or state", f"{where}：未知的洁净级别或状态")
            )
        for channel, high in row["limits"].items():
            if channel not in PARTICLE_CHANNELS or float(high) <= 0:
                raise InvalidInputError(
                    Reason(
                        f"{where}: bad channel or limit {channel}={high}",
                        f"{where}：通道或限度有误 {channel}={high}",
                    )
                )
            particles[(row["grade"], row["state"], channel)] = RegulatoryLimit(
                None, float(high), _need_cite(row, where)
            )
    pressure = {
        row["boundary"]: RegulatoryLimit(float(row["min"]), None, _need_cite(row, f"pressure[{i}]"))
        for i, row in enumerate(data.get("pressure", []))
    }
    ranges: dict[tuple[str, str], RegulatoryLimit] = {}
    for kind in ("temperature", "humidity"):
        for i, row in enumerate(data.get(kind, [])):
            if float(row["min"]) >= float(row["max"]):
                raise InvalidInputError(
                    Reason(f"{kind}[{i}]: min must be below max", f"{kind}[{i}]：min 须小于 max")
                )
            for grade in row["grades"]:
                ranges[(kind, grade)] = RegulatoryLimit(
                    float(row["min"]),
                    float(row["max"]),
                    _need_cite(row, f"{kind}[{i}]"),
                    binding=bool(row.get("binding", True)),
                )
    alert = data.get("alert_defaults", {})
    return LimitSet(
        code=head["code"],
        version=str(head["version"]),
        name=head["name"],
        name_en=head["name_en"],
        sha256=hashlib.sha256(raw).hexdigest(),
        particles=particles,
        pressure=pressure,
        ranges=ranges,
        particles_alert_fraction=float(alert.get("particles_fraction", 0.5)),
        pressure_margin_pa=float(alert.get("pressure_margin_pa", 2.0)),
        range_inset_fraction=float(alert.get("range_inset_fraction", 0.1)),
        burst_counts=int(data.get("single_sample", {}).get("burst_counts", 2)),
    )


@lru_cache
def load_limit_set(code: str) -> LimitSet:
    """The shipped limit set ``code`` (e.g. ``CN-GMP-2010``)."""
    try:
        filename = LIMIT_SET_FILES[code]
    except KeyError:
        raise InvalidInputError(
            Reason(
                f"unknown limit set {code!r}; known: {', '.join(LIMIT_SET_FILES)}",
                f"未知的限度标准 {code!r}；可用的有：{', '.join(LIMIT_SET_FILES)}",
            )
        ) from None
    raw = resources.files("tracker.data.limitsets").joinpath(filename).read_bytes()
    limit_set = parse_limit_set(raw)
    if limit_set.code != code:
        raise InvalidInputError(
            Reason(
                f"{filename} declares {limit_set.code}, expected {code}",
                f"{filename} 声明的是 {limit_set.code}，应为 {code}",
            )
        )
    return limit_set


# --------------------------------------------------------------------------- facility levels

LEVEL_FIELDS = ("alert_low", "alert_high", "action_low", "action_high")


@dataclass(frozen=True, slots=True)
class FacilityLevel:
    """One ``[[limits]]`` row of the facility file."""

    kind: str
    state: str = "any"  # at_rest | in_operation | any
    monitor: str | None = None
    room: str | None = None
    grade: str | None = None
    channel: str | None = None
    alert_low: float | None = None
    alert_high: float | None = None
    action_low: float | None = None
    action_high: float | None = None
    delay_s: float | None = None
    note: str = ""
    index: int = 0  # position in the file, for messages

    @property
    def specificity(self) -> int:
        scope = 3 if self.monitor else 2 if self.room else 1
        return scope * 2 + (1 if self.state != "any" else 0)

    def describe(self) -> str:
        target = (
            f"monitor {self.monitor}"
            if self.monitor
            else f"room {self.room}"
            if self.room
            else f"grade {self.grade}"
        )
        channel = f" ≥{self.channel} µm" if self.channel else ""
        return f"limits[{self.index}] ({target}, {self.kind}{channel}, {self.state})"


@dataclass(frozen=True, slots=True)
class MonitorSpec:
    """What limit resolution needs to know about a monitor."""

    code: str
    room: str
    grade: str
    kind: str
    reference_grade: str | None = None
    channels: tuple[str, ...] = ()


@dataclass(frozen=True)
class MonitorLimits:
    """Resolved bounds of one monitor: ``bounds[(channel, state)]`` (channel "" if none)."""

    bounds: dict[tuple[str, str], Bounds] = field(default_factory=dict)

    def for_reading(self, channel: str, state: str) -> Bounds | None:
        return self.bounds.get((channel, state))

    def evaluable(self, channel: str) -> bool:
        """Whether any state has a bound for ``channel`` (else no episode can ever open)."""
        return any(not b.empty for (ch, _), b in self.bounds.items() if ch == channel)


def _applies(level: FacilityLevel, spec: MonitorSpec, channel: str, state: str) -> bool:
    if level.kind != spec.kind or (level.state not in ("any", state)):
        return False
    if level.channel is not None and level.channel != channel:
        return False
    if level.monitor is not None:
        return level.monitor == spec.code
    if level.room is not None:
        return level.room == spec.room
    return level.grade == spec.grade


def _derive_alerts(limit_set: LimitSet, kind: str, b: Bounds) -> Bounds:
    """Fill missing alert levels from the action levels by the set's documented defaults."""
    alert_low, alert_high = b.alert_low, b.alert_high
    if kind == "particles":
        if alert_high is None and b.action_high is not None:
            alert_high = b.action_high * limit_set.particles_alert_fraction
    elif kind == "pressure":
        if alert_low is None and b.action_low is not None:
            alert_low = b.action_low + limit_set.pressure_margin_pa
    elif b.action_low is not None and b.action_high is not None:
        inset = (b.action_high - b.action_low) * limit_set.range_inset_fraction
        alert_low = b.action_low + inset if alert_low is None else alert_low
        alert_high = b.action_high - inset if alert_high is None else alert_high
    return replace(b, alert_low=alert_low, alert_high=alert_high)


def _check_tighter(
    level: FacilityLevel, spec: MonitorSpec, reg: RegulatoryLimit | None, b: Bounds, limit_set: LimitSet
) -> None:
    """Refuse a facility level looser than the regulation or an alert outside its action."""
    unit = UNITS[spec.kind]
    if spec.kind == "particles" and level.delay_s:
        raise LimitTooLooseError(
            Reason(
                f"{level.describe()}: delay_s {level.delay_s:g} s for {spec.code}: a single particle "
                "sample above the limit is an excursion (regulatory.md §5.3), so particle limits "
                "take no delay",
                f"{level.describe()}：{spec.code} 的 delay_s 为 {level.delay_s:g} 秒：悬浮粒子只要有一次采样"
                "超过限度即为超标（regulatory.md §5.3），因此悬浮粒子限度不设延时",
            )
        )
    if reg is not None and reg.binding:
        for name in LEVEL_FIELDS:
            value = getattr(level, name)
            if value is None:
                continue
            if reg.high is not None and value > reg.high:
                raise LimitTooLooseError(
                    Reason(
                        f"{level.describe()}: {name} {value:g} {unit} for {spec.code} is above "
                        f"{limit_set.code}'s limit {reg.high:g} {unit} ({reg.citation}); "
                        "facility levels may only be tighter than the regulation",
                        f"{level.describe()}：{spec.code} 的 {name} {value:g} {unit} 高于 {limit_set.code} "
                        f"的限度 {reg.high:g} {unit}（{reg.citation}）；设施限度只能严于法规",
                    )
                )
            if reg.low is not None and value < reg.low:
                raise LimitTooLooseError(
                    Reason(
                        f"{level.describe()}: {name} {value:g} {unit} for {spec.code} is below "
                        f"{limit_set.code}'s floor {reg.low:g} {unit} ({reg.citation}); "
                        "facility levels may only be tighter than the regulation",
                        f"{level.describe()}：{spec.code} 的 {name} {value:g} {unit} 低于 {limit_set.code} "
                        f"的下限 {reg.low:g} {unit}（{reg.citation}）；设施限度只能严于法规",
                    )
                )
    if b.alert_high is not None and b.action_high is not None and b.alert_high > b.action_high:
        raise InvalidInputError(
            Reason(
                f"{level.describe()}: alert_high {b.alert_high:g} is above "
                f"action_high {b.action_high:g} for {spec.code}",
                f"{level.describe()}：{spec.code} 的警戒上限 alert_high "
                f"{b.alert_high:g} 高于纠偏上限 action_high {b.action_high:g}",
            )
        )
    if b.alert_low is not None and b.action_low is not None and b.alert_low < b.action_low:
        raise InvalidInputError(
            Reason(
                f"{level.describe()}: alert_low {b.alert_low:g} is below "
                f"action_low {b.action_low:g} for {spec.code}",
                f"{level.describe()}：{spec.code} 的警戒下限 alert_low "
                f"{b.alert_low:g} 低于纠偏下限 action_low {b.action_low:g}",
            )
        )


def resolve_monitor_limits(
    limit_set: LimitSet, spec: MonitorSpec, levels: Iterable[FacilityLevel]
) -> MonitorLimits:
    """Bounds per channel and state: regulation, then facility rows from general to specific.

    Rows merge field by field (a grade row may set the delay, a room row the alert level);
    alert levels the facility leaves unset are derived from the resulting action levels.
    """
    levels = sorted(levels, key=lambda lv: lv.specificity)
    channels = spec.channels if spec.kind == "particles" else ("",)
    out: dict[tuple[str, str], Bounds] = {}
    for channel in channels:
        for state in STATES:
            reg = limit_set.regulatory(
                kind=spec.kind,
                grade=spec.grade,
                state=state,
                channel=channel,
                reference_grade=spec.reference_grade,
            )
            bounds = (
                Bounds(regulatory_low=reg.low, regulatory_high=reg.high, citation=reg.citation)
                if reg
                else Bounds()
            )
            if spec.kind == "pressure":
                bounds = replace(bounds, inversion_action=True)
            bounds = replace(
                bounds, action_low=reg.low if reg else None, action_high=reg.high if reg else None
            )
            explicit: dict[str, float] = {}
            for level in levels:
                if not _applies(level, spec, channel, state):
                    continue
                explicit.update(
                    {n: float(getattr(level, n)) for n in LEVEL_FIELDS if getattr(level, n) is not None}
                )
                if level.delay_s is not None:
                    bounds = replace(bounds, delay_s=float(level.delay_s))
                merged = replace(bounds, **explicit)
                _check_tighter(level, spec, reg, _derive_alerts(limit_set, spec.kind, merged), limit_set)
            bounds = replace(bounds, **explicit)
            out[(channel, state)] = _derive_alerts(limit_set, spec.kind, bounds)
    return MonitorLimits(out)
