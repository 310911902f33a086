"""A series' stored readings for trending: raw values for the forecast, hourly means for the
charts and change points (from the hourly rollups, which hold sum and count per hour)."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session, select

from tracker.monitoring.readings import Reading
from tracker.monitoring.rollups import RollupHourly

#: readings that measured something (an invalid one — fault, calibration, out of range — did not)
VALID = ("ok", "alert", "action", "not_evaluated")


def readings(
    session: Session, monitor_id: int, channel: str, start: datetime, end: datetime | None = None
) -> list[tuple[datetime, float]]:
    """Valid ``(event time, value)`` of a series from ``start`` (to ``end``), in time order."""
    query = select(Reading.event_time, Reading.value).where(
        Reading.monitor_id == monitor_id,
        Reading.channel == channel,
        Reading.event_time >= start,
        Reading.level.in_(VALID),
    )
    if end is not None:
        query = query.where(Reading.event_time < end)
    return [(t, float(v)) for t, v in session.exec(query.order_by(Reading.event_time))]


def hourly_means(
    session: Session,
    monitor_id: int,
    channel: str,
    start: datetime,
    end: datetime,
    *,
    state: str | None = None,
) -> list[tuple[datetime, float, int]]:
    """``(hour, mean, valid readings)`` of a series' hours in ``[start, end)`` that hold valid
    readings; ``state``: only the readings taken in that room state (particle levels differ by
    state, so mixing them would make every operation look like a shift)."""
    query = select(RollupHourly).where(
        RollupHourly.monitor_id == monitor_id,
        RollupHourly.channel == channel,
        RollupHourly.hour >= start,
        RollupHourly.hour < end,
    )
    if state is not None:
        query = query.where(RollupHourly.state == state)
    rows = session.exec(query.order_by(RollupHourly.hour)).all()
    by_hour: dict[datetime, list[float]] = {}
    for r in rows:  # the rollups keep each operational state apart: sum them per hour
        if r.count > 0:
            acc = by_hour.setdefault(r.hour, [0.0, 0])
            acc[0] += r.vsum
            acc[1] += r.count
    return [(h, s / n, int(n)) for h, (s, n) in sorted(by_hour.items())]
