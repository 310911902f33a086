"""``/api/v1`` routes."""

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, Field
from sqlmodel import Session, select

from batch_records.linking import decide_link, raise_deviation
from batch_records.release import batch_report, qa_review, release, sign_production
from batch_records.steps import get_batch, list_batches
from tracker.audit import AuditEvent, verify_chain
from tracker.dashboard import floor_view
from tracker.db import MAX_ID
from tracker.deviations import get_deviation, list_deviations
from tracker.errors import InvalidInputError, NotFoundError, TrackerError
from tracker.excursions import acknowledge, list_excursions
from tracker.facility import Monitor
from tracker.proposals import list_proposals
from tracker.quarantine import list_quarantine
from tracker.readings import Reading
from tracker.timeutil import iso_utc, parse_instant, utcnow
from tracker.users import User, list_users, login
from tracker.web import tokens
from tracker.web.deps import CurrentUser, RowId, SessionDep, engine_of, sign_in
from tracker.web.pages._common import site_or_none, the_site
from tracker.web.pages.quality import deviation_doc

router = APIRouter(prefix="/api/v1", tags=["api"])
Id = RowId
Key = Annotated[str, Path(min_length=1, max_length=200)]
Doc = dict[str, Any]


class TokenRequest(BaseModel):
    username: str = Field(min_length=1, max_length=60)
    password: str = Field(min_length=1, max_length=1000)
    days: int | None = Field(default=None, ge=1, le=366)


class TokenResponse(BaseModel):
    token: str
    token_type: str = "bearer"
    expires_in_days: int


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


class SignRequest(BaseModel):
    password: str = Field(min_length=1, max_length=1000, description="re-authentication for the signature")
    comment: str | None = Field(default=None, max_length=2000)


@router.post("/tokens", response_model=TokenResponse)
def create_token(request: Request, body: TokenRequest) -> TokenResponse:
    """Exchange a user name and password for a bearer token (the password is never stored)."""
    settings = request.app.state.web_settings
    client = request.client.host if request.client else "?"
    if not request.app.state.login_limiter.allow(client):
        err = TrackerError("too many login attempts from this address; wait a minute")
        err.status_code = 429
        raise err
    who = login(engine_of(request), username=body.username, password=body.password)
    with Session(engine_of(request)) as s:
        user = s.get(User, who.user_id)
        days = body.days or settings.token_days
        token = tokens.issue(settings.key(), user_id=user.id, password_hash=user.password_hash, now=utcnow(),
                             days=days)
    return TokenResponse(token=token, expires_in_days=days)


@router.get("/me")
def me_(me: CurrentUser) -> Doc:
    return {"username": me.username, "full_name": me.full_name, "roles": sorted(me.roles), "via": me.via}


@router.get("/dashboard")
def dashboard(me: CurrentUser, session: SessionDep) -> Doc:
    site = site_or_none(session)
    if site is None:
        return {"site": None, "rooms": []}
    view = floor_view(session, site=site)
    return {"site": view.site, "timezone": view.timezone, "as_of": iso_utc(view.as_of),
            "rooms": [{"code": t.code, "name": t.name, "name_en": t.name_en, "grade": t.grade,
                       "background": t.background, "state": t.state, "worst": t.worst,
                       "open_excursions": t.open_excursions,
                       "values": [{"monitor": v.monitor, "kind": v.kind, "channel": v.channel or None,
                                   "value": v.value, "level": v.level, "at": iso_utc(v.at)}
                                  for v in t.values]}
                      for t in view.rooms]}


@router.get("/excursions")
def excursions(me: CurrentUser, session: SessionDep, open_only: bool = False,
               room: Annotated[str | None, Query(max_length=40)] = None,
               type: Annotated[str | None, Query(max_length=20)] = None,
               unacknowledged: bool = False) -> list[Doc]:
    return list_excursions(session, open_only=open_only, room=room, type_=type, unacknowledged=unacknowledged)


@router.post("/excursions/{excursion_id}/acknowledge")
def acknowledge_excursion(me: CurrentUser, session: SessionDep, excursion_id: Id, body: AckRequest) -> Doc:
    ex = acknowledge(session, actor=me.actor(), excursion_id=excursion_id, comment=body.comment)
    return {"id": ex.id, "acknowledged_by": ex.acknowledged_by, "ack_level": ex.ack_level}


@router.get("/monitors/{code}/readings")
def readings(me: CurrentUser, session: SessionDep, code: Key,
             start: Annotated[str | None, Query(alias="from", max_length=40)] = None,
             end: Annotated[str | None, Query(alias="to", max_length=40)] = None,
             limit: Annotated[int, Query(ge=1, le=100_000)] = 1440) -> list[Doc]:
    mon = session.exec(select(Monitor).where(Monitor.code == code)).first()
    if mon is None:
        raise NotFoundError(f"no monitor {code!r}")
    query = (select(Reading).where(Reading.monitor_id == mon.id)
             .order_by(Reading.event_time.desc()).limit(limit))
    try:
        if start:
            query = query.where(Reading.event_time >= parse_instant(start))
        if end:
            query = query.where(Reading.event_time <= parse_instant(end))
    except ValueError as exc:
        raise InvalidInputError(f"times are ISO 8601 with an offset: {exc}") from exc
    return [{"seq": r.seq, "channel": r.channel or None, "at": iso_utc(r.event_time), "value": r.value,
             "level": r.level, "state": r.state, "status": r.status}
            for r in reversed(session.exec(query).all())]


@router.get("/deviations")
def deviations(me: CurrentUser, session: SessionDep,
               status: Annotated[str | None, Query(max_length=20)] = None) -> list[Doc]:
    return [deviation_doc(session, d) for d in list_deviations(session, status=status)]


@router.post("/deviations", status_code=201)
def create_deviation(me: CurrentUser, session: SessionDep, body: DeviationRequest) -> Doc:
    dev = raise_deviation(session, actor=me.actor(), site=the_site(session), excursion_ids=body.excursion_ids,
                          title=body.title, classification=body.classification, category=body.category,
                          description=body.description, batch_numbers=body.batches)
    session.flush()
    return deviation_doc(session, dev)


@router.get("/deviations/{number}")
def deviation(me: CurrentUser, session: SessionDep, number: Key) -> Doc:
    return deviation_doc(session, get_deviation(session, number))


@router.post("/links/{link_id}/decide")
def decide(me: CurrentUser, session: SessionDep, link_id: Id, body: LinkDecision) -> Doc:
    link = decide_link(session, actor=me.actor(), link_id=link_id, exposed=body.exposed, reason=body.reason)
    return {"id": link.id, "status": link.status}


@router.get("/batches")
def batches(me: CurrentUser, session: SessionDep,
            status: Annotated[str | None, Query(max_length=20)] = None) -> list[Doc]:
    return [{"number": b.number, "product": b.product, "donor_id": b.donor_id, "status": b.status}
            for b in list_batches(session, status=status)]


@router.get("/batches/{number}")
def batch(me: CurrentUser, session: SessionDep, number: Key) -> Doc:
    return batch_report(session, get_batch(session, number))


def _signed(request: Request, me, session, number: str, body: SignRequest, fn) -> Doc:
    signer = sign_in(request, me, body.password)
    b = fn(session, signer=signer, batch=get_batch(session, number), comment=body.comment)
    session.flush()
    return batch_report(session, b)


@router.post("/batches/{number}/sign")
def batch_sign(request: Request, me: CurrentUser, session: SessionDep, number: Key, body: SignRequest) -> Doc:
    """Production head's approval (e-signature: the password again in the body)."""
    return _signed(request, me, session, number, body, sign_production)


@router.post("/batches/{number}/review")
def batch_review(request: Request, me: CurrentUser, session: SessionDep, number: Key,
                 body: SignRequest) -> Doc:
    """QA review (e-signature); 409 with ``reasons`` while the gate is closed."""
    return _signed(request, me, session, number, body, qa_review)


@router.post("/batches/{number}/release")
def batch_release(request: Request, me: CurrentUser, session: SessionDep, number: Key,
                  body: SignRequest) -> Doc:
    """QP release (e-signature); 409 with ``reasons`` while the gate is closed."""
    return _signed(request, me, session, number, body, release)


@router.get("/quarantine")
def quarantine(me: CurrentUser, session: SessionDep,
               reason: Annotated[str | None, Query(max_length=40)] = None,
               limit: Annotated[int, Query(ge=1, le=10_000)] = 500) -> list[Doc]:
    return [{"id": q.id, "received_at": iso_utc(q.received_at), "topic": q.topic, "reason": q.reason,
             "detail": q.detail, "monitor": q.monitor_code, "payload_sha256": q.payload_sha256}
            for q in list_quarantine(session, reason=reason, limit=limit)]


@router.get("/audit")
def audit(me: CurrentUser, session: SessionDep, entity: Annotated[str | None, Query(max_length=80)] = None,
          key: Annotated[str | None, Query(max_length=200)] = None,
          limit: Annotated[int, Query(ge=1, le=10_000)] = 500) -> Doc:
    intact, count, broken = verify_chain(session)
    query = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)
    if entity:
        query = query.where(AuditEvent.entity == entity)
    if key:
        query = query.where(AuditEvent.entity_key == key)
    return {"chain": {"intact": intact, "events": count, "first_broken": broken},
            "events": [{"id": e.id, "at": iso_utc(e.at), "actor": e.actor, "action": e.action,
                        "entity": e.entity, "key": e.entity_key, "before": e.before, "after": e.after,
                        "reason": e.reason, "hash": e.hash} for e in session.exec(query)]}


@router.get("/limits/proposals")
def proposals(me: CurrentUser, session: SessionDep,
              status: Annotated[str | None, Query(max_length=20)] = None) -> list[Doc]:
    return list_proposals(session, status=status)


@router.get("/users")
def users(me: CurrentUser, session: SessionDep) -> list[Doc]:
    return list_users(session)
