"""Login, logout, language, own password."""

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from tracker.core.db import unit_of_work
from tracker.core.errors import AuthenticationError, InvalidInputError, TooManyRequestsError
from tracker.identity import tokens
from tracker.identity.users import User, change_password, enrol, record_login, record_logout
from tracker.web.deps import CurrentUser, SessionDep, check_password, engine_of, ensure_web_session
from tracker.web.i18n import LANGS
from tracker.web.render import back_path, done, gettext, render
from tracker.web.throttle import client_address

router = APIRouter(include_in_schema=False)


def _safe_next(target: str | None) -> str:
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/"


@router.get("/healthz")
def healthz() -> JSONResponse:
    return JSONResponse({"status": "ok"})


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, next: str = "/") -> HTMLResponse:
    return render(request, "login.html", next=_safe_next(next), error=None)


@router.post("/login", response_class=HTMLResponse)
def login_submit(
    request: Request,
    username: Annotated[str, Form(max_length=60)],
    password: Annotated[str, Form(max_length=1000)],
    next: Annotated[str, Form()] = "/",
) -> Response:
    """One answer for every failed login (``LOGIN_FAILED``); throttled, never locked."""
    name = username.strip()
    try:
        who = check_password(request, name, password, count_address=True)
    except (AuthenticationError, TooManyRequestsError) as exc:
        response = render(
            request,
            "login.html",
            status_code=exc.status_code,
            next=_safe_next(next),
            error=exc.said(request.state.lang),
        )
        if isinstance(exc, TooManyRequestsError):
            response.headers["Retry-After"] = str(exc.retry_after)
        return response
    store = request.app.state.sessions
    with unit_of_work(engine_of(request)) as db:  # the new session and its audit event together
        web = store.login(ensure_web_session(request), who.user_id, db=db)
        record_login(db, who=who, via="web", client=client_address(request))
        must_change = db.get(User, who.user_id).must_change_password
    request.state.web = web
    request.state.set_cookie = True
    if must_change:
        _ = gettext(request)
        web.flash("error", _("An administrator set your password: choose your own before you continue."))
        return RedirectResponse("/account/password", status_code=303)
    return RedirectResponse(_safe_next(next), status_code=303)


@router.post("/logout")
def logout(request: Request, me: CurrentUser, session: SessionDep) -> RedirectResponse:
    """Ends the session, or revokes the API token that authenticated the request; audited."""
    if me.via == "token":
        tokens.revoke_current(session, token_id=me.token_id, username=me.username, reason="logout")
    else:
        request.app.state.sessions.drop(ensure_web_session(request).sid, db=session)
        request.state.web = None
    record_logout(session, username=me.username, via=me.via, client=client_address(request))
    return RedirectResponse("/login", status_code=303)


@router.get("/lang/{code}")
def set_lang(request: Request, code: str) -> RedirectResponse:
    response = RedirectResponse(back_path(request), status_code=303)
    if code in LANGS:
        response.set_cookie("lang", code, max_age=365 * 86400, samesite="lax", path="/")
    return response


@router.get("/account/password", response_class=HTMLResponse)
def password_page(request: Request, me: CurrentUser) -> HTMLResponse:
    return render(request, "password.html")


@router.post("/account/password")
def password_submit(
    request: Request,
    me: CurrentUser,
    session: SessionDep,
    current: Annotated[str, Form(max_length=1000)],
    new: Annotated[str, Form(max_length=1000)],
    confirm: Annotated[str, Form(max_length=1000)],
    witness: Annotated[str, Form(max_length=60)] = "",
    witness_password: Annotated[str, Form(max_length=1000)] = "",
) -> RedirectResponse:
    _ = gettext(request)
    if new != confirm:
        raise InvalidInputError(_("The two new passwords differ."))
    actor = check_password(request, me.username, current)
    if witness.strip():
        seen = check_password(request, witness.strip(), witness_password)
        enrol(session, owner=actor, witness=seen, new_password=new)
    else:
        change_password(session, actor=actor, new_password=new)
    # every session of the user ends, on every worker (in this unit of work, with the change) …
    store = request.app.state.sessions
    store.drop_user(me.user_id, db=session)
    request.state.web = store.new(user_id=me.user_id, db=session)  # … this one goes on, new token
    request.state.set_cookie = True
    return done(request, "/", _("Password changed."))
