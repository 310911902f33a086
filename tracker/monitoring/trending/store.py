"""Change points as records QA can annotate, and the control chart of a series built on them.

A detected change point is stored once per series and estimated start (detection is
idempotent: running it again over overlapping periods finds the same shifts and adds none).
QA annotates it — what happened (a filter change, a new process) — or dismisses it as no
real change; either is audited. A later baseline starts at the latest change point before its
period that QA has not dismissed, so control limits describe the room as it is now, not
before its filter change (PDA TR13: alert levels reflect current performance).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
from sqlalchemy import Column, Text, UniqueConstraint
from sqlmodel import Field, Session, SQLModel, select

from tracker.core import audit
from tracker.core.db import UTCDateTime
from tracker.core.errors import ConflictError, InvalidInputError, NotFoundError, Reason
from tracker.core.timeutil import iso_utc, utcnow
from tracker.facility.models import Monitor
from tracker.identity.users import Authenticated, require_role
from tracker.monitoring.trending import series
from tracker.monitoring.trending.changepoints import K_SIGMA, cusum
from tracker.monitoring.trending.charts import Baseline, ewma_signals, individuals_baseline
from tracker.monitoring.trending.runrules import RULE_BY_NUMBER, first_firings, run_rules

#: hourly means need this many hours to make a baseline
MIN_BASELINE_HOURS = 24
STATUSES = ("detected", "annotated", "dismissed")
#: a change point must move the level by at least this share of its distance to the nearest
#: alert level: hourly means of many samples are so precise that a statistically clear shift
#: can be irrelevant (a 0.5 % move of a particle baseline); the CUSUM's reference value k is
#: half the smallest shift worth detecting (Montgomery §9.1.3), so this sets k
RELEVANT_SHARE = 0.1
#: kinds charted per room state (their levels differ by state)
BY_STATE = frozenset({"particles"})
#: kinds whose hourly means follow the HVAC cycle (``charts.individuals_baseline(cycles=True)``)
CYCLING = frozenset({"temperature", "humidity"})


class ChangePoint(SQLModel, table=True):
    __tablename__ = "change_point"
    __table_args__ = (UniqueConstraint("monitor_id", "channel", "at"),)

    id: int | None = Field(default=None, primary_key=True)
    site_id: int = Field(foreign_key="site.id", index=True)
    monitor_id: int = Field(foreign_key="monitor.id")
    channel: str = Field(default="", max_length=8)
    #: the estimated start of the shift (an hour) and when the CUSUM crossed its threshold
    at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    detected_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    direction: str = Field(max_length=4)  # up | down
    before: float
    after: float
    method: str = Field(default="cusum", max_length=20)
    #: detected | annotated (QA said what happened) | dismissed (QA: no real change)
    status: str = Field(default="detected", max_length=12)
    note: str | None = Field(default=None, sa_column=Column(Text))
    annotated_by: str | None = Field(default=None, max_length=60)
    annotated_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    created_at: datetime = Field(sa_type=UTCDateTime, nullable=False)


@dataclass(frozen=True, slots=True)
class Chart:
    """One series' control chart over a period: the points, the baseline they are judged
    against, and what fired."""

    monitor: str
    kind: str
    channel: str
    #: the room state charted (None: all)
    state: str | None
    baseline_from: datetime
    baseline_to: datetime
    baseline: Baseline | None
    hours: list[datetime]
    means: list[float]
    #: ``{"rule", "en", "zh", "start", "end"}`` per firing (times of the pattern's first and last point)
    signals: list[dict]
    ewma_signals: list[datetime]
    change_points: list[ChangePoint]

    def as_dict(self) -> dict:
        return {
            "monitor": self.monitor,
            "kind": self.kind,
            "channel": self.channel,
            "state": self.state,
            "baseline_from": iso_utc(self.baseline_from),
            "baseline_to": iso_utc(self.baseline_to),
            "baseline": self.baseline.as_dict() if self.baseline else None,
            "points": [{"hour": iso_utc(h), "mean": m} for h, m in zip(self.hours, self.means, strict=True)],
            "signals": self.signals,
            "ewma_signals": [iso_utc(t) for t in self.ewma_signals],
            "change_points": [change_point_doc(c) for c in self.change_points],
        }


def change_point_doc(c: ChangePoint) -> dict:
    return {
        "id": c.id,
        "at": iso_utc(c.at),
        "detected_at": iso_utc(c.detected_at),
        "direction": c.direction,
        "before": c.before,
        "after": c.after,
        "status": c.status,
        "note": c.note,
        "annotated_by": c.annotated_by,
    }


def baseline_start(session: Session, monitor_id: int, channel: str, before: datetime) -> datetime | None:
    """The latest standing change point before ``before``: where a baseline starts."""
    return session.exec(
        select(ChangePoint.at)
        .where(
            ChangePoint.monitor_id == monitor_id,
            ChangePoint.channel == channel,
            ChangePoint.at < before,
            ChangePoint.status != "dismissed",
        )
        .order_by(ChangePoint.at.desc())
    ).first()


def default_state(kind: str) -> str | None:
    """Particles are charted at rest by default (what a baseline is); the rest over all states."""
    return "at_rest" if kind in BY_STATE else None


def relevant_shift(session: Session, monitor: Monitor, channel: str, center: float) -> float:
    """The smallest shift worth recording: ``RELEVANT_SHARE`` of the distance from ``center``
    to the nearest alert level in force (at rest); 0 when no level is set."""
    from tracker.monitoring.snapshot import build_registry

    entry = build_registry(session).by_id.get(monitor.id)
    bounds = entry.limits.for_reading(channel, "at_rest") if entry is not None else None
    if bounds is None:
        return 0.0
    levels = [
        v
        for v in (bounds.alert_low, bounds.alert_high, bounds.action_low, bounds.action_high)
        if v is not None
    ]
    return RELEVANT_SHARE * min((abs(v - center) for v in levels), default=0.0)


def chart(
    session: Session,
    monitor: Monitor,
    channel: str,
    start: datetime,
    end: datetime,
    *,
    baseline_days: float = 30.0,
    state: str | None = "default",
) -> Chart:
    """The series' hourly-mean chart over ``[start, end)``: baseline from the ``baseline_days``
    before ``start`` (or from the latest standing change point, if later), individuals limits
    and run rules on the hourly means, EWMA beside them.

    Hourly means for every kind: for particles they are means of many Poisson counts, close
    enough to normal for the run rules (the per-sample count limit is ``charts.count_baseline``,
    used by the limits review)."""
    if state == "default":
        state = default_state(monitor.kind)
    base_from = start - timedelta(days=baseline_days)
    since = baseline_start(session, monitor.id, channel, start)
    if since is not None and since > base_from:
        base_from = since
    base = series.hourly_means(session, monitor.id, channel, base_from, start, state=state)
    points = series.hourly_means(session, monitor.id, channel, start, end, state=state)
    baseline = (
        individuals_baseline([m for _, m, _ in base], cycles=monitor.kind in CYCLING)
        if len(base) >= MIN_BASELINE_HOURS
        else None
    )
    hours = [h for h, _, _ in points]
    means = [m for _, m, _ in points]
    signals: list[dict] = []
    ewma: list[datetime] = []
    if baseline is not None and baseline.sigma > 0 and means:
        for s in first_firings(run_rules(means, center=baseline.center, sigma=baseline.sigma)):
            rule = RULE_BY_NUMBER[s.rule]
            signals.append(
                {
                    "rule": s.rule,
                    "en": rule.en,
                    "zh": rule.zh,
                    "start": iso_utc(hours[s.start]),
                    "end": iso_utc(hours[s.end]),
                }
            )
        ewma = [hours[i] for i in ewma_signals(means, baseline)]
    stored = list(
        session.exec(
            select(ChangePoint)
            .where(
                ChangePoint.monitor_id == monitor.id,
                ChangePoint.channel == channel,
                ChangePoint.at >= base_from,
                ChangePoint.at < end,
            )
            .order_by(ChangePoint.at)
        )
    )
    return Chart(
        monitor.code,
        monitor.kind,
        channel,
        state,
        base_from,
        start,
        baseline,
        hours,
        means,
        signals,
        ewma,
        stored,
    )


def detect(
    session: Session,
    monitor: Monitor,
    channel: str,
    start: datetime,
    end: datetime,
    *,
    now: datetime | None = None,
) -> list[ChangePoint]:
    """Find sustained shifts of the series' hourly means in ``[start, end)`` against the
    baseline before ``start`` (or the first ``MIN_BASELINE_HOURS`` of the period when there is
    none), at least ``relevant_shift`` large, and store the new ones. Returns those added."""
    now = now or utcnow()
    c = chart(session, monitor, channel, start, end)
    hours, means = c.hours, c.means
    if c.baseline is not None:
        center, sigma = c.baseline.center, c.baseline.sigma
    elif len(means) >= 2 * MIN_BASELINE_HOURS:
        first = individuals_baseline(means[:MIN_BASELINE_HOURS], cycles=monitor.kind in CYCLING)
        center, sigma = first.center, first.sigma
    else:
        return []
    if sigma <= 0:
        return []
    k = max(K_SIGMA, relevant_shift(session, monitor, channel, center) / (2 * sigma))
    added: list[ChangePoint] = []
    known = {cp.at for cp in c.change_points}
    for found in cusum(np.asarray(means), center=center, sigma=sigma, k=k):
        at = hours[found.index] if found.index < len(hours) else hours[-1]
        if at in known:
            continue
        row = ChangePoint(
            site_id=monitor.site_id,
            monitor_id=monitor.id,
            channel=channel,
            at=at,
            detected_at=hours[found.detected],
            direction=found.direction,
            before=found.before,
            after=found.after,
            created_at=now,
        )
        session.add(row)
        added.append(row)
    session.flush()
    return added


def annotate(
    session: Session,
    *,
    actor: Authenticated,
    change_point_id: int,
    note: str,
    dismiss: bool = False,
    now: datetime | None = None,
) -> ChangePoint:
    """QA says what the change was (or that it was none: ``dismiss``, and baselines ignore it)."""
    require_role(actor, "qa", action=Reason("annotating a change point", "注释变点"))
    if not note or not note.strip():
        raise InvalidInputError(Reason("an annotation needs a note", "注释变点须填写说明"))
    row = session.get(ChangePoint, change_point_id)
    if row is None:
        raise NotFoundError(Reason(f"no change point {change_point_id}", f"没有变点 {change_point_id}"))
    if row.status == "dismissed":
        raise ConflictError(
            Reason(f"change point {change_point_id} was dismissed", f"变点 {change_point_id} 已被驳回")
        )
    now = now or utcnow()
    before = {"status": row.status, "note": row.note}
    row.status = "dismissed" if dismiss else "annotated"
    row.note, row.annotated_by, row.annotated_at = note.strip(), actor.username, now
    session.add(row)
    audit.record(
        session,
        actor=actor.username,
        action="change_point.dismiss" if dismiss else "change_point.annotate",
        entity="change_point",
        entity_key=str(row.id),
        before=before,
        after={"status": row.status, "note": row.note},
        reason=row.note,
        at=now,
    )
    return row
