"""Whole-database integrity beyond the audit chain, for ``tracker audit verify``.

* every e-signature checked against its record (batches, steps, deviations, facility limits);
* every signing in the audit trail has its signature row, and every signature row its audit
  event (a deleted or forged row shows);
* every batch status past ``completed`` stands on the signatures it needs.
"""

from __future__ import annotations

import json

from sqlmodel import Session, select

from tracker.core.audit import AuditEvent
from tracker.facility.load import site_signed_content
from tracker.facility.models import Site
from tracker.identity import signatures
from tracker.identity.grants import grant_checks
from tracker.identity.users import User
from tracker.monitoring.state_changes import room_state_checks
from tracker.quality.batches.models import Batch
from tracker.quality.batches.release import signature_checks, status_problems
from tracker.quality.deviations import list_deviations
from tracker.quality.deviations import signature_checks as deviation_checks


def all_signature_checks(session: Session) -> list[signatures.SignatureCheck]:
    """Every signature in the database checked against its record."""
    checks = []
    for batch in session.exec(select(Batch).order_by(Batch.id)):
        checks += signature_checks(session, batch)
    for dev in list_deviations(session):
        checks += deviation_checks(session, dev)
    for site in session.exec(select(Site).order_by(Site.id)):
        checks += signatures.check_all(
            signatures.signatures_of(session, "site", site.code),
            lambda sig, site=site: site_signed_content(session, site, sig.scope),
        )
    checks += room_state_checks(session)
    for user in session.exec(select(User).order_by(User.id)):
        checks += grant_checks(session, user)
    # annual reports: the signed report is the stored content itself (rebuilding it is the report's job)
    for sig in session.exec(
        select(signatures.Signature)
        .where(signatures.Signature.entity == "annual_report")
        .order_by(signatures.Signature.id)
    ):
        checks.append(signatures.check(sig, json.loads(sig.content)))
    return checks


def integrity_problems(session: Session) -> list[str]:
    """What does not add up between signatures, the audit trail and record statuses."""
    problems = []
    rows = {sig.seal: sig for sig in session.exec(select(signatures.Signature))}
    audited = set()
    for event in session.exec(select(AuditEvent).where(AuditEvent.action.like("signature.%"))):
        seal = json.loads(event.after or "{}").get("seal")
        audited.add(seal)
        if seal not in rows:
            problems.append(
                f"audit event {event.id} ({event.action} by {event.actor} on {event.entity} "
                f"{event.entity_key}) has no signature row: deleted or altered"
            )
    for seal, sig in rows.items():
        if seal not in audited:
            problems.append(f"signature {sig.id} ({sig.meaning} by {sig.username}) is not in the audit trail")
    for batch in session.exec(select(Batch).order_by(Batch.id)):
        problems += status_problems(session, batch)
    return problems
