"""Room-state changes as people record them: under the same rules as batch steps, and under QA
control where they would change what already counts as an excursion.

A room state decides which limits judged a reading (静态 / 动态), so recording one after the fact
re-judges stored readings. Records are contemporaneous (GMP 2010 Art. 159; 药品记录与数据管理要求
on timeliness): a change recorded later than the late-entry limit needs its reason; one older than
the backdating limit, or one that would supersede or reshape an existing excursion, needs QA's
approval by e-signature (GMP 2010 Art. 161, 163; 计算机化系统附录 on changes to critical data;
regulatory.md §9). ``record_room_state`` stays the primitive the entry points build on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlmodel import Session, or_, select

from tracker.core.errors import InvalidInputError, PermissionDeniedError, Reason
from tracker.core.timeutil import utcnow
from tracker.facility.models import Monitor, Room, Site, find_room
from tracker.facility.policy import Compliance, compliance_of
from tracker.facility.roomstate import RoomStateChange
from tracker.identity import signatures
from tracker.identity.users import Authenticated, require_role
from tracker.monitoring.excursions import Excursion, breaches, excursion_shape
from tracker.monitoring.reevaluate import ReevaluationResult, record_room_state, rooms_within

#: how far ahead of now a change may be dated (clock differences between a terminal and the server)
FUTURE_TOLERANCE = timedelta(minutes=5)


@dataclass(frozen=True)
class StatePolicy:
    """The lateness rules: the facility file's ``[records]`` (as for batch steps)."""

    late_after: timedelta = timedelta(minutes=15)
    backdate_max: timedelta = timedelta(hours=24)

    @classmethod
    def of(cls, rules: Compliance) -> StatePolicy:
        return cls(
            late_after=timedelta(minutes=rules.late_entry_min),
            backdate_max=timedelta(hours=rules.backdate_max_h),
        )


@dataclass(frozen=True)
class StateChangeResult:
    change_id: int
    reevaluation: ReevaluationResult
    #: excursions superseded or reshaped by the change (ids)
    affected: tuple[int, ...]
    approval_signature_id: int | None


def _excursions_from(session: Session, room_ids: list[int], start: datetime) -> dict[int, dict]:
    """Shapes of the excursions a change from ``start`` may re-judge (not superseded, not over before it)."""
    monitor_ids = select(Monitor.id).where(Monitor.room_id.in_(room_ids))
    rows = session.exec(
        select(Excursion).where(
            Excursion.monitor_id.in_(monitor_ids),
            Excursion.status != "superseded",
            breaches(),
            or_(Excursion.ended_at.is_(None), Excursion.ended_at >= start),
        )
    ).all()
    return {row.id: excursion_shape(row) for row in rows}


def _check_timing(effective_at: datetime, now: datetime, reason: str | None, policy: StatePolicy) -> bool:
    """Refuse a future or an unexplained late change; True when the change is past the backdating limit."""
    if effective_at > now + FUTURE_TOLERANCE:
        raise InvalidInputError(
            Reason("a room state cannot be recorded for the future", "不能记录未来时间的房间状态")
        )
    age = now - effective_at
    if age > policy.late_after and not (reason and reason.strip()):
        minutes = int(age.total_seconds() // 60)
        raise InvalidInputError(
            Reason(
                f"the change took effect {minutes} min ago: say why it is recorded late (--reason)",
                f"该状态已于 {minutes} 分钟前生效：请说明补记原因（--reason）",
            )
        )
    return age > policy.backdate_max


def _needs_qa(
    backdated: bool, affected: list[int], approver: Authenticated | None, policy: StatePolicy
) -> None:
    """Without a QA approver, a backdated or excursion-changing record is refused (nothing is kept)."""
    if approver is not None or not (backdated or affected):
        return
    hours = policy.backdate_max.total_seconds() / 3600
    if backdated:
        en = f"the change is dated more than {hours:g} h ago"
        zh = f"该状态的生效时间早于 {hours:g} 小时之前"
    else:
        listed = ", ".join(str(i) for i in affected[:10])
        en = f"it would supersede or reshape excursion(s) {listed}"
        zh = f"它将撤销或改变超标记录 {listed}"
    raise PermissionDeniedError(
        Reason(
            f"{en}: QA must approve it with an e-signature (--approve-as QA_USER)",
            f"{zh}：须由 QA 以电子签名批准（--approve-as QA_USER）",
        )
    )


def change_room_state(
    session: Session,
    *,
    by: Authenticated,
    room_code: str,
    state: str,
    effective_at: datetime,
    reason: str | None = None,
    approver: Authenticated | None = None,
    site_code: str | None = None,
    close_after: int | None = None,
    policy: StatePolicy | None = None,
    now: datetime | None = None,
) -> StateChangeResult:
    """Record a room state as a person does; re-judges what it covers in the same transaction.

    The change is made and re-evaluated first, then judged: when it touched excursions and no
    QA approver signs, the error rolls the whole unit of work back, so nothing changes.
    """
    now = now or utcnow()
    require_role(
        by, "operator", "production_head", "qa", action=Reason("recording a room state", "记录房间状态")
    )
    room = find_room(session, room_code, site_code=site_code)
    policy = policy or StatePolicy.of(compliance_of(session, session.get(Site, room.site_id)))
    backdated = _check_timing(effective_at, now, reason, policy)
    _needs_qa(backdated, [], approver, policy)
    if approver is not None:
        require_role(approver, "qa", action=Reason("approving a room-state change", "批准房间状态变更"))
        if approver.who == by.who:
            raise PermissionDeniedError(
                Reason(
                    "the approver must be another person than the one recording the change",
                    "批准人须为记录该变更者以外的另一人",
                )
            )
    room_ids = [r.id for r in rooms_within(session, room)]
    before = _excursions_from(session, room_ids, effective_at)
    result = record_room_state(
        session,
        room_code=room_code,
        state=state,
        effective_at=effective_at,
        actor=by.username,
        reason=reason,
        site_code=site_code,
        close_after=close_after,
    )
    affected = _touched(session, before)
    _needs_qa(False, affected, approver, policy)
    change = session.exec(
        select(RoomStateChange).where(RoomStateChange.room_id == room.id).order_by(RoomStateChange.id.desc())
    ).first()
    signature_id = None
    if approver is not None and (backdated or affected):
        change.affected_excursions = json.dumps(affected)
        session.add(change)
        session.flush()
        signature_id = _approve(session, change, approver, backdated=backdated, now=now)
    _mark_superseded(
        session, affected, by=by.username, reason=reason, change=change, signature_id=signature_id
    )
    return StateChangeResult(change.id, result, tuple(affected), signature_id)


def _touched(session: Session, before: dict[int, dict]) -> list[int]:
    """The excursions whose shape or status the re-evaluation changed."""
    touched = []
    for excursion_id, shape in sorted(before.items()):
        row = session.get(Excursion, excursion_id)
        session.refresh(row)
        if excursion_shape(row) != shape:
            touched.append(excursion_id)
    return touched


def room_state_content(session: Session, change: RoomStateChange) -> dict:
    """What QA signs when approving a room-state change: the change and the excursions it touched."""
    room = _room_key(session, change.room_id)
    return {
        "room": room,
        "state": change.state,
        "effective_at": change.effective_at.isoformat(),
        "recorded_at": change.recorded_at.isoformat(),
        "recorded_by": change.recorded_by,
        "reason": change.reason,
        "affected_excursions": json.loads(change.affected_excursions or "[]"),
    }


def _room_key(session: Session, room_id: int) -> str:
    room = session.get(Room, room_id)
    site = session.get(Site, room.site_id)
    return f"{site.code}/{room.code}"


def _approve(
    session: Session, change: RoomStateChange, approver: Authenticated, *, backdated: bool, now: datetime
) -> int:
    why = "recorded past the backdating limit" if backdated else "re-judges existing excursions"
    sig = signatures.sign(
        session,
        signer=approver,
        meaning="approved",
        entity="room",
        entity_key=_room_key(session, change.room_id),
        scope=f"room_state:{change.id}",
        statement=f"QA approves the room-state change {change.state} from {change.effective_at.isoformat()} ({why})",
        content=room_state_content(session, change),
        now=now,
    )
    change.approval_signature_id = sig.id
    session.add(change)
    return sig.id


def _mark_superseded(
    session: Session,
    affected: list[int],
    *,
    by: str,
    reason: str | None,
    change: RoomStateChange,
    signature_id: int | None,
) -> None:
    """Superseded excursions say who caused it, why, and with which approval (never deleted)."""
    why = f"room state {change.state} from {change.effective_at.isoformat()} recorded by {by}"
    if reason:
        why += f": {reason}"
    for excursion_id in affected:
        row = session.get(Excursion, excursion_id)
        if row.status == "superseded":
            row.superseded_by, row.superseded_reason = by, why
            row.superseded_signature_id = signature_id
            session.add(row)
    session.flush()


def room_state_checks(session: Session) -> list[signatures.SignatureCheck]:
    """Every approval of a room-state change checked against the change as it stands."""
    checks = []
    for sig in session.exec(
        select(signatures.Signature)
        .where(signatures.Signature.entity == "room")
        .order_by(signatures.Signature.id)
    ):
        change = session.get(RoomStateChange, int(sig.scope.partition(":")[2]))
        content = room_state_content(session, change) if change else {"missing": sig.scope}
        checks.append(signatures.check(sig, content))
    return checks
