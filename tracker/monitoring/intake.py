"""Store a batch of incoming readings: dedupe, evaluate, insert, advance excursions.

The transport (``tracker.ingest``) hands over already-parsed readings and rejections; this
module decides what is new, judges it against the limits for the room's state at the
reading's event time, and writes everything in the caller's transaction. The caller
commits, then acknowledges the messages to the broker.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, insert, tuple_
from sqlmodel import Session, select

from tracker.core.counters import bump
from tracker.core.db import bulk_insert, time_param
from tracker.core.partitions import PartitionKeeper
from tracker.core.timeutil import utcnow
from tracker.facility.roomstate import RoomStates
from tracker.monitoring.episodes import Judged
from tracker.monitoring.excursions import Excursion
from tracker.monitoring.ingest_state import (
    WriterGuard,
    defer_gap_check,
    due_gap_checks,
    latest_readings,
    take_gap_checks,
)
from tracker.monitoring.quarantine import Rejection, quarantine_many
from tracker.monitoring.readings import MonitorStatusEvent, RawMessage, Reading
from tracker.monitoring.rollups import Acc, add_to_rollups, hour_of
from tracker.monitoring.rules.base import Rule, StoredBatch
from tracker.monitoring.rules.ruleset import build_rules
from tracker.monitoring.rules.trends import TrendRule
from tracker.monitoring.rules.volume import Sample, store_changes
from tracker.monitoring.snapshot import (
    ChannelJudgement,
    Registry,
    build_registry,
    registry_marker,
)
from tracker.monitoring.trending.rule import ForecastRule

SEQ_CONFLICT = "seq_conflict"
#: a data gap found while another worker writes the monitor is checked again this much later,
#: when that worker's share received at the same time has been committed (docs/scale-out.md)
GAP_SETTLE = timedelta(seconds=15)
RAW_COLUMNS = ("monitor_id", "seq", "received_at", "topic", "payload", "digest")
READING_COLUMNS = (
    "monitor_id",
    "seq",
    "channel",
    "event_time",
    "value",
    "status",
    "level",
    "direction",
    "state",
    "basis_id",
    "invalid_reason",
    "sample_volume_l",
)


@dataclass(frozen=True, slots=True)
class IncomingReading:
    monitor_id: int
    seq: int
    event_time: datetime
    status: str
    values: Mapping[str, float]
    digest: str
    topic: str
    payload: bytes
    received_at: datetime
    redelivered: bool = False
    #: particles: the sampled volume in litres
    volume_l: float | None = None


@dataclass(frozen=True, slots=True)
class IncomingStatus:
    monitor_id: int
    online: bool
    received_at: datetime


@dataclass
class BatchOutcome:
    stored: int = 0
    duplicates: int = 0
    quarantined: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)


class Intake:
    """Long-lived ingest state: facility snapshot, room timelines, excursion machines.

    Several workers may share a database (scale-out on a shared subscription): each batch
    claims its monitors first (``tracker.monitoring.ingest_state``), and a monitor another worker has
    written since is forgotten here and rebuilt from the database, like late data.
    """

    def __init__(
        self,
        *,
        close_after: int | None = None,
        gap_factor: float | None = None,
        trend: TrendRule | None = None,
        forecast: ForecastRule | None = None,
        writer: str | None = None,
    ) -> None:
        self.guard = WriterGuard(writer)
        self.registry: Registry | None = None
        self.room_states = RoomStates()
        rules = build_rules(
            close_after=close_after,
            gap_factor=gap_factor,
            trend=trend or TrendRule(),
            forecast=forecast or ForecastRule(),
        )
        #: every rule (``tracker.monitoring.rules.base.Rule``): forgotten, run after each batch
        #: and refreshed through this tuple only
        self.rules: tuple[Rule, ...] = rules.all
        #: the rules also called directly: episodes (the bench), gaps (silence checks),
        #: rolling windows (while judging)
        self.book, self.gaps, self.volume = rules.episodes, rules.gaps, rules.volume
        #: highest stored seq per monitor (dedupe fast path); cleared with ``forget``
        self.highest_seq: dict[int, int] = {}
        #: months that have a partition of ``reading`` (PostgreSQL; a no-op on SQLite)
        self.partitions = PartitionKeeper()

    def refresh(self, session: Session) -> Registry:
        """Reload the facility snapshot if a facility file was loaded since; room states too."""
        if self.registry is None or self.registry.marker != registry_marker(session):
            self.registry = build_registry(session)
            self.room_states = RoomStates()  # a new facility revision may change what contains what
            self._forget_on_refresh()
        if self.room_states.refresh(session):
            # a state change (possibly backdated, with re-evaluated episodes): rebuild the
            # rules' state from the database rather than trust the in-memory one
            self._forget_on_refresh()
        return self.registry

    def _forget_on_refresh(self) -> None:
        """A new snapshot or timeline: forget the rules whose state it may invalidate (each
        rule's ``survives_refresh`` says why it may keep its own)."""
        for rule in self.rules:
            if not rule.survives_refresh:
                rule.forget()

    def check_silence(self, session: Session, *, now: datetime | None = None) -> int:
        """Open wall-clock gaps for live monitors that have gone quiet.

        Judged from every worker's newest readings (``ingest_state``), not from this
        worker's share of the traffic; a monitor about to get a gap is claimed first and
        judged again under the lock, so two workers never both open it.
        """
        registry = self.refresh(session)
        now = now or utcnow()
        quiet = {
            m
            for m, (event_time, received_at) in latest_readings(session).items()
            if m in registry.by_id and self.gaps.silent(registry.by_id[m], event_time, received_at, now)
        }
        if quiet:
            quiet -= set(
                session.exec(
                    select(Excursion.monitor_id).where(
                        Excursion.type == "data_gap", Excursion.status == "open"
                    )
                ).all()
            )
        if not quiet:
            return 0
        self._forget_monitors(self.guard.claim(session, quiet))
        return self.gaps.check_silence(
            session, registry, self.room_states, now, latest=latest_readings(session, quiet)
        )

    def recheck_gaps(self, session: Session, *, now: datetime | None = None) -> int:
        """Re-derive the stretches whose gaps were deferred (``GAP_SETTLE``) by any worker,
        once due; returns how many. Its own transaction, apart from the silence check, so one
        that fails cannot hold up the wall-clock rule."""
        registry = self.refresh(session)
        now = now or utcnow()
        due = due_gap_checks(session, now)
        if not due:
            return 0
        self._forget_monitors(self.guard.claim(session, due))
        stretches = take_gap_checks(session, due, now)
        for monitor_id, (first, last) in stretches.items():
            if monitor_id in registry.by_id:
                self.gaps.recheck(session, registry.by_id[monitor_id], self.room_states, first, last, now)
        return len(stretches)

    def forget(self) -> None:
        """After a rolled-back batch: in-memory state may be ahead of the database (episode
        machines, evaluation-basis rows created in the rolled-back transaction)."""
        for rule in self.rules:
            rule.forget()
        self.highest_seq.clear()
        self.guard.forget()
        self.partitions.forget()
        self.registry = None

    def _forget_monitors(self, monitor_ids: set[int]) -> None:
        """Another worker wrote these monitors since this one did: rebuild from the database."""
        if not monitor_ids:
            return  # the common case: nothing to scan
        for rule in self.rules:
            rule.forget(monitor_ids)
        for monitor_id in monitor_ids:
            self.highest_seq.pop(monitor_id, None)

    def _stored_digests(
        self, session: Session, fresh: dict[tuple[int, int], IncomingReading]
    ) -> dict[tuple[int, int], str]:
        """Digests of the batch's (monitor, seq) keys that are already stored.

        Each monitor's highest stored seq is kept in memory (one indexed lookup the first
        time); only keys at or below it (backfill, redelivery, duplicates: the rare case)
        are looked up one by one. The primary key stays the final guard.
        """
        for monitor_id in {m for m, _ in fresh} - self.highest_seq.keys():
            highest = session.exec(
                select(func.max(RawMessage.seq)).where(RawMessage.monitor_id == monitor_id)
            ).one()
            self.highest_seq[monitor_id] = -1 if highest is None else highest  # seq 0 is valid
        candidates = [k for k in fresh if k[1] <= self.highest_seq[k[0]]]
        found: dict[tuple[int, int], str] = {}
        for chunk in range(0, len(candidates), 400):
            keys = candidates[chunk : chunk + 400]
            found.update(
                ((m, s), d)
                for m, s, d in session.exec(
                    select(RawMessage.monitor_id, RawMessage.seq, RawMessage.digest).where(
                        tuple_(RawMessage.monitor_id, RawMessage.seq).in_(keys)
                    )
                )
            )
        return found

    def store(
        self,
        session: Session,
        readings: list[IncomingReading],
        rejections: list[Rejection],
        statuses: list[IncomingStatus] = (),
        *,
        now: datetime | None = None,
    ) -> BatchOutcome:
        """Dedupe, judge, insert and run the rules for one batch, in the caller's transaction."""
        registry = self.registry or self.refresh(session)
        now = now or utcnow()
        # a month's first reading: its partition, committed apart before this batch runs
        bind = session.get_bind()
        self.partitions.cover(getattr(bind, "engine", bind), (r.event_time for r in readings))
        # before reading any state: lock the batch's monitors, forget what others changed
        self._forget_monitors(
            self.guard.claim(session, {r.monitor_id for r in readings} | {s.monitor_id for s in statuses})
        )
        for monitor_id, seq in self.guard.max_seq.items():  # what the others stored
            if seq is not None and monitor_id not in self.highest_seq:
                self.highest_seq[monitor_id] = seq
        outcome = BatchOutcome()
        rejections = list(rejections)
        fresh = self._dedupe(session, registry, readings, outcome, rejections)
        connection = session.connection()
        batch = self._judge(session, registry, fresh, time_param(connection.dialect.name))
        bulk_insert(connection, RawMessage.__table__, RAW_COLUMNS, batch.raw_rows)
        bulk_insert(connection, Reading.__table__, READING_COLUMNS, batch.reading_rows)
        self._roll_up(session, batch)
        if batch.rejudged:
            store_changes(
                session, {c["m"]: registry.by_id[c["m"]].kind for c in batch.rejudged}, batch.rejudged
            )
        if statuses:
            connection.execute(
                insert(MonitorStatusEvent.__table__),
                [
                    {"monitor_id": s.monitor_id, "online": s.online, "received_at": s.received_at}
                    for s in statuses
                ],
            )
        self._apply_rules(session, registry, batch, statuses, now)
        for monitor_id, seq in fresh:
            if seq > self.highest_seq.get(monitor_id, -1):
                self.highest_seq[monitor_id] = seq
        self.guard.record_latest(
            session,
            {m: max(stamps) for m, stamps in batch.covered.items()},
            {
                m: self.highest_seq[m]
                for m in batch.stamps
                if self.highest_seq[m] != self.guard.max_seq.get(m)
            },
        )
        outcome.stored = len(batch.raw_rows)
        outcome.quarantined = quarantine_many(session, rejections)
        for rej in rejections:
            outcome.by_reason[rej.reason] = outcome.by_reason.get(rej.reason, 0) + 1
        bump(session, "duplicates", outcome.duplicates)
        return outcome

    def _dedupe(
        self,
        session: Session,
        registry: Registry,
        readings: list[IncomingReading],
        outcome: BatchOutcome,
        rejections: list[Rejection],
    ) -> dict[tuple[int, int], IncomingReading]:
        """New readings by (monitor, seq); repeats are counted, reused seqs quarantined."""
        fresh: dict[tuple[int, int], IncomingReading] = {}
        for r in readings:
            seen = fresh.get((r.monitor_id, r.seq))
            if seen is None:
                fresh[(r.monitor_id, r.seq)] = r
            elif seen.digest == r.digest:
                outcome.duplicates += 1
            else:
                rejections.append(_conflict(r, registry, "earlier in the same batch"))
        for key, digest in self._stored_digests(session, fresh).items():
            r = fresh.pop(key)
            if digest == r.digest:
                outcome.duplicates += 1
            else:
                rejections.append(_conflict(r, registry, "already stored"))
        return fresh

    def _judge(
        self,
        session: Session,
        registry: Registry,
        fresh: dict[tuple[int, int], IncomingReading],
        db_time: Callable[[datetime], Any],
    ) -> JudgedBatch:
        """Verdict of every channel value for its room's state at its time, as insert rows.

        Particle samples too small to resolve their action limit get their final verdict
        from the rolling-volume windows (``tracker.monitoring.rules.volume``) before the rows are built.
        """
        batch = JudgedBatch()
        # what the rows need once the rolling windows have settled, kept in the order of
        # ``fresh`` and of each reading's values, which the second pass walks again (flat
        # lists: no per-value record beyond the judgement itself)
        states: list[str] = []
        judgements: list[ChannelJudgement] = []
        rolling: dict[tuple[int, str], list[Sample]] = {}
        for r in fresh.values():
            entry = registry.by_id[r.monitor_id]
            state = (
                self.room_states.judging_state(entry.room_id, r.event_time, entry.recovery_s)
                if entry.recovery_s
                else self.room_states.state(entry.room_id, r.event_time)
            )
            states.append(state)
            batch.raw_rows.append((r.monitor_id, r.seq, db_time(r.received_at), r.topic, r.payload, r.digest))
            batch.stamps.setdefault(r.monitor_id, []).append((r.event_time, r.received_at))
            if r.values.get("5.0", 0) > 0:
                batch.counted.add(r.monitor_id)
            if r.seq < self.highest_seq.get(r.monitor_id, -1):
                batch.late.add(r.monitor_id)
            valid = False
            for channel, value in r.values.items():
                judged = entry.judge(
                    channel,
                    value,
                    status=r.status,
                    at=r.event_time,
                    seq=r.seq,
                    state=state,
                    volume_l=r.volume_l,
                )
                judgements.append(judged)
                valid = valid or judged.invalid is None
                if judged.sample is not None:
                    rolling.setdefault((r.monitor_id, channel), []).append(judged.sample)
            if valid:
                batch.covered.setdefault(r.monitor_id, []).append((r.event_time, r.received_at))
        for (monitor_id, channel), samples in rolling.items():
            batch.rejudged += self.volume.settle(session, registry.by_id[monitor_id], channel, samples)
        judged_values = iter(judgements)
        for r, state in zip(fresh.values(), states, strict=True):
            entry = registry.by_id[r.monitor_id]
            event_time, hour = db_time(r.event_time), hour_of(r.event_time)
            for channel, value in r.values.items():
                judged = next(judged_values)
                verdict = judged.final
                batch.reading_rows.append(
                    (
                        r.monitor_id,
                        r.seq,
                        channel,
                        event_time,
                        value,
                        r.status,
                        verdict.level.value,
                        verdict.direction,
                        state,
                        entry.basis_id,
                        judged.invalid,
                        r.volume_l,
                    )
                )
                acc = batch.hourly.get((r.monitor_id, channel, hour, state))
                if acc is None:
                    acc = batch.hourly[(r.monitor_id, channel, hour, state)] = Acc()
                acc.add(entry.kind, value, verdict.level.value)
                batch.series.setdefault((r.monitor_id, channel), []).append(
                    Judged(
                        at=r.event_time,
                        value=value,
                        level=verdict.level,
                        direction=verdict.direction,
                        bounds=judged.bounds,
                        state=state,
                    )
                )
        return batch

    def _roll_up(self, session: Session, batch: JudgedBatch) -> None:
        """Hourly rollups of the batch (a separate step so the bench can price it)."""
        add_to_rollups(session, batch.hourly)

    def _apply_rules(
        self,
        session: Session,
        registry: Registry,
        batch: JudgedBatch,
        statuses: list[IncomingStatus],
        now: datetime,
    ) -> None:
        """Every rule, in its order (``Rules.all``), on the batch just stored."""
        stored = StoredBatch(
            registry=registry,
            rooms=self.room_states,
            now=now,
            series=batch.series,
            stamps=batch.stamps,
            covered=batch.covered,
            counted=batch.counted,
            late=batch.late,
            rejudged={(c["m"], c["c"]) for c in batch.rejudged},
            offline=[(st.monitor_id, st.received_at) for st in statuses if not st.online],
            newest=self.guard.newest,
            shared=self.guard.shared,
            defer=lambda m, first, last: defer_gap_check(session, m, first, last, now + GAP_SETTLE),
        )
        for rule in self.rules:
            rule.after_batch(session, stored)


@dataclass
class JudgedBatch:
    """A batch's new readings, judged and ready to insert, grouped for the rules."""

    raw_rows: list[tuple] = field(default_factory=list)
    reading_rows: list[tuple] = field(default_factory=list)
    series: dict[tuple[int, str], list[Judged]] = field(default_factory=dict)
    stamps: dict[int, list[tuple[datetime, datetime]]] = field(default_factory=dict)
    #: stamps of the readings with at least one valid channel (monitoring coverage)
    covered: dict[int, list[tuple[datetime, datetime]]] = field(default_factory=dict)
    counted: set[int] = field(default_factory=set)  # a ≥5.0 µm count in this batch
    late: set[int] = field(default_factory=set)  # a sample older than one already stored
    #: stored samples whose rolling-volume verdict this batch's late samples changed
    rejudged: list[dict] = field(default_factory=list)
    hourly: dict[tuple[int, str, datetime, str], Acc] = field(default_factory=dict)


def _conflict(r: IncomingReading, registry: Registry, where: str) -> Rejection:
    code = registry.by_id[r.monitor_id].code
    return Rejection(
        received_at=r.received_at,
        topic=r.topic,
        payload=r.payload,
        reason=SEQ_CONFLICT,
        monitor_code=code,
        redelivered=r.redelivered,
        detail=f"monitor {code} seq {r.seq} {where} with different content (counter reset or gateway fault?)",
    )
