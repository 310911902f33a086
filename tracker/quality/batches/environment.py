"""The environmental picture of a batch: what QA's review and the QP's release sign (issue 15).

Their statements say they cover "environmental monitoring and deviations", so the content they
sign holds exactly that, as it stands: every exposure link of the batch's steps with its
decision (and the decision's e-signature), every excursion those links name, every period of
invalid readings during the steps with its assessment, every deviation linked to the batch with
its state and impact, and how many readings each monitor delivered during each step. A later
change to any of it — a late reading, a new excursion or link, a re-evaluation, a decision or a
deviation changing — makes the picture differ from the one signed, so the signature shows as no
longer matching (:func:`tracker.quality.batches.release.signature_checks`), and after release
it raises a post-release event (:mod:`tracker.quality.batches.postrelease`).

A read: writes nothing. Callers bring the link proposals up to date first where they must.
"""

from __future__ import annotations

from datetime import datetime
from typing import NotRequired

from sqlalchemy import case, func
from sqlmodel import Session, select
from typing_extensions import TypedDict

from tracker.core.timeutil import iso_utc, utcnow
from tracker.facility.models import Monitor, Room
from tracker.identity import signatures
from tracker.monitoring.excursions import Excursion
from tracker.monitoring.readings import Reading
from tracker.monitoring.viable.models import ViableSample
from tracker.quality.batches.models import Batch, ExcursionLink
from tracker.quality.batches.review import monitors_for, review_items
from tracker.quality.batches.steps import steps_of
from tracker.quality.batches.viable import picture as viable_picture
from tracker.quality.deviations import Deviation, DeviationBatch


class Environment(TypedDict):
    """The picture, each list in a stable order (so equal pictures hash equal)."""

    links: list[dict]
    excursions: list[dict]
    invalid_periods: list[dict]
    deviations: list[dict]
    coverage: list[dict]
    #: the batch's viable samples (``tracker.quality.batches.viable.picture``), where it has any
    viable: NotRequired[list[dict]]


def _links(session: Session, batch: Batch) -> list[dict]:
    rows = session.exec(
        select(ExcursionLink).where(ExcursionLink.batch_id == batch.id).order_by(ExcursionLink.id)
    ).all()
    out = []
    for link in rows:
        sigs = signatures.signatures_of(session, "exposure_link", str(link.id))
        out.append(
            {
                "id": link.id,
                "excursion": link.excursion_id,
                "step": link.step_id,
                "status": link.status,
                "decided_by": link.decided_by,
                "reason": link.reason,
                "decided_level": link.decided_level,
                "decided_started_at": iso_utc(link.decided_started_at),
                "decided_ended_at": iso_utc(link.decided_ended_at),
                "decision_signature": sigs[-1].id
                if sigs and link.status in ("confirmed", "rejected")
                else None,
            }
        )
    return out


def _excursions(session: Session, ids: set[int]) -> list[dict]:
    if not ids:
        return []
    rows = session.exec(
        select(Excursion, func.coalesce(Monitor.code, ViableSample.location), Room.code)
        .outerjoin(Monitor, Monitor.id == Excursion.monitor_id)
        .outerjoin(ViableSample, ViableSample.id == Excursion.viable_sample_id)
        .join(Room, Room.id == Excursion.room_id)
        .where(Excursion.id.in_(sorted(ids)))
        .order_by(Excursion.id)
    ).all()
    return [
        {
            "id": ex.id,
            "monitor": monitor,
            "room": room,
            "type": ex.type,
            "kind": ex.kind,
            "channel": ex.channel or None,
            "level": ex.level,
            "status": ex.status,
            "started_at": iso_utc(ex.started_at),
            "ended_at": iso_utc(ex.ended_at),
            "peak": ex.peak,
            "limit": ex.limit_value,
            "superseded_by": ex.superseded_by,
        }
        for ex, monitor, room in rows
    ]


def _deviations(session: Session, batch: Batch) -> list[dict]:
    return [
        {
            "number": dev.number,
            "status": dev.status,
            "classification": dev.classification,
            "impact": link.impact,
            "assessment": link.assessment,
        }
        for dev, link in session.exec(
            select(Deviation, DeviationBatch)
            .join(DeviationBatch, DeviationBatch.deviation_id == Deviation.id)
            .where(DeviationBatch.batch_id == batch.id)
            .order_by(Deviation.number)
        ).all()
    ]


def _coverage(session: Session, batch: Batch, now: datetime) -> list[dict]:
    """Readings (values) per monitor during each step, and how many were invalid, at alert and at
    action: a late or backfilled reading changes these counts even when it is in limit, and a
    re-evaluation that judges stored readings differently changes the verdict counts."""
    out = []
    for step in steps_of(session, batch):
        monitors = {m.id: m.code for m in monitors_for(session, step)}
        if not monitors:
            continue
        counts = dict.fromkeys(monitors, (0, 0, 0, 0))
        for monitor_id, *row in session.exec(
            select(
                Reading.monitor_id,
                func.count(),
                func.count(Reading.invalid_reason),
                func.count(case((Reading.level == "alert", 1))),
                func.count(case((Reading.level == "action", 1))),
            )
            .where(
                Reading.monitor_id.in_(sorted(monitors)),
                Reading.event_time >= step.start,
                Reading.event_time <= (step.end or now),
            )
            .group_by(Reading.monitor_id)
        ).all():
            counts[monitor_id] = tuple(row)
        out += [
            {
                "step": step.id,
                "monitor": monitors[mid],
                "readings": n,
                "invalid": bad,
                "alert": a,
                "action": x,
            }
            for mid, (n, bad, a, x) in sorted(counts.items(), key=lambda kv: monitors[kv[0]])
        ]
    return out


def environment_content(session: Session, batch: Batch, *, now: datetime | None = None) -> Environment:
    """The batch's environmental picture as it stands (read only)."""
    now = now or utcnow()
    links = _links(session, batch)
    invalid = [
        {
            "key": item.key,
            "step": item.step_id,
            "monitor": item.monitor,
            "start": iso_utc(item.start),
            "end": iso_utc(item.end),
            "reasons": item.detail.get("invalid_reasons"),
            "exposed": item.exposed,
            "assessed_by": item.detail.get("decided_by"),
            "reason": item.detail.get("reason"),
        }
        for item in review_items(session, batch, now=now)
        if item.kind != "excursion"
    ]
    env: Environment = {
        "links": links,
        "excursions": _excursions(session, {link["excursion"] for link in links}),
        "invalid_periods": invalid,
        "deviations": _deviations(session, batch),
        "coverage": _coverage(session, batch, now),
    }
    samples = viable_picture(session, batch)
    if samples:  # only where there are any: the pictures signed before keep their hash
        env["viable"] = samples
    return env


def environment_hash(env: Environment) -> str:
    return signatures.content_hash(env)
