"""Real processes for the fault-injection suite (tests/test_faults.py): the ingester as a
subprocess that reports its counters on stderr, a paced QoS 1 publisher that survives a broker
restart, a database outage for SQLite and PostgreSQL, and an in-process reference run."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

import paho.mqtt.client as mqtt
from sqlalchemy import Engine, create_engine, func, text
from sqlalchemy.engine import make_url
from sqlmodel import select

from tracker.core.db import unit_of_work
from tracker.core.timeutil import utcnow
from tracker.facility.models import Monitor
from tracker.ingest.processor import BatchProcessor, InboundMessage
from tracker.monitoring.excursions import list_excursions
from tracker.monitoring.intake import Intake
from tracker.monitoring.readings import RawMessage
from tracker.monitoring.rollups import RollupHourly
from tracker.wire.broker import LocalBroker
from tracker.wire.mqtt import connect, make_client, parse_broker_url

STATS = re.compile(r"ingest stats: (.*)$")


@dataclass
class StatsLine:
    at: float  # time.monotonic() when the test read it
    values: dict[str, int]


@dataclass
class IngesterProcess:
    """``python -m tracker.cli ingest`` with its stderr read line by line on a thread."""

    db_url: str
    broker: LocalBroker
    client_id: str = "fault-ingest"
    env: dict[str, str] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)
    stats: list[StatsLine] = field(default_factory=list)
    proc: subprocess.Popen | None = None

    def start(self, *, timeout: float = 30.0) -> IngesterProcess:
        env = {
            **os.environ,
            "TRACKER_DATABASE_URL": self.db_url,
            "TRACKER_MQTT_URL": self.broker.url,
            "TRACKER_MQTT_CLIENT_ID": self.client_id,
            "TRACKER_INGEST_STATS_S": "0.5",
            "TRACKER_LANG": "en",
            **self.env,
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tracker.cli", "ingest"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        threading.Thread(target=self._read, args=(self.proc,), daemon=True).start()
        self.wait_subscribed(1, timeout=timeout)
        return self

    def _read(self, proc: subprocess.Popen) -> None:
        for line in proc.stderr:
            self.lines.append(line.rstrip("\n"))
            match = STATS.search(line)
            if match:
                values = {
                    k: (int(v) if v.isdigit() else int(v == "True"))
                    for k, v in (kv.split("=") for kv in match.group(1).split())
                }
                self.stats.append(StatsLine(time.monotonic(), values))

    def subscriptions(self) -> int:
        return sum("subscription to" in ln and "confirmed" in ln for ln in self.lines)

    def wait_subscribed(self, n: int, *, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while self.subscriptions() < n:
            assert self.proc is not None
            assert self.proc.poll() is None, "ingester exited:\n" + "\n".join(self.lines[-30:])
            assert time.monotonic() < deadline, f"ingester did not subscribe ({n}) in {timeout}s"
            time.sleep(0.05)

    def last_stats(self) -> dict[str, int]:
        return self.stats[-1].values if self.stats else {}

    def errors(self) -> list[str]:
        """Log records at ERROR or worse (a traceback under a WARNING is an expected retry)."""
        return [ln for ln in self.lines if " ERROR " in ln or " CRITICAL " in ln]

    def stop(self) -> dict[str, int]:
        """SIGTERM: the worker commits what it holds and exits 0; its last stats line is read."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(30) == 0, "ingester did not stop cleanly:\n" + "\n".join(self.lines[-30:])
        time.sleep(0.2)  # let the reader thread take the last lines
        return self.last_stats()

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def __enter__(self) -> IngesterProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


class Publisher:
    """A QoS 1 publisher on a persistent session: paho keeps what the broker has not
    acknowledged and sends it again after a reconnect, so a broker restart loses nothing."""

    def __init__(self, broker: LocalBroker, *, client_id: str, max_outstanding: int = 1000) -> None:
        self.address = parse_broker_url(broker.url)
        self.client = make_client(self.address, client_id=client_id, protocol=broker.protocol)
        self.client.reconnect_delay_set(min_delay=1, max_delay=2)
        self.max_outstanding = max_outstanding
        self.outstanding: list[mqtt.MQTTMessageInfo] = []
        self.published = 0
        self.connected = threading.Event()
        self.client.on_connect = lambda *_a: self.connected.set()
        self.client.on_disconnect = lambda *_a: self.connected.clear()

    def __enter__(self) -> Publisher:
        connect(self.client, self.address, persistent=True)
        self.client.loop_start()
        assert self.connected.wait(10), "publisher did not connect"
        return self

    def publish(self, topic: str, payload: bytes) -> None:
        info = self.client.publish(topic, payload, qos=1)
        if info.rc == mqtt.MQTT_ERR_NO_CONN:  # queued by paho, sent after the reconnect
            info.rc = mqtt.MQTT_ERR_SUCCESS
        assert info.rc == mqtt.MQTT_ERR_SUCCESS, mqtt.error_string(info.rc)
        self.outstanding.append(info)
        self.published += 1
        if len(self.outstanding) >= self.max_outstanding:
            self.drain()

    def drain(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        for info in self.outstanding:
            while not info.is_published():
                assert time.monotonic() < deadline, "broker did not acknowledge in time"
                info.wait_for_publish(0.5)
        self.outstanding.clear()

    def __exit__(self, *exc) -> None:
        try:
            if exc[0] is None:
                self.drain()
        finally:
            self.client.disconnect()
            self.client.loop_stop()


def publish_paced(
    broker: LocalBroker,
    messages: Sequence[tuple[str, bytes]],
    *,
    client_id: str,
    rate: float | None = None,
    progress: list[int] | None = None,
) -> None:
    """Publish ``messages`` at ``rate`` per second (None: as fast as possible), every one
    acknowledged by the broker before returning; ``progress[0]`` counts what went out."""
    started = time.monotonic()
    with Publisher(broker, client_id=client_id) as pub:
        for i, (topic, payload) in enumerate(messages):
            if rate:
                delay = started + i / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            pub.publish(topic, payload)
            if progress is not None:
                progress[0] = pub.published


class DatabaseOutage:
    """Make the database refuse the ingester: SQLite, another process holds the write lock
    (``BEGIN EXCLUSIVE``; readers still read, in WAL mode); PostgreSQL, the database stops
    accepting connections and its sessions are terminated."""

    LOCKER = (
        "import sqlite3, sys\n"
        "con = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=60)\n"
        "con.execute('BEGIN EXCLUSIVE')\n"
        "print('locked', flush=True)\n"
        "sys.stdin.readline()\n"
        "con.execute('COMMIT')\n"
    )

    def __init__(self, db_url: str) -> None:
        self.url = make_url(db_url)
        self._locker: subprocess.Popen | None = None

    @property
    def dialect(self) -> str:
        return self.url.get_backend_name()

    def _admin(self) -> Engine:
        return create_engine(self.url.set(database="postgres"), isolation_level="AUTOCOMMIT")

    def begin(self) -> None:
        if self.dialect == "sqlite":
            self._locker = subprocess.Popen(
                [sys.executable, "-c", self.LOCKER, self.url.database],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            assert self._locker.stdout.readline().strip() == "locked"
            return
        name = self.url.database
        engine = self._admin()
        with engine.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :db AND pid <> pg_backend_pid()"
                ),
                {"db": name},
            )
        engine.dispose()

    def end(self) -> None:
        if self.dialect == "sqlite":
            assert self._locker is not None
            self._locker.stdin.write("\n")
            self._locker.stdin.flush()
            assert self._locker.wait(10) == 0
            return
        engine = self._admin()
        with engine.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{self.url.database}" ALLOW_CONNECTIONS true'))
        engine.dispose()


def stored_count(engine: Engine) -> int:
    with unit_of_work(engine) as s:
        return s.exec(select(func.count()).select_from(RawMessage)).one()


def stored_keys(engine: Engine) -> set[tuple[str, int]]:
    """Every stored reading as (monitor code, seq)."""
    with unit_of_work(engine) as s:
        rows = s.exec(
            select(Monitor.code, RawMessage.seq).join(Monitor, Monitor.id == RawMessage.monitor_id)
        ).all()
    return {(code, seq) for code, seq in rows}


def episodes(engine: Engine, *, include_superseded: bool = False) -> list[tuple]:
    """Excursions without row ids and bookkeeping times: what two runs must agree on."""
    with unit_of_work(engine) as s:
        rows = list_excursions(s, include_superseded=include_superseded)
    return sorted(
        (
            r["type"],
            r["monitor"],
            r["channel"] or "",
            r["level"],
            r["state"],
            r["started_at"],
            r["ended_at"] or "",
            r["peak"] if r["ended_at"] else None,
            r["limit"],
            r["readings"],
            r["status"],
            r["direction"],
        )
        for r in rows
    )


def rollups(engine: Engine) -> list[tuple]:
    """Hourly rollups by monitor code; the sum rounded (its float order depends on arrival)."""
    with unit_of_work(engine) as s:
        rows = s.exec(
            select(Monitor.code, RollupHourly).join(Monitor, Monitor.id == RollupHourly.monitor_id)
        ).all()
    return sorted(
        (
            code,
            r.channel,
            r.hour,
            r.count,
            r.invalid,
            r.n_alert,
            r.n_action,
            r.vmin,
            r.vmax,
            round(r.vsum, 6),
            json.dumps(json.loads(r.hist), sort_keys=True),
        )
        for code, r in rows
    )


def ingest_directly(
    engine: Engine,
    messages: Iterable[tuple[str, bytes]],
    *,
    batch_size: int = 1000,
    delay: timedelta = timedelta(0),
) -> None:
    """The reference run: the same parsing and intake as the ingester, no broker, no fault."""
    processor = BatchProcessor(Intake())
    batch: list[InboundMessage] = []

    def flush() -> None:
        with unit_of_work(engine) as session:
            processor.process(session, batch)
        batch.clear()

    for topic, payload in messages:
        batch.append(InboundMessage(topic=topic, payload=payload, received_at=utcnow() + delay))
        if len(batch) >= batch_size:
            flush()
    if batch:
        flush()
