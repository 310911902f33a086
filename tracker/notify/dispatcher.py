"""Deliver the notification outbox: retries with backoff, every attempt logged.

Each row is handled in its own unit of work: the attempt, its outcome and any follow-up
(the next reminder) commit together. A row is marked sent in the transaction that logs the
successful attempt; a dispatcher killed before that commit finds the row still pending and
sends it once more — the only window in which a message can repeat is between a channel
accepting it and that commit (docs/alarms.md). A row killed before its send is delivered
once after restart; a row is never lost because nothing is removed until it is sent.

Several dispatchers may run at once: each takes a row with a lease (a conditional update that
only one can win) before it sends, and a crashed one's lease lapses after ``lease_s``. The
dispatcher's process also runs the watchdog (``tracker.notify.watchdog``) and, when the database
itself cannot be reached for ``db_down_s``, sends the system rules' targets a message directly.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta

import apprise
from sqlalchemy import Engine, or_, update
from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError
from sqlmodel import Session, select
from typing_extensions import TypedDict

from tracker.core.db import unit_of_work
from tracker.core.timeutil import iso_utc, utcnow
from tracker.facility.models import Room, Site
from tracker.facility.notify import SYSTEM, NotifyRule, Rota, expand_targets, fill_secrets, redact
from tracker.facility.policy import notify_settings_of
from tracker.monitoring import health
from tracker.monitoring.alarm_records import SystemAlarm
from tracker.monitoring.excursions import Excursion, source_code
from tracker.monitoring.health import Condition, close_alarm, open_alarm
from tracker.monitoring.outbox import (
    CANCELLED,
    FAILED,
    PENDING,
    SENT,
    NotificationAttempt,
    NotificationOutbox,
    queue,
)
from tracker.notify.messages import Message, compose, compose_system
from tracker.notify.watchdog import Watchdog

log = logging.getLogger(__name__)

#: sends one message to one Apprise URL; returns an error text, or None when delivered
Sender = Callable[[str, Message], str | None]
MAX_ATTEMPTS = 5
BACKOFF_S = 2.0
BACKOFF_MAX_S = 300.0
#: how long a dispatcher's claim on a row holds (a crashed dispatcher's row waits this long)
LEASE_S = 60.0
#: the database unreachable this long: the system rules' targets are told directly
DB_DOWN_S = 30.0
DB_DOWN = (OperationalError, InterfaceError, DisconnectionError)


def apprise_send(url: str, message: Message) -> str | None:
    """Send through Apprise, keeping what it logged as the error of a failed attempt."""
    sender = apprise.Apprise()
    if not sender.add(url):
        return "not a valid Apprise URL"
    with apprise.LogCapture(level=logging.WARNING) as captured:
        ok = sender.notify(title=message.title, body=message.body)
        text = captured.getvalue().strip()
    return None if ok else (text or "delivery failed")[-500:]


def _settled(subject: Excursion | SystemAlarm, step: str) -> bool:
    """An escalation or reminder no longer needed: acknowledged at its level, or superseded."""
    if step == "escalate" or step.startswith("remind"):
        return getattr(subject, "status", "") == "superseded" or not subject.needs_acknowledgement
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
        "system_alarm_id": row.system_alarm_id,
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
        lease_s: float = LEASE_S,
        watchdog: Watchdog | None = None,
        watch_every_s: float = 10.0,
        db_down_s: float = DB_DOWN_S,
    ) -> None:
        self.engine, self.send, self.environ, self.clock = engine, send, environ, clock
        self.max_attempts, self.backoff_s, self.lease_s = max_attempts, backoff_s, lease_s
        self.watchdog, self.watch_every_s, self.db_down_s = watchdog, watch_every_s, db_down_s
        #: who holds a lease: unique per dispatcher object, readable by people
        self.name = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._beat_at: datetime | None = None
        self._started_at: datetime | None = None
        #: what to tell, and whom, if the database goes away (refreshed while it is there)
        self._fallback: tuple[list[str], dict] = ([], {})

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

    def run(self, stop: threading.Event, *, poll_s: float = 0.25) -> None:
        """Deliver, and watch, until ``stop``; a database outage is waited out and announced."""
        apprise.Apprise().add("json://localhost")  # load Apprise's plugins now, not at the first alarm
        next_watch = 0.0
        down_since: datetime | None = None
        told = False
        while not stop.is_set():
            try:
                self.run_once()
                self._beat()
                if self.watchdog is not None and utcnow().timestamp() >= next_watch:
                    next_watch = utcnow().timestamp() + self.watch_every_s
                    self.watchdog.tick()
                    self._remember_fallback()
                if down_since is not None:
                    self._record_outage(down_since, told)
                    down_since, told = None, False
            except DB_DOWN:
                down_since = down_since or utcnow()
                log.warning("database unavailable since %s; retrying", iso_utc(down_since))
                if not told and (utcnow() - down_since).total_seconds() >= self.db_down_s:
                    told = self._tell_directly(down_since)
            except Exception:  # keep the worker, try again next poll
                log.exception("notification dispatch failed; retrying")
            stop.wait(poll_s)

    def _beat(self) -> None:
        """After a pass, at most every 5 s: this dispatcher runs (kind ``notify``; shown with the
        ingest workers' heartbeats, and what a test waits for instead of guessing a start time)."""
        now = utcnow()
        if self._beat_at is not None and (now - self._beat_at).total_seconds() < 5.0:
            return
        self._started_at = self._started_at or now
        with self.engine.begin() as connection:
            health.beat(
                connection,
                {"name": self.name, "kind": "notify", "beat_at": now, "started_at": self._started_at},
            )
        self._beat_at = now

    def _claim(self, row_id: int) -> bool:
        """Take the row for this dispatcher: only one of several can win the conditional update."""
        now = utcnow()
        table = NotificationOutbox.__table__
        with self.engine.begin() as connection:
            taken = connection.execute(
                update(table)
                .where(
                    table.c.id == row_id,
                    table.c.status == PENDING,
                    or_(
                        table.c.lease_until.is_(None),
                        table.c.lease_until < now,
                        table.c.leased_by == self.name,
                    ),
                )
                .values(leased_by=self.name, lease_until=now + timedelta(seconds=self.lease_s))
            )
            return taken.rowcount == 1

    def deliver(self, row_id: int) -> None:
        if not self._claim(row_id):
            return  # another dispatcher sends it
        with unit_of_work(self.engine) as session:
            row = session.get(NotificationOutbox, row_id)
            if row is None or row.status != PENDING or row.leased_by != self.name:
                return
            subject = (
                session.get(Excursion, row.excursion_id)
                if row.excursion_id is not None
                else session.get(SystemAlarm, row.system_alarm_id)
            )
            now = self.clock()
            row.leased_by, row.lease_until = None, None
            if _settled(subject, row.step):
                row.status = CANCELLED
                session.add(row)
                return
            error = self._send(session, row, subject)
            self._record(session, row, error, now)

    def _send(
        self, session: Session, row: NotificationOutbox, subject: Excursion | SystemAlarm
    ) -> str | None:
        site = session.get(Site, row.site_id)
        settings = notify_settings_of(session, site)
        language, base_url = settings.get("language", "zh-CN"), settings.get("base_url", "")
        if isinstance(subject, SystemAlarm):
            message = compose_system(
                alarm=subject, site=site, level=row.level, step=row.step, language=language, base_url=base_url
            )
        else:
            message = compose(
                ex=subject,
                site=site,
                room=session.get(Room, subject.room_id),
                source=source_code(session, subject),
                level=row.level,
                step=row.step,
                language=language,
                base_url=base_url,
                by=subject.acknowledged_by,
            )
        return self._send_to(row.target, message)

    def _send_to(self, target: str, message: Message) -> str | None:
        try:
            url = fill_secrets(target, self.environ)
        except KeyError as exc:
            return f"environment variable {exc.args[0]} is not set"
        try:
            return self.send(url, message)
        except Exception as exc:  # a channel's own failure is an outcome, not a crash
            return f"{type(exc).__name__}: {exc}"[:500]

    # ------------------------------------------------------------------ the database away

    def _remember_fallback(self) -> None:
        """Keep the targets of site-wide action-level system rules (rotas resolved when used)."""
        with Session(self.engine) as session:
            site = session.exec(select(Site).order_by(Site.id)).first()
            if site is None:
                return
            settings = notify_settings_of(session, site)
            rules = [NotifyRule.from_dict(r) for r in settings.get("rules", [])]
            targets = [
                t
                for r in rules
                if r.matches(type=SYSTEM, level="action", grade="", room="")
                for t in r.targets
            ]
            self._fallback = (
                targets,
                {
                    "rotas": settings.get("rotas", []),
                    "timezone": site.timezone,
                    "language": settings.get("language", "zh-CN"),
                    "site": f"{site.code} {site.name}",
                },
            )

    def _tell_directly(self, since: datetime) -> bool:
        """The database is away: send the system rules' targets a message without the outbox
        (it is in the database). Returns whether anyone was told."""
        targets, ctx = self._fallback
        if not targets:
            return False
        rotas = {r["name"]: Rota.from_dict(r) for r in ctx["rotas"]}
        urls = [u for _, u in expand_targets(tuple(targets), rotas, utcnow(), ctx["timezone"])]
        en = ctx["language"] == "en"
        message = Message(
            f"[ACTION] {ctx['site']}: SYSTEM database unreachable"
            if en
            else f"【纠偏】{ctx['site']}：系统报警 数据库无法访问",
            (
                f"The tracker's database cannot be reached since {iso_utc(since)}: readings are held by the "
                "broker and alarms cannot be written. Sent directly by the dispatcher."
                if en
                else f"自 {iso_utc(since)} 起无法访问数据库：读数暂存于消息代理，报警无法写入。本消息由通知服务直接发送。"
            ),
        )
        sent = [u for u in urls if self._send_to(u, message) is None]
        log.warning("database unreachable: told %d of %d system targets directly", len(sent), len(urls))
        return bool(sent)

    def _record_outage(self, since: datetime, told: bool) -> None:
        """The database is back: an outage long enough to be announced is kept as a system
        alarm, opened when it began and closed now (already announced, so nothing is queued)."""
        if not told:
            return
        now = utcnow()
        with unit_of_work(self.engine) as session:
            site = session.exec(select(Site).order_by(Site.id)).first()
            alarm = open_alarm(
                session,
                site_id=site.id,
                condition=Condition(
                    "database_unreachable",
                    "database",
                    "action",
                    f"unreachable from {iso_utc(since)} to {iso_utc(now)}; the system rules' targets were "
                    "told directly (not through the outbox)",
                ),
                now=now,
                started_at=since,
                notify=False,
            )
            close_alarm(session, alarm, now=now)

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
    excursion: int | None
    system_alarm: int | None
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
            system_alarm=r.system_alarm_id,
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
