"""≥ 5.0 µm recurrence (``type=recurrence``) in grade A and B.

Isolated ≥ 5.0 µm counts may be noise, but consecutive or regular low counts may mean
contamination and must be investigated, even when each sample is below the limit (China
Annex 1 第十条(六) 🧠; EU GMP Annex 1 (2022) Table 5 note; regulatory.md §5.1–5.3).
Default: two consecutive samples with a count, or three of the last ten, among the samples
judged against an ISO 5-level limit (grade A; grade B at rest — see ``SCOPE_LIMIT``). A recurrence spans
from the first counted sample of its window to the last sample that kept triggering it;
``readings`` is how many counted samples it spans. Level: action in grade A, alert in B.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session, select

from tracker import audit
from tracker.excursions import (
    REPLAY_REASON,
    SYSTEM_ACTOR,
    Excursion,
    excursion_shape,
    supersede_excursion,
)
from tracker.limits import Level
from tracker.readings import Reading
from tracker.registry import MonitorEntry
from tracker.roomstate import RoomStates

CHANNEL = "5.0"
GRADES = ("A", "B")
#: the rule watches samples judged against an ISO 5-level ≥5.0 µm limit (20 or 29 /m³:
#: grade A, grade B at rest), where any count is "low" and unexpected; grade B in operation
#: (2,900 /m³) sees 5 µm particles routinely and is left to its limit
SCOPE_LIMIT = 29.0


@dataclass(frozen=True, slots=True)
class Span:
    start: datetime
    end: datetime
    counted: int


def recurrence_spans(samples: Sequence[tuple[datetime, bool]], *, consecutive: int = 2,
                     of: int = 3, last: int = 10) -> list[Span]:
    """Pure: spans of recurrence in time-ordered ``(time, sample had a count)`` pairs."""
    spans: list[Span] = []
    for i, (t, _) in enumerate(samples):
        window = samples[max(0, i - last + 1):i + 1]
        run = samples[max(0, i - consecutive + 1):i + 1]
        hits = [s for s, counted in window if counted]
        if not (len(run) == consecutive and all(c for _, c in run)) and len(hits) < of:
            continue
        start = (run[0][0] if len(hits) < of else hits[0])
        if spans and start <= spans[-1].end:
            prev = spans[-1]
            counted = sum(1 for s, c in samples if c and min(prev.start, start) <= s <= t)
            spans[-1] = Span(min(prev.start, start), t, counted)
        else:
            spans.append(Span(start, t, sum(1 for s, c in samples if c and start <= s <= t)))
    return spans


class RecurrenceRule:
    def __init__(self, *, consecutive: int = 2, of: int = 3, last: int = 10) -> None:
        self.consecutive, self.of, self.last = consecutive, of, last
        #: monitors whose recent samples had no count: a batch without counts needs no query
        self.quiet: set[int] = set()

    def forget(self) -> None:
        self.quiet.clear()

    def needs_look(self, monitor_id: int, any_count: bool) -> bool:
        if any_count:
            self.quiet.discard(monitor_id)
            return True
        return monitor_id not in self.quiet

    def applies(self, entry: MonitorEntry) -> bool:
        return entry.kind == "particles" and entry.grade in GRADES and CHANNEL in entry.channels

    @staticmethod
    def _states_in_scope(entry: MonitorEntry) -> list[str]:
        out = []
        for state in ("at_rest", "in_operation"):
            bounds = entry.limits.for_reading(CHANNEL, state)
            if bounds is not None and bounds.action_high is not None and (
                    bounds.action_high <= SCOPE_LIMIT):
                out.append(state)
        return out

    def after_readings(self, session: Session, entry: MonitorEntry, rooms: RoomStates,
                       first: datetime, last: datetime, now: datetime) -> None:
        """Re-derive recurrence around new ≥5.0 µm samples of one monitor."""
        # read every stored recurrence touching the range whole, so it can be re-derived exactly
        touching = session.exec(select(Excursion.started_at, Excursion.ended_at).where(
            Excursion.monitor_id == entry.id, Excursion.type == "recurrence",
            Excursion.status != "superseded", Excursion.started_at <= last,
            Excursion.ended_at >= first)).all()
        if touching:
            first = min(first, *(t[0] for t in touching))
            last = max(last, *(t[1] for t in touching))
        series = (Reading.monitor_id == entry.id, Reading.channel == CHANNEL,
                  Reading.level.notin_((Level.INVALID.value, Level.NOT_EVALUATED.value)),
                  Reading.state.in_(self._states_in_scope(entry)))
        cols = (Reading.event_time, Reading.value)
        before = session.exec(select(*cols).where(*series, Reading.event_time < first)
                              .order_by(Reading.event_time.desc()).limit(2 * self.last)
                              ).all()[::-1]
        during = session.exec(select(*cols).where(*series, Reading.event_time >= first,
                                                  Reading.event_time <= last)
                              .order_by(Reading.event_time)).all()
        after = session.exec(select(*cols).where(*series, Reading.event_time > last)
                             .order_by(Reading.event_time).limit(self.last)).all()
        samples = [(t, v > 0) for t, v in [*before, *during, *after]]
        if not any(c for _, c in samples[-self.last:]):
            self.quiet.add(entry.id)  # nothing counted in the last window: skip until a count
        if not any(c for _, c in samples):
            return
        spans = recurrence_spans(samples, consecutive=self.consecutive, of=self.of,
                                 last=self.last)
        lo, hi = samples[0][0], samples[-1][0]
        stored = list(session.exec(select(Excursion).where(
            Excursion.monitor_id == entry.id, Excursion.type == "recurrence",
            Excursion.status != "superseded", Excursion.started_at <= hi,
            Excursion.ended_at >= lo).order_by(Excursion.started_at)))
        # spans whose whole derivation lies in the samples read here are known exactly: a stored
        # recurrence there is reshaped to its span, or superseded when late data dissolved it
        exact_from = before[-self.last][0] if len(before) >= self.last else None
        exact_to = after[-1][0] if len(after) >= self.last else None

        def exact(start: datetime, end: datetime | None) -> bool:
            return ((exact_from is None or start >= exact_from)
                    and (exact_to is None or (end is not None and end < exact_to)))

        for span in spans:
            match = next((r for r in stored if r.started_at <= span.end
                          and span.start <= r.ended_at), None)
            shape = excursion_shape(match) if match is not None and match.id else None
            if match is None:
                match = Excursion(type="recurrence", site_id=entry.site_id, monitor_id=entry.id,
                                  room_id=entry.room_id, kind="particles", channel=CHANNEL,
                                  level="action" if entry.grade == "A" else "alert",
                                  state=rooms.state(entry.room_id, span.start), direction="high",
                                  started_at=span.start, peak=0, basis_id=entry.basis_id,
                                  created_at=now, updated_at=now,
                                  limit_value=float(self.of),
                                  note=f"≥5.0 µm counts in {self.consecutive} consecutive "
                                       f"samples or {self.of} of the last {self.last}")
            else:
                stored.remove(match)
            if match.id and not exact(match.started_at, match.ended_at):
                # a stored span reaching past the samples read here keeps its outer ends
                match.started_at = min(match.started_at, span.start)
                match.ended_at = max(match.ended_at or span.end, span.end)
                match.readings = max(match.readings or 0, span.counted)
            else:
                match.started_at, match.ended_at, match.readings = span.start, span.end, span.counted
            match.closed_by_at = match.last_out_at = match.ended_at
            match.peak = float(match.readings)
            match.status, match.updated_at = "closed", now
            session.add(match)
            if shape is not None and shape != excursion_shape(match):
                session.flush()
                audit.record(session, actor=SYSTEM_ACTOR, action="excursion.reshape", entity="excursion",
                             entity_key=str(match.id), before=shape, after=excursion_shape(match), at=now,
                             reason=REPLAY_REASON)
        for row in stored:
            if exact(row.started_at, row.ended_at) and row.started_at <= last and first <= row.ended_at:
                supersede_excursion(session, row, now, REPLAY_REASON)
