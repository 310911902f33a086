"""The ingest worker: MQTT in, batched transactions out, acknowledgements after commit.

QoS 1 on a persistent session with paho's manual acknowledgement: a message is
acknowledged to the broker only once its reading (or its quarantine row) is committed,
so a crash at any point leaves it with the broker, which redelivers it; the (monitor, seq)
identity absorbs what was already stored. The paho network thread only queues bytes.

Back-pressure: at most :attr:`IngestOptions.window` messages (2 × the batch size) are held
unacknowledged. With MQTT v5 the broker is told so (Receive Maximum) and keeps the rest
queued in the persistent session. The worker also stops reading the socket while that many
are pending, whatever the protocol: mosquitto 2.0.11 honours the first window but releases
more than was acknowledged afterwards (eclipse-mosquitto/mosquitto#2301), and MQTT 3.1.1 has
no Receive Maximum. A database outage therefore never turns into unbounded memory here.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

import paho.mqtt.client as mqtt
from paho.mqtt.subscribeoptions import SubscribeOptions
from sqlalchemy import Engine
from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError, SQLAlchemyError
from sqlmodel import Session

from tracker.core.db import unit_of_work
from tracker.core.settings import Settings
from tracker.core.timeutil import utcnow
from tracker.ingest.processor import BatchProcessor, InboundMessage
from tracker.monitoring import health
from tracker.monitoring.ingest_state import default_writer
from tracker.monitoring.intake import BatchOutcome, Intake
from tracker.monitoring.quarantine import Rejection
from tracker.monitoring.rules.trends import TrendRule
from tracker.wire.mqtt import BrokerAddress, connect, make_client
from tracker.wire.payload import QuarantineCode

log = logging.getLogger(__name__)
#: errors that mean "the database is not there right now": wait and retry the same batch
TRANSIENT = (OperationalError, InterfaceError, DisconnectionError)
#: longest wait between attempts to store a held batch: once the database is back, ingest
#: (and with it the alarms) resumes within this long
MAX_RETRY_S = 5.0
#: a deadlock or serialization failure with another worker is retried almost at once
CONFLICT_RETRY_S = 0.05
#: how often a worker writes its heartbeat (``service_heartbeat``; the watchdog's system alarms)
HEARTBEAT_S = 5.0
#: PostgreSQL SQLSTATEs of a transaction that lost a lock conflict (deadlock_detected,
#: serialization_failure): the database is fine, the batch just has to run again
WRITE_CONFLICT_STATES = frozenset({"40P01", "40001"})
#: how long one attempt waits on a locked SQLite file before the batch counts as failed and is
#: retried: the connection's default (30 s, tracker.core.db) would stall the MQTT loop, SIGTERM and
#: the keepalive for that long
SQLITE_LOCK_WAIT_MS = 5000


def is_write_conflict(exc: BaseException) -> bool:
    """A transaction rolled back by a lock conflict with another writer, not an outage."""
    return getattr(getattr(exc, "orig", None), "sqlstate", None) in WRITE_CONFLICT_STATES


@dataclass
class IngestStats:
    received: int = 0
    stored: int = 0
    duplicates: int = 0
    quarantined: int = 0
    batches: int = 0
    db_errors: int = 0
    connected: bool = False
    #: messages held unacknowledged now, and the most ever held (the back-pressure bound)
    pending: int = 0
    max_pending: int = 0

    def line(self) -> str:
        """One log line the operator (and the fault tests, from a subprocess) can read."""
        return (
            f"ingest stats: received={self.received} stored={self.stored} "
            f"duplicates={self.duplicates} quarantined={self.quarantined} "
            f"batches={self.batches} pending={self.pending} max_pending={self.max_pending} "
            f"db_errors={self.db_errors} connected={self.connected}"
        )


class SharedSubscriptionError(ValueError):
    """A share-group setting that cannot work; ``key`` names its text in tracker.core.i18n."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def shared_filter(group: str, topic_filter: str) -> str:
    """``$share/GROUP/filter`` (MQTT v5 §4.8.2); a filter that is shared already is kept."""
    if topic_filter.startswith("$share/"):
        return topic_filter
    if not group or any(c in group for c in "/+#"):
        raise SharedSubscriptionError("shared_bad_group")
    return f"$share/{group}/{topic_filter}"


@dataclass(frozen=True)
class IngestOptions:
    client_id: str = "gmp-tracker-ingest"
    subscription: str = "gmp/#"
    protocol: int = 5
    batch_size: int = 1000
    linger_s: float = 0.05
    max_payload_bytes: int = 16 * 1024
    future_tolerance: timedelta = timedelta(minutes=5)
    #: overrides of the sites' facility-file rules, for tests and benchmarks only (``None``:
    #: each site's ``[rules]`` decide: tracker.facility.policy)
    close_after: int | None = None
    ca_file: str | None = None
    gap_factor: float | None = None
    gap_check_s: float = 5.0
    trend_alerts: int | None = None
    trend_window_h: float | None = None
    stats_interval_s: float = 60.0

    @property
    def filters(self) -> list[str]:
        """The topic filters, separated by whitespace in ``subscription`` (a worker may take
        several, e.g. the rooms routed to it: docs/scale-out.md)."""
        return self.subscription.split()

    @property
    def window(self) -> int:
        """Most messages held unacknowledged: the batch being stored and the next one."""
        return min(2 * self.batch_size, 65535)

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        subscription: str | None = None,
        client_id: str | None = None,
        share_group: str | None = None,
        worker: str | None = None,
    ) -> IngestOptions:
        """Options from TRACKER_* settings; explicit arguments win.

        With a share group the subscription becomes ``$share/GROUP/filter`` and the client
        id must be fixed per worker (``worker`` appended to the configured id): the broker
        keeps each member's unacknowledged messages in its session (mosquitto hands them to
        no other member), so a worker that died must come back under the same id.
        """
        filters = (subscription or settings.mqtt_subscription).split() or ["gmp/#"]
        share_group = share_group or settings.mqtt_share_group
        worker = worker or settings.ingest_worker
        if worker and not client_id:
            client_id = f"{settings.mqtt_client_id}-{worker}"
        if share_group or any(f.startswith("$share/") for f in filters):
            if not client_id:  # workers under one id would take each other's session over
                raise SharedSubscriptionError("shared_needs_worker")
            if share_group:
                filters = [shared_filter(share_group, f) for f in filters]
        subscription = " ".join(filters)
        return cls(
            client_id=client_id or settings.mqtt_client_id,
            subscription=subscription,
            protocol=settings.mqtt_protocol,
            batch_size=settings.ingest_batch_size,
            linger_s=settings.ingest_linger_ms / 1000,
            max_payload_bytes=settings.max_payload_bytes,
            future_tolerance=timedelta(seconds=settings.future_tolerance_s),
            ca_file=settings.mqtt_ca_file,
            gap_check_s=settings.gap_check_s,
            stats_interval_s=settings.ingest_stats_s,
        )


class Ingester:
    """One ingest worker; :meth:`run` blocks until ``stop`` is set.

    Single-threaded on purpose: the same thread reads the socket (``client.loop``), stores
    batches and sends the acknowledgements, so parsing and paho never fight over the GIL.
    """

    def __init__(
        self,
        engine: Engine,
        broker: BrokerAddress,
        options: IngestOptions,
        *,
        on_batch: Callable[[BatchOutcome], None] | None = None,
    ) -> None:
        self.engine = engine
        self.broker = broker
        self.options = options
        self.on_batch = on_batch
        self.stats = IngestStats()
        self.pending: list[InboundMessage] = []
        self._pending_since = 0.0
        #: connection epoch: a message is acknowledged only on the connection it came in on
        self._epoch = 0
        self.intake = Intake(
            close_after=options.close_after,
            gap_factor=options.gap_factor,
            writer=default_writer(options.client_id),
            trend=TrendRule(
                alerts=options.trend_alerts,
                window=None if options.trend_window_h is None else timedelta(hours=options.trend_window_h),
            ),
        )
        self._next_silence_check = 0.0
        self.heartbeat_s = HEARTBEAT_S
        self._next_beat = 0.0
        self._started_at = utcnow()
        #: wall-clock times the heartbeat reports (the monotonic ones above drive the loop)
        self._disconnected_since = self._started_at
        self._pending_since_wall = None
        self._db_error: tuple[object, str] | None = None
        self._next_stats = time.monotonic() + options.stats_interval_s
        self._sqlite = engine.dialect.name == "sqlite"
        self.processor = BatchProcessor(
            self.intake,
            max_payload_bytes=options.max_payload_bytes,
            future_tolerance=options.future_tolerance,
        )
        self.client = make_client(
            broker,
            client_id=options.client_id,
            protocol=options.protocol,
            persistent=True,
            manual_ack=True,
            ca_file=options.ca_file,
        )
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        #: set once the broker has confirmed the subscription (tests and the demo wait on it)
        self.subscribed = threading.Event()

    # paho callbacks: keep them tiny, never raise.
    def _on_connect(self, client, _userdata, _flags, reason_code, _properties) -> None:
        if reason_code.is_failure:
            log.error("broker %s refused connection: %s", self.broker.display(), reason_code)
            return
        self._epoch += 1
        self.stats.connected = True
        self._disconnected_since = None
        log.info("connected to %s, subscribing to %s", self.broker.display(), self.options.subscription)
        if client.protocol == mqtt.MQTTv5:
            client.subscribe([(f, SubscribeOptions(qos=1)) for f in self.options.filters])
        else:
            client.subscribe([(f, 1) for f in self.options.filters])

    def _on_subscribe(self, _client, _userdata, _mid, reason_codes, _properties) -> None:
        if any(rc.is_failure for rc in reason_codes):
            log.error("broker refused subscription %s: %s", self.options.subscription, reason_codes)
            return
        log.info("subscription to %s confirmed", self.options.subscription)
        self.subscribed.set()

    def _on_disconnect(self, _client, _userdata, _flags, reason_code, _properties) -> None:
        self.stats.connected = False
        self._disconnected_since = self._disconnected_since or utcnow()
        if reason_code != 0:
            log.warning("disconnected from broker (%s); reconnecting with backoff", reason_code)

    def _on_message(self, _client, _userdata, msg: mqtt.MQTTMessage) -> None:
        if not self.pending:
            self._pending_since = time.monotonic()
            self._pending_since_wall = utcnow()
        self.pending.append(
            InboundMessage(
                topic=msg.topic,
                payload=msg.payload,
                received_at=utcnow(),
                mid=msg.mid,
                qos=msg.qos,
                dup=bool(msg.dup),
                epoch=self._epoch,
            )
        )
        self.stats.pending = len(self.pending)
        self.stats.max_pending = max(self.stats.max_pending, self.stats.pending)

    # network I/O
    def _pump(self, timeout: float, stop: threading.Event) -> None:
        """One round of socket I/O; a lost connection is re-established with backoff."""
        if self.client.loop(timeout=timeout) != mqtt.MQTT_ERR_SUCCESS:
            self._connect_with_backoff(stop, reconnect=True)

    def _connect_with_backoff(self, stop: threading.Event, *, reconnect: bool = False) -> bool:
        """Connect (or reconnect); a broker that is down is waited for, not a crash."""
        delay = 1.0
        while not stop.is_set():
            try:
                if reconnect:
                    self.client.reconnect()
                else:
                    connect(self.client, self.broker, persistent=True, receive_maximum=self.options.window)
                return True
            except OSError as exc:
                log.warning(
                    "broker %s not reachable (%s); retrying in %.0fs", self.broker.display(), exc, delay
                )
                self._beat()  # still running, not connected: the watchdog tells the two apart
                stop.wait(delay)
                delay = min(delay * 2, 30.0)
        return False

    def _due(self) -> bool:
        return bool(self.pending) and (
            len(self.pending) >= self.options.batch_size
            or time.monotonic() - self._pending_since >= self.options.linger_s
        )

    def _may_read(self) -> bool:
        """Read the socket only below the bound; beyond it the broker (and TCP) hold the rest."""
        return len(self.pending) < self.options.window

    # storage
    @contextmanager
    def _transaction(self) -> Iterator[Session]:
        """A unit of work that gives up on a locked SQLite file after a short wait."""
        with unit_of_work(self.engine) as session:
            if self._sqlite:
                session.connection().exec_driver_sql(f"PRAGMA busy_timeout={SQLITE_LOCK_WAIT_MS}")
            yield session

    def _store(self, batch: list[InboundMessage]) -> BatchOutcome:
        """One transaction; a message the database itself refuses (a value no check foresaw)
        must not block every later one, so such a batch is retried message by message and
        the offender is quarantined with the database's reason."""
        try:
            with self._transaction() as session:
                return self.processor.process(session, batch)
        except TRANSIENT:
            raise
        except SQLAlchemyError as exc:
            self.intake.forget()
            if len(batch) == 1:
                log.warning("database refused message on %s: %s", batch[0].topic, exc)
                with self._transaction() as session:
                    return self.intake.store(
                        session,
                        [],
                        [
                            Rejection(
                                batch[0].received_at,
                                batch[0].topic,
                                batch[0].payload,
                                QuarantineCode.SCHEMA.value,
                                f"database refused it: {type(exc).__name__}: {getattr(exc, 'orig', exc)}",
                                None,
                                batch[0].dup,
                            )
                        ],
                    )
        total = BatchOutcome()
        for msg in batch:
            one = self._store([msg])
            total.stored += one.stored
            total.duplicates += one.duplicates
            total.quarantined += one.quarantined
        return total

    def _commit(self, stop: threading.Event) -> bool:
        """Store the pending batch, retrying while the database is unavailable; ack after commit."""
        batch = self.pending[: self.options.batch_size]
        delay = 0.5
        while True:
            try:
                outcome = self._store(batch)
                break
            except TRANSIENT as exc:
                self.stats.db_errors += 1
                self.intake.forget()
                if not is_write_conflict(exc):
                    self._db_error = (utcnow(), f"{type(getattr(exc, 'orig', exc)).__name__}: {exc}"[:500])
                if is_write_conflict(exc):  # another worker holds the monitors: retry soon
                    log.info(
                        "batch of %d conflicted with another worker's transaction (%s); retrying",
                        len(batch),
                        type(getattr(exc, "orig", exc)).__name__,
                    )
                    delay = CONFLICT_RETRY_S
                else:
                    log.warning(
                        "database unavailable; batch of %d kept unacknowledged (%d "
                        "pending, bound %d), retrying in %.1fs",
                        len(batch),
                        len(self.pending),
                        self.options.window,
                        delay,
                        exc_info=True,
                    )
                if stop.is_set():
                    return False  # leave it unacknowledged: the broker redelivers it
                deadline = time.monotonic() + delay
                while time.monotonic() < deadline and not stop.is_set():
                    if self._may_read():  # keep the connection alive meanwhile
                        self._pump(min(0.1, delay), stop)
                    else:  # full: let the broker keep the rest
                        self.client.loop_misc()  # but keep the keepalive pings going
                        stop.wait(min(0.1, delay))
                    self._report_stats()
                delay = min(delay * 2, MAX_RETRY_S)
        del self.pending[: len(batch)]
        self.stats.pending = len(self.pending)
        if self.pending:
            self._pending_since = time.monotonic()
            self._pending_since_wall = self.pending[0].received_at
        else:
            self._pending_since_wall = None
        for msg in batch:
            if msg.qos and msg.epoch == self._epoch:
                self.client.ack(msg.mid, msg.qos)
        self.stats.batches += 1
        self.stats.received += len(batch)
        self.stats.stored += outcome.stored
        self.stats.duplicates += outcome.duplicates
        self.stats.quarantined += outcome.quarantined
        if self.on_batch:
            self.on_batch(outcome)
        return True

    def _check_silence(self) -> None:
        """Every ``gap_check_s``: live monitors that went quiet get a data-gap excursion, and
        deferred gap stretches that are due are re-checked (each in its own transaction)."""
        if time.monotonic() < self._next_silence_check:
            return
        self._next_silence_check = time.monotonic() + self.options.gap_check_s
        for what, check in (
            ("silence check", self.intake.check_silence),
            ("gap re-check", self.intake.recheck_gaps),
        ):
            try:
                with self._transaction() as session:
                    check(session)
            except TRANSIENT:
                self.intake.forget()
                log.warning("database unavailable for the %s; trying again later", what)
            except SQLAlchemyError:  # rolled back: what it would have drawn stays due
                self.intake.forget()
                log.exception("%s failed; ingest goes on, trying again at the next tick", what)

    def _beat(self) -> None:
        """Every ``heartbeat_s``: say that this worker runs, whether it is connected, since when
        it holds messages unacknowledged and its last database error (the watchdog reads it)."""
        if time.monotonic() < self._next_beat:
            return
        self._next_beat = time.monotonic() + self.heartbeat_s
        at, error = self._db_error or (None, None)
        row = {
            "name": self.options.client_id,
            "kind": "ingest",
            "beat_at": utcnow(),
            "started_at": self._started_at,
            "connected": self.stats.connected,
            "disconnected_since": self._disconnected_since,
            "oldest_pending_at": self._pending_since_wall,
            "db_errors": self.stats.db_errors,
            "last_db_error_at": at,
            "last_db_error": error,
        }
        try:
            with self.engine.begin() as connection:
                health.beat(connection, row)
        except SQLAlchemyError:  # the database away: the stale heartbeat is itself the alarm
            log.warning("heartbeat not written (database unavailable)")

    def _report_stats(self) -> None:
        """Every ``stats_interval_s``: one INFO line with the counters and the pending bound."""
        if time.monotonic() >= self._next_stats:
            self._next_stats = time.monotonic() + self.options.stats_interval_s
            log.info("%s", self.stats.line())

    def run(self, stop: threading.Event) -> IngestStats:
        """Connect, then store batches until ``stop``; the last batch is committed first."""
        with unit_of_work(self.engine) as session:
            self.intake.refresh(session)
        if not self._connect_with_backoff(stop):
            return self.stats
        try:
            while not stop.is_set():
                if self._may_read():
                    self._pump(0.05, stop)
                if self._due() and not self._commit(stop):
                    break
                self._check_silence()
                self._beat()
                self._report_stats()
            while self.pending and self._commit(stop):
                pass
        finally:
            self.client.disconnect()
            self.client.loop(timeout=0.1)  # flush the last acknowledgements and DISCONNECT
            log.info("%s", self.stats.line())
        return self.stats
