"""Adverse trends (``type=adverse_trend``): repeated alert excursions at one monitor.

EU GMP Annex 1 (2022) §9 expects alert levels to reveal adverse trends, at least
consecutive alert excursions (regulatory.md §5.2, §5.3: 2–3 consecutive alerts → trend
deviation); GMP 2010 Art. 252 makes quality-monitoring trends a CAPA input. Default: the
third alert excursion of a monitor within 24 h raises a trend spanning every alert of that
window; further alerts within the window extend it. Judged when an alert episode closes
(its final level is then known).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlmodel import Session, select

from tracker.excursions import Excursion
from tracker.registry import MonitorEntry


class TrendRule:
    def __init__(self, *, alerts: int = 3, window: timedelta = timedelta(hours=24)) -> None:
        self.alerts = alerts
        self.window = window

    def on_alert_closed(self, session: Session, entry: MonitorEntry, started_at: datetime,
                        state: str, now: datetime) -> Excursion | None:
        """Raise or extend the monitor's adverse trend after an alert episode closed."""
        session.flush()
        recent = session.exec(select(Excursion.started_at).where(
            Excursion.monitor_id == entry.id, Excursion.type == "limit",
            Excursion.level == "alert", Excursion.status == "closed",
            Excursion.started_at > started_at - self.window,
            Excursion.started_at <= started_at).order_by(Excursion.started_at)).all()
        if len(recent) < self.alerts:
            return None
        trend = session.exec(select(Excursion).where(
            Excursion.monitor_id == entry.id, Excursion.type == "adverse_trend",
            Excursion.status != "superseded",
            Excursion.ended_at >= started_at - self.window)
            .order_by(Excursion.started_at.desc())).first()
        if trend is None:
            trend = Excursion(type="adverse_trend", site_id=entry.site_id, monitor_id=entry.id,
                              room_id=entry.room_id, kind=entry.kind, channel="",
                              level="action", state=state, direction="none", status="closed",
                              started_at=recent[0], peak=0, readings=0,
                              limit_value=float(self.alerts), basis_id=entry.basis_id,
                              created_at=now, updated_at=now,
                              note=f"{self.alerts} alert excursions within "
                                   f"{self.window.total_seconds() / 3600:g} h")
        trend.ended_at = trend.closed_by_at = trend.last_out_at = started_at
        #: for a trend, ``readings`` counts the alert excursions it spans
        trend.readings = len([t for t in recent if t >= trend.started_at])
        trend.peak = float(trend.readings)
        trend.updated_at = now
        session.add(trend)
        return trend
