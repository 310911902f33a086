"""What every monitoring rule offers the code that drives it: the ``Rule`` protocol and the two
moments it is called at, a stored batch (``Intake``) and a re-evaluation (``reevaluate``).

A rule keeps in-memory state beside the database only as a shortcut (an episode machine, a
rolling window, "this monitor is quiet"): the stored readings and excursions are the truth, so
whatever the state, forgetting it must only cost queries, never change a result. The rules
are built and ordered once, in ``tracker.monitoring.rules.ruleset``.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, ClassVar, Protocol

if TYPE_CHECKING:
    from sqlmodel import Session

    from tracker.facility.roomstate import RoomStates
    from tracker.monitoring.episodes import Judged
    from tracker.monitoring.snapshot import Registry


@dataclass(frozen=True, slots=True)
class StoredBatch:
    """A batch's new readings, stored in the caller's transaction, as the rules see them."""

    registry: Registry
    rooms: RoomStates
    now: datetime
    #: judged channel values per series ``(monitor, channel)``, for the episode machines
    series: dict[tuple[int, str], list[Judged]]
    #: per monitor, ``(event time, receipt time)`` of each new reading
    stamps: dict[int, list[tuple[datetime, datetime]]]
    #: the same for the readings that count as monitoring coverage: at least one valid
    #: channel (a counter reporting ``fault`` for an hour did not monitor: a data gap)
    covered: dict[int, list[tuple[datetime, datetime]]]
    #: monitors with a ≥5.0 µm count in the batch
    counted: set[int]
    #: monitors with a sample older than one already stored (late data)
    late: set[int]
    #: series whose *stored* readings the batch's late samples re-judged (rolling volume)
    rejudged: set[tuple[int, str]]
    #: ``(monitor, receipt time)`` of each status message saying the monitor is offline
    offline: Sequence[tuple[int, datetime]]
    #: each batch monitor's newest stored reading before the batch, from every worker
    newest: Mapping[int, datetime | None]
    #: whether another worker writes the monitor at the same time (``WriterGuard.shared``)
    shared: Callable[[int], bool]
    #: hand a stretch ``(monitor, first, last)`` to the delayed gap re-check
    defer: Callable[[int, datetime, datetime], None]


@dataclass(frozen=True, slots=True)
class Reevaluation:
    """Stored readings of some rooms judged again (``tracker.monitoring.reevaluate``), with
    the changed verdicts already written in the caller's transaction."""

    registry: Registry
    rooms: RoomStates
    now: datetime
    #: every active monitor of the re-judged rooms
    monitor_ids: Sequence[int]
    #: the re-judged period ``[start, end)`` (``end`` None: up to now)
    start: datetime
    end: datetime | None
    #: per series ``(monitor, channel)``, its earliest reading whose stored verdict changed
    #: (later rolling-volume samples whose window held a re-judged one included)
    first_change: Mapping[tuple[int, str], datetime]
    #: the latest reading of the period whose verdict changed (None: none there)
    last_change: datetime | None


class Rule(Protocol):
    """A stateful monitoring rule, driven through these methods only (``Intake`` holds them in
    one tuple; re-evaluation builds its own set): a new rule is added in ``rules.ruleset``."""

    #: whether the rule's in-memory state stays valid across ``Intake.refresh`` — a new
    #: facility snapshot (a facility file loaded, an inhibit added or cancelled) or a changed
    #: room-state timeline (often with readings re-judged by another process). A rule saying
    #: False is forgotten then; each rule's own attribute says why it may survive.
    survives_refresh: ClassVar[bool]

    def forget(self, monitor_ids: Collection[int] | None = None) -> None:
        """Drop the in-memory state of these monitors (of all with None): after a rolled-back
        batch, or for monitors another worker wrote since; rebuilt from the database."""
        ...

    def after_batch(self, session: Session, batch: StoredBatch) -> None:
        """Bring the rule's excursions up to date with a batch just stored in ``session``."""
        ...

    def after_reevaluation(self, session: Session, change: Reevaluation) -> None:
        """Re-derive the rule's excursions after stored verdicts were judged again."""
        ...
