"""Monitoring that did not happen counts (issue 14 items 5 and 7): a value off the scale past an
action limit is an action, and calibration expiry is a day in the site's time zone."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Engine
from sqlmodel import select

from tests.test_rules_mqtt import VALIDITY_FACILITY, dp, ingest
from tracker.core.db import unit_of_work
from tracker.facility.file import parse_facility
from tracker.facility.load import load_facility
from tracker.monitoring.excursions import list_excursions
from tracker.monitoring.readings import Reading
from tracker.monitoring.snapshot import build_registry
from tracker.wire.broker import LocalBroker


def test_a_reversed_airflow_off_the_scale_is_an_action_not_merely_invalid(
    engine: Engine, broker: LocalBroker
) -> None:
    """The B room's sensor reads -50..50 Pa; -80 Pa is off its scale below the 10 Pa action
    floor (GMP 2010 Art. 48): the air flows the wrong way, whatever the exact value."""
    with unit_of_work(engine) as s:
        load_facility(s, parse_facility(VALIDITY_FACILITY), actor="test")
    ingest(engine, broker, [dp(1, 0, 15.0), dp(2, 10, -80.0), dp(3, 20, -80.0), dp(4, 30, 80.0)])
    with unit_of_work(engine) as s:
        judged = s.exec(
            select(Reading.seq, Reading.level, Reading.invalid_reason).order_by(Reading.seq)
        ).all()
        (ex,) = list_excursions(s, type_="limit")
    assert judged == [
        (1, "ok", None),
        (2, "action", None),
        (3, "action", None),
        (4, "invalid", "outside_instrument_range"),  # above the scale: no action limit up there
    ]
    assert (ex["monitor"], ex["level"], ex["direction"], ex["limit"]) == ("T-B1-DP", "action", "low", 10.0)


def test_calibration_expiry_is_judged_in_the_site_time_zone(engine: Engine) -> None:
    """Due 2026-11-19 (the last valid day): 2026-11-19 17:00 UTC is already the 20th in Beijing."""
    with unit_of_work(engine) as s:
        load_facility(s, parse_facility(VALIDITY_FACILITY), actor="test")
        entry = build_registry(s).lookup("T-SITE", "T-C1-PC2")
    assert entry.invalid_reason(10.0, "ok", datetime(2026, 11, 19, 15, 59, tzinfo=UTC)) is None
    assert (
        entry.invalid_reason(10.0, "ok", datetime(2026, 11, 19, 16, 0, tzinfo=UTC)) == "calibration_overdue"
    )


def test_a_grade_a_counter_in_fault_for_an_hour_is_a_data_gap(
    facility_engine: Engine, broker: LocalBroker
) -> None:
    """Invalid readings (fault, calibration overdue, inhibited) prove nothing: an hour of
    ``fault`` from the A zone's counter is a data gap, as if it had said nothing."""
    from tests.factories import particles, topic
    from tests.test_volume_recovery import at, iso
    from tests.test_volume_recovery import ingest as ingest_groups

    messages = [
        (
            topic("T-B1-BSC", "T-BSC-PC"),
            particles(
                monitor="T-BSC-PC", seq=m + 1, ts=at(m), c05=5, status="fault" if 10 <= m < 70 else "ok"
            ),
        )
        for m in range(80)
    ]
    ingest_groups(facility_engine, broker, messages)
    with unit_of_work(facility_engine) as s:
        gaps = [(e["monitor"], e["started_at"], e["ended_at"]) for e in list_excursions(s, type_="data_gap")]
    assert gaps == [("T-BSC-PC", iso(9), iso(70))]


def test_re_evaluation_keeps_the_previous_verdicts_and_shows_them(
    facility_engine: Engine, db_url: str
) -> None:
    """Issue 14 item 7: a re-judged reading keeps what it was (a history row, not an overwrite)."""
    import json
    from datetime import timedelta

    from tests.factories import T0, particles, topic
    from tests.test_cli import tracker
    from tracker.ingest.processor import BatchProcessor, InboundMessage
    from tracker.monitoring.intake import Intake
    from tracker.monitoring.readings import verdict_history
    from tracker.monitoring.reevaluate import record_room_state

    batch = [
        InboundMessage(
            topic("T-B1", "T-B1-PC"),
            particles(seq=m + 1, ts=T0 + timedelta(minutes=m), c05=2830 if 3 <= m < 6 else 10),
            T0 + timedelta(days=1),
        )
        for m in range(10)
    ]
    with unit_of_work(facility_engine) as s:
        BatchProcessor(Intake()).process(s, batch)
    with unit_of_work(facility_engine) as s:
        record_room_state(
            s, room_code="T-B1", state="in_operation", effective_at=T0, actor="qa.li", reason="log"
        )
    with unit_of_work(facility_engine) as s:
        monitor_id = s.exec(select(Reading.monitor_id).where(Reading.seq == 4)).first()
        history = verdict_history(s, monitor_id)
        now = {
            (r.seq, r.channel): r.level
            for r in s.exec(select(Reading).where(Reading.monitor_id == monitor_id))
        }
    before = {(h.seq, h.channel): (h.level, h.state) for h in history}
    assert before[(4, "0.5")] == ("action", "at_rest")  # what QA saw first
    assert now[(4, "0.5")] == "ok"  # judged again in operation
    assert all(h.cause.startswith("re-evaluation: room state in_operation") for h in history)
    shown = tracker("verdicts", "T-B1-PC", "--json", db_url=db_url)
    assert shown.returncode == 0, shown.stderr
    assert {"seq": 4, "channel": "0.5", "level": "action", "state": "at_rest"}.items() <= next(
        d for d in json.loads(shown.stdout) if (d["seq"], d["channel"]) == (4, "0.5")
    ).items()
