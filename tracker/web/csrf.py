"""CSRF: one token per session, required on every unsafe request that a cookie authenticates.

Forms carry it in the hidden field ``csrf_token``, scripts in the ``X-CSRF-Token`` header.
Requests authenticated by an API token, and API calls that carry no session cookie at all (a
machine client exchanging its password for a token), need none: there is no ambient
authority to forge. The login form needs it (no login CSRF).
"""

from __future__ import annotations

import hmac

from fastapi import Request

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
FIELD = "csrf_token"
HEADER = "x-csrf-token"


class CsrfError(Exception):
    """The request carries no CSRF token or a wrong one."""


async def verify_csrf(request: Request) -> None:
    if request.method in SAFE_METHODS or getattr(request.state, "via_token", False):
        return
    if request.url.path.startswith("/api/") and getattr(request.state, "web", None) is None:
        return  # a machine client without a session cookie: nothing ambient to forge
    sent = request.headers.get(HEADER)
    ctype = request.headers.get("content-type", "")
    if not sent and (
        ctype.startswith("application/x-www-form-urlencoded") or ctype.startswith("multipart/form-data")
    ):
        form = await request.form()  # Starlette caches it for the route's Form() parameters
        value = form.get(FIELD)
        sent = value if isinstance(value, str) else None
    web = getattr(request.state, "web", None)
    if web is None or not sent or not hmac.compare_digest(sent.encode(), web.csrf.encode()):
        raise CsrfError("missing or wrong CSRF token: reload the page and try again")
