"""Deviations with their workflow, CAPA actions, exposure-link decisions."""

from datetime import date
from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from tracker.quality import deviations as dv
from tracker.quality.batches.linking import decide_link, decide_links, sync_links
from tracker.quality.batches.steps import get_batch
from tracker.quality.batches.views import exposure_links
from tracker.quality.views import deviation_view, deviation_views
from tracker.web.deps import CurrentUser, RowId, SessionDep, sign_in
from tracker.web.render import back_path, done, render, tr

router = APIRouter(include_in_schema=False)
Text = Annotated[str, Form(max_length=5000)]
Password = Annotated[str, Form(max_length=1000)]
Comment = Annotated[str | None, Form(max_length=2000)]


@router.get("/deviations", response_class=HTMLResponse)
def deviation_list(
    request: Request,
    me: CurrentUser,
    session: SessionDep,
    status: Annotated[str | None, Query(max_length=20)] = None,
) -> HTMLResponse:
    rows = deviation_views(session, status=status or None)
    return render(request, "deviations.html", rows=rows, status=status or "")


@router.get("/deviations/{number}", response_class=HTMLResponse)
def deviation_page(request: Request, me: CurrentUser, session: SessionDep, number: str) -> HTMLResponse:
    dev = dv.get_deviation(session, number)
    # a read that writes: the ingester does not propose links yet (docs/quality.md, known limits)
    sync_links(session)
    doc = deviation_view(session, dev)
    links = [
        {**link, "step": link["step_name"]}  # the page names the step
        for link in (exposure_links(session, excursion_ids=doc["excursions"]) if doc["excursions"] else [])
    ]
    gaps = dv.state_gaps(session, dev)
    missing_investigation = gaps if dev.status == "investigating" else []
    missing_closure = gaps if dev.status == "capa" else []
    return render(
        request,
        "deviation.html",
        dev=doc,
        excursions=dv.source_excursions(session, dev),
        links=links,
        missing_investigation=missing_investigation,
        missing_closure=missing_closure,
        classes=dv.classes(),
        impacts=dv.IMPACTS,
        capa_kinds=dv.CAPA_KINDS,
    )


def _dev(session, number: str):
    return dv.get_deviation(session, number)


@router.post("/deviations/{number}/investigate")
def deviation_investigate(
    request: Request, me: CurrentUser, session: SessionDep, number: str
) -> RedirectResponse:
    dv.start_investigation(session, actor=me.actor(), dev=_dev(session, number))
    return done(request, f"/deviations/{number}", tr(request, "Investigation started."))


@router.post("/deviations/{number}/update")
def deviation_update(
    request: Request,
    me: CurrentUser,
    session: SessionDep,
    number: str,
    reason: Text,
    title: Annotated[str | None, Form(max_length=200)] = None,
    classification: Annotated[str | None, Form(max_length=20)] = None,
    category: Annotated[str | None, Form(max_length=60)] = None,
    description: Annotated[str | None, Form(max_length=5000)] = None,
    root_cause: Annotated[str | None, Form(max_length=5000)] = None,
) -> RedirectResponse:
    dev = _dev(session, number)
    fields = {
        k: v
        for k, v in {
            "title": title,
            "classification": classification,
            "category": category,
            "description": description,
            "root_cause": root_cause,
        }.items()
        if v and v != getattr(dev, k)
    }
    dv.update_deviation(session, actor=me.actor(), dev=dev, reason=reason, **fields)
    return done(request, f"/deviations/{number}", tr(request, "Deviation updated."))


@router.post("/deviations/{number}/assess")
def deviation_assess(
    request: Request,
    me: CurrentUser,
    session: SessionDep,
    number: str,
    batch: Annotated[str, Form(max_length=60)],
    impact: Annotated[str, Form(max_length=20)],
    assessment: Text,
) -> RedirectResponse:
    b = get_batch(session, batch)
    dv.assess_impact(
        session,
        actor=me.actor(),
        dev=_dev(session, number),
        batch_id=b.id,
        batch_number=b.number,
        impact=impact,
        assessment=assessment,
    )
    return done(request, f"/deviations/{number}", tr(request, "Impact assessed."))


@router.post("/deviations/{number}/approve")
def deviation_approve(
    request: Request,
    me: CurrentUser,
    session: SessionDep,
    number: str,
    password: Password,
    comment: Comment = None,
) -> RedirectResponse:
    signer = sign_in(request, me, password)
    dv.approve_investigation(session, signer=signer, dev=_dev(session, number), comment=comment or None)
    return done(request, f"/deviations/{number}", tr(request, "Investigation approved (signed)."))


@router.post("/deviations/{number}/no-capa")
def deviation_no_capa(
    request: Request, me: CurrentUser, session: SessionDep, number: str, justification: Text
) -> RedirectResponse:
    dv.justify_no_capa(session, actor=me.actor(), dev=_dev(session, number), justification=justification)
    return done(request, f"/deviations/{number}", tr(request, "Justification recorded."))


@router.post("/deviations/{number}/close")
def deviation_close(
    request: Request,
    me: CurrentUser,
    session: SessionDep,
    number: str,
    password: Password,
    comment: Comment = None,
) -> RedirectResponse:
    signer = sign_in(request, me, password)
    dv.close_deviation(session, signer=signer, dev=_dev(session, number), comment=comment or None)
    return done(request, f"/deviations/{number}", tr(request, "Deviation closed (signed)."))


@router.post("/deviations/{number}/capa")
def capa_add(
    request: Request,
    me: CurrentUser,
    session: SessionDep,
    number: str,
    kind: Annotated[str, Form(max_length=20)],
    description: Text,
    owner: Annotated[str, Form(max_length=60)],
    due: Annotated[date, Form()],
) -> RedirectResponse:
    dv.add_capa(
        session,
        actor=me.actor(),
        dev=_dev(session, number),
        kind=kind,
        description=description,
        owner=owner,
        due=due,
    )
    return done(request, f"/deviations/{number}", tr(request, "CAPA action added."))


@router.post("/capa/{capa_id}/done")
def capa_done(
    request: Request, me: CurrentUser, session: SessionDep, capa_id: RowId, outcome: Text
) -> RedirectResponse:
    dv.complete_capa(session, actor=me.actor(), capa_id=capa_id, outcome=outcome)
    return done(request, back_path(request), tr(request, "CAPA action done."))


@router.post("/capa/{capa_id}/check")
def capa_check(
    request: Request,
    me: CurrentUser,
    session: SessionDep,
    capa_id: RowId,
    effective: Annotated[bool, Form()],
    note: Text,
) -> RedirectResponse:
    dv.check_effectiveness(session, actor=me.actor(), capa_id=capa_id, effective=effective, note=note)
    return done(request, back_path(request), tr(request, "Effectiveness recorded."))


@router.post("/links/decide")
def links_decide(
    request: Request,
    me: CurrentUser,
    session: SessionDep,
    exposed: Annotated[bool, Form()],
    reason: Text,
    password: Annotated[str, Form(max_length=1000)],
    ids: Annotated[list[RowId], Form(max_length=500)] = [],  # noqa: B006  (FastAPI's form default)
) -> RedirectResponse:
    """The ticked links decided together: one reason, one password, a signature on each."""
    signer = sign_in(request, me, password)
    decided = decide_links(session, signer=signer, link_ids=ids, exposed=exposed, reason=reason)
    return done(request, back_path(request), tr(request, "Exposure decisions recorded:") + f" {len(decided)}")


@router.post("/links/{link_id}/decide")
def link_decide(
    request: Request,
    me: CurrentUser,
    session: SessionDep,
    link_id: RowId,
    exposed: Annotated[bool, Form()],
    reason: Text,
    password: Annotated[str, Form(max_length=1000)],
) -> RedirectResponse:
    signer = sign_in(request, me, password)
    decide_link(session, signer=signer, link_id=link_id, exposed=exposed, reason=reason)
    return done(request, back_path(request), tr(request, "Exposure decision recorded."))
