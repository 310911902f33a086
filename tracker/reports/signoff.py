"""Sign-off of the annual report with the existing e-signatures (no table of its own).

QA prepares the report (``performed``, scope ``annual_report:prepared``) and the head of quality
approves it (``approved``, scope ``annual_report:approved``); both sign the report's content
(:func:`tracker.reports.annual.document.signed_content`), which the signature row keeps as canonical JSON,
so the signed report itself is preserved. Because the content is "as at the end of the period",
rebuilding the report later reproduces it: a signature shows as broken when a record behind a
figure changed after signing.

Before preparing, QA confirms the statement on major quality or safety incidents (``approved``,
scope ``annual_report:major_incidents``, over
:func:`tracker.reports.annual.document.incidents_content`): the report prints the statement as a
finding only with that confirmation, and it is part of what is then prepared and approved
(Nanning measures Art. 16; regulatory.md §10.2–10.3; issue 14 item 7).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime

from sqlmodel import Session

from tracker.core.errors import ConflictError, InvalidInputError, NotFoundError, PermissionDeniedError, Reason
from tracker.core.timeutil import iso_utc
from tracker.facility.models import Site
from tracker.identity import signatures
from tracker.identity.users import Authenticated, User, require_role
from tracker.reports.annual.document import (
    INCIDENTS_SCOPE,
    REPORT_ENTITY,
    Period,
    incidents_content,
    report_key,
    signed_content,
)

ENTITY = REPORT_ENTITY
ROLES = {"annual_report:prepared": "prepared", "annual_report:approved": "approved"}


def entity_key(site: Site, period: Period) -> str:
    return report_key(site.code, period)


def report_signatures(session: Session, site: Site, period: Period) -> list[signatures.Signature]:
    """The report's sign-off signatures (prepared, approved), in signing order; QA's confirmation
    of the statement on major incidents is part of the report itself, not of the sign-off."""
    return [
        s for s in signatures.signatures_of(session, ENTITY, entity_key(site, period)) if s.scope in ROLES
    ]


def confirm_incidents(
    session: Session,
    *,
    signer: Authenticated,
    site: Site,
    period: Period,
    report: dict,
    incidents: Sequence[str] = (),
    comment: str | None = None,
    now: datetime | None = None,
) -> signatures.Signature:
    """QA confirms the report's statement on major quality or safety incidents: none occurred
    (``incidents`` empty), or the listed deviations of the period were such incidents. Assessing
    deviations of the major-incident classes needs the reasoning in ``comment``."""
    require_role(
        signer, "qa", action=Reason("confirming the statement on major incidents", "确认重大事故声明")
    )
    found = {d["number"] for d in report["deviations"]["list"]}
    unknown = sorted(set(incidents) - found)
    if unknown:
        raise InvalidInputError(
            Reason(
                f"not deviations of this report's period: {', '.join(unknown)}",
                f"不是本报告期的偏差：{'、'.join(unknown)}",
            )
        )
    assessed = report["summary"]["major_incidents"]["deviations"] or list(incidents)
    if assessed and not (comment or "").strip():
        raise InvalidInputError(
            Reason(
                f"QA's assessment of {', '.join(assessed)} needs its reasoning (--comment)",
                f"对 {'、'.join(assessed)} 的评估须说明理由（--comment）",
            )
        )
    key = entity_key(site, period)
    return signatures.sign(
        session,
        signer=signer,
        meaning="approved",
        entity=ENTITY,
        entity_key=key,
        scope=INCIDENTS_SCOPE,
        statement=f"QA confirms the statement on major quality or safety incidents of the annual evaluation report {key}",
        content=incidents_content(report, list(incidents)),
        comment=(comment or "").strip() or None,
        now=now,
    )


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
    preparer = session.get(User, last.user_id)
    if last.user_id == signer.user_id or (preparer is not None and preparer.person == signer.who):
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
