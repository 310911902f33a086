"""``/api/v1`` routes."""

from datetime import date, datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, Field, field_validator
from sqlmodel import Session, select

from tracker.core.audit import page_events, verify_chain
from tracker.core.db import MAX_ID
from tracker.core.errors import InvalidInputError, NotFoundError, Reason, in_language
from tracker.core.timeutil import iso_utc, utcnow
from tracker.facility.models import Monitor
from tracker.identity import tokens
from tracker.identity.tokens import TokenDoc
from tracker.identity.users import UserRow, list_users, record_logout
from tracker.monitoring.dashboard import floor_view
from tracker.monitoring.excursions import ExcursionDoc, acknowledge, list_excursions
from tracker.monitoring.proposals import LimitProposal, ProposalDoc, list_proposals, propose
from tracker.monitoring.proposals import approve as approve_proposal
from tracker.monitoring.proposals import reject as reject_proposal
from tracker.monitoring.proposals import to_json as proposal_json
from tracker.monitoring.quarantine import page_quarantine
from tracker.monitoring.readings import Reading
from tracker.notify.dispatcher import FailedNotificationDoc, failed_target_docs
from tracker.quality import deviations as dv
from tracker.quality.batches.identity import (
    ReadRow,
    Revealed,
    batches_of_donor,
    read_report,
    record_read,
    reveal,
)
from tracker.quality.batches.linking import decide_link, raise_deviation, sync_links
from tracker.quality.batches.models import Batch
from tracker.quality.batches.postrelease import assess, watch
from tracker.quality.batches.release import qa_review, reject, release, sign_production
from tracker.quality.batches.steps import get_batch, list_batches
from tracker.quality.batches.viable import review_results
from tracker.quality.batches.views import (
    BatchReport,
    BatchSummary,
    LinkDoc,
    batch_report,
    batch_summaries,
    exposure_links,
    summary,
)
from tracker.quality.deviations import CapaActionDoc, DeviationDoc, get_deviation
from tracker.quality.views import deviation_view, deviation_views
from tracker.web.api.schemas import (
    Acknowledged,
    AuditPage,
    Dashboard,
    DeviationState,
    LinkDecided,
    LoggedOut,
    Me,
    QuarantinePageDoc,
    ReadingDoc,
)
from tracker.web.deps import CurrentUser, RowId, SessionDep, check_password, sign_in
from tracker.web.inputs import checked_instant, instant
from tracker.web.sites import site_or_none, the_site
from tracker.web.throttle import client_address

router = APIRouter(prefix="/api/v1", tags=["api"])
Id = RowId
Key = Annotated[str, Path(min_length=1, max_length=200)]


class TokenRequest(BaseModel):
    username: str = Field(min_length=1, max_length=60)
    password: str = Field(min_length=1, max_length=1000)
    days: int | None = Field(
        default=None, ge=1, le=3660, description="lifetime; at most TRACKER_WEB_TOKEN_DAYS (90)"
    )


class TokenResponse(BaseModel):
    token: str
    token_type: str = "bearer"
    token_id: int
    expires_in_days: int
    expires_at: str


class RevokeRequest(BaseModel):
    reason: str = Field(default="revoked by its owner", min_length=1, max_length=2000)


class AckRequest(BaseModel):
    comment: str = Field(min_length=1, max_length=2000)


class DeviationRequest(BaseModel):
    excursion_ids: list[Annotated[int, Field(ge=1, le=MAX_ID)]] = Field(default_factory=list, max_length=100)
    batches: list[Annotated[str, Field(max_length=60)]] = Field(default_factory=list, max_length=100)
    title: str = Field(min_length=1, max_length=200)
    classification: str = Field(max_length=20)
    category: str = Field(min_length=1, max_length=60)
    description: str = Field(min_length=1, max_length=5000)


class LinkDecision(BaseModel):
    exposed: bool
    reason: str = Field(min_length=1, max_length=2000)
    password: str = Field(
        min_length=1, max_length=1000, description="re-authentication: the decision is signed"
    )


class SignRequest(BaseModel):
    password: str = Field(min_length=1, max_length=1000, description="re-authentication for the signature")
    comment: str | None = Field(default=None, max_length=2000)


class RejectRequest(BaseModel):
    password: str = Field(min_length=1, max_length=1000, description="re-authentication for the signature")
    reason: str = Field(min_length=1, max_length=5000)


class DeviationUpdate(BaseModel):
    reason: str = Field(min_length=1, max_length=5000, description="why the record changes (Art. 161)")
    title: str | None = Field(default=None, min_length=1, max_length=200)
    classification: str | None = Field(default=None, max_length=20)
    category: str | None = Field(default=None, min_length=1, max_length=60)
    description: str | None = Field(default=None, min_length=1, max_length=5000)
    root_cause: str | None = Field(default=None, min_length=1, max_length=5000)


class ImpactRequest(BaseModel):
    batch: str = Field(min_length=1, max_length=60)
    impact: str = Field(max_length=20, description="none | minor | significant")
    assessment: str = Field(min_length=1, max_length=5000)


class JustificationRequest(BaseModel):
    justification: str = Field(min_length=1, max_length=5000)


class CapaRequest(BaseModel):
    kind: str = Field(max_length=20, description="corrective | preventive")
    description: str = Field(min_length=1, max_length=5000)
    owner: str = Field(min_length=1, max_length=60)
    due: date


class CapaDone(BaseModel):
    outcome: str = Field(min_length=1, max_length=5000)


class CapaCheck(BaseModel):
    effective: bool
    note: str = Field(min_length=1, max_length=5000)


class ProposalRequest(BaseModel):
    room: str = Field(min_length=1, max_length=40)
    kind: str = Field(max_length=20)
    channel: str | None = Field(default=None, max_length=8)
    state: str = Field(max_length=20)
    start: datetime = Field(alias="from")
    end: datetime = Field(alias="to")

    @field_validator("start", "end")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        return checked_instant(value)  # naive or out of range: 422 with the reason in both languages


class ReasonRequest(BaseModel):
    reason: str = Field(min_length=1, max_length=5000)


@router.post("/tokens", response_model=TokenResponse)
def create_token(request: Request, session: SessionDep, body: TokenRequest) -> TokenResponse:
    """Exchange a user name and password for a bearer token (the password is never stored; the
    token only as its hash). Lifetime at most ``TRACKER_WEB_TOKEN_DAYS``; audited."""
    most = request.app.state.web_settings.token_days
    days = body.days or most
    if days > most:
        raise InvalidInputError(
            Reason(f"an API token lives at most {most} days", f"API 令牌的有效期最长为 {most} 天")
        )
    who = check_password(request, body.username, body.password, count_address=True)
    token, row = tokens.issue(session, who=who, days=days, client=client_address(request))
    return TokenResponse(
        token=token, token_id=row.id, expires_in_days=days, expires_at=iso_utc(row.expires_at)
    )


@router.get("/tokens")
def token_list(me: CurrentUser, session: SessionDep) -> list[TokenDoc]:
    """Your API tokens, newest first (never the tokens themselves); an administrator sees all."""
    return tokens.tokens_of(session, user_id=None if "admin" in me.roles else me.user_id)


@router.post("/tokens/{token_id}/revoke")
def token_revoke(me: CurrentUser, session: SessionDep, token_id: Id, body: RevokeRequest) -> TokenDoc:
    """End one of your tokens (an administrator: anyone's); audited."""
    row = tokens.revoke(session, actor=me.actor(), token_id=token_id, reason=body.reason)
    session.flush()
    return next(t for t in tokens.tokens_of(session, user_id=row.user_id) if t["id"] == row.id)


@router.post("/logout")
def api_logout(request: Request, me: CurrentUser, session: SessionDep) -> LoggedOut:
    """Revoke the token that authenticates this request (or end the cookie's session); audited."""
    if me.via == "token":
        tokens.revoke_current(session, token_id=me.token_id, username=me.username, reason="logout")
    else:
        web = request.state.web
        request.app.state.sessions.drop(web.sid, db=session)
        request.state.web = None
    record_logout(session, username=me.username, via=me.via, client=client_address(request))
    return {"logged_out": me.username, "via": me.via}


@router.get("/me")
def me_(me: CurrentUser) -> Me:
    return {"username": me.username, "full_name": me.full_name, "roles": sorted(me.roles), "via": me.via}


@router.get("/dashboard")
def dashboard(me: CurrentUser, session: SessionDep) -> Dashboard:
    site = site_or_none(session)
    if site is None:
        return {"site": None, "rooms": []}
    view = floor_view(session, site=site)
    return {
        "site": view.site,
        "timezone": view.timezone,
        "as_of": iso_utc(view.as_of),
        "rooms": [
            {
                "code": t.code,
                "name": t.name,
                "name_en": t.name_en,
                "grade": t.grade,
                "background": t.background,
                "state": t.state,
                "worst": t.worst,
                "open_excursions": t.open_excursions,
                "values": [
                    {
                        "monitor": v.monitor,
                        "kind": v.kind,
                        "channel": v.channel or None,
                        "value": v.value,
                        "level": v.level,
                        "at": iso_utc(v.at),
                        "stale": v.stale,
                        "age_s": v.age_s,
                        "alert_low": v.alert_low,
                        "alert_high": v.alert_high,
                        "action_low": v.action_low,
                        "action_high": v.action_high,
                    }
                    for v in t.values
                ],
            }
            for t in view.rooms
        ],
    }


@router.get("/excursions")
def excursions(
    me: CurrentUser,
    session: SessionDep,
    open_only: bool = False,
    room: Annotated[str | None, Query(max_length=40)] = None,
    type: Annotated[str | None, Query(max_length=20)] = None,
    unacknowledged: bool = False,
) -> list[ExcursionDoc]:
    return list_excursions(session, open_only=open_only, room=room, type_=type, unacknowledged=unacknowledged)


@router.get("/notifications/failed")
def failed_notifications(me: CurrentUser, session: SessionDep) -> list[FailedNotificationDoc]:
    """Notifications whose last attempt failed, retrying or given up (docs/alarms.md)."""
    return failed_target_docs(session)


@router.post("/excursions/{excursion_id}/acknowledge")
def acknowledge_excursion(
    me: CurrentUser, session: SessionDep, excursion_id: Id, body: AckRequest
) -> Acknowledged:
    ex = acknowledge(session, actor=me.actor(), excursion_id=excursion_id, comment=body.comment)
    return {"id": ex.id, "acknowledged_by": ex.acknowledged_by, "ack_level": ex.ack_level}


@router.get("/monitors/{code}/readings")
def readings(
    me: CurrentUser,
    session: SessionDep,
    code: Key,
    start: Annotated[str | None, Query(alias="from", max_length=40)] = None,
    end: Annotated[str | None, Query(alias="to", max_length=40)] = None,
    limit: Annotated[int, Query(ge=1, le=100_000)] = 1440,
) -> list[ReadingDoc]:
    mon = session.exec(select(Monitor).where(Monitor.code == code)).first()
    if mon is None:
        raise NotFoundError(Reason(f"no monitor {code!r}", f"没有监测点 {code!r}"))
    query = (
        select(Reading).where(Reading.monitor_id == mon.id).order_by(Reading.event_time.desc()).limit(limit)
    )
    if start:
        query = query.where(Reading.event_time >= instant(start))
    if end:
        query = query.where(Reading.event_time <= instant(end))
    return [
        {
            "seq": r.seq,
            "channel": r.channel or None,
            "at": iso_utc(r.event_time),
            "value": r.value,
            "level": r.level,
            "state": r.state,
            "status": r.status,
        }
        for r in reversed(session.exec(query).all())
    ]


@router.get("/deviations")
def deviations(
    me: CurrentUser, session: SessionDep, status: Annotated[str | None, Query(max_length=20)] = None
) -> list[DeviationDoc]:
    return deviation_views(session, status=status)


@router.post("/deviations", status_code=201)
def create_deviation(me: CurrentUser, session: SessionDep, body: DeviationRequest) -> DeviationDoc:
    dev = raise_deviation(
        session,
        actor=me.actor(),
        site=the_site(session),
        excursion_ids=body.excursion_ids,
        title=body.title,
        classification=body.classification,
        category=body.category,
        description=body.description,
        batch_numbers=body.batches,
    )
    session.flush()
    return deviation_view(session, dev)


@router.get("/deviations/{number}")
def deviation(me: CurrentUser, session: SessionDep, number: Key) -> DeviationState:
    """The deviation, its signatures, and ``missing``: what its current state still lacks."""
    return _deviation_out(session, get_deviation(session, number))


def _deviation_out(session: Session, dev: dv.Deviation) -> DeviationState:
    session.flush()
    missing = dv.state_gaps(session, dev)
    return {
        **deviation_view(session, dev),
        "missing": list(missing),
        "missing_zh": [in_language(m, "zh-CN") for m in missing],
    }


@router.post("/deviations/{number}/investigate")
def deviation_investigate(me: CurrentUser, session: SessionDep, number: Key) -> DeviationState:
    """open → investigating."""
    dev = dv.start_investigation(session, actor=me.actor(), dev=get_deviation(session, number))
    return _deviation_out(session, dev)


@router.post("/deviations/{number}/update")
def deviation_update(
    me: CurrentUser, session: SessionDep, number: Key, body: DeviationUpdate
) -> DeviationState:
    """Change fields before approval (title, classification, category, description, root cause)."""
    fields = body.model_dump(exclude={"reason"}, exclude_none=True)
    dev = dv.update_deviation(
        session, actor=me.actor(), dev=get_deviation(session, number), reason=body.reason, **fields
    )
    return _deviation_out(session, dev)


@router.post("/deviations/{number}/assess")
def deviation_assess(
    me: CurrentUser, session: SessionDep, number: Key, body: ImpactRequest
) -> DeviationState:
    """The impact on one linked batch (Art. 249)."""
    b = get_batch(session, body.batch)
    dev = get_deviation(session, number)
    dv.assess_impact(
        session,
        actor=me.actor(),
        dev=dev,
        batch_id=b.id,
        batch_number=b.number,
        impact=body.impact,
        assessment=body.assessment,
    )
    return _deviation_out(session, dev)


@router.post("/deviations/{number}/approve")
def deviation_approve(
    request: Request, me: CurrentUser, session: SessionDep, number: Key, body: SignRequest
) -> DeviationState:
    """QA approves the investigation report (e-signature: the password again) → ``capa``."""
    signer = sign_in(request, me, body.password)
    dev = dv.approve_investigation(
        session, signer=signer, dev=get_deviation(session, number), comment=body.comment
    )
    return _deviation_out(session, dev)


@router.post("/deviations/{number}/no-capa")
def deviation_no_capa(
    me: CurrentUser, session: SessionDep, number: Key, body: JustificationRequest
) -> DeviationState:
    """A minor deviation without CAPA: the written justification."""
    dev = dv.justify_no_capa(
        session, actor=me.actor(), dev=get_deviation(session, number), justification=body.justification
    )
    return _deviation_out(session, dev)


@router.post("/deviations/{number}/close")
def deviation_close(
    request: Request, me: CurrentUser, session: SessionDep, number: Key, body: SignRequest
) -> DeviationState:
    """QA closes the deviation (e-signature); 409 with ``reasons`` while something is missing."""
    signer = sign_in(request, me, body.password)
    dev = dv.close_deviation(session, signer=signer, dev=get_deviation(session, number), comment=body.comment)
    return _deviation_out(session, dev)


@router.post("/deviations/{number}/capa", status_code=201)
def capa_add(me: CurrentUser, session: SessionDep, number: Key, body: CapaRequest) -> CapaActionDoc:
    action = dv.add_capa(
        session,
        actor=me.actor(),
        dev=get_deviation(session, number),
        kind=body.kind,
        description=body.description,
        owner=body.owner,
        due=body.due,
    )
    return _capa_doc(session, action)


def _capa_doc(session: Session, action: dv.CapaAction) -> CapaActionDoc:
    session.flush()
    return dv.capa_view(session, action)


@router.post("/capa/{capa_id}/done")
def capa_done(me: CurrentUser, session: SessionDep, capa_id: Id, body: CapaDone) -> CapaActionDoc:
    """The owner (or QA) records the action done."""
    action = dv.complete_capa(session, actor=me.actor(), capa_id=capa_id, outcome=body.outcome)
    return _capa_doc(session, action)


@router.post("/capa/{capa_id}/check")
def capa_check(me: CurrentUser, session: SessionDep, capa_id: Id, body: CapaCheck) -> CapaActionDoc:
    """QA's effectiveness check (Art. 253), never by the owner."""
    return _capa_doc(
        session,
        dv.check_effectiveness(
            session, actor=me.actor(), capa_id=capa_id, effective=body.effective, note=body.note
        ),
    )


@router.get("/links")
def links(
    me: CurrentUser, session: SessionDep, status: Annotated[str | None, Query(max_length=20)] = None
) -> list[LinkDoc]:
    """Exposure links (excursion ↔ process step) for QA to confirm or reject; ``status=proposed``
    for the pending ones."""
    # a read that writes: the ingester does not propose links yet (docs/quality.md, known limits)
    sync_links(session)
    return exposure_links(session, status=status)


@router.post("/links/{link_id}/decide")
def decide(
    request: Request, me: CurrentUser, session: SessionDep, link_id: Id, body: LinkDecision
) -> LinkDecided:
    signer = sign_in(request, me, body.password)
    link = decide_link(session, signer=signer, link_id=link_id, exposed=body.exposed, reason=body.reason)
    return {"id": link.id, "status": link.status}


@router.get("/batches")
def batches(
    me: CurrentUser,
    session: SessionDep,
    status: Annotated[str | None, Query(max_length=20)] = None,
    donor: Annotated[str | None, Query(max_length=100, description="donor identifier in clear")] = None,
) -> list[BatchSummary]:
    """Batch records (donor and patient as pseudonyms); ``donor``: the batches of the donor typed
    in clear (matched by its pseudonym). Every call is a logged read of personal data."""
    if donor and donor.strip():
        found = [b for b in batches_of_donor(session, donor) if not status or b.status == status]
        rows = [summary(b) for b in found]
    else:
        found, rows = list_batches(session, status=status), batch_summaries(session, status=status)
    record_read(session, actor=me.username, via="api", batches=found)
    return rows


class RevealRequest(BaseModel):
    reason: str = Field(min_length=1, max_length=2000, description="why the clear identifier is needed")


@router.post("/batches/{number}/reveal")
def batch_reveal(me: CurrentUser, session: SessionDep, number: Key, body: RevealRequest) -> Revealed:
    """The clear donor/patient identifiers of one batch (``identity_reveal``; audited with the reason)."""
    return reveal(session, actor=me.actor(), batch=get_batch(session, number), reason=body.reason, via="api")


@router.get("/reads")
def reads(
    me: CurrentUser,
    session: SessionDep,
    start: Annotated[str | None, Query(alias="from", max_length=40)] = None,
    end: Annotated[str | None, Query(alias="to", max_length=40)] = None,
    donor: Annotated[str | None, Query(max_length=100)] = None,
) -> list[ReadRow]:
    """Who read or revealed which donors' records in ``[from, to)`` (QA; default the last 30 days)."""
    until = instant(end) if end else utcnow()
    since = instant(start) if start else until - timedelta(days=30)
    return read_report(session, start=since, end=until, donor=donor or None)


def _batch_doc(session: Session, batch: Batch) -> BatchReport:
    """The batch report with its exposure proposals brought up to date first: a write on a
    read until the ingester proposes links itself (docs/quality.md, known limits)."""
    session.flush()
    sync_links(session, batch=batch)
    watch(session, batch=batch)  # a released batch keeps listening (post-release events)
    return batch_report(session, batch)


@router.get("/batches/{number}")
def batch(me: CurrentUser, session: SessionDep, number: Key) -> BatchReport:
    found = get_batch(session, number)
    record_read(session, actor=me.username, via="api", batches=[found])
    return _batch_doc(session, found)


def _signed(request: Request, me, session, number: str, body: SignRequest, fn) -> BatchReport:
    signer = sign_in(request, me, body.password)
    return _batch_doc(
        session, fn(session, signer=signer, batch=get_batch(session, number), comment=body.comment)
    )


@router.post("/batches/{number}/sign")
def batch_sign(
    request: Request, me: CurrentUser, session: SessionDep, number: Key, body: SignRequest
) -> BatchReport:
    """Production head's approval (e-signature: the password again in the body)."""
    return _signed(request, me, session, number, body, sign_production)


@router.post("/batches/{number}/review")
def batch_review(
    request: Request, me: CurrentUser, session: SessionDep, number: Key, body: SignRequest
) -> BatchReport:
    """QA review (e-signature); 409 with ``reasons`` while the gate is closed."""
    return _signed(request, me, session, number, body, qa_review)


@router.post("/batches/{number}/reject")
def batch_reject(
    request: Request, me: CurrentUser, session: SessionDep, number: Key, body: RejectRequest
) -> BatchReport:
    """QA or the QP rejects the batch (e-signature with the reason)."""
    signer = sign_in(request, me, body.password)
    return _batch_doc(
        session, reject(session, signer=signer, batch=get_batch(session, number), reason=body.reason)
    )


class ReleaseRequest(SignRequest):
    conditional_reason: str | None = Field(
        default=None,
        max_length=5000,
        description="a conditional release over open viable samples: why (shelf life, clinical need)",
    )


@router.post("/batches/{number}/release")
def batch_release(
    request: Request, me: CurrentUser, session: SessionDep, number: Key, body: ReleaseRequest
) -> BatchReport:
    """QP release (e-signature); 409 with ``reasons`` while the gate is closed or viable results are
    open without ``conditional_reason``."""
    signer = sign_in(request, me, body.password)
    batch = release(
        session,
        signer=signer,
        batch=get_batch(session, number),
        comment=body.comment,
        conditional_reason=body.conditional_reason,  # release() strips it and refuses a blank one
    )
    return _batch_doc(session, batch)


class ViableReviewRequest(BaseModel):
    outcome: Literal["acceptable", "deviation"]
    assessment: str = Field(min_length=1, max_length=5000)
    deviation: str | None = Field(
        default=None, max_length=40, description="the deviation (outcome deviation)"
    )
    patient_impact: str | None = Field(default=None, max_length=5000)
    patient_informed: str | None = Field(default=None, max_length=5000)
    password: str = Field(min_length=1, max_length=1000, description="re-authentication for the signature")


@router.post("/batches/{number}/viable-review")
def batch_viable_review(
    request: Request, me: CurrentUser, session: SessionDep, number: Key, body: ViableReviewRequest
) -> BatchReport:
    """The signed review of a conditionally released batch's viable results, once the last is in
    (QA or the QP; 409 while results are open)."""
    signer = sign_in(request, me, body.password)
    batch = get_batch(session, number)
    review_results(
        session,
        signer=signer,
        batch=batch,
        outcome=body.outcome,
        assessment=body.assessment,
        deviation=body.deviation,
        patient_impact=body.patient_impact,
        patient_informed=body.patient_informed,
    )
    return _batch_doc(session, batch)


class PostReleaseRequest(BaseModel):
    outcome: Literal["no_impact", "deviation"]
    assessment: str = Field(min_length=1, max_length=5000)
    deviation: str | None = Field(default=None, max_length=20, description="the deviation opened")
    password: str = Field(min_length=1, max_length=1000, description="re-authentication for the signature")


@router.post("/batches/{number}/post-release")
def batch_post_release(
    request: Request, me: CurrentUser, session: SessionDep, number: Key, body: PostReleaseRequest
) -> BatchReport:
    """QA's signed assessment of a released batch's open post-release events; 409 with
    ``reasons`` while a link is undecided or an action exposure has no deviation."""
    signer = sign_in(request, me, body.password)
    batch = get_batch(session, number)
    assess(
        session,
        signer=signer,
        batch=batch,
        outcome=body.outcome,
        assessment=body.assessment,
        deviation=body.deviation or None,
    )
    return _batch_doc(session, batch)


@router.get("/quarantine")
def quarantine(
    me: CurrentUser,
    session: SessionDep,
    reason: Annotated[str | None, Query(max_length=40)] = None,
    before: Annotated[int | None, Query(ge=0, le=2**62, description="older than this id")] = None,
    after: Annotated[int | None, Query(ge=0, le=2**62, description="newer than this id")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> QuarantinePageDoc:
    """Quarantined messages newest first, ``limit`` at a time (paged by id in the database);
    follow ``page.older`` (as ``before``) or ``page.newer`` (as ``after``). A payload over the
    size limit was kept only as a prefix: ``payload_size`` says how many bytes arrived."""
    page = page_quarantine(session, reason=reason, before=before, after=after, size=limit)
    return {
        "page": {"total": page.total, "older": page.older, "newer": page.newer},
        "messages": [
            {
                "id": q.id,
                "received_at": iso_utc(q.received_at),
                "topic": q.topic,
                "reason": q.reason,
                "detail": q.detail,
                "monitor": q.monitor_code,
                "payload_sha256": q.payload_sha256,
                "payload_size": q.payload_size,
            }
            for q in page.rows
        ],
    }


@router.get("/audit")
def audit(
    me: CurrentUser,
    session: SessionDep,
    entity: Annotated[str | None, Query(max_length=80)] = None,
    key: Annotated[str | None, Query(max_length=200)] = None,
    actor: Annotated[str | None, Query(max_length=120)] = None,
    action: Annotated[str | None, Query(max_length=80, description="a prefix, e.g. signature.")] = None,
    before: Annotated[int | None, Query(ge=0, le=2**62, description="older than this id")] = None,
    after: Annotated[int | None, Query(ge=0, le=2**62, description="newer than this id")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 500,
) -> AuditPage:
    """The audit trail newest first, ``limit`` at a time; follow ``page.older`` (as ``before``)
    or ``page.newer`` (as ``after``) for the neighbouring pages. ``chain`` covers every event."""
    intact, count, broken = verify_chain(session)
    page = page_events(
        session, actor=actor, action=action, entity=entity, key=key, before=before, after=after, size=limit
    )
    return {
        "chain": {"intact": intact, "events": count, "first_broken": broken},
        "page": {"total": page.total, "older": page.older, "newer": page.newer},
        "events": [
            {
                "id": e.id,
                "at": iso_utc(e.at),
                "actor": e.actor,
                "action": e.action,
                "entity": e.entity,
                "key": e.entity_key,
                "before": e.before,
                "after": e.after,
                "reason": e.reason,
                "hash": e.hash,
            }
            for e in page.events
        ],
    }


@router.get("/limits/proposals")
def proposals(
    me: CurrentUser, session: SessionDep, status: Annotated[str | None, Query(max_length=20)] = None
) -> list[ProposalDoc]:
    return list_proposals(session, status=status)


@router.post("/limits/proposals", status_code=201)
def proposal_create(me: CurrentUser, session: SessionDep, body: ProposalRequest) -> ProposalDoc:
    """Alert and action levels computed from a period of valid readings (percentiles)."""
    row = propose(
        session,
        actor=me.actor(),
        room_code=body.room,
        kind=body.kind,
        channel=body.channel,
        state=body.state,
        start=body.start,
        end=body.end,
    )
    return proposal_json(session, row)


@router.post("/limits/proposals/{proposal_id}/approve")
def proposal_approve(
    request: Request, me: CurrentUser, session: SessionDep, proposal_id: Id, body: SignRequest
) -> ProposalDoc:
    """QA (not the proposer) approves with an e-signature: a new facility revision."""
    signer = sign_in(request, me, body.password)
    approve_proposal(session, signer=signer, proposal_id=proposal_id, comment=body.comment)
    session.flush()
    return proposal_json(session, session.get(LimitProposal, proposal_id))


@router.post("/limits/proposals/{proposal_id}/reject")
def proposal_reject(
    me: CurrentUser, session: SessionDep, proposal_id: Id, body: ReasonRequest
) -> ProposalDoc:
    reject_proposal(session, actor=me.actor(), proposal_id=proposal_id, reason=body.reason)
    session.flush()
    return proposal_json(session, session.get(LimitProposal, proposal_id))


@router.get("/users")
def users(me: CurrentUser, session: SessionDep) -> list[UserRow]:
    return list_users(session)
