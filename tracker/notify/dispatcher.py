"""Deliver the notification outbox: retries with backoff, every attempt logged.

Each row is handled in its own unit of work: the attempt, its outcome and any follow-up
(the next reminder) commit together. A row is marked sent in the transaction that logs the
successful attempt; a dispatcher killed before that commit finds the row still pending and
sends it once more — the only window in which a message can repeat is between a channel
accepting it and that commit (docs/alarms.md). A row killed before its send is delivered
once after restart; a row is never lost because nothing is removed until it is sent.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta

import apprise
from sqlalchemy import Engine
from sqlmodel import Session, select
from typing_extensions import TypedDict

from tracker.core.db import unit_of_work
from tracker.core.timeutil import iso_utc, utcnow
from tracker.facility.models import Monitor, Room, Site
from tracker.facility.notify import fill_secrets, redact
from tracker.facility.policy import notify_settings_of
from tracker.monitoring.excursions import Excursion
from tracker.monitoring.outbox import (
    CANCELLED,
    FAILED,
    PENDING,
    SENT,
    NotificationAttempt,
    NotificationOutbox,
    queue,
)
from tracker.notify.messages import Message, compose

log = logging.getLogger(__name__)

#: sends one message to one Apprise URL; returns an error text, or None when delivered
Sender = Callable[[str, Message], str | None]
MAX_ATTEMPTS = 5
BACKOFF_S = 2.0
BACKOFF_MAX_S = 300.0


def apprise_send(url: str, message: Message) -> str | None:
    """Send through Apprise, keeping what it logged as the error of a failed attempt."""
    sender = apprise.Apprise()
    if not sender.add(url):
        return "not a valid Apprise URL"
    with apprise.LogCapture(level=logging.WARNING) as captured:
        ok = sender.notify(title=message.title, body=message.body)
        text = captured.getvalue().strip()
    return None if ok else (text or "delivery failed")[-500:]


def _settled(ex: Excursion, step: str) -> bool:
    """An escalation or reminder no longer needed: acknowledged at its level, or superseded."""
    if step == "escalate" or step.startswith("remind"):
        return ex.status == "superseded" or not ex.needs_acknowledgement
    return False


def _next_reminder(row: NotificationOutbox, now: datetime) -> dict | None:
    if row.repeat_every_s <= 0 or row.step == "escalate":
        return None
    base, _, n = row.key.partition(":remind:")
    number = int(n) + 1 if n else 1
    return {
        "key": f"{base}:remind:{number}",
        "site_id": row.site_id,
        "excursion_id": row.excursion_id,
        "rule": row.rule,
        "step": f"remind:{number}",
        "level": row.level,
        "target": row.target,
        "status": PENDING,
        "due_at": now + timedelta(seconds=row.repeat_every_s),
        "attempts": 0,
        "created_at": now,
        "repeat_every_s": row.repeat_every_s,
    }


class Dispatcher:
    """Delivers due outbox rows; ``run`` polls until stopped."""

    def __init__(
        self,
        engine: Engine,
        *,
        send: Sender = apprise_send,
        environ: dict[str, str] | None = None,
        clock: Callable[[], datetime] = utcnow,
        max_attempts: int = MAX_ATTEMPTS,
        backoff_s: float = BACKOFF_S,
    ) -> None:
        self.engine, self.send, self.environ, self.clock = engine, send, environ, clock
        self.max_attempts, self.backoff_s = max_attempts, backoff_s

    def due(self) -> list[int]:
        with Session(self.engine) as session:
            return list(
                session.exec(
                    select(NotificationOutbox.id)
                    .where(NotificationOutbox.status == PENDING, NotificationOutbox.due_at <= self.clock())
                    .order_by(NotificationOutbox.due_at, NotificationOutbox.id)
                    .limit(200)
                )
            )

    def run_once(self) -> int:
        """Deliver every row due now; the number handled."""
        ids = self.due()
        for row_id in ids:
            self.deliver(row_id)
        return len(ids)

    def run(self, stop: threading.Event, *, poll_s: float = 1.0) -> None:
        while not stop.is_set():
            try:
                self.run_once()
            except Exception:  # the database away: keep the worker, try again next poll
                log.exception("notification dispatch failed; retrying")
            stop.wait(poll_s)

    def deliver(self, row_id: int) -> None:
        with unit_of_work(self.engine) as session:
            row = session.get(NotificationOutbox, row_id)
            if row is None or row.status != PENDING:
                return
            ex = session.get(Excursion, row.excursion_id)
            now = self.clock()
            if _settled(ex, row.step):
                row.status = CANCELLED
                session.add(row)
                return
            error = self._send(session, row, ex)
            self._record(session, row, error, now)

    def _send(self, session: Session, row: NotificationOutbox, ex: Excursion) -> str | None:
        site = session.get(Site, row.site_id)
        settings = notify_settings_of(session, site)
        message = compose(
            ex=ex,
            site=site,
            room=session.get(Room, ex.room_id),
            monitor=session.get(Monitor, ex.monitor_id),
            level=row.level,
            step=row.step,
            language=settings.get("language", "zh-CN"),
            base_url=settings.get("base_url", ""),
        )
        try:
            url = fill_secrets(row.target, self.environ)
        except KeyError as exc:
            return f"environment variable {exc.args[0]} is not set"
        try:
            return self.send(url, message)
        except Exception as exc:  # a channel's own failure is an outcome, not a crash
            return f"{type(exc).__name__}: {exc}"[:500]

    def _record(self, session: Session, row: NotificationOutbox, error: str | None, now: datetime) -> None:
        row.attempts += 1
        session.add(
            NotificationAttempt(
                outbox_id=row.id,
                rule=row.rule,
                target=redact(row.target),
                at=now,
                outcome=SENT if error is None else FAILED,
                error=error,
            )
        )
        if error is None:
            row.status, row.sent_at, row.last_error = SENT, now, None
            reminder = _next_reminder(row, now)
            session.add(row)
            session.flush()
            if reminder:
                queue(session.connection(), [reminder])
            return
        row.last_error = error
        if row.attempts >= self.max_attempts:
            row.status = FAILED
        else:
            delay = min(self.backoff_s * 2 ** (row.attempts - 1), BACKOFF_MAX_S)
            row.due_at = now + timedelta(seconds=delay)
        log.warning(
            "notification %s to %s failed (attempt %d): %s", row.key, redact(row.target), row.attempts, error
        )
        session.add(row)


def failed_targets(session: Session) -> list[NotificationOutbox]:
    """Rows whose latest attempt failed (retrying or given up), newest first: shown on web and CLI."""
    return list(
        session.exec(
            select(NotificationOutbox)
            .where(NotificationOutbox.last_error.is_not(None), NotificationOutbox.status != SENT)
            .order_by(NotificationOutbox.id.desc())
        )
    )


class FailedNotificationDoc(TypedDict):
    """A notification whose last attempt failed, as the CLI and the JSON API show it."""

    id: int
    excursion: int
    rule: str
    step: str
    target: str  # secrets redacted
    status: str  # pending (retrying) | failed (given up)
    attempts: int
    last_error: str | None
    due_at: str | None


def failed_target_docs(session: Session) -> list[FailedNotificationDoc]:
    """:func:`failed_targets` as JSON documents (secrets redacted): the CLI and the API show these."""
    return [
        FailedNotificationDoc(
            id=r.id,
            excursion=r.excursion_id,
            rule=r.rule,
            step=r.step,
            target=redact(r.target),
            status=r.status,
            attempts=r.attempts,
            last_error=r.last_error,
            due_at=iso_utc(r.due_at),
        )
        for r in failed_targets(session)
    ]
