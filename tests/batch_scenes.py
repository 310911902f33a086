"""Scripted batches for the records-trust tests (issue 15): a batch in the B room whose particle
counter went silent for ten minutes during the step (a data gap QA judged), signed through to
release; and the same counter's buffered readings coming back later."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Engine

from tests.factories import T0, as_, minutes, particles, topic
from tests.test_linking_review import batch_with_step
from tracker.core.db import unit_of_work
from tracker.ingest.processor import BatchProcessor, InboundMessage
from tracker.monitoring.intake import Intake
from tracker.quality.batches.linking import decide_link, links_of, sync_links
from tracker.quality.batches.release import qa_review, release, sign_production
from tracker.quality.batches.steps import complete_batch, get_batch

NUMBER = "CT-15"
SILENT = range(15, 26)  # the counter's buffer: minutes it did not deliver in time
#: 100,000 counts of 0.5 µm per 28.3 L ≈ 3.5 million /m³: above grade B in operation's action level
HIGH = 100_000


def feed(
    engine: Engine, minutes_: range | list[int], *, high: range = range(0), received: datetime | None = None
) -> None:
    """The B room counter's readings for those minutes (``high`` ones above action)."""
    messages = [
        InboundMessage(
            topic("T-B1", "T-B1-PC"),
            particles(seq=m + 1, ts=T0 + minutes(m), c05=HIGH if m in high else 10),
            received or T0 + timedelta(days=1),
        )
        for m in minutes_
    ]
    with unit_of_work(engine) as s:
        BatchProcessor(Intake()).process(s, messages)


def signed_off(engine: Engine, *, until: str = "released") -> None:
    """The batch with its gap judged (not exposed: closed vessels), signed up to ``until``."""
    feed(engine, [m for m in range(60) if m not in SILENT])
    batch_with_step(engine, NUMBER, "T-B1", 0, 40)
    with unit_of_work(engine) as s:
        batch = get_batch(s, NUMBER)
        complete_batch(s, actor=as_(engine, "op1"), batch=batch)
        sync_links(s, batch=batch)
        (link,) = links_of(s, batch)
        decide_link(
            s, signer=as_(engine, "qa1"), link_id=link.id, exposed=False, reason="vessels closed while silent"
        )
    with unit_of_work(engine) as s:
        sign_production(s, signer=as_(engine, "prod"), batch=get_batch(s, NUMBER))
    if until == "production_signed":
        return
    with unit_of_work(engine) as s:
        qa_review(s, signer=as_(engine, "qa1"), batch=get_batch(s, NUMBER))
    if until == "qa_reviewed":
        return
    with unit_of_work(engine) as s:
        release(s, signer=as_(engine, "qp1"), batch=get_batch(s, NUMBER))


def buffered_counter_comes_back(engine: Engine, *, high: range = range(18, 22)) -> None:
    """The silent minutes arrive late, some of them above action."""
    feed(engine, SILENT, high=high, received=T0 + timedelta(days=3))
