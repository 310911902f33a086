"""Glue between the wire and the store: parse a batch of messages, hand it to the tracker.

Every message ends as exactly one of: a stored reading, an absorbed duplicate, a status
event, or a quarantine row. Nothing raised by a bad message escapes this module.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlmodel import Session

from tracker.monitoring.intake import BatchOutcome, IncomingReading, IncomingStatus, Intake
from tracker.monitoring.quarantine import Rejection, oversized
from tracker.monitoring.snapshot import Registry
from tracker.wire.payload import (
    KnownMonitor,
    PayloadRejected,
    QuarantineCode,
    parse_reading,
    parse_status,
)
from tracker.wire.topics import STATUS_SUFFIX

log = logging.getLogger(__name__)
STATUS_TAIL = "/" + STATUS_SUFFIX


@dataclass(frozen=True, slots=True)
class InboundMessage:
    """One MQTT message as received; ``mid``/``qos`` are what we acknowledge after commit."""

    topic: str
    payload: bytes
    received_at: datetime
    mid: int = 0
    qos: int = 0
    dup: bool = False
    epoch: int = 0


class RegistryDirectory:
    """Adapts the tracker's facility snapshot to the parser's monitor directory."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._cache: dict[tuple[str, str], KnownMonitor | None] = {}

    def lookup(self, site: str, code: str) -> KnownMonitor | None:
        key = (site, code)
        if key not in self._cache:
            entry = self.registry.lookup(site, code)
            self._cache[key] = (
                None
                if entry is None
                else KnownMonitor(
                    site=entry.site_code,
                    room=entry.room_code,
                    code=entry.code,
                    kind=entry.kind,
                    channels=entry.channels,
                )
            )
        return self._cache[key]


class BatchProcessor:
    """Turns batches of inbound messages into one database transaction each."""

    def __init__(
        self,
        intake: Intake,
        *,
        max_payload_bytes: int = 16 * 1024,
        future_tolerance: timedelta = timedelta(minutes=5),
    ) -> None:
        self.intake = intake
        self.max_payload_bytes = max_payload_bytes
        self.future_tolerance = future_tolerance
        self._directory: RegistryDirectory | None = None

    def process(self, session: Session, messages: Sequence[InboundMessage]) -> BatchOutcome:
        """Parse and store; the caller commits and then acknowledges the messages."""
        registry = self.intake.refresh(session)
        if self._directory is None or self._directory.registry is not registry:
            self._directory = RegistryDirectory(registry)
        readings: list[IncomingReading] = []
        rejections: list[Rejection] = []
        statuses: list[IncomingStatus] = []
        for msg in messages:
            if len(msg.payload) > self.max_payload_bytes:  # readings and status topics alike
                rejections.append(
                    oversized(
                        received_at=msg.received_at,
                        topic=msg.topic,
                        payload=msg.payload,
                        limit=self.max_payload_bytes,
                        redelivered=msg.dup,
                    )
                )
                continue
            try:
                self._one(msg, registry, readings, statuses)
            except PayloadRejected as exc:
                rejections.append(
                    Rejection(
                        msg.received_at,
                        msg.topic,
                        msg.payload,
                        exc.reason.value,
                        exc.detail,
                        exc.monitor,
                        msg.dup,
                    )
                )
            except Exception as exc:  # a parser bug must not stop ingestion or lose the message
                log.exception("unexpected error parsing message on %s", msg.topic)
                rejections.append(
                    Rejection(
                        msg.received_at,
                        msg.topic,
                        msg.payload,
                        QuarantineCode.SCHEMA.value,
                        f"unexpected parser error {type(exc).__name__}: {exc}",
                        None,
                        msg.dup,
                    )
                )
        return self.intake.store(session, readings, rejections, statuses)

    def _one(
        self,
        msg: InboundMessage,
        registry: Registry,
        readings: list[IncomingReading],
        statuses: list[IncomingStatus],
    ) -> None:
        assert self._directory is not None
        if msg.topic.endswith(STATUS_TAIL):
            status = parse_status(msg.topic, msg.payload, self._directory, max_bytes=self.max_payload_bytes)
            entry = registry.lookup(status.monitor.site, status.monitor.code)
            statuses.append(IncomingStatus(entry.id, status.online, msg.received_at))
            return
        parsed = parse_reading(
            msg.topic,
            msg.payload,
            msg.received_at,
            self._directory,
            max_bytes=self.max_payload_bytes,
            future_tolerance=self.future_tolerance,
        )
        entry = registry.lookup(parsed.monitor.site, parsed.monitor.code)
        readings.append(
            IncomingReading(
                monitor_id=entry.id,
                seq=parsed.seq,
                event_time=parsed.event_time,
                status=parsed.status,
                values=parsed.values,
                digest=parsed.digest,
                topic=msg.topic,
                payload=msg.payload,
                received_at=msg.received_at,
                redelivered=msg.dup,
                volume_l=parsed.volume_l,
            )
        )
