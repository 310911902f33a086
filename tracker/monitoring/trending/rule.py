"""``predicted`` warnings in ingest: the breach forecast of ``trending.forecast`` as a rule.

Each batch's slow series (pressure, temperature, humidity) whose site switched the forecast on
(``[rules] forecast_horizon_h`` > 0) is evaluated at most every ``EVERY_S`` of event time: its
last ``forecast_window_min`` of valid readings are read back (one indexed range query) and
fitted. A warning is an ``Excursion`` of type ``predicted``: open while the band crosses a
level within the horizon, raised from alert to action when the action level is crossed too,
closed when the forecast no longer crosses (or the level was reached: then the limit
excursion speaks). It is never a breach: statistics, the release gate, exposure links and
the annual breach counts leave it out (``tracker.monitoring.excursions.breaches``); ``[[notify]]`` rules that name
``predicted`` announce it through the outbox like any excursion.

Why in ingest and not a periodic job: the warning is worth its lead time, and the batch that
brings the readings is the earliest moment to judge them; throttled to one fit per series per
5 min the cost is one query and a 120-point least-squares fit (docs/performance.md,
``bench/prediction.py``: the measured cost per evaluation).
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, ClassVar

from sqlmodel import Session, select

from tracker.monitoring.excursions import PREDICTED, Excursion
from tracker.monitoring.trending import series
from tracker.monitoring.trending.forecast import Levels, Prediction, WarningState, predict

if TYPE_CHECKING:
    from tracker.monitoring.episodes import Judged
    from tracker.monitoring.rules.base import Reevaluation, StoredBatch
    from tracker.monitoring.snapshot import MonitorEntry

SLOW_KINDS = frozenset({"pressure", "temperature", "humidity"})
#: at most one fit per series per this much event time
EVERY_S = 300.0


def describe(prediction: Prediction) -> str:
    """The warning's note: what is forecast to cross what, when, at which trend."""
    c = prediction.crossing
    return (
        f"forecast band crosses the {prediction.level} level {c.limit:g} ({c.direction}); at the "
        f"trend of {c.slope_per_h:+.3g}/h the level is about {c.eta_min:.0f} min away"
    )


class ForecastRule:
    """A ``Rule`` (``tracker.monitoring.rules.base``) raising and closing ``predicted`` warnings."""

    #: yes: it keeps only when each series was last fitted; the fit reads the stored readings
    #: and the limits come with each batch's judged values
    survives_refresh: ClassVar[bool] = True

    def __init__(
        self, *, horizon_h: float | None = None, window_min: float | None = None, every_s: float = EVERY_S
    ) -> None:
        #: explicit values override every site's ``[rules] forecast_*`` (tests, bench)
        self.horizon_h = horizon_h
        self.window_min = window_min
        self.every = timedelta(seconds=every_s)
        self.last_fit: dict[tuple[int, str], datetime] = {}

    def forget(self, monitor_ids: Collection[int] | None = None) -> None:
        """Forget when series were fitted: the next batch fits them again."""
        if monitor_ids is None:
            self.last_fit.clear()
            return
        for key in [k for k in self.last_fit if k[0] in monitor_ids]:
            del self.last_fit[key]

    def after_reevaluation(self, session: Session, change: Reevaluation) -> None:
        """Nothing: a forecast looks ahead from live data; re-judged history does not change
        what was forecast at the time (the warning records what was known then)."""

    def after_batch(self, session: Session, batch: StoredBatch) -> None:
        """Fit each due slow series of the batch and open, raise or close its warning."""
        for key, judged in batch.series.items():
            entry = batch.registry.by_id[key[0]]
            horizon = self.horizon_h if self.horizon_h is not None else entry.compliance.forecast_horizon_h
            if horizon <= 0 or entry.kind not in SLOW_KINDS or not judged:
                continue
            last = max(judged, key=lambda j: j.at)
            fitted = self.last_fit.get(key)
            if fitted is not None and last.at < fitted + self.every:
                continue
            self.last_fit[key] = last.at
            window = self.window_min if self.window_min is not None else entry.compliance.forecast_window_min
            self._fit(session, entry, key[1], last, horizon, window, batch.now)

    def _fit(
        self,
        session: Session,
        entry: MonitorEntry,
        channel: str,
        last: Judged,
        horizon_h: float,
        window_min: float,
        now: datetime,
    ) -> None:
        """Fit the series' window ending at ``last`` and open, raise or close its warning."""
        bounds = last.bounds
        stored = session.exec(
            select(Excursion).where(
                Excursion.monitor_id == entry.id,
                Excursion.channel == channel,
                Excursion.type == PREDICTED,
                Excursion.status == "open",
            )
        ).first()
        prediction = None
        if bounds is not None:
            start = last.at - timedelta(minutes=window_min)
            rows = series.readings(session, entry.id, channel, start, last.at + timedelta(microseconds=1))
            if rows:
                t = [(at - start).total_seconds() for at, _ in rows]
                levels = Levels(bounds.alert_low, bounds.alert_high, bounds.action_low, bounds.action_high)
                prediction = predict(
                    t, [v for _, v in rows], levels=levels, horizon_min=horizon_h * 60, window_min=window_min
                )
        state = WarningState(stored.level if stored is not None else None)
        change = state.feed(prediction)
        if change is None and (prediction is None or stored is None):
            return
        if change == "closed":
            assert stored is not None
            stored.status, stored.ended_at, stored.closed_by_at = "closed", last.at, last.at
            stored.note = (stored.note or "") + "\nclosed: the forecast no longer crosses a level"
            stored.updated_at = now
            session.add(stored)
            return
        assert prediction is not None
        c = prediction.crossing
        if stored is None:
            stored = Excursion(
                type=PREDICTED,
                site_id=entry.site_id,
                monitor_id=entry.id,
                room_id=entry.room_id,
                kind=entry.kind,
                channel=channel,
                level=prediction.level,
                state=last.state,
                direction=c.direction,
                status="open",
                started_at=last.at,
                peak=c.bound,
                basis_id=entry.basis_id,
                created_at=now,
                updated_at=now,
                note=describe(prediction),
            )
        stored.level = state.level or prediction.level
        stored.direction, stored.limit_value = c.direction, c.limit
        stored.last_out_at, stored.updated_at = last.at, now
        stored.readings += 1  # for a warning: the fits that forecast a crossing
        if change == "raised":
            stored.note = (stored.note or "") + "\nraised: " + describe(prediction)
        session.add(stored)
        session.flush()
