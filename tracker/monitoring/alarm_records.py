"""Tables of the alarm side beyond excursions (issue 16 items 4 and 5), kept apart from their logic
so the excursion and outbox tables can point at them without importing what uses them.

* ``service_heartbeat``: each ingest worker says every few seconds that it runs, whether it is
  connected to the broker, since when it holds messages unacknowledged, and its last database
  error. The watchdog (``tracker.notify.watchdog``) reads it.
* ``system_alarm``: a condition of the system itself (the ingester, the broker, the database, a
  notification target, quarantine, a monitor's clock, calibration) that opens and closes like an
  excursion, is acknowledged like one and notifies through rules with ``types = ["system"]``.
* ``alarm_challenge``: a QA-signed window in which one monitor's readings are a test of the alarm
  chain; excursions that start in it carry its id and count nowhere (statistics, exposure links,
  the release gate, the annual report).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, Index, Text
from sqlmodel import Field, SQLModel

from tracker.core.db import UTCDateTime
from tracker.identity.signatures import Signature  # noqa: F401  (target of a foreign key)


class ServiceHeartbeat(SQLModel, table=True):
    __tablename__ = "service_heartbeat"

    #: the worker's MQTT client id (one row per ingest worker)
    name: str = Field(primary_key=True, max_length=120)
    kind: str = Field(default="ingest", max_length=20)
    beat_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    started_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    connected: bool = False
    #: when the broker connection was lost (None while connected)
    disconnected_since: datetime | None = Field(default=None, sa_type=UTCDateTime)
    #: the oldest message received and not yet acknowledged (None when none is held)
    oldest_pending_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    db_errors: int = 0
    last_db_error_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    last_db_error: str | None = Field(default=None, sa_column=Column(Text))


class SystemAlarm(SQLModel, table=True):
    __tablename__ = "system_alarm"
    __table_args__ = (Index("ix_system_alarm_condition", "kind", "subject", "status"),)

    id: int | None = Field(default=None, primary_key=True)
    site_id: int = Field(foreign_key="site.id", index=True)
    #: ingester_down | ingester_not_acknowledging | broker_lost | database_errors |
    #: database_unreachable | notification_failing | quarantine_burst | clock_drift | calibration_due
    kind: str = Field(max_length=40)
    #: what it is about: a worker, a target (secrets redacted), a monitor (``M@7d`` for calibration)
    subject: str = Field(max_length=255)
    level: str = Field(max_length=16)  # alert | action
    status: str = Field(default="open", max_length=16, index=True)  # open | closed
    #: the room concerned (a monitor's clock or calibration), None for the site as a whole
    room_id: int | None = Field(default=None, foreign_key="room.id")
    started_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    ended_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    #: the last time the watchdog saw the condition hold, and what it saw
    last_seen_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    detail: str = Field(default="", sa_column=Column(Text, nullable=False))
    acknowledged_by: str | None = Field(default=None, max_length=60)
    acknowledged_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    ack_comment: str | None = Field(default=None, sa_column=Column(Text))

    @property
    def needs_acknowledgement(self) -> bool:
        return self.acknowledged_at is None


class AlarmChallenge(SQLModel, table=True):
    __tablename__ = "alarm_challenge"

    id: int | None = Field(default=None, primary_key=True)
    site_id: int = Field(foreign_key="site.id")
    monitor_id: int = Field(foreign_key="monitor.id", index=True)
    reason: str = Field(sa_column=Column(Text, nullable=False))
    starts_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    #: the planned end; ``ended_at`` when QA ended it early
    ends_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    ended_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    started_by: str = Field(max_length=60)
    start_signature_id: int | None = Field(default=None, foreign_key="signature.id")
    #: the record as QA signed it (canonical JSON) and that signature
    record: str | None = Field(default=None, sa_column=Column(Text))
    record_signature_id: int | None = Field(default=None, foreign_key="signature.id")
    created_at: datetime = Field(sa_type=UTCDateTime, nullable=False)

    @property
    def until(self) -> datetime:
        """Where the window ends: the planned end, or earlier when QA ended it."""
        return min(self.ends_at, self.ended_at) if self.ended_at else self.ends_at

    def covers(self, at: datetime) -> bool:
        return self.starts_at <= at < self.until
