"""Data-driven alert and action levels (PDA TR13 style; EU GMP Annex 1 (2022) section 9:
alert levels come from qualification and trend data and are reviewed periodically —
regulatory.md §5.2, §5.3).

A proposal for one room × parameter × channel × operational state over a period takes the
valid readings the room's monitors stored in that state and proposes, non-parametrically,

* particles (upper levels): alert = 95th, action = 99th percentile, rounded up to a whole
  particle/m³;
* pressure differential (lower levels): alert = 5th, action = 1st percentile, rounded down to
  0.1 Pa;

never beyond the regulatory limit (the action level is capped there and the proposal says
so). It refuses when the data are too few (``TRACKER_PROPOSAL_MIN_READINGS`` readings over at
least ``TRACKER_PROPOSAL_MIN_DAYS`` days) and says when they are not normal (the usual case for
particle counts), showing mean + 2/3 SD only for comparison.

Percentiles come from the raw readings with numpy, not from the hourly rollups: rollups do
not separate operational states and their particle bins are quarter decades, too coarse for
a level; one room's readings of a year are a few hundred thousand values, a second's work.

A proposal takes effect only when QA — another person than its author — approves it with an
e-signature: the approval writes a new facility revision carrying the level (source
``proposal:<id>``), which later facility-file loads carry forward until the file itself sets
that scope.
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import Column, Text
from sqlmodel import Field, Session, SQLModel, select
from typing_extensions import TypedDict

from tracker.core import audit
from tracker.core.db import UTCDateTime
from tracker.core.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    Reason,
    zh_word,
    zh_words,
)
from tracker.core.settings import get_settings
from tracker.core.timeutil import iso_utc, utcnow
from tracker.facility.limits import STATES
from tracker.facility.load import limits_content
from tracker.facility.models import FacilityLimit, FacilityRevision, Monitor, Room, Site, find_room
from tracker.identity import signatures
from tracker.identity.users import Authenticated, person_of, require_role
from tracker.monitoring.readings import Reading

SUPPORTED = {"particles": "high", "pressure": "low"}
QUANTILES = {"high": (0.95, 0.99), "low": (0.05, 0.01)}


class LimitProposal(SQLModel, table=True):
    __tablename__ = "limit_proposal"

    id: int | None = Field(default=None, primary_key=True)
    site_id: int = Field(foreign_key="site.id", index=True)
    room_id: int = Field(foreign_key="room.id")
    kind: str = Field(max_length=20)
    channel: str = Field(default="", max_length=8)
    state: str = Field(max_length=20)
    #: the facility revision the proposal was computed against; approval needs it still in force
    facility_revision: int
    period_start: datetime = Field(sa_type=UTCDateTime, nullable=False)
    period_end: datetime = Field(sa_type=UTCDateTime, nullable=False)
    readings: int
    days: int
    bound: str = Field(max_length=4)  # high | low
    alert_value: float
    action_value: float
    regulatory_value: float | None = None
    stats: str = Field(sa_column=Column(Text, nullable=False))  # JSON: percentiles, mean, sd, skew
    notes: str = Field(sa_column=Column(Text, nullable=False))  # JSON list of sentences
    status: str = Field(default="proposed", max_length=20)  # proposed|approved|rejected|superseded
    proposed_by: str = Field(max_length=60)
    proposed_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    decided_by: str | None = Field(default=None, max_length=60)
    decided_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    decision_reason: str | None = Field(default=None, sa_column=Column(Text))


def _values(
    session: Session, monitors: list[int], channel: str, state: str, start: datetime, end: datetime
) -> tuple[np.ndarray, np.ndarray]:
    rows = session.exec(
        select(Reading.value, Reading.event_time).where(
            Reading.monitor_id.in_(monitors),
            Reading.channel == channel,
            Reading.state == state,
            Reading.invalid_reason.is_(None),
            Reading.event_time >= start,
            Reading.event_time < end,
        )
    ).all()
    values = np.fromiter((r[0] for r in rows), dtype=float, count=len(rows))
    days = np.unique(np.fromiter((r[1].timestamp() // 86400 for r in rows), dtype=np.int64, count=len(rows)))
    return values, days


def describe(values: np.ndarray) -> dict:
    """Summary statistics and the normality verdict used in the proposal's notes."""
    mean, sd = float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0
    skew = float(((values - mean) ** 3).mean() / sd**3) if sd > 0 else 0.0
    q = np.percentile(values, [1, 5, 50, 95, 99])
    return {
        "n": len(values),
        "mean": mean,
        "sd": sd,
        "skewness": skew,
        "zero_fraction": float((values == 0).mean()),
        "min": float(values.min()),
        "max": float(values.max()),
        "p1": float(q[0]),
        "p5": float(q[1]),
        "p50": float(q[2]),
        "p95": float(q[3]),
        "p99": float(q[4]),
        "mean_plus_2sd": mean + 2 * sd,
        "mean_plus_3sd": mean + 3 * sd,
        "mean_minus_2sd": mean - 2 * sd,
        "mean_minus_3sd": mean - 3 * sd,
        "normal": abs(skew) <= 1.0 and float((values == 0).mean()) < 0.5,
    }


def _levels(
    kind: str,
    bound: str,
    stats: dict,
    regulatory: float | None,
    current: tuple[float | None, float | None],
    resolution: float,
) -> tuple[float, float, list[str]]:
    notes: list[str] = []
    if bound == "high":
        alert, action = math.ceil(stats["p95"]), math.ceil(stats["p99"])
        floor = math.ceil(resolution)
        if alert < floor or action < floor:
            notes.append(
                f"the percentiles fall below one particle per sample ({floor} /m³): the levels "
                "are raised to it — a level below what one count reads would alarm on any count"
            )
            alert, action = max(alert, floor), max(action, floor)
        if regulatory is not None and action > regulatory:
            notes.append(
                f"the 99th percentile {stats['p99']:g} is above the regulatory limit "
                f"{regulatory:g}: the action level stays at the limit — investigate the room"
            )
            action = regulatory
        alert = min(alert, action)
    else:
        alert, action = math.floor(stats["p5"] * 10) / 10, math.floor(stats["p1"] * 10) / 10
        if regulatory is not None and action < regulatory:
            notes.append(
                f"the 1st percentile {stats['p1']:g} is below the regulatory floor "
                f"{regulatory:g}: the action level stays at the floor — investigate the cascade"
            )
            action = regulatory
        alert = max(alert, action)
    if not stats["normal"]:
        notes.append(
            f"the data are not normally distributed (skewness {stats['skewness']:.2f}, "
            f"{stats['zero_fraction']:.0%} zeros): percentiles are used; mean ± 2/3 SD are shown "
            "for comparison only"
        )
    cur_alert, cur_action = current
    looser = (lambda a, b: a > b) if bound == "high" else (lambda a, b: a < b)
    if cur_action is not None and looser(action, cur_action):
        notes.append(f"the proposed action level {action:g} is looser than the current {cur_action:g}")
    if cur_alert is not None and looser(alert, cur_alert):
        notes.append(f"the proposed alert level {alert:g} is looser than the current {cur_alert:g}")
    return float(alert), float(action), notes


def _current(
    session: Session, site: Site, room: Room, kind: str, channel: str, state: str, monitors: list[Monitor]
) -> tuple[float | None, float | None, float | None]:
    """(alert, action, regulatory) in force for the room's first monitor of the kind."""
    from tracker.monitoring.snapshot import build_registry

    registry = build_registry(session)
    bounds = registry.by_id[monitors[0].id].limits.for_reading(channel, state)
    if bounds is None:
        return None, None, None
    if SUPPORTED[kind] == "high":
        return bounds.alert_high, bounds.action_high, bounds.regulatory_high
    return bounds.alert_low, bounds.action_low, bounds.regulatory_low


def propose(
    session: Session,
    *,
    actor: Authenticated,
    room_code: str,
    kind: str,
    channel: str | None,
    state: str,
    start: datetime,
    end: datetime,
    site_code: str | None = None,
    now: datetime | None = None,
) -> LimitProposal:
    """Compute and store a proposal (status ``proposed``); it changes nothing until approved."""
    require_role(actor, "qa", action=Reason("proposing alert and action levels", "建议警戒和纠偏限度"))
    if kind not in SUPPORTED:
        raise InvalidInputError(
            Reason(
                f"levels are proposed for {' and '.join(SUPPORTED)} only",
                f"只为{zh_words(SUPPORTED, '和')}建议限度",
            )
        )
    if state not in STATES:
        raise InvalidInputError(
            Reason(f"state must be one of {', '.join(STATES)}", f"状态须为以下之一：{zh_words(STATES)}")
        )
    if end <= start:
        raise InvalidInputError(Reason("the period must end after it starts", "期间的结束须晚于开始"))
    channel = channel or ""
    if kind == "particles" and channel not in ("0.5", "5.0"):
        raise InvalidInputError(
            Reason("particles need --channel 0.5 or 5.0", "悬浮粒子须指定粒径 0.5 或 5.0")
        )
    room = find_room(session, room_code, site_code=site_code)
    site = session.get(Site, room.site_id)
    monitors = [
        m
        for m in session.exec(
            select(Monitor).where(Monitor.room_id == room.id, Monitor.kind == kind, Monitor.active)
        )
        if kind != "particles" or channel in m.channels.split(",")
    ]
    if not monitors:
        raise NotFoundError(
            Reason(
                f"room {room_code} has no active {kind} monitor",
                f"房间 {room_code} 没有在用的{zh_word(kind)}监测点",
            )
        )
    settings = get_settings()
    values, days = _values(session, [m.id for m in monitors], channel, state, start, end)
    if len(values) < settings.proposal_min_readings or len(days) < settings.proposal_min_days:
        raise InvalidInputError(
            Reason(
                f"too few data for a proposal: {len(values)} valid {state} readings on {len(days)} day(s) "
                f"in the period; at least {settings.proposal_min_readings} readings over "
                f"{settings.proposal_min_days} days are needed",
                f"数据不足以提出建议：期间内只有 {len(days)} 天共 {len(values)} 个有效的{zh_word(state)}读数；"
                f"至少需要 {settings.proposal_min_days} 天共 {settings.proposal_min_readings} 个读数",
            )
        )
    stats = describe(values)
    cur_alert, cur_action, regulatory = _current(session, site, room, kind, channel, state, monitors)
    bound = SUPPORTED[kind]
    # one count in the largest sample of the room's counters: the finest level that means anything
    resolution = 1000.0 / max(m.sample_volume_l or 28.3 for m in monitors) if kind == "particles" else 0.0
    alert, action, notes = _levels(kind, bound, stats, regulatory, (cur_alert, cur_action), resolution)
    now = now or utcnow()
    row = LimitProposal(
        site_id=site.id,
        room_id=room.id,
        kind=kind,
        channel=channel,
        state=state,
        facility_revision=site.revision,
        period_start=start,
        period_end=end,
        readings=len(values),
        days=len(days),
        bound=bound,
        alert_value=alert,
        action_value=action,
        regulatory_value=regulatory,
        stats=json.dumps(stats),
        notes=json.dumps(notes, ensure_ascii=False),
        proposed_by=actor.username,
        proposed_at=now,
    )
    session.add(row)
    session.flush()
    audit.record(
        session,
        actor=actor.username,
        action="limits.propose",
        entity="limit_proposal",
        entity_key=str(row.id),
        after=to_json(session, row),
        at=now,
    )
    return row


#: ``from`` and ``to`` are keys, not Python names: the functional form
ProposalDoc = TypedDict(
    "ProposalDoc",
    {
        "id": int,
        "site": str,
        "room": str,
        "kind": str,
        "channel": str | None,
        "state": str,
        "from": str,
        "to": str,
        "readings": int,
        "days": int,
        "bound": str,  # high | low
        "alert": int | float,
        "action": int | float,
        "regulatory": int | float | None,
        "stats": dict[str, Any],  # percentiles, mean, sd, skewness, normality
        "notes": list[str],
        "status": str,  # proposed | approved | rejected | superseded
        "proposed_by": str,
        "proposed_at": str,
        "decided_by": str | None,
        "decided_at": str | None,
        "reason": str | None,
    },
)
ProposalDoc.__doc__ = "A data-driven proposal of alert and action levels, with the statistics behind it."


def to_json(session: Session, p: LimitProposal) -> ProposalDoc:
    return {
        "id": p.id,
        "site": session.get(Site, p.site_id).code,
        "room": session.get(Room, p.room_id).code,
        "kind": p.kind,
        "channel": p.channel or None,
        "state": p.state,
        "from": iso_utc(p.period_start),
        "to": iso_utc(p.period_end),
        "readings": p.readings,
        "days": p.days,
        "bound": p.bound,
        "alert": p.alert_value,
        "action": p.action_value,
        "regulatory": p.regulatory_value,
        "stats": json.loads(p.stats),
        "notes": json.loads(p.notes),
        "status": p.status,
        "proposed_by": p.proposed_by,
        "proposed_at": iso_utc(p.proposed_at),
        "decided_by": p.decided_by,
        "decided_at": iso_utc(p.decided_at),
        "reason": p.decision_reason,
    }


def _proposal(session: Session, proposal_id: int) -> LimitProposal:
    row = session.get(LimitProposal, proposal_id)
    if row is None:
        raise NotFoundError(Reason(f"no limit proposal {proposal_id}", f"没有限度建议 {proposal_id}"))
    if row.status != "proposed":
        raise ConflictError(
            Reason(
                f"limit proposal {proposal_id} is {row.status} already",
                f"限度建议 {proposal_id} 已是“{zh_word(row.status)}”",
            )
        )
    return row


def proposal_level(session: Session, p: LimitProposal, revision: int, position: int) -> FacilityLimit:
    names = ("alert_high", "action_high") if p.bound == "high" else ("alert_low", "action_low")
    return FacilityLimit(
        site_id=p.site_id,
        revision=revision,
        position=position,
        kind=p.kind,
        state=p.state,
        room_code=session.get(Room, p.room_id).code,
        channel=p.channel or None,
        **dict(zip(names, (p.alert_value, p.action_value), strict=True)),
        source=f"proposal:{p.id}",
        note=f"data-driven levels, proposal {p.id} ({p.readings} readings, "
        f"{iso_utc(p.period_start)}–{iso_utc(p.period_end)})",
    )


def approve(
    session: Session,
    *,
    signer: Authenticated,
    proposal_id: int,
    comment: str | None = None,
    now: datetime | None = None,
) -> LimitProposal:
    """QA approves with an e-signature; the levels take effect in a new facility revision."""
    from tracker.monitoring.snapshot import build_registry

    require_role(signer, "qa", action=Reason("approving alert and action levels", "批准警戒和纠偏限度"))
    p = _proposal(session, proposal_id)
    if signer.who == person_of(session, p.proposed_by):
        raise PermissionDeniedError(
            Reason(
                "another QA person approves a proposal than the one who made it "
                "(nobody checks their own entry)",
                "限度建议须由提出人以外的另一位 QA 人员批准（任何人不得审核自己的记录）",
            )
        )
    site = session.get(Site, p.site_id)
    if site.revision != p.facility_revision:
        raise ConflictError(
            Reason(
                f"the facility changed since proposal {p.id} was made (revision "
                f"{p.facility_revision} → {site.revision}): "
                "propose again from the same data",
                f"提出建议 {p.id} 后设施已变更（版本 {p.facility_revision} "
                f"→ {site.revision}）："
                "请用同样的数据重新提出建议",
            )
        )
    if any("looser" in note for note in json.loads(p.notes)) and not (comment and comment.strip()):
        raise InvalidInputError(
            Reason(
                f"proposal {p.id} loosens a level in force: say why in the comment",
                f"建议 {p.id} 放宽了现行限度：请在备注中说明理由",
            )
        )
    now = now or utcnow()
    room_code = session.get(Room, p.room_id).code
    scope = (room_code, p.kind, p.channel or None, p.state)
    old = session.exec(
        select(FacilityLimit)
        .where(FacilityLimit.site_id == site.id, FacilityLimit.revision == site.revision)
        .order_by(FacilityLimit.position)
    ).all()
    kept = [r for r in old if not (r.source and (r.room_code, r.kind, r.channel, r.state) == scope)]
    replaced = [int(r.source.split(":")[1]) for r in old if r not in kept]
    previous = session.exec(
        select(FacilityRevision).where(
            FacilityRevision.site_id == site.id, FacilityRevision.revision == site.revision
        )
    ).first()
    site.revision += 1
    session.add(site)
    if previous is not None:
        # the new revision changes levels only: the rules, notifications and plan it judges and
        # alarms by stay the previous revision's (else they would fall back to the defaults)
        session.add(
            FacilityRevision(
                site_id=site.id,
                revision=site.revision,
                file_sha256=previous.file_sha256,
                settings=previous.settings,
                changes=json.dumps([f"levels of proposal {p.id}"], ensure_ascii=False),
                loaded_by=signer.username,
                loaded_at=now,
            )
        )
    for position, row in enumerate(kept):
        session.add(
            FacilityLimit(
                **{
                    k: getattr(row, k)
                    for k in FacilityLimit.model_fields
                    if k not in ("id", "revision", "position")
                },
                revision=site.revision,
                position=position,
            )
        )
    session.add(proposal_level(session, p, site.revision, len(kept)))
    session.flush()
    build_registry(session)  # refuses (and rolls back) a level looser than the regulation
    for old_id in replaced:
        superseded = session.get(LimitProposal, old_id)
        superseded.status = "superseded"
        session.add(superseded)
    p.status, p.decided_by, p.decided_at, p.decision_reason = "approved", signer.username, now, comment
    session.add(p)
    signatures.sign(
        session,
        signer=signer,
        meaning="approved",
        entity="site",
        entity_key=site.code,
        scope=f"facility_limits:{site.revision}",
        statement=f"QA approves data-driven levels of proposal {p.id} (facility revision {site.revision})",
        content=limits_content(session, site, site.revision),
        comment=comment,
        now=now,
    )
    audit.record(
        session,
        actor=signer.username,
        action="limits.approve",
        entity="limit_proposal",
        entity_key=str(p.id),
        before={"status": "proposed"},
        after={"status": "approved", "revision": site.revision, "superseded": replaced},
        reason=comment,
        at=now,
    )
    return p


def reject(
    session: Session, *, actor: Authenticated, proposal_id: int, reason: str, now: datetime | None = None
) -> LimitProposal:
    require_role(actor, "qa", action=Reason("rejecting a limit proposal", "拒绝限度建议"))
    if not reason or not reason.strip():
        raise InvalidInputError(Reason("a rejection needs its reason", "拒绝须说明理由"))
    p = _proposal(session, proposal_id)
    now = now or utcnow()
    p.status, p.decided_by, p.decided_at, p.decision_reason = "rejected", actor.username, now, reason.strip()
    session.add(p)
    audit.record(
        session,
        actor=actor.username,
        action="limits.reject",
        entity="limit_proposal",
        entity_key=str(p.id),
        before={"status": "proposed"},
        after={"status": "rejected"},
        reason=p.decision_reason,
        at=now,
    )
    return p


def list_proposals(session: Session, *, status: str | None = None) -> list[ProposalDoc]:
    query = select(LimitProposal).order_by(LimitProposal.id)
    if status:
        query = query.where(LimitProposal.status == status)
    return [to_json(session, p) for p in session.exec(query)]
