"""Viable samples on a phone: scan (or type) the label's code, then record the next step —
taken, incubating, read, verified, identified, closed, or missed/invalid with the reason.

Thin over :mod:`tracker.monitoring.viable.lifecycle`; the steps need no signature (each is
audited with who and when), so a logged-in web session records them.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlmodel import select

from tracker.core.errors import InvalidInputError, Reason
from tracker.core.timeutil import utcnow
from tracker.facility.models import Room
from tracker.facility.viable import METHOD_EN, METHOD_ZH, UNITS
from tracker.monitoring.viable import lifecycle as life
from tracker.monitoring.viable.labels import qr_svg
from tracker.monitoring.viable.models import STATUS_ZH, ViableSample
from tracker.web.deps import CurrentUser, SessionDep
from tracker.web.render import done, render, tr

router = APIRouter(include_in_schema=False)
CODE = Annotated[str, Form(max_length=60)]


def _count(text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise InvalidInputError(
            Reason(f"the count must be a whole number, not {text!r}", f"计数须为整数，而不是 {text!r}")
        ) from None


def sample_words(request: Request) -> dict:
    """The words of the sample lists (methods, statuses, units) in the page's language."""
    zh = request.state.lang == "zh-CN"
    return {
        "method": METHOD_ZH if zh else METHOD_EN,
        "status": STATUS_ZH if zh else {k: k for k in STATUS_ZH},
        "units": UNITS,
    }


@router.get("/viable", response_class=HTMLResponse)
def viable_home(
    request: Request,
    me: CurrentUser,
    session: SessionDep,
    code: Annotated[str | None, Query(max_length=60)] = None,
) -> Response:
    """The scan box, the overdue readings and the open samples."""
    if code:
        sample = life.get_sample(session, code)
        return RedirectResponse(f"/viable/s/{sample.code}", status_code=303)
    rooms = dict(session.exec(select(Room.id, Room.code)).all())
    overdue = {s.id for s in life.overdue(session, now=utcnow())}
    open_ = session.exec(
        select(ViableSample)
        .where(ViableSample.status.in_(("planned", "taken", "incubating", "read", "identified")))
        .order_by(ViableSample.planned_for, ViableSample.id)
        .limit(200)
    ).all()
    return render(
        request,
        "viable.html",
        samples=[life.sample_json(s, room=rooms.get(s.room_id, ""), overdue=s.id in overdue) for s in open_],
        **sample_words(request),
    )


@router.get("/viable/s/{code}", response_class=HTMLResponse)
def viable_sample(request: Request, me: CurrentUser, session: SessionDep, code: str) -> HTMLResponse:
    sample = life.get_sample(session, code)
    overdue = sample.id in {s.id for s in life.overdue(session, now=utcnow())}
    room = session.get(Room, sample.room_id)
    return render(
        request,
        "viable_sample.html",
        s=life.sample_json(sample, room=room.code, overdue=overdue),
        needs_verification=sample.needs_verification,
        needs_identification=sample.needs_identification,
        **sample_words(request),
    )


@router.get("/viable/s/{code}/label.svg")
def viable_label(me: CurrentUser, session: SessionDep, code: str) -> Response:
    sample = life.get_sample(session, code)
    return Response(qr_svg(sample.code), media_type="image/svg+xml")


def _back(request: Request, sample: ViableSample, message: str) -> RedirectResponse:
    return done(request, f"/viable/s/{sample.code}", message)


@router.post("/viable/s/{code}/take")
def viable_take(
    request: Request, me: CurrentUser, session: SessionDep, code: str, media_lot: CODE
) -> Response:
    sample = life.take(session, actor=me.actor(), sample=life.get_sample(session, code), media_lot=media_lot)
    return _back(request, sample, tr(request, "Sample taken."))


@router.post("/viable/s/{code}/incubate")
def viable_incubate(
    request: Request, me: CurrentUser, session: SessionDep, code: str, incubator: CODE
) -> Response:
    sample = life.incubate(
        session, actor=me.actor(), sample=life.get_sample(session, code), incubator=incubator
    )
    return _back(request, sample, tr(request, "Incubation recorded."))


@router.post("/viable/s/{code}/read")
def viable_read(request: Request, me: CurrentUser, session: SessionDep, code: str, count: CODE) -> Response:
    sample = life.read(session, actor=me.actor(), sample=life.get_sample(session, code), count=_count(count))
    return _back(request, sample, tr(request, "Count recorded."))


@router.post("/viable/s/{code}/verify")
def viable_verify(request: Request, me: CurrentUser, session: SessionDep, code: str, count: CODE) -> Response:
    sample = life.verify(
        session, actor=me.actor(), sample=life.get_sample(session, code), count=_count(count)
    )
    return _back(request, sample, tr(request, "Count verified."))


@router.post("/viable/s/{code}/identify")
def viable_identify(
    request: Request,
    me: CurrentUser,
    session: SessionDep,
    code: str,
    organism: Annotated[str, Form(max_length=200)],
    method: Annotated[str, Form(max_length=100)],
) -> Response:
    sample = life.identify(
        session, actor=me.actor(), sample=life.get_sample(session, code), organism=organism, method=method
    )
    return _back(request, sample, tr(request, "Isolate identified."))


@router.post("/viable/s/{code}/close")
def viable_close(request: Request, me: CurrentUser, session: SessionDep, code: str) -> Response:
    sample = life.close(session, actor=me.actor(), sample=life.get_sample(session, code))
    return _back(request, sample, tr(request, "Sample closed."))


@router.post("/viable/s/{code}/void")
def viable_void(
    request: Request,
    me: CurrentUser,
    session: SessionDep,
    code: str,
    status: Annotated[str, Form(max_length=10)],
    reason: Annotated[str, Form(max_length=2000)],
) -> Response:
    sample = life.void(
        session, actor=me.actor(), sample=life.get_sample(session, code), status=status, reason=reason
    )
    return _back(request, sample, tr(request, "Sample recorded as missed or invalid."))
