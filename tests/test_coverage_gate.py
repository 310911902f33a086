"""Monitoring that did not happen counts at the release gate (issue 14 item 5; China GMP Annex 1
第十条): a step in a grade A or B room during which a particle monitor of the room sent nothing
— or a room with no particle monitor at all — is a review item QA assesses before the batch is
QA-reviewed or released (no broker: the intake directly)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine

from tests.factories import T0, as_, assess_coverage, minutes, particles, topic
from tracker.core.db import unit_of_work
from tracker.core.errors import ConflictError
from tracker.facility.file import parse_facility
from tracker.facility.load import load_facility
from tracker.facility.models import get_site
from tracker.ingest.processor import BatchProcessor, InboundMessage
from tracker.monitoring.intake import Intake
from tracker.quality.batches.linking import sync_links
from tracker.quality.batches.release import gate_reasons, qa_review, release, sign_production
from tracker.quality.batches.review import review_items
from tracker.quality.batches.steps import complete_batch, create_batch, end_step, get_batch, start_step

MIN_FACILITY = Path(__file__).parent / "data" / "facility-min.toml"


def feed(engine: Engine, room: str, monitor: str, at_minutes, *, status=lambda m: "ok", intake=None) -> None:
    received = T0 + timedelta(days=1)
    messages = [
        InboundMessage(
            topic(room, monitor),
            particles(monitor=monitor, seq=int(m) + 1, ts=T0 + minutes(m), c05=10, status=status(m)),
            received,
        )
        for m in at_minutes
    ]
    with unit_of_work(engine) as s:
        BatchProcessor(intake or Intake()).process(s, messages)


def batch_with_step(engine: Engine, number: str, room: str, start_min: float, end_min: float) -> int:
    with unit_of_work(engine) as s:
        batch = create_batch(
            s,
            actor=as_(engine, "op1"),
            site=get_site(s),
            number=number,
            product="CAR-T",
            donor_id=f"D-{number}",
        )
        step = start_step(
            s,
            actor=as_(engine, "op1"),
            batch=batch,
            name="processing",
            room_code=room,
            start=T0 + minutes(start_min),
            open_processing=True,
        )
    with unit_of_work(engine) as s:
        end_step(s, signer=as_(engine, "op1"), step_id=step.id, end=T0 + minutes(end_min))
    return step.id


def items_of(engine: Engine, number: str, kind: str | None = None):
    with unit_of_work(engine) as s:
        batch = get_batch(s, number)
        sync_links(s, batch=batch)
        return [i for i in review_items(s, batch) if kind is None or i.kind == kind]


def test_a_grade_b_step_without_readings_is_gated_until_qa_assesses_it(people_engine: Engine) -> None:
    engine = people_engine
    step = batch_with_step(engine, "CT-1", "T-B1", 0, 30)
    with unit_of_work(engine) as s:
        batch = get_batch(s, "CT-1")
        complete_batch(s, actor=as_(engine, "op1"), batch=batch)
    with unit_of_work(engine) as s:
        sign_production(s, signer=as_(engine, "prod"), batch=get_batch(s, "CT-1"))
    (item,) = items_of(engine, "CT-1")
    key = "coverage:T-B1-PC:2026-11-20T00:00:00Z"
    assert (item.kind, item.key, item.monitor, item.room, item.step_id, item.exposed) == (
        "coverage_gap",
        key,
        "T-B1-PC",
        "T-B1",
        step,
        "unassessed",
    )
    assert (item.start, item.end) == (T0, T0 + minutes(30))
    assert item.to_json()["invalid_reasons"] == "no_readings"
    with unit_of_work(engine) as s:
        (reason,) = gate_reasons(s, get_batch(s, "CT-1"))
    assert reason == (
        f"particle monitor T-B1-PC in room T-B1 sent nothing during step {step} "
        f"(2026-11-20T00:00:00Z – 2026-11-20T00:30:00Z): assess {key}"
    )
    assert reason.zh == (
        f"工序 {step} 期间（2026-11-20T00:00:00Z – 2026-11-20T00:30:00Z）房间 T-B1 的悬浮粒子监测点 "
        f"T-B1-PC 无数据：请评估 {key}"
    )
    with unit_of_work(engine) as s, pytest.raises(ConflictError) as refused:
        qa_review(s, signer=as_(engine, "qa1"), batch=get_batch(s, "CT-1"))
    assert refused.value.reasons == [reason]
    assert assess_coverage(engine, "CT-1", reason="counter out for repair; settle plates clean") == [key]
    (item,) = items_of(engine, "CT-1")
    assert (item.exposed, item.detail["decided_by"]) == ("no", "qa1")
    with unit_of_work(engine) as s:
        assert gate_reasons(s, get_batch(s, "CT-1")) == []
        qa_review(s, signer=as_(engine, "qa1"), batch=get_batch(s, "CT-1"))
    with unit_of_work(engine) as s:
        assert release(s, signer=as_(engine, "qp1"), batch=get_batch(s, "CT-1")).status == "released"


def test_a_step_covered_at_the_monitor_interval_has_no_coverage_item(people_engine: Engine) -> None:
    engine = people_engine
    feed(engine, "T-B1-BSC", "T-BSC-PC", range(41))  # every 60 s, the counter's interval
    batch_with_step(engine, "CT-1", "T-B1-BSC", 0.5, 30.5)
    assert items_of(engine, "CT-1") == []
    with unit_of_work(engine) as s:
        assert gate_reasons(s, get_batch(s, "CT-1")) == []


def test_a_silence_longer_than_the_gap_rule_is_one_item_with_its_bounds(people_engine: Engine) -> None:
    engine = people_engine
    # the intake's own gap rule set wider (the override the bench uses), so that no data gap
    # excursion stands for the silence: the release gate's coverage check is the only net
    wide = Intake(gap_factor=20)
    feed(engine, "T-B1", "T-B1-PC", [m for m in range(41) if not 10 <= m < 15], intake=wide)
    step = batch_with_step(engine, "CT-1", "T-B1", 0, 30)
    (item,) = items_of(engine, "CT-1")
    assert (item.kind, item.monitor, item.step_id) == ("coverage_gap", "T-B1-PC", step)
    assert (item.start, item.end) == (T0 + minutes(9), T0 + minutes(15))  # last reading → next
    assert item.key == "coverage:T-B1-PC:2026-11-20T00:09:00Z"
    # the counter's buffer comes back in part: four intervals of silence are still a hole, three
    # (the site's gap factor, 3 × 60 s) are not
    feed(engine, "T-B1", "T-B1-PC", [10, 11], intake=wide)
    (item,) = items_of(engine, "CT-1")
    assert (item.start, item.end) == (T0 + minutes(11), T0 + minutes(15))
    feed(engine, "T-B1", "T-B1-PC", [12], intake=wide)
    assert items_of(engine, "CT-1") == []


def test_a_silence_the_gap_rule_found_is_one_item_not_two(people_engine: Engine) -> None:
    engine = people_engine
    feed(engine, "T-B1", "T-B1-PC", [m for m in range(41) if not 10 <= m < 15])
    batch_with_step(engine, "CT-1", "T-B1", 0, 30)
    (item,) = items_of(engine, "CT-1")
    assert (item.kind, item.detail["type"]) == ("excursion", "data_gap")  # decided through its link
    assert (item.start, item.end) == (T0 + minutes(9), T0 + minutes(15))


def test_silence_at_the_start_and_end_of_a_step_are_holes(people_engine: Engine) -> None:
    engine = people_engine
    # the counter is switched on ten minutes into the step and stops ten minutes before its end
    feed(engine, "T-B1", "T-B1-PC", range(10, 21))
    batch_with_step(engine, "CT-1", "T-B1", 0, 30)
    bounds = [(i.start, i.end) for i in items_of(engine, "CT-1", "coverage_gap")]
    assert bounds == [(T0, T0 + minutes(10)), (T0 + minutes(20), T0 + minutes(30))]


def test_grade_c_and_d_steps_are_never_flagged(people_engine: Engine) -> None:
    engine = people_engine
    batch_with_step(engine, "CT-C", "T-C1", 0, 30)
    batch_with_step(engine, "CT-D", "T-D1", 0, 30)
    assert items_of(engine, "CT-C") == items_of(engine, "CT-D") == []


def test_a_grade_b_room_without_a_particle_monitor_is_flagged(people_engine: Engine) -> None:
    engine = people_engine
    text = MIN_FACILITY.read_text(encoding="utf-8")
    extra = '\n[[rooms]]\ncode = "T-B2"\nname = "灌装间"\nname_en = "Filling room"\ngrade = "B"\n'
    with unit_of_work(engine) as s:
        load_facility(
            s,
            parse_facility(text.replace("\n[[monitors]]", extra + "\n[[monitors]]", 1)),
            actor="admin",
            approver=as_(engine, "qa1"),
        )
    step = batch_with_step(engine, "CT-1", "T-B2", 0, 30)
    (item,) = items_of(engine, "CT-1")
    assert (item.kind, item.monitor, item.key) == (
        "coverage_gap",
        "",
        f"coverage:{step}:2026-11-20T00:00:00Z",
    )
    assert item.detail["invalid_reasons"] == "no_particle_monitor"
    with unit_of_work(engine) as s:
        (reason,) = gate_reasons(s, get_batch(s, "CT-1"))
    assert reason == f"step {step} in room T-B2 (grade A/B) has no particle monitor: assess {item.key}"
    assert reason.zh == f"工序 {step} 所在房间 T-B2（A/B 级）没有悬浮粒子监测点：请评估 {item.key}"


def test_fault_readings_are_an_invalid_period_not_a_coverage_hole(people_engine: Engine) -> None:
    engine = people_engine
    feed(engine, "T-B1", "T-B1-PC", range(41), status=lambda m: "fault" if 10 <= m < 20 else "ok")
    batch_with_step(engine, "CT-1", "T-B1", 0, 30)
    items = items_of(engine, "CT-1")
    assert items_of(engine, "CT-1", "coverage_gap") == []
    (invalid,) = [i for i in items if i.kind == "invalid_period"]
    assert (invalid.monitor, invalid.start, invalid.end) == ("T-B1-PC", T0 + minutes(10), T0 + minutes(19))
    assert "fault" in invalid.detail["invalid_reasons"]
