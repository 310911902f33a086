"""Quarantine viewer, audit trail with chain status, limits and proposals, users admin, QA's
approval of signing roles."""

import json
from typing import Annotated, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import func
from sqlmodel import select

from tracker.core.audit import AuditEvent, page_events, verify_chain
from tracker.core.timeutil import utcnow
from tracker.facility.load import site_signed_content
from tracker.facility.models import FacilityLimit
from tracker.identity import signatures, tokens, users
from tracker.identity.grants import approve_roles, role_requests
from tracker.monitoring.proposals import approve, list_proposals, propose, reject
from tracker.monitoring.quarantine import counts_by_reason, page_quarantine
from tracker.web.deps import CurrentUser, RowId, SessionDep, sign_in
from tracker.web.pages._common import form_instant
from tracker.web.render import done, render, tr
from tracker.web.sites import site_or_none, the_site
from tracker.wire.payload import printable

router = APIRouter(include_in_schema=False)
Text = Annotated[str, Form(max_length=5000)]
PAGE = 200


@router.get("/quarantine", response_class=HTMLResponse)
def quarantine_page(
    request: Request,
    me: CurrentUser,
    session: SessionDep,
    reason: Annotated[str | None, Query(max_length=40)] = None,
    before: Annotated[int | None, Query(ge=0, le=2**62)] = None,
    after: Annotated[int | None, Query(ge=0, le=2**62)] = None,
) -> HTMLResponse:
    """Newest first, a page at a time from the database; each payload as a short prefix."""
    page = page_quarantine(session, reason=reason or None, before=before, after=after, size=PAGE)
    shown = [
        {
            "id": q.id,
            "received_at": q.received_at,
            "topic": q.topic,
            "reason": q.reason,
            "detail": q.detail,
            "monitor": q.monitor_code,
            "payload": printable(q.payload_head.decode("utf-8", "replace"), 300),
            "size": q.payload_size,
            "cut": q.payload_size > len(q.payload_head),
        }
        for q in page.rows
    ]

    def link(**cursor) -> str:
        return "/quarantine?" + urlencode({k: v for k, v in {"reason": reason or "", **cursor}.items() if v})

    return render(
        request,
        "quarantine.html",
        rows=shown,
        counts=counts_by_reason(session),
        reason=reason or "",
        total=page.total,
        newer_url=link(after=page.newer) if page.newer else None,
        older_url=link(before=page.older) if page.older else None,
        newest_url=link() if page.newer else None,
    )


@router.get("/reports/annual")
def annual_report_download(
    request: Request,
    me: CurrentUser,
    session: SessionDep,
    year: Annotated[int, Query(ge=2000, le=2100)],
    fmt: Annotated[Literal["pdf", "html", "json"], Query(alias="format")] = "pdf",
) -> Response:
    """The site's annual evaluation report for ``year`` in the page's language (issue 4); built
    at most once per period, language, format and state of the audit trail within the cache
    time, a few builds per user an hour (``tracker.web.reports``)."""
    site = the_site(session)
    lang = "en" if request.state.lang == "en" else "zh-CN"
    # the newest change recorded (logins and tokens, frequent and never in a report, aside)
    head = session.exec(
        select(func.max(AuditEvent.id)).where(
            AuditEvent.action.not_like("auth.%"), AuditEvent.action.not_like("token.%")
        )
    ).one()
    key = (site.code, year, lang, fmt, head)

    def build() -> bytes:
        return _annual_report(session, site, year, lang, fmt)

    body = request.app.state.reports.get(key, user=me.username, build=build)
    name = f"annual-report-{site.code}-{year}-{lang}.{fmt}"
    media = {"json": "application/json", "html": "text/html; charset=utf-8", "pdf": "application/pdf"}[fmt]
    return Response(body, media_type=media, headers={"Content-Disposition": f'attachment; filename="{name}"'})


def _annual_report(session, site, year: int, lang: str, fmt: str) -> bytes:
    from tracker.reports.annual.document import build_annual_report, validate_report, year_period
    from tracker.reports.render import render_html, render_pdf
    from tracker.reports.signoff import signoff_block

    period = year_period(site.timezone, year)
    report = build_annual_report(session, site=site, period=period)
    signoff = signoff_block(session, site, period, report)
    if fmt == "json":
        document = {**report, "signoff": signoff}
        validate_report(document)
        return json.dumps(document, ensure_ascii=False, indent=2).encode("utf-8")
    if fmt == "html":
        return render_html(report, lang=lang, signoff=signoff).encode("utf-8")
    return render_pdf(report, lang=lang, signoff=signoff)


@router.get("/audit", response_class=HTMLResponse)
def audit_page(
    request: Request,
    me: CurrentUser,
    session: SessionDep,
    actor: Annotated[str | None, Query(max_length=120)] = None,
    action: Annotated[str | None, Query(max_length=80)] = None,
    entity: Annotated[str | None, Query(max_length=80)] = None,
    key: Annotated[str | None, Query(max_length=200)] = None,
    before: Annotated[int | None, Query(ge=0, le=2**62)] = None,
    after: Annotated[int | None, Query(ge=0, le=2**62)] = None,
) -> HTMLResponse:
    """The trail, newest first, a page at a time (``before``/``after``: keyset cursors), with the
    filter kept across pages and the whole chain's status."""
    intact, count, broken = verify_chain(session)
    filters = {"actor": actor or "", "action": action or "", "entity": entity or "", "key": key or ""}
    page = page_events(
        session, actor=actor, action=action, entity=entity, key=key, before=before, after=after, size=PAGE
    )

    def link(**cursor) -> str:
        return "/audit?" + urlencode({k: v for k, v in {**filters, **cursor}.items() if v not in ("", None)})

    return render(
        request,
        "audit.html",
        events=page.events,
        intact=intact,
        count=count,
        report_year=utcnow().year - 1,
        broken=broken,
        total=page.total,
        page_size=PAGE,
        newer_url=link(after=page.newer) if page.newer else None,
        older_url=link(before=page.older) if page.older else None,
        newest_url=link() if page.newer else None,
        filters=filters,
    )


@router.get("/limits", response_class=HTMLResponse)
def limits_page(request: Request, me: CurrentUser, session: SessionDep) -> HTMLResponse:
    site = site_or_none(session)
    current, manifest = [], []
    if site:
        current = session.exec(
            select(FacilityLimit)
            .where(FacilityLimit.site_id == site.id, FacilityLimit.revision == site.revision)
            .order_by(FacilityLimit.position)
        ).all()
        sigs = signatures.signatures_of(session, "site", site.code)

        def content_of(sig):
            return site_signed_content(session, site, sig.scope)

        manifest = [c.manifest(site.timezone) for c in signatures.check_all(sigs, content_of)]
    return render(
        request,
        "limits.html",
        site=site,
        current=current,
        proposals=list_proposals(session),
        signatures=manifest,
    )


@router.post("/limits/proposals")
def limits_propose(
    request: Request,
    me: CurrentUser,
    session: SessionDep,
    room: Annotated[str, Form(max_length=40)],
    kind: Annotated[str, Form(max_length=20)],
    state: Annotated[str, Form(max_length=20)],
    start: Annotated[str, Form(max_length=40)],
    end: Annotated[str, Form(max_length=40)],
    channel: Annotated[str | None, Form(max_length=8)] = None,
) -> RedirectResponse:
    start_at, end_at = form_instant(start), form_instant(end)
    propose(
        session,
        actor=me.actor(),
        room_code=room,
        kind=kind,
        channel=channel or None,
        state=state,
        start=start_at,
        end=end_at,
    )
    return done(request, "/limits", tr(request, "Proposal computed."))


@router.post("/limits/proposals/{proposal_id}/approve")
def limits_approve(
    request: Request,
    me: CurrentUser,
    session: SessionDep,
    proposal_id: RowId,
    password: Annotated[str, Form(max_length=1000)],
    comment: Annotated[str | None, Form(max_length=2000)] = None,
) -> RedirectResponse:
    signer = sign_in(request, me, password)
    approve(session, signer=signer, proposal_id=proposal_id, comment=comment or None)
    return done(request, "/limits", tr(request, "Proposal approved (signed)."))


@router.post("/limits/proposals/{proposal_id}/reject")
def limits_reject(
    request: Request, me: CurrentUser, session: SessionDep, proposal_id: RowId, reason: Text
) -> RedirectResponse:
    reject(session, actor=me.actor(), proposal_id=proposal_id, reason=reason)
    return done(request, "/limits", tr(request, "Proposal rejected."))


@router.get("/users", response_class=HTMLResponse)
def users_page(request: Request, me: CurrentUser, session: SessionDep) -> HTMLResponse:
    return render(request, "users.html", rows=users.list_users(session), roles=users.ROLES)


@router.post("/users")
def user_create(
    request: Request,
    me: CurrentUser,
    session: SessionDep,
    username: Annotated[str, Form(max_length=60)],
    full_name: Annotated[str, Form(max_length=200)],
    person: Annotated[str, Form(max_length=60)],
    roles: Annotated[list[str], Form()],
    password: Annotated[str, Form(max_length=1000)],
) -> RedirectResponse:
    users.create_user(
        session,
        username=username,
        full_name=full_name,
        person=person,
        roles=roles,
        password=password,
        actor=me.actor(),
    )
    return done(request, "/users", tr(request, "User created; the owner must change the password."))


@router.post("/users/{username}/clear-failures")
def user_clear_failures(
    request: Request, me: CurrentUser, session: SessionDep, username: str, reason: Text
) -> RedirectResponse:
    users.clear_failures(session, actor=me.actor(), username=username, reason=reason)
    return done(request, "/users", tr(request, "Failed logins cleared."))


@router.post("/users/{username}/deactivate")
def user_deactivate(
    request: Request, me: CurrentUser, session: SessionDep, username: str, reason: Text
) -> RedirectResponse:
    user = users.deactivate(session, actor=me.actor(), username=username, reason=reason)
    request.app.state.sessions.drop_user(user.id, db=session)
    tokens.revoke_all(session, user_id=user.id, by=me.username, reason=f"account deactivated: {reason}")
    return done(request, "/users", tr(request, "Account deactivated."))


@router.post("/users/{username}/roles")
def user_roles(
    request: Request,
    me: CurrentUser,
    session: SessionDep,
    username: str,
    roles: Annotated[list[str], Form()],
    reason: Text,
) -> RedirectResponse:
    users.set_roles(session, actor=me.actor(), username=username, roles=roles, reason=reason)
    return done(request, "/users", tr(request, "Roles changed."))


@router.post("/users/{username}/reset-password")
def user_reset(
    request: Request,
    me: CurrentUser,
    session: SessionDep,
    username: str,
    password: Annotated[str, Form(max_length=1000)],
    reason: Text,
) -> RedirectResponse:
    user = users.set_password(
        session, actor=me.actor(), username=username, new_password=password, reason=reason
    )
    request.app.state.sessions.drop_user(user.id, db=session)
    tokens.revoke_all(session, user_id=user.id, by=me.username, reason=f"password reset: {reason}")
    return done(request, "/users", tr(request, "Password reset; the owner must change it."))


@router.get("/access", response_class=HTMLResponse)
def access_page(request: Request, me: CurrentUser, session: SessionDep) -> HTMLResponse:
    """QA's list of signing roles an admin asked for (in force once QA approves, signed)."""
    return render(request, "access.html", rows=role_requests(session))


@router.post("/access/{grant_id}/approve")
def access_approve(
    request: Request,
    me: CurrentUser,
    session: SessionDep,
    grant_id: RowId,
    password: Annotated[str, Form(max_length=1000)],
    comment: Annotated[str | None, Form(max_length=2000)] = None,
) -> RedirectResponse:
    signer = sign_in(request, me, password)
    approve_roles(session, signer=signer, grant_id=grant_id, comment=comment or None)
    return done(request, "/access", tr(request, "Roles approved (signed)."))
