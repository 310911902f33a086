"""Sign-off of the periodic limits review (issue 21 item 5) with the existing e-signatures.

QA signs the review document (``reviewed``, entity ``limits_review``, key ``SITE/FROM/TO``);
the signature keeps the canonical JSON of what was signed. Checking rebuilds the review
without new detection: a signature shows as broken when a figure behind it changed (a
re-judged excursion, an annotated change point) — the review is then done again.
"""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session

from tracker.core.timeutil import iso_utc
from tracker.facility.models import Site
from tracker.identity import signatures
from tracker.identity.users import Authenticated, require_role
from tracker.monitoring.trending.review import build_review

ENTITY = "limits_review"
SCOPE = "limits_review"


def review_key(site: Site, start: datetime, end: datetime) -> str:
    return f"{site.code}/{iso_utc(start)}/{iso_utc(end)}"


def sign_review(
    session: Session,
    *,
    signer: Authenticated,
    site: Site,
    start: datetime,
    end: datetime,
    review: dict,
    comment: str | None = None,
    now: datetime | None = None,
) -> signatures.Signature:
    """QA signs the review as reviewed; what it signed is kept with the signature."""
    require_role(signer, "qa", action="signing the limits review")
    return signatures.sign(
        session,
        signer=signer,
        meaning="reviewed",
        entity=ENTITY,
        entity_key=review_key(site, start, end),
        scope=SCOPE,
        statement=f"QA reviewed the alert and action levels of {site.code} against the data of "
        f"{iso_utc(start)}/{iso_utc(end)}",
        content=review,
        comment=comment,
        now=now,
    )


def review_signatures(
    session: Session, site: Site, start: datetime, end: datetime
) -> list[signatures.SignatureCheck]:
    """Every signature of the review, checked against the review as the data now stand."""
    sigs = signatures.signatures_of(session, ENTITY, review_key(site, start, end))
    if not sigs:
        return []
    current = build_review(session, site, start, end, detect=False)
    return signatures.check_all(sigs, lambda _sig: current)
