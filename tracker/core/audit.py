"""Append-only, hash-chained audit trail (GMP 2010 Art. 163; 计算机化系统附录; 21 CFR 11.10(e)).

Every event stores the keyed hash (HMAC-SHA256, ``tracker.core.keys``) of itself and the one
before it, so an edited or deleted row breaks the chain at that point, and someone who can
write the database but does not hold the key cannot rebuild it. Events written before the
chain was keyed keep their plain SHA-256 (``key_id`` empty); none may follow a keyed one.
Checkpoints outside the database (``tracker.core.anchors``) catch a rewrite by someone who
does hold the key. Events are written in the same transaction as the change they record.
No code path updates or deletes an audit row.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Column, Text, func, text
from sqlmodel import Field, Session, SQLModel, select

from tracker.core.classification import classified
from tracker.core.db import UTCDateTime
from tracker.core.keys import keyring
from tracker.core.timeutil import iso_utc, utcnow

GENESIS = "0" * 64
CHAIN_LOCK = 0x6D70_6175_6469  # advisory lock key of the audit chain ("gmp audi")


_TRAIL = classified(
    "sensitive",
    export="omitted",
    clear_roles=("qa", "qp", "admin", "viewer"),
    why="states recorded by events; before migration 0026 batch events held clear donor/patient IDs",
)


class AuditEvent(SQLModel, table=True):
    __tablename__ = "audit_event"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    actor: str = Field(max_length=120)
    action: str = Field(max_length=80, index=True)
    entity: str = Field(max_length=80)
    entity_key: str = Field(max_length=200)
    before: str | None = Field(default=None, sa_column=Column(Text, info=_TRAIL))
    after: str | None = Field(default=None, sa_column=Column(Text, info=_TRAIL))
    reason: str | None = Field(default=None, sa_column=Column(Text))
    prev_hash: str = Field(max_length=64)
    hash: str = Field(max_length=64, unique=True)
    #: the key that sealed ``hash`` (``tracker.core.keys.key_id``); empty for pre-key events
    key_id: str = Field(default="", max_length=16)


def _canonical(value: Any) -> str | None:
    return (
        None
        if value is None
        else json.dumps(value, sort_keys=True, ensure_ascii=False, default=str, separators=(",", ":"))
    )


def _body(
    prev_hash: str,
    at: datetime,
    actor: str,
    action: str,
    entity: str,
    entity_key: str,
    before: str | None,
    after: str | None,
    reason: str | None,
) -> bytes:
    return json.dumps(
        [prev_hash, iso_utc(at), actor, action, entity, entity_key, before, after, reason],
        ensure_ascii=False,
        separators=(",", ":"),
    ).encode("utf-8")


def _sealed(body: bytes, key_id: str, digest: str) -> bool:
    """A keyed event checks against its key; a pre-key event against plain SHA-256."""
    if key_id:
        return keyring().check(key_id, body, digest)
    return hashlib.sha256(body).hexdigest() == digest


def head_hash(session: Session) -> str:
    """Hash of the newest event: the digest to publish outside the database."""
    last = session.exec(select(AuditEvent.hash).order_by(AuditEvent.id.desc()).limit(1)).first()
    return last or GENESIS


def record(
    session: Session,
    *,
    actor: str,
    action: str,
    entity: str,
    entity_key: str,
    before: Any = None,
    after: Any = None,
    reason: str | None = None,
    at: datetime | None = None,
) -> AuditEvent:
    """Append one event in the caller's transaction (the caller's unit of work commits)."""
    session.flush()
    if session.get_bind().dialect.name == "postgresql":
        # serialise writers on the chain head, or two transactions would share a prev_hash
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": CHAIN_LOCK})
    at = at or utcnow()
    before_s, after_s = _canonical(before), _canonical(after)
    prev = head_hash(session)
    key_id, digest = keyring().mac(
        _body(prev, at, actor, action, entity, entity_key, before_s, after_s, reason)
    )
    event = AuditEvent(
        at=at,
        actor=actor,
        action=action,
        entity=entity,
        entity_key=entity_key,
        before=before_s,
        after=after_s,
        reason=reason,
        prev_hash=prev,
        hash=digest,
        key_id=key_id,
    )
    session.add(event)
    session.flush()
    return event


@dataclass(frozen=True)
class ChainCheck:
    intact: bool
    count: int
    #: the first event that does not check, and why
    broken: int | None = None
    problem: str | None = None
    #: events sealed before the chain was keyed (plain SHA-256)
    unkeyed: int = 0


def check_chain(session: Session) -> ChainCheck:
    """Walk the chain: each event must link to the one before and carry a valid (keyed) seal."""
    prev, count, unkeyed, keyed_seen = GENESIS, 0, 0, False
    columns = (
        AuditEvent.id,
        AuditEvent.at,
        AuditEvent.actor,
        AuditEvent.action,
        AuditEvent.entity,
        AuditEvent.entity_key,
        AuditEvent.before,
        AuditEvent.after,
        AuditEvent.reason,
        AuditEvent.prev_hash,
        AuditEvent.hash,
        AuditEvent.key_id,
    )
    # plain rows, streamed: the web's audit page checks the whole chain on every view
    for (
        id_,
        at,
        actor,
        action,
        entity,
        key,
        before,
        after,
        reason,
        prev_hash,
        hash_,
        key_id,
    ) in session.execute(select(*columns).order_by(AuditEvent.id).execution_options(yield_per=2000)):
        body = _body(prev, at, actor, action, entity, key, before, after, reason)
        problem = None
        if prev_hash != prev:
            problem = "does not link to the event before it (deleted or inserted)"
        elif not key_id and keyed_seen:
            problem = "an unkeyed event after keyed ones (re-sealed without the key)"
        elif not _sealed(body, key_id, hash_):
            problem = "its seal does not match (altered, or sealed with another key)"
        if problem:
            return ChainCheck(False, count, id_, problem, unkeyed)
        keyed_seen = keyed_seen or bool(key_id)
        unkeyed += 0 if key_id else 1
        prev, count = hash_, count + 1
    return ChainCheck(True, count, None, None, unkeyed)


def verify_chain(session: Session) -> tuple[bool, int, int | None]:
    """Walk the chain; return (intact, events checked, id of the first broken event)."""
    check = check_chain(session)
    return check.intact, check.count, check.broken


@dataclass(frozen=True)
class AuditPage:
    """One page of events, newest first, with the cursors of its neighbours (``None``: none).

    Keyset paging on the id: a page costs the same on the first day and after a year of
    events, and events appended meanwhile do not shift the pages a reader is walking."""

    events: list[AuditEvent]
    total: int  # events matching the filter
    newer: int | None  # ``after`` cursor of the newer page
    older: int | None  # ``before`` cursor of the older page


def page_events(
    session: Session,
    *,
    actor: str | None = None,
    action: str | None = None,
    entity: str | None = None,
    key: str | None = None,
    before: int | None = None,
    after: int | None = None,
    size: int = 200,
) -> AuditPage:
    """Events matching the filter (``action`` is a prefix), ``size`` at a time, newest first:
    those older than the event ``before``, or newer than ``after``, or the newest."""
    conditions = []
    if actor:
        conditions.append(AuditEvent.actor == actor)
    if action:
        conditions.append(AuditEvent.action.startswith(action, autoescape=True))
    if entity:
        conditions.append(AuditEvent.entity == entity)
    if key:
        conditions.append(AuditEvent.entity_key == key)
    total = session.exec(select(func.count()).select_from(AuditEvent).where(*conditions)).one()
    query = select(AuditEvent).where(*conditions)
    if after is not None:
        rows = list(session.exec(query.where(AuditEvent.id > after).order_by(AuditEvent.id).limit(size + 1)))
        more_newer = len(rows) > size
        events = list(reversed(rows[:size]))
        more_older = bool(events) or after > 0
    else:
        if before is not None:
            query = query.where(AuditEvent.id < before)
        rows = list(session.exec(query.order_by(AuditEvent.id.desc()).limit(size + 1)))
        events, more_older = rows[:size], len(rows) > size
        more_newer = before is not None
    if events and more_older:
        more_older = (
            session.exec(
                select(AuditEvent.id).where(*conditions, AuditEvent.id < events[-1].id).limit(1)
            ).first()
            is not None
        )
    if events and more_newer:
        more_newer = (
            session.exec(
                select(AuditEvent.id).where(*conditions, AuditEvent.id > events[0].id).limit(1)
            ).first()
            is not None
        )
    return AuditPage(
        events=events,
        total=total,
        newer=events[0].id if events and more_newer else None,
        older=events[-1].id if events and more_older else None,
    )
