"""The notification outbox (issue 16, DESIGN §10 "what leaves the system goes through an outbox").

A notification due is written in the same flush as the excursion change that causes it — a
new excursion, or one whose level rises — so it commits or rolls back with that change: the
ingester never sends anything itself and a slow channel never holds up ingest. One row per
excursion × rule × step × target, keyed by ``key``: a replay (late data, a restart) writes
the same key again and the insert is ignored, so nothing is queued twice. The dispatcher
(``tracker.notify``) delivers the rows and logs each attempt in ``notification_attempt``.

Steps: ``alert`` / ``action`` (the excursion opened or rose to that level), ``escalate``
(due ``escalate_after_s`` after the step that started it, cancelled when acknowledged) and
``remind:N`` (due ``repeat_every_s`` after the previous message, until acknowledged).

A row announces either an excursion or a system alarm (``tracker.monitoring.health``, keys
``s{alarm}:…``). A rule's ``rota:NAME`` target is resolved when the row is queued, to whoever
is on duty then (one row per person called). A dispatcher takes a row with a lease
(``leased_by`` until ``lease_until``) before sending it, so two dispatchers never send one step twice.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Column, Connection, Text, UniqueConstraint, insert, inspect, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Field, Session, SQLModel

from tracker.core.db import UTCDateTime
from tracker.facility.models import FacilityRevision, Room, Site
from tracker.facility.notify import ALSO, NotifyRule, Rota, expand_targets
from tracker.monitoring.alarm_records import SystemAlarm  # noqa: F401  (target of a foreign key)

PENDING, SENT, FAILED, CANCELLED = "pending", "sent", "failed", "cancelled"


class NotificationOutbox(SQLModel, table=True):
    __tablename__ = "notification_outbox"
    __table_args__ = (UniqueConstraint("key"),)

    id: int | None = Field(default=None, primary_key=True)
    #: idempotency key: excursion × rule × step × target index
    key: str = Field(max_length=255)
    site_id: int = Field(foreign_key="site.id")
    #: the excursion announced, or None for a system alarm (``system_alarm_id``)
    excursion_id: int | None = Field(default=None, foreign_key="excursion.id", index=True)
    system_alarm_id: int | None = Field(default=None, foreign_key="system_alarm.id", index=True)
    rule: str = Field(max_length=120)
    step: str = Field(max_length=20)
    #: the level the message announces (the excursion's level when the step was queued)
    level: str = Field(max_length=16)
    #: the Apprise URL as the facility file writes it: ``${TRACKER_…}`` placeholders, never secrets
    target: str = Field(sa_column=Column(Text, nullable=False))
    #: pending | sent | failed (gave up after the retries) | cancelled (acknowledged before due)
    status: str = Field(default=PENDING, max_length=12, index=True)
    due_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    attempts: int = 0
    last_error: str | None = Field(default=None, sa_column=Column(Text))
    sent_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    created_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    #: the repeat interval and escalation of the rule when queued, so a later revision does not
    #: change what an alarm already under way does
    repeat_every_s: float = 0.0
    #: the dispatcher sending it now, and until when its claim holds (a crashed one's lapses)
    leased_by: str | None = Field(default=None, max_length=80)
    lease_until: datetime | None = Field(default=None, sa_type=UTCDateTime)


class NotificationAttempt(SQLModel, table=True):
    """Every delivery attempt: rule, target with its secret redacted, time and outcome."""

    __tablename__ = "notification_attempt"

    id: int | None = Field(default=None, primary_key=True)
    outbox_id: int = Field(foreign_key="notification_outbox.id", index=True)
    rule: str = Field(max_length=120)
    target: str = Field(sa_column=Column(Text, nullable=False))
    at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    outcome: str = Field(max_length=12)  # sent | failed
    error: str | None = Field(default=None, sa_column=Column(Text))


def _insert(connection: Connection):
    """An insert that ignores a row whose key is queued already (both backends)."""
    table = NotificationOutbox.__table__
    if connection.dialect.name == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing(index_elements=["key"])
    if connection.dialect.name == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing(index_elements=["key"])
    return insert(table)


@dataclass(frozen=True)
class SiteRules:
    """A site's current rules and rotas, and the zone its rota hours are written in."""

    rules: tuple[NotifyRule, ...] = ()
    rotas: dict[str, Rota] = field(default_factory=dict)
    timezone: str = "UTC"


def step_rows(
    rule: NotifyRule,
    *,
    site_id: int,
    excursion_id: int | None = None,
    system_alarm_id: int | None = None,
    level: str,
    step: str,
    now: datetime,
    rotas: dict[str, Rota] | None = None,
    timezone: str = "UTC",
) -> list[dict]:
    """The outbox rows one rule queues for one step: its targets now, its escalation later
    (a rota target resolved to whoever is on duty when each is due). The end of an alarm
    (``acknowledged``, ``closed``) is told once: no escalation, no reminders."""
    subject = f"x{excursion_id}" if system_alarm_id is None else f"s{system_alarm_id}"
    final = step in ALSO
    escalate_at = now + timedelta(seconds=rule.escalate_after_s)
    base = {
        "site_id": site_id,
        "excursion_id": excursion_id,
        "system_alarm_id": system_alarm_id,
        "rule": rule.name,
        "level": level,
        "status": PENDING,
        "attempts": 0,
        "created_at": now,
        "repeat_every_s": 0.0 if final else rule.repeat_every_s,
    }
    rotas = rotas or {}
    rows = [
        {**base, "key": f"{subject}:{rule.name}:{step}:{i}", "step": step, "target": t, "due_at": now}
        for i, t in expand_targets(rule.targets, rotas, now, timezone)
    ]
    rows += [
        {
            **base,
            "key": f"{subject}:{rule.name}:{step}:escalate:{i}",
            "step": "escalate",
            "target": t,
            "due_at": escalate_at,
            "repeat_every_s": 0.0,
        }
        for i, t in expand_targets(() if final else rule.escalate_to, rotas, escalate_at, timezone)
    ]
    return rows


def queue(connection: Connection, rows: list[dict]) -> None:
    if rows:
        connection.execute(_insert(connection), rows)


def site_rules(connection: Connection, site_id: int) -> SiteRules:
    """The site's current rules, read on the flush's own connection (it holds the transaction)."""
    row = connection.execute(
        select(FacilityRevision.settings, Site.timezone)
        .join(Site, (Site.id == FacilityRevision.site_id) & (Site.revision == FacilityRevision.revision))
        .where(Site.id == site_id)
    ).first()
    if row is None:
        return SiteRules()
    stored = (json.loads(row[0]).get("notify") if row[0] else None) or {}
    return SiteRules(
        rules=tuple(NotifyRule.from_dict(r) for r in stored.get("rules", [])),
        rotas={r["name"]: Rota.from_dict(r) for r in stored.get("rotas", [])},
        timezone=row[1],
    )


def _room(connection: Connection, room_id: int) -> tuple[str, str]:
    row = connection.execute(select(Room.code, Room.grade).where(Room.id == room_id)).first()
    return (row[0], row[1]) if row else ("", "")


def _changed_steps(excursion) -> list[str]:
    """The steps an excursion's flush announces: its first level or a rise to action, and its
    acknowledgement and its close (told only by rules that ask for them, ``also``)."""
    state = inspect(excursion)
    if excursion.status == "superseded" or state.was_deleted:
        return []
    steps = []
    hist = state.attrs.level.history
    if hist.has_changes():
        before = hist.deleted[0] if hist.deleted else None
        if before is None:
            steps.append(excursion.level)
        elif before == "alert" and excursion.level == "action":
            steps.append("action")
    acked = state.attrs.acknowledged_at.history
    if acked.has_changes() and excursion.acknowledged_at is not None:
        steps.append("acknowledged")
    status = state.attrs.status.history
    if status.has_changes() and excursion.status == "closed" and "closed" not in (status.deleted or ()):
        steps.append("closed")
    return steps


def enqueue_changes(session: Session, excursions: list) -> None:
    """Queue what the flushed excursions announce (called inside the flush, same transaction)."""
    connection = session.connection()
    sites: dict[int, SiteRules] = {}
    rows: list[dict] = []
    for ex in excursions:
        steps = _changed_steps(ex)
        if not steps:
            continue
        if ex.site_id not in sites:
            sites[ex.site_id] = site_rules(connection, ex.site_id)
        site = sites[ex.site_id]
        if not site.rules:
            continue
        room, grade = _room(connection, ex.room_id)
        for rule in site.rules:
            if not rule.matches(type=ex.type, level=ex.level, grade=grade, room=room):
                continue
            for step in steps:
                if step in ALSO and step not in rule.also:
                    continue
                rows += step_rows(
                    rule,
                    site_id=ex.site_id,
                    excursion_id=ex.id,
                    level=ex.level,
                    step=step,
                    now=ex.updated_at,
                    rotas=site.rotas,
                    timezone=site.timezone,
                )
    queue(connection, rows)
