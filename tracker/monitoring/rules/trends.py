"""Adverse trends (``type=adverse_trend``): repeated alert excursions at one monitor.

EU GMP Annex 1 (2022) §9 expects alert levels to reveal adverse trends, at least
consecutive alert excursions (regulatory.md §5.2, §5.3: 2–3 consecutive alerts → trend
deviation); GMP 2010 Art. 252 makes quality-monitoring trends a CAPA input. Default: the
third alert excursion of a monitor within 24 h raises a trend spanning every alert of that
window; further alerts within the window extend it. Judged on closed alert episodes (their
final level is then known).

The trends are a function of the monitor's closed alert excursions in time order
(:func:`trend_spans`), re-derived whenever one closes and reconciled with the stored ones, so
the order in which episodes close — late data, or several ingest workers — does not matter.
"""

from __future__ import annotations

import bisect
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, ClassVar

from sqlmodel import Session, select

from tracker.core import audit
from tracker.monitoring.excursions import (
    REPLAY_REASON,
    SYSTEM_ACTOR,
    Excursion,
    excursion_shape,
    supersede_excursion,
)
from tracker.monitoring.snapshot import MonitorEntry

if TYPE_CHECKING:
    from tracker.monitoring.rules.base import Reevaluation, StoredBatch


@dataclass(frozen=True, slots=True)
class TrendSpan:
    start: datetime
    end: datetime
    state: str
    alerts: int


def trend_spans(alerts: Sequence[tuple[datetime, str]], *, n: int, window: timedelta) -> list[TrendSpan]:
    """Pure: trends from ``(start, state)`` of closed alert excursions sorted by start.

    An alert with ``n`` alerts in ``(its start − window, its start]`` raises a trend from the
    first of them, or extends the last trend if that ended within the window; ``alerts``
    counts those of the window that lie in the trend.
    """
    times = [t for t, _ in alerts]
    spans: list[TrendSpan] = []
    for t, state in alerts:
        recent = times[bisect.bisect_right(times, t - window) : bisect.bisect_right(times, t)]
        if len(recent) < n:
            continue
        if spans and spans[-1].end >= t - window:
            start, state = spans[-1].start, spans[-1].state
            spans.pop()
        else:
            start = recent[0]
        spans.append(TrendSpan(start, t, state, sum(1 for x in recent if x >= start)))
    return spans


class TrendRule:
    """Adverse trends, re-derived from the stored alert excursions whenever the episode book
    reports an alert closed or a replay (``on_alert_closed``). A ``Rule``
    (``tracker.monitoring.rules.base``) without state and without work of its own."""

    #: yes: no in-memory state
    survives_refresh: ClassVar[bool] = True

    def __init__(self, *, alerts: int | None = None, window: timedelta | None = None) -> None:
        #: explicit values override every site's ``[rules] trend_alerts`` / ``trend_window_h``
        self.alerts = alerts
        self.window = window

    def forget(self, monitor_ids: Collection[int] | None = None) -> None:
        """Nothing to forget."""

    def after_batch(self, session: Session, batch: StoredBatch) -> None:
        """Nothing: the episode book calls ``on_alert_closed`` while it advances the batch."""

    def after_reevaluation(self, session: Session, change: Reevaluation) -> None:
        """Nothing, as re-evaluation has always run: its episode book has no trend callback,
        so trends follow re-judged alert episodes only at the monitor's next alert or replay
        in ingest (``rules.ruleset.build_rules`` with ``trend=None``)."""

    def on_alert_closed(self, session: Session, entry: MonitorEntry, now: datetime) -> None:
        """Re-derive the monitor's adverse trends after its alert episodes changed."""
        session.flush()
        alerts = session.exec(
            select(Excursion.started_at, Excursion.state)
            .where(
                Excursion.monitor_id == entry.id,
                Excursion.type == "limit",
                Excursion.level == "alert",
                Excursion.status == "closed",
                Excursion.challenge_id.is_(None),  # a test of the alarm chain is no trend
            )
            .order_by(Excursion.started_at)
        ).all()
        n = self.alerts if self.alerts is not None else entry.compliance.trend_alerts
        window = self.window if self.window is not None else timedelta(hours=entry.compliance.trend_window_h)
        spans = trend_spans(alerts, n=n, window=window)
        stored = list(
            session.exec(
                select(Excursion)
                .where(
                    Excursion.monitor_id == entry.id,
                    Excursion.type == "adverse_trend",
                    Excursion.status != "superseded",
                )
                .order_by(Excursion.started_at, Excursion.id)
            )
        )
        for span in spans:
            row = next((r for r in stored if r.started_at <= span.end and span.start <= r.ended_at), None)
            before = None
            if row is None:
                row = Excursion(
                    type="adverse_trend",
                    site_id=entry.site_id,
                    monitor_id=entry.id,
                    room_id=entry.room_id,
                    kind=entry.kind,
                    channel="",
                    level="action",
                    state=span.state,
                    direction="none",
                    status="closed",
                    started_at=span.start,
                    peak=0,
                    readings=0,
                    limit_value=float(n),
                    basis_id=entry.basis_id,
                    created_at=now,
                    updated_at=now,
                    note=f"{n} alert excursions within {window.total_seconds() / 3600:g} h",
                )
            else:
                stored.remove(row)
                before = excursion_shape(row)
                if (row.started_at, row.ended_at, row.readings) == (span.start, span.end, span.alerts):
                    continue
            row.started_at = span.start
            row.ended_at = row.closed_by_at = row.last_out_at = span.end
            #: for a trend, ``readings`` counts the alert excursions of its window
            row.readings = span.alerts
            row.peak = float(span.alerts)
            row.updated_at = now
            session.add(row)
            if before is not None and before["started_at"] != row.started_at:
                session.flush()
                audit.record(
                    session,
                    actor=SYSTEM_ACTOR,
                    action="excursion.reshape",
                    entity="excursion",
                    entity_key=str(row.id),
                    before=before,
                    after=excursion_shape(row),
                    at=now,
                    reason=REPLAY_REASON,
                )
        for row in stored:  # no longer supported (a superseded or reshaped alert)
            supersede_excursion(session, row, now, REPLAY_REASON)
