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


def add_person(engine, username: str, full_name: str, roles: list[str]) -> None:
    """One more account, created by the admin and taken over by its owner (new password)."""
    from tracker.core.db import unit_of_work
    from tracker.identity.users import change_password, create_user, login

    with unit_of_work(engine) as s:
        create_user(
            s,
            username=username,
            full_name=full_name,
            roles=roles,
            password=TEMPORARY_PASSWORD,
            actor=as_(engine, "admin"),
        )
    me = login(engine, username=username, password=TEMPORARY_PASSWORD)
    with unit_of_work(engine) as s:
        change_password(s, actor=me, new_password=PASSWORD)


def make_people(engine) -> None:
    """Create the first admin explicitly, then the others as that admin; each then replaces the
    password the admin chose (a must before signing anything)."""
    from tracker.core.db import unit_of_work
    from tracker.identity.users import change_password, create_user, login

    with unit_of_work(engine) as s:
        name, roles = PEOPLE["admin"]
        create_user(s, username="admin", full_name=name, roles=roles, password=PASSWORD, actor=None)
    admin = login(engine, username="admin", password=PASSWORD)
    with unit_of_work(engine) as s:
        for username, (name, roles) in PEOPLE.items():
            if username != "admin":
                create_user(
                    s,
                    username=username,
                    full_name=name,
                    roles=roles,
                    password=TEMPORARY_PASSWORD,
                    actor=admin,
                )
    for username in PEOPLE:
        if username != "admin":
            me = login(engine, username=username, password=TEMPORARY_PASSWORD)
            with unit_of_work(engine) as s:
                change_password(s, actor=me, new_password=PASSWORD)


def as_(engine, username: str):
    """A fresh authentication of ``username`` (what a signature needs)."""
    from tracker.identity.users import login

    return login(engine, username=username, password=PASSWORD)
