"""The app factory: ``create_app(engine=..., settings=...)`` (``tracker serve`` runs it)."""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import quote

import swagger_ui_bundle
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool
from starlette.routing import BaseRoute, Mount

from tracker.core.db import get_engine
from tracker.core.errors import ConflictError, Reason, TooManyRequestsError, TrackerError, in_language
from tracker.core.settings import get_settings
from tracker.web import access
from tracker.web.config import WebSettings
from tracker.web.csrf import CsrfError, verify_csrf
from tracker.web.deps import Forbidden, LoginRequired, PasswordChangeRequired, authorize, ensure_web_session
from tracker.web.i18n import pick_lang
from tracker.web.render import back_path, gettext, make_env, render
from tracker.web.reports import ReportCache
from tracker.web.sessions import COOKIE, SessionStore
from tracker.web.throttle import LoginThrottle, RateLimiter, parse_networks

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"
CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
)


#: requests a screen makes by itself (refresh, event stream): they do not keep a session alive
UNATTENDED = frozenset({"/dashboard/live", "/dashboard/events"})


def _is_api(request: Request) -> bool:
    return request.url.path.startswith("/api/")


def _secure(request: Request, settings: WebSettings) -> bool:
    if settings.secure_cookies == "always":
        return True
    if settings.secure_cookies == "never":
        return False
    return request.url.scheme == "https"


def check_access_table(app: FastAPI) -> None:
    """Every route is in the access table and every table entry is a route (deny by default)."""
    routes = {
        f"{method} {route.path}" for route in flat_routes(app) for method in route.methods if method != "HEAD"
    }
    missing, stale = routes - set(access.ACCESS), set(access.ACCESS) - routes
    if missing or stale:
        raise RuntimeError(f"access table out of step: missing {sorted(missing)}, stale {sorted(stale)}")


def _add_handlers(app: FastAPI) -> None:
    @app.exception_handler(LoginRequired)
    async def _login_required(request: Request, exc: LoginRequired) -> Response:
        if _is_api(request):
            return JSONResponse(
                _bilingual(Reason("authentication required", "需要登录")),
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?next={quote(target)}", status_code=303)

    @app.exception_handler(PasswordChangeRequired)
    async def _password_change(request: Request, exc: PasswordChangeRequired) -> Response:
        if _is_api(request):
            return JSONResponse(
                _bilingual(
                    Reason("change the password an administrator set first", "请先修改管理员设置的密码")
                ),
                status_code=403,
            )
        return RedirectResponse("/account/password", status_code=303)

    @app.exception_handler(Forbidden)
    async def _forbidden(request: Request, exc: Forbidden) -> Response:
        message = exc.args[0] if exc.args else ""
        if _is_api(request):
            return JSONResponse(_bilingual(message), status_code=403)
        _ = gettext(request)
        return render(
            request,
            "error.html",
            status_code=403,
            title=_("Not allowed"),
            message=in_language(message, request.state.lang),
            reasons=[],
        )

    @app.exception_handler(CsrfError)
    async def _csrf(request: Request, exc: CsrfError) -> Response:
        if _is_api(request):
            return JSONResponse(
                _bilingual(Reason(str(exc), "CSRF 令牌缺失或错误：请刷新页面后重试")), status_code=403
            )
        _ = gettext(request)
        return render(
            request,
            "error.html",
            status_code=403,
            title=_("Form expired"),
            message=_("The form is missing its security token. Reload the page and try again."),
            reasons=[],
        )

    @app.exception_handler(TrackerError)
    async def _tracker_error(request: Request, exc: TrackerError) -> Response:
        reasons = exc.reasons if isinstance(exc, ConflictError) and exc.reasons != [exc.message] else []
        if _is_api(request):
            body = _bilingual(str(exc))
            body["detail_zh"] = (
                (
                    in_language(exc.message, "zh-CN")
                    + "："
                    + "；".join(in_language(r, "zh-CN") for r in reasons)
                )
                if reasons
                else in_language(exc.message, "zh-CN")
            )
            if isinstance(exc, ConflictError):
                body["reasons"] = list(reasons or exc.reasons)
                body["reasons_zh"] = [in_language(r, "zh-CN") for r in body["reasons"]]
            return JSONResponse(body, status_code=exc.status_code, headers=_retry_after(exc))
        # pages show the words of the page's language; flashes keep plain text (they are stored)
        lang = request.state.lang
        message, reasons = exc.said(lang), [in_language(r, lang) for r in reasons]
        # a token client has no session to carry a flash: it gets the refusal itself
        if request.method == "POST" and not getattr(request.state, "via_token", False):
            (await run_in_threadpool(ensure_web_session, request)).flash("error", message, reasons)
            return RedirectResponse(back_path(request), status_code=303)
        _ = gettext(request)
        response = render(
            request,
            "error.html",
            status_code=exc.status_code,
            title=_("Refused"),
            message=message,
            reasons=reasons,
        )
        response.headers.update(_retry_after(exc))
        return response

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        errors = [{k: v for k, v in e.items() if k in ("loc", "msg", "type")} for e in exc.errors()]
        # a validator's own reason (a Reason: e.g. a time without its offset) in both languages
        said = [_validator_reason(e) for e in exc.errors()]
        if _is_api(request):
            body = {"detail": errors}
            if any(said):
                body["detail_zh"] = "；".join(in_language(r, "zh-CN") for r in said if r)
            return JSONResponse(body, status_code=422)
        _ = gettext(request)
        fields = sorted({str(e["loc"][-1]) for e in errors if e.get("loc")})
        message = (
            "; ".join(in_language(r, request.state.lang) for r in said if r)
            if any(said)
            else _("Please fill in every required field.")
        )
        if request.method == "POST":
            (await run_in_threadpool(ensure_web_session, request)).flash("error", message, fields)
            return RedirectResponse(back_path(request), status_code=303)
        return render(
            request, "error.html", status_code=422, title=_("Refused"), message=message, reasons=fields
        )


def _retry_after(exc: Exception) -> dict[str, str]:
    return {"Retry-After": str(exc.retry_after)} if isinstance(exc, TooManyRequestsError) else {}


def _validator_reason(error: dict) -> Reason | None:
    cause = (error.get("ctx") or {}).get("error")
    text = cause.args[0] if isinstance(cause, Exception) and cause.args else None
    return text if isinstance(text, Reason) else None


def _bilingual(message: str) -> dict:
    """JSON error bodies: ``detail`` in English (stable for machines and logs) and ``detail_zh``."""
    return {"detail": str(message), "detail_zh": in_language(message, "zh-CN")}


def create_app(*, engine: Engine | None = None, settings: WebSettings | None = None) -> FastAPI:
    settings = settings or WebSettings()
    engine = engine or get_engine(get_settings().database_url)
    app = FastAPI(
        title="GMP cleanroom tracker API",
        version="1",
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json",
        description="Environmental monitoring, deviations and batch records. Authenticate with "
        "`POST /api/v1/tokens`, then `Authorization: Bearer <token>`.",
        dependencies=[Depends(authorize), Depends(verify_csrf)],
    )
    app.state.engine = engine
    app.state.web_settings = settings
    app.state.sessions = SessionStore(
        engine, settings.session_idle_minutes * 60, max_seconds=settings.session_max_hours * 3600
    )
    app.state.trusted_proxies = parse_networks(settings.trusted_proxies)
    app.state.login_limiter = RateLimiter(
        settings.login_attempts_per_minute, max_keys=settings.limiter_max_keys
    )
    app.state.login_throttle = LoginThrottle(
        free=settings.login_free_failures,
        base=settings.login_backoff_seconds,
        cap=settings.login_backoff_max_seconds,
        max_keys=settings.limiter_max_keys,
    )
    app.state.reports = ReportCache(
        builds_per_hour=settings.report_builds_per_hour,
        keep_seconds=settings.report_cache_minutes * 60,
        max_keys=settings.limiter_max_keys,
    )
    app.state.jinja = make_env()

    @app.middleware("http")
    async def _sessions_and_headers(request: Request, call_next):
        store: SessionStore = app.state.sessions
        sent = request.cookies.get(COOKIE)
        # the dashboard's background polling does not keep an unattended session alive
        # the store blocks on the database (on SQLite behind the ingester's write lock): in the
        # threadpool, so that one waiting request does not stall every request of the process
        request.state.web = await run_in_threadpool(store.get, sent, touch=request.url.path not in UNATTENDED)
        request.state.lang = pick_lang(request.cookies.get("lang"))
        response = await call_next(request)
        web = getattr(request.state, "web", None)
        if web is not None and web.transient:
            web = None  # a token request: no session, no cookie
        elif web is not None:
            await run_in_threadpool(store.save, web)  # flashes added or shown during the request
        if web is not None and (getattr(request.state, "set_cookie", False) or sent != web.sid):
            response.set_cookie(
                COOKIE, web.sid, httponly=True, samesite="lax", path="/", secure=_secure(request, settings)
            )
        elif sent and web is None:
            response.delete_cookie(COOKIE, path="/")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault("X-Frame-Options", "DENY")
        if not request.url.path.startswith(("/docs", "/static")):
            response.headers.setdefault("Content-Security-Policy", CSP)
            response.headers.setdefault("Cache-Control", "no-store")
        return response

    _add_handlers(app)

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="GMP tracker API",
            swagger_js_url="/static/swagger/swagger-ui-bundle.js",
            swagger_css_url="/static/swagger/swagger-ui.css",
            swagger_favicon_url="/static/swagger/favicon-32x32.png",
        )

    from tracker.web.api import router as api_router
    from tracker.web.pages import routers as page_routers

    app.include_router(api_router)
    for router in page_routers:
        app.include_router(router)
    app.mount("/static/swagger", StaticFiles(directory=swagger_ui_bundle.swagger_ui_path), name="swagger")
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    check_access_table(app)
    return app


def flat_routes(app_or_router) -> list[BaseRoute]:
    """Every HTTP route, also those of included routers (which carry their full path: the
    routers set their own prefix, so ``scope["route"].path`` is the path of the access table)."""
    found: list[BaseRoute] = []
    for route in app_or_router.routes:
        original = getattr(route, "original_router", None)
        if original is not None:
            found.extend(flat_routes(original))
        elif not isinstance(route, Mount) and getattr(route, "methods", None):
            found.append(route)
    return found
