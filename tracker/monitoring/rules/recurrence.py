"""≥ 5.0 µm recurrence (``type=recurrence``) in grade A and B.

Isolated ≥ 5.0 µm counts may be noise, but consecutive or regular low counts may mean
contamination and must be investigated, even when each sample is below the limit (China
Annex 1 第十条(六) 🧠; EU GMP Annex 1 (2022) Table 5 note; regulatory.md §5.1–5.3).
Default: two consecutive samples with a count, or three of the last ten, among the samples
of grade A and grade B, at rest and in operation alike: 第十条(六) names A and B without a
condition on the state (issue 14 item 6; before, grade B in operation was left to its
2,900 /m³ limit). A recurrence spans
from the first counted sample of its window to the last sample that kept triggering it;
``readings`` is how many counted samples it spans. Level: action in grade A, alert in B.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, ClassVar

from sqlmodel import Session, select

from tracker.core import audit
from tracker.facility.limits import Level
from tracker.facility.roomstate import RoomStates
from tracker.monitoring.excursions import (
    REPLAY_REASON,
    SYSTEM_ACTOR,
    Excursion,
    excursion_shape,
    supersede_excursion,
)
from tracker.monitoring.readings import Reading
from tracker.monitoring.snapshot import MonitorEntry

if TYPE_CHECKING:
    from tracker.monitoring.rules.base import Reevaluation, StoredBatch

CHANNEL = "5.0"
GRADES = ("A", "B")


@dataclass(frozen=True, slots=True)
class Span:
    start: datetime
    end: datetime
    counted: int


def recurrence_spans(
    samples: Sequence[tuple[datetime, bool]], *, consecutive: int = 2, of: int = 3, last: int = 10
) -> list[Span]:
    """Pure: spans of recurrence in time-ordered ``(time, sample had a count)`` pairs."""
    spans: list[Span] = []
    for i, (t, _) in enumerate(samples):
        window = samples[max(0, i - last + 1) : i + 1]
        run = samples[max(0, i - consecutive + 1) : i + 1]
        hits = [s for s, counted in window if counted]
        if not (len(run) == consecutive and all(c for _, c in run)) and len(hits) < of:
            continue
        start = run[0][0] if len(hits) < of else hits[0]
        if spans and start <= spans[-1].end:
            prev = spans[-1]
            counted = sum(1 for s, c in samples if c and min(prev.start, start) <= s <= t)
            spans[-1] = Span(min(prev.start, start), t, counted)
        else:
            spans.append(Span(start, t, sum(1 for s, c in samples if c and start <= s <= t)))
    return spans


class RecurrenceRule:
    """Recurrences re-derived around new or re-judged ≥5.0 µm samples (a ``Rule``,
    ``tracker.monitoring.rules.base``)."""

    #: kept, as ``Intake.refresh`` has done since the rule was added — not shown to be safe:
    #: ``quiet`` says the last in-scope samples had no count, and a refresh can bring counted
    #: samples into scope (a backdated room state re-judging in-operation samples as at rest,
    #: a tighter in-operation ≥5.0 µm limit), so count-free batches may skip the looks that
    #: would have extended a recurrence, which stays short unless a later look reaches it
    survives_refresh: ClassVar[bool] = True

    def __init__(self, *, consecutive: int = 2, of: int = 3, last: int = 10) -> None:
        self.consecutive, self.of, self.last = consecutive, of, last
        #: monitors whose recent samples had no count: a batch without counts needs no query
        self.quiet: set[int] = set()

    def forget(self, monitor_ids: Collection[int] | None = None) -> None:
        if monitor_ids is None:
            self.quiet.clear()
        else:
            self.quiet.difference_update(monitor_ids)

    def after_batch(self, session: Session, batch: StoredBatch) -> None:
        """Look at each monitor in scope unless it is quiet and the batch brings no count
        and no late sample."""
        for monitor_id, times in batch.stamps.items():
            entry = batch.registry.by_id[monitor_id]
            if self.applies(entry) and self.needs_look(
                monitor_id, monitor_id in batch.counted or monitor_id in batch.late
            ):
                self.after_readings(
                    session,
                    entry,
                    batch.rooms,
                    min(t for t, _ in times),
                    max(t for t, _ in times),
                    batch.now,
                )

    def after_reevaluation(self, session: Session, change: Reevaluation) -> None:
        """Re-derive around each changed ≥5.0 µm series in scope."""
        for (monitor_id, channel), since in change.first_change.items():
            entry = change.registry.by_id[monitor_id]
            if channel == CHANNEL and self.applies(entry):
                self.after_readings(
                    session,
                    entry,
                    change.rooms,
                    since,
                    max(change.last_change or since, since),
                    change.now,
                )

    def needs_look(self, monitor_id: int, any_count: bool) -> bool:
        if any_count:
            self.quiet.discard(monitor_id)
            return True
        return monitor_id not in self.quiet

    def applies(self, entry: MonitorEntry) -> bool:
        return entry.kind == "particles" and entry.grade in GRADES and CHANNEL in entry.channels

    @staticmethod
    def _states_in_scope(entry: MonitorEntry) -> list[str]:
        """Both states of a grade A or B monitor (Annex 1 第十条(六) sets no state condition)."""
        return ["at_rest", "in_operation"]

    def _quiet_bounded(
        self, session: Session, series: tuple, start: datetime, *, backwards: bool
    ) -> list[tuple[datetime, float]]:
        """Samples from ``start`` outwards until ``last`` in a row without a count (no span can
        cross such a run) or the end of the series; in time order."""
        out: list[tuple[datetime, float]] = []
        cursor = start
        while True:
            when = Reading.event_time < cursor if backwards else Reading.event_time > cursor
            order = Reading.event_time.desc() if backwards else Reading.event_time
            rows = session.exec(
                select(Reading.event_time, Reading.value)
                .where(*series, when)
                .order_by(order)
                .limit(4 * self.last)
            ).all()
            out += rows
            if not rows or (len(out) >= self.last and not any(v > 0 for _, v in out[-self.last :])):
                return out[::-1] if backwards else out
            cursor = rows[-1][0]

    def after_readings(
        self,
        session: Session,
        entry: MonitorEntry,
        rooms: RoomStates,
        first: datetime,
        last: datetime,
        now: datetime,
    ) -> None:
        """Re-derive, exactly, the recurrences around new (or re-judged) ≥5.0 µm samples.

        The samples read reach from ``first``/``last`` outwards to a run of ``last`` samples
        without a count (or the series' ends), and cover every stored recurrence they touch, so
        every span in them is derived from all the samples that decide it: stored recurrences
        there are reshaped to their span or superseded when no span supports them any more.
        """
        series = (
            Reading.monitor_id == entry.id,
            Reading.channel == CHANNEL,
            Reading.level.notin_((Level.INVALID.value, Level.NOT_EVALUATED.value)),
            Reading.state.in_(self._states_in_scope(entry)),
        )
        live = (
            Excursion.monitor_id == entry.id,
            Excursion.type == "recurrence",
            Excursion.status != "superseded",
        )
        while True:
            before = self._quiet_bounded(session, series, first, backwards=True)
            after = self._quiet_bounded(session, series, last, backwards=False)
            lo = before[0][0] if before else first
            hi = after[-1][0] if after else last
            stored = list(
                session.exec(
                    select(Excursion)
                    .where(*live, Excursion.started_at <= hi, Excursion.ended_at >= lo)
                    .order_by(Excursion.started_at)
                )
            )
            wider = [r for r in stored if r.started_at < lo or r.ended_at > hi]
            if not wider:
                break
            first = min(first, *(r.started_at for r in wider))
            last = max(last, *(r.ended_at for r in wider))
        during = session.exec(
            select(Reading.event_time, Reading.value)
            .where(*series, Reading.event_time >= first, Reading.event_time <= last)
            .order_by(Reading.event_time)
        ).all()
        samples = [(t, v > 0) for t, v in [*before, *during, *after]]
        if not any(c for _, c in samples[-self.last :]):
            self.quiet.add(entry.id)  # nothing counted in the last window: skip until a count
        spans = (
            recurrence_spans(samples, consecutive=self.consecutive, of=self.of, last=self.last)
            if any(c for _, c in samples)
            else []
        )
        for span in spans:
            match = next((r for r in stored if r.started_at <= span.end and span.start <= r.ended_at), None)
            shape = excursion_shape(match) if match is not None else None
            if match is None:
                match = Excursion(
                    type="recurrence",
                    site_id=entry.site_id,
                    monitor_id=entry.id,
                    room_id=entry.room_id,
                    kind="particles",
                    channel=CHANNEL,
                    level="action" if entry.grade == "A" else "alert",
                    state=rooms.state(entry.room_id, span.start),
                    direction="high",
                    started_at=span.start,
                    peak=0,
                    basis_id=entry.basis_id,
                    created_at=now,
                    updated_at=now,
                    limit_value=float(self.of),
                    note=f"≥5.0 µm counts in {self.consecutive} consecutive "
                    f"samples or {self.of} of the last {self.last}",
                )
            else:
                stored.remove(match)
            match.started_at, match.ended_at, match.readings = span.start, span.end, span.counted
            match.closed_by_at = match.last_out_at = match.ended_at
            match.peak = float(match.readings)
            match.status, match.updated_at = "closed", now
            session.add(match)
            if shape is not None and shape != excursion_shape(match):
                session.flush()
                audit.record(
                    session,
                    actor=SYSTEM_ACTOR,
                    action="excursion.reshape",
                    entity="excursion",
                    entity_key=str(match.id),
                    before=shape,
                    after=excursion_shape(match),
                    at=now,
                    reason=REPLAY_REASON,
                )
        for row in stored:  # no span supports it any more (late data, a re-judged state, an inhibit)
            supersede_excursion(session, row, now, REPLAY_REASON)
