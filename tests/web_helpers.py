"""Helpers for the web tests: log in through the form, read the CSRF token from a page."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from tests.factories import PASSWORD

#: one account per role (tests.factories.PEOPLE plus the viewer of the web fixtures)
ROLE_USER = {
    "operator": "op1",
    "production_head": "prod",
    "qa": "qa1",
    "qp": "qp1",
    "admin": "admin",
    "viewer": "viewer1",
    "identity_reveal": "steward1",
}
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found, "no CSRF token on the page"
    return found.group(1)


def browser(app, username: str | None = None, *, lang: str | None = None) -> tuple[TestClient, str]:
    """A client with a session (logged in as ``username`` when given) and its CSRF token."""
    client = TestClient(app, follow_redirects=False)
    if lang:
        client.cookies.set("lang", lang)
    token = csrf_of(client.get("/login").text)
    if username:
        r = client.post(
            "/login", data={"username": username, "password": PASSWORD, "csrf_token": token, "next": "/"}
        )
        assert r.status_code == 303, r.text[:500]
        assert r.headers["location"] == "/", r.text[:500]
        token = csrf_of(client.get("/account/password").text)  # rotated at login
    return client, token
