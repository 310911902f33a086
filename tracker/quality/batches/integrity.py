"""Whole-database integrity beyond the audit chain, for ``tracker audit verify``.

* every e-signature checked against its record (batches, steps, deviations, facility limits);
* every signing in the audit trail has its signature row, and every signature row its audit
  event (a deleted or forged row shows);
* every batch status past ``completed`` stands on the signatures it needs;
* not failures, but shown: signatures over an environmental picture that changed since
  (:func:`environment_notes`) and post-release events awaiting QA.
"""

from __future__ import annotations

import json
from datetime import datetime

from sqlmodel import Session, select

from tracker.core.audit import AuditEvent
from tracker.facility.load import site_signed_content
from tracker.facility.models import Site
from tracker.identity import signatures
from tracker.identity.grants import grant_checks
from tracker.identity.users import User
from tracker.monitoring.state_changes import room_state_checks
from tracker.quality.batches.environment import environment_content, environment_hash
from tracker.quality.batches.models import Batch
from tracker.quality.batches.postrelease import events_of
from tracker.quality.batches.release import signature_checks, status_problems
from tracker.quality.batches.viable import integrity_problems as viable_integrity
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


def integrity_problems(session: Session, *, now: datetime | None = None) -> list[str]:
    """What does not add up between signatures, the audit trail and record statuses, and
    conditional releases still without their viable review after the incubation period."""
    problems = viable_integrity(session, now=now)
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


def environment_notes(session: Session) -> list[str]:
    """Not failures but facts ``tracker audit verify`` shows: QA-review and release signatures
    whose environmental picture changed after signing (new facts, not edits), and where each
    stands — QA to review again before release; after release the post-release events raised
    for it (awaiting QA or assessed), or not raised yet — and every post-release event still
    awaiting QA's assessment."""
    notes = []
    for batch in session.exec(select(Batch).order_by(Batch.id)):
        outdated = [c.signature for c in signature_checks(session, batch) if c.outdated]
        events = events_of(session, batch)
        if outdated and batch.status != "released":
            notes += [
                f"batch {batch.number}: {s.scope} signature {s.id} no longer matches its environmental picture: QA reviews again"
                for s in outdated
            ]
        elif outdated:
            registered = environment_hash(environment_content(session, batch)) == batch.env_hash
            where = (
                "post-release events " + ", ".join(f"{e.id} ({e.status})" for e in events)
                if registered and events
                else "not raised as a post-release event yet (tracker batch watch)"
            )
            notes += [
                f"batch {batch.number}: {s.scope} signature {s.id} no longer matches its environmental picture: {where}"
                for s in outdated
            ]
        notes += [
            f"batch {batch.number}: post-release event {e.id} ({e.kinds}) awaits QA's assessment"
            for e in events
            if e.status == "open"
        ]
    return notes
