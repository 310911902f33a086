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
from sqlalchemy import Engine
from sqlmodel import Session

from tracker.core.db import MAX_ID, unit_of_work
from tracker.core.errors import AuthenticationError, Reason, zh_words
from tracker.core.timeutil import utcnow
from tracker.identity.users import Authenticated, User, login
from tracker.web import tokens
from tracker.web.access import ANONYMOUS, allowed
from tracker.web.sessions import COOKIE, WebSession

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

    def actor(self, now: datetime | None = None) -> Authenticated:
        """The proof non-signing services take: the request is authenticated by its session."""
        return Authenticated(self.user_id, self.username, self.full_name, self.roles, now or utcnow())


def engine_of(request: Request) -> Engine:
    return request.app.state.engine


def get_db(request: Request) -> Iterator[Session]:
    with unit_of_work(engine_of(request)) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_db, scope="function")]


def web_session(request: Request) -> WebSession | None:
    return getattr(request.state, "web", None)


def ensure_web_session(request: Request) -> WebSession:
    """The visitor's session, created (anonymous, with its CSRF token) when there is none."""
    web = web_session(request)
    if web is None:
        web = request.app.state.sessions.new()
        request.state.web = web
        request.state.set_cookie = True
    return web


def _user_principal(
    request: Request, user_id: int, via: str, fp: str | None = None, logged_in_at: datetime | None = None
) -> Principal | None:
    with Session(engine_of(request)) as s:
        user = s.get(User, user_id)
        if user is None or not user.active:
            return None
        if user.locked_until is not None and user.locked_until > utcnow():
            return None
        if fp is not None and tokens.fingerprint(user.password_hash) != fp:
            return None
        if logged_in_at is not None and user.password_changed_at > logged_in_at:
            return None  # the password changed since this session logged in
        return Principal(
            user.id, user.username, user.full_name, user.role_set, via, user.must_change_password
        )


def resolve_principal(request: Request) -> Principal | None:
    if hasattr(request.state, "principal"):
        return request.state.principal
    principal = None
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        try:
            user_id, fp = tokens.read(request.app.state.web_settings.key(), auth[7:].strip(), now=utcnow())
        except AuthenticationError:
            user_id, fp = None, None
        principal = _user_principal(request, user_id, "token", fp) if user_id else None
        # only a valid token replaces the cookie (and with it the CSRF check)
        request.state.via_token = principal is not None
    else:
        web = web_session(request)
        if web is not None and web.user_id is not None:
            principal = _user_principal(
                request,
                web.user_id,
                "session",
                logged_in_at=web.authenticated_at or datetime.min.replace(tzinfo=UTC),
            )
            if principal is None:  # deactivated, locked or password changed: log out
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


def sign_in(request: Request, principal: Principal, password: str) -> Authenticated:
    """Re-authentication for a signature: the password again, in its own unit of work so a
    failure counts toward the lockout (21 CFR 11.200(a))."""
    return login(engine_of(request), username=principal.username, password=password)


__all__ = ["COOKIE", "CurrentUser", "MaybeUser", "Principal", "SessionDep", "authorize", "sign_in"]
