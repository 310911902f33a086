"""Data gaps through a real broker: silence by wall clock, an MQTT last will, a backfill
that shrinks a gap to what is really missing."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import timedelta

from sqlalchemy import Engine

from tests.conftest import MIN_FACILITY
from tests.factories import T0, particles, topic
from tests.mqtt_helpers import publish_all, running_ingester, wait_until
from tracker.core.db import unit_of_work
from tracker.core.timeutil import iso_utc, utcnow
from tracker.facility.file import parse_facility
from tracker.facility.load import load_facility
from tracker.monitoring.excursions import list_excursions
from tracker.monitoring.rules.gaps import Gap, find_gaps
from tracker.wire.broker import LocalBroker

# the BSC counter samples every second here, so three seconds of silence is a gap
FAST = MIN_FACILITY.read_text(encoding="utf-8").replace(
    'code = "T-BSC-PC"\nroom = "T-B1-BSC"\nkind = "particles"\ninterval_s = 60',
    'code = "T-BSC-PC"\nroom = "T-B1-BSC"\nkind = "particles"\ninterval_s = 1',
)


def bsc(seq: int, ts) -> tuple[str, bytes]:
    return topic("T-B1-BSC", "T-BSC-PC"), particles(monitor="T-BSC-PC", seq=seq, ts=ts, c05=1, volume=100)


def gaps(engine: Engine, **kw) -> list[dict]:
    with unit_of_work(engine) as s:
        return list_excursions(s, type_="data_gap", **kw)


def test_find_gaps_is_pure_and_exact() -> None:
    ts = [T0 + timedelta(seconds=s) for s in (0, 10, 20, 61, 70)]
    assert find_gaps(ts, timedelta(seconds=30)) == [Gap(ts[2], ts[3])]
    assert find_gaps(ts, timedelta(seconds=41)) == []


def test_live_silence_opens_a_gap_by_wall_clock_and_data_closes_it(
    engine: Engine, broker: LocalBroker
) -> None:
    with unit_of_work(engine) as s:
        load_facility(s, parse_facility(FAST), actor="test")
    with running_ingester(engine, broker, gap_check_s=0.2) as ingester:
        start = utcnow().replace(microsecond=0)
        publish_all(broker, [bsc(i + 1, start + timedelta(seconds=i)) for i in range(3)])
        wait_until(lambda: ingester.stats.stored >= 3)
        last = start + timedelta(seconds=2)
        wait_until(lambda: len(gaps(engine)) == 1, timeout=20, what="a gap from silence")
        (gap,) = gaps(engine)
        assert gap["ended_at"] is None
        assert gap["started_at"] == iso_utc(last)
        assert gap["level"] == "action"  # grade A: continuous monitoring required
        assert gap["limit"] == 3.0  # 3 × the 1 s interval
        resumed = utcnow().replace(microsecond=0) + timedelta(seconds=1)
        publish_all(broker, [bsc(4, resumed)])
        wait_until(lambda: gaps(engine)[0]["ended_at"] is not None, what="the gap closed")
    (gap,) = gaps(engine)
    assert gap["ended_at"] == iso_utc(resumed)
    assert gap["status"] == "closed"


LWT_MONITOR = """
import sys, time
from tracker.wire.mqtt import connect, make_client, parse_broker_url
address = parse_broker_url(sys.argv[1])
client = make_client(address, client_id="bsc-counter")
client.will_set("gmp/T-SITE/T-B1-BSC/T-BSC-PC/status", b"offline", qos=1, retain=True)
connect(client, address)
client.loop_start()
client.publish("gmp/T-SITE/T-B1-BSC/T-BSC-PC/status", b"online", qos=1, retain=True)
client.publish("gmp/T-SITE/T-B1-BSC/T-BSC-PC", sys.argv[2].encode(), qos=1).wait_for_publish(5)
print("ready", flush=True)
time.sleep(600)
"""


def test_last_will_offline_opens_a_gap_at_once(facility_engine: Engine, broker: LocalBroker) -> None:
    with running_ingester(facility_engine, broker) as ingester:
        reading = particles(monitor="T-BSC-PC", seq=1, ts=T0, c05=1, volume=100)
        monitor = subprocess.Popen(
            [sys.executable, "-c", LWT_MONITOR, broker.url, reading.decode()],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert monitor.stdout.readline().strip() == "ready"
        wait_until(lambda: ingester.stats.stored >= 1)
        assert gaps(facility_engine) == []  # 60 s interval: no silence gap yet
        monitor.kill()  # the monitor dies: the broker sends its will
        monitor.wait(5)
        t0 = time.monotonic()
        wait_until(lambda: len(gaps(facility_engine)) == 1, timeout=10, what="gap from LWT")
        assert time.monotonic() - t0 < 5  # at once, not after 3 × 60 s
    (gap,) = gaps(facility_engine)
    assert gap["started_at"] == "2026-11-20T00:00:00Z"  # from the last reading on record
    assert gap["ended_at"] is None


def test_backfill_shrinks_a_gap_to_what_is_really_missing(
    facility_engine: Engine, broker: LocalBroker
) -> None:
    def pc(m: int) -> tuple[str, bytes]:
        return topic("T-B1", "T-B1-PC"), particles(seq=m + 1, ts=T0 + timedelta(minutes=m), c05=5)

    with running_ingester(facility_engine, broker) as ingester:
        sent = publish_all(broker, [pc(m) for m in [*range(10), *range(40, 50)]])
        wait_until(lambda: ingester.stats.received >= sent)
        (gap,) = gaps(facility_engine)
        assert (gap["started_at"], gap["ended_at"]) == ("2026-11-20T00:09:00Z", "2026-11-20T00:40:00Z")
        sent += publish_all(broker, [pc(m) for m in range(10, 20)])  # part of the buffer
        wait_until(lambda: ingester.stats.received >= sent)
    (shrunk,) = gaps(facility_engine)
    assert shrunk["id"] == gap["id"]  # the same gap, re-shaped
    assert (shrunk["started_at"], shrunk["ended_at"]) == ("2026-11-20T00:19:00Z", "2026-11-20T00:40:00Z")
    assert shrunk["peak"] == 21 * 60  # its length in seconds
