"""Issue 13: the read views live beside their services and every face shows them unchanged.

* The JSON API answers exactly what the service's read view says: the typed response models
  neither drop a field (a key missing from its ``TypedDict`` would vanish from the answer) nor
  change a value (an integer turned into a float).
* A GET writes nothing but the exposure-link proposals, the known limit of docs/quality.md:
  reading a batch, a deviation or the link list brings the proposals up to date, because the
  ingester does not propose links itself yet. Once they are current, no GET writes at all.
"""

from __future__ import annotations

import json
from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy import Engine, event

from tests.factories import PASSWORD, T0, as_, minutes, particles, topic
from tests.web_helpers import browser
from tracker.core.db import unit_of_work
from tracker.facility.models import get_site
from tracker.facility.viable import PlannedSample
from tracker.identity.users import list_users
from tracker.ingest.processor import BatchProcessor, InboundMessage
from tracker.monitoring.excursions import list_excursions
from tracker.monitoring.viable.lifecycle import plan_samples
from tracker.quality import deviations as dv
from tracker.quality.batches.linking import decide_link, raise_deviation, sync_links
from tracker.quality.batches.steps import complete_batch, create_batch, end_step, get_batch, start_step
from tracker.quality.batches.views import batch_report, batch_summaries, exposure_links
from tracker.quality.views import deviation_view, deviation_views
from tracker.web.access import ACCESS


def _feed(engine: Engine, messages: list[tuple[str, bytes]]) -> None:
    from tracker.monitoring.intake import Intake

    with unit_of_work(engine) as s:
        BatchProcessor(Intake(close_after=3)).process(
            s, [InboundMessage(t, p, T0 + timedelta(hours=1)) for t, p in messages]
        )


def _scenario(engine: Engine, *, calibration: bool) -> str:
    """CT-A (completed, a step in the BSC during an action excursion) and CT-B (a step running
    in the B room during an excursion there, and a calibration period when asked); a deviation
    raised from the BSC excursion, investigated, approved and with a CAPA action. CT-B's links
    are left for the readers to propose. Returns the deviation's number."""
    with unit_of_work(engine) as s:
        a = create_batch(
            s, actor=as_(engine, "op1"), site=get_site(s), number="CT-A", product="CAR-T", donor_id="D-1"
        )
        step_a = start_step(
            s,
            actor=as_(engine, "op1"),
            batch=a,
            name="接种",
            room_code="T-B1-BSC",
            start=T0,
            open_processing=True,
        ).id
        b = create_batch(
            s, actor=as_(engine, "op2"), site=get_site(s), number="CT-B", product="CAR-T", donor_id="D-2"
        )
        start_step(
            s,
            actor=as_(engine, "op2"),
            batch=b,
            name="洗涤",
            room_code="T-B1",
            start=T0 + minutes(2),
            open_processing=True,
        )
    with unit_of_work(engine) as s:
        end_step(s, signer=as_(engine, "op1"), step_id=step_a, end=T0 + minutes(20), comment="ok")
        complete_batch(s, actor=as_(engine, "op1"), batch=get_batch(s, "CT-A"))
    bsc = [
        (
            topic("T-B1-BSC", "T-BSC-PC"),
            particles(
                monitor="T-BSC-PC", seq=m + 1, ts=T0 + minutes(m), c05=1000 if 5 <= m < 8 else 20, volume=100
            ),
        )
        for m in range(30)
    ]
    room = [
        (
            topic("T-B1", "T-B1-PC"),
            particles(
                seq=m + 1,
                ts=T0 + minutes(m),
                c05=100_000 if 20 <= m < 24 else 10,
                status="calibration" if calibration and 10 <= m < 14 else "ok",
            ),
        )
        for m in range(30)
    ]
    _feed(engine, bsc + room)
    with unit_of_work(engine) as s:
        batch = get_batch(s, "CT-A")
        sync_links(s, batch=batch)
        # the limit excursion's link (the calibration readings make a data gap too: issue 14 item 5)
        types = {e["id"]: e["type"] for e in list_excursions(s, include_superseded=True)}
        (link,) = [x for x in exposure_links(s, batch=batch) if types[x["excursion"]] == "limit"]
        decide_link(s, signer=as_(engine, "qa1"), link_id=link["id"], exposed=True, reason="open seeding")
        dev = raise_deviation(
            s,
            actor=as_(engine, "qa1"),
            site=get_site(s),
            excursion_ids=[link["excursion"]],
            title="BSC 0.5 µm",
            classification="major",
            category="environment",
            description="action excursion during seeding",
        )
        dv.start_investigation(s, actor=as_(engine, "qa1"), dev=dev)
        dv.update_deviation(s, actor=as_(engine, "qa1"), dev=dev, reason="finding", root_cause="sash")
        dv.assess_impact(
            s,
            actor=as_(engine, "qa1"),
            dev=dev,
            batch_id=batch.id,
            batch_number=batch.number,
            impact="minor",
            assessment="closed vessels",
        )
        dv.approve_investigation(s, signer=as_(engine, "qa2"), dev=dev, comment="complete")
        dv.add_capa(
            s,
            actor=as_(engine, "qa1"),
            dev=dev,
            kind="corrective",
            description="mark the sash height",
            owner="op1",
            due=(T0 + timedelta(days=9)).date(),
        )
        return dev.number


def _same(answer: object, view: object) -> None:
    """Equal as JSON text: 5 and 5.0 differ here, as they do for a client."""
    assert json.dumps(answer, sort_keys=True, ensure_ascii=False) == json.dumps(
        view, sort_keys=True, ensure_ascii=False
    )


def test_the_api_answers_the_read_views_unchanged(web_app, web_engine: Engine) -> None:
    number = _scenario(web_engine, calibration=True)
    client = TestClient(web_app)

    def get(path: str, user: str = "qa1"):
        token = client.post("/api/v1/tokens", json={"username": user, "password": PASSWORD}).json()["token"]
        r = client.get(f"/api/v1{path}", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200, (path, r.text[:300])
        return r.json()

    answers = {
        "links": get("/links"),
        "CT-A": get("/batches/CT-A"),
        "CT-B": get("/batches/CT-B"),
        "batches": get("/batches"),
        "deviations": get("/deviations"),
        "deviation": get(f"/deviations/{number}"),
        "excursions": get("/excursions"),
        "users": get("/users", user="admin"),
    }
    with unit_of_work(web_engine) as s:
        ct_a, ct_b = get_batch(s, "CT-A"), get_batch(s, "CT-B")
        views = {
            "links": exposure_links(s),
            "CT-A": batch_report(s, ct_a),
            "CT-B": batch_report(s, ct_b),
            "batches": batch_summaries(s),
            "deviations": deviation_views(s),
            "deviation": deviation_view(s, dv.get_deviation(s, number)),
            "excursions": list_excursions(s),
            "users": list_users(s),
        }
    # the scenario reaches every kind of entry a document can hold
    kinds = {item["key"].split(":")[0] for item in views["CT-A"]["review"] + views["CT-B"]["review"]}
    assert kinds == {"link", "invalid", "coverage"}
    assert views["CT-B"]["flags"]
    assert views["CT-A"]["signatures"]
    assert views["deviation"]["signatures"]
    assert views["deviation"]["capa"]
    assert {link["status"] for link in views["links"]} == {"confirmed", "proposed"}
    missing = answers["deviation"].pop("missing"), answers["deviation"].pop("missing_zh")
    assert missing == (["corrective action 1 not done"], ["纠正措施 1 尚未完成"])
    for name, view in views.items():
        _same(answers[name], view)


def _viable_sample(engine: Engine) -> str:
    """A planned viable sample (issue 18), so that its pages have a real code."""
    with unit_of_work(engine) as s:
        (sample,) = plan_samples(
            s,
            site=get_site(s),
            planned=[PlannedSample("V-1", "T-B1-BSC", "settle", "session", exposure_min=240)],
            planned_for=T0,
            session_key="read-views",
            actor="qa1",
        )
        return sample.code


def _signed_challenge(engine: Engine) -> int:
    """A finished, signed alarm challenge (issue 16), so that its record downloads are real."""
    from tracker.core.timeutil import utcnow
    from tracker.monitoring import challenges

    now = utcnow()
    with unit_of_work(engine) as s:
        ch = challenges.start_challenge(
            s,
            signer=as_(engine, "qa1"),
            monitor_code="T-D1-DP",
            minutes=5,
            reason="OQ alarm test",
            starts_at=now - timedelta(minutes=30),
        )
    with unit_of_work(engine) as s:
        challenges.sign_record(s, signer=as_(engine, "qa1"), challenge_id=ch.id)
    return ch.id


def _get_routes(number: str, sample: str = "VS-NONE", challenge: int = 0) -> list[str]:
    """Every GET route of the access table with real keys."""
    concrete = {
        "/reports/challenges/{challenge_id}/record.json": f"/reports/challenges/{challenge}/record.json",
        "/reports/challenges/{challenge_id}/record.pdf": f"/reports/challenges/{challenge}/record.pdf",
        "/viable/s/{code}": f"/viable/s/{sample}",
        "/viable/s/{code}/label.svg": f"/viable/s/{sample}/label.svg",
        "/lang/{code}": "/lang/en",
        "/reports/annual": "/reports/annual?year=2026&format=json",
        "/monitors/{code}": "/monitors/T-BSC-PC",
        "/excursions/{excursion_id}": "/excursions/1",
        "/monitors/{code}/chart.svg": "/monitors/T-BSC-PC/chart.svg",
        "/monitors/{code}/control": "/monitors/T-BSC-PC/control",
        "/monitors/{code}/control.svg": "/monitors/T-BSC-PC/control.svg",
        "/api/v1/monitors/{code}/readings": "/api/v1/monitors/T-BSC-PC/readings",
    }
    paths = []
    for key in ACCESS:
        method, path = key.split(" ", 1)
        if method == "GET":
            path = concrete.get(path, path)
            paths.append(path.replace("{number}", number if "deviations" in path else "CT-B"))
    return paths


def test_a_get_writes_nothing_but_the_exposure_proposals_and_the_reads_of_personal_data(
    web_app, web_engine: Engine
) -> None:
    number = _scenario(web_engine, calibration=False)
    sample = _viable_sample(web_engine)
    challenge = _signed_challenge(web_engine)
    writes: list[str] = []

    @event.listens_for(web_engine, "before_cursor_execute")
    def _record(conn, cursor, statement, parameters, context, executemany) -> None:
        words = statement.split()
        if words[0].upper() in ("INSERT", "UPDATE", "DELETE"):
            table = words[2] if words[0].upper() != "UPDATE" else words[1]
            if table.strip('"') != "web_session":  # the login's own row (docs/web.md, sessions)
                writes.append(table.strip('"'))

    qa, _ = browser(web_app, "qa1")
    admin, _ = browser(web_app, "admin")
    token = (
        TestClient(web_app)
        .post("/api/v1/tokens", json={"username": "qa1", "password": PASSWORD})
        .json()["token"]
    )
    bearer = {"Authorization": f"Bearer {token}"}
    writers = {
        "/api/v1/links",
        "/api/v1/batches/CT-B",
        "/batches/CT-B",
        f"/deviations/{number}",
    }
    #: pages showing donor pseudonyms log the read (issue 20: audited reads, docs/data-protection.md)
    readers = {"/batches", "/api/v1/batches", "/api/v1/batches/CT-B", "/batches/CT-B"}

    def visit(path: str) -> list[str]:
        writes.clear()
        if path.endswith("/users"):  # the administrator's (with the session cookie on the API)
            r = admin.get(path)
        else:
            r = qa.get(path, headers=bearer if path.startswith("/api/") else {})
        assert r.status_code < 400, (path, r.status_code)
        return sorted(set(writes))

    # before each GET CT-B starts another step over the B room's excursion: proposals are due
    wrote = {}
    for n, path in enumerate(_get_routes(number, sample, challenge)):
        with unit_of_work(web_engine) as s:
            start_step(
                s,
                actor=as_(web_engine, "op2"),
                batch=get_batch(s, "CT-B"),
                name=f"sampling {n}",
                room_code="T-B1",
                start=T0 + minutes(15),
                open_processing=False,
            )
        wrote[path] = visit(path)
    assert {path for path, tables in wrote.items() if tables} == writers | readers
    assert {table for tables in wrote.values() for table in tables} == {"excursion_link", "audit_event"}
    # with the proposals current, no GET writes anything but the audited reads
    with unit_of_work(web_engine) as s:
        sync_links(s)
    assert {path: tables for path in _get_routes(number, sample, challenge) if (tables := visit(path))} == {
        path: ["audit_event"] for path in readers
    }
