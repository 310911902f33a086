"""Excursions: out-of-limit episodes, persisted around the pure machine of ``tracker.monitoring.episodes``.

Readings in event-time order take the fast path (the series' machine is fed directly).
A late (backfilled) reading, or the first batch after a restart, replays the series from
the last quiet point before it, then reconciles the replayed episodes with the stored
ones: matching rows are updated in place (their ids and QA history stay), new episodes
are inserted, and stored episodes the full data no longer supports are marked
``superseded`` with a reason — never deleted.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, ClassVar

from sqlalchemy import Column, Index, Text, event, func, or_
from sqlalchemy.orm import Session as OrmSession
from sqlmodel import Field, Session, SQLModel, select
from typing_extensions import TypedDict

from tracker.core import audit
from tracker.core.db import UTCDateTime
from tracker.core.errors import ConflictError, InvalidInputError, NotFoundError, Reason
from tracker.core.timeutil import iso_utc, utcnow
from tracker.facility.limits import Level
from tracker.facility.models import Monitor, Room
from tracker.identity.signatures import Signature  # noqa: F401  (target of a foreign key)
from tracker.identity.users import Authenticated, require_role
from tracker.monitoring import outbox
from tracker.monitoring.alarm_records import AlarmChallenge
from tracker.monitoring.episodes import Episode, Judged, SeriesMachine, replay
from tracker.monitoring.readings import Reading
from tracker.monitoring.snapshot import MonitorEntry, Registry
from tracker.monitoring.viable.models import ViableSample

if TYPE_CHECKING:
    from tracker.monitoring.rules.base import Reevaluation, StoredBatch

LEVEL_ZH = {"alert": "警戒", "action": "纠偏"}
SYSTEM_ACTOR = "system:ingest"
REPLAY_REASON = (
    "re-evaluated by event time after late (backfilled) readings or a restart; "
    "the stored readings no longer support the previous shape"
)


class Excursion(SQLModel, table=True):
    __table_args__ = (Index("ix_excursion_series", "monitor_id", "channel", "started_at"),)

    id: int | None = Field(default=None, primary_key=True)
    #: limit | data_gap | recurrence | adverse_trend | recovery (DESIGN §9); predicted: a
    #: forecast warning, not a breach (docs/trending.md); viable | viable_trend: a viable result
    #: or trend (no monitor, ``viable_sample_id`` names the sample; docs/viable.md)
    type: str = Field(default="limit", max_length=20)
    site_id: int = Field(foreign_key="site.id", index=True)
    monitor_id: int | None = Field(default=None, foreign_key="monitor.id")
    viable_sample_id: int | None = Field(default=None, foreign_key="viable_sample.id", index=True)
    room_id: int = Field(foreign_key="room.id", index=True)
    kind: str = Field(max_length=20)
    channel: str = Field(default="", max_length=8)
    level: str = Field(max_length=16)
    state: str = Field(max_length=16)  # operational state when it began
    status: str = Field(default="open", max_length=16, index=True)  # open|closed|superseded
    direction: str = Field(max_length=4)
    started_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    ended_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    closed_by_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    last_out_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    peak: float
    limit_value: float | None = None
    readings: int = 0
    basis_id: int = Field(foreign_key="evaluation_basis.id")
    created_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    updated_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    note: str | None = Field(default=None, sa_column=Column(Text))
    #: QA's acknowledgement (comment required); ``ack_level`` is the level it acknowledged —
    #: an excursion that escalates afterwards needs acknowledging again
    acknowledged_by: str | None = Field(default=None, max_length=60)
    acknowledged_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    #: the first acknowledgement (time to acknowledge); later ones after an escalation update the rest
    first_acknowledged_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    ack_level: str | None = Field(default=None, max_length=16)
    ack_comment: str | None = Field(default=None, sa_column=Column(Text))
    #: who caused a supersession and why (a room-state correction names its recorder, reason and
    #: QA's approving signature); empty for the ingester's own re-evaluation after late data
    superseded_by: str | None = Field(default=None, max_length=120)
    superseded_reason: str | None = Field(default=None, sa_column=Column(Text))
    superseded_signature_id: int | None = Field(default=None, foreign_key="signature.id")
    #: the alarm challenge it started in (a test of the alarm chain): notified with a TEST
    #: marker, counted nowhere (statistics, exposure links, release gate, annual report)
    challenge_id: int | None = Field(default=None, foreign_key="alarm_challenge.id", index=True)

    @property
    def needs_acknowledgement(self) -> bool:
        """Never acknowledged, or escalated (alert → action) since; a level going down is no news."""
        return self.status != "superseded" and (
            self.ack_level is None or (self.ack_level == "alert" and self.level == "action")
        )


def source_code(session: Session, ex: Excursion) -> str:
    """What raised an excursion: its monitor's code, or for a viable result its sampling location."""
    if ex.monitor_id is not None:
        return session.get(Monitor, ex.monitor_id).code
    sample = session.get(ViableSample, ex.viable_sample_id) if ex.viable_sample_id else None
    return sample.location if sample else ""


SeriesKey = tuple[int, str]

#: a forecast warning (``tracker.monitoring.trending.rule``): stored beside the excursions so
#: QA sees, acknowledges and is alarmed about it the same way, but never a breach
PREDICTED = "predicted"


def breaches():
    """The filter every count of breaches uses: statistics, exposure links and the release
    gate, the floor's open excursions, the annual report (``predicted`` is not a breach)."""
    return Excursion.type != PREDICTED


class EpisodeBook:
    """The live machines of every series this process has seen, and their persistence.

    A ``Rule`` (``tracker.monitoring.rules.base``): limit episodes after each batch, replayed
    series after re-evaluation.
    """

    #: no: the machines hold verdicts and bounds judged by the old limits and timeline, and a
    #: backdated state change re-evaluated elsewhere has rewritten the episodes they feed
    survives_refresh: ClassVar[bool] = False

    def __init__(
        self,
        *,
        close_after: int | None = None,
        on_alert_closed: Callable[[Session, MonitorEntry, Episode | None, datetime], None] | None = None,
    ) -> None:
        #: an explicit value overrides every site's ``[rules] episode_close_after`` (tests, bench)
        self.close_after = close_after
        self.machines: dict[SeriesKey, SeriesMachine] = {}
        #: called for each alert episode closed by live data, and after every replay that
        #: touched stored episodes (``None``): the adverse-trend rule re-derives then
        self.on_alert_closed = on_alert_closed

    def closing(self, entry: MonitorEntry) -> int:
        """In-limit readings that end an episode of ``entry``: its site's rule unless overridden."""
        return self.close_after if self.close_after is not None else entry.compliance.close_after

    def forget(self, monitor_ids: Collection[int] | None = None) -> None:
        """Drop in-memory state (after a rollback, or of monitors another worker wrote):
        the next batch rebuilds it from the database."""
        if monitor_ids is None:
            self.machines.clear()
            return
        for key in [k for k in self.machines if k[0] in monitor_ids]:
            del self.machines[key]

    def after_batch(self, session: Session, batch: StoredBatch) -> None:
        """Advance the episodes of the batch's series (``process``)."""
        self.process(
            session, batch.registry, batch.series, now=batch.now, rejudged=batch.rejudged, newest=batch.newest
        )

    def after_reevaluation(self, session: Session, change: Reevaluation) -> None:
        """Replay each series whose stored verdicts changed, from its first changed reading."""
        for (monitor_id, channel), since in change.first_change.items():
            self.rebuild(session, change.registry.by_id[monitor_id], channel, since, change.now)

    def process(
        self,
        session: Session,
        registry: Registry,
        batch: dict[SeriesKey, list[Judged]],
        *,
        now: datetime | None = None,
        rejudged: frozenset[SeriesKey] | set[SeriesKey] = frozenset(),
        newest: Mapping[int, datetime | None] | None = None,
    ) -> None:
        """Advance every series touched by a batch; rows are written in the caller's transaction.

        ``rejudged``: series whose *stored* readings changed verdict in this batch (rolling
        sample volume): they are replayed, whatever the new readings say. ``newest``: each
        monitor's newest stored reading before the batch (``tracker.monitoring.ingest_state``); a series
        that needs no replay and whose batch ends after it gets an idle machine, so the
        next batches are fed in order without the per-batch query.
        """
        now = now or utcnow()
        for judged in batch.values():
            judged.sort(key=lambda j: j.at)
        idle = self._idle_without_machine(session, batch) - set(rejudged)
        for key, judged in batch.items():
            entry = registry.by_id[key[0]]
            if not entry.limits.evaluable(key[1]):
                continue  # nothing to judge against (e.g. a CNC room's humidity): no episodes
            if key in idle:
                stored = (newest or {}).get(key[0])
                if stored is not None and judged[-1].at > stored:
                    # the series' newest reading is in limits, no episode open: an idle machine
                    self.machines[key] = SeriesMachine(close_after=self.closing(entry), last_at=judged[-1].at)
                continue
            machine = self.machines.get(key)
            if machine is None or (machine.last_at is not None and judged[0].at < machine.last_at):
                self.machines[key] = self.rebuild(session, entry, key[1], judged[0].at, now)
                continue
            touched: dict[int, Episode] = {}
            for j in judged:
                episode = machine.feed(j)
                if episode is not None:
                    touched[id(episode)] = episode
            for episode in touched.values():
                _save(session, entry, key[1], episode, now)
                if self.on_alert_closed and not episode.open and episode.level is Level.ALERT:
                    self.on_alert_closed(session, entry, episode, now)
            machine.closed.clear()

    def _idle_without_machine(self, session: Session, batch: dict[SeriesKey, list[Judged]]) -> set[SeriesKey]:
        """Series with no machine here (another worker wrote them last, or a restart) whose
        new readings are all in limits and fall after every stored episode's closing run:
        they change no episode, so they need no machine and no replay.

        In-limit readings never open an episode, and one that closed (its closing run
        complete) before them cannot be reshaped by them; an open episode, or one whose
        closing run reaches them, takes the replay. One query for the whole batch.
        """
        quiet = {
            key: judged[0].at
            for key, judged in batch.items()
            if key not in self.machines and all(j.level is Level.OK for j in judged)
        }
        if not quiet:
            return set()
        busy: set[SeriesKey] = set()
        for monitor_id, channel, closed_by in session.exec(
            select(Excursion.monitor_id, Excursion.channel, Excursion.closed_by_at).where(
                Excursion.monitor_id.in_(sorted({m for m, _ in quiet})),
                Excursion.type == "limit",
                Excursion.status != "superseded",
                or_(Excursion.closed_by_at.is_(None), Excursion.closed_by_at >= min(quiet.values())),
            )
        ):
            first = quiet.get((monitor_id, channel))
            if first is not None and (closed_by is None or closed_by >= first):
                busy.add((monitor_id, channel))
        return set(quiet) - busy

    @staticmethod
    def _quiet_point(
        session: Session, monitor_id: int, channel: str, before: datetime
    ) -> tuple[datetime, bool] | None:
        """Where a replay may start with an idle machine: ``(time, exclusive)``, or ``None``
        for the whole history.

        Normally the last in-limit reading before ``before``. A series with no out-of-limit
        reading before ``before`` (e.g. one that is never evaluated) has nothing pending, so
        the replay starts at ``before`` itself instead of re-reading its whole history.
        """
        series = (Reading.monitor_id == monitor_id, Reading.channel == channel, Reading.event_time < before)
        last_ok = session.exec(
            select(Reading.event_time)
            .where(*series, Reading.level == Level.OK.value)
            .order_by(Reading.event_time.desc())
            .limit(1)
        ).first()
        last_out = session.exec(
            select(Reading.event_time)
            .where(*series, Reading.level.in_((Level.ALERT.value, Level.ACTION.value)))
            .order_by(Reading.event_time.desc())
            .limit(1)
        ).first()
        if last_out is None:
            return before, False
        if last_ok is not None and last_ok > last_out:
            return last_ok, True
        return (last_ok, True) if last_ok is not None else None

    def rebuild(
        self, session: Session, entry: MonitorEntry, channel: str, first: datetime, now: datetime
    ) -> SeriesMachine:
        """Replay the series from the last quiet point before ``first`` and reconcile."""
        session.flush()
        affected = session.exec(
            select(Excursion).where(
                Excursion.monitor_id == entry.id,
                Excursion.channel == channel,
                Excursion.type == "limit",
                Excursion.status != "superseded",
                or_(Excursion.closed_by_at.is_(None), Excursion.closed_by_at >= first),
            )
        ).all()
        anchor_time = min([first, *(e.started_at for e in affected)])
        quiet = self._quiet_point(session, entry.id, channel, anchor_time)
        query = select(
            Reading.event_time, Reading.value, Reading.level, Reading.direction, Reading.state
        ).where(Reading.monitor_id == entry.id, Reading.channel == channel)
        if quiet is not None:
            query = query.where(Reading.event_time > quiet[0] if quiet[1] else Reading.event_time >= quiet[0])
        rows = session.exec(query.order_by(Reading.event_time, Reading.seq)).all()
        judged = [
            Judged(
                at=t,
                value=v,
                level=Level(lv),
                direction=d,
                state=st,
                bounds=entry.limits.for_reading(channel, st),
            )
            for t, v, lv, d, st in rows
        ]
        machine = replay(judged, close_after=self.closing(entry))
        replayed = [*machine.closed, *([machine.episode] if machine.episode else [])]
        machine.closed.clear()
        stored_query = select(Excursion).where(
            Excursion.monitor_id == entry.id,
            Excursion.channel == channel,
            Excursion.type == "limit",
            Excursion.status != "superseded",
        )
        if quiet is not None:
            stored_query = stored_query.where(Excursion.started_at >= quiet[0])
        stored = list(session.exec(stored_query.order_by(Excursion.started_at)))
        _reconcile(session, entry, channel, replayed, stored, now)
        if self.on_alert_closed and (replayed or stored):
            # closed, reshaped or superseded alerts: the trends follow
            self.on_alert_closed(session, entry, None, now)
        return machine


def _overlaps(episode: Episode, row: Excursion) -> bool:
    ep_end = episode.ended_at or datetime.max.replace(tzinfo=episode.started_at.tzinfo)
    row_end = row.ended_at or datetime.max.replace(tzinfo=row.started_at.tzinfo)
    return episode.started_at <= row_end and row.started_at <= ep_end


def excursion_shape(row: Excursion) -> dict:
    """What an audit event of a reshaped or superseded excursion records as before/after."""
    return {
        "started_at": row.started_at,
        "ended_at": row.ended_at,
        "level": row.level,
        "peak": row.peak,
        "readings": row.readings,
        "status": row.status,
    }


def _reconcile(
    session: Session,
    entry: MonitorEntry,
    channel: str,
    replayed: list[Episode],
    stored: list[Excursion],
    now: datetime,
) -> list[Episode]:
    """Match replayed episodes to stored rows; changes to existing rows are audited.

    Returns the episodes that are closed now and were not stored as closed before.
    """
    unmatched = list(stored)
    newly_closed: list[Episode] = []
    for episode in replayed:
        match = next((row for row in unmatched if _overlaps(episode, row)), None)
        before = None
        if match is not None:
            unmatched.remove(match)
            episode.key = match.id
            before = excursion_shape(match)
        row = _save(session, entry, channel, episode, now)
        if not episode.open and (before is None or before["status"] != "closed"):
            newly_closed.append(episode)
        if before is not None and (
            before["started_at"] != row.started_at
            or before["level"] != row.level
            or (before["ended_at"] is not None and before["ended_at"] != row.ended_at)
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
                reason=REPLAY_REASON,
            )
    for row in unmatched:
        supersede_excursion(session, row, now, REPLAY_REASON)
    return newly_closed


def supersede_excursion(session: Session, row: Excursion, now: datetime, reason: str) -> None:
    """Mark an excursion the stored data no longer support as superseded (never deleted), audited."""
    before = excursion_shape(row)
    row.status, row.updated_at = "superseded", now
    row.note = (f"{row.note}\n" if row.note else "") + "superseded: " + reason
    session.add(row)
    audit.record(
        session,
        actor=SYSTEM_ACTOR,
        action="excursion.supersede",
        entity="excursion",
        entity_key=str(row.id),
        before=before,
        after=excursion_shape(row),
        at=now,
        reason=reason,
    )


def _save(session: Session, entry: MonitorEntry, channel: str, episode: Episode, now: datetime) -> Excursion:
    row = session.get(Excursion, episode.key) if episode.key is not None else None
    if row is None:
        row = Excursion(
            site_id=entry.site_id,
            monitor_id=entry.id,
            room_id=entry.room_id,
            kind=entry.kind,
            channel=channel,
            basis_id=entry.basis_id,
            created_at=now,
            updated_at=now,
            level=episode.level.value,
            state=episode.state,
            direction=episode.direction,
            started_at=episode.started_at,
            peak=episode.peak,
        )
    row.level, row.state, row.direction = episode.level.value, episode.state, episode.direction
    row.started_at, row.ended_at = episode.started_at, episode.ended_at
    row.closed_by_at, row.last_out_at = episode.closed_by_at, episode.last_out_at
    row.peak, row.limit_value, row.readings = episode.peak, episode.limit, episode.readings
    row.status = "open" if episode.ended_at is None else "closed"
    row.updated_at = now
    session.add(row)
    session.flush()
    episode.key = row.id
    return row


# --------------------------------------------------------------------------- read-outs


def acknowledge(
    session: Session, *, actor: Authenticated, excursion_id: int, comment: str, now: datetime | None = None
) -> Excursion:
    """QA acknowledges an excursion with a comment (it has been seen and assessed); one that
    escalated since its acknowledgement is acknowledged again at its new level."""
    require_role(actor, "qa", action=Reason("acknowledging an excursion", "确认超标"))
    if not comment or not comment.strip():
        raise InvalidInputError(Reason("an acknowledgement needs a comment", "确认超标须填写说明"))
    ex = session.get(Excursion, excursion_id)
    if ex is None:
        raise NotFoundError(Reason(f"no excursion {excursion_id}", f"没有超标记录 {excursion_id}"))
    if ex.status == "superseded":
        raise ConflictError(
            Reason(
                f"excursion {excursion_id} was superseded by re-evaluation",
                f"超标 {excursion_id} 已因重新评价被取代",
            )
        )
    if not ex.needs_acknowledgement:
        raise ConflictError(
            Reason(
                f"excursion {excursion_id} is acknowledged already at level {ex.level}",
                f"超标 {excursion_id} 已在“{LEVEL_ZH.get(ex.level, ex.level)}”级别确认",
            )
        )
    now = now or utcnow()
    before = {"acknowledged_by": ex.acknowledged_by, "ack_level": ex.ack_level}
    ex.acknowledged_by, ex.acknowledged_at = actor.username, now
    ex.first_acknowledged_at = ex.first_acknowledged_at or now
    ex.ack_level, ex.ack_comment = ex.level, comment.strip()
    session.add(ex)
    audit.record(
        session,
        actor=actor.username,
        action="excursion.acknowledge",
        entity="excursion",
        entity_key=str(ex.id),
        before=before,
        after={"acknowledged_by": actor.username, "ack_level": ex.level},
        reason=ex.ack_comment,
        at=now,
    )
    return ex


def needs_acknowledgement_clause():
    """``Excursion.needs_acknowledgement`` as a SQL condition (queues and counts)."""
    return (Excursion.status != "superseded") & or_(
        Excursion.ack_level.is_(None),
        (Excursion.ack_level == "alert") & (Excursion.level == "action"),
    )


def acknowledge_many(
    session: Session,
    *,
    actor: Authenticated,
    excursion_ids: Collection[int],
    comment: str,
    now: datetime | None = None,
) -> tuple[list[Excursion], list[Reason]]:
    """Acknowledge several excursions with one comment (a gateway outage's burst of data gaps):
    each is acknowledged and audited on its own, exactly as :func:`acknowledge` would. Those that
    need no acknowledgement any more (acknowledged meanwhile, superseded) are skipped with the
    reason; anything else refused (a role, an empty comment, an unknown id) refuses them all."""
    require_role(actor, "qa", action=Reason("acknowledging an excursion", "确认超标"))
    if not excursion_ids:
        raise InvalidInputError(Reason("choose the excursions to acknowledge", "请选择要确认的超标"))
    now = now or utcnow()
    done: list[Excursion] = []
    skipped: list[Reason] = []
    for excursion_id in sorted(set(excursion_ids)):
        try:
            done.append(
                acknowledge(session, actor=actor, excursion_id=excursion_id, comment=comment, now=now)
            )
        except ConflictError as exc:
            skipped.append(exc.message)
    return done, skipped


def list_excursions(
    session: Session,
    *,
    open_only: bool = False,
    room: str | None = None,
    include_superseded: bool = False,
    type_: str | None = None,
    unacknowledged: bool = False,
) -> list[ExcursionDoc]:
    """Excursions in the JSON shape of DESIGN §9 (times ISO 8601 UTC)."""
    query = (
        # a viable excursion has no monitor: its sampling location stands in (docs/viable.md)
        select(Excursion, func.coalesce(Monitor.code, ViableSample.location), Room.code)
        .outerjoin(Monitor, Monitor.id == Excursion.monitor_id)
        .outerjoin(ViableSample, ViableSample.id == Excursion.viable_sample_id)
        .join(Room, Room.id == Excursion.room_id)
        .order_by(Excursion.started_at, Excursion.id)
    )
    if not include_superseded:
        query = query.where(Excursion.status != "superseded")
    if open_only:
        query = query.where(Excursion.status == "open")
    if room:
        query = query.where(Room.code == room)
    if type_:
        query = query.where(Excursion.type == type_)
    if unacknowledged:
        query = query.where(needs_acknowledgement_clause())
    return [to_json(ex, monitor, room_code) for ex, monitor, room_code in session.exec(query)]


class ExcursionDoc(TypedDict):
    """An excursion in the JSON shape of DESIGN §9, plus ``status`` and ``direction``."""

    id: int
    type: str  # limit | data_gap | recurrence | adverse_trend | recovery
    monitor: str
    room: str
    kind: str
    channel: str | None
    level: str
    state: str
    started_at: str
    ended_at: str | None
    peak: int | float
    limit: int | float | None
    readings: int
    status: str  # open | closed | superseded
    direction: str
    acknowledged_by: str | None
    acknowledged_at: str | None
    ack_comment: str | None
    #: who caused a supersession, why, and QA's approving signature (a room-state correction)
    superseded_by: str | None
    superseded_reason: str | None
    superseded_signature_id: int | None


def to_json(ex: Excursion, monitor: str, room: str) -> ExcursionDoc:
    return {
        "id": ex.id,
        "type": ex.type,
        "monitor": monitor,
        "room": room,
        "kind": ex.kind,
        "channel": ex.channel or None,
        "level": ex.level,
        "state": ex.state,
        "started_at": iso_utc(ex.started_at),
        "ended_at": iso_utc(ex.ended_at),
        "peak": ex.peak,
        "limit": ex.limit_value,
        "readings": ex.readings,
        "status": ex.status,
        "direction": ex.direction,
        "acknowledged_by": ex.acknowledged_by,
        "acknowledged_at": iso_utc(ex.acknowledged_at),
        "ack_comment": ex.ack_comment,
        "superseded_by": ex.superseded_by,
        "superseded_reason": ex.superseded_reason,
        "superseded_signature_id": ex.superseded_signature_id,
    }


def count_by_level(session: Session) -> dict[str, int]:
    """Excursions by level for ``tracker stats``: superseded ones and alarm challenges left out."""
    rows = session.exec(
        select(Excursion.level, func.count())
        .where(Excursion.status != "superseded", Excursion.challenge_id.is_(None), breaches())
        .group_by(Excursion.level)
    ).all()
    return {"alert": 0, "action": 0, **{level: int(n) for level, n in rows}}


@event.listens_for(OrmSession, "before_flush")
def _flag_challenges(session: OrmSession, _context: object, _instances: object) -> None:
    """A new excursion that starts inside a running alarm challenge of its monitor is that
    challenge's (a test): set before the insert, so its alarm is queued with the TEST marker.
    Costs one query per flush that inserts excursions, none otherwise."""
    new = [o for o in session.new if isinstance(o, Excursion) and o.challenge_id is None]
    if not new:
        return
    with session.no_autoflush:
        windows = session.execute(
            select(AlarmChallenge).where(AlarmChallenge.monitor_id.in_({ex.monitor_id for ex in new}))
        ).scalars()
        by_monitor: dict[int, list[AlarmChallenge]] = {}
        for w in windows:
            by_monitor.setdefault(w.monitor_id, []).append(w)
    for ex in new:
        for w in by_monitor.get(ex.monitor_id, ()):
            if w.covers(ex.started_at):
                ex.challenge_id = w.id
                break


@event.listens_for(OrmSession, "after_flush")
def _queue_notifications(session: OrmSession, _context: object) -> None:
    """Queue the notifications of excursions opened or raised in this flush (same transaction).

    Every path that writes excursions (episodes, gaps, recurrence, recovery, trends) flushes
    through here, so none can forget its alarm; a flush without excursions costs one scan
    of the session's few ORM objects (readings are bulk-inserted, never ORM objects).
    """
    changed = [o for o in (*session.new, *session.dirty) if isinstance(o, Excursion)]
    if changed:
        outbox.enqueue_changes(session, changed)
