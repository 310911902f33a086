"""An in-memory snapshot of the facility for the ingest hot path.

Built once and rebuilt only when a site's revision changes: monitor lookup by
(site, code), resolved limits per monitor, and the evaluation basis id per site.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from zoneinfo import ZoneInfo

from sqlalchemy import func
from sqlmodel import Session, select

from tracker.facility.basis import basis_id
from tracker.facility.inhibits import Inhibit, windows_by_monitor
from tracker.facility.limits import (
    INVALID,
    OK,
    STATES,
    Bounds,
    Level,
    MonitorLimits,
    Verdict,
    evaluate,
    load_limit_set,
)
from tracker.facility.models import Site, resolved_monitors
from tracker.facility.policy import Compliance, compliance_of
from tracker.monitoring.rules.volume import (
    UL_PER_M3,
    Sample,
    count_of,
    is_burst,
    single_count_exceeds,
    volume_ul,
)


@dataclass(frozen=True, slots=True)
class ChannelJudgement:
    """One channel value judged by its room's state at its time: what ingest stores and what
    re-evaluation compares with the stored row (``MonitorEntry.judge`` makes both).

    A particle sample too small to resolve its action limit also carries its rolling-volume
    ``sample``: the window pass of ``tracker.monitoring.rules.volume`` replaces the sample's
    verdict with the final one, so the verdict to store is ``final``, read after that pass.
    """

    #: the per-sample verdict (a too-small sample is at most an alert on its own)
    verdict: Verdict
    #: why the reading proves nothing (``MonitorEntry.invalid_reason``), or ``None``
    invalid: str | None
    bounds: Bounds | None
    sample: Sample | None = None

    @property
    def final(self) -> Verdict:
        """The verdict to store: the rolling window's for a too-small sample, else ``verdict``."""
        return self.verdict if self.sample is None else self.sample.verdict


@dataclass(frozen=True, slots=True)
class MonitorEntry:
    id: int
    code: str
    site_id: int
    site_code: str
    room_id: int
    room_code: str
    grade: str
    kind: str
    channels: tuple[str, ...]
    interval_s: float
    calibration_due: date | None
    limits: MonitorLimits
    basis_id: int
    range_low: float | None = None
    range_high: float | None = None
    #: maintenance windows [start, end) during which readings are flagged, not alarmed
    inhibits: tuple[tuple[datetime, datetime], ...] = ()
    #: particles: registered sample volume (L), the fallback for readings stored without one
    sample_volume_l: float | None = None
    #: the site's rolling volume for volume-aware particle evaluation, in µL
    rolling_ul: int = UL_PER_M3
    #: recovery window after an operation (s): particle readings in it are judged by
    #: in-operation limits (``tracker.monitoring.rules.recovery``); 0 for other kinds
    recovery_s: float = 0.0
    #: the rolling window's time bound (s): no sample older than this before the newest
    rolling_max_age_s: float | None = None
    #: counts in one sample above the limit that are an action on their own (limit set)
    burst_counts: int = 2
    #: the site's time zone: a calibration due date is a local calendar day
    timezone: str = "Asia/Shanghai"
    #: the site's compliance rules (episode closing, gap factor, trends) from its facility file
    compliance: Compliance = field(default_factory=Compliance)

    def invalid_reason(self, value: float, status: str, at: datetime) -> str | None:
        """Why a reading proves nothing, or ``None``: sensor status, an inhibit, overdue
        calibration (the due date is the last valid day in the site's time zone), or a value
        outside the instrument's range on the near side of every action limit."""
        if status != "ok":
            return f"status_{status}"
        if any(start <= at < end for start, end in self.inhibits):
            return "inhibited"
        if (
            self.calibration_due is not None
            and at.astimezone(ZoneInfo(self.timezone)).date() > self.calibration_due
        ):
            return "calibration_overdue"
        if (self.range_low is not None and value < self.range_low) or (
            self.range_high is not None and value > self.range_high
        ):
            return "outside_instrument_range"
        return None

    def beyond_range_breach(self, value: float, bounds: Bounds | None) -> Verdict | None:
        """A value off the instrument's scale past an action limit is an action, not merely
        invalid: a reversed airflow pins a pressure sensor at its low end (issue 14 item 5)."""
        if bounds is None:
            return None
        if self.range_low is not None and value < self.range_low and bounds.action_low is not None:
            return Verdict(Level.ACTION, "low", bounds.action_low)
        if self.range_high is not None and value > self.range_high and bounds.action_high is not None:
            return Verdict(Level.ACTION, "high", bounds.action_high)
        return None

    def judge(
        self,
        channel: str,
        value: float,
        *,
        status: str,
        at: datetime,
        seq: int,
        state: str,
        volume_l: float | None,
    ) -> ChannelJudgement:
        """Judge one channel value by the limits of ``state``; invalid ones are not judged.

        A particle sample in which one count already exceeds the action limit is at most an
        alert here and joins its series' rolling-volume window (``sample``): the window test of
        ``tracker.monitoring.rules.volume`` decides action. Ingest and re-evaluation both judge
        here, so a stored verdict and its re-evaluation cannot drift apart.
        """
        bounds = self.limits.for_reading(channel, state)
        reason = self.invalid_reason(value, status, at)
        if reason == "outside_instrument_range" and (breach := self.beyond_range_breach(value, bounds)):
            return ChannelJudgement(breach, None, bounds)
        if reason is not None:
            return ChannelJudgement(INVALID, reason, bounds)
        verdict = evaluate(value, bounds)
        if not volume_l or bounds is None or verdict.level is Level.NOT_EVALUATED:
            return ChannelJudgement(verdict, None, bounds)
        rolling = single_count_exceeds(bounds, volume_l)
        if not rolling and not self._rolls(channel, volume_l):
            return ChannelJudgement(verdict, None, bounds)
        count = count_of(value, volume_l)
        burst = rolling and is_burst(count, value, bounds, self.burst_counts)
        sample = Sample(
            at=at,
            seq=seq,
            count=count,
            volume_ul=volume_ul(volume_l),
            limit=bounds.action_high,
            verdict=verdict if burst or not rolling else OK,
            rolling=rolling and not burst,
            state=state,
            alert=bounds.alert_high,
            burst=burst,
        )
        return ChannelJudgement(sample.verdict, None, bounds, sample)

    def _rolls(self, channel: str, volume_l: float) -> bool:
        """Whether a single count rolls in any state of the channel: then a sample of a state
        that does not roll still marks the series (it ends the other state's window)."""
        return any(single_count_exceeds(self.limits.for_reading(channel, st), volume_l) for st in STATES)


@dataclass(frozen=True)
class Registry:
    marker: tuple
    by_code: dict[tuple[str, str], MonitorEntry]
    by_id: dict[int, MonitorEntry]

    def lookup(self, site: str, code: str) -> MonitorEntry | None:
        return self.by_code.get((site, code))


def registry_marker(session: Session) -> tuple:
    """Changes when a facility file is loaded or an inhibit is added or cancelled."""
    sites = tuple(session.exec(select(Site.code, Site.revision).order_by(Site.code)).all())
    inhibits = session.exec(
        select(func.count(Inhibit.id), func.max(Inhibit.id), func.count(Inhibit.cancelled_at))
    ).one()
    return sites, tuple(inhibits)


def build_registry(session: Session) -> Registry:
    """Resolve every active monitor's limits; creates evaluation-basis rows as needed."""
    by_code: dict[tuple[str, str], MonitorEntry] = {}
    inhibits = windows_by_monitor(session)
    for site in session.exec(select(Site)).all():
        limit_set = load_limit_set(site.limit_set)
        basis = basis_id(
            session,
            site_id=site.id,
            code=limit_set.code,
            version=limit_set.version,
            sha256=limit_set.sha256,
            revision=site.revision,
        )
        compliance = compliance_of(session, site)
        for resolved in resolved_monitors(session, site):
            mon, room = resolved.monitor, resolved.room
            by_code[(site.code, mon.code)] = MonitorEntry(
                id=mon.id,
                code=mon.code,
                site_id=site.id,
                site_code=site.code,
                room_id=room.id,
                room_code=room.code,
                grade=room.grade,
                kind=mon.kind,
                channels=resolved.channels,
                interval_s=mon.interval_s,
                calibration_due=mon.calibration_due,
                limits=resolved.limits,
                basis_id=basis,
                range_low=mon.range_low,
                range_high=mon.range_high,
                inhibits=tuple(inhibits.get(mon.id, ())),
                sample_volume_l=mon.sample_volume_l,
                rolling_ul=round(site.rolling_volume_m3 * UL_PER_M3),
                recovery_s=site.recovery_s if mon.kind == "particles" else 0.0,
                rolling_max_age_s=site.rolling_window_s,
                burst_counts=limit_set.burst_counts,
                timezone=site.timezone,
                compliance=compliance,
            )
    return Registry(
        marker=registry_marker(session), by_code=by_code, by_id={e.id: e for e in by_code.values()}
    )
