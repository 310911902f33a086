"""§8 Deviations (``deviations``) and §9 CAPA and effectiveness (``capa``).

Statuses are as at the cut-off (the period end), from the dated fields (``closed_at``; a CAPA's
``done_at`` and ``checked_at``) and the audit trail (``asat``), not from today's status: the same
year built again later must give the same document, which is what the report's signatures are
checked against.

"Batches affected" counts the batches linked for impact assessment. A batch whose exposure to an
excursion a deviation was raised from is still undecided at the cut-off is reported as such, per
deviation, not folded into "0 affected" (issue 14 item 7; GMP 2010 Art. 249: the impact on every
batch concerned is assessed). The deviations that may be major incidents are those of the classes
``tracker.quality.deviations.major_incident_classes`` names (Nanning measures Art. 16).
"""

from __future__ import annotations

import re
from collections import Counter
from datetime import datetime, timedelta
from statistics import median

from tracker.core.timeutil import iso_utc
from tracker.quality.deviations import CapaAction, Deviation
from tracker.reports.annual.figures import pct, rounded
from tracker.reports.annual.loader import BatchRecords, DeviationRecords, Scope
from tracker.reports.annual.period import last_local_day

#: days from opening to closure a deviation should take (the ``closed_within_target`` figure)
CLOSE_TARGET_DAYS = 30
#: how far back an earlier deviation with the same cause makes one recurrent
RECURRENCE_WINDOW = timedelta(days=365)


def deviation_block(scope: Scope, records: DeviationRecords, batches: BatchRecords) -> dict:
    """The document's ``deviations``: those opened in the period, plus every one open at its end."""
    until, devs = scope.until, records.opened
    closed = [d for d in devs if d.closed_at is not None and d.closed_at < until]
    days = [(d.closed_at - d.opened_at).total_seconds() / 86400 for d in closed]
    open_at_end = [d for d in records.of_site if status_at_end(d, until) == "open"]
    impacts = records.impacts
    affected = {d.id: affected_batches(records, batches, d.id) for d in devs}
    undecided = {d.id: undecided_batches(records, batches, d.id, affected[d.id]) for d in devs}
    return {
        "total": len(devs),
        "by_classification": by_classification(devs, records.classes),
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
        "batches_exposure_undecided": len({n for v in undecided.values() for n in v} - _numbers(affected)),
        "impact": dict(sorted(Counter(i.impact or "not_assessed" for i in impacts).items())),
        "major_incident_classes": list(records.major_classes),
        "major_incident_class": [
            major_row(d, until) for d in devs if d.classification in records.major_classes
        ],
        "list": [deviation_row(d, until, affected[d.id], undecided[d.id]) for d in devs],
    }


def _numbers(by_deviation: dict[int, list[str]]) -> set[str]:
    return {n for numbers in by_deviation.values() for n in numbers}


def affected_batches(records: DeviationRecords, batches: BatchRecords, dev_id: int) -> list[str]:
    """The batches linked to a deviation for impact assessment before the cut-off."""
    return sorted({batches.by_id[i.batch_id].number for i in records.impacts if i.deviation_id == dev_id})


def undecided_batches(
    records: DeviationRecords, batches: BatchRecords, dev_id: int, affected: list[str]
) -> list[str]:
    """Batches whose exposure to an excursion the deviation was raised from was still undecided
    at the cut-off (and that are not linked to it already)."""
    sources = set(records.sources.get(dev_id, ()))
    return sorted(
        {
            x.batch.number
            for x in batches.exposures
            if x.excursion.id in sources and x.status == "undecided" and x.batch.number not in affected
        }
    )


def status_at_end(d: Deviation, until: datetime) -> str:
    """``closed`` if it was closed before the cut-off, else ``open``."""
    return "closed" if d.closed_at is not None and d.closed_at < until else "open"


def by_classification(devs: list[Deviation], classes: tuple[str, ...]) -> dict[str, int]:
    """Counts per classification, every class of the site's facility file (as at the cut-off)
    listed; a class dropped since keeps its count."""
    counts = {c: 0 for c in classes}
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


def major_row(d: Deviation, until: datetime) -> dict:
    """A deviation of a major-incident class, for the summary's statement on major incidents."""
    return {
        "number": d.number,
        "title": d.title,
        "classification": d.classification,
        "category": d.category,
        "opened_at": iso_utc(d.opened_at),
        "status_at_end": status_at_end(d, until),
    }


def deviation_row(d: Deviation, until: datetime, affected: list[str], undecided: list[str]) -> dict:
    """One deviation of the period; a closure after the cut-off is not shown."""
    return {
        "number": d.number,
        "title": d.title,
        "classification": d.classification,
        "category": d.category,
        "root_cause": d.root_cause,
        "opened_at": iso_utc(d.opened_at),
        "closed_at": iso_utc(d.closed_at) if d.closed_at and d.closed_at < until else None,
        "status_at_end": status_at_end(d, until),
        "batches_affected": affected,
        "batches_exposure_undecided": undecided,
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


def capa_status_at_end(a: CapaAction, until: datetime) -> str:
    """``effective``/``not_effective`` once checked, ``done`` once done, else ``open`` — each
    counted only if it happened before the cut-off (GMP Art. 253)."""
    if a.checked_at is not None and a.checked_at < until and a.status in ("effective", "not_effective"):
        return a.status
    if a.done_at is not None and a.done_at < until:
        return "done"
    return "open"


def capa_row(scope: Scope, a: CapaAction, deviation: str) -> dict:
    """One action; overdue when still open after its due date, as at the cut-off's last day."""
    end_day = last_local_day(scope.until, scope.site.timezone)
    status = capa_status_at_end(a, scope.until)
    return {
        "id": a.id,
        "deviation": deviation,
        "kind": a.kind,
        "description": a.description,
        "owner": a.owner,
        "due": a.due.isoformat(),
        "status_at_end": status,
        "overdue": status == "open" and a.due < end_day,
    }
