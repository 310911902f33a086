"""Quarantine: every message that could not become a reading, kept with its reason.

Rows are never deleted. A message the broker redelivers after a crash (MQTT DUP flag)
whose identical copy is already quarantined is counted, not stored twice. A payload over the
size limit is kept as a bounded prefix (:func:`oversized`) with the size received and the
digest of the whole message, so a flood of large messages cannot fill the database.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Column, LargeBinary, Text, func, insert, literal
from sqlmodel import Field, Session, SQLModel, select

from tracker.core.counters import bump
from tracker.core.db import UTCDateTime
from tracker.wire.payload import QuarantineCode, printable


class QuarantinedMessage(SQLModel, table=True):
    __tablename__ = "quarantined_message"

    id: int | None = Field(default=None, primary_key=True)
    received_at: datetime = Field(sa_type=UTCDateTime, nullable=False, index=True)
    topic: str = Field(sa_column=Column(Text, nullable=False))
    payload: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    #: SHA-256 of topic, NUL and the whole payload as received (also when only a prefix is kept)
    payload_sha256: str = Field(max_length=64, index=True)
    #: bytes received; more than ``len(payload)`` when only a prefix was kept
    payload_size: int = Field(nullable=False)
    reason: str = Field(max_length=40, index=True)
    detail: str = Field(sa_column=Column(Text, nullable=False))
    monitor_code: str | None = Field(default=None, max_length=60)


@dataclass(frozen=True, slots=True)
class Rejection:
    received_at: datetime
    topic: str
    payload: bytes
    reason: str
    detail: str
    monitor_code: str | None = None
    redelivered: bool = False
    #: an oversized message: the bytes received and the digest of the whole message
    #: (``payload`` then holds only a prefix)
    size: int | None = None
    sha256: str | None = None


#: how much of an oversized payload is kept (never more than the size limit itself)
PREFIX_BYTES = 1024


def message_digest(topic: str, payload: bytes) -> str:
    return hashlib.sha256(topic.encode() + b"\0" + payload).hexdigest()


def oversized(
    *,
    received_at: datetime,
    topic: str,
    payload: bytes,
    limit: int,
    redelivered: bool = False,
) -> Rejection:
    """A message over the size limit: a bounded prefix, its size and its digest are kept."""
    keep = min(PREFIX_BYTES, limit)
    return Rejection(
        received_at=received_at,
        topic=topic,
        payload=payload[:keep],
        reason=QuarantineCode.TOO_LARGE.value,
        detail=f"{len(payload)} bytes > limit of {limit}; the first {keep} bytes are kept",
        redelivered=redelivered,
        size=len(payload),
        sha256=message_digest(topic, payload),
    )


def quarantine_many(session: Session, rejections: list[Rejection]) -> int:
    """Store rejections in the caller's transaction; return how many rows were written."""
    if not rejections:
        return 0
    rows, redelivered, in_batch = [], 0, set()
    for r in rejections:
        sha = r.sha256 or message_digest(r.topic, r.payload)
        if r.redelivered and (
            sha in in_batch
            or session.exec(
                select(QuarantinedMessage.id).where(QuarantinedMessage.payload_sha256 == sha).limit(1)
            ).first()
            is not None
        ):
            redelivered += 1
            continue
        in_batch.add(sha)
        rows.append(
            {
                "received_at": r.received_at,
                "topic": r.topic,
                "payload": r.payload,
                "payload_sha256": sha,
                "payload_size": len(r.payload) if r.size is None else r.size,
                "reason": r.reason,
                "detail": printable(r.detail),
                "monitor_code": None if r.monitor_code is None else printable(r.monitor_code, 60),
            }
        )
    if rows:
        session.connection().execute(insert(QuarantinedMessage.__table__), rows)
    if redelivered:
        bump(session, "quarantine_redelivered", redelivered)
    return len(rows)


def list_quarantine(
    session: Session, *, limit: int | None = None, reason: str | None = None
) -> list[QuarantinedMessage]:
    query = select(QuarantinedMessage).order_by(QuarantinedMessage.id)
    if reason:
        query = query.where(QuarantinedMessage.reason == reason)
    if limit:
        query = query.limit(limit)
    return list(session.exec(query))


@dataclass(frozen=True)
class QuarantineRow:
    """A quarantined message as listed: the payload only as a short prefix."""

    id: int
    received_at: datetime
    topic: str
    reason: str
    detail: str
    monitor_code: str | None
    payload_sha256: str
    payload_size: int
    payload_head: bytes


@dataclass(frozen=True)
class QuarantinePage:
    rows: list[QuarantineRow]
    total: int
    older: int | None  # pass as ``before`` for the next older page
    newer: int | None  # pass as ``after`` for the next newer page


def page_quarantine(
    session: Session,
    *,
    reason: str | None = None,
    before: int | None = None,
    after: int | None = None,
    size: int = 200,
    head: int = 300,
) -> QuarantinePage:
    """Newest first, ``size`` rows at a time, paged by id in the database (keyset: a page costs
    the same after a year of messages); each payload only as its first ``head`` bytes."""
    t = QuarantinedMessage
    filters = [t.reason == reason] if reason else []
    columns = (
        t.id,
        t.received_at,
        t.topic,
        t.reason,
        t.detail,
        t.monitor_code,
        t.payload_sha256,
        t.payload_size,
        func.substr(t.payload, literal(1), literal(head)),
    )
    query = select(*columns).where(*filters)
    if after is not None:  # the page just newer than ``after``: ascending, then reversed
        found = session.exec(query.where(t.id > after).order_by(t.id).limit(size)).all()[::-1]
    else:
        if before is not None:
            query = query.where(t.id < before)
        found = session.exec(query.order_by(t.id.desc()).limit(size)).all()
    rows = [QuarantineRow(*r[:8], bytes(r[8] or b"")) for r in found]
    total = session.exec(select(func.count()).select_from(t).where(*filters)).one()
    older = newer = None
    if rows:
        lowest, highest = rows[-1].id, rows[0].id
        if session.exec(select(t.id).where(*filters, t.id < lowest).limit(1)).first() is not None:
            older = lowest
        if session.exec(select(t.id).where(*filters, t.id > highest).limit(1)).first() is not None:
            newer = highest
    return QuarantinePage(rows, int(total), older, newer)


def counts_by_reason(session: Session) -> dict[str, int]:
    rows = session.exec(
        select(QuarantinedMessage.reason, func.count()).group_by(QuarantinedMessage.reason)
    ).all()
    return {reason: int(n) for reason, n in rows}
