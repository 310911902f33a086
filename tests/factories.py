"""Keyword-only builders of wire payloads for the tests."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

T0 = datetime(2026, 11, 20, 0, 0, tzinfo=UTC)
SITE = "T-SITE"


def iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def particles(
    *,
    monitor: str = "T-B1-PC",
    seq: int,
    ts: datetime,
    c05: int,
    c50: int = 0,
    volume: float = 28.3,
    unit: str = "L",
    status: str = "ok",
) -> bytes:
    return json.dumps(
        {
            "schema": "gmp.reading/1",
            "monitor": monitor,
            "seq": seq,
            "ts": iso(ts),
            "kind": "particles",
            "sample": {"volume": volume, "unit": unit},
            "counts": {"0.5": c05, "5.0": c50},
            "status": status,
        }
    ).encode()


def scalar(
    *, monitor: str, kind: str, seq: int, ts: datetime, value: float, unit: str, status: str = "ok"
) -> bytes:
    return json.dumps(
        {
            "schema": "gmp.reading/1",
            "monitor": monitor,
            "seq": seq,
            "ts": iso(ts),
            "kind": kind,
            "value": value,
            "unit": unit,
            "status": status,
        }
    ).encode()


def topic(room: str, monitor: str, *, site: str = SITE) -> str:
    return f"gmp/{site}/{room}/{monitor}"


def minutes(n: float) -> timedelta:
    return timedelta(minutes=n)


def seconds(n: float) -> timedelta:
    return timedelta(seconds=n)


#: one account per role for the quality tests; passwords are test-only values
PASSWORD = "correct horse battery staple"
TEMPORARY_PASSWORD = "temporary password set by the admin"
PEOPLE = {
    "admin": ("系统管理员 Admin", ["admin"]),
    "op1": ("操作员 王芳 Wang Fang", ["operator"]),
    "op2": ("操作员 李雷 Li Lei", ["operator"]),
    "prod": ("生产负责人 张伟 Zhang Wei", ["production_head"]),
    "qa1": ("QA 刘洋 Liu Yang", ["qa"]),
    "qa2": ("QA 赵敏 Zhao Min", ["qa"]),
    "qp1": ("质量受权人 陈静 Chen Jing", ["qp"]),
}


def _grant_of(engine, username: str) -> int | None:
    from sqlmodel import Session, select

    from tracker.identity.users import RoleGrant, User

    with Session(engine) as s:
        user = s.exec(select(User).where(User.username == username)).one()
        return s.exec(
            select(RoleGrant.id).where(RoleGrant.user_id == user.id, RoleGrant.status == "pending")
        ).first()


def take_over(engine, username: str, *, witness: str = "qa1", approver: str = "qa1") -> None:
    """What follows an admin creating an account with a signing role: QA (``approver``, another
    person) approves the role with an e-signature, and the owner enrols a password of their own
    before a witness from QA."""
    from tracker.core.db import unit_of_work
    from tracker.identity.grants import approve_roles
    from tracker.identity.users import enrol, login

    grant = _grant_of(engine, username)
    if grant is not None:
        with unit_of_work(engine) as s:
            approve_roles(s, signer=as_(engine, approver), grant_id=grant)
    me = login(engine, username=username, password=TEMPORARY_PASSWORD)
    with unit_of_work(engine) as s:
        enrol(s, owner=me, witness=as_(engine, witness), new_password=PASSWORD)


def add_person(engine, username: str, full_name: str, roles: list[str], *, person: str | None = None) -> None:
    """One more account, created by the admin, its signing roles approved by QA, taken over by its
    owner (a password of their own, enrolled before a QA witness). ``person``: the person the
    account belongs to (default: a person of its own)."""
    from tracker.core.db import unit_of_work
    from tracker.identity.users import create_user

    with unit_of_work(engine) as s:
        create_user(
            s,
            username=username,
            full_name=full_name,
            person=person or f"E-{username}",
            roles=roles,
            password=TEMPORARY_PASSWORD,
            actor=as_(engine, "admin"),
        )
    helper = "qa2" if person == "E-qa1" else "qa1"  # nobody approves or witnesses for themselves
    take_over(engine, username, witness=helper, approver=helper)


def make_people(engine) -> None:
    """Install the site's people as a real site would: the first admin explicitly; then the
    others as that admin; the first QA account (qa1) approved by the admin and enrolled before
    them at installation (the one bootstrap exception); every other signing role approved by
    qa1 and every password enrolled by its owner before qa1."""
    from tracker.core.db import unit_of_work
    from tracker.identity.grants import bootstrap_roles
    from tracker.identity.users import create_user, enrol, login

    with unit_of_work(engine) as s:
        name, roles = PEOPLE["admin"]
        create_user(
            s, username="admin", full_name=name, person="E-admin", roles=roles, password=PASSWORD, actor=None
        )
    admin = login(engine, username="admin", password=PASSWORD)
    with unit_of_work(engine) as s:
        for username, (name, roles) in PEOPLE.items():
            if username != "admin":
                create_user(
                    s,
                    username=username,
                    full_name=name,
                    person=f"E-{username}",
                    roles=roles,
                    password=TEMPORARY_PASSWORD,
                    actor=admin,
                )
    with unit_of_work(engine) as s:
        bootstrap_roles(s, admin=as_(engine, "admin"), grant_id=_grant_of(engine, "qa1"))
    me = login(engine, username="qa1", password=TEMPORARY_PASSWORD)
    with unit_of_work(engine) as s:
        enrol(s, owner=me, witness=as_(engine, "admin"), new_password=PASSWORD)
    for username in PEOPLE:
        if username not in ("admin", "qa1"):
            take_over(engine, username)


def as_(engine, username: str):
    """A fresh authentication of ``username`` (what a signature needs)."""
    from tracker.identity.users import login

    return login(engine, username=username, password=PASSWORD)


def assess_coverage(
    engine,
    number: str,
    *,
    by: str = "qa1",
    reason: str = "closed system throughout; no open handling while the counter was silent",
) -> list[str]:
    """QA assesses (not exposed, with ``reason``) every unassessed ``coverage_gap`` review item of
    batch ``number`` — a grade A/B step that ran without particle readings (issue 14 item 5) —
    for the tests whose subject is something else. Returns the keys assessed."""
    from tracker.core.db import unit_of_work
    from tracker.quality.batches.linking import sync_links
    from tracker.quality.batches.review import assess_item, review_items
    from tracker.quality.batches.steps import get_batch

    with unit_of_work(engine) as s:
        batch = get_batch(s, number)
        sync_links(s, batch=batch)
        keys = [
            i.key for i in review_items(s, batch) if i.kind == "coverage_gap" and i.exposed == "unassessed"
        ]
        for key in keys:
            assess_item(s, actor=as_(engine, by), batch=batch, item_key=key, exposed=False, reason=reason)
    return keys
