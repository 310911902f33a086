"""System alarms and alarm challenges on the web (issue 16 items 4 and 5): system alarms listed
and acknowledged with a comment; QA starts a challenge with an e-signature, ends it, signs its
record as evidence and downloads it (JSON, PDF) — the same services as the CLI's
``tracker system-alarms`` and ``tracker challenge``."""

import json
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlmodel import select

from tracker.facility.models import Monitor
from tracker.monitoring import challenges
from tracker.monitoring.health import acknowledge_system_alarm, system_alarm_docs
from tracker.web.deps import CurrentUser, RowId, SessionDep, sign_in
from tracker.web.render import done, render, tr

router = APIRouter(include_in_schema=False)


@router.get("/system-alarms", response_class=HTMLResponse)
def system_alarms_page(request: Request, me: CurrentUser, session: SessionDep) -> HTMLResponse:
    rows = system_alarm_docs(session)
    rows.sort(key=lambda a: (a["status"] != "open", a["acknowledged_at"] is not None))  # open, unseen first
    return render(request, "system_alarms.html", rows=rows)


@router.post("/system-alarms/{alarm_id}/acknowledge")
def system_alarm_acknowledge(
    request: Request,
    me: CurrentUser,
    session: SessionDep,
    alarm_id: RowId,
    comment: Annotated[str, Form(max_length=2000)],
) -> RedirectResponse:
    acknowledge_system_alarm(session, actor=me.actor(), alarm_id=alarm_id, comment=comment)
    return done(request, "/system-alarms", tr(request, "System alarm acknowledged."))


@router.get("/challenges", response_class=HTMLResponse)
def challenges_page(request: Request, me: CurrentUser, session: SessionDep) -> HTMLResponse:
    monitors = session.exec(select(Monitor.code).where(Monitor.active).order_by(Monitor.code)).all()
    return render(
        request,
        "challenges.html",
        rows=challenges.challenge_docs(session),
        monitors=monitors,
        max_minutes=challenges.MAX_MINUTES,
    )


@router.post("/challenges")
def challenge_start(
    request: Request,
    me: CurrentUser,
    session: SessionDep,
    monitor: Annotated[str, Form(max_length=40)],
    minutes: Annotated[float, Form(gt=0, le=challenges.MAX_MINUTES)],
    reason: Annotated[str, Form(max_length=2000)],
    password: Annotated[str, Form(max_length=1000)],
) -> RedirectResponse:
    signer = sign_in(request, me, password)
    ch = challenges.start_challenge(
        session, signer=signer, monitor_code=monitor, minutes=minutes, reason=reason
    )
    return done(request, "/challenges", tr(request, "Alarm challenge {id} started.").format(id=ch.id))


@router.post("/challenges/{challenge_id}/end")
def challenge_end(
    request: Request, me: CurrentUser, session: SessionDep, challenge_id: RowId
) -> RedirectResponse:
    challenges.end_challenge(session, actor=me.actor(), challenge_id=challenge_id)
    return done(request, "/challenges", tr(request, "Alarm challenge ended."))


@router.post("/challenges/{challenge_id}/sign")
def challenge_sign(
    request: Request,
    me: CurrentUser,
    session: SessionDep,
    challenge_id: RowId,
    password: Annotated[str, Form(max_length=1000)],
    comment: Annotated[str | None, Form(max_length=2000)] = None,
) -> RedirectResponse:
    signer = sign_in(request, me, password)
    challenges.sign_record(session, signer=signer, challenge_id=challenge_id, comment=comment or None)
    return done(request, "/challenges", tr(request, "Alarm challenge record signed."))


@router.get("/reports/challenges/{challenge_id}/record.json")
def challenge_record_json(
    request: Request, me: CurrentUser, session: SessionDep, challenge_id: RowId
) -> Response:
    """The signed record and whether it still matches its signature."""
    record, check = challenges.signed_record(session, challenge_id)
    document = {
        **record,
        "signature": {"id": check.signature.id, "intact": check.intact, "problem": check.problem},
    }
    return Response(
        json.dumps(document, ensure_ascii=False, indent=2),
        media_type="application/json",
        headers={"Content-Disposition": f'attachment; filename="alarm-challenge-{challenge_id}.json"'},
    )


@router.get("/reports/challenges/{challenge_id}/record.pdf")
def challenge_record_pdf(
    request: Request, me: CurrentUser, session: SessionDep, challenge_id: RowId
) -> Response:
    from tracker.reports.challenge import render_pdf

    record, check = challenges.signed_record(session, challenge_id)
    return Response(
        render_pdf(record, check, lang=request.state.lang),
        media_type="application/pdf",
        headers={"Content-Disposition": f'attachment; filename="alarm-challenge-{challenge_id}.pdf"'},
    )
