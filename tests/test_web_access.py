"""Issue 7: the authorisation matrix (every route × every role and anonymous gets exactly the
answer of the access table), CSRF on every unsafe request, sessions, tokens, login throttling."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from tests.factories import PASSWORD
from tests.web_helpers import ROLE_USER, browser, csrf_of
from tracker.core.db import unit_of_work
from tracker.core.timeutil import utcnow
from tracker.monitoring.excursions import list_excursions
from tracker.web.access import ACCESS, ANONYMOUS
from tracker.web.app import create_app, flat_routes
from tracker.web.config import WebSettings

FILL = {
    "excursion_id": "999999",
    "capa_id": "999999",
    "link_id": "999999",
    "step_id": "999999",
    "proposal_id": "999999",
    "token_id": "999999",
    "grant_id": "999999",
    "challenge_id": "999999",
    "alarm_id": "999999",
    "number": "NO-SUCH",
    "code": "NO-SUCH",
    "username": "nobody",
}
#: bodies that pass validation, so an allowed caller reaches the service (which then answers 404)
API_BODIES = {
    "/api/v1/tokens": {"username": ""},  # 422: a wrong password would rightly be 401
    "/api/v1/excursions/{excursion_id}/acknowledge": {"comment": "seen"},
    "/api/v1/deviations": {
        "title": "t",
        "classification": "minor",
        "category": "environment",
        "description": "d",
        "batches": ["NO-SUCH"],
    },
    "/api/v1/links/{link_id}/decide": {"exposed": True, "reason": "r", "password": PASSWORD},
    "/api/v1/batches/{number}/sign": {"password": PASSWORD},
    "/api/v1/batches/{number}/review": {"password": PASSWORD},
    "/api/v1/batches/{number}/release": {"password": PASSWORD},
    "/api/v1/batches/{number}/reject": {"password": PASSWORD, "reason": "r"},
    "/api/v1/batches/{number}/post-release": {
        "password": PASSWORD,
        "outcome": "no_impact",
        "assessment": "a",
    },
    "/api/v1/batches/{number}/viable-review": {
        "password": PASSWORD,
        "outcome": "acceptable",
        "assessment": "a",
    },
    "/api/v1/deviations/{number}/update": {"reason": "r", "title": "t"},
    "/api/v1/deviations/{number}/assess": {"batch": "NO-SUCH", "impact": "none", "assessment": "a"},
    "/api/v1/deviations/{number}/approve": {"password": PASSWORD},
    "/api/v1/deviations/{number}/no-capa": {"justification": "j"},
    "/api/v1/deviations/{number}/close": {"password": PASSWORD},
    "/api/v1/deviations/{number}/capa": {
        "kind": "corrective",
        "description": "d",
        "owner": "op1",
        "due": "2026-12-31",
    },
    "/api/v1/capa/{capa_id}/done": {"outcome": "o"},
    "/api/v1/capa/{capa_id}/check": {"effective": True, "note": "n"},
    "/api/v1/limits/proposals": {
        "room": "NO-SUCH",
        "kind": "pressure",
        "state": "at_rest",
        "from": "2026-01-01T00:00:00+08:00",
        "to": "2026-02-01T00:00:00+08:00",
    },
    "/api/v1/limits/proposals/{proposal_id}/approve": {"password": PASSWORD},
    "/api/v1/limits/proposals/{proposal_id}/reject": {"reason": "r"},
    "/api/v1/tokens/{token_id}/revoke": {"reason": "r"},
}


def concrete(path: str) -> str:
    path = path.replace("/lang/{code}", "/lang/en")
    return re.sub(r"\{(\w+)\}", lambda m: FILL[m.group(1)], path)


def call(client: TestClient, token: str, method: str, path: str, *, with_csrf: bool = True):
    url = concrete(path)
    if method == "GET":
        return client.get(url)
    if path.startswith("/api/"):
        headers = {"X-CSRF-Token": token} if with_csrf else {}
        return client.post(url, json=API_BODIES.get(path, {}), headers=headers)
    return client.post(url, data={"csrf_token": token} if with_csrf else {})


def test_every_route_is_in_the_access_table(web_app) -> None:
    routes = {f"{m} {r.path}" for r in flat_routes(web_app) for m in r.methods if m != "HEAD"}
    assert routes == set(ACCESS)


@pytest.mark.parametrize("role", [ANONYMOUS, *ROLE_USER])
def test_authorisation_matrix(web_app, role: str) -> None:
    client, token = browser(web_app, None if role == ANONYMOUS else ROLE_USER[role])
    wrong = []
    for key, roles in sorted(ACCESS.items(), key=lambda kv: kv[0] == "POST /logout"):  # logout last
        method, path = key.split(" ", 1)
        r = call(client, token, method, path)
        to_login = r.status_code == 303 and r.headers["location"].startswith("/login")
        if role in roles and path == "/logout":  # logging out also lands on the login page
            ok = to_login and client.get("/").headers.get("location", "").startswith("/login")
        elif role in roles and path == "/api/v1/logout":  # ends the session: log in again
            ok = r.status_code == 200 and client.get("/").headers.get("location", "").startswith("/login")
            client, token = browser(web_app, ROLE_USER[role])
        elif role in roles:
            ok = r.status_code not in (401, 403) and not to_login and r.status_code < 500
        elif role == ANONYMOUS:
            ok = r.status_code == 401 if path.startswith("/api/") else to_login
        else:
            ok = r.status_code == 403
        if not ok:
            wrong.append(f"{key}: {r.status_code} {r.headers.get('location', '')} {r.text[:120]!r}")
    assert wrong == [], "\n".join(wrong)


def test_unsafe_requests_without_the_csrf_token_are_refused(web_app, web_engine: Engine) -> None:
    clients = {role: browser(web_app, user) for role, user in ROLE_USER.items()}
    refused = []
    for key, roles in ACCESS.items():
        method, path = key.split(" ", 1)
        if method != "POST" or path == "/api/v1/tokens":
            continue
        role = sorted(roles - {ANONYMOUS})[0]
        client, token = clients[role]
        r = call(client, token, method, path, with_csrf=False)
        wrong_token = (
            client.post(concrete(path), data={"csrf_token": "x" * 43})
            if not path.startswith("/api/")
            else client.post(
                concrete(path), json=API_BODIES.get(path, {}), headers={"X-CSRF-Token": "x" * 43}
            )
        )
        if r.status_code != 403 or wrong_token.status_code != 403:
            refused.append(f"{key} as {role}: {r.status_code}/{wrong_token.status_code}")
    assert refused == []
    # the login form itself needs the token of the visitor's session
    anon = TestClient(web_app, follow_redirects=False)
    assert anon.post("/login", data={"username": "qa1", "password": PASSWORD}).status_code == 403


def test_session_cookie_flags_rotation_and_logout(web_app) -> None:
    client = TestClient(web_app, follow_redirects=False)
    first = client.get("/login")
    cookie = first.headers["set-cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=lax" in cookie
    assert "Secure" not in cookie
    before = client.cookies["tracker_session"]
    token = re.search(r'name="csrf_token" value="([^"]+)"', first.text).group(1)
    r = client.post("/login", data={"username": "qa1", "password": PASSWORD, "csrf_token": token})
    assert r.status_code == 303
    assert client.cookies["tracker_session"] != before  # no session fixation
    assert client.get("/").status_code == 200
    page = client.get("/").text
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    assert client.post("/logout", data={"csrf_token": token}).status_code == 303
    assert client.get("/").headers["location"].startswith("/login")
    # behind TLS the cookie is Secure
    tls = TestClient(web_app, base_url="https://testserver", follow_redirects=False)
    assert "Secure" in tls.get("/login").headers["set-cookie"]


def test_sessions_expire_after_inactivity_and_polling_does_not_keep_them_alive(web_app) -> None:
    now = [utcnow()]
    store = web_app.state.sessions
    store.clock = lambda: now[0]
    client, _ = browser(web_app, "qa1")
    now[0] += timedelta(seconds=store.idle_seconds - 5)
    assert client.get("/dashboard/live").status_code == 200  # a poll: does not count as activity
    now[0] += timedelta(seconds=10)
    r = client.get("/")
    assert r.status_code == 303
    assert r.headers["location"].startswith("/login")


def test_api_tokens_authenticate_without_csrf_and_die_with_the_password(web_app, web_engine: Engine) -> None:
    client = TestClient(web_app)
    r = client.post("/api/v1/tokens", json={"username": "qa1", "password": PASSWORD})
    assert r.status_code == 200
    headers = {"Authorization": f"Bearer {r.json()['token']}"}
    assert client.get("/api/v1/me", headers=headers).json()["roles"] == ["qa"]
    assert client.get("/api/v1/users", headers=headers).status_code == 403
    # unsafe call with a token needs no CSRF token (no ambient cookie authority)
    assert (
        client.post(
            "/api/v1/excursions/999999/acknowledge", json={"comment": "x"}, headers=headers
        ).status_code
        == 404
    )
    assert client.get("/api/v1/me", headers={"Authorization": "Bearer gmpt.forged.token"}).status_code == 401
    from tracker.identity.users import change_password, login

    me = login(web_engine, username="qa1", password=PASSWORD)
    with unit_of_work(web_engine) as s:
        change_password(s, actor=me, new_password="another long passphrase 42")
    assert client.get("/api/v1/me", headers=headers).status_code == 401


def test_login_failures_slow_that_name_from_that_address_and_addresses_are_throttled(
    web_engine: Engine,
) -> None:
    """Issue 15 replaced the lockout (five failures locked the account for 30 minutes, so anyone
    could lock the QP out): failures now make that name wait from that address, and the address
    is throttled as a whole (tests/test_web_hardening.py has the attack cases)."""
    app = create_app(engine=web_engine, settings=WebSettings(login_attempts_per_minute=7))
    client, token = browser(app)
    for _ in range(5):
        r = client.post("/login", data={"username": "qa2", "password": "wrong password", "csrf_token": token})
        assert r.status_code == 401
        assert "用户名或密码错误" in r.text
    r = client.post("/login", data={"username": "qa2", "password": PASSWORD, "csrf_token": token})
    assert r.status_code == 429  # the sixth try from this address waits: backoff, not a lock
    assert "已锁定" not in r.text
    assert int(r.headers["retry-after"]) >= 1
    r = client.post("/login", data={"username": "qa1", "password": PASSWORD, "csrf_token": token})
    assert r.status_code == 303  # another account from the same address is not held up
    client, token = browser(app)
    r = client.post("/login", data={"username": "qa1", "password": PASSWORD, "csrf_token": token})
    assert r.status_code == 429  # the eighth attempt from this address within the minute


def test_a_wrong_signature_password_refuses_the_action_and_counts(web_app, web_engine: Engine) -> None:
    client, token = browser(web_app, "qa1")
    r = client.post(
        "/batches/NO-SUCH/review",
        data={"csrf_token": token, "password": "not my password"},
        headers={"referer": "http://testserver/batches"},
    )
    assert r.status_code == 303
    assert r.headers["location"] == "/batches"
    page = client.get("/batches").text
    assert "用户名或密码错误" in page
    with unit_of_work(web_engine) as s:
        from tracker.identity.users import get_user

        assert get_user(s, "qa1").failed_attempts == 1
        assert list_excursions(s) == []


def test_two_app_instances_over_one_database_share_logins_and_logouts(web_engine: Engine) -> None:
    """``tracker serve`` is stateless: a session made by one worker is valid on another, and a
    logout, a deactivation or a password change on one ends it everywhere."""
    from sqlmodel import Session, select

    from tracker.identity.sessions import WebSessionRow, token_hash

    settings = WebSettings(secret_key="s" * 40, login_attempts_per_minute=10_000)
    one = create_app(engine=web_engine, settings=settings)
    two = create_app(engine=web_engine, settings=settings)
    client, _ = browser(one, "qa1")
    other = TestClient(two, follow_redirects=False)
    other.cookies.set("tracker_session", client.cookies["tracker_session"])
    assert other.get("/").status_code == 200  # logged in on the second worker
    assert "刘洋" in other.get("/").text
    # only the hash of the token is stored
    with Session(web_engine) as s:
        rows = s.exec(select(WebSessionRow)).all()
        sent = client.cookies["tracker_session"]
        assert token_hash(sent) in {r.token_hash for r in rows}
        assert all(sent not in (r.token_hash, r.csrf, r.flashes) for r in rows)
    # logout on the second worker ends the session on the first
    page = other.get("/").text
    assert other.post("/logout", data={"csrf_token": csrf_of(page)}).status_code == 303
    assert client.get("/").headers["location"].startswith("/login")
    # a password change on one worker ends the user's other sessions everywhere, not its own
    a, a_token = browser(one, "qa2")
    b, _ = browser(two, "qa2")
    assert b.get("/").status_code == 200
    r = a.post(
        "/account/password",
        data={
            "csrf_token": a_token,
            "current": PASSWORD,
            "new": "a different long passphrase 7",
            "confirm": "a different long passphrase 7",
        },
    )
    assert r.status_code == 303
    assert a.get("/").status_code == 200  # the changing session goes on
    assert b.get("/").headers["location"].startswith("/login")  # the other one is over
    # a change made outside the web app (the CLI) ends the web sessions that predate it
    c, _ = browser(two, "qp1")
    from tracker.identity.users import change_password, login

    with unit_of_work(web_engine) as s:
        change_password(
            s,
            actor=login(web_engine, username="qp1", password=PASSWORD),
            new_password="the qp's new passphrase 99",
        )
    assert c.get("/").headers["location"].startswith("/login")
    # deactivation by the admin on one worker ends the account's session on the other
    op, _ = browser(two, "op2")
    assert op.get("/").status_code == 200
    admin, admin_token = browser(one, "admin")
    assert (
        admin.post("/users/op2/deactivate", data={"csrf_token": admin_token, "reason": "left"}).status_code
        == 303
    )
    assert op.get("/").headers["location"].startswith("/login")
    with Session(web_engine) as s:
        from tracker.identity.users import get_user

        op2 = get_user(s, "op2").id
        assert s.exec(select(WebSessionRow).where(WebSessionRow.user_id == op2)).all() == []
