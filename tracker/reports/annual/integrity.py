"""§15 Data integrity (``data_integrity``): the audit chain as at the period end, the signatures
of the period, and the record counts behind the figures.

Publishing the chain head at the period end lets anyone check later that the trail behind the
report is unchanged (``tracker audit verify`` walks the chain).
"""

from __future__ import annotations

from tracker.reports.annual.loader import IntegrityRecords

#: where the figures come from and how to re-check them
SOURCES = (
    "rollup_hourly (readings, completeness, percentiles, time within limits); excursion, "
    "deviation, capa_action, deviation_batch, batch, process_step, excursion_link, signature, "
    "audit_event. `tracker rollups verify --from --to` recomputes the rollups from the raw "
    "readings; `tracker audit verify` re-checks the chain and every signature."
)


def integrity_block(records: IntegrityRecords, total: dict) -> dict:
    """The document's ``data_integrity``; ``total`` is ``environment.total`` (its counts)."""
    checks = records.signature_checks
    return {
        "audit_chain": {
            "intact": records.chain_intact,
            "first_broken_event": records.first_broken_event,
            "head_hash_at_end": records.head_hash_at_end,
            "events_to_end": records.events_to_end,
            "events_in_period": records.events_in_period,
        },
        "signatures": {
            "in_period": len(checks),
            "intact": sum(c.status == "intact" for c in checks),
            "superseded": sum(c.status == "superseded" for c in checks),
            "broken": sum(c.status == "broken" for c in checks),
        },
        "records": {
            "readings": total["readings"],
            "valid_readings": total["valid"],
            "invalid_readings": total["invalid"],
            "rollup_rows": records.rollup_rows,
            "excursions": sum(total["excursions"]["by_type"].values()),
            "excursions_superseded": records.excursions_superseded,
        },
        "sources": SOURCES,
    }
