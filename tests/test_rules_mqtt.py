"""Rules beyond "value above limit", through a real broker: pressure inversion, sensor validity."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from sqlalchemy import Engine
from sqlmodel import select

from tests.conftest import MIN_FACILITY, operate
from tests.factories import T0, particles, scalar, topic
from tests.mqtt_helpers import publish_all, running_ingester, wait_until
from tracker.core.audit import AuditEvent
from tracker.core.db import unit_of_work
from tracker.core.errors import InvalidInputError
from tracker.facility.file import parse_facility
from tracker.facility.inhibits import add_inhibit, list_inhibits
from tracker.facility.load import load_facility
from tracker.facility.models import Monitor, list_monitors
from tracker.monitoring.excursions import list_excursions
from tracker.monitoring.readings import Reading
from tracker.monitoring.rules.recurrence import Span, recurrence_spans
from tracker.wire.broker import LocalBroker

VALIDITY_FACILITY = (
    MIN_FACILITY.read_text(encoding="utf-8").replace(
        'code = "T-B1-DP"\nroom = "T-B1"\nkind = "pressure"\nreference = "T-C1"\ninterval_s = 10\n',
        'code = "T-B1-DP"\nroom = "T-B1"\nkind = "pressure"\nreference = "T-C1"\ninterval_s = 10\n'
        "range_low = -50.0\nrange_high = 50.0\n",
    )
    + """
[[monitors]]
code = "T-C1-PC2"
room = "T-C1"
kind = "particles"
interval_s = 60
calibration_due = 2026-11-19
"""
)


def dp(seq: int, second: int, pa: float) -> tuple[str, bytes]:
    return topic("T-B1", "T-B1-DP"), scalar(
        monitor="T-B1-DP", kind="pressure", seq=seq, ts=T0 + timedelta(seconds=second), value=pa, unit="Pa"
    )


def ingest(engine: Engine, broker: LocalBroker, messages: list[tuple[str, bytes]]) -> None:
    with running_ingester(engine, broker) as ingester:
        sent = publish_all(broker, messages)
        wait_until(lambda: ingester.stats.received >= sent, what=f"{sent} messages")


def test_pressure_inversion_is_an_action_at_once_while_a_door_dip_is_ignored(
    facility_engine: Engine, broker: LocalBroker
) -> None:
    values = {s: 15.0 for s in range(0, 600, 10)}
    values.update({s: 5.0 for s in range(100, 140, 10)})  # door open 30 s: under the 60 s delay
    values[300] = -2.0  # airflow reversal, one reading
    ingest(
        facility_engine, broker, [dp(i + 1, s, v) for i, s in enumerate(sorted(values)) for v in [values[s]]]
    )
    with unit_of_work(facility_engine) as s:
        (ex,) = list_excursions(s, type_="limit")
    assert (ex["monitor"], ex["level"], ex["direction"]) == ("T-B1-DP", "action", "low")
    assert ex["started_at"] == "2026-11-20T00:05:00Z"
    assert ex["ended_at"] == "2026-11-20T00:05:10Z"
    assert ex["peak"] == -2.0


def test_invalid_readings_are_stored_with_reason_and_never_close_an_excursion(
    engine: Engine, broker: LocalBroker
) -> None:
    with unit_of_work(engine) as s:
        load_facility(s, parse_facility(VALIDITY_FACILITY), actor="test")
    pc = [
        (
            topic("T-B1", "T-B1-PC"),
            particles(
                seq=m + 1,
                ts=T0 + timedelta(minutes=m),
                c05=200 if m in (3, 4, 10) else 10,
                status="calibration" if 5 <= m < 10 else "ok",
            ),
        )
        for m in range(15)
    ]
    overdue = [
        (
            topic("T-C1", "T-C1-PC2"),
            particles(monitor="T-C1-PC2", seq=m + 1, ts=T0 + timedelta(minutes=m), c05=99999),
        )
        for m in range(5)
    ]
    ingest(engine, broker, [*pc, *overdue, dp(1, 0, 80.0), dp(2, 10, 15.0)])
    with unit_of_work(engine) as s:
        ids = dict(s.exec(select(Monitor.code, Monitor.id)).all())
        reasons = dict(
            s.exec(
                select(Reading.seq, Reading.invalid_reason).where(
                    Reading.monitor_id == ids["T-B1-PC"], Reading.channel == "0.5"
                )
            ).all()
        )
        assert {seq for seq, r in reasons.items() if r} == {6, 7, 8, 9, 10}
        assert reasons[6] == "status_calibration"
        levels = set(
            s.exec(
                select(Reading.level, Reading.invalid_reason).where(
                    Reading.monitor_id.in_([ids["T-B1-DP"], ids["T-C1-PC2"]])
                )
            ).all()
        )
        assert levels == {
            ("invalid", "outside_instrument_range"),
            ("ok", None),
            ("invalid", "calibration_overdue"),
        }
        excursions = list_excursions(s, type_="limit")
    # minutes 3-4 out of limit, 5-9 invalid (they prove nothing), 10 out again, 11-13 in limit:
    # one episode from 00:03 to 00:11, not two
    assert [(e["monitor"], e["started_at"], e["ended_at"], e["readings"]) for e in excursions] == [
        ("T-B1-PC", "2026-11-20T00:03:00Z", "2026-11-20T00:11:00Z", 3)
    ]


def test_calibration_status_read_out(engine: Engine) -> None:
    with unit_of_work(engine) as s:
        load_facility(s, parse_facility(VALIDITY_FACILITY), actor="test")
        rows = {r["monitor"]: r for r in list_monitors(s, today=date(2026, 10, 25))}
        assert rows["T-C1-PC2"]["calibration"] == "due_soon"
        assert rows["T-B1-PC"]["calibration"] == "unknown"
        later = {r["monitor"]: r for r in list_monitors(s, today=date(2026, 11, 20))}
        assert later["T-C1-PC2"]["calibration"] == "overdue"


def test_an_inhibit_flags_readings_and_expires_by_itself(
    facility_engine: Engine, broker: LocalBroker
) -> None:
    with unit_of_work(facility_engine) as s:
        row = add_inhibit(
            s,
            monitor_code="T-B1-PC",
            starts_at=T0 + timedelta(minutes=10),
            ends_at=T0 + timedelta(minutes=20),
            reason="WO-1187 counter service",
            actor="eng.zhao",
        )
    burst = {12, 13, 14, 25, 26}  # inside the window, then after it has expired
    ingest(
        facility_engine,
        broker,
        [
            (
                topic("T-B1", "T-B1-PC"),
                particles(seq=m + 1, ts=T0 + timedelta(minutes=m), c05=200 if m in burst else 10),
            )
            for m in range(30)
        ],
    )
    with unit_of_work(facility_engine) as s:
        flagged = s.exec(
            select(Reading.seq).where(Reading.invalid_reason == "inhibited", Reading.channel == "0.5")
        ).all()
        assert sorted(flagged) == list(range(11, 21))  # minutes 10-19: stored, flagged
        (ex,) = list_excursions(s, type_="limit")  # only the burst after the window
        assert ex["started_at"] == "2026-11-20T00:25:00Z"
        assert [i["id"] for i in list_inhibits(s, active_at=T0 + timedelta(minutes=15))] == [row.id]
        assert list_inhibits(s, active_at=T0 + timedelta(minutes=20)) == []  # expired
        with pytest.raises(InvalidInputError, match="at most 14 days"):
            add_inhibit(
                s,
                room_code="T-B1",
                starts_at=T0,
                ends_at=T0 + timedelta(days=30),
                reason="forever",
                actor="eng.zhao",
            )
        actions = [e.action for e in s.exec(select(AuditEvent))]
        assert "inhibit.add" in actions


def test_three_alert_excursions_make_an_adverse_trend(facility_engine: Engine, broker: LocalBroker) -> None:
    # 60 counts in 28.3 L = 2,120/m³: above the 1,760 alert, below the 3,520 action (B, at rest)
    alerts = {60, 61, 180, 181, 300, 301, 420}  # four alert episodes, 2 h apart
    ingest(
        facility_engine,
        broker,
        [
            (
                topic("T-B1", "T-B1-PC"),
                particles(seq=m + 1, ts=T0 + timedelta(minutes=m), c05=60 if m in alerts else 10),
            )
            for m in range(480)
        ],
    )
    with unit_of_work(facility_engine) as s:
        limits = list_excursions(s, type_="limit")
        (trend,) = list_excursions(s, type_="adverse_trend")
    assert [e["level"] for e in limits] == ["alert"] * 4
    assert trend["monitor"] == "T-B1-PC"
    assert trend["level"] == "action"
    assert trend["started_at"] == "2026-11-20T01:00:00Z"  # the first of the alerts
    assert trend["ended_at"] == "2026-11-20T07:00:00Z"  # extended by the fourth
    assert trend["readings"] == 4


def test_recurrent_low_five_micron_counts_in_an_a_zone(facility_engine: Engine, broker: LocalBroker) -> None:
    # 100 L samples: one ≥5.0 µm particle is 10/m³, within the grade A limit of 20
    counts = {5: 1, 6: 1, 20: 1, 24: 1, 28: 1, 50: 1}
    ingest(
        facility_engine,
        broker,
        [
            (
                topic("T-B1-BSC", "T-BSC-PC"),
                particles(
                    monitor="T-BSC-PC",
                    seq=m + 1,
                    ts=T0 + timedelta(minutes=m),
                    c05=3,
                    c50=counts.get(m, 0),
                    volume=100,
                ),
            )
            for m in range(60)
        ],
    )
    with unit_of_work(facility_engine) as s:
        assert list_excursions(s, type_="limit") == []
        spans = [
            (e["started_at"], e["ended_at"], e["readings"], e["level"])
            for e in list_excursions(s, type_="recurrence")
        ]
    assert spans == [
        ("2026-11-20T00:05:00Z", "2026-11-20T00:06:00Z", 2, "action"),  # two consecutive
        ("2026-11-20T00:20:00Z", "2026-11-20T00:29:00Z", 3, "action"),  # three of ten
    ]  # minute 50 alone: none


def test_recurrence_spans_pure() -> None:
    t = [T0 + timedelta(minutes=m) for m in range(12)]
    counted = {0, 4, 8}
    spans = recurrence_spans([(x, i in counted) for i, x in enumerate(t)])
    assert spans == [Span(t[0], t[9], 3)]
    assert recurrence_spans([(x, i == 3) for i, x in enumerate(t)]) == []


def test_recurrence_covers_grade_b_in_operation(facility_engine: Engine, broker: LocalBroker) -> None:
    """Issue 14 item 6: Annex 1 第十条(六) names grade A and B without a state condition, so
    repeated ≥ 5.0 µm counts in grade B in operation are a recurrence too (an alert in B), even
    far below the 2,900 /m³ limit."""
    operate(facility_engine, "T-B1", T0, T0 + timedelta(minutes=30))
    ingest(
        facility_engine,
        broker,
        [
            (topic("T-B1", "T-B1-PC"), particles(seq=m + 1, ts=T0 + timedelta(minutes=m), c05=1500, c50=5))
            for m in range(20)
        ],
    )
    with unit_of_work(facility_engine) as s:
        (rec,) = list_excursions(s, type_="recurrence")
        assert (rec["level"], rec["state"], rec["room"]) == ("alert", "in_operation", "T-B1")
        assert list_excursions(s, type_="limit") == []
