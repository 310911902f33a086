"""Counts for ``tracker stats`` (DESIGN §9)."""

from __future__ import annotations

from sqlalchemy import func
from sqlmodel import Session, select

from tracker.core import counters
from tracker.monitoring.excursions import count_by_level
from tracker.monitoring.quarantine import counts_by_reason
from tracker.monitoring.readings import RawMessage, Reading


def ingest_stats(session: Session) -> dict:
    """Readings are messages stored (one per monitor and seq); channels are counted apart."""
    by_reason = counts_by_reason(session)
    return {
        "readings": int(session.exec(select(func.count()).select_from(RawMessage)).one()),
        "channel_values": int(session.exec(select(func.count()).select_from(Reading)).one()),
        "duplicates": counters.read(session, "duplicates"),
        "quarantined": sum(by_reason.values()),
        "quarantine_by_reason": by_reason,
        "excursions": count_by_level(session),
    }
