"""What the records said at the cut-off, put back from the audit trail.

Most statuses are reconstructed from dated fields (``closed_at``, ``done_at``, signatures). A few
fields are edited in place, and their earlier value lives only in the audit event of the edit:
a deviation's classification, category or root cause (``deviation.update``, allowed until the
investigation is approved), a batch's impact assessment (``deviation.assess_impact``) and QA's
exposure decisions (a decision is reopened, and its row cleared, when its excursion changes:
``link.reopen``). An edit made after
the cut-off must not change the report of a closed period (issue 14 item 7; Nanning measures
Art. 15: the figures must be traceable to the records as they stood), so the first such edit
after the cut-off gives back the value it replaced.

Copies are returned, never the session's rows: nothing here is written back.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime

from sqlmodel import Session, select

from tracker.core.audit import AuditEvent
from tracker.quality.batches.models import ExcursionLink
from tracker.quality.deviations import Deviation, DeviationBatch

#: audit action → what an exposure link's decision was after it
DECISIONS = {"link.confirmed": "confirmed", "link.rejected": "rejected", "link.reopen": "undecided"}
#: the deviation fields ``update_deviation`` may change (its audit ``before`` holds them all)
EDITABLE = ("title", "classification", "category", "description", "root_cause")


def edits_after(session: Session, action: str, keys: Iterable[str], until: datetime) -> list[AuditEvent]:
    """The audit events ``action`` on ``keys`` made at or after the cut-off, oldest first."""
    wanted = set(keys)
    if not wanted:
        return []
    events = session.exec(
        select(AuditEvent)
        .where(AuditEvent.action == action, AuditEvent.at >= until, AuditEvent.entity_key.in_(sorted(wanted)))
        .order_by(AuditEvent.id)
    )
    return list(events)


def deviations_as_at(session: Session, devs: list[Deviation], until: datetime) -> list[Deviation]:
    """The deviations with the fields edited after ``until`` as they were before the first edit."""
    first: dict[str, dict] = {}
    for event in edits_after(session, "deviation.update", (d.number for d in devs), until):
        first.setdefault(event.entity_key, json.loads(event.before or "{}"))
    out = []
    for d in devs:
        before = first.get(d.number)
        if before is None:
            out.append(d)
            continue
        copy = Deviation.model_validate(d.model_dump())
        for name in EDITABLE:
            setattr(copy, name, before.get(name, getattr(d, name)))
        out.append(copy)
    return out


def impacts_as_at(
    session: Session, impacts: list[DeviationBatch], keys: dict[int, tuple[str, str]], until: datetime
) -> list[DeviationBatch]:
    """Impact assessments as they stood at ``until``; ``keys`` maps an impact row's id to its
    (deviation number, batch number), which the audit events name."""
    first: dict[tuple[str, str], dict] = {}
    numbers = {dev for dev, _ in keys.values()}
    for event in edits_after(session, "deviation.assess_impact", numbers, until):
        batch = json.loads(event.after or "{}").get("batch")
        first.setdefault((event.entity_key, batch), json.loads(event.before or "{}"))
    out = []
    for row in impacts:
        before = first.get(keys[row.id])
        if before is None:
            out.append(row)
            continue
        copy = DeviationBatch.model_validate(row.model_dump())
        copy.impact, copy.assessment = before.get("impact"), before.get("assessment")
        copy.assessed_at = None
        out.append(copy)
    return out


def link_decisions_at(session: Session, batch_numbers: Iterable[str], until: datetime) -> dict[int, str]:
    """QA's exposure decisions standing at the cut-off, by link id: the last decision or reopening
    recorded before it (``link.confirmed`` / ``link.rejected`` / ``link.reopen``)."""
    wanted = set(batch_numbers)
    out: dict[int, str] = {}
    if not wanted:
        return out
    for event in session.exec(
        select(AuditEvent)
        .where(
            AuditEvent.action.in_(tuple(DECISIONS)),
            AuditEvent.at < until,
            AuditEvent.entity_key.in_(sorted(wanted)),
        )
        .order_by(AuditEvent.id)
    ):
        link_id = json.loads(event.after or "{}").get("link")
        if link_id is not None:
            out[int(link_id)] = DECISIONS[event.action]
    return out


def link_status_at(link: ExcursionLink, decisions: dict[int, str]) -> str:
    """``confirmed`` / ``rejected`` when QA's decision stood at the cut-off, ``withdrawn`` when the
    system withdrew the proposal (its excursion superseded or no longer overlapping the step: a
    correction of the record, not a decision), else ``undecided``."""
    if link.status == "withdrawn":
        return "withdrawn"
    return decisions.get(link.id, "undecided")
