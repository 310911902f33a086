"""Batch records: list, the record page (timeline, review by exception, flags, deviations,
signatures, gate) and the shop-floor and sign-off actions."""

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from sqlmodel import select

from tracker.core.timeutil import iso_utc, parse_instant, utcnow
from tracker.facility.models import Room
from tracker.quality.batches.identity import batches_of_donor, record_read, reveal
from tracker.quality.batches.linking import sync_links
from tracker.quality.batches.postrelease import assess, watch
from tracker.quality.batches.release import qa_review, reject, release, sign_production
from tracker.quality.batches.review import ReviewItemDoc, assess_item
from tracker.quality.batches.steps import (
    complete_batch,
    create_batch,
    end_step,
    get_batch,
    list_batches,
    start_step,
)
from tracker.quality.batches.viable import OPEN_STATUSES, review_of, review_results, samples_of
from tracker.quality.batches.views import BatchReport, batch_report, exposure_links
from tracker.web.deps import CurrentUser, RowId, SessionDep, sign_in
from tracker.web.pages._common import form_instant
from tracker.web.pages.viable import sample_words
from tracker.web.render import back_path, done, render, tr
from tracker.web.sites import the_site

router = APIRouter(include_in_schema=False)
Password = Annotated[str, Form(max_length=1000)]
Comment = Annotated[str | None, Form(max_length=2000)]
Text = Annotated[str, Form(max_length=5000)]


@router.get("/batches", response_class=HTMLResponse)
def batch_list(
    request: Request,
    me: CurrentUser,
    session: SessionDep,
    status: Annotated[str | None, Query(max_length=20)] = None,
    donor: Annotated[str | None, Query(max_length=100)] = None,
) -> HTMLResponse:
    """The list; ``donor``: the batches of the donor whose identifier was typed (matched by its
    pseudonym). The donor pseudonyms shown are a read of personal data, and logged."""
    if donor and donor.strip():
        rows = [b for b in batches_of_donor(session, donor) if not status or b.status == status]
    else:
        rows = list_batches(session, status=status or None)
    record_read(session, actor=me.username, via="page", batches=rows)
    return render(request, "batches.html", rows=rows, status=status or "", donor=donor or "")


@router.post("/batches")
def batch_create(
    request: Request,
    me: CurrentUser,
    session: SessionDep,
    number: Annotated[str, Form(max_length=60)],
    product: Annotated[str, Form(max_length=200)],
    donor: Annotated[str, Form(max_length=100)],
    patient: Annotated[str | None, Form(max_length=100)] = None,
) -> RedirectResponse:
    batch = create_batch(
        session,
        actor=me.actor(),
        site=the_site(session),
        number=number,
        product=product,
        donor_id=donor,
        patient_id=patient or None,
    )
    return done(request, f"/batches/{batch.number}", tr(request, "Batch record opened."))


def _timeline(report: BatchReport) -> dict:
    """Bars per room on a shared time axis (percent offsets), for the step timeline."""
    steps = report["steps"]
    if not steps:
        return {"rooms": {}, "start": None, "end": None}
    now = iso_utc(utcnow())
    start = min(parse_instant(s["start"]) for s in steps)
    end = max(parse_instant(s["end"] or now) for s in steps)
    span = max((end - start).total_seconds(), 60.0)
    rooms: dict[str, list] = {}
    for s in steps:
        a = (parse_instant(s["start"]) - start).total_seconds() / span * 100
        b = (parse_instant(s["end"] or now) - start).total_seconds() / span * 100
        rooms.setdefault(s["room"], []).append({**s, "left": round(a, 2), "width": round(max(b - a, 0.8), 2)})
    return {"rooms": rooms, "start": start, "end": end}


def _chart_window(item: ReviewItemDoc) -> dict:
    start = parse_instant(item["start"])
    end = parse_instant(item["end"]) if item["end"] else start + timedelta(minutes=30)
    margin = max((end - start) / 2, timedelta(minutes=15))
    hours = ((end - start) + 2 * margin).total_seconds() / 3600
    return {"end": iso_utc(end + margin), "hours": round(hours, 3)}


@router.get("/batches/{number}", response_class=HTMLResponse)
def batch_page(request: Request, me: CurrentUser, session: SessionDep, number: str) -> HTMLResponse:
    batch = get_batch(session, number)
    # a read that writes: the ingester does not propose links yet (docs/quality.md, known limits)
    sync_links(session, batch=batch)
    watch(session, batch=batch)  # a released batch keeps listening (post-release events)
    report = batch_report(session, batch)
    record_read(session, actor=me.username, via="page", batches=[batch])
    shown = {**report, "review": [{**item, "chart": _chart_window(item)} for item in report["review"]]}
    pending = sorted(
        exposure_links(session, batch=batch, status="proposed"),
        key=lambda link: (link["excursion"], link["step"]),
    )
    rooms = session.exec(
        select(Room.code).where(Room.site_id == batch.site_id, Room.active).order_by(Room.code)
    ).all()
    samples = samples_of(session, batch)
    return render(
        request,
        "batch.html",
        b=shown,
        timeline=_timeline(report),
        pending=pending,
        rooms=rooms,
        samples=samples,  # viable samples beside the particle picture (issue 18)
        samples_open=any(x.status in OPEN_STATUSES for x in samples),
        conditional=batch.conditional_release,
        viable_review=review_of(session, batch),
        **sample_words(request),
    )


@router.post("/batches/{number}/reveal", response_class=HTMLResponse)
def batch_reveal(
    request: Request,
    me: CurrentUser,
    session: SessionDep,
    number: str,
    reason: Annotated[str, Form(max_length=2000)],
) -> HTMLResponse:
    """The clear donor and patient identifiers, once, for a holder of ``identity_reveal`` who
    gave a reason (audited; never cached: the response is not stored by the browser)."""
    revealed = reveal(session, actor=me.actor(), batch=get_batch(session, number), reason=reason, via="page")
    response = render(request, "reveal.html", r=revealed)
    response.headers["Cache-Control"] = "no-store"
    return response


@router.post("/batches/{number}/steps")
def step_begin(
    request: Request,
    me: CurrentUser,
    session: SessionDep,
    number: str,
    name: Annotated[str, Form(max_length=200)],
    room: Annotated[str, Form(max_length=40)],
    open_processing: Annotated[bool, Form()] = False,
    late_reason: Annotated[str | None, Form(max_length=2000)] = None,
) -> RedirectResponse:
    start_step(
        session,
        actor=me.actor(),
        batch=get_batch(session, number),
        name=name,
        room_code=room,
        start=utcnow(),
        open_processing=open_processing,
        late_reason=late_reason or None,
    )
    return done(request, f"/batches/{number}", tr(request, "Step started."))


@router.post("/steps/{step_id}/end")
def step_finish(
    request: Request,
    me: CurrentUser,
    session: SessionDep,
    step_id: RowId,
    password: Password,
    comment: Comment = None,
    at: Annotated[str | None, Form(max_length=40)] = None,
) -> RedirectResponse:
    end = form_instant(at) if at else utcnow()  # naive or out of range: 422, before anything counts
    signer = sign_in(request, me, password)
    end_step(session, signer=signer, step_id=step_id, end=end, comment=comment or None)
    return done(request, back_path(request), tr(request, "Step ended and signed."))


@router.post("/batches/{number}/complete")
def batch_complete(request: Request, me: CurrentUser, session: SessionDep, number: str) -> RedirectResponse:
    complete_batch(session, actor=me.actor(), batch=get_batch(session, number))
    return done(request, f"/batches/{number}", tr(request, "Batch record completed."))


def _signed(
    request: Request, me, session, number: str, password: str, fn, message: str, **kwargs
) -> RedirectResponse:
    signer = sign_in(request, me, password)
    fn(session, signer=signer, batch=get_batch(session, number), **kwargs)
    return done(request, f"/batches/{number}", message)


@router.post("/batches/{number}/sign")
def batch_sign(
    request: Request,
    me: CurrentUser,
    session: SessionDep,
    number: str,
    password: Password,
    comment: Comment = None,
) -> RedirectResponse:
    return _signed(
        request,
        me,
        session,
        number,
        password,
        sign_production,
        tr(request, "Batch record signed by production."),
        comment=comment or None,
    )


@router.post("/batches/{number}/review")
def batch_review(
    request: Request,
    me: CurrentUser,
    session: SessionDep,
    number: str,
    password: Password,
    comment: Comment = None,
) -> RedirectResponse:
    return _signed(
        request,
        me,
        session,
        number,
        password,
        qa_review,
        tr(request, "QA review signed."),
        comment=comment or None,
    )


@router.post("/batches/{number}/release")
def batch_release(
    request: Request,
    me: CurrentUser,
    session: SessionDep,
    number: str,
    password: Password,
    comment: Comment = None,
    conditional_reason: Annotated[str | None, Form(max_length=5000)] = None,
) -> RedirectResponse:
    return _signed(
        request,
        me,
        session,
        number,
        password,
        release,
        tr(request, "Batch released."),
        comment=comment or None,
        conditional_reason=conditional_reason,  # release() strips it and refuses a blank one
    )


@router.post("/batches/{number}/viable-review")
def batch_viable_review(
    request: Request,
    me: CurrentUser,
    session: SessionDep,
    number: str,
    password: Password,
    outcome: Annotated[str, Form(max_length=20)],
    assessment: Annotated[str, Form(max_length=5000)],
    deviation: Annotated[str | None, Form(max_length=40)] = None,
    patient_impact: Annotated[str | None, Form(max_length=5000)] = None,
    patient_informed: Annotated[str | None, Form(max_length=5000)] = None,
) -> RedirectResponse:
    """The signed review of a conditionally released batch's viable results (docs/viable.md)."""
    signer = sign_in(request, me, password)
    review_results(
        session,
        signer=signer,
        batch=get_batch(session, number),
        outcome=outcome,
        assessment=assessment,
        deviation=(deviation or "").strip() or None,
        patient_impact=(patient_impact or "").strip() or None,
        patient_informed=(patient_informed or "").strip() or None,
    )
    return done(request, f"/batches/{number}", tr(request, "Viable results reviewed."))


@router.post("/batches/{number}/reject")
def batch_reject(
    request: Request, me: CurrentUser, session: SessionDep, number: str, password: Password, reason: Text
) -> RedirectResponse:
    return _signed(
        request, me, session, number, password, reject, tr(request, "Batch rejected."), reason=reason
    )


@router.post("/batches/{number}/assess")
def batch_assess(
    request: Request,
    me: CurrentUser,
    session: SessionDep,
    number: str,
    item: Annotated[str, Form(max_length=200)],
    exposed: Annotated[bool, Form()],
    reason: Text,
) -> RedirectResponse:
    assess_item(
        session,
        actor=me.actor(),
        batch=get_batch(session, number),
        item_key=item,
        exposed=exposed,
        reason=reason,
    )
    return done(request, f"/batches/{number}", tr(request, "Assessment recorded."))


@router.post("/batches/{number}/post-release")
def batch_post_release(
    request: Request,
    me: CurrentUser,
    session: SessionDep,
    number: str,
    outcome: Annotated[str, Form(max_length=20)],
    assessment: Text,
    password: Password,
    deviation: Annotated[str | None, Form(max_length=20)] = None,
) -> RedirectResponse:
    """QA's signed conclusion on the batch's open post-release events."""
    signer = sign_in(request, me, password)
    assess(
        session,
        signer=signer,
        batch=get_batch(session, number),
        outcome=outcome,
        assessment=assessment,
        deviation=(deviation or "").strip() or None,
    )
    return done(request, f"/batches/{number}", tr(request, "Post-release events assessed (signed)."))
