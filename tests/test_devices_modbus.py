"""A Modbus TCP particle counter (pymodbus's server on loopback, the Lighthouse REMOTE register
map) polled by ``tracker poll``'s poller: instrument time stamps, backfill after a 10-minute
outage, every record exactly once, faults stored as status, the same excursions as JSON."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import Engine
from sqlmodel import select

from simulators.modbus_counter import SimulatedCounter
from tests.device_helpers import facility_text, json_path_excursions, limit_excursions, stored
from tracker.core.db import get_engine, unit_of_work
from tracker.core.timeutil import utcnow
from tracker.facility.file import parse_facility
from tracker.facility.load import load_facility
from tracker.ingest.modbus import ModbusPoller, record_status
from tracker.monitoring.device_events import DeviceEvent
from tracker.monitoring.excursions import list_excursions
from tracker.wire.registermap import CounterRecord, decode_record, encode_record, load_register_map

REGMAP = load_register_map("lighthouse-remote")
FAULT = 1 << REGMAP.data_bits["laser"]


@pytest.fixture
def counter() -> Iterator[SimulatedCounter]:
    sim = SimulatedCounter(REGMAP).start()
    yield sim
    sim.stop()


def sample(at, c05: int, c50: int = 0, status: int = 0) -> CounterRecord:
    """A 1-minute sample (28.3 L at 1 CFM); the counter's channels 0.3/0.5/1.0/5.0 µm."""
    return CounterRecord(int(at.timestamp()), 60, status, (c05 * 3, c05, c05 // 2 + c50, c50, 0, 0, 0, 0))


def test_register_map_round_trip_and_status() -> None:
    record = CounterRecord(
        1_763_596_800, 60, FAULT | (1 << REGMAP.data_bits["threshold_high"]), (9, 8, 7, 6, 5, 4, 3, 70_000)
    )
    assert decode_record(REGMAP, encode_record(REGMAP, record)) == record
    assert record_status(REGMAP, record) == "fault"
    # the counter's own threshold alarm is not our verdict: the counts are judged, not suppressed
    assert (
        record_status(REGMAP, CounterRecord(1, 60, 1 << REGMAP.data_bits["threshold_high"], (0,) * 8)) == "ok"
    )
    assert (
        record_status(REGMAP, CounterRecord(1, 60, 1 << REGMAP.data_bits["sampler"], (0,) * 8)) == "stopped"
    )
    assert "REMOTE 3104P" in REGMAP.source


def test_outage_backfill_exactly_once_by_instrument_time(
    engine: Engine, counter: SimulatedCounter, clone_db
) -> None:
    with unit_of_work(engine) as s:
        load_facility(s, parse_facility(facility_text(counter.port)), actor="test")
    json_engine = get_engine(clone_db(str(engine.url.render_as_string(hide_password=False))))
    start = (utcnow() - timedelta(minutes=40)).replace(second=0, microsecond=0)
    minute = [start + timedelta(minutes=m) for m in range(20)]
    # grade C at rest: 0.5 µm action 352 000 /m³ = 9 962 in 28.3 L; minutes 8-10 above it,
    # minute 11 above it too but the laser failed (a fault, never a breach)
    counts = {8: 12_000, 9: 15_000, 10: 11_000, 11: 50_000}
    records = [sample(minute[m], counts.get(m, 40), status=FAULT if m == 11 else 0) for m in range(16)]
    poller = ModbusPoller(engine)
    with unit_of_work(engine) as s:
        poller.refresh(s)
    (device,) = poller.counters.values()

    for r in records[:5]:  # minutes 0-4: polled as they come
        counter.add(r)
    poller.poll(device)
    assert len(stored(engine, "T-C1-PC")) == 5

    counter.stop()  # the network goes down for ten minutes; the instrument keeps sampling
    for r in records[5:15]:
        counter.add(r)
    assert poller.poll(device).stored == 0
    with unit_of_work(engine) as s:
        kinds = [e.kind for e in s.exec(select(DeviceEvent)).all()]
        gaps = [e for e in list_excursions(s, type_="data_gap") if e["monitor"] == "T-C1-PC"]
    assert kinds == ["backfill", "unreachable"]  # the first poll read five records back
    assert len(gaps) == 1
    assert gaps[0]["ended_at"] is None

    counter.start()  # back on the same port; one more sample since
    counter.add(records[15])
    outcome = poller.poll(device)
    assert outcome.stored == 11
    rows = stored(engine, "T-C1-PC")
    assert [seq for seq, *_ in rows] == [int(m.timestamp()) * 1000 for m in minute[:16]]
    assert [t for _, t, *_ in rows] == minute[:16]  # the instrument's stamps, not the poller's
    assert rows[11][2] == "fault"
    assert rows[8][2] == "ok"
    assert rows[11][3]["source"]["protocol"] == "modbus_tcp"
    assert rows[11][3]["source"]["registers"] == encode_record(REGMAP, records[11])

    # polled again, restarted, or the whole buffer read twice: nothing is stored twice
    assert poller.poll(device).stored == 0
    restarted = ModbusPoller(engine)
    with unit_of_work(engine) as s:
        restarted.refresh(s)
    assert restarted.poll(next(iter(restarted.counters.values()))).stored == 0
    restarted._cursor_s = lambda _session, _monitor: 0  # forget where it was: read everything
    again = restarted.poll(next(iter(restarted.counters.values())))
    assert (again.stored, again.duplicates) == (0, 16)
    assert len(stored(engine, "T-C1-PC")) == 16

    # the excursion is the one the JSON path opens from the same samples
    polled = limit_excursions(engine, "T-C1-PC")
    assert polled
    assert polled[0][:4] == (
        "limit",
        "0.5",
        "action",
        minute[8].isoformat().replace("+00:00", "Z"),
    )
    as_json = [
        {"ts": m, "c05": r.counts[1], "c50": r.counts[3], "vol": 28.3, "status": record_status(REGMAP, r)}
        for m, r in zip(minute, records, strict=False)
    ]
    assert json_path_excursions(json_engine, "T-C1-PC", "T-C1", as_json) == polled
    with unit_of_work(engine) as s:
        kinds = sorted({e.kind for e in s.exec(select(DeviceEvent)).all()})
    assert kinds == ["backfill", "unreachable"]


GRADE_B = """
[[modbus]]
monitor = "T-B1-PC"
host = "127.0.0.1"
port = {port}
unit_id = 1
model = "lighthouse-remote"
channels = {{ "0.5" = 2, "5.0" = 4 }}
poll_s = 1
"""


def test_a_grade_b_counter_over_the_action_limit_opens_the_json_paths_excursion(
    engine: Engine, counter: SimulatedCounter, clone_db
) -> None:
    """The issue's must-show for this path: a grade B counter (room T-B1, at rest) over its action
    limit through Modbus opens the same excursion as the same samples through the JSON contract."""
    from tests.conftest import MIN_FACILITY

    text = MIN_FACILITY.read_text(encoding="utf-8") + GRADE_B.format(port=counter.port)
    with unit_of_work(engine) as s:
        load_facility(s, parse_facility(text), actor="test")
    json_engine = get_engine(clone_db(str(engine.url.render_as_string(hide_password=False))))
    start = (utcnow() - timedelta(minutes=20)).replace(second=0, microsecond=0)
    minute = [start + timedelta(minutes=m) for m in range(8)]
    # grade B at rest: 0.5 µm action 3 520 /m³ ≈ 100 counts in 28.3 L; minutes 3-4 far above it
    counts = {3: 900, 4: 1_200}
    records = [sample(minute[m], counts.get(m, 5)) for m in range(8)]
    for r in records:
        counter.add(r)
    poller = ModbusPoller(engine)
    with unit_of_work(engine) as s:
        poller.refresh(s)
    (device,) = poller.counters.values()
    assert poller.poll(device).stored == 8
    polled = limit_excursions(engine, "T-B1-PC")
    assert polled
    assert polled[0][:4] == ("limit", "0.5", "action", minute[3].isoformat().replace("+00:00", "Z"))
    as_json = [
        {"ts": m, "c05": r.counts[1], "c50": r.counts[3], "vol": 28.3, "status": record_status(REGMAP, r)}
        for m, r in zip(minute, records, strict=False)
    ]
    assert json_path_excursions(json_engine, "T-B1-PC", "T-B1", as_json) == polled
