"""Read views across the quality package: deviation documents name their batches, and
:mod:`tracker.quality.deviations` may not import the batch records that number them, so the
documents are put together here (the layer above both). Like every read view, these write
nothing; the CLI, the JSON API and the pages only format them."""

from __future__ import annotations

from sqlmodel import Session, select

from tracker.quality.batches.models import Batch
from tracker.quality.deviations import Deviation, DeviationDoc, deviation_document, list_deviations


def _batch_numbers(session: Session) -> dict[int, str]:
    return dict(session.exec(select(Batch.id, Batch.number)).all())


def deviation_view(session: Session, dev: Deviation) -> DeviationDoc:
    """One deviation (``tracker deviation show``, its page, ``GET /api/v1/deviations/{number}``)."""
    return deviation_document(session, dev, batch_numbers=_batch_numbers(session))


def deviation_views(session: Session, *, status: str | None = None) -> list[DeviationDoc]:
    """The deviations in ``status`` (``not_closed``: every one still open), by number."""
    numbers = _batch_numbers(session)
    return [
        deviation_document(session, dev, batch_numbers=numbers)
        for dev in list_deviations(session, status=status)
    ]
