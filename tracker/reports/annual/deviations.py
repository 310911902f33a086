"""§8 Deviations (``deviations``) and §9 CAPA and effectiveness (``capa``).

Statuses are as at the period end, from the dated fields (``closed_at``; a CAPA's ``done_at`` and
``checked_at``), not from today's status: the same year built again later must give the same
document, which is what the report's signatures are checked against.
"""

from __future__ import annotations

import re
from collections import Counter
from datetime import timedelta
from statistics import median

from tracker.core.timeutil import iso_utc
from tracker.quality.deviations import CapaAction, Deviation, classes
from tracker.reports.annual.figures import pct, rounded
from tracker.reports.annual.loader import DeviationRecords, Scope
from tracker.reports.annual.period import Period, last_local_day, local_date

#: days from opening to closure a deviation should take (the ``closed_within_target`` figure)
CLOSE_TARGET_DAYS = 30
#: how far back an earlier deviation with the same cause makes one recurrent
RECURRENCE_WINDOW = timedelta(days=365)


def deviation_block(scope: Scope, records: DeviationRecords) -> dict:
    """The document's ``deviations``: those opened in the period, plus every one open at its end."""
    period, devs = scope.period, records.opened
    closed = [d for d in devs if d.closed_at is not None and d.closed_at < period.end]
    days = [(d.closed_at - d.opened_at).total_seconds() / 86400 for d in closed]
    open_at_end = [
        d for d in records.of_site if d.opened_at < period.end and status_at_end(d, period) == "open"
    ]
    impacts = records.impacts
    return {
        "total": len(devs),
        "by_classification": by_classification(devs),
        "by_category": pareto(devs),
        "by_root_cause": root_causes(devs),
        "closed_in_period": len(closed),
        "closed_within_target": sum(1 for x in days if x <= CLOSE_TARGET_DAYS),
        "close_target_days": CLOSE_TARGET_DAYS,
        "days_to_close": {
            "median": rounded(median(days), 2) if days else None,
            "max": rounded(max(days), 2) if days else None,
        },
        "open_at_end": [d.number for d in open_at_end],
        "recurrent": recurrent(records),
        "batches_affected": len({i.batch_id for i in impacts}),
        "impact": dict(sorted(Counter(i.impact or "not_assessed" for i in impacts).items())),
        "critical": [critical_row(d, period) for d in devs if d.classification == "critical"],
        "list": [deviation_row(d, period) for d in devs],
    }


def status_at_end(d: Deviation, period: Period) -> str:
    """``closed`` if it was closed before the period end, else ``open``."""
    return "closed" if d.closed_at is not None and d.closed_at < period.end else "open"


def by_classification(devs: list[Deviation]) -> dict[str, int]:
    """Counts per classification, every classification listed."""
    counts = {c: 0 for c in classes()}
    for d in devs:
        counts[d.classification] = counts.get(d.classification, 0) + 1
    return counts


def pareto(devs: list[Deviation]) -> list[dict]:
    """Categories from the most frequent, with the cumulative share (the Pareto chart)."""
    rows, running = [], 0
    for category, n in sorted(Counter(d.category for d in devs).items(), key=lambda kv: (-kv[1], kv[0])):
        running += n
        rows.append({"category": category, "count": n, "cumulative_pct": pct(running, len(devs))})
    return rows


def root_causes(devs: list[Deviation]) -> list[dict]:
    """Counts per root cause as written (``None``: not determined), the most frequent first."""
    root = Counter((d.root_cause or "").strip() or None for d in devs)
    return [
        {"root_cause": k, "count": n} for k, n in sorted(root.items(), key=lambda kv: (-kv[1], kv[0] or ""))
    ]


def _norm(text: str | None) -> str:
    """Category or root cause compared with case and spacing ignored."""
    return re.sub(r"\s+", " ", (text or "").strip().lower())


def recurrent(records: DeviationRecords) -> list[dict]:
    """Deviations of the period whose category and root cause an earlier one (of any year,
    within the window) already had; those without a root cause cannot recur."""
    out = []
    for d in records.opened:
        key = (_norm(d.category), _norm(d.root_cause))
        if not key[1]:
            continue
        earlier = [
            p.number
            for p in records.of_site
            if p.opened_at < d.opened_at
            and d.opened_at - p.opened_at <= RECURRENCE_WINDOW
            and (_norm(p.category), _norm(p.root_cause)) == key
        ]
        if earlier:
            out.append({"number": d.number, "repeats": earlier})
    return out


def critical_row(d: Deviation, period: Period) -> dict:
    """A critical deviation, for the summary's statement on major incidents."""
    return {
        "number": d.number,
        "title": d.title,
        "category": d.category,
        "opened_at": iso_utc(d.opened_at),
        "status_at_end": status_at_end(d, period),
    }


def deviation_row(d: Deviation, period: Period) -> dict:
    """One deviation of the period; a closure after the period end is not shown."""
    return {
        "number": d.number,
        "title": d.title,
        "classification": d.classification,
        "category": d.category,
        "root_cause": d.root_cause,
        "opened_at": iso_utc(d.opened_at),
        "closed_at": iso_utc(d.closed_at) if d.closed_at and d.closed_at < period.end else None,
        "status_at_end": status_at_end(d, period),
    }


# --------------------------------------------------------------------------- CAPA


def capa_block(scope: Scope, records: DeviationRecords) -> dict:
    """The document's ``capa``: actions created in the period, with their status at its end."""
    numbers = {d.id: d.number for d in records.of_site}
    rows = [capa_row(scope, a, numbers[a.deviation_id]) for a in records.capa]
    status = {s: 0 for s in ("open", "done", "effective", "not_effective")}
    for r in rows:
        status[r["status_at_end"]] += 1
    checked = status["effective"] + status["not_effective"]
    return {
        "total": len(rows),
        "by_kind": dict(sorted(Counter(a.kind for a in records.capa).items())),
        "status_at_end": status,
        "overdue": sum(r["overdue"] for r in rows),
        "effective_pct": pct(status["effective"], checked),
        "list": rows,
    }


def capa_status_at_end(a: CapaAction, period: Period) -> str:
    """``effective``/``not_effective`` once checked, ``done`` once done, else ``open`` — each
    counted only if it happened before the period end (GMP Art. 253)."""
    if a.checked_at is not None and a.checked_at < period.end and a.status in ("effective", "not_effective"):
        return a.status
    if a.done_at is not None and a.done_at < period.end:
        return "done"
    return "open"


def capa_row(scope: Scope, a: CapaAction, deviation: str) -> dict:
    """One action; overdue when still open after its due date (as at the period end, or today)."""
    end_day = last_local_day(scope.period.end, scope.site.timezone)
    status = capa_status_at_end(a, scope.period)
    return {
        "id": a.id,
        "deviation": deviation,
        "kind": a.kind,
        "description": a.description,
        "owner": a.owner,
        "due": a.due.isoformat(),
        "status_at_end": status,
        "overdue": status == "open" and a.due < min(end_day, local_date(scope.now, scope.site.timezone)),
    }
