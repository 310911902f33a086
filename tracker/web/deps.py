"""Request dependencies: the unit of work, the current user, authorisation by the route table.

``SessionDep`` is the request's unit of work (commits when the handler returns, rolls back when
it raises, before the response is sent). ``CurrentUser`` is the logged-in principal, from the
session cookie or an API token. ``authorize`` runs on every route and enforces
:data:`tracker.web.access.ACCESS`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends, Path, Request
from sqlalchemy import Engine, event
from sqlmodel import Session

from tracker.core.db import MAX_ID, unit_of_work
from tracker.core.errors import AuthenticationError, Reason, zh_words
from tracker.core.timeutil import utcnow
from tracker.identity import tokens
from tracker.identity.users import Authenticated, User, login
from tracker.web.access import ANONYMOUS, allowed
from tracker.web.sessions import COOKIE, WebSession
from tracker.web.throttle import client_address, too_many_from_address, too_many_logins

#: a row id in a URL: out of range answers 422 instead of reaching the database
RowId = Annotated[int, Path(ge=1, le=MAX_ID)]


class LoginRequired(Exception):
    """No valid session or token on a route that needs one."""


class Forbidden(Exception):
    """Logged in, but the route table does not allow any of the user's roles."""


class PasswordChangeRequired(Exception):
    """An administrator set the password: its owner must replace it before anything else."""


@dataclass(frozen=True)
class Principal:
    user_id: int
    username: str
    full_name: str
    roles: frozenset[str]
    via: str  # "session" | "token"
    must_change_password: bool = False
    token_id: int | None = None  # the API token that authenticated the request
    person: str = ""
    enrolled: bool = False

    def actor(self, now: datetime | None = None) -> Authenticated:
        """The proof non-signing services take: the request is authenticated by its session
        (``method="session"``: it never signs, a signature asks for the password)."""
        return Authenticated(
            self.user_id,
            self.username,
            self.full_name,
            self.roles,
            now or utcnow(),
            person=self.person,
            enrolled=self.enrolled,
            method="session",
        )


def engine_of(request: Request) -> Engine:
    return request.app.state.engine


def get_db(request: Request) -> Iterator[Session]:
    """The request's unit of work. While it is open, the request's own writes to the session
    table go through it (:func:`ensure_web_session`): a request that holds SQLite's write lock
    must never wait for a second connection of its own (it would wait for itself)."""
    with unit_of_work(engine_of(request)) as session:
        request.state.db = session
        event.listen(session, "after_flush", _mark_written)
        event.listen(session, "do_orm_execute", _mark_dml)
        try:
            yield session
        except BaseException:
            if getattr(request.state, "web_in_db", False):  # its row is rolled back with the rest
                request.state.web, request.state.set_cookie = None, False
            raise
        finally:
            request.state.db = None


def _mark_written(session: Session, _flush_context) -> None:
    session.info["wrote"] = True


def _mark_dml(state) -> None:
    if state.is_insert or state.is_update or state.is_delete:
        state.session.info["wrote"] = True


def open_unit_of_work(request: Request) -> Session | None:
    return getattr(request.state, "db", None)


SessionDep = Annotated[Session, Depends(get_db, scope="function")]


def web_session(request: Request) -> WebSession | None:
    return getattr(request.state, "web", None)


def ensure_web_session(request: Request) -> WebSession:
    """The visitor's session, created (anonymous, with its CSRF token) when there is none.

    A request authenticated by an API token gets a transient one (never stored, no cookie).
    Otherwise the new row is written in the request's unit of work when one is open (so it
    commits with it), else in a short transaction of its own."""
    web = web_session(request)
    if web is None:
        store = request.app.state.sessions
        if getattr(request.state, "via_token", False):
            web = WebSession.for_token(store.clock())
        else:
            db = open_unit_of_work(request)
            web = store.new(db=db)
            request.state.web_in_db = db is not None
            request.state.set_cookie = True
        request.state.web = web
    return web


def _user_principal(request: Request, user_id: int, logged_in_at: datetime) -> Principal | None:
    with Session(engine_of(request)) as s:
        user = s.get(User, user_id)
        if user is None or not user.active:
            return None
        if user.password_changed_at > logged_in_at:
            return None  # the password changed since this session logged in
        return Principal(
            user.id,
            user.username,
            user.full_name,
            user.role_set,
            "session",
            user.must_change_password,
            person=user.person,
            enrolled=user.enrolled_at is not None,
        )


def _token_principal(request: Request, token: str) -> Principal | None:
    with Session(engine_of(request)) as s:
        found = tokens.holder(s, token)
    if found is None:
        return None
    row, user = found
    return Principal(
        user.id,
        user.username,
        user.full_name,
        user.role_set,
        "token",
        user.must_change_password,
        token_id=row.id,
        person=user.person,
        enrolled=user.enrolled_at is not None,
    )


def resolve_principal(request: Request) -> Principal | None:
    if hasattr(request.state, "principal"):
        return request.state.principal
    principal = None
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        principal = _token_principal(request, auth[7:].strip())
        # only a valid token replaces the cookie (and with it the CSRF check)
        request.state.via_token = principal is not None
    else:
        web = web_session(request)
        if web is not None and web.user_id is not None:
            principal = _user_principal(
                request, web.user_id, web.authenticated_at or datetime.min.replace(tzinfo=UTC)
            )
            if principal is None:  # deactivated or password changed: log out
                request.app.state.sessions.drop(web.sid)
                request.state.web = None
                request.state.clear_cookie = True
    request.state.principal = principal
    return principal


def authorize(request: Request) -> None:
    """Enforce the route table on every request (deny when a route is missing from it)."""
    route = request.scope.get("route")
    roles = allowed(request.method, route.path) if route is not None else None
    if roles is None:
        raise Forbidden(
            Reason(
                f"{request.method} {request.url.path} is not in the access table",
                f"{request.method} {request.url.path} 不在访问控制表中",
            )
        )
    principal = resolve_principal(request)
    if ANONYMOUS in roles:
        return
    if principal is None:
        raise LoginRequired()
    if principal.must_change_password and route.path not in ("/account/password", "/logout"):
        raise PasswordChangeRequired()
    if not principal.roles & roles:
        raise Forbidden(
            Reason(
                f"{request.method} {route.path} needs the role {' or '.join(sorted(roles))}; "
                f"{principal.username} has {', '.join(sorted(principal.roles))}",
                f"此操作需要{zh_words(sorted(roles), '或')}角色；{principal.username} 的角色是"
                f"{zh_words(sorted(principal.roles))}",
            )
        )


def current_user(request: Request) -> Principal:
    principal = resolve_principal(request)
    if principal is None:
        raise LoginRequired()
    return principal


def optional_user(request: Request) -> Principal | None:
    return resolve_principal(request)


CurrentUser = Annotated[Principal, Depends(current_user)]
MaybeUser = Annotated[Principal | None, Depends(optional_user)]


def check_password(
    request: Request, username: str, password: str, *, count_address: bool = False
) -> Authenticated:
    """The one way the web app checks a password (login, token, signature, password change).

    Throttled per account name and client address (backoff, ``tracker.web.throttle``) and, for
    logins (``count_address``), per address; the check itself runs in its own unit of work so a
    failure is counted and audited although the request is refused. So it must come before the
    request's first write: a request holding a write lock (SQLite's, or the audit chain's on
    PostgreSQL) would wait for its own second connection."""
    state = request.app.state
    address = client_address(request)
    if count_address and not state.login_limiter.allow(address):
        raise too_many_from_address(state.login_limiter.wait(address))
    wait = state.login_throttle.wait(username, address)
    if wait > 0:
        raise too_many_logins(wait)
    db = open_unit_of_work(request)
    if db is not None and db.info.get("wrote"):
        raise RuntimeError(
            f"{request.url.path}: the password is checked after the request wrote to the database"
        )
    try:
        who = login(engine_of(request), username=username, password=password)
    except AuthenticationError:
        state.login_throttle.failed(username, address)
        raise
    state.login_throttle.succeeded(username, address)
    return who


def sign_in(request: Request, principal: Principal, password: str) -> Authenticated:
    """Re-authentication for a signature: the password again (21 CFR 11.200(a)); a failure is
    counted and audited like a failed login."""
    return check_password(request, principal.username, password)


__all__ = [
    "COOKIE",
    "CurrentUser",
    "MaybeUser",
    "Principal",
    "SessionDep",
    "authorize",
    "check_password",
    "sign_in",
]
