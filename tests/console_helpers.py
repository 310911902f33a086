"""Helpers for the console tests (issue 17): readings stored through the real intake."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Engine

from tests.factories import T0, minutes, particles, topic
from tracker.core.db import unit_of_work
from tracker.ingest.processor import BatchProcessor, InboundMessage
from tracker.monitoring.intake import Intake


def bsc_burst(*, start_seq: int, minutes_: Iterable[int], high: Iterable[int], c05: int = 1000) -> list:
    """BSC particle readings (100 L samples) one a minute from T0; ``high`` minutes at ``c05`` counts
    (10,000 /m³: beyond grade A's action level), the others at 20."""
    high = set(high)
    return [
        InboundMessage(
            topic=topic("T-B1-BSC", "T-BSC-PC"),
            received_at=T0 + minutes(m),
            dup=False,
            payload=particles(
                monitor="T-BSC-PC",
                seq=start_seq + i,
                ts=T0 + minutes(m),
                c05=c05 if m in high else 20,
                volume=100,
            ),
        )
        for i, m in enumerate(minutes_)
    ]


def store(engine: Engine, messages: list) -> None:
    """Store ``messages`` as the ingester would (one batch, one unit of work)."""
    with unit_of_work(engine) as s:
        BatchProcessor(Intake(close_after=3)).process(s, messages)
