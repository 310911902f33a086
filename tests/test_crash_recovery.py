"""SIGKILL the ingester mid-stream and restart it: zero readings lost, zero stored twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from datetime import timedelta

from sqlalchemy import Engine, func
from sqlmodel import select

from sensors.broker import LocalBroker
from tests.factories import T0, scalar, topic
from tests.mqtt_helpers import publish_all, wait_until
from tracker.db import unit_of_work
from tracker.readings import RawMessage

N = 20_000


def _start_ingester(db_url: str, broker: LocalBroker) -> tuple[subprocess.Popen, threading.Event]:
    env = {**os.environ, "TRACKER_DATABASE_URL": db_url, "TRACKER_MQTT_URL": broker.url,
           "TRACKER_MQTT_CLIENT_ID": "crash-test-ingest", "TRACKER_INGEST_BATCH_SIZE": "200"}
    proc = subprocess.Popen([sys.executable, "-m", "tracker.cli", "ingest"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    subscribed = threading.Event()

    def watch() -> None:
        for line in proc.stderr:
            if "subscription to" in line and "confirmed" in line:
                subscribed.set()

    threading.Thread(target=watch, daemon=True).start()
    assert subscribed.wait(20), "ingester subprocess did not subscribe"
    return proc, subscribed


def _stored(engine: Engine) -> int:
    with unit_of_work(engine) as s:
        return s.exec(select(func.count()).select_from(RawMessage)).one()


def test_sigkill_mid_stream_loses_nothing_and_doubles_nothing(
        facility_engine: Engine, db_url: str, broker: LocalBroker) -> None:
    messages = [(topic("T-B1", "T-B1-DP"),
                 scalar(monitor="T-B1-DP", kind="pressure", seq=i + 1,
                        ts=T0 + timedelta(seconds=10 * i), value=15.0, unit="Pa"))
                for i in range(N)]
    proc, _ = _start_ingester(db_url, broker)
    publisher = threading.Thread(target=publish_all, args=(broker, messages),
                                 kwargs={"client_id": "crash-test-publisher"})
    publisher.start()
    wait_until(lambda: _stored(facility_engine) >= N // 4, timeout=60, what="a quarter stored")
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    killed_at = _stored(facility_engine)
    assert 0 < killed_at < N, "the kill must land mid-stream"
    publisher.join(60)

    proc, _ = _start_ingester(db_url, broker)   # same client id: resumes the broker session
    try:
        wait_until(lambda: _stored(facility_engine) >= N, timeout=120, what="all stored")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0, "ingester did not stop cleanly on SIGTERM"
    with unit_of_work(facility_engine) as s:
        seqs = s.exec(select(RawMessage.seq).order_by(RawMessage.seq)).all()
    assert seqs == list(range(1, N + 1))   # every one, once (the primary key forbids twins)
