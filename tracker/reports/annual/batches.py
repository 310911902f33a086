"""§4 Production activity (``production``) and §12 Traceability and segregation (``traceability``,
with the post-release events of released batches).

Released and rejected count the QP's signatures made in the period, whichever year the batch
started in; a batch's disposition is its last decision before the cut-off, so a release in
the next year does not change this year's document.

Exposure to the period's excursions is reported with QA's decision as at the cut-off: confirmed
(exposed), rejected (not exposed), or still undecided — an undecided exposure is listed as such
and never read as "not exposed" (issue 14 item 7; GMP 2010 Art. 249).
"""

from __future__ import annotations

from collections import Counter

from tracker.core.timeutil import iso_utc
from tracker.quality.batches.models import Batch
from tracker.reports.annual.loader import BatchRecords, Exposure, Scope
from tracker.reports.annual.period import count_by_month

#: every flag code gets a count, zero included
FLAG_CODES = ("segregation", "a_in_c", "a_background_below_c", "open_not_grade_a")


def production_block(scope: Scope, records: BatchRecords) -> dict:
    """The document's ``production``: batches started, released, rejected and open at the end."""
    started = records.started
    released = decided_in_period(scope, records, "released")
    rejected = decided_in_period(scope, records, "rejected")
    return {
        "started": len(started),
        "released": len(released),
        "rejected": len(rejected),
        "open_at_end": sum(1 for b in started if b.number not in records.decisions),
        "process_steps": records.process_steps,
        "by_product": product_rows(records, released, rejected),
        "by_month": count_by_month([b.created_at for b in started], scope.edges),
        "donors": len({b.donor_id for b in started}),
    }


def decided_in_period(scope: Scope, records: BatchRecords, meaning: str) -> list[str]:
    """Numbers of the batches whose last decision (``released``/``rejected``) is in the period."""
    return [n for n, d in records.decisions.items() if d.meaning == meaning and scope.within(d.at)]


def _product(products: dict[str, dict], product: str) -> dict:
    return products.setdefault(
        product, {"product": product, "started": 0, "released": 0, "rejected": 0, "open_at_end": 0}
    )


def product_rows(records: BatchRecords, released: list[str], rejected: list[str]) -> list[dict]:
    """Per product: started in the period (and still open at its end), released, rejected."""
    products: dict[str, dict] = {}
    for b in records.started:
        p = _product(products, b.product)
        p["started"] += 1
        p["open_at_end"] += b.number not in records.decisions
    for n in released + rejected:
        p = _product(products, records.by_number[n].product)
        p["released" if n in released else "rejected"] += 1
    return sorted(products.values(), key=lambda p: p["product"])


def disposition(records: BatchRecords, b: Batch) -> str:
    """``released``, ``rejected`` or ``pending`` as at the cut-off."""
    return records.decisions[b.number].meaning if b.number in records.decisions else "pending"


def traceability_block(scope: Scope, records: BatchRecords) -> dict:
    """The document's ``traceability``: batches exposed to the period's excursions (and those
    whose exposure is undecided), and flags."""
    of_period = [x for x in records.exposures if scope.within(x.excursion.started_at)]
    exposed = exposed_rows(records, [x for x in of_period if x.status == "confirmed"])
    undecided = [undecided_row(records, x) for x in of_period if x.status == "undecided"]
    flags = flag_rows(records)
    counts = {c: 0 for c in FLAG_CODES}
    for f in flags:
        counts[f["code"]] = counts.get(f["code"], 0) + 1
    post_release = post_release_rows(records)
    return {
        "exposed_batches": len(exposed),
        "exposed_by_disposition": dict(sorted(Counter(r["disposition"] for r in exposed).items())),
        "exposed": exposed,
        "undecided_batches": len({u["batch"] for u in undecided}),
        "undecided": undecided,
        "not_exposed": sum(1 for x in of_period if x.status == "rejected"),
        "flag_counts": counts,
        "flagged_batches": len({f["batch"] for f in flags}),
        "flags": flags,
        "post_release_events": len(post_release),
        "post_release_open_at_end": sum(1 for r in post_release if r["status_at_end"] == "open"),
        "post_release": post_release,
    }


def undecided_row(records: BatchRecords, x: Exposure) -> dict:
    """A possible exposure QA had not decided at the cut-off: which batch, which excursion."""
    return {
        "batch": x.batch.number,
        "product": x.batch.product,
        "excursion": x.excursion.id,
        "type": x.excursion.type,
        "level": x.excursion.level,
        "started_at": iso_utc(x.excursion.started_at),
        "disposition": disposition(records, x.batch),
    }


def post_release_rows(records: BatchRecords) -> list[dict]:
    """Environmental facts that reached released batches in the period, and QA's conclusion
    as at the period end (docs/quality.md, "After release")."""
    return [
        {
            "batch": b.number,
            "event": e.id,
            "raised_at": iso_utc(e.raised_at),
            "kinds": [k for k in e.kinds.split(",") if k],
            "status_at_end": "assessed" if a else "open",
            "outcome": a.outcome if a else None,
            "deviation": number,
        }
        for e, b, a, number in records.post_release
    ]


def exposed_rows(records: BatchRecords, confirmed: list[Exposure]) -> list[dict]:
    """One row per exposed batch: its excursions, whether any reached action, its disposition."""
    exposed: dict[int, dict] = {}
    for x in confirmed:
        b, ex = x.batch, x.excursion
        row = exposed.setdefault(
            b.id,
            {
                "batch": b.number,
                "product": b.product,
                "excursions": [],
                "action": False,
                "disposition": disposition(records, b),
            },
        )
        if ex.id not in row["excursions"]:
            row["excursions"].append(ex.id)
        row["action"] = row["action"] or ex.level == "action"
    return sorted(exposed.values(), key=lambda r: r["batch"])


def flag_rows(records: BatchRecords) -> list[dict]:
    """The flags (``tracker.quality.batches.flags``) of the batches started in the period."""
    return [
        {
            "batch": b.number,
            "code": f.code,
            "step": f.step_id,
            "room": f.room,
            "other_batch": f.other_batch,
            "message_zh": f.message_zh,
            "message_en": f.message_en,
        }
        for b, f in records.flags
    ]
