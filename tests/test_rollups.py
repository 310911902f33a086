"""Hourly rollups equal the aggregates recomputed from raw readings over a simulated week,
with late data and a re-evaluation along the way."""

from __future__ import annotations

import random
from datetime import timedelta
from pathlib import Path

from sqlalchemy import Engine, func
from sqlmodel import select

from simulators.facility import load_facility as load_sim_facility
from simulators.publisher import generate
from tests.factories import T0
from tracker.core.db import unit_of_work
from tracker.facility.file import read_facility_file
from tracker.facility.load import load_facility
from tracker.facility.models import Monitor
from tracker.ingest.processor import BatchProcessor, InboundMessage
from tracker.monitoring.intake import Intake
from tracker.monitoring.readings import Reading
from tracker.monitoring.reevaluate import record_room_state
from tracker.monitoring.rollups import RollupHourly, bin_of, percentile, verify_rollups

SMALL = Path(__file__).resolve().parent.parent / "simulators" / "data" / "test-small.toml"


def test_rollups_match_raw_readings_over_a_simulated_week(engine: Engine) -> None:
    with unit_of_work(engine) as s:
        load_facility(s, read_facility_file(SMALL), actor="test")
    received = T0 + timedelta(days=30)
    messages = [
        InboundMessage(o.topic, o.payload, received)
        for o in generate(load_sim_facility(SMALL), None, seed=3, start=T0, duration=timedelta(days=7))
        if o.kind == "reading"
    ]
    late = [m for i, m in enumerate(messages) if 20_000 <= i < 21_000]  # backfilled at the end
    on_time = [m for i, m in enumerate(messages) if not 20_000 <= i < 21_000]
    random.Random(5).shuffle(late)
    processor = BatchProcessor(Intake())
    for i in range(0, len(on_time), 1000):
        with unit_of_work(engine) as s:
            processor.process(s, on_time[i : i + 1000])
    with unit_of_work(engine) as s:  # a processing session recorded afterwards: re-evaluated
        record_room_state(
            s,
            room_code="T-B1",
            state="in_operation",
            effective_at=T0 + timedelta(days=2, hours=3),
            actor="qa",
        )
        record_room_state(
            s, room_code="T-B1", state="at_rest", effective_at=T0 + timedelta(days=2, hours=7), actor="qa"
        )
    with unit_of_work(engine) as s:
        processor.process(s, late)

    with unit_of_work(engine) as s:
        kinds = dict(s.exec(select(Monitor.id, Monitor.kind)).all())
        assert verify_rollups(s, kinds, T0, T0 + timedelta(days=7)) == []
        hours = s.exec(select(func.count()).select_from(RollupHourly)).one()
        assert hours >= 7 * 24 * len(kinds) * 0.99
        # one hour by hand: count, min, max of the B room's temperature probe
        probe = next(i for i, k in kinds.items() if k == "temperature")
        hour = T0 + timedelta(days=3, hours=5)
        (row,) = s.exec(  # one room state all hour: one row
            select(RollupHourly).where(RollupHourly.monitor_id == probe, RollupHourly.hour == hour)
        ).all()
        values = s.exec(
            select(Reading.value).where(
                Reading.monitor_id == probe,
                Reading.event_time >= hour,
                Reading.event_time < hour + timedelta(hours=1),
            )
        ).all()
        assert (row.count, row.vmin, row.vmax) == (len(values), min(values), max(values))
        assert abs(row.vsum - sum(values)) < 1e-6
    assert len(messages) > 150_000


def test_percentiles_from_the_histogram() -> None:
    hist: dict[int, int] = {}
    for v in range(1, 101):  # 1 … 100 %RH, one reading each
        b = bin_of("humidity", float(v))
        hist[b] = hist.get(b, 0) + 1
    assert percentile("humidity", hist, 0.95) == 95.5  # within one 0.5 %RH bin
    assert percentile("humidity", {}, 0.95) is None
    assert bin_of("particles", 0) == 0
    assert bin_of("particles", 3520) == 1 + 14  # 10^(14/4) ≈ 3162 ≤ 3520 < 5623
