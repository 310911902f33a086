"""The ingest worker: MQTT in, batched transactions out, acknowledgements after commit.

QoS 1 on a persistent session with paho's manual acknowledgement: a message is
acknowledged to the broker only once its reading (or its quarantine row) is committed,
so a crash at any point leaves it with the broker, which redelivers it; the (monitor, seq)
identity absorbs what was already stored. The paho network thread only queues bytes.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import paho.mqtt.client as mqtt
from paho.mqtt.subscribeoptions import SubscribeOptions
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from sensors.ingest import BatchProcessor, InboundMessage
from sensors.mqtt import BrokerAddress, connect, make_client
from tracker.db import unit_of_work
from tracker.intake import BatchOutcome, Intake
from tracker.settings import Settings
from tracker.timeutil import utcnow

log = logging.getLogger(__name__)


@dataclass
class IngestStats:
    received: int = 0
    stored: int = 0
    duplicates: int = 0
    quarantined: int = 0
    batches: int = 0
    db_errors: int = 0
    connected: bool = False


@dataclass(frozen=True)
class IngestOptions:
    client_id: str = "gmp-tracker-ingest"
    subscription: str = "gmp/#"
    protocol: int = 5
    batch_size: int = 1000
    linger_s: float = 0.05
    max_payload_bytes: int = 16 * 1024
    future_tolerance: timedelta = timedelta(minutes=5)
    close_after: int = 3
    ca_file: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings, *, subscription: str | None = None,
                      client_id: str | None = None) -> IngestOptions:
        """Options from TRACKER_* settings; explicit arguments win."""
        return cls(client_id=client_id or settings.mqtt_client_id,
                   subscription=subscription or settings.mqtt_subscription,
                   protocol=settings.mqtt_protocol, batch_size=settings.ingest_batch_size,
                   linger_s=settings.ingest_linger_ms / 1000,
                   max_payload_bytes=settings.max_payload_bytes,
                   future_tolerance=timedelta(seconds=settings.future_tolerance_s),
                   close_after=settings.excursion_close_after, ca_file=settings.mqtt_ca_file)


class Ingester:
    """One ingest worker; :meth:`run` blocks until ``stop`` is set."""

    def __init__(self, engine: Engine, broker: BrokerAddress, options: IngestOptions,
                 *, on_batch: Callable[[BatchOutcome], None] | None = None) -> None:
        self.engine = engine
        self.broker = broker
        self.options = options
        self.on_batch = on_batch
        self.stats = IngestStats()
        self.inbox: queue.Queue[InboundMessage] = queue.Queue()
        self.intake = Intake(close_after=options.close_after)
        self.processor = BatchProcessor(self.intake, max_payload_bytes=options.max_payload_bytes,
                                        future_tolerance=options.future_tolerance)
        self.client = make_client(broker, client_id=options.client_id, protocol=options.protocol,
                                  persistent=True, manual_ack=True, ca_file=options.ca_file)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        #: set once the broker has confirmed the subscription (tests and the demo wait on it)
        self.subscribed = threading.Event()

    # paho callbacks run on the network thread: keep them tiny, never raise.
    def _on_connect(self, client, _userdata, _flags, reason_code, _properties) -> None:
        if reason_code.is_failure:
            log.error("broker %s refused connection: %s", self.broker.display(), reason_code)
            return
        self.stats.connected = True
        log.info("connected to %s, subscribing to %s", self.broker.display(),
                 self.options.subscription)
        if client.protocol == mqtt.MQTTv5:
            client.subscribe(self.options.subscription, options=SubscribeOptions(qos=1))
        else:
            client.subscribe(self.options.subscription, qos=1)

    def _on_subscribe(self, _client, _userdata, _mid, reason_codes, _properties) -> None:
        if any(rc.is_failure for rc in reason_codes):
            log.error("broker refused subscription %s: %s", self.options.subscription, reason_codes)
            return
        log.info("subscription to %s confirmed", self.options.subscription)
        self.subscribed.set()

    def _on_disconnect(self, _client, _userdata, _flags, reason_code, _properties) -> None:
        self.stats.connected = False
        if reason_code != 0:
            log.warning("disconnected from broker (%s); paho reconnects with backoff", reason_code)

    def _on_message(self, _client, _userdata, msg: mqtt.MQTTMessage) -> None:
        self.inbox.put(InboundMessage(topic=msg.topic, payload=bytes(msg.payload),
                                      received_at=utcnow(), mid=msg.mid, qos=msg.qos,
                                      dup=bool(msg.dup)))

    def _next_batch(self, stop: threading.Event) -> list[InboundMessage]:
        try:
            first = self.inbox.get(timeout=0.2)
        except queue.Empty:
            return []
        batch = [first]
        deadline = time.monotonic() + self.options.linger_s
        while len(batch) < self.options.batch_size:
            try:
                batch.append(self.inbox.get_nowait())
                continue
            except queue.Empty:
                pass
            remaining = deadline - time.monotonic()
            if remaining <= 0 or stop.is_set():
                break
            try:
                batch.append(self.inbox.get(timeout=remaining))
            except queue.Empty:
                break
        return batch

    def _commit(self, batch: list[InboundMessage], stop: threading.Event) -> bool:
        """Store one batch, retrying on database errors; ack only after commit."""
        delay = 0.5
        while True:
            try:
                with unit_of_work(self.engine) as session:
                    outcome = self.processor.process(session, batch)
                break
            except SQLAlchemyError:
                self.stats.db_errors += 1
                self.intake.forget()
                log.exception("database error; batch of %d kept unacknowledged, retrying in %.1fs",
                              len(batch), delay)
                if stop.wait(delay):
                    return False  # leave the batch unacknowledged: the broker redelivers it
                delay = min(delay * 2, 30.0)
        for msg in batch:
            if msg.qos:
                self.client.ack(msg.mid, msg.qos)
        self.stats.batches += 1
        self.stats.received += len(batch)
        self.stats.stored += outcome.stored
        self.stats.duplicates += outcome.duplicates
        self.stats.quarantined += outcome.quarantined
        if self.on_batch:
            self.on_batch(outcome)
        return True

    def _connect_with_backoff(self, stop: threading.Event) -> bool:
        """First connection: a broker that is not up yet is waited for, not a crash.

        Later disconnects are paho's job (``reconnect_delay_set`` in ``make_client``).
        """
        delay = 1.0
        while not stop.is_set():
            try:
                connect(self.client, self.broker, persistent=True)
                return True
            except OSError as exc:
                log.warning("broker %s not reachable (%s); retrying in %.0fs",
                            self.broker.display(), exc, delay)
                stop.wait(delay)
                delay = min(delay * 2, 30.0)
        return False

    def run(self, stop: threading.Event) -> IngestStats:
        """Connect, then store batches until ``stop``; the last batch is committed first."""
        with unit_of_work(self.engine) as session:
            self.intake.refresh(session)
        if not self._connect_with_backoff(stop):
            return self.stats
        self.client.loop_start()
        try:
            while not stop.is_set():
                batch = self._next_batch(stop)
                if batch and not self._commit(batch, stop):
                    break
        finally:
            self.client.disconnect()
            self.client.loop_stop()
        return self.stats
