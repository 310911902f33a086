"""What happened on a device input path that is not a reading: Sparkplug sequence gaps and the
rebirths asked for, node and device deaths, stale deaths ignored, unknown aliases, Modbus
counters unreachable, backfilled or not sampling. Kept for QA (never deleted) beside the
quarantine, so a hole in the data can be explained from the record (docs/devices.md).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Column, Text, insert
from sqlmodel import Field, Session, SQLModel, col, select

from tracker.core.db import UTCDateTime
from tracker.wire.payload import printable

#: the kinds of event (stable strings, like quarantine codes)
KINDS = (
    "seq_gap",  # a Sparkplug seq was skipped: a message is missing; a rebirth was asked for
    "rebirth_requested",  # NCMD Node Control/Rebirth sent (gap, unknown alias, data before birth)
    "node_death",  # NDEATH with the current bdSeq: the node's monitors are offline
    "device_death",  # DDEATH
    "stale_death",  # NDEATH whose bdSeq is not the current birth's: ignored (arrived late)
    "birth",  # NBIRTH/DBIRTH accepted
    "unreachable",  # a Modbus counter did not answer a poll
    "backfill",  # records read back from a counter's buffer after a silence
    "sampling_stopped",  # the counter reports it is not sampling
    "sampling_resumed",
)


class DeviceEvent(SQLModel, table=True):
    __tablename__ = "device_event"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(sa_type=UTCDateTime, nullable=False, index=True)
    #: ``spBv1.0/group/edge_node[/device]`` or ``modbus://host:port/unit``
    source: str = Field(max_length=300)
    kind: str = Field(max_length=40, index=True)
    monitor_code: str | None = Field(default=None, max_length=60)
    detail: str = Field(sa_column=Column(Text, nullable=False))


@dataclass(frozen=True, slots=True)
class DeviceNote:
    at: datetime
    source: str
    kind: str
    detail: str
    monitor_code: str | None = None


def record_device_events(session: Session, notes: Iterable[DeviceNote]) -> int:
    """Append the events in the caller's transaction; returns how many."""
    rows = [
        {
            "at": n.at,
            "source": printable(n.source, 300),
            "kind": n.kind,
            "monitor_code": n.monitor_code,
            "detail": printable(n.detail),
        }
        for n in notes
    ]
    if rows:
        session.connection().execute(insert(DeviceEvent.__table__), rows)
    return len(rows)


def device_events(session: Session, *, kind: str | None = None, limit: int = 1000) -> list[DeviceEvent]:
    """The newest events first (``tracker devices events``)."""
    query = select(DeviceEvent).order_by(col(DeviceEvent.id).desc()).limit(limit)
    if kind:
        query = query.where(DeviceEvent.kind == kind)
    return list(session.exec(query).all())
