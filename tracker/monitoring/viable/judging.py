"""Judge a read viable sample against its grade's limit and raise its excursions.

A result out of limit becomes an :class:`~tracker.monitoring.excursions.Excursion` of type
``viable`` (no monitor: ``viable_sample_id`` names the sample), so it goes through the same
acknowledgement, deviation, exposure-link and notification machinery as a particle excursion
(the outbox queues it at flush, for ``[[notify]]`` rules that name ``viable``).
Any growth in grade A is an action excursion (China Annex 1 第十一条 "<1"; EU Annex 1 (2022)
Table 6 "no growth"; regulatory.md §2). Settle plates are judged per 4 h and, where a location
had several plates in one session, on their sum.

The adverse-trend rule (Annex 1 (2022) §9.x adverse trends; regulatory.md §5.2) raises a
``viable_trend`` alert excursion for repeated growth at one location (``TREND_GROWTHS`` results
with growth within ``TREND_DAYS``) and for one organism identified at several locations.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlmodel import Session, select

from tracker.core import audit
from tracker.core.timeutil import iso_utc
from tracker.facility.basis import basis_id
from tracker.facility.models import Site
from tracker.facility.policy import viable_plan_of
from tracker.facility.viable import (
    METHOD_EN,
    ViableVerdict,
    judge,
    load_viable_limits,
    normalised,
    resolve_limit,
    session_total,
)
from tracker.monitoring.excursions import Excursion
from tracker.monitoring.viable.models import ViableSample

SYSTEM = "system:viable"
#: growth at one location this many times within TREND_DAYS is an adverse trend
TREND_GROWTHS = 3
TREND_DAYS = 30


def viable_basis(session: Session, site: Site) -> int:
    """The evaluation basis of a viable result: the viable limit file and the facility revision."""
    limits = load_viable_limits(site.limit_set)
    return basis_id(
        session,
        site_id=site.id,
        code=f"{limits.code}/viable"[:40],
        version=limits.version,
        sha256=limits.sha256,
        revision=site.revision,
    )


def _group(session: Session, sample: ViableSample) -> list[ViableSample]:
    """The read settle plates of the sample's location in its session (the sample included)."""
    return list(
        session.exec(
            select(ViableSample)
            .where(
                ViableSample.location == sample.location,
                ViableSample.session_key == sample.session_key,
                ViableSample.method == "settle",
                ViableSample.count.is_not(None),
                ViableSample.status.not_in(("missed", "invalid")),
            )
            .order_by(ViableSample.id)
        )
    )


def _exposure_min(sample: ViableSample) -> float:
    if sample.exposure_start and sample.exposure_end:
        return (sample.exposure_end - sample.exposure_start).total_seconds() / 60.0
    return sample.exposure_min or 240.0


def judged_value(session: Session, sample: ViableSample) -> float:
    """The count the sample is judged by: settle plates per 4 h, several in a session summed."""
    if sample.method != "settle":
        return float(sample.count or 0)
    plates = _group(session, sample)
    own = normalised(float(sample.count or 0), _exposure_min(sample))
    if len(plates) > 1:
        return max(own, session_total([(float(p.count or 0), _exposure_min(p)) for p in plates]))
    return own


def judge_sample(session: Session, sample: ViableSample, *, now: datetime) -> ViableVerdict:
    """Judge a read sample, store the verdict and raise (or update) its excursion."""
    site = session.get(Site, sample.site_id)
    plan = viable_plan_of(session, site, sample.revision)
    bounds = resolve_limit(
        load_viable_limits(site.limit_set),
        plan,
        location=plan.location(sample.location),
        grade=sample.grade,
        method=sample.method,
    )
    verdict = judge(judged_value(session, sample), bounds)
    sample.judged_value, sample.limit_value, sample.verdict = verdict.value, verdict.limit, verdict.level
    session.add(sample)
    if verdict.level in ("alert", "action"):
        _raise_excursion(session, site, sample, verdict, now=now)
    session.flush()
    return verdict


def excursion_of(session: Session, sample: ViableSample) -> Excursion | None:
    return session.exec(
        select(Excursion).where(Excursion.viable_sample_id == sample.id, Excursion.type == "viable")
    ).first()


def _raise_excursion(
    session: Session, site: Site, sample: ViableSample, verdict: ViableVerdict, *, now: datetime
) -> Excursion:
    start = sample.exposure_start or sample.taken_at or sample.planned_for
    end = sample.exposure_end or sample.taken_at or start
    ex = excursion_of(session, sample)
    note = (
        f"{METHOD_EN[sample.method]} {sample.code} at {sample.location}: {sample.count} cfu"
        + (f" (judged {verdict.value:g} per 4 h / session)" if sample.method == "settle" else "")
        + (f"; organism {sample.organism}" if sample.organism else "")
    )
    new = ex is None
    if ex is None:
        ex = Excursion(
            type="viable",
            site_id=site.id,
            monitor_id=None,
            viable_sample_id=sample.id,
            room_id=sample.room_id,
            kind="viable",
            channel=sample.method[:8],
            level=verdict.level,
            state="in_operation",
            status="closed",  # a result, not an ongoing episode
            direction="high",
            started_at=start,
            ended_at=end,
            last_out_at=end,
            peak=verdict.value,
            limit_value=verdict.limit,
            readings=1,
            basis_id=viable_basis(session, site),
            created_at=now,
            updated_at=now,
            note=note,
        )
    else:
        ex.level, ex.peak, ex.limit_value, ex.note, ex.updated_at = (
            verdict.level,
            verdict.value,
            verdict.limit,
            note,
            now,
        )
    session.add(ex)
    session.flush()
    audit.record(
        session,
        actor=SYSTEM,
        action="excursion.open" if new else "excursion.update",
        entity="excursion",
        entity_key=str(ex.id),
        after={
            "type": "viable",
            "sample": sample.code,
            "level": ex.level,
            "value": ex.peak,
            "limit": ex.limit_value,
            "organism": sample.organism,
        },
        at=now,
    )
    return ex


def raise_trends(session: Session, sample: ViableSample, *, now: datetime) -> list[Excursion]:
    """Adverse trends after a result with growth or an identification (alert, type ``viable_trend``)."""
    since = now - timedelta(days=TREND_DAYS)
    raised = []
    growth = list(
        session.exec(
            select(ViableSample).where(
                ViableSample.location == sample.location,
                ViableSample.count > 0,
                ViableSample.read_at >= since,
            )
        )
    )
    if len(growth) >= TREND_GROWTHS:
        raised.append(
            _trend(
                session,
                sample,
                f"location:{sample.location}",
                f"growth at {sample.location} {len(growth)} times within {TREND_DAYS} days: "
                + ", ".join(s.code for s in growth),
                now,
            )
        )
    if sample.organism:
        same = list(
            session.exec(
                select(ViableSample).where(
                    ViableSample.organism == sample.organism,
                    ViableSample.identified_at >= since,
                    ViableSample.site_id == sample.site_id,
                )
            )
        )
        if len({s.location for s in same}) >= 2:
            raised.append(
                _trend(
                    session,
                    sample,
                    f"organism:{sample.organism}",
                    f"{sample.organism} identified at {len({s.location for s in same})} locations within "
                    f"{TREND_DAYS} days: " + ", ".join(f"{s.code}@{s.location}" for s in same),
                    now,
                )
            )
    return [r for r in raised if r is not None]


def _trend(session: Session, sample: ViableSample, key: str, note: str, now: datetime) -> Excursion | None:
    """One open trend per key (location or organism): extended, not repeated."""
    marker = f"[{key}] "
    existing = session.exec(
        select(Excursion).where(
            Excursion.type == "viable_trend", Excursion.status == "open", Excursion.note.startswith(marker)
        )
    ).first()
    if existing is not None:
        existing.note, existing.updated_at, existing.last_out_at = marker + note, now, now
        existing.readings += 1
        session.add(existing)
        return existing
    site = session.get(Site, sample.site_id)
    ex = Excursion(
        type="viable_trend",
        site_id=site.id,
        monitor_id=None,
        viable_sample_id=sample.id,
        room_id=sample.room_id,
        kind="viable",
        channel=sample.method[:8],
        level="alert",
        state="in_operation",
        status="open",
        direction="high",
        started_at=sample.read_at or now,
        last_out_at=now,
        peak=float(sample.count or 0),
        readings=1,
        basis_id=viable_basis(session, site),
        created_at=now,
        updated_at=now,
        note=marker + note,
    )
    session.add(ex)
    session.flush()
    audit.record(
        session,
        actor=SYSTEM,
        action="excursion.open",
        entity="excursion",
        entity_key=str(ex.id),
        after={"type": "viable_trend", "key": key, "since": iso_utc(now - timedelta(days=TREND_DAYS))},
        at=now,
    )
    return ex
