"""Read views of batch records: the documents the CLI, the JSON API and the pages show.

Each is built here once, as a ``TypedDict`` (JSON-ready: times ISO 8601 UTC), and the entry
points only format it — the API also uses these types as its response schemas. The views read
what is stored and write nothing: where a reader must see the exposure proposals up to date,
it calls :func:`tracker.quality.batches.linking.sync_links` (and, for a released batch,
:func:`tracker.quality.batches.postrelease.watch`) itself first (docs/quality.md, "Known limits").
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

from sqlmodel import Session, select
from typing_extensions import TypedDict

from tracker.core.timeutil import iso_utc, utcnow
from tracker.facility.models import Site
from tracker.identity.signatures import SignatureManifest
from tracker.quality.batches.flags import FlagDoc, batch_flags
from tracker.quality.batches.models import Batch, ExcursionLink, ProcessStep
from tracker.quality.batches.postrelease import PostReleaseDoc, post_release_docs
from tracker.quality.batches.release import StepDoc, batch_content, gate_reasons, signature_checks
from tracker.quality.batches.review import ReviewItemDoc, review_items
from tracker.quality.batches.steps import list_batches
from tracker.quality.deviations import Deviation, DeviationBatch


class BatchSummary(TypedDict):
    """A batch in a list; ``donor_id`` is the donor's pseudonym (docs/data-protection.md)."""

    number: str
    product: str
    donor_id: str
    status: str


class BatchDeviation(TypedDict):
    """A deviation linked to the batch, with the impact assessed for this batch."""

    number: str
    status: str
    classification: str
    impact: str | None


class BatchReport(TypedDict):
    """Everything QA and the QP look at for one batch (``tracker batch show``, the batch page,
    ``GET /api/v1/batches/{number}``)."""

    number: str
    product: str
    donor_id: str
    patient_id: str | None
    status: str
    site: str
    timezone: str
    created_at: str
    created_by: str
    steps: list[StepDoc]
    flags: list[FlagDoc]
    review: list[ReviewItemDoc]
    deviations: list[BatchDeviation]
    signatures: list[SignatureManifest]
    gate: list[str]  # why QA review and release are refused now; empty when the gate is open
    #: environmental facts that reached the batch after its release, and QA's assessments
    post_release: list[PostReleaseDoc]


class LinkDoc(TypedDict):
    """An exposure link (excursion ↔ process step) for QA to confirm or reject."""

    id: int
    excursion: int
    batch: str
    step: int
    step_name: str
    status: str  # proposed | confirmed | rejected | withdrawn
    reason: str | None
    decided_by: str | None


def summary(batch: Batch) -> BatchSummary:
    return {
        "number": batch.number,
        "product": batch.product,
        "donor_id": batch.donor_id,
        "status": batch.status,
    }


def batch_summaries(session: Session, *, status: str | None = None) -> list[BatchSummary]:
    return [summary(b) for b in list_batches(session, status=status)]


def batch_report(session: Session, batch: Batch, *, now: datetime | None = None) -> BatchReport:
    """The batch for review, from the exposure links as stored (local times in the site's time
    zone). The gate listed here is the one :func:`~tracker.quality.batches.release.qa_review`
    applies once the proposals are up to date."""
    now = now or utcnow()
    items = review_items(session, batch, now=now)
    checks = signature_checks(session, batch)
    site = session.get(Site, batch.site_id)
    tz = site.timezone
    return {
        "number": batch.number,
        "product": batch.product,
        "donor_id": batch.donor_id,
        "patient_id": batch.patient_id,
        "status": batch.status,
        "site": site.code,
        "timezone": tz,
        "created_at": iso_utc(batch.created_at),
        "created_by": batch.created_by,
        "steps": batch_content(session, batch)["steps"],
        "flags": [f.to_json() for f in batch_flags(session, batch)],
        "review": [i.to_json() for i in items],
        "deviations": [
            {
                "number": d.number,
                "status": d.status,
                "classification": d.classification,
                "impact": link.impact,
            }
            for d, link in session.exec(
                select(Deviation, DeviationBatch)
                .join(DeviationBatch, DeviationBatch.deviation_id == Deviation.id)
                .where(DeviationBatch.batch_id == batch.id)
                .order_by(Deviation.number)
            ).all()
        ],
        "signatures": [c.manifest(tz) for c in checks],
        "gate": (
            gate_reasons(session, batch, now=now, items=items, checks=checks)
            if batch.status not in ("released", "rejected")
            else []
        ),
        "post_release": post_release_docs(session, batch),
    }


def exposure_links(
    session: Session,
    *,
    batch: Batch | None = None,
    status: str | None = None,
    excursion_ids: Collection[int] | None = None,
) -> list[LinkDoc]:
    """Exposure links in the order they were proposed: of one batch, of some excursions (a
    deviation's), in one status (``proposed``: the pending ones), or all."""
    query = (
        select(ExcursionLink, Batch.number, ProcessStep.name)
        .join(Batch, Batch.id == ExcursionLink.batch_id)
        .join(ProcessStep, ProcessStep.id == ExcursionLink.step_id)
        .order_by(ExcursionLink.id)
    )
    if batch is not None:
        query = query.where(ExcursionLink.batch_id == batch.id)
    if status:
        query = query.where(ExcursionLink.status == status)
    if excursion_ids is not None:
        query = query.where(ExcursionLink.excursion_id.in_(list(excursion_ids)))
    return [
        {
            "id": link.id,
            "excursion": link.excursion_id,
            "batch": number,
            "step": link.step_id,
            "step_name": name,
            "status": link.status,
            "reason": link.reason,
            "decided_by": link.decided_by,
        }
        for link, number, name in session.exec(query).all()
    ]
