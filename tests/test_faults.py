"""Fault injection with real processes (issue 5 item 4; docs/faults.md).

The ingester runs as ``python -m tracker.cli ingest`` in a subprocess against Debian's mosquitto
and the test database; each test injects one fault and then counts exactly: every valid
reading stored once (the set of (monitor, seq)), every bad message quarantined under its reason,
and the episodes equal to a reference run that saw no fault.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlmodel import select

from simulators.publisher import SimulationResult, run_simulation
from tests.conftest import MIN_FACILITY
from tests.factories import T0, iso, particles, scalar, topic
from tests.fault_helpers import (
    DatabaseOutage,
    IngesterProcess,
    episodes,
    ingest_directly,
    publish_paced,
    rollups,
    stored_count,
    stored_keys,
)
from tests.mqtt_helpers import publish_all, wait_until
from tracker.core.db import get_engine, unit_of_work
from tracker.core.migrate import upgrade
from tracker.core.timeutil import utcnow
from tracker.facility.file import parse_facility, read_facility_file
from tracker.facility.load import load_facility
from tracker.monitoring.readings import RawMessage, Reading
from tracker.monitoring.stats import ingest_stats
from tracker.wire.broker import LocalBroker
from tracker.wire.mqtt import connect, make_client, parse_broker_url

NN_CPC = Path(__file__).resolve().parents[1] / "simulators" / "data" / "nn-cpc.toml"

Message = tuple[str, bytes]


@pytest.fixture
def persistent_broker() -> Iterator[LocalBroker]:
    """mosquitto with persistence: sessions and queued QoS 1 messages survive a restart."""
    with LocalBroker(persistence=True) as broker:
        assert broker.kind == "mosquitto"
        yield broker


def reference_engine(tmp_path: Path, facility_text: str) -> Engine:
    """A second, fault-free database (SQLite, built by the migrations) for the reference run."""
    url = f"sqlite:///{tmp_path / 'reference.db'}"
    upgrade(url)
    engine = get_engine(url)
    with unit_of_work(engine) as s:
        load_facility(s, parse_facility(facility_text), actor="test")
    return engine


def quarantine_by_reason(engine: Engine) -> dict[str, int]:
    with unit_of_work(engine) as s:
        return ingest_stats(s)["quarantine_by_reason"]


def pressure(monitor: str, room: str, seq: int, ts: datetime, value: float = 15.0) -> Message:
    return topic(room, monitor), scalar(
        monitor=monitor, kind="pressure", seq=seq, ts=ts, value=value, unit="Pa"
    )


def keys(messages: list[Message]) -> set[tuple[str, int]]:
    out = set()
    for _, payload in messages:
        doc = json.loads(payload)
        out.add((doc["monitor"], doc["seq"]))
    return out


# --------------------------------------------------------------------------- back-pressure


def test_mosquitto_honours_the_first_receive_maximum_window(broker: LocalBroker) -> None:
    """What the ingester asks of the broker: with Receive Maximum 5 and nothing acknowledged,
    mosquitto delivers 5 of 50 QoS 1 messages and holds the other 45 in the session. (After
    acknowledgements, 2.0.11 releases more than it should — eclipse-mosquitto/mosquitto#2301 —
    which is why the ingester also bounds what it reads; the outage test measures that.)"""
    address = parse_broker_url(broker.url)
    got: list[int] = []
    sub = make_client(address, client_id="rm-sub", persistent=True, manual_ack=True)
    sub.on_message = lambda _c, _u, msg: got.append(msg.mid)
    subscribed = threading.Event()
    sub.on_subscribe = lambda *_a: subscribed.set()
    sub.on_connect = lambda c, *_a: c.subscribe("gmp/#", qos=1)
    connect(sub, address, persistent=True, receive_maximum=5)
    sub.loop_start()
    try:
        assert subscribed.wait(10)
        publish_all(broker, [pressure("T-B1-DP", "T-B1", i, T0) for i in range(1, 51)])
        time.sleep(1.0)
        assert len(got) == 5
    finally:
        sub.disconnect()
        sub.loop_stop()


# --------------------------------------------------------------------------- ingester SIGKILL


def test_ingester_sigkill_mid_stream_loses_nothing_and_doubles_nothing(
    facility_engine: Engine, db_url: str, broker: LocalBroker
) -> None:
    n = 20_000
    messages = [pressure("T-B1-DP", "T-B1", i + 1, T0 + timedelta(seconds=10 * i)) for i in range(n)]
    env = {"TRACKER_INGEST_BATCH_SIZE": "200"}
    first = IngesterProcess(db_url, broker, client_id="crash-test-ingest", env=env).start()
    try:
        publisher = threading.Thread(
            target=publish_all, args=(broker, messages), kwargs={"client_id": "crash-test-publisher"}
        )
        publisher.start()
        wait_until(lambda: stored_count(facility_engine) >= n // 4, timeout=60, what="a quarter stored")
        first.kill()
        killed_at = stored_count(facility_engine)
        assert 0 < killed_at < n, "the kill must land mid-stream"
        publisher.join(60)
    finally:
        first.__exit__(None, None, None)
    with IngesterProcess(db_url, broker, client_id="crash-test-ingest", env=env) as second:
        wait_until(lambda: stored_count(facility_engine) >= n, timeout=120, what="all stored")
        second.stop()
        assert second.errors() == []
    with unit_of_work(facility_engine) as s:
        seqs = s.exec(select(RawMessage.seq).order_by(RawMessage.seq)).all()
    assert seqs == list(range(1, n + 1))  # every one, once (the primary key forbids twins)


# --------------------------------------------------------------------------- broker restart


def test_broker_restart_mid_stream_publisher_and_ingester_reconnect(
    engine: Engine, db_url: str, persistent_broker: LocalBroker
) -> None:
    """An hour of the 57-monitor sample centre from the simulator (a gateway); mosquitto is
    stopped and started again on the same port while both sides are mid-stream."""
    with unit_of_work(engine) as s:
        load_facility(s, read_facility_file(NN_CPC), actor="test")
    box: dict[str, SimulationResult] = {}

    def simulate() -> None:
        box["result"] = run_simulation(
            facility_path=NN_CPC,
            broker=parse_broker_url(persistent_broker.url),
            speed=360,
            seed=3,
            duration=timedelta(hours=1),
            start=T0,
            client_id="fault-gateway",
        )

    with IngesterProcess(db_url, persistent_broker, env={"TRACKER_INGEST_BATCH_SIZE": "500"}) as ing:
        simulator = threading.Thread(target=simulate)
        simulator.start()
        wait_until(lambda: stored_count(engine) >= 2000, timeout=60, what="2000 stored")
        assert simulator.is_alive(), "the restart must land while the simulator publishes"
        persistent_broker.restart()
        at_restart = stored_count(engine)
        simulator.join(180)
        assert not simulator.is_alive()
        result = box["result"]
        assert result.undelivered == 0
        assert not result.stopped
        expected = {(m, seq) for m, t in result.readings.items() for seq in range(1, t.last_seq + 1)}
        assert len(expected) == result.total_readings > 4 * at_restart
        wait_until(lambda: stored_count(engine) >= len(expected), timeout=180, what="all stored")
        ing.wait_subscribed(2)  # it came back by itself and subscribed again
        final = ing.stop()
        assert ing.errors() == []
    assert any("disconnected from broker" in ln or "not reachable" in ln for ln in ing.lines)
    assert stored_keys(engine) == expected  # nothing lost
    assert stored_count(engine) == len(expected)  # nothing doubled
    assert final["stored"] == len(expected)
    assert quarantine_by_reason(engine) == {}


# --------------------------------------------------------------------------- database outage

OUTAGE_S = 30.0


def test_database_unavailable_30s_applies_back_pressure_and_loses_nothing(
    facility_engine: Engine, db_url: str, broker: LocalBroker
) -> None:
    """Traffic at 200 readings/s while the database refuses the ingester for 30 s: the worker
    holds at most its bound (2 × batch = 200) unacknowledged, the broker keeps the rest, and
    everything is stored once when the database is back."""
    n, rate, batch = 8_000, 200.0, 100
    window = 2 * batch
    messages = [pressure("T-B1-DP", "T-B1", i + 1, T0 + timedelta(seconds=10 * i)) for i in range(n)]
    progress = [0]
    outage = DatabaseOutage(db_url)
    with IngesterProcess(db_url, broker, env={"TRACKER_INGEST_BATCH_SIZE": str(batch)}) as ing:
        publisher = threading.Thread(
            target=publish_paced,
            args=(broker, messages),
            kwargs={"client_id": "outage-publisher", "rate": rate, "progress": progress},
        )
        publisher.start()
        wait_until(lambda: stored_count(facility_engine) >= 400, timeout=60, what="400 stored")
        outage.begin()
        began, published_before = time.monotonic(), progress[0]
        time.sleep(OUTAGE_S)
        published_during = progress[0] - published_before
        ended = time.monotonic()
        outage.end()
        publisher.join(120)
        assert not publisher.is_alive()
        wait_until(lambda: stored_count(facility_engine) >= n, timeout=120, what="all stored after")
        final = ing.stop()
        assert ing.errors() == []
    during = [s.values for s in ing.stats if began + 1.0 < s.at < ended]
    resumed = next(s.at for s in ing.stats if s.at > ended and s.values["stored"] > during[-1]["stored"])
    print(
        f"outage {ended - began:.1f}s: {published_during} published meanwhile, pending "
        f"≤ {max(s['pending'] for s in during)} (bound {window}), {final['db_errors']} failed "
        f"attempts, first commit {resumed - ended:.1f}s after the database was back"
    )
    assert len(during) >= 5, "the worker kept reporting through the outage"
    assert len({s["stored"] for s in during}) == 1, "nothing can be committed while it is down"
    assert max(s["pending"] for s in during) == window  # full up to the bound, never beyond
    assert published_during >= 20 * window  # the broker held the other 5,000 or so
    assert final["max_pending"] <= window
    assert final["db_errors"] >= 1
    assert final["stored"] == n
    assert stored_keys(facility_engine) == keys(messages)
    assert stored_count(facility_engine) == n
    assert quarantine_by_reason(facility_engine) == {}


# --------------------------------------------------------------------------- malformed flood


def valid_day(hours: int = 4) -> list[Message]:
    """Every monitor of the minimal facility in time order, with three scripted episodes:
    a pressure drop to 8 Pa (1 h, 3 min), a particle burst in B (2 h, 5 min) and a
    temperature held at 30 °C in B (3 h, 15 min)."""
    out: list[tuple[datetime, Message]] = []
    for i in range(hours * 360):
        ts = T0 + timedelta(seconds=10 * i)
        low = timedelta(hours=1) <= ts - T0 < timedelta(hours=1, minutes=3)
        out.append((ts, pressure("T-B1-DP", "T-B1", i + 1, ts, 8.0 if low else 15.0)))
        out.append((ts, pressure("T-D1-DP", "T-D1", i + 1, ts)))
    for i in range(hours * 60):
        ts = T0 + timedelta(seconds=60 * i + 5)
        burst = timedelta(hours=2) <= ts - T0 < timedelta(hours=2, minutes=5)
        hot = timedelta(hours=3) <= ts - T0 < timedelta(hours=3, minutes=15)
        out += [
            (
                ts,
                (
                    topic("T-B1", "T-B1-PC"),
                    particles(monitor="T-B1-PC", seq=i + 1, ts=ts, c05=400 if burst else 3),
                ),
            ),
            (
                ts,
                (
                    topic("T-B1-BSC", "T-BSC-PC"),
                    particles(monitor="T-BSC-PC", seq=i + 1, ts=ts, c05=1, volume=100),
                ),
            ),
            (ts, (topic("T-C1", "T-C1-PC"), particles(monitor="T-C1-PC", seq=i + 1, ts=ts, c05=90))),
            (
                ts,
                (
                    topic("T-B1", "T-B1-T"),
                    scalar(
                        monitor="T-B1-T",
                        kind="temperature",
                        seq=i + 1,
                        ts=ts,
                        value=30.0 if hot else 22.0,
                        unit="degC",
                    ),
                ),
            ),
            (
                ts,
                (
                    topic("T-B1", "T-B1-H"),
                    scalar(monitor="T-B1-H", kind="humidity", seq=i + 1, ts=ts, value=52.0, unit="percent"),
                ),
            ),
        ]
    out.sort(key=lambda pair: pair[0])
    return [m for _, m in out]


def malformed_flood() -> tuple[list[Message], Counter[str]]:
    """10,000 bad messages of ten kinds, with the reason each must be quarantined under."""
    future = utcnow() + timedelta(days=1)
    base = 900_000_000

    def dp(seq: int, **changes) -> dict:
        doc = json.loads(
            scalar(monitor="T-B1-DP", kind="pressure", seq=base + seq, ts=T0, value=15.0, unit="Pa")
        )
        doc.update(changes)
        return doc

    good_topic = topic("T-B1", "T-B1-DP")
    kinds: list[tuple[str, int, object]] = [
        ("bad_json", 2000, lambda i: (good_topic, json.dumps(dp(i)).encode()[:-10])),
        (
            "schema",
            1000,
            lambda i: (
                good_topic,
                json.dumps({**{k: v for k, v in dp(i).items() if k != "seq"}, "n": i}).encode(),
            ),
        ),
        ("schema", 500, lambda i: ("gmp/T-SITE/T-B1", json.dumps(dp(i)).encode())),
        ("schema", 500, lambda i: (good_topic, json.dumps(dp(i, monitor="T-D1-DP")).encode())),
        (
            "unknown_monitor",
            1500,
            lambda i: (topic("T-B1", "ZZ-GHOST"), json.dumps(dp(i, monitor="ZZ-GHOST")).encode()),
        ),
        ("room_mismatch", 1500, lambda i: (topic("T-C1", "T-B1-DP"), json.dumps(dp(i)).encode())),
        ("bad_unit", 1500, lambda i: (good_topic, json.dumps(dp(i, unit="furlong")).encode())),
        ("out_of_range", 1000, lambda i: (good_topic, json.dumps(dp(i, value=5000.0)).encode())),
        ("too_large", 200, lambda i: (good_topic, json.dumps(dp(i, pad="x" * 17_000)).encode())),
        ("future_timestamp", 300, lambda i: (good_topic, json.dumps(dp(i, ts=iso(future))).encode())),
    ]
    out: list[Message] = []
    expected: Counter[str] = Counter()
    seq = 0
    for reason, count, make in kinds:
        for _ in range(count):
            seq += 1
            out.append(make(seq))
        expected[reason] += count
    # interleave the kinds (deterministically) rather than sending them in blocks
    out = [out[(i * 7919) % len(out)] for i in range(len(out))]
    assert len(out) == 10_000
    assert len(set(out)) == 10_000
    return out, expected


def test_flood_of_10000_malformed_messages_beside_full_rate_valid_traffic(
    facility_engine: Engine, db_url: str, broker: LocalBroker, tmp_path: Path
) -> None:
    valid = valid_day()
    flood, reasons = malformed_flood()
    with IngesterProcess(db_url, broker) as ing:
        threads = [
            threading.Thread(target=publish_all, args=(broker, msgs), kwargs={"client_id": cid})
            for msgs, cid in ((valid, "valid-gateway"), (flood, "flood-source"))
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(180)
        total = len(valid) + len(flood)
        wait_until(
            lambda: sum(ing.last_stats().get(k, 0) for k in ("stored", "quarantined")) >= total,
            timeout=180,
            what="every message stored or quarantined",
        )
        final = ing.stop()
        assert ing.errors() == []
    assert final["received"] == total
    assert final["duplicates"] == 0
    assert quarantine_by_reason(facility_engine) == dict(reasons)
    assert sum(reasons.values()) == 10_000
    assert stored_keys(facility_engine) == keys(valid)
    assert stored_count(facility_engine) == len(valid)
    reference = reference_engine(tmp_path, MIN_FACILITY.read_text(encoding="utf-8"))
    ingest_directly(reference, valid)
    expected = episodes(reference)
    assert {(e[0], e[1], e[3]) for e in expected} >= {
        ("limit", "T-B1-DP", "action"),
        ("limit", "T-B1-PC", "action"),
        ("limit", "T-B1-T", "action"),
    }
    assert episodes(facility_engine) == expected
    assert rollups(facility_engine) == rollups(reference)


# --------------------------------------------------------------------------- backfill burst

BF_ROOMS = [("T-B1-BSC", "A"), ("T-B1", "B"), ("T-C1", "C"), ("T-D1", "D")]
#: (room, reference room) for the pressure transmitters
BF_DP = [("T-B1", "T-C1"), ("T-C1", "T-D1"), ("T-D1", "T-CNC")]


def backfill_facility() -> tuple[str, list[tuple[str, str, str, int]]]:
    """The minimal facility's rooms with 60 monitors: (code, room, kind, interval_s)."""
    head = MIN_FACILITY.read_text(encoding="utf-8").split("[[monitors]]")[0]
    monitors: list[tuple[str, str, str, int]] = []
    for i in range(15):
        room = BF_ROOMS[i % 4][0]
        monitors.append((f"PC{i:02d}", room, "particles", 60))
        monitors.append((f"DP{i:02d}", BF_DP[i % 3][0], "pressure", 10))
        monitors.append((f"TT{i:02d}", "T-B1" if i % 2 else "T-C1", "temperature", 60))
        monitors.append((f"RH{i:02d}", "T-B1" if i % 2 else "T-C1", "humidity", 60))
    body = []
    for code, room, kind, interval in monitors:
        body.append(
            f'[[monitors]]\ncode = "{code}"\nroom = "{room}"\nkind = "{kind}"\ninterval_s = {interval}\n'
        )
        if kind == "pressure":
            body.append(f'reference = "{dict(BF_DP)[room]}"\n')
        if room == "T-B1-BSC":
            body.append("sample_volume_l = 100\n")
    return head + "\n".join(body), monitors


def backfill_reading(code: str, room: str, kind: str, interval: int, seq: int) -> tuple[datetime, Message]:
    """Reading ``seq`` of a monitor: steady values, plus a pressure drop on DP00 (01:20, 3 min)
    and a particle burst on PC01 (01:40, 5 min), both inside the hour that is backfilled."""
    phase = int(code[2:]) % interval
    ts = T0 + timedelta(seconds=phase + interval * (seq - 1))
    at = ts - T0
    if kind == "particles":
        burst = code == "PC01" and timedelta(minutes=100) <= at < timedelta(minutes=105)
        c05 = {"T-B1-BSC": 1, "T-B1": 3, "T-C1": 90, "T-D1": 900}[room]
        payload = particles(
            monitor=code,
            seq=seq,
            ts=ts,
            c05=400 if burst else c05,
            volume=100 if room == "T-B1-BSC" else 28.3,
        )
    elif kind == "pressure":
        low = code == "DP00" and timedelta(minutes=80) <= at < timedelta(minutes=83)
        payload = scalar(monitor=code, kind="pressure", seq=seq, ts=ts, value=7.0 if low else 15.0, unit="Pa")
    elif kind == "temperature":
        payload = scalar(monitor=code, kind="temperature", seq=seq, ts=ts, value=22.0, unit="degC")
    else:
        payload = scalar(monitor=code, kind="humidity", seq=seq, ts=ts, value=52.0, unit="percent")
    return ts, (topic(room, code), payload)


def test_backfill_burst_one_hour_from_60_monitors_while_live_traffic_continues(
    engine: Engine, db_url: str, broker: LocalBroker, tmp_path: Path
) -> None:
    """A gateway outage from 01:00 to 02:00: live data resume at 02:00 (60 gaps open by event
    time), then all 60 monitors flush their buffered hour at once while live traffic goes on.
    Five monitors lost their first 15 buffered minutes: their gaps shrink to that, the other
    55 are superseded; episodes inside the hour land where a live run puts them."""
    text, monitors = backfill_facility()
    with unit_of_work(engine) as s:
        load_facility(s, parse_facility(text), actor="test")
    assert len(monitors) == 60
    lost = {code for code, *_ in monitors[:20:4]}  # PC00..PC04: 5 particle counters
    before, backfill, live_first, live_rest = [], [], [], []
    for code, room, kind, interval in monitors:
        for seq in range(1, 9000 // interval + 1):  # 00:00 .. 02:30
            ts, msg = backfill_reading(code, room, kind, interval, seq)
            at = ts - T0
            if at < timedelta(hours=1):
                before.append((ts, msg))
            elif at < timedelta(hours=2):
                if code not in lost or at >= timedelta(hours=1, minutes=15):
                    backfill.append((ts, msg))
            elif at < timedelta(hours=2, minutes=5):
                live_first.append((ts, msg))
            else:
                live_rest.append((ts, msg))
    in_time = [m for _, m in sorted(before + live_first + live_rest + backfill, key=lambda p: p[0])]
    by_time = [m for _, m in sorted(before, key=lambda p: p[0])]
    first_after = [m for _, m in sorted(live_first, key=lambda p: p[0])]
    after = [m for _, m in sorted(live_rest, key=lambda p: p[0])]
    flush = [m for _, m in sorted(backfill, key=lambda p: (p[1][0], p[0]))]  # monitor by monitor
    assert len(flush) == 8100 - 5 * 15
    with IngesterProcess(db_url, broker) as ing:
        publish_all(broker, by_time + first_after, client_id="live-gateway")
        wait_until(
            lambda: stored_count(engine) == len(by_time) + len(first_after),
            timeout=120,
            what="the live data before the flush",
        )
        gaps_before = [e for e in episodes(engine) if e[0] == "data_gap"]
        assert len(gaps_before) == 60  # every monitor: 00:59.. → 02:00..
        threads = [
            threading.Thread(target=publish_all, args=(broker, msgs), kwargs={"client_id": cid})
            for msgs, cid in ((after, "live-gateway"), (flush, "backfill-gateway"))
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(180)
        wait_until(lambda: stored_count(engine) >= len(in_time), timeout=180, what="all stored")
        final = ing.stop()
        assert ing.errors() == []
    assert final["duplicates"] == 0
    assert final["quarantined"] == 0
    assert stored_keys(engine) == keys(in_time)
    assert stored_count(engine) == len(in_time)
    reference = reference_engine(tmp_path, text)
    ingest_directly(reference, in_time)
    expected = episodes(reference)
    got = episodes(engine)
    assert got == expected
    assert rollups(engine) == rollups(reference)  # the hourly rollups took late data too
    gaps = [e for e in got if e[0] == "data_gap"]
    assert sorted(e[1] for e in gaps) == sorted(lost)  # shrunk, not gone
    for e in gaps:
        assert e[5] < iso(T0 + timedelta(hours=1))
        assert e[6] >= iso(T0 + timedelta(hours=1, minutes=15))
        assert e[6] < iso(T0 + timedelta(hours=1, minutes=16))
    superseded = [
        e for e in episodes(engine, include_superseded=True) if e[0] == "data_gap" and e[10] == "superseded"
    ]
    # each of the 55 filled gaps was superseded (a flush batch ending mid-hour may first have
    # reshaped or split it: those pieces are superseded too, never deleted)
    assert {e[1] for e in superseded} >= {code for code, *_ in monitors} - lost
    limits = {(e[1], e[3], e[5][:16]) for e in got if e[0] == "limit"}
    assert ("DP00", "action", iso(T0 + timedelta(minutes=80))[:16]) in limits
    assert any(
        m == "PC01" and start.startswith(iso(T0 + timedelta(minutes=100))[:15]) for m, _, start in limits
    )


# --------------------------------------------------------------------------- clock skew


def test_clock_skew_ahead_beyond_tolerance_is_quarantined_behind_is_stored_as_late_data(
    facility_engine: Engine, db_url: str, broker: LocalBroker
) -> None:
    """Ahead of receipt by more than TRACKER_FUTURE_TOLERANCE_S: quarantined
    ``future_timestamp``, nothing judged even when the value is out of limit; ahead within the
    tolerance: stored. Far behind: stored and judged by its own stamp (it is indistinguishable
    from a monitor's backfill, and GMP data are never dropped), with the receipt time kept
    beside it so the lag stays visible. A reset clock (before 2000) is ``schema``."""
    now = utcnow().replace(microsecond=0)
    tolerance = 300
    ahead = [
        pressure("T-D1-DP", "T-D1", i + 1, now + timedelta(minutes=10, seconds=10 * i), 3.0)
        for i in range(12)
    ]
    within = [
        pressure("T-D1-DP", "T-D1", 13 + i, now + timedelta(minutes=2, seconds=10 * i)) for i in range(3)
    ]
    lag = timedelta(hours=6)
    behind = [
        pressure(
            "T-B1-DP", "T-B1", i + 1, now - lag + timedelta(seconds=10 * i), 5.0 if 6 <= i < 18 else 15.0
        )
        for i in range(30)
    ]
    reset = [
        pressure("T-B1-DP", "T-B1", 100 + i, datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=10 * i))
        for i in range(3)
    ]
    env = {"TRACKER_FUTURE_TOLERANCE_S": str(tolerance)}
    with IngesterProcess(db_url, broker, env=env) as ing:
        publish_all(broker, ahead + within + behind + reset)
        wait_until(lambda: ing.last_stats().get("received", 0) >= 48, timeout=60, what="all 48")
        ing.stop()
        assert ing.errors() == []
    assert quarantine_by_reason(facility_engine) == {"future_timestamp": 12, "schema": 3}
    assert stored_keys(facility_engine) == keys(within + behind)
    with unit_of_work(facility_engine) as s:
        raw = s.exec(select(RawMessage)).all()
        judged = s.exec(select(Reading.level).where(Reading.event_time > now + timedelta(minutes=5))).all()
    assert judged == []  # nothing from the future was judged
    lags = [(r.received_at - json_ts(r.payload)) for r in raw if r.topic.endswith("T-B1-DP")]
    assert len(lags) == 30
    assert all(lag - timedelta(minutes=6) < x <= lag + timedelta(minutes=1) for x in lags)
    limits = [e for e in episodes(facility_engine) if e[0] == "limit"]
    assert [(e[1], e[3], e[5]) for e in limits] == [
        ("T-B1-DP", "action", iso(now - lag + timedelta(seconds=60)))
    ]


def json_ts(payload: bytes) -> datetime:
    return datetime.fromisoformat(json.loads(payload)["ts"].replace("Z", "+00:00"))
