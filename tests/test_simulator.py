"""Pure tests of the simulator (no broker): signals, scenarios, wire payloads and the oracle."""

from __future__ import annotations

import itertools
import json
from collections import defaultdict
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from simulators import payloads, signals
from simulators.__main__ import main
from simulators.facility import Facility, load_facility, parse_facility
from simulators.publisher import (
    Outgoing,
    default_start,
    dry_run,
    generate,
    resolve_start,
)
from simulators.scenario import (
    Scenario,
    load_scenario,
    parse_duration,
    parse_scenario,
    room_in_operation,
)

DATA = Path(__file__).resolve().parents[1] / "simulators" / "data"
START = datetime(2026, 11, 20, tzinfo=UTC)


@pytest.fixture(scope="module")
def small() -> Facility:
    return load_facility(DATA / "test-small.toml")


@pytest.fixture(scope="module")
def cpc() -> Facility:
    return load_facility(DATA / "nn-cpc.toml")


@pytest.fixture(scope="module")
def day(cpc: Facility) -> Scenario:
    return load_scenario(DATA / "day-in-the-life.toml", cpc)


@pytest.fixture(scope="module")
def day_messages(cpc: Facility, day: Scenario) -> list[Outgoing]:
    assert day.start is not None
    return list(generate(cpc, day, seed=1, start=day.start, duration=day.duration))


def scenario(
    facility: Facility,
    *,
    duration: str = "2h",
    operations: tuple = (),
    events: tuple = (),
    expect: tuple = (),
) -> Scenario:
    """A scenario built from dicts, as if read from TOML."""
    return parse_scenario(
        {
            "scenario": {"name": "t", "duration": duration},
            "operations": list(operations),
            "events": list(events),
            "expect": list(expect),
        },
        facility,
    )


def run(
    facility: Facility, scen: Scenario | None = None, *, seed: int = 1, hours: float = 2
) -> list[Outgoing]:
    return list(generate(facility, scen, seed=seed, start=START, duration=timedelta(hours=hours)))


def body(out: Outgoing) -> dict[str, Any]:
    return json.loads(out.payload)


def readings_of(
    messages: list[Outgoing], monitor: str, kinds: tuple[str, ...] = ("reading", "backfill")
) -> list[Outgoing]:
    return [m for m in messages if m.monitor == monitor and m.kind in kinds]


# --------------------------------------------------------------------------- facility


def test_nn_cpc_is_a_plausible_cell_preparation_centre(cpc: Facility) -> None:
    assert cpc.site.code == "NN-CPC"
    assert cpc.site.timezone == "Asia/Shanghai"
    assert len(cpc.rooms) >= 14
    assert len(cpc.monitors) >= 55
    codes = {r.code for r in cpc.rooms}
    for room in cpc.rooms:
        assert room.background is None or room.background in codes
        if room.grade == "A":
            assert room.background is not None
            assert any(m.room == room.code and m.kind == "particles" for m in cpc.monitors)
        else:
            kinds = {m.kind for m in cpc.monitors if m.room == room.code}
            assert {"temperature", "humidity"} <= kinds, room.code
    grades = {r.code: r.grade for r in cpc.rooms}
    limited = {lim.monitor for lim in cpc.limits if lim.kind == "pressure"}
    for m in cpc.monitors:
        if m.kind == "pressure":
            assert m.reference in codes
            assert m.reference != m.room
            assert m.code in limited, f"{m.code} has no pressure limit row"
            assert m.setpoint is not None
            assert m.setpoint >= 8
            if grades[m.room] != grades[m.reference]:
                assert m.setpoint >= 13, m.code
        if m.kind == "particles":
            assert m.channels == ("0.5", "5.0")
            assert m.interval_s == 60
        else:
            assert m.interval_s == 10


def test_every_grade_boundary_has_a_pressure_monitor(cpc: Facility) -> None:
    pairs = {
        (cpc.room(m.room).grade, cpc.room(m.reference or "").grade)
        for m in cpc.monitors
        if m.kind == "pressure"
    }
    assert {("B", "C"), ("C", "D"), ("D", "CNC")} <= pairs


def test_temperature_and_humidity_levels_are_inside_the_design_bands(cpc: Facility) -> None:
    bands = {
        ("temperature", "AB"): (20, 24),
        ("humidity", "AB"): (45, 60),
        ("temperature", "CD"): (18, 26),
        ("humidity", "CD"): (45, 65),
    }
    for lim in cpc.limits:
        if lim.kind in ("temperature", "humidity"):
            low, high = bands[(lim.kind, "AB" if lim.grade in ("A", "B") else "CD")]
            assert low <= (lim.action_low or low) <= (lim.alert_low or low)
            assert (lim.alert_high or high) <= (lim.action_high or high) <= high
            assert lim.delay_s == 600


def test_small_facility(small: Facility) -> None:
    assert small.site.code == "T-SITE"
    assert [r.code for r in small.rooms] == ["T-B1", "T-B1-BSC", "T-C1", "T-D1"]
    assert small.room("T-B1-BSC").background == "T-B1"
    assert small.monitor("T-BSC-PC").sample_volume_l == 100.0
    assert small.monitor("T-C1-PC").sample_volume_l == 28.3
    assert small.monitor("T-B1-DP").reference == "T-C1"
    assert small.monitor("T-B1-T").calibration_due is not None


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["monitors"][0].update(kind="pressure", interval_s=10), "needs reference"),
        (lambda d: d["rooms"][1].update(background="NOPE"), "background 'NOPE'"),
        (lambda d: d["monitors"][0].update(room="NOPE"), r"monitors\[0\] \(M1\): room 'NOPE'"),
        (lambda d: d["monitors"][0].update(channels=["1.0"]), "channels"),
        (lambda d: d["monitors"][0].update(colour="red"), "unknown key"),
        (lambda d: d["rooms"].append(dict(d["rooms"][0])), "duplicate code 'R1'"),
        (
            lambda d: d.update(limits=[{"grade": "B", "room": "R1", "kind": "pressure", "alert_low": 12}]),
            "exactly one of",
        ),
        (
            lambda d: d.update(limits=[{"grade": "B", "kind": "pressure", "alert_low": 9, "action_low": 10}]),
            r"limits\[0\]: levels",
        ),
    ],
)
def test_facility_errors_name_the_entry(mutate: Any, message: str) -> None:
    data: dict[str, Any] = {
        "site": {"code": "S", "name": "s"},
        "rooms": [
            {"code": "R1", "name": "r", "grade": "B"},
            {"code": "R2", "name": "z", "grade": "A", "background": "R1"},
        ],
        "monitors": [{"code": "M1", "room": "R1", "kind": "particles", "interval_s": 60}],
    }
    parse_facility(data)
    mutate(data)
    with pytest.raises(ValueError, match=message):
        parse_facility(data)


# --------------------------------------------------------------------------- signals


def test_generation_is_deterministic_per_seed(small: Facility) -> None:
    first = run(small, seed=7)
    assert first == run(small, seed=7)
    other = run(small, seed=8)
    assert [m.payload for m in first] != [m.payload for m in other]
    assert [m.topic for m in first] == [m.topic for m in other]


def test_adding_a_monitor_does_not_change_the_others(small: Facility) -> None:
    fewer = replace(small, monitors=small.monitors[1:])
    full = [m for m in run(small) if m.monitor != small.monitors[0].code]
    assert [(m.topic, m.payload) for m in full] == [(m.topic, m.payload) for m in run(fewer)]


def test_seq_is_contiguous_and_ts_whole_utc_seconds(small: Facility) -> None:
    messages = run(small, hours=3)
    times = [m.sim_time for m in messages]
    assert times == sorted(times)
    for monitor in small.monitors:
        mine = readings_of(messages, monitor.code)
        seqs = [body(m)["seq"] for m in mine]
        assert seqs == list(range(1, len(mine) + 1))
        assert len(mine) == 3 * 3600 // monitor.interval_s
        for m in mine:
            data = body(m)
            assert data["schema"] == "gmp.reading/1"
            assert data["ts"] == m.sim_time.strftime("%Y-%m-%dT%H:%M:%SZ")
            assert data["kind"] == monitor.kind
            assert m.retain is False
        gaps = {(b.sim_time - a.sim_time).total_seconds() for a, b in itertools.pairwise(mine)}
        assert gaps == {monitor.interval_s}


def test_statuses_online_at_start_and_offline_at_end(small: Facility) -> None:
    messages = run(small, hours=1)
    head, tail = messages[: len(small.monitors)], messages[-len(small.monitors) :]
    assert {(m.payload, m.retain, m.kind) for m in head} == {(b"online", True, "status")}
    assert {(m.payload, m.retain, m.kind) for m in tail} == {(b"offline", True, "status")}
    assert {m.topic for m in head} == {f"gmp/T-SITE/{m.room}/{m.code}/status" for m in small.monitors}
    assert head[0].sim_time == START


def test_particle_counts_are_cumulative_and_grade_typical(small: Facility) -> None:
    scen = scenario(small, operations=[{"room": "T-B1", "start": "30m", "end": "90m"}])
    messages = run(small, scen)
    for code in ("T-B1-PC", "T-BSC-PC", "T-C1-PC"):
        for m in readings_of(messages, code):
            data = body(m)
            counts = data["counts"]
            assert counts["0.5"] >= counts["5.0"] >= 0
            in_op = START + timedelta(minutes=30) < m.sim_time < START + timedelta(minutes=90)
            if code == "T-BSC-PC" or (code == "T-B1-PC" and not in_op):
                assert counts["5.0"] == 0  # one particle in 28.3 L is already 35/m³
            if code == "T-BSC-PC":
                assert data["sample"] == {"volume": 100.0, "unit": "L"}
    b_op = [
        body(m)["counts"]["0.5"]
        for m in readings_of(messages, "T-B1-PC")
        if START + timedelta(minutes=31) < m.sim_time < START + timedelta(minutes=89)
    ]
    assert 1200 < sum(b_op) / len(b_op) < 2200  # 60,000/m³ × 28.3 L ≈ 1,698


def test_particle_counts_helper_keeps_larger_sizes_inside_smaller() -> None:
    rng = signals.monitor_rng(1, "X")
    for _ in range(200):
        counts = signals.particle_counts(rng, {"0.5": 500_000, "5.0": 400_000}, 28.3, ("0.5", "5.0"))
        assert counts["0.5"] >= counts["5.0"]


def test_door_openings_are_short_and_only_during_operations(cpc: Facility) -> None:
    scen = scenario(cpc, duration="6h", operations=[{"room": "B01", "start": "1h", "end": "5h"}])
    messages = list(generate(cpc, scen, seed=3, start=START, duration=timedelta(hours=6)))
    for code in ("B01-DP1", "B01-DP2"):
        setpoint = cpc.monitor(code).setpoint or 0
        values = [(m.sim_time - START, body(m)["value"]) for m in readings_of(messages, code)]
        low = [t for t, v in values if v < setpoint - 2]
        assert low, f"no door openings on {code}"
        assert all(timedelta(hours=1) < t < timedelta(hours=5) for t in low)
        assert _longest_run(values, lambda v, s=setpoint: v < s - 2) <= 20
    b02 = [body(m)["value"] for m in readings_of(messages, "B02-DP2")]
    assert min(b02) > 13.0


def _longest_run(values: list[tuple[timedelta, float]], bad: Any) -> float:
    """Longest span (s) from the first to the last of consecutive bad readings."""
    longest, first = 0.0, None
    for t, v in values:
        if bad(v):
            first = t if first is None else first
            longest = max(longest, (t - first).total_seconds())
        else:
            first = None
    return longest


def test_healthy_day_has_no_excursion(small: Facility) -> None:
    scen = scenario(
        small,
        duration="24h",
        operations=[
            {"room": "T-B1-BSC", "start": "2h", "end": "6h"},
            {"room": "T-C1", "start": "8h", "end": "10h"},
        ],
    )
    for seed in (1, 2):
        messages = list(generate(small, scen, seed=seed, start=START, duration=timedelta(hours=24)))
        assert evaluate(small, scen, messages, START) == []


# --------------------------------------------------------------------------- scenario faults


def test_offline_with_backfill_loses_nothing(small: Facility) -> None:
    scen = scenario(
        small,
        events=[{"at": "10m", "type": "offline", "monitor": "T-B1-PC", "duration": "30m", "backfill": True}],
    )
    messages = run(small, scen)
    statuses = [
        (m.sim_time - START, m.payload) for m in messages if m.monitor == "T-B1-PC" and m.kind == "status"
    ]
    assert statuses[1:3] == [(timedelta(minutes=10), b"offline"), (timedelta(minutes=40), b"online")]
    mine = readings_of(messages, "T-B1-PC")
    assert sorted(body(m)["seq"] for m in mine) == list(range(1, 121))
    back = [m for m in mine if m.kind == "backfill"]
    assert len(back) == 30
    assert {m.sim_time for m in back} == {START + timedelta(minutes=40)}
    for m in back:
        ts = datetime.fromisoformat(body(m)["ts"].replace("Z", "+00:00"))
        assert START + timedelta(minutes=10) <= ts < START + timedelta(minutes=40)
    online_at = messages.index(
        next(m for m in messages if m.monitor == "T-B1-PC" and m.payload == b"online" and m.sim_time > START)
    )
    assert messages[online_at + 1].kind == "backfill"
    live = [m for m in mine if m.kind == "reading"]
    assert all(
        not (START + timedelta(minutes=10) <= m.sim_time < START + timedelta(minutes=40)) for m in live
    )


def test_offline_without_backfill_loses_readings_but_seq_advances(small: Facility) -> None:
    scen = scenario(
        small,
        events=[{"at": "10m", "type": "offline", "monitor": "T-B1-PC", "duration": "30m", "backfill": False}],
    )
    mine = readings_of(run(small, scen), "T-B1-PC")
    seqs = [body(m)["seq"] for m in mine]
    assert len(seqs) == 90
    assert seqs[-1] == 120
    assert seqs[9] == 10
    assert seqs[10] == 41
    assert all(m.kind == "reading" for m in mine)


def test_duplicates_repeat_exact_bytes(small: Facility) -> None:
    scen = scenario(small, events=[{"at": "20m", "type": "duplicate", "monitor": "T-B1-DP", "count": 3}])
    messages = run(small, scen)
    dups = [m for m in messages if m.kind == "duplicate"]
    originals = [m for m in readings_of(messages, "T-B1-DP") if m.sim_time <= START + timedelta(minutes=20)][
        -3:
    ]
    assert [(d.topic, d.payload) for d in dups] == [(o.topic, o.payload) for o in originals]
    assert all(d.sim_time == START + timedelta(minutes=20) for d in dups)


def test_bursts_drops_and_holds_shape_the_signal(small: Facility) -> None:
    scen = scenario(
        small,
        events=[
            {
                "at": "10m",
                "type": "particle_burst",
                "monitor": "T-C1-PC",
                "duration": "5m",
                "concentrations": {"0.5": 800_000, "5.0": 600},
            },
            {"at": "30m", "type": "pressure_drop", "monitor": "T-B1-DP", "duration": "5m", "value": -2.0},
            {"at": "50m", "type": "hold", "monitor": "T-B1-T", "duration": "20m", "value": 24.8},
        ],
    )
    messages = run(small, scen)

    def within(m: Outgoing, start: int, minutes: int) -> bool:
        return START + timedelta(minutes=start) <= m.sim_time < START + timedelta(minutes=start + minutes)

    burst = [body(m)["counts"] for m in readings_of(messages, "T-C1-PC") if within(m, 10, 5)]
    assert len(burst) == 5
    assert all(c["0.5"] * 1000 / 28.3 > 700_000 for c in burst)
    drop = [body(m)["value"] for m in readings_of(messages, "T-B1-DP") if within(m, 30, 5)]
    assert len(drop) == 30
    assert max(drop) < 0
    hold = [body(m)["value"] for m in readings_of(messages, "T-B1-T") if within(m, 50, 20)]
    assert len(hold) == 20
    assert min(hold) > 24.5


def test_unit_changes_convert_correctly(small: Facility) -> None:
    scen = scenario(
        small,
        events=[
            {"at": "1h", "type": "units", "monitor": "T-B1-PC", "unit": "ft^3"},
            {"at": "1h", "type": "units", "monitor": "T-BSC-PC", "unit": "m^3"},
            {"at": "1h", "type": "units", "monitor": "T-B1-DP", "unit": "inH2O"},
            {"at": "1h", "type": "units", "monitor": "T-C1-DP", "unit": "mmH2O"},
            {"at": "1h", "type": "units", "monitor": "T-B1-T", "unit": "degF"},
        ],
    )
    messages = run(small, scen)
    after = START + timedelta(hours=1)

    def units(code: str) -> set[tuple[str, float]]:
        out = set()
        for m in readings_of(messages, code):
            data = body(m)
            if m.sim_time >= after:
                sample = data.get("sample")
                out.add(
                    (sample["unit"], sample["volume"])
                    if sample
                    else (
                        data["unit"],
                        round(payloads.to_canonical(data["kind"], data["value"], data["unit"]), 1),
                    )
                )
            else:
                assert data.get("unit", data.get("sample", {}).get("unit")) in ("L", "Pa", "degC")
        return out

    assert units("T-B1-PC") == {("ft^3", 0.999405)}
    assert units("T-BSC-PC") == {("m^3", 0.1)}
    for code in ("T-B1-DP", "T-C1-DP"):
        assert {round(v) for _, v in units(code)} <= {14, 15, 16}
    assert all(21 < v < 23 for _, v in units("T-B1-T"))


@pytest.mark.parametrize(
    ("kind", "value", "unit", "expected"),
    [
        ("particles", 28.3, "ft^3", 0.999405),
        ("particles", 28.3, "m^3", 0.0283),
        ("particles", 100.0, "L", 100.0),
        ("pressure", 15.2, "inH2O", 0.061022),
        ("pressure", 15.2, "mmH2O", 1.55),
        ("pressure", 15.2, "hPa", 0.152),
        ("pressure", 15.2, "mbar", 0.152),
        ("pressure", 15.2, "Pa", 15.2),
        ("temperature", 22.0, "degF", 71.6),
        ("temperature", 22.0, "K", 295.15),
        ("humidity", 50.5, "percent", 50.5),
    ],
)
def test_convert(kind: str, value: float, unit: str, expected: float) -> None:
    assert payloads.convert(kind, value, unit) == pytest.approx(expected, abs=1e-9)
    assert payloads.to_canonical(kind, expected, unit) == pytest.approx(value, rel=2e-4)


def test_malformed_variants_look_as_specified(small: Facility) -> None:
    variants = [
        ("bad_json", "T-B1-PC"),
        ("schema", "T-B1-DP"),
        ("unknown_monitor", None),
        ("room_mismatch", "T-C1-PC"),
        ("bad_unit", "T-B1-DP"),
        ("future_timestamp", "T-B1-H"),
        ("out_of_range", "T-B1-H"),
        ("out_of_range", "T-B1-PC"),
        ("out_of_range", "T-B1-T"),
        ("too_large", None),
    ]
    events = [
        {"at": f"{10 + i}m", "type": "malformed", "variant": v, "count": 2, **({"monitor": m} if m else {})}
        for i, (v, m) in enumerate(variants)
    ]
    messages = run(small, scenario(small, events=events))
    bad = [m for m in messages if m.kind == "malformed"]
    assert len(bad) == 2 * len(variants)
    assert [m.seq for m in bad] == [900_000_001 + i for i in range(len(bad))]
    by_variant: dict[str, list[Outgoing]] = defaultdict(list)
    for m in bad:
        by_variant[m.variant or ""].append(m)
        assert m.retain is False
    with pytest.raises(json.JSONDecodeError):
        json.loads(by_variant["bad_json"][0].payload)
    assert "seq" not in body(by_variant["schema"][0])
    ghost = by_variant["unknown_monitor"][0]
    assert ghost.topic.startswith("gmp/T-SITE/")
    assert ghost.topic.endswith("/ZZ-GHOST")
    assert body(ghost)["monitor"] == "ZZ-GHOST"
    moved = by_variant["room_mismatch"][0]
    assert body(moved)["monitor"] == "T-C1-PC"
    assert moved.topic.split("/")[2] != "T-C1"
    assert moved.topic.endswith("/T-C1-PC")
    assert body(by_variant["bad_unit"][0])["unit"] == "furlong"
    future = by_variant["future_timestamp"][0]
    assert body(future)["ts"] == (future.sim_time + timedelta(days=3650)).strftime("%Y-%m-%dT%H:%M:%SZ")
    impossible = [body(m) for m in by_variant["out_of_range"]]
    assert {"value": 140.0, "unit": "percent"}.items() <= impossible[0].items()
    assert min(impossible[2]["counts"].values()) < 0
    assert impossible[4]["value"] < -273.15
    large = by_variant["too_large"][0]
    assert len(large.payload) == 70 * 1024
    assert body(large)["seq"] >= 900_000_000
    for m in bad:
        if m.variant != "bad_json":
            data = body(m)
            assert data.get("seq", 900_000_000) >= 900_000_000
    for monitor in small.monitors:  # real seqs untouched
        seqs = [body(m)["seq"] for m in readings_of(messages, monitor.code)]
        assert seqs == list(range(1, len(seqs) + 1))


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (
            {
                "events": [
                    {
                        "at": "1h",
                        "type": "particle_burst",
                        "monitor": "NOPE",
                        "duration": "5m",
                        "concentrations": {"0.5": 1},
                    }
                ]
            },
            r"events\[0\] \(particle_burst at 1h\): monitor 'NOPE' is not a monitor of T-SITE",
        ),
        (
            {
                "events": [
                    {
                        "at": "1h",
                        "type": "particle_burst",
                        "monitor": "T-B1-DP",
                        "duration": "5m",
                        "concentrations": {"0.5": 1},
                    }
                ]
            },
            "T-B1-DP is a pressure monitor",
        ),
        (
            {
                "events": [
                    {
                        "at": "1h",
                        "type": "particle_burst",
                        "monitor": "T-B1-PC",
                        "duration": "5m",
                        "concentrations": {"0.5": 10, "5.0": 20},
                    }
                ]
            },
            "cumulative",
        ),
        ({"events": [{"at": "1h", "type": "explode", "monitor": "T-B1-PC"}]}, "type must be one of"),
        (
            {"events": [{"at": "soon", "type": "hold", "monitor": "T-B1-T", "duration": "5m", "value": 25}]},
            r"events\[0\] \(hold at soon\): at: not a duration",
        ),
        (
            {"events": [{"at": "3h", "type": "hold", "monitor": "T-B1-T", "duration": "5m", "value": 25}]},
            "outside the scenario",
        ),
        (
            {"events": [{"at": "1h", "type": "hold", "monitor": "T-B1-H", "duration": "5m", "value": 140}]},
            "within 0..100",
        ),
        (
            {"events": [{"at": "1h", "type": "units", "monitor": "T-B1-T", "unit": "inH2O"}]},
            "'inH2O' is not a temperature unit",
        ),
        ({"events": [{"at": "1h", "type": "malformed", "variant": "gibberish"}]}, "variant must be"),
        (
            {"events": [{"at": "1h", "type": "malformed", "variant": "out_of_range", "monitor": "T-B1-DP"}]},
            "out_of_range needs",
        ),
        ({"events": [{"at": "1h", "type": "duplicate", "monitor": "T-B1-DP", "count": 0}]}, "count must be"),
        (
            {
                "events": [
                    {
                        "at": "1h",
                        "type": "hold",
                        "monitor": "T-B1-T",
                        "duration": "5m",
                        "value": 25,
                        "colour": "red",
                    }
                ]
            },
            "unknown key",
        ),
        (
            {
                "events": [
                    {"at": "1h", "type": "offline", "monitor": "T-B1-T", "duration": "30m"},
                    {"at": "1h10m", "type": "offline", "monitor": "T-B1-T", "duration": "5m"},
                ]
            },
            r"events\[1\]: overlaps events\[0\] on T-B1-T",
        ),
        (
            {"operations": [{"room": "T-X", "start": "1h", "end": "2h"}]},
            r"operations\[0\] \(T-X\): room 'T-X'",
        ),
        ({"operations": [{"room": "T-B1", "start": "1h", "end": "30m"}]}, "end must be after"),
        (
            {
                "expect": [
                    {
                        "monitor": "T-B1-PC",
                        "channel": "0.5",
                        "level": "action",
                        "state": "in_operation",
                        "start": "1h",
                    }
                ]
            },
            r"expect\[0\] \(T-B1-PC\): state 'in_operation' but room T-B1 is at_rest",
        ),
        (
            {"expect": [{"monitor": "T-B1-DP", "level": "severe", "state": "at_rest", "start": "1h"}]},
            "level must be",
        ),
    ],
)
def test_scenario_errors_name_the_entry(small: Facility, entry: dict, message: str) -> None:
    data = {"scenario": {"name": "bad", "duration": "2h"}, **entry}
    with pytest.raises(ValueError, match=message):
        parse_scenario(data, small)


def test_parse_duration() -> None:
    assert parse_duration("90s") == timedelta(seconds=90)
    assert parse_duration("5m") == timedelta(minutes=5)
    assert parse_duration("1h30m") == timedelta(minutes=90)
    assert parse_duration("1d2h") == timedelta(hours=26)
    assert parse_duration(45) == timedelta(seconds=45)
    for bad in ("", "5", "1.5h", "m", "-5m", "2h 30m"):
        with pytest.raises(ValueError, match="not a duration"):
            parse_duration(bad)


def test_operation_in_a_zone_puts_its_background_in_operation(small: Facility) -> None:
    scen = scenario(small, operations=[{"room": "T-B1-BSC", "start": "1h", "end": "2h"}])
    t = timedelta(minutes=90)
    assert room_in_operation(small, scen.operations, "T-B1", t)
    assert room_in_operation(small, scen.operations, "T-B1-BSC", t)
    assert not room_in_operation(small, scen.operations, "T-C1", t)
    assert not room_in_operation(small, scen.operations, "T-B1", timedelta(hours=2))


def test_default_start_never_runs_ahead_of_the_wall_clock() -> None:
    now = datetime(2026, 11, 22, 12, 0, 0, 500_000, tzinfo=UTC)
    day_ = timedelta(hours=24)
    assert default_start(now, day_, 60) == datetime(2026, 11, 21, 12, 24, tzinfo=UTC)
    assert default_start(now, day_, 0) == datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
    assert default_start(now, day_, float("inf")) == datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
    assert default_start(now, day_, 1) == datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
    explicit = datetime(2026, 1, 1, tzinfo=UTC)
    assert resolve_start(explicit, None, duration=day_, speed=60, now=now) == explicit
    with pytest.raises(ValueError, match="timezone"):
        resolve_start(datetime(2026, 1, 1), None, duration=day_, speed=60, now=now)  # noqa: DTZ001


# --------------------------------------------------------------------------- day in the life


def test_day_in_the_life_validates_and_documents_itself(cpc: Facility, day: Scenario) -> None:
    assert day.start == START
    assert day.duration == timedelta(hours=24)
    assert {op.room for op in day.operations} == {"B01", "B02", "C02"}
    variants = {e.variant for e in day.events if e.type == "malformed"}
    assert variants == set(payloads.MALFORMED_VARIANTS)
    assert {e.unit for e in day.events if e.type == "units"} == {"ft^3", "inH2O", "degF"}
    for burst in (e for e in day.events if e.type == "particle_burst"):
        assert burst.duration >= timedelta(minutes=3)


def test_day_in_the_life_produces_exactly_the_expected_excursions(
    cpc: Facility, day: Scenario, day_messages: list[Outgoing]
) -> None:
    found = evaluate(cpc, day, day_messages, START)
    expected = sorted((e.monitor, e.channel, e.level, e.state) for e in day.expect)
    assert sorted((f.monitor, f.channel, f.level, f.state) for f in found) == expected
    starts = {(e.monitor, e.channel): START + e.start for e in day.expect}
    for f in found:
        monitor = cpc.monitor(f.monitor)
        lag = f.start - starts[(f.monitor, f.channel)]
        assert timedelta(0) <= lag <= timedelta(seconds=monitor.interval_s)


def test_day_in_the_life_wire_faults(day_messages: list[Outgoing]) -> None:
    result_kinds = defaultdict(int)
    for m in day_messages:
        result_kinds[m.kind] += 1
    assert result_kinds["backfill"] == 30
    assert result_kinds["duplicate"] == 13
    assert result_kinds["malformed"] == 21
    seqs: dict[str, list[int]] = defaultdict(list)
    payload_by_key: dict[tuple[str, int], bytes] = {}
    for m in day_messages:
        if m.kind in ("reading", "backfill"):
            seqs[m.monitor or ""].append(m.seq or 0)
            payload_by_key[(m.monitor or "", m.seq or 0)] = m.payload
        elif m.kind == "duplicate":
            assert payload_by_key[(m.monitor or "", m.seq or 0)] == m.payload
    for monitor, values in seqs.items():
        assert sorted(values) == list(range(1, len(values) + 1)), monitor


def test_dry_run_summary(cpc: Facility, day: Scenario) -> None:
    result = dry_run(cpc, day, seed=1, start=START, duration=timedelta(hours=3))
    assert result.readings["B01-PC1"].count == 180
    assert result.readings["B01-PC1"].last_seq == 180
    assert result.malformed == {"bad_json": 3, "schema": 2, "unknown_monitor": 2}
    assert result.duplicates == 3
    assert [e.monitor for e in result.expected] == ["B01-PC1", "B01-PC1"]
    assert result.expected[0].start == START + timedelta(hours=2)
    assert result.expected[0].room == "B01"
    assert "expected excursions: 2" in result.summary()


def test_cli_dry_run(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "--facility",
            str(DATA / "test-small.toml"),
            "--seed",
            "3",
            "--duration",
            "30m",
            "--speed",
            "0",
            "--dry-run",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "readings: 510 from 7 monitors" in out


def test_cli_reports_bad_scenario(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[scenario]\nname = "x"\nduration = "1h"\n[[operations]]\nroom = "NOPE"\nstart = "0s"\nend = "5m"\n'
    )
    code = main(["--facility", str(DATA / "test-small.toml"), "--scenario", str(bad), "--dry-run"])
    assert code == 2
    assert "operations[0] (NOPE)" in capsys.readouterr().err


# --------------------------------------------------------------------------- reference evaluator
# An independent, deliberately simple reading of DESIGN §4 used as the scenario oracle:
# CN GMP 2010 particle limits (alert = half the limit) unless a facility row says otherwise,
# the most specific facility row (monitor > room > grade) for everything else, and an episode
# when readings stay beyond a bound from the first to a later reading for at least delay_s.

GMP_2010 = {
    ("A", "at_rest"): {"0.5": 3520, "5.0": 20},
    ("A", "in_operation"): {"0.5": 3520, "5.0": 20},
    ("B", "at_rest"): {"0.5": 3520, "5.0": 29},
    ("B", "in_operation"): {"0.5": 352_000, "5.0": 2900},
    ("C", "at_rest"): {"0.5": 352_000, "5.0": 2900},
    ("C", "in_operation"): {"0.5": 3_520_000, "5.0": 29_000},
    ("D", "at_rest"): {"0.5": 3_520_000, "5.0": 29_000},
}


@dataclass(frozen=True)
class Episode:
    monitor: str
    channel: str | None
    level: str
    state: str
    start: datetime


def _bounds(
    facility: Facility, monitor_code: str, channel: str | None, state: str
) -> dict[str, float | None] | None:
    monitor = facility.monitor(monitor_code)
    room = facility.room(monitor.room)
    bounds: dict[str, float | None] = dict.fromkeys(("alert_low", "alert_high", "action_low", "action_high"))
    if monitor.kind == "particles":
        limit = GMP_2010.get((room.grade, state), {}).get(channel or "")
        if limit is None:
            return None
        bounds.update(alert_high=limit / 2, action_high=limit)
    for selector, value in (("grade", room.grade), ("room", room.code), ("monitor", monitor.code)):
        for lim in facility.limits:
            if (
                getattr(lim, selector) == value
                and lim.kind == monitor.kind
                and lim.channel in (None, channel)
                and lim.state in ("any", state)
            ):
                bounds.update({k: getattr(lim, k) for k in bounds if getattr(lim, k) is not None})
                bounds["delay_s"] = lim.delay_s
    return bounds


def _level(value: float, b: dict[str, float | None]) -> str | None:
    if (b["action_high"] is not None and value > b["action_high"]) or (
        b["action_low"] is not None and value < b["action_low"]
    ):
        return "action"
    if (b["alert_high"] is not None and value > b["alert_high"]) or (
        b["alert_low"] is not None and value < b["alert_low"]
    ):
        return "alert"
    return None


def _canonical_series(messages: list[Outgoing]) -> dict[tuple[str, str | None], list[tuple[datetime, float]]]:
    """Deduplicated readings by (monitor, channel) in event-time order, canonical units."""
    seen: set[tuple[str, int]] = set()
    series: dict[tuple[str, str | None], list[tuple[datetime, float]]] = defaultdict(list)
    for m in messages:
        if m.kind not in ("reading", "backfill", "duplicate"):
            continue
        data = body(m)
        if (data["monitor"], data["seq"]) in seen:
            continue
        seen.add((data["monitor"], data["seq"]))
        ts = datetime.fromisoformat(data["ts"].replace("Z", "+00:00"))
        if data["kind"] == "particles":
            litres = payloads.to_canonical("particles", data["sample"]["volume"], data["sample"]["unit"])
            for channel, count in data["counts"].items():
                series[(data["monitor"], channel)].append((ts, count * 1000 / litres))
        else:
            value = payloads.to_canonical(data["kind"], data["value"], data["unit"])
            series[(data["monitor"], None)].append((ts, value))
    for values in series.values():
        values.sort()
    return series


def evaluate(facility: Facility, scen: Scenario, messages: list[Outgoing], start: datetime) -> list[Episode]:
    """Excursion episodes in the messages, by the reference rules above."""
    episodes = []
    for (code, channel), values in _canonical_series(messages).items():
        room = facility.monitor(code).room
        run: list[tuple[datetime, str, str]] = []
        for ts, value in [*values, (None, None)]:
            level = None
            if ts is not None:
                state = (
                    "in_operation"
                    if room_in_operation(facility, scen.operations, room, ts - start)
                    else "at_rest"
                )
                bounds = _bounds(facility, code, channel, state)
                level = _level(value, bounds) if bounds else None
            if level is not None:
                run.append((ts, level, state))
                continue
            if run:
                episode = _episode(facility, code, channel, run)
                if episode:
                    episodes.append(episode)
                run = []
    return episodes


def _episode(
    facility: Facility, code: str, channel: str | None, run: list[tuple[datetime, str, str]]
) -> Episode | None:
    """Open an episode when the run lasts the delay; action if the action part does too."""
    delay = timedelta(seconds=int(_bounds(facility, code, channel, run[0][2]).get("delay_s") or 0))  # type: ignore[union-attr]
    if run[-1][0] - run[0][0] < delay:
        return None
    action = [ts for ts, level, _ in run if level == "action"]
    level = "action" if action and action[-1] - action[0] >= delay else "alert"
    return Episode(code, channel, level, run[0][2], run[0][0])
