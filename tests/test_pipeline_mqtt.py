"""End to end over a real mosquitto: a scripted hour of readings yields exactly the expected
excursions, every valid reading is stored once, bad messages are quarantined by reason."""

from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest
from sqlalchemy import Engine, func
from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from tests.conftest import operate
from tests.factories import T0, iso, particles, scalar, topic
from tests.mqtt_helpers import publish_all, running_ingester, wait_until
from tracker.core.db import unit_of_work
from tracker.monitoring.excursions import list_excursions
from tracker.monitoring.quarantine import list_quarantine
from tracker.monitoring.readings import RawMessage, Reading
from tracker.monitoring.stats import ingest_stats
from tracker.wire.broker import LocalBroker


def _scripted() -> tuple[list[tuple[str, bytes]], list[tuple[str, bytes]], list[tuple[str, bytes]]]:
    """(live stream, backfill published after it, malformed), all for the test facility."""
    live: list[tuple[str, bytes]] = []
    for m in range(120):
        ts = T0 + timedelta(minutes=m)
        c05 = 10
        if 40 <= m < 45:
            c05 = 12000  # 424,028/m³ > 352,000: action even in operation
        elif 60 <= m < 65:
            c05 = 2830  # 100,000/m³: in limit in operation, an action at rest
        elif 112 <= m < 116:
            c05 = 60  # 2,120/m³: above the 1,760 alert, below the 3,520 action (at rest,
            #                  after the 20-minute recovery window that follows the operation)
        live.append((topic("T-B1", "T-B1-PC"), particles(seq=m + 1, ts=ts, c05=c05)))
        if not 50 <= m < 80:  # the BSC counter is offline for 30 minutes
            live.append(
                (
                    topic("T-B1-BSC", "T-BSC-PC"),
                    particles(monitor="T-BSC-PC", seq=m + 1, ts=ts, c05=5, volume=100),
                )
            )
        # temperature: half the time in °F, always 22 °C
        value, unit = (71.6, "degF") if m % 2 else (22.0, "degC")
        live.append(
            (
                topic("T-B1", "T-B1-T"),
                scalar(monitor="T-B1-T", kind="temperature", seq=m + 1, ts=ts, value=value, unit=unit),
            )
        )
    for k in range(720):
        s = k * 10
        pa = 15.0
        if 1000 <= s <= 1040:
            pa = 5.0  # door opening: 40 s below 10 Pa, shorter than the 60 s delay
        elif 3000 <= s < 3300:
            pa = 4.0  # a real loss of cascade: 5 minutes
        value, unit = (pa / 249.08891, "inH2O") if k % 3 == 0 else (pa, "Pa")
        live.append(
            (
                topic("T-B1", "T-B1-DP"),
                scalar(
                    monitor="T-B1-DP",
                    kind="pressure",
                    seq=k + 1,
                    ts=T0 + timedelta(seconds=s),
                    value=value,
                    unit=unit,
                ),
            )
        )
    backfill = [
        (
            topic("T-B1-BSC", "T-BSC-PC"),
            particles(
                monitor="T-BSC-PC",
                seq=m + 1,
                ts=T0 + timedelta(minutes=m),
                c05=500 if 60 <= m < 63 else 5,
                volume=100,
            ),
        )
        for m in range(50, 80)
    ]
    good = particles(seq=999_000, ts=T0, c05=1)
    bad = [
        (topic("T-B1", "T-B1-PC"), b'{"schema": "gmp.reading/1", "monitor": "T-B1-PC", "se'),
        (
            topic("T-B1", "T-B1-PC"),
            json.dumps(
                {"schema": "gmp.reading/1", "monitor": "T-B1-PC", "ts": iso(T0), "kind": "particles"}
            ).encode(),
        ),
        (topic("T-B1", "ZZ-GHOST"), particles(monitor="ZZ-GHOST", seq=1, ts=T0, c05=1)),
        (topic("T-C1", "T-B1-PC"), good),
        (topic("T-B1", "T-B1-PC"), particles(seq=999_001, ts=T0, c05=1, unit="furlong")),
        (topic("T-B1", "T-B1-PC"), particles(seq=999_002, ts=T0 + timedelta(days=30), c05=1)),
        (
            topic("T-B1", "T-B1-H"),
            scalar(monitor="T-B1-H", kind="humidity", seq=999_003, ts=T0, value=140, unit="percent"),
        ),
        (topic("T-B1", "T-B1-PC"), b"x" * 70_000),
    ]
    return live, backfill, bad


@pytest.fixture
def operating_facility(facility_engine: Engine) -> Engine:
    operate(facility_engine, "T-B1", T0 + timedelta(minutes=30), T0 + timedelta(minutes=90))
    return facility_engine


def test_scripted_scenario_end_to_end(operating_facility: Engine, broker: LocalBroker) -> None:
    engine = operating_facility
    live, backfill, bad = _scripted()
    duplicates = live[100:105]
    with running_ingester(engine, broker) as ingester:
        sent = publish_all(broker, live)
        sent += publish_all(broker, bad + duplicates)
        sent += publish_all(broker, backfill)
        wait_until(lambda: ingester.stats.received >= sent, what=f"{sent} messages processed")

    with unit_of_work(engine) as s:
        stats = ingest_stats(s)
        assert stats["readings"] == len(live) + len(backfill)
        assert stats["duplicates"] == len(duplicates)
        assert stats["quarantine_by_reason"] == {
            "bad_json": 1,
            "schema": 1,
            "unknown_monitor": 1,
            "room_mismatch": 1,
            "bad_unit": 1,
            "future_timestamp": 1,
            "out_of_range": 1,
            "too_large": 1,
        }
        # exactly once: no (monitor, seq) twice, every channel stored
        assert s.exec(select(func.count()).select_from(Reading)).one() == (2 * 120 + 2 * 120 + 120 + 720)
        got = [
            (e["monitor"], e["channel"], e["level"], e["state"], e["started_at"], e["ended_at"])
            for e in list_excursions(s, type_="limit")
        ]
        # the BSC counter's 30-minute outage was backfilled completely: no gap remains
        assert list_excursions(s, type_="data_gap") == []
        assert len(list_excursions(s, type_="data_gap", include_superseded=True)) == 1
    assert got == [
        ("T-B1-PC", "0.5", "action", "in_operation", "2026-11-20T00:40:00Z", "2026-11-20T00:45:00Z"),
        ("T-B1-DP", None, "action", "in_operation", "2026-11-20T00:50:00Z", "2026-11-20T00:55:00Z"),
        ("T-BSC-PC", "0.5", "action", "at_rest", "2026-11-20T01:00:00Z", "2026-11-20T01:03:00Z"),
        ("T-B1-PC", "0.5", "alert", "at_rest", "2026-11-20T01:52:00Z", "2026-11-20T01:56:00Z"),
    ]


def test_raw_payload_is_kept_verbatim(facility_engine: Engine, broker: LocalBroker) -> None:
    payload = particles(seq=1, ts=T0, c05=42, volume=1.0, unit="ft^3")
    with running_ingester(facility_engine, broker, client_id="raw-test") as ingester:
        publish_all(broker, [(topic("T-B1", "T-B1-PC"), payload)])
        wait_until(lambda: ingester.stats.received >= 1)
    with unit_of_work(facility_engine) as s:
        raw = s.exec(select(RawMessage)).one()
        assert raw.payload == payload
        assert raw.topic == "gmp/T-SITE/T-B1/T-B1-PC"
        value = s.exec(select(Reading.value).where(Reading.channel == "0.5")).one()
        assert value == pytest.approx(42 * 35.3147, rel=1e-5)


def test_ingester_waits_for_a_broker_that_is_not_up_yet(facility_engine: Engine) -> None:
    late_broker = LocalBroker(persistence=False)
    with running_ingester(
        facility_engine, late_broker, client_id="early-bird", wait_subscribed=False
    ) as ingester:
        time.sleep(1.5)  # the ingester has tried and is backing off
        assert not ingester.subscribed.is_set()
        with late_broker:
            assert ingester.subscribed.wait(20), "ingester never connected"
            publish_all(late_broker, [(topic("T-B1", "T-B1-PC"), particles(seq=1, ts=T0, c05=1))])
            wait_until(lambda: ingester.stats.stored >= 1)


def test_embedded_amqtt_fallback_broker(facility_engine: Engine) -> None:
    """Where mosquitto is absent the demo uses amqtt (MQTT 3.1.1): the pipeline still works."""
    with LocalBroker(persistence=False, prefer="amqtt") as fallback:
        assert fallback.kind == "amqtt"
        assert fallback.protocol == 3
        with running_ingester(facility_engine, fallback, client_id="amqtt-ingest") as ingester:
            sent = publish_all(
                fallback,
                [
                    (topic("T-B1", "T-B1-PC"), particles(seq=m + 1, ts=T0 + timedelta(minutes=m), c05=10))
                    for m in range(50)
                ],
            )
            wait_until(lambda: ingester.stats.stored >= sent, what="50 readings via amqtt")
    with unit_of_work(facility_engine) as s:
        assert ingest_stats(s)["readings"] == 50


def test_a_message_the_database_refuses_is_isolated_not_blocking(
    facility_engine: Engine, broker: LocalBroker
) -> None:
    """Fault injection: the database refuses one reading (a value no check foresaw). The batch
    is retried message by message; the offender is quarantined, everything else stored."""
    with running_ingester(facility_engine, broker, client_id="poison") as ingester:
        real_store = ingester.intake.store

        def refusing_store(session, readings, rejections, statuses=(), **kw):
            if any(r.seq == 13 for r in readings):
                raise IntegrityError("INSERT INTO reading", {}, Exception("value refused"))
            return real_store(session, readings, rejections, statuses, **kw)

        ingester.intake.store = refusing_store
        sent = publish_all(
            broker,
            [
                (topic("T-B1", "T-B1-PC"), particles(seq=m, ts=T0 + timedelta(minutes=m), c05=10))
                for m in range(1, 21)
            ],
        )
        wait_until(lambda: ingester.stats.received >= sent)
    with unit_of_work(facility_engine) as s:
        stats = ingest_stats(s)
        (q,) = list_quarantine(s)
    assert stats["readings"] == 19
    assert q.reason == "schema"
    assert "database refused it" in q.detail
    assert json.loads(q.payload)["seq"] == 13
