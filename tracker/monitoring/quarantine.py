"""Quarantine: every message that could not become a reading, kept with its reason.

Rows are never deleted. A message the broker redelivers after a crash (MQTT DUP flag)
whose identical copy is already quarantined is counted, not stored twice.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Column, LargeBinary, Text, func, insert
from sqlmodel import Field, Session, SQLModel, select

from tracker.core.counters import bump
from tracker.core.db import UTCDateTime
from tracker.wire.payload import printable


class QuarantinedMessage(SQLModel, table=True):
    __tablename__ = "quarantined_message"

    id: int | None = Field(default=None, primary_key=True)
    received_at: datetime = Field(sa_type=UTCDateTime, nullable=False, index=True)
    topic: str = Field(sa_column=Column(Text, nullable=False))
    payload: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    payload_sha256: str = Field(max_length=64, index=True)
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


def quarantine_many(session: Session, rejections: list[Rejection]) -> int:
    """Store rejections in the caller's transaction; return how many rows were written."""
    if not rejections:
        return 0
    rows, redelivered, in_batch = [], 0, set()
    for r in rejections:
        sha = hashlib.sha256(r.topic.encode() + b"\0" + r.payload).hexdigest()
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


def counts_by_reason(session: Session) -> dict[str, int]:
    rows = session.exec(
        select(QuarantinedMessage.reason, func.count()).group_by(QuarantinedMessage.reason)
    ).all()
    return {reason: int(n) for reason, n in rows}
