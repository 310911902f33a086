"""§6b Viable monitoring (``viable``): samples taken against those planned per grade and method,
results against the limits, viable excursions, the organisms isolated (a Pareto) and the
conditional releases with their outcome (China GMP 2010 Annex 1 第十一条; EU Annex 1 (2022)
Table 6; regulatory.md §2, §6.5; docs/viable.md).

A missed or invalid sample is a finding of its own: it counts as planned, not as taken.
"""

from __future__ import annotations

from collections import Counter, defaultdict

from tracker.core.timeutil import iso_utc
from tracker.reports.annual.figures import pct
from tracker.reports.annual.loader import Scope, ViableRecords

METHOD_ORDER = ("air", "settle", "contact", "glove_l", "glove_r")
TAKEN = ("taken", "incubating", "read", "identified", "closed")


def viable_block(scope: Scope, records: ViableRecords) -> dict:
    """The document's ``viable``."""
    groups: dict[tuple[str, str], list] = defaultdict(list)
    for s in records.samples:
        groups[(s.grade, s.method)].append(s)
    rows = []
    for (grade, method), samples in sorted(
        groups.items(), key=lambda kv: (kv[0][0], METHOD_ORDER.index(kv[0][1]))
    ):
        taken = [s for s in samples if s.status in TAKEN]
        read = [s for s in samples if s.verdict is not None]
        rows.append(
            {
                "grade": grade,
                "method": method,
                "planned": len(samples),
                "taken": len(taken),
                "taken_pct": pct(len(taken), len(samples)),
                "missed": sum(s.status == "missed" for s in samples),
                "invalid": sum(s.status == "invalid" for s in samples),
                "results": len(read),
                "within_limits": sum(s.verdict == "ok" for s in read),
                "alert": sum(s.verdict == "alert" for s in read),
                "action": sum(s.verdict == "action" for s in read),
                "max_cfu": max((s.judged_value for s in read), default=None),
                "limit": next((s.limit_value for s in read if s.verdict == "ok"), None),
                "open": sum(
                    s.status in ("planned", "taken", "incubating", "read", "identified") for s in samples
                ),
            }
        )
    organisms = Counter(s.organism for s in records.samples if s.organism)
    total = sum(organisms.values())
    pareto, running = [], 0
    for organism, n in organisms.most_common():
        running += n
        pareto.append(
            {
                "organism": organism,
                "isolates": n,
                "locations": sorted({s.location for s in records.samples if s.organism == organism}),
                "cumulative_pct": pct(running, total),
            }
        )
    excursions = [
        {
            "id": e.id,
            "type": e.type,
            "level": e.level,
            "room": scope.room_code(e.room_id),
            "method": e.channel,
            "started_at": iso_utc(e.started_at),
            "value": e.peak,
            "limit": e.limit_value,
            "acknowledged": e.acknowledged_at is not None and e.acknowledged_at < scope.until,
            "note": e.note,
        }
        for e in records.excursions
    ]
    conditional = [
        {
            "batch": batch.number,
            "released_at": iso_utc(released),
            "reason": batch.conditional_reason,
            "outcome": review.outcome if review else None,
            "deviation": deviation,
            "reviewed_at": iso_utc(review.reviewed_at) if review else None,
        }
        for batch, released, review, deviation in records.conditional
    ]
    return {
        "samples": rows,
        "totals": {
            "planned": len(records.samples),
            "taken": sum(r["taken"] for r in rows),
            "missed": sum(r["missed"] for r in rows),
            "invalid": sum(r["invalid"] for r in rows),
            "results": sum(r["results"] for r in rows),
            "alert": sum(r["alert"] for r in rows),
            "action": sum(r["action"] for r in rows),
        },
        "excursions": excursions,
        "organisms": pareto,
        "conditional_releases": conditional,
    }
