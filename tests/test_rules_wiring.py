"""The rule wiring (issue 13): a rule in ``Intake.rules`` gets every call of the ``Rule``
protocol without further wiring — forgotten for a monitor another worker wrote, on a refresh
unless it says it survives one, and after a rollback; run after each batch — and
re-evaluation drives the rules ``build_rules`` makes."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from datetime import timedelta

import pytest
from sqlalchemy import Engine

from tests.conftest import operate
from tests.factories import T0, particles, topic
from tracker.core.db import unit_of_work
from tracker.ingest.processor import BatchProcessor, InboundMessage
from tracker.monitoring import reevaluate as reevaluate_module
from tracker.monitoring.intake import Intake
from tracker.monitoring.reevaluate import record_room_state
from tracker.monitoring.rules.base import Reevaluation, StoredBatch
from tracker.monitoring.rules.ruleset import Rules, build_rules

RECEIVED = T0 + timedelta(days=1)


class Recorder:
    """A rule that only records how it is called."""

    def __init__(self, *, survives_refresh: bool) -> None:
        self.survives_refresh = survives_refresh
        self.calls: list[tuple[str, object]] = []

    def forget(self, monitor_ids: Collection[int] | None = None) -> None:
        self.calls.append(("forget", None if monitor_ids is None else set(monitor_ids)))

    def after_batch(self, session, batch: StoredBatch) -> None:
        self.calls.append(("after_batch", set(batch.stamps)))

    def after_reevaluation(self, session, change: Reevaluation) -> None:
        self.calls.append(("after_reevaluation", set(change.first_change)))


def pc(seq: int, minute: float, c05: int) -> InboundMessage:
    payload = particles(monitor="T-B1-PC", seq=seq, ts=T0 + timedelta(minutes=minute), c05=c05)
    return InboundMessage(topic=topic("T-B1", "T-B1-PC"), payload=payload, received_at=RECEIVED)


def store(engine: Engine, processor: BatchProcessor, batch: list[InboundMessage]) -> None:
    with unit_of_work(engine) as s:
        processor.process(s, batch)


@pytest.mark.parametrize("survives", [False, True])
def test_a_rule_in_the_tuple_is_forgotten_and_run_everywhere(facility_engine: Engine, survives: bool) -> None:
    intake = Intake(close_after=3, writer="a")
    recorder = Recorder(survives_refresh=survives)
    intake.rules = (*intake.rules, recorder)
    mine, other = BatchProcessor(intake), BatchProcessor(Intake(close_after=3, writer="b"))
    store(facility_engine, mine, [pc(1, 0, 10)])
    monitor = intake.registry.by_code[("T-SITE", "T-B1-PC")].id
    assert recorder.calls[-1] == ("after_batch", {monitor})

    recorder.calls.clear()
    store(facility_engine, other, [pc(2, 1, 10)])  # another worker writes the monitor
    store(facility_engine, mine, [pc(3, 2, 10)])
    assert recorder.calls == [("forget", {monitor}), ("after_batch", {monitor})]

    recorder.calls.clear()
    operate(facility_engine, "T-B1", T0 + timedelta(minutes=30), T0 + timedelta(minutes=40))
    store(facility_engine, mine, [pc(4, 50, 10)])  # refreshes the room-state timeline first
    assert recorder.calls == [*([] if survives else [("forget", None)]), ("after_batch", {monitor})]

    recorder.calls.clear()
    intake.forget()  # after a rollback
    assert recorder.calls == [("forget", None)]


def test_reevaluation_runs_the_rules_of_build_rules(
    facility_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = Recorder(survives_refresh=False)

    def with_recorder(**kwargs) -> Rules:
        rules = build_rules(**kwargs)
        return dataclasses.replace(rules, all=(*rules.all, recorder))

    monkeypatch.setattr(reevaluate_module, "build_rules", with_recorder)
    processor = BatchProcessor(Intake(close_after=3))
    store(facility_engine, processor, [pc(1, 5, 2830), pc(2, 6, 10)])  # 100,000 /m³: action at rest
    with unit_of_work(facility_engine) as s:
        record_room_state(
            s, room_code="T-B1", state="in_operation", effective_at=T0 + timedelta(minutes=1), actor="test"
        )
    monitor = processor.intake.registry.by_code[("T-SITE", "T-B1-PC")].id
    assert recorder.calls == [("after_reevaluation", {(monitor, "0.5"), (monitor, "5.0")})]
