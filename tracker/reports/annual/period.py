"""The report's period and its months.

A period is ``[start, end)`` in UTC, but the site reads it in its own time zone: a year is
1 January to 1 January *there*, and months are local calendar months. Everything that buckets
an instant into a month goes through here, so the JSON, the charts and the tables agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np

from tracker.core.errors import InvalidInputError, Reason
from tracker.core.timeutil import iso_utc


@dataclass(frozen=True)
class Period:
    """``[start, end)`` in UTC; ``year`` is set when it is a calendar year of the site."""

    start: datetime
    end: datetime
    timezone: str
    year: int | None = None

    @property
    def label(self) -> str:
        """The year, or ``start/end`` for any other span (also the sign-off's entity key)."""
        return str(self.year) if self.year else f"{iso_utc(self.start)}/{iso_utc(self.end)}"


def report_key(site_code: str, period: Period) -> str:
    """The key the report's e-signatures are filed under (entity ``annual_report``)."""
    return f"{site_code}/{period.label}"


def year_period(timezone: str, year: int) -> Period:
    """1 January to 1 January in the site's time zone, as UTC instants."""
    tz = ZoneInfo(timezone)
    return Period(
        datetime(year, 1, 1, tzinfo=tz).astimezone(UTC),
        datetime(year + 1, 1, 1, tzinfo=tz).astimezone(UTC),
        timezone,
        year,
    )


def cutoff_of(period: Period, now: datetime, as_of: date | None = None) -> datetime:
    """The instant every figure is as at: the period end once the period is over; for an
    unfinished period the start of the site's current day, so that every build of that day (the
    zh and the en document, the sign-off's rebuild) has one cut-off. ``as_of`` (a local date)
    fixes it explicitly at the end of that day. Floored to a whole UTC hour, the rollups' unit."""
    tz = ZoneInfo(period.timezone)
    if as_of is not None:
        day = as_of + timedelta(days=1)
        if as_of > now.astimezone(tz).date():
            raise InvalidInputError(
                Reason(f"the as-of date {as_of} is in the future", f"截止日期 {as_of} 在未来")
            )
    elif now >= period.end:
        return period.end
    else:
        day = now.astimezone(tz).date()
    local = datetime(day.year, day.month, day.day, tzinfo=tz).astimezone(UTC)
    return max(period.start, min(period.end, local.replace(minute=0, second=0, microsecond=0)))


def month_starts(period: Period) -> list[datetime]:
    """Starts (UTC) of the local calendar months overlapping the period, plus the period end."""
    tz = ZoneInfo(period.timezone)
    local = period.start.astimezone(tz)
    cur = datetime(local.year, local.month, 1, tzinfo=tz)
    out = [period.start]
    while True:
        cur = datetime(cur.year + (cur.month == 12), cur.month % 12 + 1, 1, tzinfo=tz)
        if cur.astimezone(UTC) >= period.end:
            break
        out.append(cur.astimezone(UTC))
    return [*out, period.end]


def month_labels(period: Period) -> list[str]:
    """``YYYY-MM`` of each local month, the x axis of every monthly figure."""
    tz = ZoneInfo(period.timezone)
    return [m.astimezone(tz).strftime("%Y-%m") for m in month_starts(period)[:-1]]


def in_period(t: datetime | None, period: Period, until: datetime | None = None) -> bool:
    """Whether a (possibly missing) instant falls in ``[start, until)`` (``until``: the cut-off,
    by default the period end)."""
    return t is not None and period.start <= t < (period.end if until is None else until)


def count_by_month(times: list[datetime], edges: list[datetime]) -> list[int]:
    """How many of ``times`` fall in each month between consecutive ``edges``."""
    counts = [0] * (len(edges) - 1)
    for t in times:
        for i in range(len(edges) - 1):
            if edges[i] <= t < edges[i + 1]:
                counts[i] += 1
                break
    return counts


def month_index(t: datetime, edges: list[datetime]) -> int:
    """The month ``t`` falls in; ``ValueError`` when it is outside the edges."""
    return count_by_month([t], edges).index(1)


def epoch_edges(edges: list[datetime]) -> np.ndarray:
    """The month edges as epoch seconds, to bucket rollup hours with numpy."""
    return np.array([int(t.timestamp()) for t in edges], np.int64)


def month_of_hours(edges_epoch: np.ndarray, hours: np.ndarray) -> np.ndarray:
    """Month index of each rollup hour (epoch seconds): the month its UTC hour starts in."""
    return np.searchsorted(edges_epoch, hours, side="right") - 1


def last_local_day(end: datetime, timezone: str) -> date:
    """The local date of the last instant before ``end`` (a period end is exclusive)."""
    return (end - timedelta(microseconds=1)).astimezone(ZoneInfo(timezone)).date()


def local_date(t: datetime, timezone: str) -> date:
    """The local date of ``t`` in the site's time zone."""
    return t.astimezone(ZoneInfo(timezone)).date()


def period_block(period: Period, cutoff: datetime) -> dict:
    """The document's ``period``: UTC bounds, the cut-off the figures are as at, the local
    months, and whether the figures cover the whole period."""
    return {
        "label": period.label,
        "year": period.year,
        "start": iso_utc(period.start),
        "end": iso_utc(period.end),
        "cutoff": iso_utc(cutoff),
        "timezone": period.timezone,
        "months": month_labels(period),
        "complete": cutoff >= period.end,
    }
