"""The excursion state machine, pure: evaluated readings in, episode changes out.

An episode (DESIGN §4) opens when a channel stays beyond a bound for the limit's delay
(e.g. 60 s so door openings do not alarm), keeps its highest level and its peak, and
closes after ``close_after`` consecutive in-limit readings. An episode never spans a change of
the room's operational state: where the state changes while it is open, it ends there and the
readings after it form their own episode, judged against the limits of their state (issue 14
item 7; a grade B excursion at rest must not be reported with its in-operation limit).
Readings must be fed in event-time order; late data is handled by replaying a stretch (see ``tracker.monitoring.excursions``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from tracker.facility.limits import Bounds, Level


@dataclass(frozen=True, slots=True)
class Judged:
    """One reading after evaluation, as the machine sees it."""

    at: datetime
    value: float
    level: Level
    direction: str | None
    bounds: Bounds | None
    state: str  # operational state of the room at ``at``


@dataclass(slots=True)
class Episode:
    started_at: datetime
    level: Level
    direction: str
    peak: float
    limit: float | None
    state: str
    readings: int = 0
    last_out_at: datetime | None = None
    ended_at: datetime | None = None
    #: time of the in-limit reading that completed the closing run (late data before it
    #: can still reopen the episode, so replays start from episodes not closed by then)
    closed_by_at: datetime | None = None
    #: persistence handle, set by the storage layer
    key: int | None = None

    @property
    def open(self) -> bool:
        return self.ended_at is None


def _limit_for(bounds: Bounds | None, level: Level, direction: str) -> float | None:
    if bounds is None:
        return None
    if level is Level.ACTION:
        return bounds.action_high if direction == "high" else bounds.action_low
    return bounds.alert_high if direction == "high" else bounds.alert_low


def _more_extreme(direction: str, a: float, b: float) -> float:
    return max(a, b) if direction == "high" else min(a, b)


@dataclass(slots=True)
class SeriesMachine:
    """State of one monitor × channel; ``feed`` returns the episode it touched, if any."""

    close_after: int = 3
    alert_run_start: datetime | None = None
    action_run_start: datetime | None = None
    pending_peak: float | None = None
    pending_count: int = 0
    pending_direction: str | None = None
    pending_state: str = "at_rest"
    episode: Episode | None = None
    ok_run: int = 0
    recovered_at: datetime | None = None
    last_at: datetime | None = None
    closed: list[Episode] = field(default_factory=list)

    def feed(self, j: Judged) -> Episode | None:
        if self.last_at is not None and j.at < self.last_at:
            raise ValueError(f"out-of-order reading {j.at} after {self.last_at}; replay instead")
        self.last_at = j.at
        if j.level in (Level.NOT_EVALUATED, Level.INVALID):
            return None  # stored, but proves nothing either way: never opens or closes
        if j.level is Level.OK:
            return self._in_limit(j)
        return self._out_of_limit(j)

    def _in_limit(self, j: Judged) -> Episode | None:
        self.alert_run_start = self.action_run_start = None
        self.pending_peak, self.pending_count, self.pending_direction = None, 0, None
        ep = self.episode
        if ep is None:
            return None
        self.ok_run += 1
        if self.ok_run == 1:
            self.recovered_at = j.at
        if self.ok_run >= self.close_after:
            ep.ended_at, ep.closed_by_at = self.recovered_at, j.at
            self.episode, self.ok_run, self.recovered_at = None, 0, None
            self.closed.append(ep)
            return ep
        return None

    def _split_at_state_change(self, j: Judged) -> None:
        """End the open episode (or forget the pending run) where the state changes."""
        ep = self.episode
        if ep is not None and j.state != ep.state:
            ep.ended_at, ep.closed_by_at = j.at, j.at
            self.closed.append(ep)
            self.episode = None
            self.alert_run_start = self.action_run_start = None
            self.pending_peak, self.pending_count, self.pending_direction = None, 0, None
        elif ep is None and self.alert_run_start is not None and j.state != self.pending_state:
            self.alert_run_start = self.action_run_start = None
            self.pending_peak, self.pending_count, self.pending_direction = None, 0, None

    def _out_of_limit(self, j: Judged) -> Episode | None:
        direction = j.direction or "high"
        self.ok_run, self.recovered_at = 0, None
        self._split_at_state_change(j)
        if self.alert_run_start is None:
            self.alert_run_start, self.pending_state = j.at, j.state
            self.pending_direction = direction
        if j.level is Level.ACTION:
            if self.action_run_start is None:
                self.action_run_start = j.at
        else:
            self.action_run_start = None
        delay = j.bounds.delay_for(j.value) if j.bounds else 0.0
        if self.action_run_start and (j.at - self.action_run_start).total_seconds() >= delay:
            reached = Level.ACTION
        elif (j.at - self.alert_run_start).total_seconds() >= delay:
            reached = Level.ALERT
        else:
            reached = None

        ep = self.episode
        if ep is not None:
            ep.readings += 1
            ep.last_out_at = j.at
            if direction == ep.direction:
                ep.peak = _more_extreme(direction, ep.peak, j.value)
            if reached is Level.ACTION and ep.level is Level.ALERT:
                ep.level = Level.ACTION
                ep.limit = _limit_for(j.bounds, Level.ACTION, ep.direction)
            return ep

        pdir = self.pending_direction or direction
        self.pending_peak = (
            j.value if self.pending_peak is None else _more_extreme(pdir, self.pending_peak, j.value)
        )
        self.pending_count += 1
        if reached is None:
            return None
        ep = Episode(
            started_at=self.alert_run_start,
            level=reached,
            direction=pdir,
            peak=self.pending_peak,
            limit=_limit_for(j.bounds, reached, pdir),
            state=self.pending_state,
            readings=self.pending_count,
            last_out_at=j.at,
        )
        self.episode = ep
        return ep


def replay(judged: list[Judged], *, close_after: int) -> SeriesMachine:
    """Run a fresh machine over readings sorted by time (used after late data)."""
    machine = SeriesMachine(close_after=close_after)
    for j in judged:
        machine.feed(j)
    return machine
