"""The monitoring rules, built and ordered in one place for ingest and re-evaluation alike.

A new rule implements ``tracker.monitoring.rules.base.Rule`` and is added to ``Rules`` and
``build_rules`` here; ``Intake`` and ``reevaluate`` drive whatever ``Rules.all`` holds.
"""

from __future__ import annotations

from dataclasses import dataclass

from tracker.monitoring.excursions import EpisodeBook
from tracker.monitoring.rules.base import Rule
from tracker.monitoring.rules.gaps import GapBook
from tracker.monitoring.rules.recovery import RecoveryRule
from tracker.monitoring.rules.recurrence import RecurrenceRule
from tracker.monitoring.rules.trends import TrendRule
from tracker.monitoring.rules.volume import VolumeBook
from tracker.monitoring.trending.rule import ForecastRule


@dataclass(frozen=True, slots=True)
class Rules:
    """One worker's (or one re-evaluation's) rules; the named ones are also called directly
    (the rolling windows while judging, the gap checks on the silence tick)."""

    episodes: EpisodeBook
    gaps: GapBook
    recurrence: RecurrenceRule
    recovery: RecoveryRule
    volume: VolumeBook
    #: None: adverse trends are not followed (re-evaluation, see ``TrendRule.after_reevaluation``)
    trend: TrendRule | None
    #: None: no ``predicted`` warnings (re-evaluation: a forecast looks ahead from live data)
    forecast: ForecastRule | None
    #: every rule, in the order it runs after a batch and after a re-evaluation: limit
    #: episodes first (they call the trend rule as alerts close), then gaps, recurrence and
    #: recovery, which read only stored readings and their own excursion types — so the order
    #: only decides which new excursion gets the lower id: a monitor's recurrence before its
    #: recovery, as ingest has always created them (tests compare lists ordered by start, id);
    #: the forecast last (it reads only stored readings and its own ``predicted`` warnings)
    all: tuple[Rule, ...]


def build_rules(
    *,
    close_after: int | None = None,
    gap_factor: float | None = None,
    trend: TrendRule | None = None,
    forecast: ForecastRule | None = None,
) -> Rules:
    """The rules, wired: the episode book reports closed alerts (and replays) to ``trend``.

    ``close_after`` and ``gap_factor`` override every site's facility-file rules when given
    (tests and benchmarks); ``None`` leaves each monitor to its site's (``MonitorEntry.compliance``)."""
    episodes = EpisodeBook(
        close_after=close_after,
        on_alert_closed=(
            None
            if trend is None
            else lambda session, entry, _episode, now: trend.on_alert_closed(session, entry, now)
        ),
    )
    gaps = GapBook(gap_factor=gap_factor)
    recurrence = RecurrenceRule()
    recovery = RecoveryRule()
    volume = VolumeBook()
    ordered: tuple[Rule, ...] = (episodes, gaps, recurrence, recovery, volume)
    if trend is not None:
        ordered = (*ordered, trend)
    if forecast is not None:
        ordered = (*ordered, forecast)
    return Rules(
        episodes=episodes,
        gaps=gaps,
        recurrence=recurrence,
        recovery=recovery,
        volume=volume,
        trend=trend,
        forecast=forecast,
        all=ordered,
    )
