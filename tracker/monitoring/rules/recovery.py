"""Recovery / clean-up (``type=recovery``): a room must meet its at-rest limits after a short
clean-up once an operation ends.

China GMP 2010 Annex 1 第十条(七) 🧠 (at-rest limits met 15–20 min after operations end and
staff leave) and EU GMP Annex 1 (2022) Table 5 note (at-rest limits reached after a short
unmanned clean-up, guidance < 20 min); regulatory.md §5.1–5.3. For particle monitors:

* readings inside the **recovery window** (``[rules] recovery_min``, default 20 min) after the
  room leaves ``in_operation`` are judged by the in-operation limits (``RoomStates.judging_state``,
  stored with ``state = in_operation``);
* the **first at-rest judgement** after the window (the first valid sample, all its channels)
  decides: in limit, the room has recovered; alert or action on any channel, a recovery
  excursion opens at that sample;
* it **closes** at the next at-rest sample with every channel in limit (the room has shown it
  cleaned up), or when the room goes back into operation without having recovered;
  ``readings`` = failing samples, ``level`` = the highest reached, ``peak`` = the highest value
  of the channel that first reached it.

Judged from the stored verdicts of the operation's recovery segment, so late data, batch
boundaries and re-evaluation give the same result; stored excursions are reconciled
(updated in place, inserted, superseded with an audit event, never deleted).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, ClassVar

from sqlalchemy import select, tuple_
from sqlmodel import Session
from sqlmodel import select as sm_select

from tracker.core import audit
from tracker.facility.limits import LEVEL_RANK, Level
from tracker.facility.roomstate import RoomStates
from tracker.monitoring.excursions import SYSTEM_ACTOR, Excursion, excursion_shape, supersede_excursion
from tracker.monitoring.readings import Reading
from tracker.monitoring.snapshot import MonitorEntry

if TYPE_CHECKING:
    from tracker.monitoring.rules.base import Reevaluation, StoredBatch

RESHAPE_REASON = (
    "re-derived from the stored at-rest judgements after the operation "
    "(late readings, re-evaluation or a changed room state timeline)"
)
VALID = (Level.OK.value, Level.ALERT.value, Level.ACTION.value)


@dataclass(frozen=True, slots=True)
class Judgement:
    """One at-rest sample after the window: ``(channel, level, value, limit)`` per channel."""

    at: datetime
    channels: tuple[tuple[str, Level, float, float | None], ...]

    def worst(self) -> tuple[str, Level, float, float | None]:
        return max(self.channels, key=lambda c: LEVEL_RANK[c[1]])

    @property
    def in_limit(self) -> bool:
        return all(level is Level.OK for _, level, _, _ in self.channels)


@dataclass(frozen=True, slots=True)
class Failure:
    started_at: datetime
    ended_at: datetime | None
    last_out_at: datetime
    level: Level
    channel: str
    peak: float
    limit: float | None
    judgements: int


def recovery_failure(
    judgements: Sequence[Judgement], next_operation: datetime | None
) -> tuple[Failure | None, datetime | None]:
    """Pure: the failure of one recovery, if any, and the time of the sample that settled it
    (``None`` while later samples can still change the outcome)."""
    if not judgements:
        return None, None
    if judgements[0].in_limit:
        return None, judgements[0].at
    channel, level, peak, limit = judgements[0].worst()
    count, last_out = 0, judgements[0].at
    for j in judgements:
        if j.in_limit:
            return Failure(judgements[0].at, j.at, last_out, level, channel, peak, limit, count), j.at
        count, last_out = count + 1, j.at
        ch, lv, value, lim = j.worst()
        if LEVEL_RANK[lv] > LEVEL_RANK[level]:
            channel, level, limit = ch, lv, lim
            peak = max([value] + [v for c, _, v, _ in j.channels if c == channel])
        peak = max([peak] + [v for c, _, v, _ in j.channels if c == channel])
    return Failure(judgements[0].at, next_operation, last_out, level, channel, peak, limit, count), None


def group_judgements(rows: Iterable[tuple]) -> list[Judgement]:
    """Rows ``(event_time, seq, channel, level, value, limit)`` in time order → samples."""
    out: list[Judgement] = []
    key, channels = None, []
    for at, seq, channel, level, value, limit in rows:
        if (at, seq) != key:
            if channels:
                out.append(Judgement(key[0], tuple(channels)))
            key, channels = (at, seq), []
        channels.append((channel, Level(level), value, limit))
    if channels:
        out.append(Judgement(key[0], tuple(channels)))
    return out


class RecoveryRule:
    """Recovery excursions of particle monitors, re-derived around new at-rest samples (a
    ``Rule``, ``tracker.monitoring.rules.base``)."""

    #: no: ``settled`` is keyed by the end of an operation and decided by stored verdicts,
    #: which a new timeline or recovery window (``[rules] recovery_min``) moves or re-judges
    survives_refresh: ClassVar[bool] = False

    def __init__(self) -> None:
        #: (monitor, end of operation) → time of the sample that settled its recovery:
        #: samples after it cannot change the outcome, so they cost no query
        self.settled: dict[tuple[int, datetime], datetime] = {}

    def forget(self, monitor_ids: Collection[int] | None = None) -> None:
        if monitor_ids is None:
            self.settled.clear()
            return
        for key in [k for k in self.settled if k[0] in monitor_ids]:
            del self.settled[key]

    def after_batch(self, session: Session, batch: StoredBatch) -> None:
        """The recoveries the batch's samples may decide, for monitors with a recovery window."""
        for monitor_id, times in batch.stamps.items():
            entry = batch.registry.by_id[monitor_id]
            if entry.recovery_s:
                self.after_readings(session, entry, batch.rooms, (t for t, _ in times), batch.now)

    def after_reevaluation(self, session: Session, change: Reevaluation) -> None:
        """Every recovery of the re-judged rooms' monitors overlapping the period."""
        for monitor_id in change.monitor_ids:
            self.rederive_range(
                session, change.registry.by_id[monitor_id], change.rooms, change.start, change.end, change.now
            )

    def after_readings(
        self,
        session: Session,
        entry: MonitorEntry,
        rooms: RoomStates,
        times: Iterable[datetime],
        now: datetime,
    ) -> None:
        """Re-derive the recoveries whose outcome new samples at ``times`` may change."""
        timeline = rooms.timeline(entry.room_id)
        if timeline is None or not entry.recovery_s:
            return
        segments: set[tuple[datetime, datetime | None]] = set()
        for t in times:
            left = timeline.left_operation(t)
            if left is None or (t - left[0]).total_seconds() < entry.recovery_s:
                continue
            settled = self.settled.get((entry.id, left[0]))
            if settled is None or t <= settled:
                segments.add(left)
        for end, nxt in sorted(segments, key=lambda s: s[0]):
            self.rederive(session, entry, rooms, end, nxt, now)

    def rederive_range(
        self,
        session: Session,
        entry: MonitorEntry,
        rooms: RoomStates,
        start: datetime,
        end: datetime | None,
        now: datetime,
    ) -> None:
        """After re-evaluation or a timeline change: every recovery overlapping
        ``[start, end)``; stored ones no operation explains any more are superseded."""
        if entry.kind != "particles":
            return
        timeline = rooms.timeline(entry.room_id)
        kept: list[tuple[datetime, datetime | None]] = []
        if timeline is not None and entry.recovery_s:
            for op_end in timeline.operation_ends():
                left = timeline.left_operation(op_end)
                assert left is not None
                if (left[1] is None or left[1] > start) and (end is None or op_end < end):
                    self.rederive(session, entry, rooms, *left, now)
                kept.append(left)
        query = sm_select(Excursion).where(
            Excursion.monitor_id == entry.id,
            Excursion.type == "recovery",
            Excursion.status != "superseded",
            Excursion.started_at >= start,
        )
        if end is not None:
            query = query.where(Excursion.started_at < end)
        window = timedelta(seconds=entry.recovery_s)
        for row in session.exec(query).all():
            if not any(
                op_end + window <= row.started_at and (nxt is None or row.started_at < nxt)
                for op_end, nxt in kept
            ):
                _supersede(session, row, now)

    def rederive(
        self,
        session: Session,
        entry: MonitorEntry,
        rooms: RoomStates,
        op_end: datetime,
        next_op: datetime | None,
        now: datetime,
    ) -> None:
        """The recovery after the operation that ended at ``op_end``, reconciled."""
        start = op_end + timedelta(seconds=entry.recovery_s)
        failure, settled_at = self._judge(session, entry, start, next_op)
        if settled_at is not None:
            self.settled[(entry.id, op_end)] = settled_at
        query = sm_select(Excursion).where(
            Excursion.monitor_id == entry.id,
            Excursion.type == "recovery",
            Excursion.status != "superseded",
            Excursion.started_at >= start,
        )
        if next_op is not None:
            query = query.where(Excursion.started_at < next_op)
        stored = list(session.exec(query.order_by(Excursion.started_at, Excursion.id)))
        if failure is not None:
            row = stored.pop(0) if stored else None
            _save(session, entry, rooms, row, failure, op_end, now)
        for row in stored:
            _supersede(session, row, now)

    @staticmethod
    def _judge(
        session: Session, entry: MonitorEntry, start: datetime, next_op: datetime | None, page: int = 240
    ) -> tuple[Failure | None, datetime | None]:
        table = Reading.__table__
        cols = (table.c.event_time, table.c.seq, table.c.channel, table.c.level, table.c.value)
        base = [table.c.monitor_id == entry.id, table.c.state == "at_rest", table.c.level.in_(VALID)]
        if next_op is not None:
            base.append(table.c.event_time < next_op)
        connection = session.connection()
        rows: list[tuple] = []
        cursor = None
        while True:
            where = (
                table.c.event_time >= start
                if cursor is None
                else tuple_(table.c.event_time, table.c.seq, table.c.channel) > cursor
            )
            chunk = connection.execute(
                select(*cols)
                .where(*base, where)
                .order_by(table.c.event_time, table.c.seq, table.c.channel)
                .limit(page)
            ).all()
            for at, seq, channel, level, value in chunk:
                bounds = entry.limits.for_reading(channel, "at_rest")
                rows.append((at, seq, channel, level, value, _bound(bounds, Level(level))))
            exhausted = len(chunk) < page
            judgements = group_judgements(rows)
            if not exhausted and judgements:
                judgements = judgements[:-1]  # the last sample may continue in the next page
            failure, settled_at = recovery_failure(judgements, next_op)
            if settled_at is not None or exhausted:
                return failure, settled_at
            cursor = tuple(chunk[-1][:3])


def _bound(bounds, level: Level) -> float | None:
    if bounds is None:
        return None
    return bounds.action_high if level is Level.ACTION else bounds.alert_high


def _save(
    session: Session,
    entry: MonitorEntry,
    rooms: RoomStates,
    row: Excursion | None,
    failure: Failure,
    op_end: datetime,
    now: datetime,
) -> Excursion:
    """Insert or update the recovery excursion; an unchanged one is not touched."""
    values = {
        "channel": failure.channel,
        "level": failure.level.value,
        "state": "at_rest",
        "started_at": failure.started_at,
        "ended_at": failure.ended_at,
        "closed_by_at": failure.ended_at,
        "last_out_at": failure.last_out_at,
        "peak": failure.peak,
        "limit_value": failure.limit,
        "readings": failure.judgements,
        "status": "open" if failure.ended_at is None else "closed",
        "note": (
            f"at-rest limits not met {entry.recovery_s / 60:g} min after the "
            f"operation ended at {op_end.isoformat()}"
        ),
    }
    if row is not None and all(getattr(row, k) == v for k, v in values.items()):
        return row
    before = excursion_shape(row) if row is not None else None
    if row is None:
        row = Excursion(
            type="recovery",
            site_id=entry.site_id,
            monitor_id=entry.id,
            room_id=entry.room_id,
            kind="particles",
            direction="high",
            basis_id=entry.basis_id,
            created_at=now,
            **values,
        )
    for key, value in values.items():
        setattr(row, key, value)
    row.updated_at = now
    session.add(row)
    session.flush()
    if (
        before is not None
        and before["ended_at"] is not None
        and (before["started_at"], before["ended_at"], before["level"])
        != (row.started_at, row.ended_at, row.level)
    ):
        audit.record(
            session,
            actor=SYSTEM_ACTOR,
            action="excursion.reshape",
            entity="excursion",
            entity_key=str(row.id),
            before=before,
            after=excursion_shape(row),
            at=now,
            reason=RESHAPE_REASON,
        )
    return row


def _supersede(session: Session, row: Excursion, now: datetime) -> None:
    supersede_excursion(session, row, now, RESHAPE_REASON)
