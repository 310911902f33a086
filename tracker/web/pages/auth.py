"""Login, logout, language, own password."""

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from sqlmodel import Session

from tracker.core.errors import AuthenticationError, InvalidInputError
from tracker.identity.users import User, change_password, login
from tracker.web.deps import CurrentUser, SessionDep, engine_of, ensure_web_session
from tracker.web.i18n import LANGS
from tracker.web.render import back_path, done, gettext, render

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
    _ = gettext(request)
    client = request.client.host if request.client else "?"
    if not request.app.state.login_limiter.allow(client):
        return render(
            request,
            "login.html",
            status_code=429,
            next=_safe_next(next),
            error=_("Too many login attempts from this address; wait a minute."),
        )
    try:
        who = login(engine_of(request), username=username.strip(), password=password)
    except AuthenticationError as exc:
        return render(
            request, "login.html", status_code=401, next=_safe_next(next), error=exc.said(request.state.lang)
        )
    web = request.app.state.sessions.login(ensure_web_session(request), who.user_id)
    request.state.web = web
    request.state.set_cookie = True
    with Session(engine_of(request)) as s:
        must_change = s.get(User, who.user_id).must_change_password
    if must_change:
        web.flash("error", _("An administrator set your password: choose your own before you continue."))
        return RedirectResponse("/account/password", status_code=303)
    return RedirectResponse(_safe_next(next), status_code=303)


@router.post("/logout")
def logout(request: Request, me: CurrentUser) -> RedirectResponse:
    web = ensure_web_session(request)
    request.app.state.sessions.drop(web.sid)
    request.state.web = None
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
) -> RedirectResponse:
    _ = gettext(request)
    if new != confirm:
        raise InvalidInputError(_("The two new passwords differ."))
    actor = login(engine_of(request), username=me.username, password=current)
    change_password(session, actor=actor, new_password=new)
    # every session of the user ends, on every worker (in this unit of work, with the change) …
    store = request.app.state.sessions
    store.drop_user(me.user_id, db=session)
    request.state.web = store.new(user_id=me.user_id, db=session)  # … this one goes on, new token
    request.state.set_cookie = True
    return done(request, "/", _("Password changed."))
