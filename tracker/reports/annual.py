"""The annual evaluation report's data: one JSON document per site and period (年度评估报告).

Sections follow regulatory.md §10.3 where this system holds the records; the others are listed
under ``inputs_required`` for QA to complete. The heavy figures (completeness, readings,
readings at alert/action, percentiles, time within limits) come from the hourly rollups with
numpy, never from raw readings, so a site-year takes seconds. Every figure is "as at the end of
the period": statuses are reconstructed from the dated fields (closed_at, done_at, signatures),
so the same period built again later gives the same document, which is what the e-signatures
of the report are checked against (:func:`signed_content`).

Times are ISO 8601 UTC; months are calendar months in the site's time zone. The definitions of
every figure travel in the document (``definitions``) and in ``docs/report.md``.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from statistics import median
from zoneinfo import ZoneInfo

import numpy as np
from sqlalchemy import func
from sqlmodel import Session, select

from tracker.core import audit
from tracker.core.db import time_param
from tracker.core.timeutil import iso_utc, utcnow
from tracker.facility.limits import MonitorSpec, load_limit_set, resolve_monitor_limits
from tracker.facility.load import limits_content
from tracker.facility.models import FacilityLimit, Monitor, Room, Site, calibration_status
from tracker.identity.signatures import Signature
from tracker.monitoring.excursions import Excursion
from tracker.monitoring.rollups import RollupHourly, percentile
from tracker.quality.batches.flags import batch_flags
from tracker.quality.batches.integrity import all_signature_checks
from tracker.quality.batches.models import Batch, ExcursionLink, ProcessStep
from tracker.quality.deviations import CapaAction, Deviation, DeviationBatch, DeviationExcursion, classes

SCHEMA = "gmp.annual-report/1"
EXCURSION_TYPES = ("limit", "data_gap", "recurrence", "adverse_trend", "recovery")
GRADE_ORDER = ("A", "B", "C", "D", "CNC")
CLOSE_TARGET_DAYS = 30

DEFINITIONS = {
    "period": "[start, end) in UTC; a calendar year is 1 January 00:00 to 1 January 00:00 in the site's "
    "time zone. Months are calendar months in that time zone. Rollup hours are UTC hours "
    "assigned to the month their start falls in.",
    "as_at": "Statuses are as at the end of the period, reconstructed from dated records (closure, "
    "CAPA completion and effectiveness check, release/rejection signatures), so a report built "
    "again later gives the same figures.",
    "monitored_period": "Per monitor: from the later of the period start and the hour of the monitor's "
    "first stored reading, to the earlier of the period end and the report time "
    "(an inactive monitor: the end of the hour of its last reading).",
    "expected_readings": "floor(monitored period in seconds / the monitor's interval_s) × its channels "
    "(two for a particle counter with 0.5 and 5.0 µm).",
    "data_completeness": "Valid readings received ÷ expected readings, per monitor capped at 100 %; per room "
    "and grade the sums of valid and expected readings of its monitors. Invalid "
    "readings (sensor fault, calibration overdue, inhibited, outside the instrument "
    "range) are received but not valid.",
    "readings": "Channel values stored (valid + invalid), from the hourly rollups.",
    "monitored_hours": "Distinct monitor-hours with at least one reading.",
    "excursions": "Excursion episodes of the site that started in the period, superseded ones excluded; "
    "limit excursions are counted at the highest level they reached (alert or action).",
    "excursions_per_1000_h": "Limit excursions (alert + action) × 1000 ÷ monitored hours.",
    "excursion_duration": "ended_at − started_at, counted up to the end of the period (or the report "
    "time if earlier): an episode still open then, or ending after it, counts to there.",
    "time_to_response": "From an excursion's start to QA's first recorded response to it: its "
    "acknowledgement, a decision on an exposure link, or a deviation raised from it; excursions "
    "without a response are counted apart.",
    "p95": "95th percentile of the valid readings of a month, read from the rollups' fixed-bin histogram "
    "(particles: quarter-decade bins): the upper edge of the bin holding the percentile, so it "
    "never understates the true value by more than one bin.",
    "time_within_limits": "Valid readings at neither alert nor action level ÷ valid readings (each "
    "reading stands for one sample interval); within action: not at action level.",
    "deviations": "Deviations of the site opened in the period. Time to close: opened_at to closed_at. "
    "Recurrent: an earlier deviation (within 365 days) has the same category and the same "
    "root cause (case and spacing ignored).",
    "major_incidents": "Critical deviations opened in the period; whether one was a major quality or "
    "safety incident caused mainly by technical reasons (Nanning measures Art. 16) is "
    "QA's assessment, stated in the summary.",
    "capa": "CAPA actions created in the period, status at the period end: open, done (not yet checked), "
    "effective or not effective (effectiveness check, GMP Art. 253). Overdue: open after its due date.",
    "batches": "Started: batch records created in the period; released / rejected: QP release or rejection "
    "signatures in the period; open: started in the period without either by its end.",
    "exposed_batches": "Batches with a confirmed exposure link to an excursion that started in the period.",
    "audit_digest": "Hash of the last audit event recorded before the period end and the number of events to "
    "it; publishing it lets anyone check later that the trail behind the report is unchanged.",
}

#: regulatory.md §10.3 sections the tracker holds no records for: QA completes them
INPUT_SECTIONS = (
    (2, "organisation", "组织机构与人员", "Organisation and personnel"),
    (5, "qc_results", "放行与质量控制结果", "Release and QC results"),
    (10, "change_control", "变更控制与注册变更", "Change control and registration changes"),
    (11, "materials", "物料与供应商", "Materials and suppliers"),
    (13, "complaints", "投诉、不良反应、召回与退货", "Complaints, adverse reactions, recalls, returns"),
    (14, "stability", "稳定性与保存时限", "Stability and hold times"),
    (16, "inspections", "自检与外部检查", "Self-inspection and external inspections"),
    (17, "conclusions", "结论与计划", "Conclusions and plan"),
)

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Period:
    start: datetime
    end: datetime
    timezone: str
    year: int | None = None

    @property
    def label(self) -> str:
        return str(self.year) if self.year else f"{iso_utc(self.start)}/{iso_utc(self.end)}"


def year_period(timezone: str, year: int) -> Period:
    """1 January to 1 January in the site's time zone, as UTC instants."""
    tz = ZoneInfo(timezone)
    return Period(
        datetime(year, 1, 1, tzinfo=tz).astimezone(UTC),
        datetime(year + 1, 1, 1, tzinfo=tz).astimezone(UTC),
        timezone,
        year,
    )


def month_starts(period: Period) -> list[datetime]:
    """Starts (UTC) of the local calendar months overlapping the period, plus the period end."""
    tz = ZoneInfo(period.timezone)
    local = period.start.astimezone(tz)
    cur = datetime(local.year, local.month, 1, tzinfo=tz)
    out = [period.start]
    while True:
        cur = datetime(cur.year + (cur.month == 12), cur.month % 12 + 1, 1, tzinfo=tz)
        if cur.astimezone(UTC) >= period.end:
            break
        out.append(cur.astimezone(UTC))
    return [*out, period.end]


def month_labels(period: Period) -> list[str]:
    tz = ZoneInfo(period.timezone)
    return [m.astimezone(tz).strftime("%Y-%m") for m in month_starts(period)[:-1]]


def pct(num: float, den: float) -> float | None:
    return None if not den else round(100.0 * num / den, 3)


def _r(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(float(value), digits)


def _hours(td: timedelta) -> float:
    return round(td.total_seconds() / 3600, 3)


def _in(t: datetime | None, period: Period) -> bool:
    return t is not None and period.start <= t < period.end


def _by_month(times: list[datetime], edges: list[datetime]) -> list[int]:
    counts = [0] * (len(edges) - 1)
    for t in times:
        for i in range(len(edges) - 1):
            if edges[i] <= t < edges[i + 1]:
                counts[i] += 1
                break
    return counts


# --------------------------------------------------------------------------- rollups


@dataclass
class RollupArrays:
    monitor: np.ndarray  # monitor id
    channel: np.ndarray  # channel string (object)
    hour: np.ndarray  # epoch seconds of the hour (int64)
    count: np.ndarray
    invalid: np.ndarray
    n_alert: np.ndarray
    n_action: np.ndarray
    vmin: np.ndarray
    vmax: np.ndarray
    vsum: np.ndarray

    def select(self, mask: np.ndarray) -> RollupArrays:
        return RollupArrays(*(getattr(self, f)[mask] for f in self.__dataclass_fields__))


def _epoch_expr(dialect: str) -> str:
    if dialect == "sqlite":
        return "CAST(strftime('%s', hour) AS INTEGER)"
    return "CAST(EXTRACT(EPOCH FROM hour) AS BIGINT)"


def _rollup_sql(
    session: Session, columns: str, monitor_ids: list[int], period: Period, extra: str = ""
) -> list[tuple]:
    connection = session.connection()
    dialect = connection.dialect.name
    marker = "?" if connection.dialect.paramstyle == "qmark" else "%s"
    to_db = time_param(dialect)
    if not monitor_ids:
        return []
    ids = ",".join(str(int(i)) for i in monitor_ids)
    sql = (
        f"SELECT {columns.replace('HOUR_EPOCH', _epoch_expr(dialect))} FROM {RollupHourly.__tablename__} "
        f"WHERE monitor_id IN ({ids}) AND hour >= {marker} AND hour < {marker}{extra}"
    )
    return connection.exec_driver_sql(sql, (to_db(period.start), to_db(period.end))).fetchall()


def load_rollups(session: Session, monitor_ids: list[int], period: Period) -> RollupArrays:
    """The period's rollup rows of the given monitors as numpy columns (no histograms)."""
    rows = _rollup_sql(
        session,
        "monitor_id, channel, HOUR_EPOCH, count, invalid, n_alert, n_action, vmin, vmax, vsum",
        monitor_ids,
        period,
    )
    if not rows:
        empty_i, empty_f = np.zeros(0, np.int64), np.zeros(0, float)
        return RollupArrays(
            empty_i,
            np.zeros(0, object),
            empty_i,
            empty_i,
            empty_i,
            empty_i,
            empty_i,
            empty_f,
            empty_f,
            empty_f,
        )
    cols = list(zip(*rows, strict=True))
    as_f = lambda c: np.array([np.nan if v is None else v for v in c], dtype=float)  # noqa: E731
    return RollupArrays(
        np.array(cols[0], np.int64),
        np.array(cols[1], object),
        np.array(cols[2], np.int64),
        np.array(cols[3], np.int64),
        np.array(cols[4], np.int64),
        np.array(cols[5], np.int64),
        np.array(cols[6], np.int64),
        as_f(cols[7]),
        as_f(cols[8]),
        np.array(cols[9], float),
    )


def monthly_histograms(
    session: Session, monitor_ids: list[int], period: Period, edges_epoch: np.ndarray
) -> dict[tuple[int, str, int], Counter]:
    """Merged histograms per (monitor, channel, month index) for percentiles."""
    out: dict[tuple[int, str, int], Counter] = defaultdict(Counter)
    rows = _rollup_sql(
        session, "monitor_id, channel, HOUR_EPOCH, hist", monitor_ids, period, " AND hist <> '{}'"
    )
    if not rows:
        return out
    hours = np.fromiter((r[2] for r in rows), np.int64, len(rows))
    months = np.searchsorted(edges_epoch, hours, side="right") - 1
    for (monitor_id, channel, _h, hist), month in zip(rows, months.tolist(), strict=True):
        acc = out[(monitor_id, channel, month)]
        for b, n in json.loads(hist).items():
            acc[int(b)] += n
    return out


def _first_last_hours(session: Session, monitor_ids: list[int]) -> dict[int, tuple[datetime, datetime]]:
    rows = session.exec(
        select(RollupHourly.monitor_id, func.min(RollupHourly.hour), func.max(RollupHourly.hour))
        .where(RollupHourly.monitor_id.in_(monitor_ids))
        .group_by(RollupHourly.monitor_id)
    ).all()
    fix = lambda v: v if isinstance(v, datetime) else datetime.fromisoformat(str(v))  # noqa: E731
    return {m: (fix(a).replace(tzinfo=UTC), fix(b).replace(tzinfo=UTC)) for m, a, b in rows}


# --------------------------------------------------------------------------- the build


@dataclass
class Context:
    session: Session
    site: Site
    period: Period
    now: datetime
    rooms: dict[int, Room]
    monitors: dict[int, Monitor]
    edges: list[datetime]
    progress: Progress

    @property
    def until(self) -> datetime:
        """The end of what can have happened: the period end, or now if earlier."""
        return min(self.period.end, self.now)

    def room_code(self, room_id: int | None) -> str | None:
        return self.rooms[room_id].code if room_id in self.rooms else None


def build_annual_report(
    session: Session,
    *,
    site: Site,
    period: Period,
    now: datetime | None = None,
    progress: Progress | None = None,
    compare: bool = True,
) -> dict:
    """The report document for ``site`` over ``period`` (see the module doc and docs/report.md)."""
    now = now or utcnow()
    ctx = Context(
        session=session,
        site=site,
        period=period,
        now=now,
        rooms={r.id: r for r in session.exec(select(Room).where(Room.site_id == site.id))},
        monitors={
            m.id: m
            for m in session.exec(select(Monitor).where(Monitor.site_id == site.id).order_by(Monitor.code))
        },
        edges=month_starts(period),
        progress=progress or (lambda _step: None),
    )
    ctx.progress("facility")
    revision = revision_at(session, site, period.end)
    facility = facility_section(ctx, revision)
    ctx.progress("environment")
    environment, conditions = environment_sections(ctx, revision)
    ctx.progress("deviations")
    devs = deviation_section(ctx)
    capa = capa_section(ctx)
    ctx.progress("batches")
    production, traceability = batch_sections(ctx)
    ctx.progress("integrity")
    integrity = integrity_section(ctx, environment)
    report = {
        "schema": SCHEMA,
        "generated_at": iso_utc(now),
        "site": {
            "code": site.code,
            "name": site.name,
            "name_en": site.name_en,
            "timezone": site.timezone,
            "limit_set": site.limit_set,
            "facility_revision": revision,
        },
        "period": {
            "label": period.label,
            "year": period.year,
            "start": iso_utc(period.start),
            "end": iso_utc(period.end),
            "timezone": period.timezone,
            "months": month_labels(period),
            "complete": now >= period.end,
        },
        "definitions": DEFINITIONS,
        "facility": facility,
        "production": production,
        "environment": environment,
        "conditions": conditions,
        "deviations": devs,
        "capa": capa,
        "traceability": traceability,
        "limit_changes": limit_changes(ctx),
        "data_integrity": integrity,
        "inputs_required": [
            {"section": n, "id": key, "title_zh": zh, "title_en": en} for n, key, zh, en in INPUT_SECTIONS
        ],
    }
    report["summary"] = summary_section(report)
    ctx.progress("comparison")
    report["comparison"] = None
    if compare and period.year is not None:
        previous = year_period(period.timezone, period.year - 1)
        if has_data(session, site, previous):
            prev = build_annual_report(session, site=site, period=previous, now=now, compare=False)
            report["comparison"] = {
                "period": prev["period"]["label"],
                "key_figures": prev["summary"]["key_figures"],
            }
    return report


def signed_content(report: dict) -> dict:
    """What an e-signature of the report covers: everything but the build time."""
    return {k: v for k, v in report.items() if k not in ("generated_at", "signoff")}


def has_data(session: Session, site: Site, period: Period) -> bool:
    ids = list(session.exec(select(Monitor.id).where(Monitor.site_id == site.id)))
    any_rollup = (
        ids
        and session.exec(
            select(RollupHourly.hour)
            .where(
                RollupHourly.monitor_id.in_(ids),
                RollupHourly.hour >= period.start,
                RollupHourly.hour < period.end,
            )
            .limit(1)
        ).first()
    )
    any_dev = session.exec(
        select(Deviation.id)
        .where(
            Deviation.site_id == site.id,
            Deviation.opened_at >= period.start,
            Deviation.opened_at < period.end,
        )
        .limit(1)
    ).first()
    any_batch = session.exec(
        select(Batch.id)
        .where(Batch.site_id == site.id, Batch.created_at >= period.start, Batch.created_at < period.end)
        .limit(1)
    ).first()
    return bool(any_rollup or any_dev or any_batch)


def revision_at(session: Session, site: Site, at: datetime) -> int:
    """The facility revision in force at ``at``: the newest limits revision audited before it."""
    events = session.exec(
        select(audit.AuditEvent.reason)
        .where(
            audit.AuditEvent.action == "limits.revise",
            audit.AuditEvent.entity_key == site.code,
            audit.AuditEvent.at < at,
        )
        .order_by(audit.AuditEvent.id.desc())
        .limit(1)
    ).first()
    match = re.search(r"revision (\d+)", events or "")
    return int(match.group(1)) if match else site.revision


# --------------------------------------------------------------------------- facility


def facility_section(ctx: Context, revision: int) -> dict:
    rooms = sorted(ctx.rooms.values(), key=lambda r: (GRADE_ORDER.index(r.grade), r.code))
    end_day = (ctx.until - timedelta(microseconds=1)).astimezone(ZoneInfo(ctx.site.timezone)).date()
    calibration = []
    for m in ctx.monitors.values():
        if not m.active:
            continue
        calibration.append(
            {
                "monitor": m.code,
                "room": ctx.room_code(m.room_id),
                "kind": m.kind,
                "due": m.calibration_due.isoformat() if m.calibration_due else None,
                "status": calibration_status(m.calibration_due, end_day),
            }
        )
    by_kind = Counter(m.kind for m in ctx.monitors.values() if m.active)
    return {
        "rooms": [
            {
                "code": r.code,
                "name": r.name,
                "name_en": r.name_en,
                "grade": r.grade,
                "background": ctx.room_code(r.background_id),
                "area_m2": r.area_m2,
                "active": r.active,
                "monitors": sum(1 for m in ctx.monitors.values() if m.room_id == r.id and m.active),
            }
            for r in rooms
        ],
        "monitors_by_kind": dict(sorted(by_kind.items())),
        "calibration_as_of": end_day.isoformat(),
        "calibration": calibration,
        "calibration_summary": dict(sorted(Counter(c["status"] for c in calibration).items())),
        "a_in_c_zones": [
            r.code
            for r in rooms
            if r.grade == "A" and r.background_id and ctx.rooms[r.background_id].grade == "C"
        ],
    }


# --------------------------------------------------------------------------- environment


def _bounds_of(ctx: Context, levels, limit_set, m: Monitor):
    room = ctx.rooms[m.room_id]
    ref = ctx.rooms.get(m.reference_room_id) if m.reference_room_id else None
    spec = MonitorSpec(
        code=m.code,
        room=room.code,
        grade=room.grade,
        kind=m.kind,
        reference_grade=ref.grade if ref else None,
        channels=tuple(c for c in m.channels.split(",") if c),
    )
    return resolve_monitor_limits(limit_set, spec, levels)


def _bounds_json(b) -> dict | None:
    if b is None or b.empty:
        return None
    return {
        "alert_low": b.alert_low,
        "alert_high": b.alert_high,
        "action_low": b.action_low,
        "action_high": b.action_high,
    }


def environment_sections(ctx: Context, revision: int) -> tuple[dict, dict]:
    session, period = ctx.session, ctx.period
    monitor_ids = list(ctx.monitors)
    data = load_rollups(session, monitor_ids, period)
    first_last = _first_last_hours(session, monitor_ids)
    edges_epoch = np.array([int(t.timestamp()) for t in ctx.edges], np.int64)
    n_months = len(ctx.edges) - 1
    month_idx = np.searchsorted(edges_epoch, data.hour, side="right") - 1
    limit_set = load_limit_set(ctx.site.limit_set)
    levels = [
        FacilityLimit.to_level(r)
        for r in session.exec(
            select(FacilityLimit).where(
                FacilityLimit.site_id == ctx.site.id, FacilityLimit.revision == revision
            )
        )
    ]

    # excursions of the period, by monitor
    excursions = [
        e
        for e in session.exec(
            select(Excursion)
            .where(
                Excursion.site_id == ctx.site.id,
                Excursion.started_at >= period.start,
                Excursion.started_at < period.end,
                Excursion.status != "superseded",
            )
            .order_by(Excursion.started_at)
        )
    ]
    responses = first_responses(session, [e.id for e in excursions])

    per_monitor: list[dict] = []
    monitor_stats: dict[int, dict] = {}
    for m in ctx.monitors.values():
        mask = data.monitor == m.id
        channels = [c for c in m.channels.split(",") if c] or [""]
        valid = int(data.count[mask].sum())
        invalid = int(data.invalid[mask].sum())
        seen = first_last.get(m.id)
        if seen is None and not m.active:
            continue  # retired before the period and never reported: not part of it
        start = max(period.start, seen[0]) if seen else period.start
        end = ctx.until if m.active or seen is None else min(ctx.until, seen[1] + timedelta(hours=1))
        seconds = max(0.0, (end - start).total_seconds())
        expected = int(seconds // m.interval_s) * len(channels)
        hours_mask = mask & ((data.count + data.invalid) > 0)
        monitored_h = int(np.unique(data.hour[hours_mask]).size)
        stats = {
            "monitor": m.code,
            "room": ctx.room_code(m.room_id),
            "grade": ctx.rooms[m.room_id].grade,
            "kind": m.kind,
            "interval_s": m.interval_s,
            "channels": [c for c in channels if c],
            "monitored_from": iso_utc(start),
            "monitored_to": iso_utc(max(start, end)),
            "expected": expected,
            "readings": valid + invalid,
            "valid": valid,
            "invalid": invalid,
            "completeness_pct": pct(min(valid, expected), expected),
            "monitored_hours": monitored_h,
            "at_alert": int(data.n_alert[mask].sum()),
            "at_action": int(data.n_action[mask].sum()),
        }
        monitor_stats[m.id] = stats
        per_monitor.append(stats)

    def excursion_block(selected: list[Excursion], monitored_h: int) -> dict:
        by_type = {t: 0 for t in EXCURSION_TYPES}
        alert = action = 0
        for e in selected:
            by_type[e.type] = by_type.get(e.type, 0) + 1
            if e.type == "limit":
                alert += e.level == "alert"
                action += e.level == "action"
        durations = [(e, excursion_duration(e, ctx)) for e in selected if e.type == "limit"]
        longest = max(durations, key=lambda p: p[1], default=None)
        resp = [responses[e.id] - e.started_at for e in selected if e.type == "limit" and e.id in responses]
        return {
            "alert": alert,
            "action": action,
            "by_type": by_type,
            "per_1000_h": _r(1000 * (alert + action) / monitored_h) if monitored_h else None,
            "longest": None
            if longest is None
            else {
                "id": longest[0].id,
                "monitor": ctx.monitors[longest[0].monitor_id].code,
                "level": longest[0].level,
                "started_at": iso_utc(longest[0].started_at),
                "hours": _hours(longest[1]),
            },
            "time_to_response_h": {
                "responded": len(resp),
                "without_response": (alert + action) - len(resp),
                "median": _hours(median(resp)) if resp else None,
                "max": _hours(max(resp)) if resp else None,
            },
        }

    def aggregate(ids: list[int]) -> dict:
        rows = [monitor_stats[i] for i in ids if i in monitor_stats]
        expected = sum(r["expected"] for r in rows)
        valid = sum(min(r["valid"], r["expected"]) for r in rows)
        hours = sum(r["monitored_hours"] for r in rows)
        return {
            "monitors": len(rows),
            "expected": expected,
            "valid": sum(r["valid"] for r in rows),
            "readings": sum(r["readings"] for r in rows),
            "invalid": sum(r["invalid"] for r in rows),
            "completeness_pct": pct(valid, expected),
            "monitored_hours": hours,
            "at_alert": sum(r["at_alert"] for r in rows),
            "at_action": sum(r["at_action"] for r in rows),
        }

    by_room, by_grade = [], []
    for room in sorted(ctx.rooms.values(), key=lambda r: (GRADE_ORDER.index(r.grade), r.code)):
        ids = [i for i, m in ctx.monitors.items() if m.room_id == room.id and i in monitor_stats]
        exc = [e for e in excursions if e.room_id == room.id]
        if not ids and not exc:
            continue
        agg = aggregate(ids)
        by_room.append(
            {
                "room": room.code,
                "name": room.name,
                "name_en": room.name_en,
                "grade": room.grade,
                **agg,
                "excursions": excursion_block(exc, agg["monitored_hours"]),
            }
        )
    for grade in GRADE_ORDER:
        room_ids = {r.id for r in ctx.rooms.values() if r.grade == grade}
        ids = [i for i, m in ctx.monitors.items() if m.room_id in room_ids and i in monitor_stats]
        exc = [e for e in excursions if e.room_id in room_ids]
        if not ids and not exc:
            continue
        agg = aggregate(ids)
        by_grade.append(
            {
                "grade": grade,
                "rooms": len(room_ids),
                **agg,
                "excursions": excursion_block(exc, agg["monitored_hours"]),
            }
        )
    total = aggregate(list(monitor_stats))
    total["excursions"] = excursion_block(excursions, total["monitored_hours"])

    # heat map: limit excursions per room and month
    heat_rooms = [r["room"] for r in by_room]
    room_index = {code: i for i, code in enumerate(heat_rooms)}
    heat = [[0] * n_months for _ in heat_rooms]
    for e in excursions:
        code = ctx.room_code(e.room_id)
        if e.type == "limit" and code in room_index:
            heat[room_index[code]][_by_month([e.started_at], ctx.edges).index(1)] += 1

    # particles: monthly p95 against the limits in force
    particle_ids = [i for i, m in ctx.monitors.items() if m.kind == "particles" and i in monitor_stats]
    hists = monthly_histograms(session, particle_ids, period, edges_epoch)
    particles = []
    for mid in particle_ids:
        m = ctx.monitors[mid]
        limits = _bounds_of(ctx, levels, limit_set, m)
        for channel in [c for c in m.channels.split(",") if c]:
            year_hist: Counter = Counter()
            monthly = []
            for k in range(n_months):
                h = hists.get((mid, channel, k))
                if h:
                    year_hist.update(h)
                monthly.append(_r(percentile("particles", dict(h), 0.95), 1) if h else None)
            op = limits.for_reading(channel, "in_operation")
            rest = limits.for_reading(channel, "at_rest")
            particles.append(
                {
                    "monitor": m.code,
                    "room": ctx.room_code(m.room_id),
                    "grade": ctx.rooms[m.room_id].grade,
                    "channel": channel,
                    "unit": "/m³",
                    "monthly_p95": monthly,
                    "p95": _r(percentile("particles", dict(year_hist), 0.95), 1) if year_hist else None,
                    "max": _r(np.nanmax(data.vmax[(data.monitor == mid) & (data.channel == channel)]), 1)
                    if np.any((data.monitor == mid) & (data.channel == channel) & (data.count > 0))
                    else None,
                    "limits": {"in_operation": _bounds_json(op), "at_rest": _bounds_json(rest)},
                    "months_p95_above_action": sum(
                        1
                        for v in monthly
                        if v is not None
                        and op is not None
                        and op.action_high is not None
                        and v > op.action_high
                    ),
                }
            )

    # pressure, temperature, humidity: share of readings within limits per monitor (room / room pair)
    conditions = []
    for mid, m in ctx.monitors.items():
        if m.kind == "particles" or mid not in monitor_stats:
            continue
        st = monitor_stats[mid]
        mask = data.monitor == mid
        limits = _bounds_of(ctx, levels, limit_set, m)
        exc = [e for e in excursions if e.monitor_id == mid and e.type == "limit"]
        durations = [excursion_duration(e, ctx) for e in exc]
        monthly = []
        for k in range(n_months):
            mk = mask & (month_idx == k) & (data.count > 0)
            n = int(data.count[mk].sum())
            monthly.append(
                None
                if n == 0
                else {
                    "min": _r(np.nanmin(data.vmin[mk])),
                    "mean": _r(data.vsum[mk].sum() / n),
                    "max": _r(np.nanmax(data.vmax[mk])),
                }
            )
        valid = st["valid"]
        conditions.append(
            {
                "monitor": m.code,
                "kind": m.kind,
                "room": st["room"],
                "grade": st["grade"],
                "reference": ctx.room_code(m.reference_room_id),
                "valid": valid,
                "within_limits_pct": pct(valid - st["at_alert"] - st["at_action"], valid),
                "within_action_pct": pct(valid - st["at_action"], valid),
                "excursions": {
                    "alert": sum(e.level == "alert" for e in exc),
                    "action": sum(e.level == "action" for e in exc),
                    "hours": _hours(sum(durations, timedelta())),
                    "longest_h": _hours(max(durations)) if durations else None,
                },
                "limits": {
                    "in_operation": _bounds_json(limits.for_reading("", "in_operation")),
                    "at_rest": _bounds_json(limits.for_reading("", "at_rest")),
                },
                "monthly": monthly,
            }
        )
    kind_order = {"pressure": 0, "temperature": 1, "humidity": 2}
    conditions.sort(key=lambda c: (kind_order[c["kind"]], c["room"], c["monitor"]))

    environment = {
        "total": total,
        "by_grade": by_grade,
        "by_room": by_room,
        "monitors": per_monitor,
        "heatmap": {"rooms": heat_rooms, "months": month_labels(period), "counts": heat},
        "particles": particles,
    }
    return environment, {"monitors": conditions}


def excursion_duration(e: Excursion, ctx: Context) -> timedelta:
    """Start to end, counted up to the end of the period (or now): a figure as at the period end."""
    end = ctx.until if e.ended_at is None else min(e.ended_at, ctx.until)
    return max(timedelta(0), end - e.started_at)


def first_responses(session: Session, excursion_ids: list[int]) -> dict[int, datetime]:
    """QA's first response to each excursion: its acknowledgement, a link decision or a deviation
    raised from it."""
    out: dict[int, datetime] = {}
    if not excursion_ids:
        return out
    wanted = set(excursion_ids)
    for ex_id, at in session.exec(
        select(Excursion.id, Excursion.first_acknowledged_at).where(
            Excursion.first_acknowledged_at.is_not(None)
        )
    ):
        if ex_id in wanted:
            out[ex_id] = _aware(at)
    for ex_id, at in session.exec(
        select(ExcursionLink.excursion_id, func.min(ExcursionLink.decided_at))
        .where(ExcursionLink.decided_at.is_not(None), ExcursionLink.status.in_(("confirmed", "rejected")))
        .group_by(ExcursionLink.excursion_id)
    ):
        if ex_id in wanted:
            at = _aware(at)
            out[ex_id] = min(out.get(ex_id, at), at)
    for ex_id, at in session.exec(
        select(DeviationExcursion.excursion_id, func.min(Deviation.opened_at))
        .join(Deviation, Deviation.id == DeviationExcursion.deviation_id)
        .group_by(DeviationExcursion.excursion_id)
    ):
        if ex_id in wanted:
            at = _aware(at)
            out[ex_id] = min(out.get(ex_id, at), at)
    return out


def _aware(value) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# --------------------------------------------------------------------------- deviations and CAPA


def _norm(text: str | None) -> str:
    return re.sub(r"\s+", " ", (text or "").strip().lower())


def deviation_section(ctx: Context) -> dict:
    session, period = ctx.session, ctx.period
    all_devs = list(
        session.exec(
            select(Deviation)
            .where(Deviation.site_id == ctx.site.id)
            .order_by(Deviation.opened_at, Deviation.id)
        )
    )
    devs = [d for d in all_devs if _in(d.opened_at, period)]
    closed = [d for d in devs if d.closed_at is not None and d.closed_at < period.end]
    days = [(d.closed_at - d.opened_at).total_seconds() / 86400 for d in closed]

    def status_at_end(d: Deviation) -> str:
        return "closed" if d.closed_at is not None and d.closed_at < period.end else "open"

    open_at_end = [d for d in all_devs if d.opened_at < period.end and status_at_end(d) == "open"]
    recurrent = []
    for d in devs:
        key = (_norm(d.category), _norm(d.root_cause))
        if not key[1]:
            continue
        earlier = [
            p.number
            for p in all_devs
            if p.opened_at < d.opened_at
            and d.opened_at - p.opened_at <= timedelta(days=365)
            and (_norm(p.category), _norm(p.root_cause)) == key
        ]
        if earlier:
            recurrent.append({"number": d.number, "repeats": earlier})
    by_category = Counter(d.category for d in devs)
    pareto, running = [], 0
    for category, n in sorted(by_category.items(), key=lambda kv: (-kv[1], kv[0])):
        running += n
        pareto.append({"category": category, "count": n, "cumulative_pct": pct(running, len(devs))})
    root = Counter((d.root_cause or "").strip() or None for d in devs)
    ids = [d.id for d in devs]
    impacts = (
        list(session.exec(select(DeviationBatch).where(DeviationBatch.deviation_id.in_(ids)))) if ids else []
    )
    by_class = {c: 0 for c in classes()}
    for d in devs:
        by_class[d.classification] = by_class.get(d.classification, 0) + 1
    return {
        "total": len(devs),
        "by_classification": by_class,
        "by_category": pareto,
        "by_root_cause": [
            {"root_cause": k, "count": n}
            for k, n in sorted(root.items(), key=lambda kv: (-kv[1], kv[0] or ""))
        ],
        "closed_in_period": len(closed),
        "closed_within_target": sum(1 for x in days if x <= CLOSE_TARGET_DAYS),
        "close_target_days": CLOSE_TARGET_DAYS,
        "days_to_close": {
            "median": _r(median(days), 2) if days else None,
            "max": _r(max(days), 2) if days else None,
        },
        "open_at_end": [d.number for d in open_at_end],
        "recurrent": recurrent,
        "batches_affected": len({i.batch_id for i in impacts}),
        "impact": dict(sorted(Counter(i.impact or "not_assessed" for i in impacts).items())),
        "critical": [
            {
                "number": d.number,
                "title": d.title,
                "category": d.category,
                "opened_at": iso_utc(d.opened_at),
                "status_at_end": status_at_end(d),
            }
            for d in devs
            if d.classification == "critical"
        ],
        "list": [
            {
                "number": d.number,
                "title": d.title,
                "classification": d.classification,
                "category": d.category,
                "root_cause": d.root_cause,
                "opened_at": iso_utc(d.opened_at),
                "closed_at": iso_utc(d.closed_at) if d.closed_at and d.closed_at < period.end else None,
                "status_at_end": status_at_end(d),
            }
            for d in devs
        ],
    }


def capa_section(ctx: Context) -> dict:
    session, period = ctx.session, ctx.period
    numbers = {
        d.id: d.number for d in session.exec(select(Deviation).where(Deviation.site_id == ctx.site.id))
    }
    actions = [
        a
        for a in session.exec(select(CapaAction).order_by(CapaAction.id))
        if a.deviation_id in numbers and _in(a.created_at, period)
    ]
    end_day = (period.end - timedelta(microseconds=1)).astimezone(ZoneInfo(ctx.site.timezone)).date()

    def status_at_end(a: CapaAction) -> str:
        if (
            a.checked_at is not None
            and a.checked_at < period.end
            and a.status in ("effective", "not_effective")
        ):
            return a.status
        if a.done_at is not None and a.done_at < period.end:
            return "done"
        return "open"

    rows = [
        {
            "id": a.id,
            "deviation": numbers[a.deviation_id],
            "kind": a.kind,
            "description": a.description,
            "owner": a.owner,
            "due": a.due.isoformat(),
            "status_at_end": status_at_end(a),
            "overdue": status_at_end(a) == "open" and a.due < min(end_day, _today(ctx)),
        }
        for a in actions
    ]
    status = {s: 0 for s in ("open", "done", "effective", "not_effective")}
    for r in rows:
        status[r["status_at_end"]] += 1
    checked = status["effective"] + status["not_effective"]
    return {
        "total": len(rows),
        "by_kind": dict(sorted(Counter(a.kind for a in actions).items())),
        "status_at_end": status,
        "overdue": sum(r["overdue"] for r in rows),
        "effective_pct": pct(status["effective"], checked),
        "list": rows,
    }


def _today(ctx: Context) -> date:
    return ctx.now.astimezone(ZoneInfo(ctx.site.timezone)).date()


# --------------------------------------------------------------------------- batches


def batch_sections(ctx: Context) -> tuple[dict, dict]:
    session, period = ctx.session, ctx.period
    batches = {b.id: b for b in session.exec(select(Batch).where(Batch.site_id == ctx.site.id))}
    by_number = {b.number: b for b in batches.values()}
    decisions: dict[str, tuple[str, datetime]] = {}
    for sig in session.exec(
        select(Signature)
        .where(
            Signature.entity == "batch",
            Signature.meaning.in_(("released", "rejected")),
            Signature.signed_at < period.end,
        )
        .order_by(Signature.signed_at)
    ):
        if sig.entity_key in by_number:
            decisions[sig.entity_key] = (sig.meaning, sig.signed_at)
    started = [b for b in batches.values() if _in(b.created_at, period)]
    started.sort(key=lambda b: (b.created_at, b.number))
    released = [n for n, (m, at) in decisions.items() if m == "released" and _in(at, period)]
    rejected = [n for n, (m, at) in decisions.items() if m == "rejected" and _in(at, period)]
    products: dict[str, dict] = {}
    for b in started:
        p = products.setdefault(
            b.product, {"product": b.product, "started": 0, "released": 0, "rejected": 0, "open_at_end": 0}
        )
        p["started"] += 1
        p["open_at_end"] += b.number not in decisions
    for n in released + rejected:
        b = by_number[n]
        p = products.setdefault(
            b.product, {"product": b.product, "started": 0, "released": 0, "rejected": 0, "open_at_end": 0}
        )
        p["released" if n in released else "rejected"] += 1

    def disposition(b: Batch) -> str:
        return decisions[b.number][0] if b.number in decisions else "pending"

    # exposure to the period's excursions
    links = session.exec(
        select(ExcursionLink, Excursion)
        .join(Excursion, Excursion.id == ExcursionLink.excursion_id)
        .where(
            ExcursionLink.status == "confirmed",
            Excursion.site_id == ctx.site.id,
            Excursion.started_at >= period.start,
            Excursion.started_at < period.end,
            Excursion.status != "superseded",
        )
    ).all()
    exposed: dict[int, dict] = {}
    for link, ex in links:
        b = batches[link.batch_id]
        row = exposed.setdefault(
            b.id,
            {
                "batch": b.number,
                "product": b.product,
                "excursions": [],
                "action": False,
                "disposition": disposition(b),
            },
        )
        if ex.id not in row["excursions"]:
            row["excursions"].append(ex.id)
        row["action"] = row["action"] or ex.level == "action"
    exposed_rows = sorted(exposed.values(), key=lambda r: r["batch"])

    flags = []
    for b in started:
        for f in batch_flags(session, b):
            flags.append(
                {
                    "batch": b.number,
                    "code": f.code,
                    "step": f.step_id,
                    "room": f.room,
                    "other_batch": f.other_batch,
                    "message_zh": f.message_zh,
                    "message_en": f.message_en,
                }
            )
    flag_counts = {c: 0 for c in ("segregation", "a_in_c", "a_background_below_c", "open_not_grade_a")}
    for f in flags:
        flag_counts[f["code"]] = flag_counts.get(f["code"], 0) + 1
    steps = session.exec(
        select(func.count(ProcessStep.id))
        .join(Batch, Batch.id == ProcessStep.batch_id)
        .where(
            Batch.site_id == ctx.site.id, ProcessStep.start >= period.start, ProcessStep.start < period.end
        )
    ).one()
    production = {
        "started": len(started),
        "released": len(released),
        "rejected": len(rejected),
        "open_at_end": sum(1 for b in started if b.number not in decisions),
        "process_steps": int(steps),
        "by_product": sorted(products.values(), key=lambda p: p["product"]),
        "by_month": _by_month([b.created_at for b in started], ctx.edges),
        "donors": len({b.donor_id for b in started}),
    }
    traceability = {
        "exposed_batches": len(exposed_rows),
        "exposed_by_disposition": dict(sorted(Counter(r["disposition"] for r in exposed_rows).items())),
        "exposed": exposed_rows,
        "flag_counts": flag_counts,
        "flagged_batches": len({f["batch"] for f in flags}),
        "flags": flags,
    }
    return production, traceability


# --------------------------------------------------------------------------- limits and integrity


def limit_changes(ctx: Context) -> dict:
    session, period, site = ctx.session, ctx.period, ctx.site
    approvals = {
        sig.scope: sig
        for sig in session.exec(
            select(Signature).where(
                Signature.entity == "site",
                Signature.entity_key == site.code,
                Signature.scope.like("facility_limits:%"),
            )
        )
    }
    changes = []
    for ev in session.exec(
        select(audit.AuditEvent)
        .where(
            audit.AuditEvent.action == "limits.revise",
            audit.AuditEvent.entity_key == site.code,
            audit.AuditEvent.at >= period.start,
            audit.AuditEvent.at < period.end,
        )
        .order_by(audit.AuditEvent.id)
    ):
        match = re.search(r"revision (\d+)", ev.reason or "")
        revision = int(match.group(1)) if match else None
        sig = approvals.get(f"facility_limits:{revision}")
        changes.append(
            {
                "revision": revision,
                "at": iso_utc(ev.at),
                "by": ev.actor,
                "levels": len(json.loads(ev.after or "[]")),
                "audit_event": ev.id,
                "approved_by": sig.printed_name if sig else None,
                "approved_at": iso_utc(sig.signed_at) if sig else None,
            }
        )
    revision = revision_at(session, site, period.end)
    return {"changes": changes, "in_force_at_end": limits_content(session, site, revision)}


def integrity_section(ctx: Context, environment: dict) -> dict:
    session, period, site = ctx.session, ctx.period, ctx.site
    intact, _events, broken = audit.verify_chain(session)  # the whole chain, checked now
    last = session.exec(
        select(audit.AuditEvent.id, audit.AuditEvent.hash)
        .where(audit.AuditEvent.at < period.end)
        .order_by(audit.AuditEvent.id.desc())
        .limit(1)
    ).first()
    events_to_end = session.exec(
        select(func.count(audit.AuditEvent.id)).where(audit.AuditEvent.id <= (last[0] if last else 0))
    ).one()
    in_period = session.exec(
        select(func.count(audit.AuditEvent.id)).where(
            audit.AuditEvent.at >= period.start, audit.AuditEvent.at < period.end
        )
    ).one()
    checks = [c for c in all_signature_checks(session) if _in(c.signature.signed_at, period)]
    monitor_ids = list(ctx.monitors)
    rollup_rows = (
        session.exec(
            select(func.count())
            .select_from(RollupHourly)
            .where(
                RollupHourly.monitor_id.in_(monitor_ids),
                RollupHourly.hour >= period.start,
                RollupHourly.hour < period.end,
            )
        ).one()
        if monitor_ids
        else 0
    )
    superseded = session.exec(
        select(func.count(Excursion.id)).where(
            Excursion.site_id == site.id,
            Excursion.status == "superseded",
            Excursion.started_at >= period.start,
            Excursion.started_at < period.end,
        )
    ).one()
    total = environment["total"]
    return {
        "audit_chain": {
            "intact": intact,
            "first_broken_event": broken,
            "head_hash_at_end": last[1] if last else audit.GENESIS,
            "events_to_end": int(events_to_end),
            "events_in_period": int(in_period),
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
            "rollup_rows": int(rollup_rows),
            "excursions": sum(total["excursions"]["by_type"].values()),
            "excursions_superseded": int(superseded),
        },
        "sources": "rollup_hourly (readings, completeness, percentiles, time within limits); excursion, "
        "deviation, capa_action, deviation_batch, batch, process_step, excursion_link, signature, "
        "audit_event. `tracker rollups verify --from --to` recomputes the rollups from the raw "
        "readings; `tracker audit verify` re-checks the chain and every signature.",
    }


# --------------------------------------------------------------------------- summary


def key_figures(report: dict) -> dict:
    total = report["environment"]["total"]
    devs = report["deviations"]
    prod = report["production"]
    return {
        "completeness_pct": total["completeness_pct"],
        "readings": total["readings"],
        "excursions_alert": total["excursions"]["alert"],
        "excursions_action": total["excursions"]["action"],
        "excursions_per_1000_h": total["excursions"]["per_1000_h"],
        "deviations": devs["total"],
        "deviations_critical": len(devs["critical"]),
        "deviations_open_at_end": len(devs["open_at_end"]),
        "capa": report["capa"]["total"],
        "capa_overdue": report["capa"]["overdue"],
        "batches_started": prod["started"],
        "batches_released": prod["released"],
        "batches_rejected": prod["rejected"],
        "exposed_batches": report["traceability"]["exposed_batches"],
        "flagged_batches": report["traceability"]["flagged_batches"],
    }


def summary_section(report: dict) -> dict:
    critical = report["deviations"]["critical"]
    numbers = "、".join(c["number"] for c in critical)
    if critical:
        zh = (
            f"报告期内记录关键偏差 {len(critical)} 起（{numbers}），须由质量管理部门评估是否构成"
            "主要由于技术原因发生的重大质量、安全事故。"
        )
        listed = ", ".join(c["number"] for c in critical)
        en = (
            f"{len(critical)} critical deviation(s) were recorded in the period ({listed}); QA must assess "
            "whether any was a major quality or safety incident caused mainly by technical reasons."
        )
    else:
        zh = "报告期内未记录关键偏差，系统中无重大质量或安全事故的记录。"
        en = (
            "No critical deviation was recorded in the period: the system holds no record of a major quality "
            "or safety incident."
        )
    return {
        "major_incidents": {
            "count": len(critical),
            "deviations": [c["number"] for c in critical],
            "statement_zh": zh,
            "statement_en": en,
        },
        "key_figures": key_figures(report),
    }


# --------------------------------------------------------------------------- schema

SCHEMA_FILE = Path(__file__).parent / "schema" / "annual-report.schema.json"


def report_schema() -> dict:
    """The published JSON Schema of the document (draft 2020-12)."""
    return json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))


def validate_report(document: dict) -> None:
    """Raise ``jsonschema.ValidationError`` unless ``document`` matches the published schema."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(report_schema(), format_checker=jsonschema.FormatChecker())
    validator.validate(document)
