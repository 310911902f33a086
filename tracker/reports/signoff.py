"""Sign-off of the annual report with the existing e-signatures (no table of its own).

QA prepares the report (``performed``, scope ``annual_report:prepared``) and the head of quality
approves it (``approved``, scope ``annual_report:approved``); both sign the report's content
(:func:`tracker.reports.annual.document.signed_content`), which the signature row keeps as canonical JSON,
so the signed report itself is preserved. Because the content is "as at the end of the period",
rebuilding the report later reproduces it: a signature shows as broken when a record behind a
figure changed after signing.
"""

from __future__ import annotations

import json
from datetime import datetime

from sqlmodel import Session

from tracker.core.errors import ConflictError, NotFoundError, PermissionDeniedError, Reason
from tracker.core.timeutil import iso_utc
from tracker.facility.models import Site
from tracker.identity import signatures
from tracker.identity.users import Authenticated, require_role
from tracker.reports.annual.document import Period, signed_content

ENTITY = "annual_report"
ROLES = {"annual_report:prepared": "prepared", "annual_report:approved": "approved"}


def entity_key(site: Site, period: Period) -> str:
    return f"{site.code}/{period.label}"


def report_signatures(session: Session, site: Site, period: Period) -> list[signatures.Signature]:
    return signatures.signatures_of(session, ENTITY, entity_key(site, period))


def prepare(
    session: Session,
    *,
    signer: Authenticated,
    site: Site,
    period: Period,
    report: dict,
    now: datetime | None = None,
) -> signatures.Signature:
    """QA signs the report as prepared (编制)."""
    require_role(signer, "qa", action=Reason("preparing the annual report", "编制年度报告"))
    return signatures.sign(
        session,
        signer=signer,
        meaning="performed",
        entity=ENTITY,
        entity_key=entity_key(site, period),
        scope="annual_report:prepared",
        statement=f"QA prepared the annual evaluation report {entity_key(site, period)}",
        content=signed_content(report),
        now=now,
    )


def approve(
    session: Session,
    *,
    signer: Authenticated,
    site: Site,
    period: Period,
    report: dict,
    now: datetime | None = None,
) -> signatures.Signature:
    """The head of quality approves the report as prepared; refused if the records behind it changed
    since, or by the person who prepared it."""
    require_role(signer, "qa", action=Reason("approving the annual report", "批准年度报告"))
    prepared = [s for s in report_signatures(session, site, period) if s.scope == "annual_report:prepared"]
    if not prepared:
        key = entity_key(site, period)
        raise NotFoundError(
            Reason(
                f"the report {key} has not been prepared (signed by QA) yet",
                f"年度报告 {key} 尚未由 QA 编制签名",
            )
        )
    last = prepared[-1]
    if last.user_id == signer.user_id:
        raise PermissionDeniedError(
            Reason(
                "the report is approved by someone other than who prepared it",
                "年度报告须由编制人以外的人批准",
            )
        )
    content = signed_content(report)
    if signatures.content_hash(content) != last.content_hash:
        raise ConflictError(
            Reason(
                "the report changed since it was prepared: a record behind it was changed; "
                "QA prepares it again first",
                "报告编制后已发生变化：其依据的记录被修改，须先由 QA 重新编制",
            )
        )
    return signatures.sign(
        session,
        signer=signer,
        meaning="approved",
        entity=ENTITY,
        entity_key=entity_key(site, period),
        scope="annual_report:approved",
        statement=f"head of quality approves the annual evaluation report {entity_key(site, period)}",
        content=content,
        now=now,
    )


def signoff_block(session: Session, site: Site, period: Period, report: dict) -> list[dict]:
    """The report's signatures for the sign-off block, each checked against ``report``."""
    content = signed_content(report)
    checks = signatures.check_all(report_signatures(session, site, period), lambda _sig: content)
    return [
        {
            "role": ROLES.get(c.signature.scope, c.signature.scope),
            "printed_name": c.signature.printed_name,
            "username": c.signature.username,
            "meaning": c.signature.meaning,
            "signed_at": iso_utc(c.signature.signed_at),
            "content_hash": c.signature.content_hash,
            "status": c.status,
        }
        for c in checks
    ]


def signed_report(session: Session, site: Site, period: Period) -> dict:
    """The report exactly as last signed (the stored canonical JSON)."""
    sigs = report_signatures(session, site, period)
    if not sigs:
        raise NotFoundError(
            Reason(
                f"the report {entity_key(site, period)} has not been signed",
                f"年度报告 {entity_key(site, period)} 尚未签名",
            )
        )
    report = json.loads(sigs[-1].content)
    report["generated_at"] = iso_utc(sigs[0].signed_at)
    return report
