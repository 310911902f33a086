"""The annual report document: read, computed block by block, assembled, checked against its schema.

This is the package's public module: callers (the CLI, the web page, the sign-off, the bench and
the tests) import from here only. ``build_annual_report`` is the one sequence that reads the
database (through :mod:`~tracker.reports.annual.loader`) and calls each block in the order of
the progress steps the CLI shows; the blocks themselves are plain functions over the records.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import date, datetime
from pathlib import Path

from sqlmodel import Session

from tracker.core.timeutil import iso_utc, utcnow
from tracker.facility.models import Site
from tracker.reports.annual.batches import production_block, traceability_block
from tracker.reports.annual.conditions import conditions_block
from tracker.reports.annual.definitions import (
    DEFINITIONS,
    INCIDENTS_SCOPE,
    REPORT_ENTITY,
    SCHEMA,
    inputs_required,
)
from tracker.reports.annual.deviations import capa_block, deviation_block
from tracker.reports.annual.environment import environment_block
from tracker.reports.annual.facility import facility_block, limit_changes_block
from tracker.reports.annual.figures import pct
from tracker.reports.annual.integrity import integrity_block
from tracker.reports.annual.loader import (
    Scope,
    has_data,
    load_batches,
    load_deviations,
    load_environment,
    load_incident_confirmation,
    load_integrity,
    load_limits,
    load_scope,
    load_viable,
    revision_at,
)
from tracker.reports.annual.monitors import monitor_rows
from tracker.reports.annual.period import Period, cutoff_of, period_block, report_key, year_period
from tracker.reports.annual.summary import incidents_content, summary_block
from tracker.reports.annual.viable import viable_block

__all__ = [
    "INCIDENTS_SCOPE",
    "REPORT_ENTITY",
    "SCHEMA",
    "Period",
    "Progress",
    "build_annual_report",
    "cutoff_of",
    "incidents_content",
    "pct",
    "report_key",
    "report_schema",
    "signed_content",
    "validate_report",
    "year_period",
]

#: called with the name of each step as it starts (the CLI's progress bar: ``tracker.cli.report.STEPS``)
Progress = Callable[[str], None]

SCHEMA_FILE = Path(__file__).parent.parent / "schema" / "annual-report.schema.json"


def _no_progress(_step: str) -> None:
    """Progress for callers that show none."""


def build_annual_report(
    session: Session,
    *,
    site: Site,
    period: Period,
    now: datetime | None = None,
    progress: Progress | None = None,
    compare: bool = True,
    as_of: date | None = None,
) -> dict:
    """The report document for ``site`` over ``period`` (see the package doc and docs/report.md),
    as at the period end, or for an unfinished period as at its cut-off (``cutoff_of``: the start
    of today in the site's time zone, or the end of the local day ``as_of``)."""
    now = now or utcnow()
    step = progress or _no_progress
    scope = load_scope(session, site, period, cutoff_of(period, now, as_of))
    step("facility")
    revision = revision_at(session, site, scope.until)
    facility = facility_block(scope)
    step("environment")
    environment, conditions = _environment_and_conditions(session, scope, revision)
    step("deviations")
    deviation_records = load_deviations(session, scope, revision)
    step("batches")
    sources = {x for ids in deviation_records.sources.values() for x in ids}
    batch_records = load_batches(session, scope, sources)
    deviations = deviation_block(scope, deviation_records, batch_records)
    capa = capa_block(scope, deviation_records)
    production = production_block(scope, batch_records)
    traceability = traceability_block(scope, batch_records)
    step("integrity")
    integrity = integrity_block(load_integrity(session, scope), environment["total"])
    report = {
        "schema": SCHEMA,
        "generated_at": iso_utc(now),
        "site": site_block(site, revision),
        "period": period_block(period, scope.until),
        "definitions": DEFINITIONS,
        "facility": facility,
        "production": production,
        "environment": environment,
        "conditions": conditions,
        "deviations": deviations,
        "capa": capa,
        "traceability": traceability,
        "limit_changes": limit_changes_block(load_limits(session, scope, revision)),
        "data_integrity": integrity,
        "inputs_required": inputs_required(),
        "viable": viable_block(scope, load_viable(session, scope)),
    }
    report["summary"] = summary_block(report, load_incident_confirmation(session, scope))
    step("comparison")
    report["comparison"] = comparison_block(session, site, period, now) if compare else None
    return report


def _environment_and_conditions(session: Session, scope: Scope, revision: int) -> tuple[dict, dict]:
    """§6 and §7 share one read of the rollups and the per-monitor rows (the slow step)."""
    records = load_environment(session, scope, revision)
    rows = monitor_rows(scope, records)
    return environment_block(scope, records, rows), conditions_block(scope, records, rows)


def site_block(site: Site, revision: int) -> dict:
    """The document's ``site``, with the facility revision in force at the cut-off."""
    return {
        "code": site.code,
        "name": site.name,
        "name_en": site.name_en,
        "timezone": site.timezone,
        "limit_set": site.limit_set,
        "facility_revision": revision,
    }


def comparison_block(session: Session, site: Site, period: Period, now: datetime) -> dict | None:
    """The previous year's key figures, when the period is a year and the previous one has data."""
    if period.year is None:
        return None
    previous = year_period(period.timezone, period.year - 1)
    if not has_data(session, site, previous):
        return None
    prev = build_annual_report(session, site=site, period=previous, now=now, compare=False)
    return {"period": prev["period"]["label"], "key_figures": prev["summary"]["key_figures"]}


def signed_content(report: dict) -> dict:
    """What an e-signature of the report covers: everything but the build time."""
    return {k: v for k, v in report.items() if k not in ("generated_at", "signoff")}


def report_schema() -> dict:
    """The published JSON Schema of the document (draft 2020-12)."""
    return json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))


def validate_report(document: dict) -> None:
    """Raise ``jsonschema.ValidationError`` unless ``document`` matches the published schema."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(report_schema(), format_checker=jsonschema.FormatChecker())
    validator.validate(document)
