"""Issue 7, items 2 and 3: the quality workflows through the JSON API (machine clients with
bearer tokens; signatures need the password in the body, checked fresh), and the audit trail a
page at a time (a year of events is not one page)."""

from __future__ import annotations

import math
from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy import Engine, func
from sqlmodel import select

from tests.factories import PASSWORD, T0, as_, minutes
from tests.test_proposals import END, feed_counts, per_m3
from tests.web_helpers import browser
from tracker.core import audit
from tracker.core.audit import AuditEvent
from tracker.core.db import unit_of_work
from tracker.facility.models import get_site
from tracker.identity.users import get_user
from tracker.quality.batches.steps import complete_batch, create_batch, end_step, start_step


class Api:
    """A machine client: a token for ``username``, JSON in and out."""

    def __init__(self, app, username: str) -> None:
        self.client = TestClient(app)
        r = self.client.post("/api/v1/tokens", json={"username": username, "password": PASSWORD})
        assert r.status_code == 200, r.text
        self.headers = {"Authorization": f"Bearer {r.json()['token']}"}

    def post(self, path: str, body: dict | None = None, status: int = 200) -> dict:
        r = self.client.post(f"/api/v1{path}", json=body or {}, headers=self.headers)
        assert r.status_code == status, (path, r.status_code, r.text[:400])
        return r.json()

    def get(self, path: str, **params) -> dict | list:
        r = self.client.get(f"/api/v1{path}", params=params, headers=self.headers)
        assert r.status_code == 200, (path, r.status_code, r.text[:400])
        return r.json()


def _completed_batch(engine: Engine, number: str) -> None:
    with unit_of_work(engine) as s:
        batch = create_batch(
            s, actor=as_(engine, "op1"), site=get_site(s), number=number, product="CAR-T", donor_id="D-1"
        )
        step = start_step(
            s,
            actor=as_(engine, "op1"),
            batch=batch,
            name="接种",
            room_code="T-B1-BSC",
            start=T0,
            open_processing=True,
        )
    with unit_of_work(engine) as s:
        end_step(s, signer=as_(engine, "op1"), step_id=step.id, end=T0 + minutes(20))
        complete_batch(s, actor=as_(engine, "op1"), batch=batch)


def test_a_deviation_goes_from_open_to_closed_through_the_api(web_app, web_engine: Engine) -> None:
    _completed_batch(web_engine, "CT-2026-070")
    qa1, qa2, op1 = Api(web_app, "qa1"), Api(web_app, "qa2"), Api(web_app, "op1")
    dev = qa1.post(
        "/deviations",
        {
            "title": "BSC 0.5 µm",
            "classification": "major",
            "category": "environment",
            "description": "action excursion",
            "batches": ["CT-2026-070"],
        },
        status=201,
    )
    number = dev["number"]
    assert (dev["status"], dev["batches"][0]["batch"]) == ("open", "CT-2026-070")
    # the fields each state needs: refused with what is missing, in both languages
    refused = qa1.post(f"/deviations/{number}/approve", {"password": PASSWORD}, status=409)
    assert refused["detail"] == f"{number} is open; approving the investigation needs it investigating"
    doc = qa1.post(f"/deviations/{number}/investigate")
    assert doc["status"] == "investigating"
    assert doc["missing"] == ["root cause not recorded", f"impact on batch id {1} not assessed"]
    assert doc["missing_zh"][0] == "尚未记录根本原因"
    qa1.post(f"/deviations/{number}/update", {"reason": "finding", "root_cause": "sash too high"})
    wrong = qa1.post(
        f"/deviations/{number}/assess",
        {"batch": "CT-2026-070", "impact": "huge", "assessment": "x"},
        status=422,
    )
    assert wrong["detail_zh"].startswith("影响须为")
    doc = qa1.post(
        f"/deviations/{number}/assess",
        {"batch": "CT-2026-070", "impact": "minor", "assessment": "closed vessels; sterility passed"},
    )
    assert doc["missing"] == []
    assert doc["batches"][0]["impact"] == "minor"
    # the approval is an e-signature: a token alone never signs, a wrong password counts
    assert (
        qa2.client.post(f"/api/v1/deviations/{number}/approve", json={}, headers=qa2.headers).status_code
        == 422
    )
    qa2.post(f"/deviations/{number}/approve", {"password": "not my password"}, status=401)
    with unit_of_work(web_engine) as s:
        assert get_user(s, "qa2").failed_attempts == 1
    # nobody checks their own entry: qa1 wrote the root cause
    assert (
        "nobody checks their own entry"
        in qa1.post(f"/deviations/{number}/approve", {"password": PASSWORD}, status=403)["detail"]
    )
    doc = qa2.post(f"/deviations/{number}/approve", {"password": PASSWORD, "comment": "report complete"})
    assert doc["status"] == "capa"
    assert [(s["meaning"], s["username"], s["status"]) for s in doc["signatures"]] == [
        ("approved", "qa2", "intact")
    ]
    # closing needs a CAPA action for a major deviation, and its corrective actions done
    closing = qa1.post(f"/deviations/{number}/close", {"password": PASSWORD}, status=409)
    assert closing["reasons"] == ["a major deviation needs at least one CAPA action (GMP 2010 Art. 250)"]
    assert closing["reasons_zh"] == ["主要偏差至少需要一项纠正预防措施（GMP（2010）第二百五十条）"]
    op1.post(
        f"/deviations/{number}/capa",
        {"kind": "corrective", "description": "x", "owner": "op1", "due": "2026-12-31"},
        status=403,
    )  # QA adds CAPA
    capa = qa1.post(
        f"/deviations/{number}/capa",
        {"kind": "corrective", "description": "mark the sash", "owner": "op1", "due": "2026-12-31"},
        status=201,
    )
    prevent = qa1.post(
        f"/deviations/{number}/capa",
        {"kind": "preventive", "description": "retrain", "owner": "op1", "due": "2027-01-31"},
        status=201,
    )
    assert qa1.post(f"/deviations/{number}/close", {"password": PASSWORD}, status=409)["reasons"] == [
        f"corrective action {capa['id']} not done"
    ]
    Api(web_app, "op2").post(f"/capa/{capa['id']}/done", {"outcome": "x"}, status=403)  # not the owner
    done = op1.post(f"/capa/{capa['id']}/done", {"outcome": "height marked on every BSC"})
    assert (done["status"], done["deviation"]) == ("done", number)
    # issue 15: qa1 wrote the root cause and the impact assessment, so another QA person closes
    refused = qa1.post(f"/deviations/{number}/close", {"password": PASSWORD}, status=403)
    assert "wrote or owns part" in refused["detail"]
    closed = qa2.post(f"/deviations/{number}/close", {"password": PASSWORD})
    assert closed["status"] == "closed"
    assert closed["closed_at"]
    # effectiveness: QA, never the owner; later than the closure (Art. 253)
    op1.post(f"/capa/{prevent['id']}/check", {"effective": True, "note": "x"}, status=403)
    qa1.post(f"/capa/{prevent['id']}/check", {"effective": True, "note": "x"}, status=409)  # not done yet
    op1.post(f"/capa/{prevent['id']}/done", {"outcome": "retrained 12 operators"})
    checked = qa1.post(f"/capa/{prevent['id']}/check", {"effective": True, "note": "no recurrence"})
    assert checked["status"] == "effective"
    assert qa1.get(f"/deviations/{number}")["capa"][1]["status"] == "effective"


def test_links_batch_rejection_and_limit_proposals_through_the_api(web_app, web_engine: Engine) -> None:
    from tests.factories import particles, topic
    from tracker.ingest.processor import BatchProcessor, InboundMessage
    from tracker.monitoring.intake import Intake

    # an action excursion in the BSC while a step ran there: a proposed exposure link
    _completed_batch(web_engine, "CT-2026-071")
    messages = [
        InboundMessage(
            topic("T-B1-BSC", "T-BSC-PC"),
            particles(
                monitor="T-BSC-PC", seq=m + 1, ts=T0 + minutes(m), c05=1000 if 5 <= m < 8 else 20, volume=100
            ),
            T0 + timedelta(hours=1),
        )
        for m in range(30)
    ]
    with unit_of_work(web_engine) as s:
        BatchProcessor(Intake(close_after=3)).process(s, messages)
    qa1, qp1, viewer = Api(web_app, "qa1"), Api(web_app, "qp1"), Api(web_app, "viewer1")
    (link,) = viewer.get("/links", status="proposed")
    assert (link["batch"], link["step_name"], link["status"]) == ("CT-2026-071", "接种", "proposed")
    # the decision is an e-signature (issue 15): a token alone does not decide
    qa1.post(f"/links/{link['id']}/decide", {"exposed": False, "reason": "closed vessel"}, status=422)
    decided = qa1.post(
        f"/links/{link['id']}/decide", {"exposed": False, "reason": "closed vessel", "password": PASSWORD}
    )
    assert decided["status"] == "rejected"
    assert viewer.get("/links", status="proposed") == []
    qa1.post(
        f"/links/{link['id']}/decide", {"exposed": True, "reason": "again", "password": PASSWORD}, status=409
    )
    # batch rejection: QA or the QP, signed with the reason
    viewer.post("/batches/CT-2026-071/reject", {"password": PASSWORD, "reason": "r"}, status=403)
    qp1.post("/batches/CT-2026-071/reject", {"password": "wrong", "reason": "r"}, status=401)
    rejected = qp1.post("/batches/CT-2026-071/reject", {"password": PASSWORD, "reason": "sterility failed"})
    assert rejected["status"] == "rejected"
    assert [(s["meaning"], s["username"]) for s in rejected["signatures"] if s["scope"] == "rejection"] == [
        ("rejected", "qp1")
    ]
    assert (
        "已是“已拒绝”"
        in qa1.post("/batches/CT-2026-071/reject", {"password": PASSWORD, "reason": "x"}, status=409)[
            "detail_zh"
        ]
    )


def test_a_limit_proposal_is_made_and_approved_through_the_api(web_app, web_engine: Engine) -> None:
    feed_counts(web_engine, [i % 100 for i in range(1200)])
    qa1, qa2 = Api(web_app, "qa1"), Api(web_app, "qa2")
    body = {
        "room": "T-B1",
        "kind": "particles",
        "channel": "0.5",
        "state": "at_rest",
        "from": T0.isoformat(),
        "to": END.isoformat(),
    }
    assert (
        qa1.client.post(
            "/api/v1/limits/proposals", json={**body, "from": "2026-11-20T00:00:00"}, headers=qa1.headers
        ).status_code
        == 422
    )  # no offset
    p = qa1.post("/limits/proposals", body, status=201)
    assert p["alert"] == math.ceil(per_m3(94) + 0.05 * (per_m3(95) - per_m3(94)))
    assert (
        "another QA person"
        in qa1.post(f"/limits/proposals/{p['id']}/approve", {"password": PASSWORD}, status=403)["detail"]
    )
    approved = qa2.post(
        f"/limits/proposals/{p['id']}/approve", {"password": PASSWORD, "comment": "annual limit review 2026"}
    )
    assert (approved["status"], approved["decided_by"]) == ("approved", "qa2")
    other = qa1.post("/limits/proposals", body, status=201)
    refused = qa2.post(f"/limits/proposals/{other['id']}/reject", {"reason": "same as before"})
    assert refused["status"] == "rejected"
    assert qa2.post(f"/limits/proposals/{other['id']}/reject", {"reason": "again"}, status=409)


def _audit_events(engine: Engine, n: int) -> None:
    with unit_of_work(engine) as s:
        for i in range(n):
            audit.record(
                s,
                actor="qa1" if i % 2 else "admin",
                action="test.event",
                entity="thing",
                entity_key=str(i),
                after={"i": i},
            )


def test_the_audit_trail_comes_a_page_at_a_time_with_its_filter_and_chain(
    web_app,
    web_engine: Engine,
) -> None:
    _audit_events(web_engine, 450)
    viewer = Api(web_app, "viewer1")  # its token's issuance is an audit event too
    with unit_of_work(web_engine) as s:
        total = s.exec(select(func.count()).select_from(AuditEvent)).one()
        newest = s.exec(select(func.max(AuditEvent.id))).one()
        first_test = s.exec(select(func.min(AuditEvent.id)).where(AuditEvent.action == "test.event")).one()
    seen, page = [], viewer.get("/audit", limit=200)
    assert page["chain"] == {"intact": True, "events": total, "first_broken": None}
    while True:
        assert len(page["events"]) <= 200
        seen += [e["id"] for e in page["events"]]
        if page["page"]["older"] is None:
            break
        page = viewer.get("/audit", limit=200, before=page["page"]["older"])
    assert seen == list(range(newest, 0, -1))  # every event once, newest first
    # the filter holds across pages; "newer" walks back
    first = viewer.get("/audit", limit=100, actor="qa1", action="test.")
    assert first["page"]["total"] == 225
    assert first["page"]["newer"] is None
    second = viewer.get("/audit", limit=100, actor="qa1", action="test.", before=first["page"]["older"])
    assert {e["actor"] for e in second["events"]} == {"qa1"}
    back = viewer.get("/audit", limit=100, actor="qa1", action="test.", after=second["page"]["newer"])
    assert [e["id"] for e in back["events"]] == [e["id"] for e in first["events"]]
    # the page: 200 rows, links that keep the filter, the chain status over everything
    client, _ = browser(web_app, "qa1", lang="en")
    html = client.get("/audit", params={"action": "test."}).text
    assert html.count("<tr><td>") == 200
    assert f"({total + 1} events checked)" in html  # and qa1's login
    older = next(part.split('"')[0] for part in html.split('href="')[1:] if 'rel="next"' in part)
    assert "action=test." in older
    assert "before=" in older
    html2 = client.get(older.replace("&amp;", "&")).text
    assert html2.count("<tr><td>") == 200
    assert 'rel="prev"' in html2
    last = client.get(older.replace("&amp;", "&").split("before=")[0] + f"before={first_test + 50}").text
    assert last.count("<tr><td>") == 50
    assert 'rel="next"' not in last
