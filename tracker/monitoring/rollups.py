"""Hourly rollups per monitor, channel and room state, maintained as readings are ingested.

The year report must not scan every raw reading (DESIGN §7): a site-year is about a million
rollup rows. Each row holds count, min, max, sum, readings at alert, at action and not
evaluated (no limit applied), invalid readings, and a sparse fixed-bin histogram good enough
for 95th/99th percentiles. Rows are kept per operational state (``reading.state``: the state
whose limits judged the readings), so a percentile can be compared with the limit of its own
state (migration 0019; rows written before it have ``state = ''``, unknown). Late
readings update their own hour; re-evaluation rebuilds the hours it touched; ``tracker
rollups verify`` recomputes a window from the raw readings and lists any difference.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import Column, Text, delete
from sqlmodel import Field, Session, SQLModel, select

from tracker.core.db import UTCDateTime, time_param
from tracker.monitoring.readings import Reading

COUNTED_LEVELS = ("ok", "alert", "action", "not_evaluated")


class RollupHourly(SQLModel, table=True):
    __tablename__ = "rollup_hourly"

    monitor_id: int = Field(foreign_key="monitor.id", primary_key=True)
    channel: str = Field(default="", primary_key=True, max_length=8)
    hour: datetime = Field(sa_type=UTCDateTime, primary_key=True)
    #: at_rest | in_operation (the readings' ``state``); '' for rows written before migration 0019
    state: str = Field(default="", primary_key=True, max_length=16)
    count: int = 0  # valid readings (not invalid)
    invalid: int = 0
    n_alert: int = 0
    n_action: int = 0
    #: valid readings no limit judged (``not_evaluated``): part of ``count``, never "within limits"
    n_not_evaluated: int = 0
    vmin: float | None = None
    vmax: float | None = None
    vsum: float = 0.0
    hist: str = Field(default="{}", sa_column=Column(Text, nullable=False))


#: linear bins per kind: (width, lower end, number of bins)
LINEAR_BINS = {"pressure": (0.5, -100.0, 500), "temperature": (0.1, -20.0, 900), "humidity": (0.5, 0.0, 200)}


def hour_of(t: datetime) -> datetime:
    return t.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def bin_of(kind: str, value: float) -> int:
    """Fixed bins: particles in quarter decades (0 alone), pressure 0.5 Pa, temperature
    0.1 °C, humidity 0.5 %RH; values beyond the ends fall in the end bins."""
    if kind == "particles":
        return 0 if value <= 0 else max(1, min(48, 1 + math.floor(4 * math.log10(value))))
    width, low, n = LINEAR_BINS[kind]
    return max(0, min(n, math.floor((value - low) / width)))


def bin_upper(kind: str, b: int) -> float:
    """Upper edge of bin ``b`` (what a percentile read from the histogram reports)."""
    if kind == "particles":
        return 0.0 if b == 0 else 10 ** (b / 4)
    width, low, _ = LINEAR_BINS[kind]
    return low + (b + 1) * width


def percentile(kind: str, hist: dict[int, int], q: float) -> float | None:
    """The ``q`` (0–1) quantile of a merged histogram, as the upper edge of its bin."""
    total = sum(hist.values())
    if total == 0:
        return None
    rank, seen = q * total, 0
    for b in sorted(hist):
        seen += hist[b]
        if seen >= rank:
            return bin_upper(kind, b)
    return bin_upper(kind, max(hist))


@dataclass
class Acc:
    count: int = 0
    invalid: int = 0
    n_alert: int = 0
    n_action: int = 0
    n_not_evaluated: int = 0
    vmin: float | None = None
    vmax: float | None = None
    vsum: float = 0.0
    hist: dict[int, int] = field(default_factory=dict)

    def add(self, kind: str, value: float, level: str) -> None:
        if level == "invalid":
            self.invalid += 1
            return
        self.count += 1
        self.n_alert += level == "alert"
        self.n_action += level == "action"
        self.n_not_evaluated += level == "not_evaluated"
        self.vmin = value if self.vmin is None else min(self.vmin, value)
        self.vmax = value if self.vmax is None else max(self.vmax, value)
        self.vsum += value
        b = bin_of(kind, value)
        self.hist[b] = self.hist.get(b, 0) + 1

    def merge(self, row) -> None:
        """Add a stored row (ORM object or Core row with the same column names)."""
        self.count += row.count
        self.invalid += row.invalid
        self.n_alert += row.n_alert
        self.n_action += row.n_action
        self.n_not_evaluated += row.n_not_evaluated
        for v in (row.vmin, row.vmax):
            if v is not None:
                self.vmin = v if self.vmin is None else min(self.vmin, v)
                self.vmax = v if self.vmax is None else max(self.vmax, v)
        self.vsum += row.vsum
        for b, n in json.loads(row.hist).items():
            self.hist[int(b)] = self.hist.get(int(b), 0) + n

    def as_tuple(self) -> tuple:
        return (
            self.count,
            self.invalid,
            self.n_alert,
            self.n_action,
            self.n_not_evaluated,
            self.vmin,
            self.vmax,
            self.vsum,
            json.dumps(dict(sorted(self.hist.items())), separators=(",", ":")),
        )


#: (monitor, channel, hour, state)
Key = tuple[int, str, datetime, str]
COLUMNS = (
    "monitor_id",
    "channel",
    "hour",
    "state",
    "count",
    "invalid",
    "n_alert",
    "n_action",
    "n_not_evaluated",
    "vmin",
    "vmax",
    "vsum",
    "hist",
)


def aggregate(
    rows: Iterable[tuple[int, str, datetime, float, str, str]], kinds: dict[int, str]
) -> dict[Key, Acc]:
    """(monitor, channel, event time, value, level, state) → accumulators per hour and state."""
    out: dict[Key, Acc] = {}
    for monitor_id, channel, at, value, level, state in rows:
        key = (monitor_id, channel, hour_of(at), state)
        acc = out.get(key)
        if acc is None:
            acc = out[key] = Acc()
        acc.add(kinds[monitor_id], value, level)
    return out


def add_to_rollups(session: Session, increments: dict[Key, Acc]) -> None:
    """Merge a batch's increments into the stored hours: read the touched rows, merge in
    Python, write back with one upsert (same SQL on SQLite and PostgreSQL)."""
    if not increments:
        return
    keys = list(increments)
    table = RollupHourly.__table__
    cols = [table.c[name] for name in COLUMNS]
    connection = session.connection()
    monitors = sorted({k[0] for k in keys})
    hours = sorted({k[2] for k in keys})  # one or two per batch, more for backfill
    for i in range(0, len(monitors), 400):
        # monitor and hour as separate IN lists: SQLite walks the primary key with them
        for row in connection.execute(
            select(*cols).where(table.c.monitor_id.in_(monitors[i : i + 400]), table.c.hour.in_(hours))
        ):
            acc = increments.get((row.monitor_id, row.channel, row.hour, row.state))
            if acc is not None:
                acc.merge(row)
    db_time = time_param(connection.dialect.name)
    marker = "?" if connection.dialect.paramstyle == "qmark" else "%s"
    updates = ", ".join(f"{c} = excluded.{c}" for c in COLUMNS[4:])
    connection.exec_driver_sql(
        f"INSERT INTO {table.name} ({', '.join(COLUMNS)}) "
        f"VALUES ({', '.join([marker] * len(COLUMNS))}) "
        f"ON CONFLICT (monitor_id, channel, hour, state) DO UPDATE SET {updates}",
        [(m, c, db_time(h), st, *acc.as_tuple()) for (m, c, h, st), acc in increments.items()],
    )


def recompute(
    session: Session, kinds: dict[int, str], monitor_ids: list[int], start: datetime, end: datetime
) -> dict[Key, Acc]:
    """Aggregates of whole hours [hour_of(start), end) straight from the raw readings."""
    rows = session.exec(
        select(
            Reading.monitor_id,
            Reading.channel,
            Reading.event_time,
            Reading.value,
            Reading.level,
            Reading.state,
        ).where(
            Reading.monitor_id.in_(monitor_ids),
            Reading.event_time >= hour_of(start),
            Reading.event_time < end,
        )
    )
    return aggregate(rows, kinds)


def rebuild_rollups(
    session: Session, kinds: dict[int, str], monitor_ids: list[int], start: datetime, end: datetime
) -> int:
    """Replace the stored hours of a window with a recomputation (after re-evaluation)."""
    end = hour_of(end) + timedelta(hours=1)
    session.exec(
        delete(RollupHourly).where(
            RollupHourly.monitor_id.in_(monitor_ids),
            RollupHourly.hour >= hour_of(start),
            RollupHourly.hour < end,
        )
    )
    fresh = recompute(session, kinds, monitor_ids, start, end)
    add_to_rollups(session, fresh)  # the window's rows are gone: nothing is merged twice
    return len(fresh)


def verify_rollups(
    session: Session, kinds: dict[int, str], start: datetime, end: datetime
) -> list[tuple[Key, tuple | None, tuple | None]]:
    """Differences between stored hours and a recomputation from raw readings."""
    end = hour_of(end) + timedelta(hours=1)
    expected = {k: a.as_tuple() for k, a in recompute(session, kinds, list(kinds), start, end).items()}
    stored = {}
    for r in session.exec(
        select(RollupHourly).where(RollupHourly.hour >= hour_of(start), RollupHourly.hour < end)
    ):
        acc = Acc()
        acc.merge(r)  # the same tuple form as the recomputation
        stored[(r.monitor_id, r.channel, r.hour, r.state)] = acc.as_tuple()
    diffs = []
    for key in sorted(set(expected) | set(stored)):
        e, s = expected.get(key), stored.get(key)
        if e is None or s is None or not _same(e, s):
            diffs.append((key, s, e))
    return diffs


def _same(a: tuple, b: tuple) -> bool:
    return all(
        (
            math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-9)
            if isinstance(x, float) and isinstance(y, float)
            else x == y
        )
        for x, y in zip(a, b, strict=True)
    )
