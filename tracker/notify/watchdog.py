"""The watchdog: system alarms (issue 16 item 4), run in the dispatcher's process.

Why here: the dispatcher is the process that must keep running for anyone to hear of a
problem, and it is not the ingester, so it can tell when the ingester stops. Each tick looks
at what the other processes left in the database and reconciles the open system alarms
(``tracker.monitoring.health.reconcile``): a condition newly holding opens an alarm and queues
its notifications in the same transaction; one no longer holding closes.

What it looks at:

* ``service_heartbeat`` of each ingest worker: no heartbeat for ``stale_s`` → ingester not
  running (action); connection to the broker lost for ``broker_s`` → broker lost (action);
  messages held unacknowledged for ``unacked_s`` → not acknowledging (action); a database error
  in the last ``db_error_window_s`` → database errors (alert).
* notification attempts: ``failing_after`` failures in a row to one target → target failing (alert).
* ``quarantined_message``: ``burst_count`` or more in ``burst_window_s`` → burst (alert).
* ``ingest_state``: a monitor's newest reading by event time more than ``drift_s`` away from
  when it was received (the monitor's clock, not a backlog: it is the newest reading) → drift.
* monitors' ``calibration_due``: 30 and 7 days before (alert), on the day and after (action);
  only the nearest stage is open, so each stage notifies once.

The database itself going away is seen by the dispatcher's loop (``Dispatcher.run``), which
cannot write an alarm then: it sends one directly to the system rules' targets and records it
when the database is back.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, func
from sqlmodel import Session, select

from tracker.core.db import unit_of_work
from tracker.core.timeutil import iso_utc, utcnow
from tracker.facility.models import Monitor, Site
from tracker.monitoring.alarm_records import ServiceHeartbeat
from tracker.monitoring.health import Condition, reconcile
from tracker.monitoring.ingest_state import IngestState
from tracker.monitoring.outbox import NotificationAttempt
from tracker.monitoring.quarantine import QuarantinedMessage

#: the kinds a tick decides (``database_unreachable`` is opened by the dispatcher's loop)
WATCHED = (
    "ingester_down",
    "ingester_not_acknowledging",
    "broker_lost",
    "database_errors",
    "notification_failing",
    "quarantine_burst",
    "clock_drift",
    "calibration_due",
)
#: calibration stages: (days before due, level); the nearest applying stage is the one open
CALIBRATION_STAGES = ((0, "action"), (7, "alert"), (30, "alert"))


@dataclass(frozen=True)
class Thresholds:
    stale_s: float = 30.0
    broker_s: float = 15.0
    unacked_s: float = 60.0
    db_error_window_s: float = 300.0
    failing_after: int = 3
    burst_count: int = 20
    burst_window_s: float = 300.0
    drift_s: float = 120.0
    #: a monitor's clock is judged from readings received this recently
    drift_recent_s: float = 600.0


class Watchdog:
    """Reconciles system alarms with what the database says; :meth:`tick` once per poll."""

    def __init__(
        self,
        engine: Engine,
        *,
        clock: Callable[[], datetime] = utcnow,
        thresholds: Thresholds | None = None,
    ) -> None:
        self.engine, self.clock = engine, clock
        self.t = thresholds or Thresholds()

    def tick(self) -> list[int]:
        """One look; returns the ids of the alarms it opened."""
        now = self.clock()
        with unit_of_work(self.engine) as session:
            site = session.exec(select(Site).order_by(Site.id)).first()
            if site is None:
                return []
            holding = [
                *self.heartbeat_conditions(session, now),
                *self.failing_targets(session, now),
                *self.quarantine_burst(session, now),
                *self.clock_drift(session, now),
                *self.calibration(session, site, now),
            ]
            opened = reconcile(session, site_id=site.id, kinds=WATCHED, holding=holding, now=now)
            return [a.id for a in opened]

    def heartbeat_conditions(self, session: Session, now: datetime) -> list[Condition]:
        found = []
        for hb in session.exec(select(ServiceHeartbeat).where(ServiceHeartbeat.kind == "ingest")):
            age = (now - hb.beat_at).total_seconds()
            if age > self.t.stale_s:
                found.append(
                    Condition(
                        "ingester_down",
                        hb.name,
                        "action",
                        f"last heartbeat {iso_utc(hb.beat_at)} ({age:.0f} s ago)",
                    )
                )
                continue  # what a stopped worker last said is no news
            if hb.disconnected_since and (now - hb.disconnected_since).total_seconds() > self.t.broker_s:
                found.append(
                    Condition(
                        "broker_lost",
                        hb.name,
                        "action",
                        f"disconnected since {iso_utc(hb.disconnected_since)}",
                    )
                )
            if hb.oldest_pending_at and (now - hb.oldest_pending_at).total_seconds() > self.t.unacked_s:
                found.append(
                    Condition(
                        "ingester_not_acknowledging",
                        hb.name,
                        "action",
                        f"holding messages unacknowledged since {iso_utc(hb.oldest_pending_at)}",
                    )
                )
            if hb.last_db_error_at and (now - hb.last_db_error_at).total_seconds() < self.t.db_error_window_s:
                found.append(
                    Condition(
                        "database_errors",
                        hb.name,
                        "alert",
                        f"{hb.db_errors} errors; last {iso_utc(hb.last_db_error_at)}: {hb.last_db_error}",
                    )
                )
        return found

    def failing_targets(self, session: Session, now: datetime) -> list[Condition]:
        """Targets whose last ``failing_after`` attempts (in the last day) all failed."""
        rows = session.exec(
            select(NotificationAttempt.target, NotificationAttempt.outcome, NotificationAttempt.error)
            .where(NotificationAttempt.at >= now - timedelta(days=1))
            .order_by(NotificationAttempt.id.desc())
            .limit(5000)
        ).all()
        streak: dict[str, int] = {}
        last_error: dict[str, str] = {}
        done: set[str] = set()
        for target, outcome, error in rows:
            if target in done:
                continue
            if outcome == "sent":
                done.add(target)
                continue
            streak[target] = streak.get(target, 0) + 1
            last_error.setdefault(target, error or "")
        return [
            Condition(
                "notification_failing",
                target,
                "alert",
                f"{n} failed attempts in a row; last: {last_error[target]}",
            )
            for target, n in streak.items()
            if n >= self.t.failing_after
        ]

    def quarantine_burst(self, session: Session, now: datetime) -> list[Condition]:
        since = now - timedelta(seconds=self.t.burst_window_s)
        rows = session.exec(
            select(QuarantinedMessage.reason, func.count())
            .where(QuarantinedMessage.received_at >= since)
            .group_by(QuarantinedMessage.reason)
        ).all()
        reasons = Counter({reason: int(n) for reason, n in rows})
        total = sum(reasons.values())
        if total < self.t.burst_count:
            return []
        detail = f"{total} messages in {self.t.burst_window_s:.0f} s: " + ", ".join(
            f"{r} {n}" for r, n in reasons.most_common()
        )
        return [Condition("quarantine_burst", "quarantine", "alert", detail)]

    def clock_drift(self, session: Session, now: datetime) -> list[Condition]:
        rows = session.exec(
            select(Monitor.code, Monitor.room_id, IngestState.last_event_at, IngestState.last_received_at)
            .join(Monitor, Monitor.id == IngestState.monitor_id)
            .where(IngestState.last_received_at >= now - timedelta(seconds=self.t.drift_recent_s))
        ).all()
        found = []
        for code, room_id, event_at, received_at in rows:
            if event_at is None:
                continue
            drift = (received_at - event_at).total_seconds()
            if abs(drift) > self.t.drift_s:
                way = "behind" if drift > 0 else "ahead of"
                found.append(
                    Condition(
                        "clock_drift",
                        code,
                        "alert",
                        f"newest reading {iso_utc(event_at)} received {iso_utc(received_at)}: "
                        f"clock {abs(drift):.0f} s {way} receipt time",
                        room_id,
                    )
                )
        return found

    def calibration(self, session: Session, site: Site, now: datetime) -> list[Condition]:
        today = now.astimezone(ZoneInfo(site.timezone)).date()
        found = []
        for m in session.exec(
            select(Monitor).where(
                Monitor.site_id == site.id, Monitor.active, Monitor.calibration_due.is_not(None)
            )
        ):
            days = (m.calibration_due - today).days
            for stage, level in CALIBRATION_STAGES:
                if days <= stage:
                    left = "overdue" if days < 0 else "due today" if days == 0 else f"due in {days} days"
                    found.append(
                        Condition(
                            "calibration_due",
                            f"{m.code}@{stage}d",
                            level,
                            f"{m.code}: calibration {left} ({m.calibration_due.isoformat()})",
                            m.room_id,
                        )
                    )
                    break
        return found
