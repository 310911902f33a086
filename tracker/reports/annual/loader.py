"""Every database read of the annual report, in one place.

The blocks of the report are plain functions over what this module returns, and never see the
session. Each ``load_*`` function reads what one part of the document needs and returns a frozen
record, already narrowed to the period ("started in the period", "opened before its end"), so the
rules of *which* records count are here and the arithmetic is in the blocks. Statuses are not
decided here: the records keep their dates and the blocks judge them as at the cut-off (the
period end, or for an unfinished period the cut-off fixed by ``period.cutoff_of``). Nothing dated
at or after the cut-off is read, and fields edited after it are put back by ``asat``.

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
from sqlalchemy import func, or_
from sqlmodel import Session, select

from tracker.core import audit
from tracker.core.db import time_param
from tracker.facility.limits import FacilityLevel, LimitSet, load_limit_set
from tracker.facility.load import limits_content
from tracker.facility.models import FacilityLimit, Monitor, Room, Site
from tracker.facility.policy import compliance_of
from tracker.identity.signatures import Signature, SignatureCheck
from tracker.monitoring.excursions import Excursion, breaches
from tracker.monitoring.rollups import RollupHourly
from tracker.monitoring.viable.models import ViableSample
from tracker.quality.batches.flags import Flag, batch_flags
from tracker.quality.batches.integrity import all_signature_checks
from tracker.quality.batches.linking import exposure_candidates
from tracker.quality.batches.models import (
    Batch,
    ExcursionLink,
    PostReleaseAssessment,
    PostReleaseEvent,
    ProcessStep,
    ViableReleaseReview,
)
from tracker.quality.deviations import (
    CapaAction,
    Deviation,
    DeviationBatch,
    DeviationExcursion,
    major_incident_classes,
)
from tracker.reports.annual.asat import deviations_as_at, impacts_as_at, link_decisions_at, link_status_at
from tracker.reports.annual.definitions import INCIDENTS_SCOPE, REPORT_ENTITY
from tracker.reports.annual.period import (
    Period,
    epoch_edges,
    in_period,
    month_of_hours,
    month_starts,
    report_key,
)

# --------------------------------------------------------------------------- the scope


@dataclass(frozen=True)
class Scope:
    """What every block needs: the site, the period, its cut-off, the rooms and monitors."""

    site: Site
    period: Period
    #: the instant every figure is as at: the period end, or an unfinished period's cut-off
    until: datetime
    rooms: dict[int, Room]
    monitors: dict[int, Monitor]  # in code order: the order of every per-monitor list
    edges: list[datetime]  # month starts (UTC) and the period end

    def within(self, t: datetime | None) -> bool:
        """Whether ``t`` is in the period and before the cut-off."""
        return in_period(t, self.period, self.until)

    def room_code(self, room_id: int | None) -> str | None:
        """A room's code, ``None`` for no room (or one of another site)."""
        return self.rooms[room_id].code if room_id in self.rooms else None


def load_scope(session: Session, site: Site, period: Period, until: datetime) -> Scope:
    """The site's rooms and monitors (all of them: retired ones still count where they reported)."""
    return Scope(
        site=site,
        period=period,
        until=until,
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
    state: np.ndarray  # at_rest | in_operation | '' (rows from before migration 0019), object
    count: np.ndarray
    invalid: np.ndarray
    n_alert: np.ndarray
    n_action: np.ndarray
    n_not_evaluated: np.ndarray
    vmin: np.ndarray
    vmax: np.ndarray
    vsum: np.ndarray


def _epoch_expr(dialect: str) -> str:
    if dialect == "sqlite":
        return "CAST(strftime('%s', hour) AS INTEGER)"
    return "CAST(EXTRACT(EPOCH FROM hour) AS BIGINT)"


def _rollup_sql(
    session: Session, columns: str, monitor_ids: list[int], window: tuple[datetime, datetime], extra: str = ""
) -> list[tuple]:
    """Rollup rows of ``[start, end)`` by plain SQL; ``HOUR_EPOCH`` in ``columns`` is the hour as
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
    return connection.exec_driver_sql(sql, (to_db(window[0]), to_db(window[1]))).fetchall()


def _float_column(values: tuple) -> np.ndarray:
    """A nullable float column: a missing min/max (no valid reading in the hour) becomes NaN."""
    return np.array([np.nan if v is None else v for v in values], dtype=float)


def _no_rollups() -> RollupArrays:
    empty_i, empty_f, empty_o = np.zeros(0, np.int64), np.zeros(0, float), np.zeros(0, object)
    ints = (empty_i,) * 5
    return RollupArrays(empty_i, empty_o, empty_i, empty_o, *ints, empty_f, empty_f, empty_f)


def load_rollups(session: Session, monitor_ids: list[int], window: tuple[datetime, datetime]) -> RollupArrays:
    """The rollup rows of ``window`` of the given monitors as numpy columns (no histograms)."""
    rows = _rollup_sql(
        session,
        "monitor_id, channel, HOUR_EPOCH, state, count, invalid, n_alert, n_action, n_not_evaluated, "
        "vmin, vmax, vsum",
        monitor_ids,
        window,
    )
    if not rows:
        return _no_rollups()
    cols = list(zip(*rows, strict=True))
    return RollupArrays(
        np.array(cols[0], np.int64),
        np.array(cols[1], object),
        np.array(cols[2], np.int64),
        np.array(cols[3], object),
        *(np.array(cols[i], np.int64) for i in range(4, 9)),
        _float_column(cols[9]),
        _float_column(cols[10]),
        np.array(cols[11], float),
    )


#: a particle series of one month: (monitor, channel, state, month index)
MonthKey = tuple[int, str, str, int]


@dataclass(frozen=True)
class ParticleMonths:
    """Merged histograms and the highest value per particle series and month, for percentiles
    that are never printed above the values they summarise."""

    histograms: dict[MonthKey, Counter]
    highest: dict[MonthKey, float]


def load_particle_months(
    session: Session, monitor_ids: list[int], window: tuple[datetime, datetime], edges_epoch: np.ndarray
) -> ParticleMonths:
    """Merged histograms and maxima per (monitor, channel, state, month index)."""
    out: dict[MonthKey, Counter] = defaultdict(Counter)
    highest: dict[MonthKey, float] = {}
    rows = _rollup_sql(
        session,
        "monitor_id, channel, state, HOUR_EPOCH, vmax, hist",
        monitor_ids,
        window,
        " AND hist <> '{}'",
    )
    if not rows:
        return ParticleMonths(out, highest)
    hours = np.fromiter((r[3] for r in rows), np.int64, len(rows))
    months = month_of_hours(edges_epoch, hours)
    for (monitor_id, channel, state, _h, vmax, hist), month in zip(rows, months.tolist(), strict=True):
        key = (monitor_id, channel, state, month)
        acc = out[key]
        for b, n in json.loads(hist).items():
            acc[int(b)] += n
        if vmax is not None:
            highest[key] = max(highest.get(key, vmax), vmax)
    return ParticleMonths(out, highest)


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
    particles: ParticleMonths  # particle monitors
    limit_set: LimitSet
    levels: list[FacilityLevel]  # the facility levels of the revision in force at the end
    excursions: list[Excursion]  # started in the period, not superseded, by start
    responses: dict[int, datetime]  # QA's first response per excursion id, before the cut-off
    superseded: list[Superseded]  # started in the period and superseded, by start


def load_environment(session: Session, scope: Scope, revision: int) -> EnvironmentRecords:
    """The rollups, limits and excursions of the period. A monitor belongs to the period when it
    is active or has ever reported; one retired before the period without a reading does not."""
    monitor_ids = list(scope.monitors)
    first_last = _first_last_hours(session, monitor_ids)
    in_scope = [i for i, m in scope.monitors.items() if i in first_last or m.active]
    particle_ids = [i for i in in_scope if scope.monitors[i].kind == "particles"]
    excursions = _excursions(session, scope)
    window = (scope.period.start, scope.until)
    return EnvironmentRecords(
        monitor_ids=in_scope,
        first_last=first_last,
        rollups=load_rollups(session, monitor_ids, window),
        particles=load_particle_months(session, particle_ids, window, epoch_edges(scope.edges)),
        limit_set=load_limit_set(scope.site.limit_set),
        levels=_facility_levels(session, scope.site, revision),
        excursions=excursions,
        responses=first_responses(session, [e.id for e in excursions], scope.until),
        superseded=load_superseded(session, scope),
    )


def _facility_levels(session: Session, site: Site, revision: int) -> list[FacilityLevel]:
    return [
        FacilityLimit.to_level(r)
        for r in session.exec(
            select(FacilityLimit).where(FacilityLimit.site_id == site.id, FacilityLimit.revision == revision)
        )
    ]


def _excursions(session: Session, scope: Scope, *, superseded: bool = False) -> list[Excursion]:
    """The site's excursions that started in the period before the cut-off: those standing, or
    (``superseded``) those the data no longer support."""
    status = Excursion.status == "superseded" if superseded else Excursion.status != "superseded"
    return list(
        session.exec(
            select(Excursion)
            .where(
                Excursion.site_id == scope.site.id,
                Excursion.started_at >= scope.period.start,
                Excursion.started_at < scope.until,
                status,
                Excursion.challenge_id.is_(None),  # alarm challenges are tests, not the environment
                breaches(),  # forecast warnings are not excursions of the year
                # viable results and trends have their own section (``viable``, docs/viable.md)
                Excursion.type.not_in(VIABLE_EXCURSION_TYPES),
            )
            .order_by(Excursion.started_at, Excursion.id)
        )
    )


@dataclass(frozen=True)
class Superseded:
    """A superseded excursion with who superseded it, when and why (issue 14 item 7)."""

    excursion: Excursion
    at: datetime | None  # the newest ``excursion.supersede`` audit event
    by: str  # the person who recorded the correction, or the system actor
    reason: str | None
    signature: Signature | None  # QA's approval of the correction, when it needed one


def load_superseded(session: Session, scope: Scope) -> list[Superseded]:
    """The period's superseded excursions, with the audit event and approval of each supersession.
    A supersession corrects the record (the data no longer support the excursion), so it counts
    whenever it was made; the list shows when."""
    rows = _excursions(session, scope, superseded=True)
    keys = {str(e.id) for e in rows}
    events: dict[str, audit.AuditEvent] = {}
    for event in session.exec(
        select(audit.AuditEvent)
        .where(
            audit.AuditEvent.action == "excursion.supersede", audit.AuditEvent.entity_key.in_(sorted(keys))
        )
        .order_by(audit.AuditEvent.id)
    ):
        events[event.entity_key] = event  # the newest wins
    out = []
    for e in rows:
        event = events.get(str(e.id))
        sig = session.get(Signature, e.superseded_signature_id) if e.superseded_signature_id else None
        out.append(
            Superseded(
                excursion=e,
                at=_aware(event.at) if event else None,
                by=e.superseded_by or (event.actor if event else "system"),
                reason=e.superseded_reason or (event.reason if event else None),
                signature=sig,
            )
        )
    return out


def first_responses(session: Session, excursion_ids: list[int], until: datetime) -> dict[int, datetime]:
    """QA's first response to each excursion before the cut-off: its acknowledgement, a link
    decision or a deviation raised from it (a response after the cut-off does not count)."""
    out: dict[int, datetime] = {}
    if not excursion_ids:
        return out
    wanted = set(excursion_ids)
    for ex_id, at in session.exec(
        select(Excursion.id, Excursion.first_acknowledged_at).where(
            Excursion.first_acknowledged_at.is_not(None)
        )
    ):
        _keep_earliest(out, wanted, ex_id, at, until)
    for ex_id, at in session.exec(
        select(ExcursionLink.excursion_id, func.min(ExcursionLink.decided_at))
        .where(ExcursionLink.decided_at.is_not(None), ExcursionLink.status.in_(("confirmed", "rejected")))
        .group_by(ExcursionLink.excursion_id)
    ):
        _keep_earliest(out, wanted, ex_id, at, until)
    for ex_id, at in session.exec(
        select(DeviationExcursion.excursion_id, func.min(Deviation.opened_at))
        .join(Deviation, Deviation.id == DeviationExcursion.deviation_id)
        .group_by(DeviationExcursion.excursion_id)
    ):
        _keep_earliest(out, wanted, ex_id, at, until)
    return out


def _keep_earliest(
    out: dict[int, datetime], wanted: set[int], ex_id: int, at: datetime | str, until: datetime
) -> None:
    if ex_id in wanted:
        at = _aware(at)
        if at < until:
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
    """What §8 (deviations) and §9 (CAPA) are computed from, as the records stood at the cut-off."""

    of_site: list[Deviation]  # every deviation of the site opened before the cut-off, by opening
    opened: list[Deviation]  # opened in the period
    impacts: list[DeviationBatch]  # batch impacts of the deviations opened in the period
    capa: list[CapaAction]  # created in the period, on the site's deviations, by id
    sources: dict[int, list[int]]  # deviation id → the excursions it was raised from
    major_classes: tuple[str, ...]  # the classes counted as possible major incidents
    classes: tuple[str, ...]  # the site's deviation classes at the cut-off, most severe first


def load_deviations(session: Session, scope: Scope, revision: int) -> DeviationRecords:
    """The site's deviations (all years: earlier ones can be open at the end or recur) and the
    period's batch impacts and CAPA actions, with fields edited after the cut-off put back;
    ``revision``: the facility revision in force at the cut-off (its major-incident classes)."""
    rows = session.exec(
        select(Deviation)
        .where(Deviation.site_id == scope.site.id, Deviation.opened_at < scope.until)
        .order_by(Deviation.opened_at, Deviation.id)
    )
    of_site = deviations_as_at(session, list(rows), scope.until)
    opened = [d for d in of_site if scope.within(d.opened_at)]
    ids = [d.id for d in opened]
    site_ids = {d.id for d in of_site}
    capa = [
        a
        for a in session.exec(select(CapaAction).order_by(CapaAction.id))
        if a.deviation_id in site_ids and scope.within(a.created_at)
    ]
    sources: dict[int, list[int]] = defaultdict(list)
    if ids:
        for link in session.exec(
            select(DeviationExcursion)
            .where(DeviationExcursion.deviation_id.in_(ids))
            .order_by(DeviationExcursion.excursion_id)
        ):
            sources[link.deviation_id].append(link.excursion_id)
    return DeviationRecords(
        of_site=of_site,
        opened=opened,
        impacts=_impacts(session, scope, opened),
        capa=capa,
        sources=dict(sources),
        major_classes=major_incident_classes(session, scope.site, revision=revision),
        classes=compliance_of(session, scope.site, revision).deviation_classes,
    )


def _impacts(session: Session, scope: Scope, opened: list[Deviation]) -> list[DeviationBatch]:
    """Batches linked to the period's deviations before the cut-off, assessed as they were then."""
    numbers = {d.id: d.number for d in opened}
    if not numbers:
        return []
    rows = [
        (link, number)
        for link, number in session.exec(
            select(DeviationBatch, Batch.number)
            .join(Batch, Batch.id == DeviationBatch.batch_id)
            .where(DeviationBatch.deviation_id.in_(list(numbers)), DeviationBatch.linked_at < scope.until)
            .order_by(DeviationBatch.id)
        )
    ]
    keys = {link.id: (numbers[link.deviation_id], number) for link, number in rows}
    return impacts_as_at(session, [link for link, _ in rows], keys, scope.until)


# --------------------------------------------------------------------------- batches


@dataclass(frozen=True)
class Decision:
    """A QP's release or rejection of a batch, from its signature."""

    meaning: str  # "released" or "rejected"
    at: datetime


@dataclass(frozen=True)
class Exposure:
    """A possible exposure of a batch to an excursion, with QA's decision as at the cut-off."""

    excursion: Excursion
    batch: Batch
    status: str  # confirmed | rejected | undecided


@dataclass(frozen=True)
class BatchRecords:
    """What §4 (production) and §12 (traceability and segregation) are computed from."""

    by_id: dict[int, Batch]  # every batch of the site
    by_number: dict[str, Batch]
    started: list[Batch]  # created in the period, by creation then number
    decisions: dict[str, Decision]  # by batch number: the last release/rejection before the cut-off
    #: the possible exposures to the period's excursions and to those the period's deviations
    #: were raised from (superseded excursions and withdrawn proposals left out)
    exposures: list[Exposure]
    flags: list[tuple[Batch, Flag]]  # flags of the batches started in the period, in their order
    process_steps: int  # steps of the site's batches started in the period
    #: post-release events raised in the period, with QA's assessment if made before its end
    post_release: list[tuple[PostReleaseEvent, Batch, PostReleaseAssessment | None, str | None]]


def load_batches(session: Session, scope: Scope, source_excursions: set[int]) -> BatchRecords:
    """The site's batches, their QP decisions up to the cut-off, exposures and flags.
    ``source_excursions``: the excursions the period's deviations were raised from."""
    by_id = {b.id: b for b in session.exec(select(Batch).where(Batch.site_id == scope.site.id))}
    by_number = {b.number: b for b in by_id.values()}
    started = [b for b in by_id.values() if scope.within(b.created_at)]
    started.sort(key=lambda b: (b.created_at, b.number))
    return BatchRecords(
        by_id=by_id,
        by_number=by_number,
        started=started,
        decisions=_decisions(session, scope, by_number),
        exposures=_exposures(session, scope, by_id, source_excursions),
        flags=[(b, f) for b in started for f in batch_flags(session, b)],
        process_steps=_process_steps(session, scope),
        post_release=_post_release(session, scope, by_id),
    )


def _post_release(
    session: Session, scope: Scope, by_id: dict[int, Batch]
) -> list[tuple[PostReleaseEvent, Batch, PostReleaseAssessment | None, str | None]]:
    """Events raised in the period, with the assessment and the deviation it names; an
    assessment made after the period end is not yet known."""
    period = scope.period
    rows = []
    for event in session.exec(
        select(PostReleaseEvent)
        .where(
            PostReleaseEvent.batch_id.in_(list(by_id)),
            PostReleaseEvent.raised_at >= period.start,
            PostReleaseEvent.raised_at < period.end,
        )
        .order_by(PostReleaseEvent.raised_at, PostReleaseEvent.id)
    ):
        row = session.get(PostReleaseAssessment, event.assessment_id) if event.assessment_id else None
        row = row if row and row.assessed_at < period.end else None
        dev = session.get(Deviation, row.deviation_id) if row and row.deviation_id else None
        rows.append((event, by_id[event.batch_id], row, dev.number if dev else None))
    return rows


def _decisions(session: Session, scope: Scope, by_number: dict[str, Batch]) -> dict[str, Decision]:
    """Release and rejection signatures before the cut-off, the later one winning."""
    decisions: dict[str, Decision] = {}
    for sig in session.exec(
        select(Signature)
        .where(
            Signature.entity == "batch",
            Signature.meaning.in_(("released", "rejected")),
            Signature.signed_at < scope.until,
        )
        .order_by(Signature.signed_at)
    ):
        if sig.entity_key in by_number:
            decisions[sig.entity_key] = Decision(sig.meaning, sig.signed_at)
    return decisions


def _exposures(
    session: Session, scope: Scope, by_id: dict[int, Batch], source_excursions: set[int]
) -> list[Exposure]:
    """Every possible exposure of the site's batches to a standing excursion of the period (or a
    deviation's source), with QA's decision at the cut-off; one row per excursion and batch, the
    strongest status of its steps' links winning (confirmed > undecided > rejected). A step the
    excursion overlaps with no proposal stored yet is undecided too: the report reads, it does
    not propose (``linking.exposure_candidates`` is the proposing rule)."""
    of_period = (Excursion.started_at >= scope.period.start) & (Excursion.started_at < scope.until)
    rows = session.exec(
        select(ExcursionLink, Excursion)
        .join(Excursion, Excursion.id == ExcursionLink.excursion_id)
        .where(
            Excursion.site_id == scope.site.id,
            Excursion.status != "superseded",
            Excursion.challenge_id.is_(None),
            Excursion.started_at < scope.until,
            or_(of_period, Excursion.id.in_(sorted(source_excursions))),
        )
        .order_by(Excursion.started_at, Excursion.id, ExcursionLink.batch_id)
    ).all()
    wanted = [(link, ex) for link, ex in rows if link.batch_id in by_id]
    decisions = link_decisions_at(session, {by_id[link.batch_id].number for link, _ in wanted}, scope.until)
    rank = {"confirmed": 2, "undecided": 1, "rejected": 0}
    best: dict[tuple[int, int], Exposure] = {}
    statuses = [(ex, link.batch_id, link_status_at(link, decisions)) for link, ex in wanted]
    proposed = {(link.excursion_id, link.step_id) for link, _ in wanted}
    statuses += [
        (ex, bid, "undecided") for ex, bid in _unproposed(session, scope, by_id, source_excursions, proposed)
    ]
    for ex, batch_id, status in statuses:
        key = (ex.id, batch_id)
        if status in rank and (key not in best or rank[status] > rank[best[key].status]):
            best[key] = Exposure(ex, by_id[batch_id], status)
    return sorted(best.values(), key=lambda x: (x.excursion.started_at, x.excursion.id, x.batch.number))


def _unproposed(
    session: Session,
    scope: Scope,
    by_id: dict[int, Batch],
    source_excursions: set[int],
    proposed: set[tuple[int, int]],
) -> list[tuple[Excursion, int]]:
    """(excursion, batch id) of the steps recorded before the cut-off that an excursion of interest
    overlaps but no stored proposal covers yet."""
    sources = list(session.exec(select(Excursion).where(Excursion.id.in_(sorted(source_excursions)))))
    since = min([scope.period.start, *(e.started_at for e in sources)])
    steps = session.exec(
        select(ProcessStep).where(
            ProcessStep.batch_id.in_(list(by_id)),
            ProcessStep.recorded_at < scope.until,
            ProcessStep.start < scope.until,
            or_(ProcessStep.end.is_(None), ProcessStep.end > since),
        )
    ).all()
    out = []
    for step in steps:
        for ex in exposure_candidates(session, step):
            wanted = ex.started_at < scope.until and (
                scope.within(ex.started_at) or ex.id in source_excursions
            )
            if wanted and ex.site_id == scope.site.id and (ex.id, step.id) not in proposed:
                out.append((ex, step.batch_id))
    return out


def _process_steps(session: Session, scope: Scope) -> int:
    steps = session.exec(
        select(func.count(ProcessStep.id))
        .join(Batch, Batch.id == ProcessStep.batch_id)
        .where(
            Batch.site_id == scope.site.id,
            ProcessStep.start >= scope.period.start,
            ProcessStep.start < scope.until,
        )
    ).one()
    return int(steps)


# --------------------------------------------------------------------------- limit changes


@dataclass(frozen=True)
class LimitRecords:
    """The facility-limit revisions of the period and the levels in force at its cut-off."""

    revisions: list[audit.AuditEvent]  # ``limits.revise`` events of the period, in order
    approvals: dict[str, Signature]  # QA approvals of facility limits before the cut-off, by scope
    in_force_at_end: dict  # the levels of the revision in force at the cut-off, as signed


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
                Signature.signed_at < scope.until,
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
                audit.AuditEvent.at < scope.until,
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
    head_hash_at_end: str  # hash of the last event before the cut-off
    events_to_end: int
    events_in_period: int
    signature_checks: list[SignatureCheck]  # signatures made in the period (to the cut-off), checked now
    rollup_rows: int
    excursions_superseded: int  # started in the period (to the cut-off)


def load_integrity(session: Session, scope: Scope) -> IntegrityRecords:
    """Walk the audit chain and every signature, and count the period's records."""
    period = scope.period
    intact, _events, broken = audit.verify_chain(session)
    last = session.exec(
        select(audit.AuditEvent.id, audit.AuditEvent.hash)
        .where(audit.AuditEvent.at < scope.until)
        .order_by(audit.AuditEvent.id.desc())
        .limit(1)
    ).first()
    events_to_end = session.exec(
        select(func.count(audit.AuditEvent.id)).where(audit.AuditEvent.id <= (last[0] if last else 0))
    ).one()
    events_in_period = session.exec(
        select(func.count(audit.AuditEvent.id)).where(
            audit.AuditEvent.at >= period.start, audit.AuditEvent.at < scope.until
        )
    ).one()
    return IntegrityRecords(
        chain_intact=intact,
        first_broken_event=broken,
        head_hash_at_end=last[1] if last else audit.GENESIS,
        events_to_end=int(events_to_end),
        events_in_period=int(events_in_period),
        signature_checks=[c for c in all_signature_checks(session) if scope.within(c.signature.signed_at)],
        rollup_rows=_rollup_rows(session, scope),
        excursions_superseded=_superseded(session, scope),
    )


def _rollup_rows(session: Session, scope: Scope) -> int:
    monitor_ids = list(scope.monitors)
    if not monitor_ids:
        return 0
    rows = session.exec(
        select(func.count())
        .select_from(RollupHourly)
        .where(
            RollupHourly.monitor_id.in_(monitor_ids),
            RollupHourly.hour >= scope.period.start,
            RollupHourly.hour < scope.until,
        )
    ).one()
    return int(rows)


def _superseded(session: Session, scope: Scope) -> int:
    superseded = session.exec(
        select(func.count(Excursion.id)).where(
            Excursion.site_id == scope.site.id,
            Excursion.status == "superseded",
            Excursion.challenge_id.is_(None),
            Excursion.started_at >= scope.period.start,
            Excursion.started_at < scope.until,
        )
    ).one()
    return int(superseded)


# --------------------------------------------------------------------------- the sign-off


def load_incident_confirmation(session: Session, scope: Scope) -> Signature | None:
    """QA's newest e-signed confirmation of the statement on major incidents for this report
    (entity and key as the report's own sign-off, ``tracker.reports.signoff``)."""
    return session.exec(
        select(Signature)
        .where(
            Signature.entity == REPORT_ENTITY,
            Signature.entity_key == report_key(scope.site.code, scope.period),
            Signature.scope == INCIDENTS_SCOPE,
        )
        .order_by(Signature.signed_at.desc(), Signature.id.desc())
        .limit(1)
    ).first()


# --------------------------------------------------------------------------- viable monitoring

VIABLE_EXCURSION_TYPES = ("viable", "viable_trend")


@dataclass
class ViableRecords:
    """What the viable section reads: the period's samples (planned in it, before the cut-off),
    its viable excursions, and the batches released conditionally in it with their reviews."""

    samples: list[ViableSample]
    excursions: list[Excursion]
    conditional: list[tuple[Batch, datetime | None, ViableReleaseReview | None, str | None]]


def load_viable(session: Session, scope: Scope) -> ViableRecords:
    samples = list(
        session.exec(
            select(ViableSample)
            .where(
                ViableSample.site_id == scope.site.id,
                ViableSample.planned_for >= scope.period.start,
                ViableSample.planned_for < scope.until,
            )
            .order_by(ViableSample.planned_for, ViableSample.id)
        )
    )
    excursions = list(
        session.exec(
            select(Excursion)
            .where(
                Excursion.site_id == scope.site.id,
                Excursion.type.in_(VIABLE_EXCURSION_TYPES),
                Excursion.started_at >= scope.period.start,
                Excursion.started_at < scope.until,
                Excursion.status != "superseded",
            )
            .order_by(Excursion.started_at, Excursion.id)
        )
    )
    conditional = []
    for batch in session.exec(
        select(Batch).where(Batch.site_id == scope.site.id, Batch.conditional_release).order_by(Batch.number)
    ):
        released = session.exec(
            select(Signature.signed_at).where(
                Signature.entity == "batch",
                Signature.entity_key == batch.number,
                Signature.scope == "release",
            )
        ).first()
        if released is None or not scope.within(released):
            continue
        review = session.exec(
            select(ViableReleaseReview)
            .where(ViableReleaseReview.batch_id == batch.id, ViableReleaseReview.reviewed_at < scope.until)
            .order_by(ViableReleaseReview.id)
        ).first()
        dev = None
        if review is not None and review.deviation_id is not None:
            dev = session.exec(select(Deviation.number).where(Deviation.id == review.deviation_id)).first()
        conditional.append((batch, released, review, dev))
    return ViableRecords(samples=samples, excursions=excursions, conditional=conditional)
