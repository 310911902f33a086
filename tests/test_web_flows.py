"""Issue 7: the shop floor and the administrator through the pages (TestClient): a batch opened,
a step started and ended with its signature, the record completed; an account created by the
admin whose owner must choose a password first; an inhibited room on the dashboard."""

from __future__ import annotations

import re
from datetime import timedelta

from sqlalchemy import Engine

from tests.factories import PASSWORD, T0, particles, topic
from tests.web_helpers import browser, csrf_of
from tracker.core.db import unit_of_work
from tracker.facility.inhibits import add_inhibit
from tracker.identity import signatures
from tracker.identity.users import get_user
from tracker.quality.batches.steps import get_batch, steps_of


def test_operator_records_a_batch_and_signs_the_step(web_app, web_engine: Engine) -> None:
    op, token = browser(web_app, "op1")
    r = op.post(
        "/batches", data={"csrf_token": token, "number": "CT-2026-050", "product": "CAR-T", "donor": "D-50"}
    )
    assert r.headers["location"] == "/batches/CT-2026-050"
    r = op.post(
        "/batches/CT-2026-050/steps",
        data={"csrf_token": token, "name": "收获 harvest", "room": "T-B1-BSC", "open_processing": "true"},
    )
    assert r.status_code == 303
    page = op.get("/batches/CT-2026-050").text
    assert "收获 harvest" in page
    assert 'action="/steps/' in page  # the step can be ended (signature dialog)
    with unit_of_work(web_engine) as s:
        (step,) = steps_of(s, get_batch(s, "CT-2026-050"))
        step_id = step.id
    # a wrong password signs nothing
    r = op.post(
        f"/steps/{step_id}/end",
        data={"csrf_token": token, "password": "not the password"},
        headers={"referer": "http://testserver/batches/CT-2026-050"},
    )
    assert "用户名或密码错误" in op.get(r.headers["location"]).text
    r = op.post(
        f"/steps/{step_id}/end",
        data={"csrf_token": token, "password": PASSWORD, "comment": "按 SOP 完成"},
        headers={"referer": "http://testserver/batches/CT-2026-050"},
    )
    assert r.status_code == 303
    page = op.get("/batches/CT-2026-050").text
    assert "操作员 王芳 Wang Fang (op1)" in page  # the manifest: printed name …
    assert "按 SOP 完成" in page
    assert "+0800" in page  # … local time with its offset
    op.post("/batches/CT-2026-050/complete", data={"csrf_token": token})
    with unit_of_work(web_engine) as s:
        assert get_batch(s, "CT-2026-050").status == "completed"
        (sig,) = signatures.signatures_of(s, "process_step", str(step_id))
        assert (sig.meaning, sig.username) == ("performed", "op1")
    # the QA head cannot sign as production
    qa, qa_token = browser(web_app, "qa1")
    assert (
        qa.post("/batches/CT-2026-050/sign", data={"csrf_token": qa_token, "password": PASSWORD}).status_code
        == 403
    )


def test_admin_creates_an_account_whose_owner_must_choose_the_password(web_app, web_engine: Engine) -> None:
    admin, token = browser(web_app, "admin")
    r = admin.post(
        "/users",
        data={
            "csrf_token": token,
            "username": "qa.new",
            "full_name": "QA 新人 New",
            "person": "E-9001",
            "roles": ["qa"],
            "password": "temporary password 123",
        },
    )
    assert r.status_code == 303
    assert "qa.new" in admin.get("/users").text
    # separation of duties comes from the service, with its reason
    admin.post(
        "/users",
        data={
            "csrf_token": token,
            "username": "both",
            "full_name": "Both",
            "person": "E-9002",
            "roles": ["qa", "production_head"],
            "password": "temporary password 123",
        },
        headers={"referer": "http://testserver/users"},
    )
    assert "不能由同一人兼任" in admin.get("/users").text

    # the QA role is asked for, not given: another person from QA approves it, signed
    assert "待 QA 批准" in admin.get("/users").text
    qa, qa_token = browser(web_app, "qa1")
    page = qa.get("/access").text
    assert "qa.new" in page
    assert "E-9001" in page
    grant = re.search(r'action="/access/(\d+)/approve"', page).group(1)
    r = qa.post(f"/access/{grant}/approve", data={"csrf_token": qa_token, "password": PASSWORD})
    assert r.status_code == 303
    assert "qa.new" not in qa.get("/access").text

    new, _ = browser(web_app)
    token = csrf_of(new.get("/login").text)
    r = new.post(
        "/login", data={"csrf_token": token, "username": "qa.new", "password": "temporary password 123"}
    )
    assert r.headers["location"] == "/account/password"
    assert new.get("/excursions").headers["location"] == "/account/password"
    token = csrf_of(new.get("/account/password").text)
    mine = "my very own passphrase"
    r = new.post(
        "/account/password",
        data={
            "csrf_token": token,
            "current": "temporary password 123",
            "new": mine,
            "confirm": mine,
            "witness": "qa1",
            "witness_password": PASSWORD,
        },
    )
    assert r.headers["location"] == "/"
    assert new.get("/excursions").status_code == 200
    with unit_of_work(web_engine) as s:
        user = get_user(s, "qa.new")
        assert (user.roles, user.enrolled_witness) == ("qa", "qa1")


def test_an_inhibited_room_shows_as_inhibited_on_the_dashboard(web_app, web_engine: Engine) -> None:
    from tracker.ingest.processor import BatchProcessor, InboundMessage
    from tracker.monitoring.intake import Intake

    with unit_of_work(web_engine) as s:
        add_inhibit(
            s,
            starts_at=T0,
            ends_at=T0 + timedelta(hours=2),
            reason="WO-7 filter change",
            actor="qa1",
            room_code="T-C1",
        )
    messages = [
        InboundMessage(
            topic=topic("T-C1", "T-C1-PC"),
            received_at=T0 + timedelta(minutes=10),
            dup=False,
            payload=particles(monitor="T-C1-PC", seq=m + 1, ts=T0 + timedelta(minutes=m), c05=100),
        )
        for m in range(5)
    ]
    with unit_of_work(web_engine) as s:
        BatchProcessor(Intake(close_after=3)).process(s, messages)
    qa, _ = browser(web_app, "qa1")
    live = qa.get("/dashboard/live").text
    assert 'class="tile inhibited" data-room="T-C1"' in live
    assert "已屏蔽" in live
