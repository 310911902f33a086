"""§7 Pressure, temperature and RH (``conditions``): per monitor, the share of evaluated readings
within limits and within action limits, its limit excursions, and monthly min / mean / max.

Each reading stands for one sample interval, so a share of readings is a share of time. Readings
no limit judged (``not_evaluated``: a room or state without limits, e.g. a CNC room's temperature)
are counted apart and left out of both shares: "within limits" is a claim about a limit, and a
reading no limit applied to supports none (issue 14 item 7). A monitor with no evaluated reading
has no share (``null``) rather than 100 %.
Pressure monitors are shown with their reference room, the other side of the cascade.
"""

from __future__ import annotations

from datetime import timedelta

import numpy as np

from tracker.reports.annual.excursions import excursion_duration
from tracker.reports.annual.figures import hours_of, pct, rounded
from tracker.reports.annual.limits import bounds_json, monitor_limits
from tracker.reports.annual.loader import EnvironmentRecords, RollupArrays, Scope
from tracker.reports.annual.monitors import MonitorRow
from tracker.reports.annual.period import epoch_edges, month_of_hours

#: the order of §7's table: pressure cascades first
KIND_ORDER = {"pressure": 0, "temperature": 1, "humidity": 2}


def conditions_block(scope: Scope, records: EnvironmentRecords, rows: dict[int, MonitorRow]) -> dict:
    """The document's ``conditions``: every monitor of the period but the particle counters."""
    month_idx = month_of_hours(epoch_edges(scope.edges), records.rollups.hour)
    out = [
        condition_row(scope, records, rows[mid], mid, month_idx)
        for mid in records.monitor_ids
        if scope.monitors[mid].kind != "particles"
    ]
    out.sort(key=lambda c: (KIND_ORDER[c["kind"]], c["room"], c["monitor"]))
    return {"monitors": out}


def condition_row(
    scope: Scope, records: EnvironmentRecords, row: MonitorRow, mid: int, month_idx: np.ndarray
) -> dict:
    """One monitor's row; its counts come from its ``environment.monitors`` row."""
    m = scope.monitors[mid]
    limits = monitor_limits(scope.rooms, records.levels, records.limit_set, m)
    evaluated = row["valid"] - row["not_evaluated"]
    return {
        "monitor": m.code,
        "kind": m.kind,
        "room": row["room"],
        "grade": row["grade"],
        "reference": scope.room_code(m.reference_room_id),
        "valid": row["valid"],
        "not_evaluated": row["not_evaluated"],
        "evaluated": evaluated,
        "within_limits_pct": pct(evaluated - row["at_alert"] - row["at_action"], evaluated),
        "within_action_pct": pct(evaluated - row["at_action"], evaluated),
        "excursions": limit_excursions(scope, records, mid),
        "limits": {
            "in_operation": bounds_json(limits.for_reading("", "in_operation")),
            "at_rest": bounds_json(limits.for_reading("", "at_rest")),
        },
        "monthly": monthly_values(records.rollups, mid, month_idx, len(scope.edges) - 1),
    }


def limit_excursions(scope: Scope, records: EnvironmentRecords, mid: int) -> dict:
    """The monitor's limit excursions of the period: by level, total and longest duration."""
    exc = [e for e in records.excursions if e.monitor_id == mid and e.type == "limit"]
    durations = [excursion_duration(e, scope.until) for e in exc]
    return {
        "alert": sum(e.level == "alert" for e in exc),
        "action": sum(e.level == "action" for e in exc),
        "hours": hours_of(sum(durations, timedelta())),
        "longest_h": hours_of(max(durations)) if durations else None,
    }


def monthly_values(data: RollupArrays, mid: int, month_idx: np.ndarray, n_months: int) -> list[dict | None]:
    """Min, mean and max of the valid readings of each month; ``None`` for a month without any."""
    mask = data.monitor == mid
    monthly: list[dict | None] = []
    for k in range(n_months):
        mk = mask & (month_idx == k) & (data.count > 0)
        n = int(data.count[mk].sum())
        monthly.append(
            None
            if n == 0
            else {
                "min": rounded(np.nanmin(data.vmin[mk])),
                "mean": rounded(data.vsum[mk].sum() / n),
                "max": rounded(np.nanmax(data.vmax[mk])),
            }
        )
    return monthly
