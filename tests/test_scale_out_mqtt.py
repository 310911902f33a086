"""Scale-out over a real mosquitto: two `tracker ingest` processes on one shared subscription,
one SIGKILLed mid-stream, against one process alone on the same stream; a worker routed the
rooms given to it by topic filters (docs/scale-out.md)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

from sqlalchemy import Engine, func
from sqlmodel import select

from tests.factories import T0, particles, scalar, topic
from tests.mqtt_helpers import publish_all, wait_until
from tests.scale_out_scenario import excursion_shapes, scenario, stored_keys
from tests.test_scale_out import twin_engine  # noqa: F401  (fixture)
from tracker.core.db import unit_of_work
from tracker.core.settings import Settings
from tracker.facility.models import Monitor
from tracker.ingest.client import IngestOptions
from tracker.monitoring.ingest_state import IngestState
from tracker.monitoring.quarantine import QuarantinedMessage
from tracker.monitoring.readings import RawMessage
from tracker.wire.broker import LocalBroker
from tracker.wire.mqtt import connect, make_client, parse_broker_url


class Worker:
    """A `python -m tracker.cli ingest` subprocess, subscribed before it is returned."""

    def __init__(self, db_url: str, broker: LocalBroker, *args: str) -> None:
        env = {
            **os.environ,
            "TRACKER_DATABASE_URL": db_url,
            "TRACKER_MQTT_URL": broker.url,
            "TRACKER_INGEST_BATCH_SIZE": "50",
            "TRACKER_LANG": "en",
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tracker.cli", "ingest", *args],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.log: list[str] = []
        subscribed = threading.Event()

        def watch() -> None:
            for line in self.proc.stderr:
                self.log.append(line)
                if "subscription to" in line and "confirmed" in line:
                    subscribed.set()

        threading.Thread(target=watch, daemon=True).start()
        assert subscribed.wait(30), f"ingester did not subscribe: {''.join(self.log)[-2000:]}"

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(30) == 0, f"ingester did not stop cleanly: {''.join(self.log)[-2000:]}"


def _stored(engine: Engine) -> int:
    with unit_of_work(engine) as s:
        return s.exec(select(func.count()).select_from(RawMessage)).one()


def _gap_checks_pending(engine: Engine) -> int:
    with unit_of_work(engine) as s:
        return s.exec(
            select(func.count()).select_from(IngestState).where(IngestState.gap_recheck_due.is_not(None))
        ).one()


def test_two_shared_ingesters_one_killed_equal_one_ingester(
    facility_engine: Engine,
    db_url: str,
    twin_engine: Engine,  # noqa: F811
    broker: LocalBroker,
) -> None:
    messages = scenario()
    n = len(messages)

    # run A: one ingester alone, the reference
    solo = Worker(db_url, broker, "--client-id", "solo")
    publish_all(broker, messages, client_id="publisher-a")
    wait_until(lambda: _stored(facility_engine) >= n, timeout=120, what="run A stored all")
    solo.stop()

    # run B: two workers on $share/tracker/gmp/#, one SIGKILLed mid-stream, then restarted
    # under its name (mosquitto keeps a member's unacknowledged messages for its client id)
    twin_url = twin_engine.url.render_as_string(hide_password=False)
    shared = ("--shared", "tracker", "--subscription", "gmp/#")
    a = Worker(twin_url, broker, *shared, "--worker", "a")
    b = Worker(twin_url, broker, *shared, "--worker", "b")
    publisher = threading.Thread(
        target=publish_all, args=(broker, messages), kwargs={"client_id": "publisher-b"}
    )
    publisher.start()
    wait_until(lambda: _stored(twin_engine) >= n // 4, timeout=120, what="a quarter stored")
    a.kill()
    killed_at = _stored(twin_engine)
    assert killed_at < n, "the kill must land mid-stream"
    publisher.join(120)
    # b goes on alone with its share while a's share waits in a's session
    wait_until(lambda: _stored(twin_engine) > killed_at + n // 8, timeout=120, what="the survivor storing on")
    time.sleep(1.0)
    assert _stored(twin_engine) < n, "a's share must wait for a"
    a = Worker(twin_url, broker, *shared, "--worker", "a")
    try:
        wait_until(lambda: _stored(twin_engine) >= n, timeout=180, what="run B stored all")
        # gaps found while the other worker's share was in flight are re-checked by the
        # workers' own silence ticks once due (GAP_SETTLE)
        wait_until(lambda: _gap_checks_pending(twin_engine) == 0, timeout=90, what="deferred gap checks done")
    finally:
        a.stop()
        b.stop()

    assert stored_keys(twin_engine) == stored_keys(facility_engine)  # each exactly once
    assert len(stored_keys(twin_engine)) == n
    one = excursion_shapes(facility_engine)
    assert {s[1] for s in one} >= {"limit", "data_gap", "recurrence", "adverse_trend"}
    assert excursion_shapes(twin_engine) == one
    with unit_of_work(twin_engine) as s:
        assert s.exec(select(func.count()).select_from(QuarantinedMessage)).one() == 0
        writers = {w.rsplit(":", 2)[0] for w in s.exec(select(IngestState.writer)).all()}
    assert writers <= {"gmp-tracker-ingest-a", "gmp-tracker-ingest-b"}


def test_mosquitto_keeps_a_dead_members_messages_for_its_client_id(broker: LocalBroker) -> None:
    """What the design relies on, pinned: mosquitto 2.0 neither hands a dead member's
    unacknowledged messages to the other member nor stops sharing new ones with its session;
    the member gets them all when it reconnects under the same client id."""
    address = parse_broker_url(broker.url)
    got: dict[str, list[int]] = {"a": [], "b": [], "a2": []}

    def member(name: str, client_id: str, *, ack: bool):
        client = make_client(address, client_id=client_id, persistent=True, manual_ack=True)

        def on_message(c, _userdata, msg) -> None:
            got[name].append(int(msg.payload))
            if ack:
                c.ack(msg.mid, msg.qos)

        subscribed = threading.Event()
        client.on_message = on_message
        client.on_subscribe = lambda *_: subscribed.set()
        connect(client, address, persistent=True)
        client.loop_start()
        client.subscribe("$share/g/probe/#", qos=1)
        assert subscribed.wait(5)
        return client

    a = member("a", "member-a", ack=False)  # receives, never acknowledges, then dies
    b = member("b", "member-b", ack=True)
    publish_all(broker, [("probe/x", str(i).encode()) for i in range(20)], client_id="p1")
    wait_until(lambda: len(got["a"]) + len(got["b"]) == 20, timeout=10, what="first 20")
    assert got["a"], "round robin gives a its share"
    a.loop_stop()
    a.socket().close()  # dies without DISCONNECT, its messages unacknowledged
    publish_all(broker, [("probe/x", str(i).encode()) for i in range(20, 40)], client_id="p2")
    wait_until(lambda: len(got["b"]) >= 20, timeout=10, what="b's share")
    time.sleep(1.0)
    assert not set(got["b"]) & set(got["a"]), "mosquitto re-sent a's messages to b"
    assert len(got["b"]) == 20, "b received more than its round-robin share"
    a2 = member("a2", "member-a", ack=True)  # the same client id comes back
    wait_until(lambda: len(got["a2"]) == 20, timeout=10, what="a's share after its return")
    assert sorted(got["a2"] + got["b"]) == list(range(40))
    for client in (a2, b):
        client.disconnect()
        client.loop_stop()


def test_a_worker_takes_several_filters_the_rooms_routed_to_it(
    facility_engine: Engine, db_url: str, broker: LocalBroker
) -> None:
    """Routing by topic on mosquitto: a worker subscribes to the rooms given to it (repeated
    ``--subscription``), and stores those rooms' readings only."""
    site = "gmp/T-SITE"
    worker = Worker(
        db_url,
        broker,
        "--client-id",
        "rooms-b1-c1",
        "--subscription",
        f"{site}/T-B1/#",
        "--subscription",
        f"{site}/T-C1/#",
    )
    try:
        publish_all(
            broker,
            [
                (
                    topic(room, monitor),
                    scalar(monitor=monitor, kind="pressure", seq=i, ts=T0, value=15.0, unit="Pa")
                    if monitor.endswith("DP")
                    else particles(monitor=monitor, seq=i, ts=T0, c05=3),
                )
                for i in range(1, 21)
                for room, monitor in (("T-B1", "T-B1-DP"), ("T-C1", "T-C1-PC"), ("T-D1", "T-D1-DP"))
            ],
        )
        wait_until(lambda: _stored(facility_engine) >= 40, timeout=60, what="two rooms stored")
        time.sleep(0.5)
    finally:
        worker.stop()
    with unit_of_work(facility_engine) as s:
        monitors = set(
            s.exec(select(Monitor.code).join(RawMessage, RawMessage.monitor_id == Monitor.id)).all()
        )
    assert _stored(facility_engine) == 40
    assert monitors == {"T-B1-DP", "T-C1-PC"}


def test_several_filters_each_join_the_share_group() -> None:
    options = IngestOptions.from_settings(
        Settings(), subscription="gmp/S/R1/# gmp/S/R2/#", share_group="tracker", worker="1"
    )
    assert options.filters == ["$share/tracker/gmp/S/R1/#", "$share/tracker/gmp/S/R2/#"]
    assert options.client_id == "gmp-tracker-ingest-1"
