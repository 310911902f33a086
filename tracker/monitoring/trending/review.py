"""The periodic limits review (issue 21 item 5): per room, parameter, channel and state, the
levels in force beside what the period's data say about them.

Annex 1 (2022) §9.x and PDA TR13 expect alert levels to be set from, and reviewed against,
trend data; the review puts on one page what QA needs for that decision: the current levels,
the data-driven proposal (``tracker.monitoring.proposals``, computed here but not stored), the
control-chart baseline of the room's series since its latest standing change point, the
period's excursion rates, its change points, and a recommendation. The review changes
nothing: a change of level goes through ``tracker limits propose`` / ``approve`` as always.
The document is signed by QA (``tracker.reports.limits_review``).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import numpy as np
from sqlmodel import Session, func, select

from tracker.core.errors import InvalidInputError, Reason
from tracker.core.timeutil import iso_utc
from tracker.facility.models import Monitor, Room, Site
from tracker.monitoring import proposals
from tracker.monitoring.excursions import PREDICTED, Excursion
from tracker.monitoring.readings import Reading
from tracker.monitoring.rollups import RollupHourly
from tracker.monitoring.trending import store
from tracker.monitoring.trending.charts import count_baseline, individuals_baseline

#: a proposal this much tighter than the level in force (share of the level) suggests tightening
TIGHTEN_SHARE = 0.2
#: pressure: a proposed alert level this many Pa above the one in force suggests tightening
TIGHTEN_PA = 1.0

RECOMMENDATIONS = {
    "investigate": (
        "investigate: action excursions in the period, or the data sit beyond the levels in force",
        "调查：期间内有纠偏级超标，或数据超出现行限度",
    ),
    "annotate": (
        "annotate the change points before deciding: a baseline may have moved",
        "决定前先注释变点：基线可能已经改变",
    ),
    "tighten": (
        "consider tighter levels: propose them (tracker limits propose) for QA approval",
        "考虑收紧限度：通过 tracker limits propose 提出建议，由 QA 批准",
    ),
    "keep": ("keep the levels in force", "维持现行限度"),
    "no_data": ("too few data in the period to judge", "期间内数据不足，无法判断"),
}


def parse_period(text: str, timezone: str) -> tuple[datetime, datetime]:
    """``2026`` (a year), ``2026-Q4`` (a quarter) or ``2026-11`` (a month) in the site's time
    zone, as UTC instants ``[start, end)``."""
    tz = ZoneInfo(timezone)
    match = re.fullmatch(r"(\d{4})(?:-(?:Q([1-4])|(\d{2})))?", text.strip())
    if match is None or (match.group(3) and not 1 <= int(match.group(3)) <= 12):
        raise InvalidInputError(
            Reason(
                f"a period is a year (2026), a quarter (2026-Q4) or a month (2026-11), not {text!r}",
                f"期间须为年份（2026）、季度（2026-Q4）或月份（2026-11），而不是 {text!r}",
            )
        )
    year = int(match.group(1))
    if match.group(2):
        first, months = 3 * int(match.group(2)) - 2, 3
    elif match.group(3):
        first, months = int(match.group(3)), 1
    else:
        first, months = 1, 12
    last = first + months
    start = datetime(year, first, 1, tzinfo=tz)
    end = datetime(year + (last - 1) // 12, (last - 1) % 12 + 1, 1, tzinfo=tz)
    return start.astimezone(UTC), end.astimezone(UTC)


def _series_keys(
    session: Session, site: Site, start: datetime, end: datetime
) -> list[tuple[Room, str, str, str]]:
    """(room, kind, channel, state) of every series with valid readings in the period, from the rollups."""
    rows = session.exec(
        select(Room, Monitor.kind, RollupHourly.channel, RollupHourly.state)
        .join(Monitor, Monitor.room_id == Room.id)
        .join(RollupHourly, RollupHourly.monitor_id == Monitor.id)
        .where(
            Room.site_id == site.id,
            Monitor.active,
            RollupHourly.hour >= start,
            RollupHourly.hour < end,
            RollupHourly.count > 0,
        )
        .distinct()
    ).all()
    keys = {(room.id, kind, channel, state or "at_rest"): room for room, kind, channel, state in rows}
    return sorted(
        ((r, k, c, s) for (_, k, c, s), r in keys.items()), key=lambda x: (x[0].code, x[1], x[2], x[3])
    )


def _monitored_hours(
    session: Session, monitor_ids: list[int], channel: str, start: datetime, end: datetime
) -> int:
    return int(
        session.exec(
            select(func.count(func.distinct(RollupHourly.hour))).where(
                RollupHourly.monitor_id.in_(monitor_ids),
                RollupHourly.channel == channel,
                RollupHourly.hour >= start,
                RollupHourly.hour < end,
                RollupHourly.count > 0,
            )
        ).one()
    )


def _excursions(
    session: Session, monitor_ids: list[int], channel: str, state: str, start: datetime, end: datetime
) -> dict:
    rows = session.exec(
        select(Excursion.type, Excursion.level).where(
            Excursion.monitor_id.in_(monitor_ids),
            Excursion.channel == channel,
            Excursion.state == state,
            Excursion.status != "superseded",
            Excursion.started_at >= start,
            Excursion.started_at < end,
        )
    ).all()
    limit = [level for type_, level in rows if type_ == "limit"]
    return {
        "alert": limit.count("alert"),
        "action": limit.count("action"),
        #: forecast warnings, beside the breaches and never among them
        "predicted": sum(type_ == PREDICTED for type_, _ in rows),
    }


def _proposal(
    session: Session,
    site: Site,
    room: Room,
    kind: str,
    channel: str,
    state: str,
    monitors: list[Monitor],
    start: datetime,
    end: datetime,
) -> dict | None:
    """What ``tracker limits propose`` would propose for the period, without storing it."""
    if kind not in proposals.SUPPORTED:
        return {"note": "temperature and humidity keep their design-code ranges (docs/limits.md)"}
    values, days = proposals._values(session, [m.id for m in monitors], channel, state, start, end)
    if len(values) < 2:
        return None
    stats = proposals.describe(values)
    cur_alert, cur_action, regulatory = proposals._current(
        session, site, room, kind, channel, state, monitors
    )
    resolution = 1000.0 / max(m.sample_volume_l or 28.3 for m in monitors) if kind == "particles" else 0.0
    alert, action, notes = proposals._levels(
        kind, proposals.SUPPORTED[kind], stats, regulatory, (cur_alert, cur_action), resolution
    )
    return {"alert": alert, "action": action, "readings": len(values), "days": len(days), "notes": notes}


def _baseline(
    session: Session,
    kind: str,
    channel: str,
    monitors: list[Monitor],
    state: str,
    start: datetime,
    end: datetime,
) -> dict | None:
    """The control-chart baseline of the room's series since the latest standing change point."""
    state_filter = state if kind in store.BY_STATE else None
    since = max(
        (
            s
            for m in monitors
            if (s := store.baseline_start(session, m.id, channel, end)) is not None and s > start
        ),
        default=start,
    )
    if kind == "particles":
        values = list(
            session.exec(
                select(Reading.value).where(
                    Reading.monitor_id.in_([m.id for m in monitors]),
                    Reading.channel == channel,
                    Reading.state == state,
                    Reading.invalid_reason.is_(None),
                    Reading.event_time >= since,
                    Reading.event_time < end,
                )
            ).all()
        )
        if len(values) < 2:
            return None
        per_count = 1000.0 / max(m.sample_volume_l or 28.3 for m in monitors)
        b = count_baseline(np.asarray(values, dtype=float), per_count=per_count)
    else:
        means = [
            mean
            for m in monitors
            for _, mean, _ in store.series.hourly_means(
                session, m.id, channel, since, end, state=state_filter
            )
        ]
        if len(means) < 2:
            return None
        b = individuals_baseline(means, cycles=kind in store.CYCLING)
    return {"from": iso_utc(since), **b.as_dict()}


def _levels_in_force(registry, monitor: Monitor, channel: str, state: str) -> dict:
    """The alert and action levels (and the regulatory limit) judging the series now; for
    particles the high side, for pressure the low side, for the rest both."""
    entry = registry.by_id.get(monitor.id)
    b = entry.limits.for_reading(channel, state) if entry is not None else None
    if b is None:
        return {"alert": None, "action": None, "regulatory": None}
    side = proposals.SUPPORTED.get(monitor.kind)
    if side == "high":
        return {"alert": b.alert_high, "action": b.action_high, "regulatory": b.regulatory_high}
    if side == "low":
        return {"alert": b.alert_low, "action": b.action_low, "regulatory": b.regulatory_low}
    return {
        "alert": [b.alert_low, b.alert_high],
        "action": [b.action_low, b.action_high],
        "regulatory": [b.regulatory_low, b.regulatory_high],
    }


def _recommend(
    kind: str, current: dict, proposal: dict | None, excursions: dict, change_points: list[dict]
) -> str:
    if proposal is None:
        return "no_data"
    notes = " ".join(proposal.get("notes", []))
    if excursions["action"] or "investigate" in notes or "looser" in notes:
        return "investigate"
    if any(c["status"] == "detected" for c in change_points):
        return "annotate"
    alert, proposed = current.get("alert"), proposal.get("alert")
    if isinstance(alert, float | int) and proposed is not None:
        if kind == "particles" and proposed < alert * (1 - TIGHTEN_SHARE):
            return "tighten"
        if kind == "pressure" and proposed > alert + TIGHTEN_PA:
            return "tighten"
    return "keep"


def build_review(
    session: Session, site: Site, start: datetime, end: datetime, *, detect: bool = True
) -> dict:
    """The review document of ``[start, end)``; ``detect`` first looks for new change points
    of every series in the period (stored, so QA can annotate them)."""
    if end <= start:
        raise InvalidInputError(Reason("the period must end after it starts", "期间的结束须晚于开始"))
    from tracker.monitoring.snapshot import build_registry

    registry = build_registry(session)
    rows = []
    for room, kind, channel, state in _series_keys(session, site, start, end):
        monitors = list(
            session.exec(
                select(Monitor)
                .where(Monitor.room_id == room.id, Monitor.kind == kind, Monitor.active)
                .order_by(Monitor.code)
            )
        )
        monitors = [m for m in monitors if kind != "particles" or channel in m.channels.split(",")]
        if not monitors:
            continue
        if detect:
            for m in monitors:
                store.detect(session, m, channel, start, end)
        current = _levels_in_force(registry, monitors[0], channel, state)
        hours = _monitored_hours(session, [m.id for m in monitors], channel, start, end)
        exc = _excursions(session, [m.id for m in monitors], channel, state, start, end)
        per_1000 = {k: (round(1000 * v / hours, 2) if hours else None) for k, v in exc.items()}
        cps = [
            {"monitor": m.code, **store.change_point_doc(c)}
            for m in monitors
            for c in session.exec(
                select(store.ChangePoint)
                .where(
                    store.ChangePoint.monitor_id == m.id,
                    store.ChangePoint.channel == channel,
                    store.ChangePoint.at >= start,
                    store.ChangePoint.at < end,
                )
                .order_by(store.ChangePoint.at)
            )
        ]
        proposal = _proposal(session, site, room, kind, channel, state, monitors, start, end)
        code = _recommend(kind, current, proposal, exc, cps)
        en, zh = RECOMMENDATIONS[code]
        rows.append(
            {
                "room": room.code,
                "grade": room.grade,
                "kind": kind,
                "channel": channel,
                "state": state,
                "monitors": [m.code for m in monitors],
                "current": current,
                "proposal": proposal,
                "baseline": _baseline(session, kind, channel, monitors, state, start, end),
                "monitored_hours": hours,
                "excursions": exc,
                "per_1000_h": per_1000,
                "change_points": cps,
                "recommendation": {"code": code, "en": en, "zh": zh},
            }
        )
    return {
        "site": site.code,
        "from": iso_utc(start),
        "to": iso_utc(end),
        "facility_revision": site.revision,
        "rows": rows,
        "method": "docs/trending.md",
    }
