"""The regulatory tables, facility levels (tighter only) and the pure evaluate()."""

from __future__ import annotations

import pytest

from tracker.core.errors import LimitTooLooseError
from tracker.facility.file import parse_facility
from tracker.facility.limits import (
    Bounds,
    FacilityLevel,
    Level,
    MonitorSpec,
    evaluate,
    load_limit_set,
    resolve_monitor_limits,
)

# China GMP 2010 Annex 1 第九条, every cell of the table (regulatory.md §1.1).
CN_GMP_2010_PARTICLES = [
    ("A", "at_rest", "0.5", 3520),
    ("A", "at_rest", "5.0", 20),
    ("A", "in_operation", "0.5", 3520),
    ("A", "in_operation", "5.0", 20),
    ("B", "at_rest", "0.5", 3520),
    ("B", "at_rest", "5.0", 29),
    ("B", "in_operation", "0.5", 352000),
    ("B", "in_operation", "5.0", 2900),
    ("C", "at_rest", "0.5", 352000),
    ("C", "at_rest", "5.0", 2900),
    ("C", "in_operation", "0.5", 3520000),
    ("C", "in_operation", "5.0", 29000),
    ("D", "at_rest", "0.5", 3520000),
    ("D", "at_rest", "5.0", 29000),
]


@pytest.mark.parametrize(("grade", "state", "channel", "limit"), CN_GMP_2010_PARTICLES)
def test_cn_gmp_2010_particle_table(grade: str, state: str, channel: str, limit: int) -> None:
    cn = load_limit_set("CN-GMP-2010")
    reg = cn.regulatory(kind="particles", grade=grade, state=state, channel=channel)
    assert reg is not None
    assert reg.high == limit
    assert reg.low is None
    assert "第九条" in reg.citation
    spec = MonitorSpec(code="M", room="R", grade=grade, kind="particles", channels=("0.5", "5.0"))
    bounds = resolve_monitor_limits(cn, spec, []).for_reading(channel, state)
    assert evaluate(limit, bounds).level is Level.ALERT  # equal to the maximum complies
    assert evaluate(limit + 1, bounds).level is Level.ACTION
    assert bounds.alert_high == limit * 0.5  # documented default alert


def test_grade_d_in_operation_is_not_specified() -> None:
    cn = load_limit_set("CN-GMP-2010")
    for channel in ("0.5", "5.0"):
        assert cn.regulatory(kind="particles", grade="D", state="in_operation", channel=channel) is None
    spec = MonitorSpec(code="M", room="R", grade="D", kind="particles", channels=("0.5",))
    bounds = resolve_monitor_limits(cn, spec, []).for_reading("0.5", "in_operation")
    assert evaluate(9e9, bounds).level is Level.NOT_EVALUATED


def test_eu_annex1_2022_differs_where_it_should() -> None:
    eu = load_limit_set("EU-GMP-ANNEX1-2022")
    assert eu.regulatory(kind="particles", grade="A", state="in_operation", channel="5.0").high == 29
    assert eu.regulatory(kind="particles", grade="B", state="in_operation", channel="5.0").high == 2930
    assert eu.regulatory(kind="particles", grade="C", state="in_operation", channel="5.0").high == 29300
    assert eu.regulatory(kind="particles", grade="B", state="in_operation", channel="0.5").high == 352000
    assert eu.label == "EU-GMP-ANNEX1-2022@1"
    assert eu.sha256 != load_limit_set("CN-GMP-2010").sha256


@pytest.mark.parametrize(
    ("grade", "reference", "floor"),
    [
        ("B", "C", 10.0),
        ("C", "D", 10.0),
        ("A", "B", 10.0),
        ("D", "CNC", 10.0),
        ("B", "B", None),
    ],
)
def test_ten_pascal_rule(grade: str, reference: str, floor: float | None) -> None:
    cn = load_limit_set("CN-GMP-2010")
    reg = cn.regulatory(
        kind="pressure", grade=grade, state="at_rest", channel=None, reference_grade=reference
    )
    if floor is None:
        assert reg is None  # same grade: "appropriate gradient", no number (Art. 48)
        return
    assert reg.low == floor
    assert "第四十八条" in reg.citation
    spec = MonitorSpec(code="DP", room="R", grade=grade, kind="pressure", reference_grade=reference)
    bounds = resolve_monitor_limits(cn, spec, []).for_reading("", "in_operation")
    assert evaluate(10.0, bounds).level is Level.ALERT  # 不低于10 Pa: 10 complies with action
    assert evaluate(9.99, bounds).level is Level.ACTION
    assert evaluate(12.0, bounds).level is Level.OK  # default alert 2 Pa above the floor
    assert evaluate(11.9, bounds).level is Level.ALERT


def test_temperature_and_humidity_ranges_per_grade() -> None:
    cn = load_limit_set("CN-GMP-2010")
    b_t = cn.regulatory(kind="temperature", grade="B", state="at_rest", channel=None)
    d_h = cn.regulatory(kind="humidity", grade="D", state="at_rest", channel=None)
    assert (b_t.low, b_t.high) == (20.0, 24.0)
    assert (d_h.low, d_h.high) == (45.0, 65.0)
    assert cn.regulatory(kind="temperature", grade="CNC", state="at_rest", channel=None) is None


def _facility(limit_block: str) -> str:
    return f"""
[site]
code = "S"
name = "S"
[[rooms]]
code = "B1"
name = "b"
grade = "B"
[[rooms]]
code = "C1"
name = "c"
grade = "C"
[[monitors]]
code = "B1-DP"
room = "B1"
kind = "pressure"
reference = "C1"
interval_s = 10
[[monitors]]
code = "B1-PC"
room = "B1"
kind = "particles"
interval_s = 60
{limit_block}
"""


def test_looser_pressure_level_is_refused_naming_the_rule() -> None:
    with pytest.raises(LimitTooLooseError, match=r"limits\[0\].*action_low 8 Pa.*第四十八条"):
        parse_facility(_facility('[[limits]]\nroom = "B1"\nkind = "pressure"\naction_low = 8.0'))


def test_looser_particle_level_is_refused() -> None:
    block = (
        '[[limits]]\ngrade = "B"\nkind = "particles"\nchannel = "0.5"\n'
        'state = "in_operation"\naction_high = 400000'
    )
    with pytest.raises(LimitTooLooseError, match=r"above CN-GMP-2010's limit 352000"):
        parse_facility(_facility(block))


def test_alert_outside_action_is_refused() -> None:
    block = '[[limits]]\nroom = "B1"\nkind = "pressure"\nalert_low = 10.5\naction_low = 11.0'
    with pytest.raises(ValueError, match=r"alert_low 10\.5 is below action_low 11"):
        parse_facility(_facility(block))


def test_tighter_levels_are_used_and_merged_by_specificity() -> None:
    block = """
[[limits]]
grade = "B"
kind = "pressure"
delay_s = 60
[[limits]]
monitor = "B1-DP"
kind = "pressure"
alert_low = 14.0
action_low = 11.0
[[limits]]
grade = "B"
kind = "particles"
channel = "0.5"
state = "in_operation"
action_high = 200000
"""
    facility = parse_facility(_facility(block))
    cn = load_limit_set("CN-GMP-2010")
    dp = MonitorSpec(code="B1-DP", room="B1", grade="B", kind="pressure", reference_grade="C")
    bounds = resolve_monitor_limits(cn, dp, facility.levels).for_reading("", "at_rest")
    assert (bounds.alert_low, bounds.action_low, bounds.delay_s) == (14.0, 11.0, 60.0)
    assert bounds.regulatory_low == 10.0
    pc = MonitorSpec(code="B1-PC", room="B1", grade="B", kind="particles", channels=("0.5", "5.0"))
    limits = resolve_monitor_limits(cn, pc, facility.levels)
    in_op = limits.for_reading("0.5", "in_operation")
    assert (in_op.action_high, in_op.alert_high) == (200000, 100000)
    assert limits.for_reading("0.5", "at_rest").action_high == 3520  # at rest untouched


@pytest.mark.parametrize(
    ("value", "level", "direction"),
    [
        (15.0, Level.OK, None),
        (12.0, Level.OK, None),
        (11.0, Level.ALERT, "low"),
        (9.0, Level.ACTION, "low"),
        (-3.0, Level.ACTION, "low"),
        (30.0, Level.ALERT, "high"),
        (41.0, Level.ACTION, "high"),
    ],
)
def test_evaluate_table(value: float, level: Level, direction: str | None) -> None:
    bounds = Bounds(alert_low=12, action_low=10, alert_high=30 - 1e-9, action_high=40)
    verdict = evaluate(value, bounds)
    assert (verdict.level, verdict.direction) == (level, direction)


def test_facility_level_describe_names_target() -> None:
    level = FacilityLevel(kind="pressure", room="B1", index=3)
    assert level.describe() == "limits[3] (room B1, pressure, any)"


def test_particle_limits_take_no_delay() -> None:
    block = '[[limits]]\ngrade = "B"\nkind = "particles"\ndelay_s = 600'
    with pytest.raises(LimitTooLooseError, match="particle limits take no delay"):
        parse_facility(_facility(block))


def test_temperature_design_code_range_is_a_default_not_a_binding_limit() -> None:
    """GB 50457's 20–24 °C applies where the process sets nothing (GMP Art. 170 lets it)."""
    block = '[[limits]]\nroom = "B1"\nkind = "temperature"\naction_low = 18.0\naction_high = 22.0'
    probe = '[[monitors]]\ncode = "B1-T"\nroom = "B1"\nkind = "temperature"\ninterval_s = 60\n'
    text = _facility(probe + block)
    facility = parse_facility(text)
    cn = load_limit_set("CN-GMP-2010")
    spec = MonitorSpec(code="B1-T", room="B1", grade="B", kind="temperature")
    bounds = resolve_monitor_limits(cn, spec, facility.levels).for_reading("", "at_rest")
    assert (bounds.action_low, bounds.action_high) == (18.0, 22.0)
    assert evaluate(18.2, bounds).level is Level.ALERT  # derived alert band 18.4–21.6
    assert evaluate(21.0, bounds).level is Level.OK
    default = resolve_monitor_limits(cn, spec, []).for_reading("", "at_rest")
    assert (default.action_low, default.action_high) == (20.0, 24.0)
