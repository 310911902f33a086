"""The compliance rules a site judges and classifies by, from its facility file.

They used to be environment variables, which anyone who can restart a process could change
without a trace. In the facility file they are versioned with each revision, changed only
with QA's e-signed approval (``tracker.facility.load``), and stored with the revision that
judged each reading (``facility_revision.settings``), so a later reader knows which rules
applied (GMP 2010 Art. 161, 163; 计算机化系统附录 on changes to critical data; DESIGN §10).

``[rules]``: ``episode_close_after`` (consecutive in-limit readings that end an episode),
``gap_factor`` (silence longer than this × a monitor's interval is a data gap),
``trend_alerts`` and ``trend_window_h`` (alert excursions of one monitor within the window
that make an adverse trend, Annex 1 (2022) §9.x adverse trends; regulatory.md §5.2),
``forecast_horizon_h`` and ``forecast_window_min`` (the breach forecast of docs/trending.md:
how far ahead a ``predicted`` warning looks, 0 = off, and how much history it fits). A
warning never counts as a breach, but it is a record and it alarms people through
``[[notify]]``, so its settings sit under the same change control as the rules that do.
``[quality]``: ``deviation_classes`` (most severe first), ``capa_required`` (classes that
cannot close without CAPA, GMP 2010 Art. 250), ``major_incident_classes`` (what the annual
report counts as a major quality or safety incident, 南宁试点 Art. 13-15).
``[records]``: ``late_entry_after_min`` (a process step or room state entered later than this
after it happened needs the reason it is late) and ``backdate_max_h`` (a step older than this is
refused and recorded as a deviation; a room state needs QA's e-signed approval): records are
made at the time of the activity (同步记录 of 《药品记录与数据管理要求（试行）》; regulatory.md §9.2), and a
backdated record re-judges readings, so how late is too late is a QA decision, not an
operator's environment variable.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields

from sqlmodel import Session, select

from tracker.facility.models import FacilityRevision, Site
from tracker.facility.viable import ViablePlan


@dataclass(frozen=True)
class Compliance:
    close_after: int = 3
    gap_factor: float = 3.0
    trend_alerts: int = 3
    trend_window_h: float = 24.0
    #: off unless a site switches it on (a QA-approved facility change)
    forecast_horizon_h: float = 0.0
    forecast_window_min: float = 120.0
    deviation_classes: tuple[str, ...] = ("critical", "major", "minor")
    capa_required: tuple[str, ...] = ("critical", "major")
    major_incident_classes: tuple[str, ...] = ("critical",)
    late_entry_min: float = 15.0
    backdate_max_h: float = 24.0

    def as_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict | None) -> Compliance:
        """From stored settings; a key missing (a revision from before it existed) keeps its default."""
        known = {f.name for f in fields(cls)}
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in (data or {}).items() if k in known}
        return cls(**values)


def compliance_of(session: Session, site: Site, revision: int | None = None) -> Compliance:
    """The rules of the site's current revision, or of ``revision`` (defaults where it stored none)."""
    wanted = site.revision if revision is None else revision
    settings = session.exec(
        select(FacilityRevision.settings).where(
            FacilityRevision.site_id == site.id, FacilityRevision.revision == wanted
        )
    ).first()
    return Compliance.from_dict(json.loads(settings).get("compliance") if settings else None)


def notify_settings_of(session: Session, site: Site, revision: int | None = None) -> dict:
    """The ``[[notify]]`` rules, language and link base of a revision (the current one unless given)."""
    settings = session.exec(
        select(FacilityRevision.settings).where(
            FacilityRevision.site_id == site.id,
            FacilityRevision.revision == (site.revision if revision is None else revision),
        )
    ).first()
    stored = json.loads(settings).get("notify") if settings else None
    return stored or {"rules": [], "language": "zh-CN", "base_url": ""}


def viable_plan_of(session: Session, site: Site, revision: int | None = None) -> ViablePlan:
    """The viable sampling plan of a revision (the current one unless given; empty where none)."""
    settings = session.exec(
        select(FacilityRevision.settings).where(
            FacilityRevision.site_id == site.id,
            FacilityRevision.revision == (site.revision if revision is None else revision),
        )
    ).first()
    return ViablePlan.from_dict(json.loads(settings).get("viable") if settings else None)
