"""§6 particles (``environment.particles``): monthly P95 per particle counter, channel and room
state, each compared with the alert and action limits of its own state in force at the cut-off.

A concentration is judged by the limits of the room's state when it was taken (GMP 2010 Annex 1
Art. 9, at rest and in operation; regulatory.md §1.1), so a percentile is only meaningful against
the limit of the same state: an at-rest P95 above the at-rest limit is a finding even where the
in-operation limit is a hundred times higher, and grade D, which has no in-operation limit in
CN-GMP-2010, is still judged at rest (issue 14 item 7). The rollups keep readings per state (the
state whose limits judged them, recovery window included: docs/limits.md).

P95s are read from the rollups' merged histograms as the upper edge of the bin holding the
percentile (at most one quarter-decade bin above the true value, never below it), and capped at
the highest value of the same readings: a percentile is never printed above the series' own
maximum. A site-year takes seconds instead of sorting 140 million readings.
"""

from __future__ import annotations

from collections import Counter

from tracker.facility.limits import STATES, Bounds
from tracker.monitoring.rollups import percentile
from tracker.reports.annual.figures import rounded
from tracker.reports.annual.limits import bounds_json, monitor_limits
from tracker.reports.annual.loader import EnvironmentRecords, ParticleMonths, Scope


def particle_rows(scope: Scope, records: EnvironmentRecords) -> list[dict]:
    """One row per particle counter of the period and channel (0.5 and 5.0 µm), in code order."""
    rows = []
    n_months = len(scope.edges) - 1
    for mid in records.monitor_ids:
        m = scope.monitors[mid]
        if m.kind != "particles":
            continue
        limits = monitor_limits(scope.rooms, records.levels, records.limit_set, m)
        for channel in [c for c in m.channels.split(",") if c]:
            states = {
                state: state_series(
                    records.particles, (mid, channel, state), n_months, limits.for_reading(channel, state)
                )
                for state in STATES
            }
            unknown = sum(
                sum(h.values()) for h in series_months(records.particles, (mid, channel, ""), n_months)[0]
            )
            rows.append(
                {
                    "monitor": m.code,
                    "room": scope.room_code(m.room_id),
                    "grade": scope.rooms[m.room_id].grade,
                    "channel": channel,
                    "unit": "/m³",
                    "states": states,
                    "readings_state_unknown": unknown,
                }
            )
    return rows


def series_months(
    data: ParticleMonths, series: tuple[int, str, str], n_months: int
) -> tuple[list[Counter], list[float | None]]:
    """The histogram and the highest value of each month of one series (monitor, channel, state)."""
    hists = [data.histograms.get((*series, k), Counter()) for k in range(n_months)]
    highest = [data.highest.get((*series, k)) for k in range(n_months)]
    return hists, highest


def capped_p95(hist: Counter, highest: float | None) -> float | None:
    """The P95 of a histogram (upper edge of its bin), never above the highest value it holds."""
    if not hist:
        return None
    p95 = percentile("particles", dict(hist), 0.95)
    return rounded(p95 if highest is None else min(p95, highest), 1)


def state_series(
    data: ParticleMonths, series: tuple[int, str, str], n_months: int, bounds: Bounds | None
) -> dict:
    """One state of one channel: monthly and yearly P95 and maximum, and how they compare with
    that state's limits (``None`` where no limit applies, e.g. grade D in operation)."""
    hists, highest = series_months(data, series, n_months)
    year: Counter = Counter()
    for h in hists:
        year.update(h)
    year_max = max((v for v in highest if v is not None), default=None)
    monthly = [capped_p95(h, top) for h, top in zip(hists, highest, strict=True)]
    limits = bounds_json(bounds)
    return {
        "readings": sum(year.values()),
        "monthly_p95": monthly,
        "monthly_max": [rounded(v, 1) for v in highest],
        "p95": capped_p95(year, year_max),
        "max": rounded(year_max, 1),
        "limits": limits,
        "months_p95_above_alert": months_above(monthly, limits, "alert_high"),
        "months_p95_above_action": months_above(monthly, limits, "action_high"),
    }


def months_above(monthly: list[float | None], limits: dict | None, bound: str) -> int | None:
    """Months whose P95 exceeds the bound (a value equal to a limit complies); ``None`` when the
    state has no such bound."""
    limit = (limits or {}).get(bound)
    if limit is None:
        return None
    return sum(1 for v in monthly if v is not None and v > limit)
