"""Re-evaluation: judge stored readings again after a retroactive change.

When a room's state timeline changes for a time already measured (an operation recorded
late, a wrong state corrected) or a limit changes, the stored verdicts of that window are
recomputed with today's registry and timeline, and the episodes of the affected series are
rebuilt from the database. Idempotent: a second run finds nothing to change. Every run is
audited with what it changed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlmodel import Session, select

from tracker.core import audit
from tracker.core.timeutil import utcnow
from tracker.facility.limits import STATES
from tracker.facility.models import Monitor, Room, find_room
from tracker.facility.roomstate import RoomStates, set_room_state
from tracker.monitoring.readings import Reading, overwrite_verdicts
from tracker.monitoring.rollups import rebuild_rollups
from tracker.monitoring.rules.base import Reevaluation
from tracker.monitoring.rules.ruleset import build_rules
from tracker.monitoring.rules.volume import Sample, single_count_exceeds, store_changes
from tracker.monitoring.snapshot import ChannelJudgement, MonitorEntry, build_registry


@dataclass(frozen=True)
class ReevaluationResult:
    room: str
    readings_checked: int
    readings_changed: int
    series_rebuilt: int


def rooms_within(session: Session, room: Room) -> list[Room]:
    """The room and every zone inside it (its containment subtree)."""
    rooms = session.exec(select(Room).where(Room.site_id == room.site_id)).all()
    found, frontier = [room], [room.id]
    while frontier:
        children = [r for r in rooms if r.background_id in frontier]
        found += children
        frontier = [r.id for r in children]
    return found


def reevaluate(
    session: Session,
    *,
    room_code: str,
    start: datetime,
    end: datetime | None = None,
    actor: str,
    close_after: int | None = None,
    site_code: str | None = None,
    reason: str | None = None,
) -> ReevaluationResult:
    """Recompute verdicts of ``room_code`` (and its zones) in ``[start, end)`` and rebuild
    the episodes of every series that changed; rolling-volume verdicts after the window and
    the recoveries of the rooms' operations are re-derived too."""
    room = find_room(session, room_code, site_code=site_code)
    registry = build_registry(session)
    states = RoomStates()
    states.refresh(session)
    monitor_ids = [
        m.id
        for m in session.exec(
            select(Monitor).where(
                Monitor.room_id.in_([r.id for r in rooms_within(session, room)]), Monitor.active
            )
        )
    ]
    query = select(Reading).where(Reading.monitor_id.in_(monitor_ids), Reading.event_time >= start)
    if end is not None:
        query = query.where(Reading.event_time < end)
    changes: list[dict] = []
    first_change: dict[tuple[int, str], datetime] = {}
    max_changed: datetime | None = None
    checked = 0
    judged: list[tuple[Reading, MonitorEntry, str, ChannelJudgement]] = []
    rolling: dict[tuple[int, str], list[Sample]] = {}
    volumes: dict[tuple[int, str], set[float]] = {}
    for r in session.exec(query):
        checked += 1
        entry = registry.by_id[r.monitor_id]
        state = states.judging_state(entry.room_id, r.event_time, entry.recovery_s)
        volume_l = (r.sample_volume_l or entry.sample_volume_l) if entry.kind == "particles" else None
        judgement = entry.judge(
            r.channel, r.value, status=r.status, at=r.event_time, seq=r.seq, state=state, volume_l=volume_l
        )
        if volume_l:
            volumes.setdefault((r.monitor_id, r.channel), set()).add(volume_l)
        if judgement.sample is not None:
            rolling.setdefault((r.monitor_id, r.channel), []).append(judgement.sample)
        judged.append((r, entry, state, judgement))
    # the rolling-volume verdicts, and those of later stored samples whose window holds a
    # sample of this window (tracker.monitoring.rules.volume)
    later: list[dict] = []
    # fresh rules: their in-memory state is no help here, where every series is replayed;
    # no trend rule, as ever (see TrendRule.after_reevaluation)
    rules = build_rules(close_after=close_after)
    windows = rules.volume
    for (monitor_id, channel), seen in volumes.items():
        entry = registry.by_id[monitor_id]
        limits = {
            b.action_high
            for st in STATES
            if (b := entry.limits.for_reading(channel, st)) is not None
            and any(single_count_exceeds(b, v) for v in seen)
        }
        if not limits:
            continue
        samples = sorted(rolling.get((monitor_id, channel), []), key=lambda x: (x.at, x.seq))
        stop = end or datetime.max.replace(tzinfo=UTC)
        found, _, _ = windows.replay(
            session, entry, channel, samples, since=start, boundary=(stop, -1), limits=limits, skip_until=stop
        )
        later += found
    for r, entry, state, judgement in judged:
        verdict, invalid = judgement.final, judgement.invalid
        if (r.level, r.direction, r.state, r.basis_id, r.invalid_reason) == (
            verdict.level.value,
            verdict.direction,
            state,
            entry.basis_id,
            invalid,
        ):
            continue
        changes.append(
            {
                "m": r.monitor_id,
                "s": r.seq,
                "c": r.channel,
                "t": r.event_time,
                "level": verdict.level.value,
                "direction": verdict.direction,
                "state": state,
                "basis": entry.basis_id,
                "invalid": invalid,
            }
        )
        key = (r.monitor_id, r.channel)
        first_change[key] = min(first_change.get(key, r.event_time), r.event_time)
        max_changed = r.event_time if max_changed is None else max(max_changed, r.event_time)
    overwrite_verdicts(session, changes, cause=f"re-evaluation: {reason or 'requested'}", now=utcnow())
    if changes:
        changed_ids = sorted({c["m"] for c in changes})
        rebuild_rollups(
            session,
            {i: registry.by_id[i].kind for i in changed_ids},
            changed_ids,
            min(first_change.values()),
            max_changed,
        )
    if later:
        store_changes(session, {c["m"]: registry.by_id[c["m"]].kind for c in later}, later)
        for c in later:
            key = (c["m"], c["c"])
            first_change[key] = min(first_change.get(key, c["at"]), c["at"])
    now = utcnow()
    change = Reevaluation(
        registry=registry,
        rooms=states,
        now=now,
        monitor_ids=monitor_ids,
        start=start,
        end=end,
        first_change=first_change,
        last_change=max_changed,
    )
    for rule in rules.all:
        rule.after_reevaluation(session, change)
    audit.record(
        session,
        actor=actor,
        action="readings.reevaluate",
        entity="room",
        entity_key=room.code,
        after={
            "from": start.isoformat(),
            "to": end.isoformat() if end else None,
            "checked": checked,
            "changed": len(changes),
            "series": len(first_change),
        },
        reason=reason,
        at=now,
    )
    return ReevaluationResult(room.code, checked, len(changes), len(first_change))


def record_room_state(
    session: Session,
    *,
    room_code: str,
    state: str,
    effective_at: datetime,
    actor: str,
    reason: str | None = None,
    site_code: str | None = None,
    close_after: int | None = None,
) -> ReevaluationResult:
    """Record a state change and, in the same transaction, re-judge what was already measured
    after it (a backdated change must not leave readings judged by the wrong state)."""
    set_room_state(
        session,
        room_code=room_code,
        state=state,
        effective_at=effective_at,
        actor=actor,
        reason=reason,
        site_code=site_code,
    )
    session.flush()
    return reevaluate(
        session,
        room_code=room_code,
        start=effective_at,
        actor=actor,
        close_after=close_after,
        site_code=site_code,
        reason=f"room state {state} from {effective_at.isoformat()}",
    )
