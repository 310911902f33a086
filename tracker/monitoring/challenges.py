"""Alarm challenge mode (issue 16 item 5): test the alarm chain end to end with real readings.

QA starts a challenge of one monitor for a window, with an e-signature (it changes what counts
as an excursion). Readings in the window are judged as usual and their excursions notify as
usual, with a TEST marker; each such excursion carries ``challenge_id`` (set when it is
inserted, ``tracker.monitoring.excursions``) and counts nowhere: statistics, exposure links,
the release gate, adverse trends, the annual report.

The record keeps, per notification step, the time from the reading (as received) to its
excursion and to each target's delivery. When the window is over QA signs the record; the
signed text is kept with the challenge, so a later edit of it shows the signature broken.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta

from sqlmodel import Session, select
from typing_extensions import TypedDict

from tracker.core import audit
from tracker.core.errors import ConflictError, InvalidInputError, NotFoundError, Reason
from tracker.core.timeutil import iso_utc, utcnow
from tracker.facility.models import Monitor, Room, Site
from tracker.facility.notify import redact
from tracker.identity import signatures
from tracker.identity.users import Authenticated, require_role
from tracker.monitoring.alarm_records import AlarmChallenge
from tracker.monitoring.excursions import Excursion
from tracker.monitoring.outbox import NotificationOutbox
from tracker.monitoring.readings import RawMessage, Reading

#: a challenge longer than a day is not a test but a blind spot
MAX_MINUTES = 1440.0
ENTITY = "alarm_challenge"


def _get(session: Session, challenge_id: int) -> AlarmChallenge:
    ch = session.get(AlarmChallenge, challenge_id)
    if ch is None:
        raise NotFoundError(Reason(f"no alarm challenge {challenge_id}", f"没有报警挑战 {challenge_id}"))
    return ch


def start_content(session: Session, ch: AlarmChallenge) -> dict:
    """What QA signs when starting: which monitor, which window, why."""
    monitor = session.get(Monitor, ch.monitor_id)
    return {
        "challenge": ch.id,
        "monitor": monitor.code,
        "starts_at": iso_utc(ch.starts_at),
        "ends_at": iso_utc(ch.ends_at),
        "reason": ch.reason,
    }


def start_challenge(
    session: Session,
    *,
    signer: Authenticated,
    monitor_code: str,
    minutes: float,
    reason: str,
    starts_at: datetime | None = None,
    now: datetime | None = None,
) -> AlarmChallenge:
    """QA starts a challenge of one monitor, e-signed: its excursions become tests. The window may
    reach back (a bench test replayed from the monitor's buffer) as long as no excursion of the
    monitor already stands in it."""
    require_role(signer, "qa", action=Reason("starting an alarm challenge", "启动报警挑战"))
    if not reason or not reason.strip():
        raise InvalidInputError(Reason("a challenge needs a reason", "报警挑战须填写原因"))
    if not 0 < minutes <= MAX_MINUTES:
        raise InvalidInputError(
            Reason(
                f"a challenge lasts 0 … {MAX_MINUTES:g} minutes",
                f"报警挑战时长须在 0 … {MAX_MINUTES:g} 分钟之间",
            )
        )
    monitor = session.exec(select(Monitor).where(Monitor.code == monitor_code, Monitor.active)).first()
    if monitor is None:
        raise NotFoundError(Reason(f"no active monitor {monitor_code}", f"没有在用的监测点 {monitor_code}"))
    now = now or utcnow()
    starts = starts_at or now
    ends = starts + timedelta(minutes=minutes)
    if starts < now - timedelta(days=1):
        raise InvalidInputError(
            Reason("a challenge starts at most a day back", "报警挑战的开始时间最多可回溯一天")
        )
    # a window reaching back must not turn excursions already standing into tests
    standing = session.exec(
        select(Excursion.id).where(
            Excursion.monitor_id == monitor.id,
            Excursion.status != "superseded",
            Excursion.started_at >= starts,
            Excursion.started_at < ends,
        )
    ).first()
    if standing is not None:
        raise ConflictError(
            Reason(
                f"monitor {monitor_code} has excursion {standing} in that window: a challenge cannot make it a test",
                f"监测点 {monitor_code} 在该时段已有超标 {standing}：报警挑战不能将其改为测试",
            )
        )
    for other in session.exec(select(AlarmChallenge).where(AlarmChallenge.monitor_id == monitor.id)):
        if other.starts_at < ends and starts < other.until:
            raise ConflictError(
                Reason(
                    f"monitor {monitor_code} has challenge {other.id} in that window",
                    f"监测点 {monitor_code} 在该时段已有报警挑战 {other.id}",
                )
            )
    ch = AlarmChallenge(
        site_id=monitor.site_id,
        monitor_id=monitor.id,
        reason=reason.strip(),
        starts_at=starts,
        ends_at=ends,
        started_by=signer.username,
        created_at=now,
    )
    session.add(ch)
    session.flush()
    sig = signatures.sign(
        session,
        signer=signer,
        meaning="approved",
        entity=ENTITY,
        entity_key=str(ch.id),
        scope="challenge_start",
        statement=(
            f"QA starts alarm challenge {ch.id} of monitor {monitor.code}: its excursions from "
            f"{iso_utc(starts)} to {iso_utc(ends)} are tests and count nowhere"
        ),
        content=start_content(session, ch),
        now=now,
    )
    ch.start_signature_id = sig.id
    session.add(ch)
    return ch


def end_challenge(
    session: Session, *, actor: Authenticated, challenge_id: int, now: datetime | None = None
) -> AlarmChallenge:
    """QA ends a running challenge early; later readings count again."""
    require_role(actor, "qa", action=Reason("ending an alarm challenge", "结束报警挑战"))
    ch = _get(session, challenge_id)
    now = now or utcnow()
    if now >= ch.until:
        raise ConflictError(Reason(f"challenge {ch.id} is over already", f"报警挑战 {ch.id} 已结束"))
    ch.ended_at = max(now, ch.starts_at)
    session.add(ch)
    audit.record(
        session,
        actor=actor.username,
        action="challenge.end",
        entity=ENTITY,
        entity_key=str(ch.id),
        after={"ended_at": iso_utc(ch.ended_at)},
        at=now,
    )
    return ch


def _seconds(later: datetime | None, earlier: datetime | None) -> float | None:
    return None if later is None or earlier is None else round((later - earlier).total_seconds(), 3)


def _first_reading(session: Session, ex: Excursion) -> tuple[int | None, datetime | None]:
    """The reading that opened the excursion: its seq and when the tracker received it."""
    row = session.exec(
        select(Reading.seq, RawMessage.received_at)
        .join(RawMessage, (RawMessage.monitor_id == Reading.monitor_id) & (RawMessage.seq == Reading.seq))
        .where(
            Reading.monitor_id == ex.monitor_id,
            Reading.channel == ex.channel,
            Reading.event_time == ex.started_at,
        )
    ).first()
    return (row[0], row[1]) if row else (None, None)


def challenge_record(session: Session, ch: AlarmChallenge) -> dict:
    """The challenge's evidence: each excursion and, per notification step and target, the
    time from the reading's receipt to the excursion and to the delivery."""
    monitor = session.get(Monitor, ch.monitor_id)
    room = session.get(Room, monitor.room_id)
    site = session.get(Site, ch.site_id)
    excursions = []
    for ex in session.exec(select(Excursion).where(Excursion.challenge_id == ch.id).order_by(Excursion.id)):
        seq, received = _first_reading(session, ex)
        steps = []
        for row in session.exec(
            select(NotificationOutbox)
            .where(NotificationOutbox.excursion_id == ex.id)
            .order_by(NotificationOutbox.id)
        ):
            steps.append(
                {
                    "rule": row.rule,
                    "step": row.step,
                    "target": redact(row.target),
                    "status": row.status,
                    "attempts": row.attempts,
                    "due_at": iso_utc(row.due_at),
                    "delivered_at": iso_utc(row.sent_at),
                    "reading_to_delivery_s": _seconds(row.sent_at, received),
                    "excursion_to_delivery_s": _seconds(row.sent_at, ex.created_at),
                }
            )
        excursions.append(
            {
                "excursion": ex.id,
                "type": ex.type,
                "channel": ex.channel or None,
                "level": ex.level,
                "status": ex.status,
                "reading_seq": seq,
                "reading_at": iso_utc(ex.started_at),
                "reading_received_at": iso_utc(received),
                "excursion_at": iso_utc(ex.created_at),
                "reading_to_excursion_s": _seconds(ex.created_at, received),
                "acknowledged_by": ex.acknowledged_by,
                "acknowledged_at": iso_utc(ex.acknowledged_at),
                "steps": steps,
            }
        )
    delivered = [s["reading_to_delivery_s"] for e in excursions for s in e["steps"] if s["delivered_at"]]
    return {
        "challenge": ch.id,
        "site": site.code,
        "timezone": site.timezone,
        "monitor": monitor.code,
        "room": room.code,
        "grade": room.grade,
        "reason": ch.reason,
        "starts_at": iso_utc(ch.starts_at),
        "ends_at": iso_utc(ch.until),
        "started_by": ch.started_by,
        "start_signature": ch.start_signature_id,
        "excursions": excursions,
        "summary": {
            "excursions": len(excursions),
            "deliveries": len(delivered),
            "undelivered": sum(1 for e in excursions for s in e["steps"] if not s["delivered_at"]),
            "slowest_reading_to_delivery_s": max(delivered) if delivered else None,
        },
    }


def sign_record(
    session: Session,
    *,
    signer: Authenticated,
    challenge_id: int,
    comment: str | None = None,
    now: datetime | None = None,
) -> signatures.Signature:
    """QA signs the record of a finished challenge as evidence (OQ, periodic review)."""
    require_role(signer, "qa", action=Reason("signing an alarm challenge record", "签署报警挑战记录"))
    ch = _get(session, challenge_id)
    now = now or utcnow()
    if now < ch.until:
        raise ConflictError(
            Reason(
                f"challenge {ch.id} runs until {iso_utc(ch.until)}: end it first",
                f"报警挑战 {ch.id} 持续至 {iso_utc(ch.until)}：请先结束",
            )
        )
    if ch.record_signature_id is not None:
        raise ConflictError(Reason(f"challenge {ch.id} is signed already", f"报警挑战 {ch.id} 已签署"))
    record = challenge_record(session, ch)
    record["signed_at"] = iso_utc(now)
    ch.record = signatures.canonical(record)
    monitor = session.get(Monitor, ch.monitor_id)
    sig = signatures.sign(
        session,
        signer=signer,
        meaning="reviewed",
        entity=ENTITY,
        entity_key=str(ch.id),
        scope="challenge_record",
        statement=f"QA signs the record of alarm challenge {ch.id} of monitor {monitor.code} as evidence",
        content=record,
        comment=comment,
        now=now,
    )
    ch.record_signature_id = sig.id
    session.add(ch)
    return sig


def signed_record(session: Session, challenge_id: int) -> tuple[dict, signatures.SignatureCheck]:
    """The record as signed, and whether it still matches its signature."""
    ch = _get(session, challenge_id)
    if ch.record is None or ch.record_signature_id is None:
        raise ConflictError(Reason(f"challenge {ch.id} is not signed yet", f"报警挑战 {ch.id} 尚未签署"))
    record = json.loads(ch.record)
    sig = session.get(signatures.Signature, ch.record_signature_id)
    return record, signatures.check(sig, record)


class ChallengeDoc(TypedDict):
    id: int
    monitor: str
    starts_at: str
    ends_at: str
    reason: str
    started_by: str
    running: bool
    signed: bool
    excursions: int


def challenge_docs(session: Session, *, now: datetime | None = None) -> list[ChallengeDoc]:
    """Every challenge, newest first."""
    now = now or utcnow()
    rows = session.exec(
        select(AlarmChallenge, Monitor.code)
        .join(Monitor, Monitor.id == AlarmChallenge.monitor_id)
        .order_by(AlarmChallenge.id.desc())
    ).all()
    counts: dict[int, int] = {}
    for cid in session.exec(select(Excursion.challenge_id).where(Excursion.challenge_id.is_not(None))).all():
        counts[cid] = counts.get(cid, 0) + 1
    return [
        ChallengeDoc(
            id=ch.id,
            monitor=code,
            starts_at=iso_utc(ch.starts_at),
            ends_at=iso_utc(ch.until),
            reason=ch.reason,
            started_by=ch.started_by,
            running=ch.starts_at <= now < ch.until,
            signed=ch.record_signature_id is not None,
            excursions=counts.get(ch.id, 0),
        )
        for ch, code in rows
    ]
