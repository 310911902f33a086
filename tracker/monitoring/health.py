"""System alarms (issue 16 item 4): conditions of the system itself, kept like excursions.

A system alarm opens when the watchdog (``tracker.notify.watchdog``) first sees its condition,
stays open while the condition holds and closes when it no longer does; a later return of the
condition opens a new one. Opening queues its notifications in the same transaction, through
the rules that name ``types = ["system"]`` (the outbox keys read ``s{alarm}:…``), with
escalation and reminders until acknowledged. Ingest workers report through
:func:`beat` (``service_heartbeat``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, select
from typing_extensions import TypedDict

from tracker.core import audit
from tracker.core.errors import ConflictError, InvalidInputError, NotFoundError, Reason
from tracker.core.timeutil import iso_utc, utcnow
from tracker.facility.models import Room
from tracker.facility.notify import SYSTEM
from tracker.identity.users import Authenticated, require_role
from tracker.monitoring import outbox
from tracker.monitoring.alarm_records import ServiceHeartbeat, SystemAlarm

#: each kind with the words people read (en, zh-CN)
KINDS: dict[str, tuple[str, str]] = {
    "ingester_down": ("ingester not running (no heartbeat)", "采集服务未运行（无心跳）"),
    "ingester_not_acknowledging": ("ingester not acknowledging messages", "采集服务未确认消息"),
    "broker_lost": ("broker connection lost", "与消息代理的连接中断"),
    "database_errors": ("database errors in ingest", "采集写入数据库出错"),
    "database_unreachable": ("database unreachable", "数据库无法访问"),
    "notification_failing": ("notification target failing", "通知目标发送失败"),
    "quarantine_burst": ("burst of quarantined messages", "大量消息被隔离"),
    "clock_drift": ("monitor clock drifting from receipt time", "监测点时钟与接收时间偏差过大"),
    "calibration_due": ("calibration due", "校准即将到期"),
}


@dataclass(frozen=True)
class Condition:
    """What the watchdog sees hold now: one open system alarm per (kind, subject)."""

    kind: str
    subject: str
    level: str
    detail: str
    room_id: int | None = None


def beat(connection: Connection, row: dict) -> None:
    """Upsert one worker's heartbeat (its own short transaction: ingest must not wait on it)."""
    table = ServiceHeartbeat.__table__
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(table).values(**row)
    statement = statement.on_conflict_do_update(
        index_elements=["name"],
        set_={k: statement.excluded[k] for k in row if k not in ("name", "started_at")},
    )
    connection.execute(statement)


def heartbeats(session: Session) -> list[ServiceHeartbeat]:
    return list(session.exec(select(ServiceHeartbeat).order_by(ServiceHeartbeat.name)))


def open_alarms(session: Session, kinds: tuple[str, ...] | None = None) -> list[SystemAlarm]:
    query = select(SystemAlarm).where(SystemAlarm.status == "open")
    if kinds is not None:
        query = query.where(SystemAlarm.kind.in_(kinds))
    return list(session.exec(query.order_by(SystemAlarm.id)))


def reconcile(
    session: Session, *, site_id: int, kinds: tuple[str, ...], holding: list[Condition], now: datetime
) -> list[SystemAlarm]:
    """Open an alarm for each condition newly holding, keep those still holding, close the rest
    of ``kinds``; returns the alarms opened (their notifications queued in this transaction)."""
    current = {(a.kind, a.subject): a for a in open_alarms(session, kinds)}
    opened = []
    for c in holding:
        alarm = current.pop((c.kind, c.subject), None)
        if alarm is not None:
            alarm.last_seen_at, alarm.detail = now, c.detail
            session.add(alarm)
            continue
        opened.append(open_alarm(session, site_id=site_id, condition=c, now=now))
    for alarm in current.values():
        close_alarm(session, alarm, now=now)
    return opened


def open_alarm(
    session: Session,
    *,
    site_id: int,
    condition: Condition,
    now: datetime,
    started_at: datetime | None = None,
    notify: bool = True,
) -> SystemAlarm:
    """Open a system alarm and queue its notifications (``notify=False``: already sent another way)."""
    alarm = SystemAlarm(
        site_id=site_id,
        kind=condition.kind,
        subject=condition.subject[:255],
        level=condition.level,
        room_id=condition.room_id,
        started_at=started_at or now,
        last_seen_at=now,
        detail=condition.detail,
    )
    session.add(alarm)
    session.flush()
    audit.record(
        session,
        actor="system:watchdog",
        action="system_alarm.open",
        entity="system_alarm",
        entity_key=str(alarm.id),
        after={"kind": alarm.kind, "subject": alarm.subject, "level": alarm.level, "detail": alarm.detail},
        at=now,
    )
    if notify:
        queue_notifications(session, alarm, now=now)
    return alarm


def close_alarm(session: Session, alarm: SystemAlarm, *, now: datetime) -> None:
    alarm.status, alarm.ended_at = "closed", now
    session.add(alarm)
    audit.record(
        session,
        actor="system:watchdog",
        action="system_alarm.close",
        entity="system_alarm",
        entity_key=str(alarm.id),
        before={"status": "open"},
        after={"status": "closed"},
        at=now,
    )


def queue_notifications(session: Session, alarm: SystemAlarm, *, now: datetime) -> None:
    """Queue the alarm's messages through every rule naming ``system`` that matches it."""
    connection = session.connection()
    site = outbox.site_rules(connection, alarm.site_id)
    room, grade = ("", "")
    if alarm.room_id is not None:
        r = session.get(Room, alarm.room_id)
        room, grade = r.code, r.grade
    rows: list[dict] = []
    for rule in site.rules:
        if rule.matches(type=SYSTEM, level=alarm.level, grade=grade, room=room):
            rows += outbox.step_rows(
                rule,
                site_id=alarm.site_id,
                system_alarm_id=alarm.id,
                level=alarm.level,
                step=alarm.level,
                now=now,
                rotas=site.rotas,
                timezone=site.timezone,
            )
    outbox.queue(connection, rows)


def acknowledge_system_alarm(
    session: Session, *, actor: Authenticated, alarm_id: int, comment: str, now: datetime | None = None
) -> SystemAlarm:
    """QA or the administrator acknowledges a system alarm with a comment: escalation and
    reminders stop (the system's health is the administrator's business as much as QA's)."""
    require_role(actor, "qa", "admin", action=Reason("acknowledging a system alarm", "确认系统报警"))
    if not comment or not comment.strip():
        raise InvalidInputError(Reason("an acknowledgement needs a comment", "确认报警须填写说明"))
    alarm = session.get(SystemAlarm, alarm_id)
    if alarm is None:
        raise NotFoundError(Reason(f"no system alarm {alarm_id}", f"没有系统报警 {alarm_id}"))
    if alarm.acknowledged_at is not None:
        raise ConflictError(
            Reason(f"system alarm {alarm_id} is acknowledged already", f"系统报警 {alarm_id} 已确认")
        )
    now = now or utcnow()
    alarm.acknowledged_by, alarm.acknowledged_at, alarm.ack_comment = actor.username, now, comment.strip()
    session.add(alarm)
    audit.record(
        session,
        actor=actor.username,
        action="system_alarm.acknowledge",
        entity="system_alarm",
        entity_key=str(alarm.id),
        after={"acknowledged_by": actor.username},
        reason=alarm.ack_comment,
        at=now,
    )
    return alarm


class SystemAlarmDoc(TypedDict):
    """A system alarm as the CLI, the page and the JSON API show it."""

    id: int
    kind: str
    what: str  # the kind in English words
    what_zh: str
    subject: str
    level: str
    status: str  # open | closed
    started_at: str
    ended_at: str | None
    last_seen_at: str
    detail: str
    acknowledged_by: str | None
    acknowledged_at: str | None
    ack_comment: str | None


def system_alarm_docs(session: Session, *, open_only: bool = False, limit: int = 200) -> list[SystemAlarmDoc]:
    """System alarms, newest first (open ones only when asked)."""
    query = select(SystemAlarm)
    if open_only:
        query = query.where(SystemAlarm.status == "open")
    rows = session.exec(query.order_by(SystemAlarm.id.desc()).limit(limit))
    return [
        SystemAlarmDoc(
            id=a.id,
            kind=a.kind,
            what=KINDS.get(a.kind, (a.kind, a.kind))[0],
            what_zh=KINDS.get(a.kind, (a.kind, a.kind))[1],
            subject=a.subject,
            level=a.level,
            status=a.status,
            started_at=iso_utc(a.started_at),
            ended_at=iso_utc(a.ended_at),
            last_seen_at=iso_utc(a.last_seen_at),
            detail=a.detail,
            acknowledged_by=a.acknowledged_by,
            acknowledged_at=iso_utc(a.acknowledged_at),
            ack_comment=a.ack_comment,
        )
        for a in rows
    ]
