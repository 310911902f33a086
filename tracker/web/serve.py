"""Running the web app: ``tracker serve`` (foreground) and the demo's background server."""

from __future__ import annotations

import secrets
import threading
import time

import uvicorn
from sqlalchemy import Engine
from sqlmodel import select

from tracker.core.db import unit_of_work
from tracker.identity.grants import approve_roles, bootstrap_roles
from tracker.identity.users import ROLES, RoleGrant, create_user, enrol, login
from tracker.web.app import create_app
from tracker.web.config import WebSettings

#: the demo's accounts, one per role (created in the throwaway demo database only)
DEMO_PEOPLE = {
    "admin": ("demo.admin", "演示 管理员 Demo Admin"),
    "operator": ("demo.operator", "演示 操作员 Demo Operator"),
    "production_head": ("demo.production", "演示 生产负责人 Demo Production Head"),
    "qa": ("demo.qa", "演示 QA Demo QA"),
    "qp": ("demo.qp", "演示 质量受权人 Demo QP"),
    "viewer": ("demo.viewer", "演示 只读 Demo Viewer"),
    "identity_reveal": ("demo.steward", "演示 身份查阅 Demo Identity Steward"),
}


def _demo_account(engine: Engine, admin, role: str, username: str, full_name: str) -> tuple[str, str]:
    """An account created by the admin with a generated temporary password."""
    temporary = secrets.token_urlsafe(12)
    with unit_of_work(engine) as s:
        create_user(
            s,
            username=username,
            full_name=full_name,
            person=f"DEMO-{role}",
            roles=[role],
            password=temporary,
            actor=admin,
        )
        grant = s.exec(select(RoleGrant.id).where(RoleGrant.status == "pending")).first()
    return temporary, grant


def _take_over(engine: Engine, username: str, temporary: str, witness) -> str:
    """The owner enrols a password of their own before the witness; returns it."""
    final = secrets.token_urlsafe(12)
    me = login(engine, username=username, password=temporary)
    with unit_of_work(engine) as s:
        enrol(s, owner=me, witness=witness(), new_password=final)
    return final


def create_demo_users(engine: Engine) -> list[tuple[str, str, str]]:
    """One account per role with a password generated now (printed once, stored only as a hash),
    installed as a real site would be: the admin; the QA account approved by the admin and
    enrolled before them (the installation's one exception); every other signing role approved
    by QA and every password enrolled by its owner before QA."""
    assert set(DEMO_PEOPLE) == set(ROLES)
    admin_name, admin_full = DEMO_PEOPLE["admin"]
    admin_password = secrets.token_urlsafe(12)
    with unit_of_work(engine) as s:
        create_user(
            s,
            username=admin_name,
            full_name=admin_full,
            person="DEMO-admin",
            roles=["admin"],
            password=admin_password,
            actor=None,
        )
    logins: list[tuple[str, str, str]] = [("admin", admin_name, admin_password)]
    admin = login(engine, username=admin_name, password=admin_password)
    qa_name = DEMO_PEOPLE["qa"][0]
    temporary, grant = _demo_account(engine, admin, "qa", qa_name, DEMO_PEOPLE["qa"][1])
    with unit_of_work(engine) as s:
        bootstrap_roles(s, admin=login(engine, username=admin_name, password=admin_password), grant_id=grant)
    qa_password = _take_over(
        engine, qa_name, temporary, lambda: login(engine, username=admin_name, password=admin_password)
    )
    logins.append(("qa", qa_name, qa_password))
    as_qa = lambda: login(engine, username=qa_name, password=qa_password)  # noqa: E731
    for role, (username, full_name) in DEMO_PEOPLE.items():
        if role in ("admin", "qa"):
            continue
        temporary, grant = _demo_account(engine, admin, role, username, full_name)
        if grant is not None:
            with unit_of_work(engine) as s:
                approve_roles(s, signer=as_qa(), grant_id=grant)
        logins.append((role, username, _take_over(engine, username, temporary, as_qa)))
    order = list(DEMO_PEOPLE)
    return sorted(logins, key=lambda row: order.index(row[0]))


def start_background(
    engine: Engine, *, host: str, port: int, settings: WebSettings | None = None
) -> tuple[uvicorn.Server, threading.Thread]:
    """The app on a thread (for the demo and tests); stop with ``server.should_exit = True``."""
    settings = settings or WebSettings()
    app = create_app(engine=engine, settings=settings)
    server = uvicorn.Server(
        uvicorn.Config(
            app, host=host, port=port, log_level="warning", lifespan="off", **_proxy_options(settings)
        )
    )
    thread = threading.Thread(target=server.run, name="web", daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    if not server.started:
        raise RuntimeError(f"the web app did not start on {host}:{port}")
    return server, thread


def _proxy_options(settings: WebSettings) -> dict:
    """uvicorn believes X-Forwarded-* only from the configured proxies (none by default: its own
    default, 127.0.0.1, would let anyone on the host claim any address)."""
    if not settings.trusted_proxies.strip():
        return {"proxy_headers": False}
    return {"proxy_headers": True, "forwarded_allow_ips": settings.trusted_proxies}


def serve(engine: Engine, *, host: str, port: int, trusted_proxies: str | None = None) -> None:
    """Foreground server. Behind a TLS proxy (``TRACKER_WEB_TRUSTED_PROXIES`` or
    ``--trusted-proxies``), X-Forwarded-Proto makes cookies Secure and X-Forwarded-For names the
    client; from anyone else both headers are ignored."""
    settings = WebSettings() if trusted_proxies is None else WebSettings(trusted_proxies=trusted_proxies)
    uvicorn.run(
        create_app(engine=engine, settings=settings),
        host=host,
        port=port,
        log_level="info",
        **_proxy_options(settings),
    )
