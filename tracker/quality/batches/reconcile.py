"""GMP state that lives in ordinary rows, reconciled against the audit trail.

Acknowledgements, exposure-link decisions, review assessments of invalid periods and user
roles are updated in place; the keyed chain covers the audit events written with each
change, not the rows. ``tracker audit verify`` therefore compares each row with the newest
audit event recorded for it: a raw-SQL flip of a decision or a forged acknowledgement has no
matching event and shows (issue 15; 计算机化系统附录 on audit trails of critical data).
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from sqlmodel import Session, select

from tracker.core.audit import AuditEvent
from tracker.identity.users import MIGRATED_ENROLMENT, User
from tracker.monitoring.excursions import Excursion
from tracker.quality.batches.models import Batch, ExcursionLink, ReviewAssessment


def _events(session: Session, actions: Iterable[str]) -> list[AuditEvent]:
    return list(
        session.exec(select(AuditEvent).where(AuditEvent.action.in_(list(actions))).order_by(AuditEvent.id))
    )


def _after(event: AuditEvent) -> dict:
    return json.loads(event.after or "{}")


def acknowledgement_problems(session: Session) -> list[str]:
    """Each excursion's acknowledgement equals the newest ``excursion.acknowledge`` event."""
    newest = {int(e.entity_key): e for e in _events(session, ["excursion.acknowledge"])}
    problems = []
    for ex in session.exec(
        select(Excursion).where(Excursion.acknowledged_by.is_not(None)).order_by(Excursion.id)
    ):
        event = newest.pop(ex.id, None)
        if event is None:
            problems.append(f"excursion {ex.id}: acknowledgement by {ex.acknowledged_by} has no audit event")
            continue
        after = _after(event)
        if (after.get("acknowledged_by"), after.get("ack_level"), event.reason) != (
            ex.acknowledged_by,
            ex.ack_level,
            ex.ack_comment,
        ):
            problems.append(f"excursion {ex.id}: acknowledgement differs from audit event {event.id}")
    problems += [
        f"excursion {key}: acknowledged in audit event {e.id}, not in the record" for key, e in newest.items()
    ]
    return problems


def link_problems(session: Session) -> list[str]:
    """Each exposure link's decision equals the newest decision, reopening or withdrawal event."""
    by_link: dict[int, AuditEvent] = {}
    withdrawn: dict[tuple[int, int], AuditEvent] = {}
    for event in _events(session, ["link.confirmed", "link.rejected", "link.reopen", "link.withdraw"]):
        after = _after(event)
        if event.action == "link.withdraw":
            withdrawn[(after.get("excursion"), after.get("step"))] = event
        elif "link" in after:
            by_link[after["link"]] = event
    problems = []
    for link in session.exec(select(ExcursionLink).order_by(ExcursionLink.id)):
        event = by_link.get(link.id)
        if link.status == "withdrawn":
            if (link.excursion_id, link.step_id) not in withdrawn:
                problems.append(f"link {link.id}: withdrawn without an audit event")
            continue
        if event is None or event.action == "link.reopen":
            if link.status != "proposed":
                problems.append(f"link {link.id}: decided {link.status} without an audit event")
            continue
        expected = (_after(event).get("status"), event.actor, event.reason)
        if expected != (link.status, link.decided_by, link.reason):
            problems.append(f"link {link.id}: decision differs from audit event {event.id}")
    return problems


def assessment_problems(session: Session) -> list[str]:
    """Each review assessment (an invalid period or data gap judged by QA) has its event."""
    recorded = {}
    for event in _events(session, ["batch.assess_item"]):
        after = _after(event)
        recorded[(event.entity_key, after.get("item"))] = (after.get("exposed"), event.reason, event.actor)
    problems = []
    for row, number in session.exec(
        select(ReviewAssessment, Batch.number).join(Batch, Batch.id == ReviewAssessment.batch_id)
    ):
        if recorded.get((number, row.item_key)) != (row.exposed, row.reason, row.assessed_by):
            problems.append(f"batch {number}: assessment of {row.item_key} differs from the audit trail")
    return problems


def role_problems(session: Session) -> list[str]:
    """Each account's roles, active flag and person equal the newest user event that recorded
    them, and its enrolment the newest enrolment or reset (a raw-SQL grant, person or enrolment
    shows; accounts created before persons existed have no recorded person to compare)."""
    latest: dict[str, dict] = {}
    enrolled: dict[str, AuditEvent] = {}
    for event in _events(session, ["user.create", "user.roles", "user.deactivate"]):
        latest[event.entity_key] = {**latest.get(event.entity_key, {}), **_after(event), "event": event.id}
    for event in _events(session, ["user.enrol", "user.password_reset"]):
        enrolled[event.entity_key] = event
    problems = []
    for user in session.exec(select(User).order_by(User.id)):
        after = latest.get(user.username)
        if after is None:
            problems.append(f"user {user.username}: no audit event records the account")
        elif (after.get("roles"), after.get("active")) != (user.roles, user.active):
            problems.append(f"user {user.username}: roles or status differ from audit event {after['event']}")
        elif "person" in after and after["person"] != user.person:
            # separation of duties compares persons: a person rewritten in the row is a forgery
            problems.append(f"user {user.username}: person differs from audit event {after['event']}")
        if user.enrolled_witness == MIGRATED_ENROLMENT:
            continue
        event = enrolled.get(user.username)
        recorded = event is not None and _after(event).get("enrolled") is True
        if recorded != (user.enrolled_at is not None):
            problems.append(f"user {user.username}: enrolment differs from the audit trail")
    return problems


def reconciliation_problems(session: Session) -> list[str]:
    return (
        acknowledgement_problems(session)
        + link_problems(session)
        + assessment_problems(session)
        + role_problems(session)
    )
