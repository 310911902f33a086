"""Every database read of the annual report, in one place.

The blocks of the report are plain functions over what this module returns, and never see the
session. Each ``load_*`` function reads what one part of the document needs and returns a frozen
record, already narrowed to the period ("started in the period", "opened before its end"), so the
rules of *which* records count are here and the arithmetic is in the blocks. Statuses are not
decided here: the records keep their dates and the blocks judge them as at the period end.

The hourly rollups come as numpy columns (:class:`RollupArrays`) through plain SQL, not ORM
objects: a site-year is ≈ 660,000 rows, and the report must take seconds (docs/report.md).
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
from sqlalchemy import func
from sqlmodel import Session, select

from tracker.core import audit
from tracker.core.db import time_param
from tracker.facility.limits import FacilityLevel, LimitSet, load_limit_set
from tracker.facility.load import limits_content
from tracker.facility.models import FacilityLimit, Monitor, Room, Site
from tracker.identity.signatures import Signature, SignatureCheck
from tracker.monitoring.excursions import Excursion
from tracker.monitoring.rollups import RollupHourly
from tracker.quality.batches.flags import Flag, batch_flags
from tracker.quality.batches.integrity import all_signature_checks
from tracker.quality.batches.models import Batch, ExcursionLink, ProcessStep
from tracker.quality.deviations import CapaAction, Deviation, DeviationBatch, DeviationExcursion
from tracker.reports.annual.period import Period, epoch_edges, in_period, month_of_hours, month_starts

# --------------------------------------------------------------------------- the scope


@dataclass(frozen=True)
class Scope:
    """What every block needs: the site, the period, the report time, the rooms and monitors."""

    site: Site
    period: Period
    now: datetime
    rooms: dict[int, Room]
    monitors: dict[int, Monitor]  # in code order: the order of every per-monitor list
    edges: list[datetime]  # month starts (UTC) and the period end

    @property
    def until(self) -> datetime:
        """The end of what can have happened: the period end, or now if earlier."""
        return min(self.period.end, self.now)

    def room_code(self, room_id: int | None) -> str | None:
        """A room's code, ``None`` for no room (or one of another site)."""
        return self.rooms[room_id].code if room_id in self.rooms else None


def load_scope(session: Session, site: Site, period: Period, now: datetime) -> Scope:
    """The site's rooms and monitors (all of them: retired ones still count where they reported)."""
    return Scope(
        site=site,
        period=period,
        now=now,
        rooms={r.id: r for r in session.exec(select(Room).where(Room.site_id == site.id))},
        monitors={
            m.id: m
            for m in session.exec(select(Monitor).where(Monitor.site_id == site.id).order_by(Monitor.code))
        },
        edges=month_starts(period),
    )


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
    revision = revision_named(events)
    return revision if revision is not None else site.revision


def revision_named(reason: str | None) -> int | None:
    """The revision number a ``limits.revise`` audit event names in its reason."""
    match = re.search(r"revision (\d+)", reason or "")
    return int(match.group(1)) if match else None


def has_data(session: Session, site: Site, period: Period) -> bool:
    """Whether the period holds anything to report (rollups, deviations or batches): the
    year-over-year comparison is left out for a year before the system was in use."""
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


# --------------------------------------------------------------------------- rollups


@dataclass(frozen=True)
class RollupArrays:
    """The period's rollup rows as numpy columns, one entry per monitor × channel × hour."""

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


def _epoch_expr(dialect: str) -> str:
    if dialect == "sqlite":
        return "CAST(strftime('%s', hour) AS INTEGER)"
    return "CAST(EXTRACT(EPOCH FROM hour) AS BIGINT)"


def _rollup_sql(
    session: Session, columns: str, monitor_ids: list[int], period: Period, extra: str = ""
) -> list[tuple]:
    """Rollup rows of the period by plain SQL; ``HOUR_EPOCH`` in ``columns`` is the hour as
    epoch seconds, computed by the database so that numpy never parses timestamps."""
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


def _float_column(values: tuple) -> np.ndarray:
    """A nullable float column: a missing min/max (no valid reading in the hour) becomes NaN."""
    return np.array([np.nan if v is None else v for v in values], dtype=float)


def _no_rollups() -> RollupArrays:
    empty_i, empty_f = np.zeros(0, np.int64), np.zeros(0, float)
    return RollupArrays(
        empty_i, np.zeros(0, object), empty_i, empty_i, empty_i, empty_i, empty_i, empty_f, empty_f, empty_f
    )


def load_rollups(session: Session, monitor_ids: list[int], period: Period) -> RollupArrays:
    """The period's rollup rows of the given monitors as numpy columns (no histograms)."""
    rows = _rollup_sql(
        session,
        "monitor_id, channel, HOUR_EPOCH, count, invalid, n_alert, n_action, vmin, vmax, vsum",
        monitor_ids,
        period,
    )
    if not rows:
        return _no_rollups()
    cols = list(zip(*rows, strict=True))
    return RollupArrays(
        np.array(cols[0], np.int64),
        np.array(cols[1], object),
        np.array(cols[2], np.int64),
        np.array(cols[3], np.int64),
        np.array(cols[4], np.int64),
        np.array(cols[5], np.int64),
        np.array(cols[6], np.int64),
        _float_column(cols[7]),
        _float_column(cols[8]),
        np.array(cols[9], float),
    )


def load_histograms(
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
    months = month_of_hours(edges_epoch, hours)
    for (monitor_id, channel, _h, hist), month in zip(rows, months.tolist(), strict=True):
        acc = out[(monitor_id, channel, month)]
        for b, n in json.loads(hist).items():
            acc[int(b)] += n
    return out


def _as_utc_hour(value: datetime | str) -> datetime:
    """A stored rollup hour (naive UTC; a string on SQLite) as an aware datetime."""
    naive = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return naive.replace(tzinfo=UTC)


def _first_last_hours(session: Session, monitor_ids: list[int]) -> dict[int, tuple[datetime, datetime]]:
    """The first and last rollup hour ever stored per monitor (not only in the period): a
    monitor's monitored period starts with its first reading and a retired one ends with its last."""
    rows = session.exec(
        select(RollupHourly.monitor_id, func.min(RollupHourly.hour), func.max(RollupHourly.hour))
        .where(RollupHourly.monitor_id.in_(monitor_ids))
        .group_by(RollupHourly.monitor_id)
    ).all()
    return {m: (_as_utc_hour(a), _as_utc_hour(b)) for m, a, b in rows}


# --------------------------------------------------------------------------- environment


@dataclass(frozen=True)
class EnvironmentRecords:
    """What §6 (environmental monitoring) and §7 (pressure, temperature, RH) are computed from."""

    monitor_ids: list[int]  # the monitors of the period, in code order (see load_environment)
    first_last: dict[int, tuple[datetime, datetime]]  # first and last rollup hour ever, per monitor
    rollups: RollupArrays
    histograms: dict[tuple[int, str, int], Counter]  # particle monitors: (monitor, channel, month)
    limit_set: LimitSet
    levels: list[FacilityLevel]  # the facility levels of the revision in force at the end
    excursions: list[Excursion]  # started in the period, not superseded, by start
    responses: dict[int, datetime]  # QA's first response per excursion id


def load_environment(session: Session, scope: Scope, revision: int) -> EnvironmentRecords:
    """The rollups, limits and excursions of the period. A monitor belongs to the period when it
    is active or has ever reported; one retired before the period without a reading does not."""
    monitor_ids = list(scope.monitors)
    first_last = _first_last_hours(session, monitor_ids)
    in_scope = [i for i, m in scope.monitors.items() if i in first_last or m.active]
    particle_ids = [i for i in in_scope if scope.monitors[i].kind == "particles"]
    excursions = _excursions(session, scope)
    return EnvironmentRecords(
        monitor_ids=in_scope,
        first_last=first_last,
        rollups=load_rollups(session, monitor_ids, scope.period),
        histograms=load_histograms(session, particle_ids, scope.period, epoch_edges(scope.edges)),
        limit_set=load_limit_set(scope.site.limit_set),
        levels=_facility_levels(session, scope.site, revision),
        excursions=excursions,
        responses=first_responses(session, [e.id for e in excursions]),
    )


def _facility_levels(session: Session, site: Site, revision: int) -> list[FacilityLevel]:
    return [
        FacilityLimit.to_level(r)
        for r in session.exec(
            select(FacilityLimit).where(FacilityLimit.site_id == site.id, FacilityLimit.revision == revision)
        )
    ]


def _excursions(session: Session, scope: Scope) -> list[Excursion]:
    period = scope.period
    return list(
        session.exec(
            select(Excursion)
            .where(
                Excursion.site_id == scope.site.id,
                Excursion.started_at >= period.start,
                Excursion.started_at < period.end,
                Excursion.status != "superseded",
            )
            .order_by(Excursion.started_at)
        )
    )


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
        _keep_earliest(out, wanted, ex_id, at)
    for ex_id, at in session.exec(
        select(DeviationExcursion.excursion_id, func.min(Deviation.opened_at))
        .join(Deviation, Deviation.id == DeviationExcursion.deviation_id)
        .group_by(DeviationExcursion.excursion_id)
    ):
        _keep_earliest(out, wanted, ex_id, at)
    return out


def _keep_earliest(out: dict[int, datetime], wanted: set[int], ex_id: int, at: datetime | str) -> None:
    if ex_id in wanted:
        at = _aware(at)
        out[ex_id] = min(out.get(ex_id, at), at)


def _aware(value: datetime | str) -> datetime:
    """A stored timestamp as aware UTC: SQLite gives naive values back, and aggregates
    (``min()``) lose the column type there and come back as strings."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# --------------------------------------------------------------------------- deviations and CAPA


@dataclass(frozen=True)
class DeviationRecords:
    """What §8 (deviations) and §9 (CAPA) are computed from."""

    of_site: list[Deviation]  # every deviation of the site, by opening: open at end, recurrence
    opened: list[Deviation]  # opened in the period
    impacts: list[DeviationBatch]  # batch impacts of the deviations opened in the period
    capa: list[CapaAction]  # created in the period, on the site's deviations, by id


def load_deviations(session: Session, scope: Scope) -> DeviationRecords:
    """The site's deviations (all years: earlier ones can be open at the end or recur) and the
    period's batch impacts and CAPA actions."""
    of_site = list(
        session.exec(
            select(Deviation)
            .where(Deviation.site_id == scope.site.id)
            .order_by(Deviation.opened_at, Deviation.id)
        )
    )
    opened = [d for d in of_site if in_period(d.opened_at, scope.period)]
    ids = [d.id for d in opened]
    impacts = (
        list(session.exec(select(DeviationBatch).where(DeviationBatch.deviation_id.in_(ids)))) if ids else []
    )
    site_ids = {d.id for d in of_site}
    capa = [
        a
        for a in session.exec(select(CapaAction).order_by(CapaAction.id))
        if a.deviation_id in site_ids and in_period(a.created_at, scope.period)
    ]
    return DeviationRecords(of_site=of_site, opened=opened, impacts=impacts, capa=capa)


# --------------------------------------------------------------------------- batches


@dataclass(frozen=True)
class Decision:
    """A QP's release or rejection of a batch, from its signature."""

    meaning: str  # "released" or "rejected"
    at: datetime


@dataclass(frozen=True)
class BatchRecords:
    """What §4 (production) and §12 (traceability and segregation) are computed from."""

    by_id: dict[int, Batch]  # every batch of the site
    by_number: dict[str, Batch]
    started: list[Batch]  # created in the period, by creation then number
    decisions: dict[str, Decision]  # by batch number: the last release/rejection before the end
    exposures: list[tuple[ExcursionLink, Excursion]]  # confirmed links to the period's excursions
    flags: list[tuple[Batch, Flag]]  # flags of the batches started in the period, in their order
    process_steps: int  # steps of the site's batches started in the period


def load_batches(session: Session, scope: Scope) -> BatchRecords:
    """The site's batches, their QP decisions up to the period end, exposures and flags."""
    by_id = {b.id: b for b in session.exec(select(Batch).where(Batch.site_id == scope.site.id))}
    by_number = {b.number: b for b in by_id.values()}
    started = [b for b in by_id.values() if in_period(b.created_at, scope.period)]
    started.sort(key=lambda b: (b.created_at, b.number))
    return BatchRecords(
        by_id=by_id,
        by_number=by_number,
        started=started,
        decisions=_decisions(session, scope, by_number),
        exposures=_exposures(session, scope),
        flags=[(b, f) for b in started for f in batch_flags(session, b)],
        process_steps=_process_steps(session, scope),
    )


def _decisions(session: Session, scope: Scope, by_number: dict[str, Batch]) -> dict[str, Decision]:
    """Release and rejection signatures before the period end, the later one winning."""
    decisions: dict[str, Decision] = {}
    for sig in session.exec(
        select(Signature)
        .where(
            Signature.entity == "batch",
            Signature.meaning.in_(("released", "rejected")),
            Signature.signed_at < scope.period.end,
        )
        .order_by(Signature.signed_at)
    ):
        if sig.entity_key in by_number:
            decisions[sig.entity_key] = Decision(sig.meaning, sig.signed_at)
    return decisions


def _exposures(session: Session, scope: Scope) -> list[tuple[ExcursionLink, Excursion]]:
    period = scope.period
    return list(
        session.exec(
            select(ExcursionLink, Excursion)
            .join(Excursion, Excursion.id == ExcursionLink.excursion_id)
            .where(
                ExcursionLink.status == "confirmed",
                Excursion.site_id == scope.site.id,
                Excursion.started_at >= period.start,
                Excursion.started_at < period.end,
                Excursion.status != "superseded",
            )
        ).all()
    )


def _process_steps(session: Session, scope: Scope) -> int:
    period = scope.period
    steps = session.exec(
        select(func.count(ProcessStep.id))
        .join(Batch, Batch.id == ProcessStep.batch_id)
        .where(
            Batch.site_id == scope.site.id, ProcessStep.start >= period.start, ProcessStep.start < period.end
        )
    ).one()
    return int(steps)


# --------------------------------------------------------------------------- limit changes


@dataclass(frozen=True)
class LimitRecords:
    """The facility-limit revisions of the period and the levels in force at its end."""

    revisions: list[audit.AuditEvent]  # ``limits.revise`` events of the period, in order
    approvals: dict[str, Signature]  # QA approvals of facility limits, by scope
    in_force_at_end: dict  # the levels of the revision in force at the end, as signed


def load_limits(session: Session, scope: Scope, revision: int) -> LimitRecords:
    """The audited limit revisions of the period, their approvals, and ``revision``'s levels."""
    site, period = scope.site, scope.period
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
    revisions = list(
        session.exec(
            select(audit.AuditEvent)
            .where(
                audit.AuditEvent.action == "limits.revise",
                audit.AuditEvent.entity_key == site.code,
                audit.AuditEvent.at >= period.start,
                audit.AuditEvent.at < period.end,
            )
            .order_by(audit.AuditEvent.id)
        )
    )
    return LimitRecords(revisions, approvals, limits_content(session, site, revision))


# --------------------------------------------------------------------------- data integrity


@dataclass(frozen=True)
class IntegrityRecords:
    """The audit chain and signature checks behind §15, and the record counts of the period."""

    chain_intact: bool  # the whole chain, checked now
    first_broken_event: int | None
    head_hash_at_end: str  # hash of the last event before the period end
    events_to_end: int
    events_in_period: int
    signature_checks: list[SignatureCheck]  # signatures made in the period, checked now
    rollup_rows: int
    excursions_superseded: int  # started in the period


def load_integrity(session: Session, scope: Scope) -> IntegrityRecords:
    """Walk the audit chain and every signature, and count the period's records."""
    period = scope.period
    intact, _events, broken = audit.verify_chain(session)
    last = session.exec(
        select(audit.AuditEvent.id, audit.AuditEvent.hash)
        .where(audit.AuditEvent.at < period.end)
        .order_by(audit.AuditEvent.id.desc())
        .limit(1)
    ).first()
    events_to_end = session.exec(
        select(func.count(audit.AuditEvent.id)).where(audit.AuditEvent.id <= (last[0] if last else 0))
    ).one()
    events_in_period = session.exec(
        select(func.count(audit.AuditEvent.id)).where(
            audit.AuditEvent.at >= period.start, audit.AuditEvent.at < period.end
        )
    ).one()
    return IntegrityRecords(
        chain_intact=intact,
        first_broken_event=broken,
        head_hash_at_end=last[1] if last else audit.GENESIS,
        events_to_end=int(events_to_end),
        events_in_period=int(events_in_period),
        signature_checks=[
            c for c in all_signature_checks(session) if in_period(c.signature.signed_at, period)
        ],
        rollup_rows=_rollup_rows(session, scope),
        excursions_superseded=_superseded(session, scope),
    )


def _rollup_rows(session: Session, scope: Scope) -> int:
    monitor_ids, period = list(scope.monitors), scope.period
    if not monitor_ids:
        return 0
    rows = session.exec(
        select(func.count())
        .select_from(RollupHourly)
        .where(
            RollupHourly.monitor_id.in_(monitor_ids),
            RollupHourly.hour >= period.start,
            RollupHourly.hour < period.end,
        )
    ).one()
    return int(rows)


def _superseded(session: Session, scope: Scope) -> int:
    period = scope.period
    superseded = session.exec(
        select(func.count(Excursion.id)).where(
            Excursion.site_id == scope.site.id,
            Excursion.status == "superseded",
            Excursion.started_at >= period.start,
            Excursion.started_at < period.end,
        )
    ).one()
    return int(superseded)
