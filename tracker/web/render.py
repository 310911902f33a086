"""Rendering pages: the Jinja2 environment, per-request language, flash-and-redirect."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse
from sqlmodel import Session, select

from tracker.core.errors import in_language
from tracker.core.settings import get_settings
from tracker.core.timeutil import local_display, parse_instant
from tracker.facility.models import Site
from tracker.identity.users import alerts
from tracker.web.deps import ensure_web_session
from tracker.web.i18n import translations

TEMPLATES = Path(__file__).resolve().parent.parent.parent / "templates" / "web"


def make_env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        extensions=["jinja2.ext.i18n"],
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = lambda v: "" if v is None else f"{v:,.1f}" if abs(v) < 1e4 else f"{v:,.0f}"
    return env


def gettext(request: Request):
    return translations(request.state.lang).gettext


def tr(request: Request, message: str) -> str:
    """``message`` in the request's language (extracted with the keyword ``tr:2``)."""
    return translations(request.state.lang).gettext(message)


def site_tz(engine) -> str:
    with Session(engine) as s:
        tz = s.exec(select(Site.timezone).order_by(Site.id)).first()
    return tz or get_settings().timezone


def render(request: Request, name: str, *, status_code: int = 200, **ctx) -> HTMLResponse:
    lang = request.state.lang
    cat = translations(lang)
    web = ensure_web_session(request)
    tz = site_tz(request.app.state.engine)

    def local(value) -> str:
        if value is None or value == "":
            return "—"
        return local_display(parse_instant(value) if isinstance(value, str) else value, tz)

    me = getattr(request.state, "principal", None)
    html = request.app.state.jinja.get_template(name).render(
        _=cat.gettext,
        gettext=cat.gettext,
        ngettext=cat.ngettext,
        label=lambda v: cat.gettext(v) if v else "",
        lang=lang,
        me=me,
        login_alerts=_login_alerts(request.app.state.engine) if me and "admin" in me.roles else [],
        csrf=web.csrf,
        flashes=[] if name.startswith("_") else web.pop_flashes(),  # fragments leave messages alone
        local=local,
        tz=tz,
        path=request.url.path,
        said=lambda text: in_language(text, lang),
        poll_ms=int(request.app.state.web_settings.poll_seconds * 1000),
        **ctx,
    )
    return HTMLResponse(html, status_code=status_code)


def _login_alerts(engine) -> list[tuple[str, int]]:
    """Accounts with repeated failed logins, shown to administrators on every page (a read)."""
    with Session(engine) as s:
        return alerts(s)


def back_path(request: Request, default: str = "/") -> str:
    """Where to return after a form post: the referring page of this site, else ``default``."""
    ref = request.headers.get("referer")
    if ref:
        parts = urlsplit(ref)
        if parts.netloc in ("", request.url.netloc) and parts.path.startswith("/"):
            return parts.path + (f"?{parts.query}" if parts.query else "")
    return default


def done(request: Request, to: str, message: str) -> RedirectResponse:
    """Post/redirect/get with a confirmation shown on the next page."""
    ensure_web_session(request).flash("ok", message)
    return RedirectResponse(to, status_code=303)
