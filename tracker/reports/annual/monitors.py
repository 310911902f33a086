"""Per-monitor figures (§6 ``environment.monitors``) and their sums per room, grade and site.

Completeness needs a denominator: the readings a monitor *should* have sent over the time it was
being monitored in the period (docs/report.md, "Monitored period" and "Expected readings").
Everything per room, grade or site is a sum of these rows, with each monitor's valid readings
capped at its expected ones, so one over-reporting monitor cannot hide another's gap.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TypedDict

import numpy as np

from tracker.core.timeutil import iso_utc
from tracker.facility.models import Monitor
from tracker.reports.annual.figures import pct
from tracker.reports.annual.loader import EnvironmentRecords, Scope


class MonitorRow(TypedDict):
    """One row of ``environment.monitors``; §7 and the totals read the counts back from it."""

    monitor: str
    room: str | None
    grade: str
    kind: str
    interval_s: int
    channels: list[str]
    monitored_from: str | None
    monitored_to: str | None
    expected: int
    readings: int
    valid: int
    invalid: int
    completeness_pct: float | None
    monitored_hours: int
    at_alert: int
    at_action: int
    not_evaluated: int


def monitored_window(
    scope: Scope, m: Monitor, seen: tuple[datetime, datetime] | None
) -> tuple[datetime, datetime]:
    """From the later of the period start and the first reading ever, to the cut-off; a retired
    monitor stops at the end of the hour of its last reading."""
    start = max(scope.period.start, seen[0]) if seen else scope.period.start
    end = scope.until if m.active or seen is None else min(scope.until, seen[1] + timedelta(hours=1))
    return start, end


def monitor_rows(scope: Scope, records: EnvironmentRecords) -> dict[int, MonitorRow]:
    """The rows of the monitors of the period, by monitor id, in code order."""
    return {mid: monitor_row(scope, records, scope.monitors[mid]) for mid in records.monitor_ids}


def monitor_row(scope: Scope, records: EnvironmentRecords, m: Monitor) -> MonitorRow:
    """Readings, completeness and readings at alert/action of one monitor, from its rollups."""
    data = records.rollups
    mask = data.monitor == m.id
    channels = [c for c in m.channels.split(",") if c] or [""]
    valid = int(data.count[mask].sum())
    invalid = int(data.invalid[mask].sum())
    start, end = monitored_window(scope, m, records.first_last.get(m.id))
    seconds = max(0.0, (end - start).total_seconds())
    expected = int(seconds // m.interval_s) * len(channels)
    hours_mask = mask & ((data.count + data.invalid) > 0)
    return {
        "monitor": m.code,
        "room": scope.room_code(m.room_id),
        "grade": scope.rooms[m.room_id].grade,
        "kind": m.kind,
        "interval_s": m.interval_s,
        "channels": [c for c in channels if c],
        "monitored_from": iso_utc(start),
        "monitored_to": iso_utc(max(start, end)),
        "expected": expected,
        "readings": valid + invalid,
        "valid": valid,
        "invalid": invalid,
        "completeness_pct": pct(min(valid, expected), expected),
        "monitored_hours": int(np.unique(data.hour[hours_mask]).size),
        "at_alert": int(data.n_alert[mask].sum()),
        "at_action": int(data.n_action[mask].sum()),
        "not_evaluated": int(data.n_not_evaluated[mask].sum()),
    }


def totals(rows: list[MonitorRow]) -> dict:
    """The sums of some monitors' rows (a room, a grade, the site); completeness from capped
    valid readings."""
    expected = sum(r["expected"] for r in rows)
    valid = sum(min(r["valid"], r["expected"]) for r in rows)
    hours = sum(r["monitored_hours"] for r in rows)
    return {
        "monitors": len(rows),
        "expected": expected,
        "valid": sum(r["valid"] for r in rows),
        "readings": sum(r["readings"] for r in rows),
        "invalid": sum(r["invalid"] for r in rows),
        "completeness_pct": pct(valid, expected),
        "monitored_hours": hours,
        "at_alert": sum(r["at_alert"] for r in rows),
        "at_action": sum(r["at_action"] for r in rows),
        "not_evaluated": sum(r["not_evaluated"] for r in rows),
    }
