"""Excursion figures of a set of excursions (a room, a grade, the site): counts by level and type,
excursions per 1,000 monitored hours, the longest one, data gaps and QA's time to respond.

Limit excursions count at the highest level they reached; durations stop at the cut-off (the
period end, or an unfinished period's cut-off), so a figure never depends on what happened after
it. Data gaps are counted beside the limit excursions, with their level and hours: silence in a
grade A zone is an action-level event (continuous monitoring, GMP 2010 Annex 1 Art. 10(1),
regulatory.md §5.1; docs/limits.md "Data gaps"), and a row that showed only limit excursions
would read "0 action" for a zone that went unmonitored for days (issue 14 item 7).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from statistics import median

from tracker.core.timeutil import iso_utc
from tracker.monitoring.excursions import Excursion
from tracker.reports.annual.figures import hours_of, rounded
from tracker.reports.annual.loader import Scope

#: every type gets a count, zero included, so the document's shape does not depend on the year
EXCURSION_TYPES = ("limit", "data_gap", "recurrence", "adverse_trend", "recovery")


def excursion_duration(e: Excursion, until: datetime) -> timedelta:
    """Start to end, counted up to ``until`` (the cut-off): a figure as at the cut-off."""
    end = until if e.ended_at is None else min(e.ended_at, until)
    return max(timedelta(0), end - e.started_at)


def excursion_figures(
    scope: Scope, selected: list[Excursion], responses: dict[int, datetime], monitored_h: int
) -> dict:
    """The ``excursions`` object of a room, a grade or the site."""
    by_type = {t: 0 for t in EXCURSION_TYPES}
    alert = action = 0
    for e in selected:
        by_type[e.type] = by_type.get(e.type, 0) + 1
        if e.type == "limit":
            alert += e.level == "alert"
            action += e.level == "action"
    return {
        "alert": alert,
        "action": action,
        "by_type": by_type,
        "per_1000_h": rounded(1000 * (alert + action) / monitored_h) if monitored_h else None,
        "longest": _longest(scope, selected),
        "time_to_response_h": _time_to_response(selected, responses, alert + action),
        "data_gaps": data_gaps(scope, selected),
    }


def data_gaps(scope: Scope, selected: list[Excursion]) -> dict:
    """The data gaps among ``selected``: how many at each level, their hours up to the cut-off
    and the longest."""
    gaps = [e for e in selected if e.type == "data_gap"]
    durations = [excursion_duration(e, scope.until) for e in gaps]
    return {
        "count": len(gaps),
        "alert": sum(e.level == "alert" for e in gaps),
        "action": sum(e.level == "action" for e in gaps),
        "hours": hours_of(sum(durations, timedelta())),
        "longest_h": hours_of(max(durations)) if durations else None,
    }


def _longest(scope: Scope, selected: list[Excursion]) -> dict | None:
    """The longest limit excursion (the first of equals)."""
    durations = [(e, excursion_duration(e, scope.until)) for e in selected if e.type == "limit"]
    longest = max(durations, key=lambda p: p[1], default=None)
    if longest is None:
        return None
    e, duration = longest
    return {
        "id": e.id,
        "monitor": scope.monitors[e.monitor_id].code,
        "level": e.level,
        "started_at": iso_utc(e.started_at),
        "hours": hours_of(duration),
    }


def _time_to_response(selected: list[Excursion], responses: dict[int, datetime], limit_count: int) -> dict:
    """Start to QA's first response, over the limit excursions that had one."""
    resp = [responses[e.id] - e.started_at for e in selected if e.type == "limit" and e.id in responses]
    return {
        "responded": len(resp),
        "without_response": limit_count - len(resp),
        "median": hours_of(median(resp)) if resp else None,
        "max": hours_of(max(resp)) if resp else None,
    }
