"""The breach forecast in ingest (issue 21): simulated scenarios through the real intake on the
test database. A slow pressure drift raises a ``predicted`` warning well before its alert and
action excursions; a day without change raises none; the warning never counts as a breach and
notifies only the ``[[notify]]`` rules that name it."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlmodel import select

from simulators.facility import load_facility as load_sim_facility
from simulators.publisher import generate
from simulators.scenario import load_scenario
from tracker.core.db import unit_of_work
from tracker.core.errors import FacilityFileError
from tracker.facility.file import parse_facility
from tracker.facility.load import load_facility
from tracker.facility.models import Site
from tracker.ingest.processor import BatchProcessor, InboundMessage
from tracker.monitoring.dashboard import floor_view
from tracker.monitoring.excursions import Excursion, count_by_level
from tracker.monitoring.intake import Intake
from tracker.monitoring.outbox import NotificationOutbox
from tracker.monitoring.readings import Reading

DATA = Path(__file__).resolve().parent.parent / "simulators" / "data"
FACILITY = DATA / "test-small.toml"
FORECAST_ON = "\n[rules]\nforecast_horizon_h = 4\n"


def load(engine: Engine, extra: str = FORECAST_ON) -> None:
    with unit_of_work(engine) as s:
        load_facility(s, parse_facility(FACILITY.read_text() + extra), actor="test")


def ingest(engine: Engine, scenario: str, monitors: set[str], *, hours: float, seed: int = 0) -> None:
    """The scenario's readings of ``monitors`` for its first ``hours``, a couple of minutes of
    data per batch (live, a batch holds the last 50 ms: the forecast fits every 5 min either way)."""
    facility = load_sim_facility(FACILITY)
    sc = load_scenario(DATA / f"{scenario}.toml", facility)
    assert sc.start is not None
    messages = [
        InboundMessage(topic=m.topic, payload=m.payload, received_at=m.sim_time + timedelta(seconds=1))
        for m in generate(facility, sc, seed=seed, start=sc.start, duration=timedelta(hours=hours))
        if m.kind == "reading" and m.monitor in monitors
    ]
    processor = BatchProcessor(Intake())
    size = 6 * len(monitors)
    for i in range(0, len(messages), size):
        with unit_of_work(engine) as s:
            processor.process(s, messages[i : i + size])


def excursions(engine: Engine, type_: str) -> list[Excursion]:
    with unit_of_work(engine) as s:
        rows = list(s.exec(select(Excursion).where(Excursion.type == type_).order_by(Excursion.started_at)))
        s.expunge_all()
    return rows


def escalated_at(engine: Engine, *, delay: timedelta):
    """When the readings first stayed at action for the limit's delay (the escalation's start)."""
    with unit_of_work(engine) as s:
        rows = s.exec(select(Reading.event_time, Reading.level).order_by(Reading.event_time)).all()
    start = None
    for at, level in rows:
        if level != "action":
            start = None
            continue
        start = start or at
        if at - start >= delay:
            return start
    raise AssertionError("never at action for the delay")


def test_a_slow_pressure_drift_is_warned_before_the_action_excursion(engine: Engine) -> None:
    load(engine)
    ingest(engine, "trending-drift", {"T-B1-DP"}, hours=13)  # −0.5 Pa/h from 2h: 10 Pa at ~12h
    limits = excursions(engine, "limit")
    alert_at = limits[0].started_at  # the first excursion (an alert episode escalates in place)
    action_at = escalated_at(engine, delay=timedelta(seconds=60))
    assert any(e.level == "action" for e in limits)
    warnings = excursions(engine, "predicted")
    assert warnings, "no predicted warning"
    first = warnings[0]
    assert first.kind == "pressure"
    assert first.direction == "low"
    assert first.started_at <= alert_at - timedelta(minutes=30)
    assert any(w.level == "action" and w.started_at <= action_at - timedelta(minutes=30) for w in warnings)
    assert "forecast band crosses" in (first.note or "")
    # it closed itself once the level it foresaw was reached (the limit excursion speaks then)
    assert first.status == "closed"
    assert first.ended_at is not None
    with unit_of_work(engine) as s:
        assert count_by_level(s) == {
            "alert": sum(e.level == "alert" for e in limits),
            "action": sum(e.level == "action" for e in limits),
        }


def test_a_day_without_change_raises_no_warning(engine: Engine) -> None:
    load(engine)
    ingest(engine, "trending-quiet", {"T-B1-DP", "T-C1-DP", "T-B1-T", "T-B1-H"}, hours=12)
    assert excursions(engine, "predicted") == []
    assert excursions(engine, "limit") == []


def test_the_forecast_is_off_unless_the_facility_file_switches_it_on(engine: Engine) -> None:
    load(engine, extra="")
    ingest(engine, "trending-drift", {"T-C1-DP"}, hours=7)  # −1 Pa/h from 3h: alert at ~6h
    assert excursions(engine, "limit")
    assert excursions(engine, "predicted") == []


@pytest.mark.parametrize("value", ["-1", "25", '"4"'])
def test_the_horizon_is_bounded(value: str) -> None:
    with pytest.raises(FacilityFileError, match="forecast_horizon_h"):
        parse_facility(FACILITY.read_text() + f"\n[rules]\nforecast_horizon_h = {value}\n")


def test_a_warning_notifies_only_rules_that_name_it_and_is_not_an_open_excursion(engine: Engine) -> None:
    rules = "".join(
        f'[[notify]]\nname = "{name}"\n{types}targets = ["json://127.0.0.1:9/{name}"]\n'
        for name, types in (("forecast", 'types = ["predicted"]\n'), ("breaches", ""))
    )
    load(engine, FORECAST_ON + rules)
    ingest(engine, "trending-drift", {"T-C1-DP"}, hours=5.5)  # alert (12 Pa) at ~6h
    warnings = excursions(engine, "predicted")
    assert warnings
    assert excursions(engine, "limit") == []
    with unit_of_work(engine) as s:
        queued = s.exec(select(NotificationOutbox.rule, NotificationOutbox.excursion_id)).all()
        view = floor_view(s, site=s.exec(select(Site)).one())
    assert {rule for rule, _ in queued} == {"forecast"}
    assert {x for _, x in queued} <= {w.id for w in warnings}
    assert all(room.open_excursions == 0 for room in view.rooms)


def test_switching_the_forecast_on_is_a_change_qa_approves(people_engine: Engine) -> None:
    """The minimal facility is loaded without the forecast; switching it on changes what raises
    warnings and alarms, so it needs QA's e-signature like any evaluation setting."""
    from tests.factories import as_
    from tracker.core.errors import PermissionDeniedError
    from tracker.facility.policy import compliance_of

    text = (Path(__file__).resolve().parent / "data" / "facility-min.toml").read_text() + FORECAST_ON
    with (
        pytest.raises(PermissionDeniedError, match=r"forecast_horizon_h: 0 → 4"),
        unit_of_work(people_engine) as s,
    ):
        load_facility(s, parse_facility(text), actor="admin")
    with unit_of_work(people_engine) as s:
        load_facility(s, parse_facility(text), actor="admin", approver=as_(people_engine, "qa1"))
    with unit_of_work(people_engine) as s:
        assert compliance_of(s, s.exec(select(Site)).one()).forecast_horizon_h == 4.0
