"""Data gaps (``type=data_gap``): silence from a monitor is an excursion.

Grade A must be monitored continuously through processing (China Annex 1 第十条 🧠 / EU
Annex 1 §9), so a monitor silent for longer than ``gap_factor`` × its interval (default 3)
opens a gap. Gaps are found three ways:

* **by event time**, from the stored readings: two consecutive readings further apart than
  the threshold bound a gap — this is how replayed and backfilled data are judged, and a
  backfill that fills part of a gap shrinks it to what is really missing;
* **by wall clock**, for live monitors only (readings received close to their event time):
  no reading received for longer than the threshold opens a gap that is still open;
* **at once**, when the monitor's retained status / MQTT last will says ``offline``.

Only readings with a valid channel count as monitoring: a counter that reports ``fault``, is
past its calibration date or inhibited proves nothing, so a grade A counter in fault for an
hour during operation is a data gap like one that said nothing (issue 14 item 5).

An open gap is closed by the next reading. Stored gaps are reconciled like limit episodes:
updated in place, inserted, or superseded (audited) — never deleted.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import pairwise
from typing import TYPE_CHECKING, ClassVar

from sqlalchemy import exists
from sqlalchemy import select as core_select
from sqlmodel import Session, select

from tracker.core import audit
from tracker.facility.roomstate import RoomStates
from tracker.monitoring.excursions import SYSTEM_ACTOR, Excursion
from tracker.monitoring.readings import Reading
from tracker.monitoring.snapshot import MonitorEntry, Registry

if TYPE_CHECKING:
    from tracker.monitoring.rules.base import Reevaluation, StoredBatch

GAP_REASON = "readings received later (backfill) fill this period"


@dataclass(frozen=True, slots=True)
class Gap:
    start: datetime
    end: datetime | None  # None while the silence lasts


def find_gaps(times: Sequence[datetime], threshold: timedelta) -> list[Gap]:
    """Gaps between consecutive (sorted) reading times further apart than ``threshold``."""
    return [Gap(a, b) for a, b in pairwise(times) if b - a > threshold]


def _preceded(session: Session, firsts: Mapping[int, datetime]) -> set[int]:
    """The monitors with a stored reading before the given time, in one round trip (one
    indexed ``EXISTS`` per monitor)."""
    if not firsts:
        return set()
    ids = sorted(firsts)
    row = (
        session.connection()
        .execute(
            core_select(
                *(
                    exists()
                    .where(
                        Reading.monitor_id == m,
                        Reading.event_time < firsts[m],
                        Reading.invalid_reason.is_(None),
                    )
                    .label(f"m{i}")
                    for i, m in enumerate(ids)
                )
            )
        )
        .one()
    )
    return {m for m, found in zip(ids, row, strict=True) if found}


def threshold_for(entry: MonitorEntry, gap_factor: float) -> timedelta:
    return timedelta(seconds=entry.interval_s * gap_factor)


def _level(entry: MonitorEntry) -> str:
    """Grade A needs continuous monitoring: a gap there is an action, elsewhere an alert."""
    return "action" if entry.grade == "A" else "alert"


class GapBook:
    """Gap detection for one ingest worker (a ``Rule``, ``tracker.monitoring.rules.base``)."""

    #: yes: ``latest`` and ``open_gaps`` are facts about stored reading times and the gaps
    #: this worker opened, which neither limits, inhibits nor room states change (the
    #: threshold is taken from the current snapshot at each use)
    survives_refresh: ClassVar[bool] = True

    def __init__(self, *, gap_factor: float | None = None) -> None:
        #: an explicit factor overrides every site's ``[rules] gap_factor`` (tests, bench)
        self.gap_factor = gap_factor
        #: per monitor: (last event time, its receipt time) of the newest reading seen
        self.latest: dict[int, tuple[datetime, datetime]] = {}
        #: monitors with a gap opened by this worker that readings have not closed yet
        self.open_gaps: set[int] = set()

    def factor(self, entry: MonitorEntry) -> float:
        return self.gap_factor if self.gap_factor is not None else entry.compliance.gap_factor

    def forget(self, monitor_ids: Collection[int] | None = None) -> None:
        if monitor_ids is None:
            self.latest.clear()
            self.open_gaps.clear()
            return
        for monitor_id in monitor_ids:
            self.latest.pop(monitor_id, None)
            self.open_gaps.discard(monitor_id)

    def after_batch(self, session: Session, batch: StoredBatch) -> None:
        """The gaps around the batch's readings, then a gap for each offline status."""
        self.after_readings(
            session,
            batch.registry,
            batch.rooms,
            batch.covered,
            batch.now,
            newest=batch.newest,
            shared=batch.shared,
            defer=batch.defer,
        )
        for monitor_id, received_at in batch.offline:
            self.offline(session, batch.registry, batch.rooms, monitor_id, received_at, batch.now)

    def after_reevaluation(self, session: Session, change: Reevaluation) -> None:
        """Nothing: gaps follow reading times, and re-evaluation changes only verdicts."""

    def after_readings(
        self,
        session: Session,
        registry: Registry,
        rooms: RoomStates,
        new: dict[int, list[tuple[datetime, datetime]]],
        now: datetime,
        *,
        newest: Mapping[int, datetime | None] | None = None,
        shared: Callable[[int], bool] = lambda _m: False,
        defer: Callable[[int, datetime, datetime], None] | None = None,
    ) -> None:
        """Re-derive the gaps around a batch's new readings (event time, receipt time).

        ``newest`` is each monitor's newest stored reading before the batch, from every worker
        (``tracker.monitoring.ingest_state``): where this worker's cache does not know it, it still
        spares the queries when the batch can change no gap. A new gap in a monitor that
        ``shared`` says another worker is writing at the same time may be only that worker's
        share in flight; it is not drawn but handed to ``defer`` (re-checked later, from the
        stored data, by whichever worker's silence tick comes first).
        """
        unknown: dict[int, list[tuple[datetime, datetime]]] = {}
        for monitor_id, stamps in new.items():
            entry = registry.by_id[monitor_id]
            stamps.sort()
            known = self.latest.get(monitor_id)
            in_order = known is not None and monitor_id not in self.open_gaps and stamps[0][0] >= known[0]
            threshold = threshold_for(entry, self.factor(entry))
            if in_order and not find_gaps([known[0], *(t for t, _ in stamps)], threshold):
                self.latest[monitor_id] = stamps[-1]  # the common case: no query at all
                continue
            if known is None and newest is not None and newest.get(monitor_id) is not None:
                unknown[monitor_id] = stamps  # decided below, with one query for them all
                continue
            self._after_slow(session, entry, rooms, stamps, known, now, shared, defer)
        if unknown:
            self._after_unknown(session, registry, rooms, unknown, newest, now, shared, defer)

    def _after_slow(
        self,
        session: Session,
        entry: MonitorEntry,
        rooms: RoomStates,
        stamps: list[tuple[datetime, datetime]],
        known: tuple[datetime, datetime] | None,
        now: datetime,
        shared: Callable[[int], bool],
        defer: Callable[[int, datetime, datetime], None] | None,
    ) -> None:
        first, last = stamps[0][0], stamps[-1][0]
        newest = self._rederive(
            session, entry, rooms, first, last, now, defer=defer if shared(entry.id) else None
        )
        # ``latest`` must be the monitor's newest stored reading (the fast path relies on
        # it): the batch's last one unless later ones are stored (this batch was late —
        # backfill, or another worker's share); then keep what is known, if anything
        if newest:
            self.latest[entry.id] = stamps[-1]
        elif known is not None and known[0] < last:
            del self.latest[entry.id]

    def _after_unknown(
        self,
        session: Session,
        registry: Registry,
        rooms: RoomStates,
        batch: dict[int, list[tuple[datetime, datetime]]],
        newest: Mapping[int, datetime | None],
        now: datetime,
        shared: Callable[[int], bool],
        defer: Callable[[int, datetime, datetime], None] | None,
    ) -> None:
        """Monitors this worker knows nothing of (another worker wrote them last), judged by
        the newest stored reading of any worker and the stored gaps around the batch.

        Readings that fall among stored ones can only split or shrink gaps, never make one
        (points added between two others only bring neighbours closer): with no stored gap
        around them, only the stretch after the newest stored reading can hold a new gap —
        or the one before the oldest, so a batch reaching back past every stored reading of
        its monitor takes the full path. Within a stretch waiting for its re-check (deferred)
        the stored gaps may lag the stored readings; the re-check covers every reading that
        lands in it, so the stretch starts at the left edge of the hole that was deferred.
        """
        lowest = min(stamps[0][0] for stamps in batch.values())
        preceded = _preceded(
            session, {m: stamps[0][0] for m, stamps in batch.items() if stamps[0][0] < newest[m]}
        )
        around: dict[int, list[tuple[datetime, datetime | None]]] = {}
        for monitor_id, start, end in session.exec(
            select(Excursion.monitor_id, Excursion.started_at, Excursion.ended_at).where(
                Excursion.monitor_id.in_(sorted(batch)),
                Excursion.type == "data_gap",
                Excursion.status != "superseded",
                (Excursion.ended_at.is_(None)) | (Excursion.ended_at > lowest),
            )
        ):
            around.setdefault(monitor_id, []).append((start, end))
        for monitor_id, stamps in batch.items():
            entry = registry.by_id[monitor_id]
            first, last = stamps[0][0], stamps[-1][0]
            stored_newest = newest[monitor_id]
            touched = any(
                start < last and (end is None or end > first) for start, end in around.get(monitor_id, ())
            )
            tail = [t for t, _ in stamps if t > stored_newest]
            holes = find_gaps([stored_newest, *tail], threshold_for(entry, self.factor(entry)))
            if first < stored_newest and monitor_id not in preceded:
                self._after_slow(session, entry, rooms, stamps, None, now, shared, defer)
                continue
            if not touched and not holes:
                if last >= stored_newest:
                    self.latest[monitor_id] = stamps[-1]
                continue
            if not touched and defer is not None and shared(monitor_id):
                # from the hole's left edge: until the re-check, stored gaps need not match the
                # stored readings there, so readings landing anywhere in it are judged then
                defer(monitor_id, min(first, holes[0].start), last)
                continue
            self._after_slow(session, entry, rooms, stamps, None, now, shared, defer)

    def _rederive(
        self,
        session: Session,
        entry: MonitorEntry,
        rooms: RoomStates,
        first: datetime,
        last: datetime,
        now: datetime,
        *,
        defer: Callable[[int, datetime, datetime], None] | None = None,
    ) -> bool:
        """Gaps between the reading before ``first`` and the one after ``last``, from the
        stored readings, reconciled with the stored gap excursions there; returns whether
        ``last`` is the newest stored reading. With ``defer``, gaps that are not stored yet
        are handed to it instead of drawn (the stored ones are still kept in shape)."""
        series = (Reading.monitor_id == entry.id, Reading.invalid_reason.is_(None))
        before = session.exec(
            select(Reading.event_time)
            .where(*series, Reading.event_time < first)
            .order_by(Reading.event_time.desc())
            .limit(1)
        ).first()
        after = session.exec(
            select(Reading.event_time)
            .where(*series, Reading.event_time > last)
            .order_by(Reading.event_time)
            .limit(1)
        ).first()
        a, c = before or first, after or last
        times = sorted(
            set(
                session.exec(
                    select(Reading.event_time).where(
                        *series, Reading.event_time >= a, Reading.event_time <= c
                    )
                ).all()
            )
        )
        computed = find_gaps(times, threshold_for(entry, self.factor(entry)))
        stored = list(
            session.exec(
                select(Excursion)
                .where(
                    Excursion.monitor_id == entry.id,
                    Excursion.type == "data_gap",
                    Excursion.status != "superseded",
                    Excursion.started_at < c,
                    (Excursion.ended_at.is_(None)) | (Excursion.ended_at > a),
                )
                .order_by(Excursion.started_at)
            )
        )
        deferred = self._reconcile(session, entry, rooms, computed, stored, now, draw_new=defer is None)
        if deferred:
            defer(entry.id, min(g.start for g in deferred), max(g.end for g in deferred))
        self.open_gaps.discard(entry.id)
        return after is None

    def recheck(
        self,
        session: Session,
        entry: MonitorEntry,
        rooms: RoomStates,
        first: datetime,
        last: datetime,
        now: datetime,
    ) -> None:
        """A deferred stretch, now that every worker's share of it has had time to land."""
        self._rederive(session, entry, rooms, first, last, now)
        self.latest.pop(entry.id, None)

    def offline(
        self,
        session: Session,
        registry: Registry,
        rooms: RoomStates,
        monitor_id: int,
        received_at: datetime,
        now: datetime,
    ) -> None:
        """The monitor (or its last will) says offline: a gap opens at once."""
        entry = registry.by_id[monitor_id]
        last = self._last_reading(session, monitor_id)
        self._open(
            session,
            entry,
            rooms,
            last or received_at,
            now,
            note="monitor reported offline (status / last will)",
        )

    def silent(
        self, entry: MonitorEntry, event_time: datetime, received_at: datetime | None, now: datetime
    ) -> bool:
        """A live monitor (its newest reading arrived close to its event time) quiet for
        longer than the threshold; silence counts from the later of the two times."""
        threshold = threshold_for(entry, self.factor(entry))
        return (
            received_at is not None
            and received_at - event_time <= threshold
            and now - max(event_time, received_at) > threshold
        )

    def check_silence(
        self,
        session: Session,
        registry: Registry,
        rooms: RoomStates,
        now: datetime,
        latest: Mapping[int, tuple[datetime, datetime | None]] | None = None,
    ) -> int:
        """Wall-clock rule for live monitors; returns how many gaps were opened.

        ``latest`` is each monitor's newest reading (event time, receipt time): by default
        what this worker has seen; ``Intake`` passes the state every worker shares
        (``tracker.monitoring.ingest_state``), so a worker that sees only part of the traffic does
        not take another worker's share for silence.
        """
        opened = 0
        for monitor_id, (event_time, received_at) in list(
            (self.latest if latest is None else latest).items()
        ):
            entry = registry.by_id.get(monitor_id)
            if entry is None or not self.silent(entry, event_time, received_at, now):
                continue
            threshold = threshold_for(entry, self.factor(entry))
            if self._open(
                session,
                entry,
                rooms,
                event_time,
                now,
                note=f"no reading received for more than {threshold.total_seconds():g} s",
            ):
                opened += 1
        return opened

    # ------------------------------------------------------------------ storage

    @staticmethod
    def _last_reading(session: Session, monitor_id: int) -> datetime | None:
        return session.exec(
            select(Reading.event_time)
            .where(Reading.monitor_id == monitor_id, Reading.invalid_reason.is_(None))
            .order_by(Reading.event_time.desc())
            .limit(1)
        ).first()

    def _open(
        self,
        session: Session,
        entry: MonitorEntry,
        rooms: RoomStates,
        start: datetime,
        now: datetime,
        *,
        note: str,
    ) -> bool:
        already = session.exec(
            select(Excursion.id).where(
                Excursion.monitor_id == entry.id, Excursion.type == "data_gap", Excursion.status == "open"
            )
        ).first()
        if already is not None:
            return False
        session.add(self._row(entry, rooms, Gap(start, None), now, note=note))
        session.flush()
        self.open_gaps.add(entry.id)
        return True

    def _row(
        self, entry: MonitorEntry, rooms: RoomStates, gap: Gap, now: datetime, note: str | None = None
    ) -> Excursion:
        threshold = threshold_for(entry, self.factor(entry)).total_seconds()
        row = Excursion(
            type="data_gap",
            site_id=entry.site_id,
            monitor_id=entry.id,
            room_id=entry.room_id,
            kind=entry.kind,
            channel="",
            level=_level(entry),
            state=rooms.state(entry.room_id, gap.start),
            direction="none",
            started_at=gap.start,
            peak=0.0,
            limit_value=threshold,
            readings=0,
            basis_id=entry.basis_id,
            created_at=now,
            updated_at=now,
            note=note,
        )
        return self._shape(row, gap, now)

    @staticmethod
    def _shape(row: Excursion, gap: Gap, now: datetime) -> Excursion:
        row.started_at, row.ended_at = gap.start, gap.end
        row.closed_by_at = gap.end
        row.status = "open" if gap.end is None else "closed"
        #: for a gap, the peak is its length in seconds (so far, while open)
        row.peak = ((gap.end or now) - gap.start).total_seconds()
        row.updated_at = now
        return row

    def _reconcile(
        self,
        session: Session,
        entry: MonitorEntry,
        rooms: RoomStates,
        computed: Iterable[Gap],
        stored: list[Excursion],
        now: datetime,
        *,
        draw_new: bool = True,
    ) -> list[Gap]:
        """Stored gaps follow the computed ones; returns the new gaps not drawn (``draw_new``
        false: another worker's share may still fill them)."""
        unmatched = list(stored)
        held: list[Gap] = []
        for gap in computed:
            match = next(
                (
                    r
                    for r in unmatched
                    if r.started_at <= gap.end and (r.ended_at is None or gap.start <= r.ended_at)
                ),
                None,
            )
            if match is None:
                if draw_new:
                    session.add(self._row(entry, rooms, gap, now))
                else:
                    held.append(gap)
                continue
            unmatched.remove(match)
            before = (match.started_at, match.ended_at)
            self._shape(match, gap, now)
            if (
                match.ended_at is not None
                and before[1] is not None
                and before != (match.started_at, match.ended_at)
            ):
                audit.record(
                    session,
                    actor=SYSTEM_ACTOR,
                    action="excursion.reshape",
                    entity="excursion",
                    entity_key=str(match.id),
                    before={"started_at": before[0], "ended_at": before[1]},
                    after={"started_at": match.started_at, "ended_at": match.ended_at},
                    reason=GAP_REASON,
                    at=now,
                )
            session.add(match)
        for row in unmatched:
            before = {"started_at": row.started_at, "ended_at": row.ended_at, "status": row.status}
            row.status, row.updated_at = "superseded", now
            row.note = (f"{row.note}\n" if row.note else "") + "superseded: " + GAP_REASON
            session.add(row)
            audit.record(
                session,
                actor=SYSTEM_ACTOR,
                action="excursion.supersede",
                entity="excursion",
                entity_key=str(row.id),
                before=before,
                after={"status": "superseded"},
                reason=GAP_REASON,
                at=now,
            )
        return held
