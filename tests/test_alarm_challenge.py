"""Alarm challenge mode (issue 16 item 5) on the demo facility, through a real mosquitto and a
real HTTP sink: the challenge's excursions notify with a TEST marker, produce a signed record
(JSON and PDF), and are absent from the exposure links, the statistics and the annual report."""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine
from sqlmodel import select
from typer.testing import CliRunner

from simulators.publisher import run_simulation
from tests.factories import as_, make_people, scalar, topic
from tests.mqtt_helpers import publish_all, running_ingester, wait_until
from tests.notify_sinks import http_sink
from tests.test_alarms import drain
from tracker.cli.demo import FACILITY
from tracker.cli.main import app
from tracker.core.db import unit_of_work
from tracker.core.errors import ConflictError, PermissionDeniedError
from tracker.core.timeutil import utcnow
from tracker.facility.file import parse_facility
from tracker.facility.load import load_facility
from tracker.facility.models import get_site
from tracker.identity.signatures import signatures_of
from tracker.ingest.processor import BatchProcessor, InboundMessage
from tracker.monitoring import challenges
from tracker.monitoring.excursions import Excursion, count_by_level
from tracker.monitoring.intake import Intake
from tracker.quality.batches.linking import links_of, sync_links
from tracker.quality.batches.steps import create_batch, end_step, get_batch, start_step
from tracker.reports.annual.document import build_annual_report
from tracker.reports.annual.period import year_period
from tracker.wire.broker import LocalBroker
from tracker.wire.mqtt import parse_broker_url

MONITOR = "B01-DP1"  # grade B cell processing room, 10 s pressure monitor
OTHER = "B01-DP2"  # the same room's other pressure monitor: a real inversion


def _demo_with_rules(engine: Engine, hook: str) -> None:
    text = FACILITY.read_text(encoding="utf-8")
    with unit_of_work(engine) as s:
        load_facility(s, parse_facility(text), actor="test")
    make_people(engine)
    rules = f'\n[[notify]]\nname = "B action"\nlevels = ["action"]\ngrades = ["B"]\ntargets = ["{hook}"]\n'
    with unit_of_work(engine) as s:
        load_facility(s, parse_facility(text + rules), actor="admin", approver=as_(engine, "qa1"))


def _ids(node: object, key: str) -> set[int]:
    """Every value of ``key`` anywhere in a JSON document (excursion ids the report names)."""
    found: set[int] = set()
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key and isinstance(v, int):
                found.add(v)
            found |= _ids(v, key)
    elif isinstance(node, list):
        for v in node:
            found |= _ids(v, key)
    return found


def test_a_challenge_run_on_the_demo_facility_is_signed_evidence_and_counts_nowhere(
    engine: Engine, broker: LocalBroker, tmp_path
) -> None:
    now = utcnow().replace(microsecond=0)
    start = now - timedelta(minutes=10)
    with http_sink() as sink:
        _demo_with_rules(engine, sink.url("/hook"))
        with unit_of_work(engine) as s, pytest.raises(PermissionDeniedError):
            challenges.start_challenge(
                s, signer=as_(engine, "op1"), monitor_code=MONITOR, minutes=9, reason="x", starts_at=start
            )
        with unit_of_work(engine) as s:
            ch = challenges.start_challenge(
                s,
                signer=as_(engine, "qa1"),
                monitor_code=MONITOR,
                minutes=9,
                reason="OQ: alarm notification within 60 s",
                starts_at=start,
            )
            ch_id = ch.id
        with running_ingester(engine, broker) as ingester:
            result = run_simulation(
                facility_path=FACILITY,
                broker=parse_broker_url(broker.url),
                speed=0,
                seed=1,
                start=start,
                duration=timedelta(minutes=8),
                stop=threading.Event(),
                protocol=broker.protocol,
                challenge=(MONITOR, timedelta(minutes=2), timedelta(minutes=2)),
            )
            inversion = [
                (
                    topic("B01", OTHER, site="NN-CPC"),
                    scalar(
                        monitor=OTHER,
                        kind="pressure",
                        seq=100_000 + i,
                        ts=start + timedelta(minutes=5, seconds=i * 3),
                        value=-6.0,
                        unit="Pa",
                    ),
                )
                for i in range(3)
            ]
            sent = publish_all(broker, inversion)
            wait_until(lambda: ingester.stats.received >= result.published + sent, timeout=60, what="the run")
        drain(engine)
    with unit_of_work(engine) as s:
        tests = list(s.exec(select(Excursion).where(Excursion.challenge_id == ch_id)))
        real = list(s.exec(select(Excursion).where(Excursion.monitor_id != tests[0].monitor_id)))
        stats = count_by_level(s)
    assert tests, "the challenge signal made no excursion"
    assert "action" in {e.level for e in tests}  # the signal; door openings in the window are tests too
    assert any(e.type == "limit" and e.level == "action" for e in real)
    assert stats["action"] == sum(e.level == "action" and e.status != "superseded" for e in real)
    titles = [p["title"] for p in sink.posts("/hook")]
    assert any(t.startswith("【测试】") for t in titles)  # the challenge's alarm, marked
    assert any(not t.startswith("【测试】") for t in titles)  # the real one, not

    # exposure links: a step in the room across the whole window links the real excursion only
    with unit_of_work(engine) as s:
        batch = create_batch(
            s, actor=as_(engine, "op1"), site=get_site(s), number="CT-16", product="CAR-T", donor_id="D-16"
        )
        step = start_step(
            s,
            actor=as_(engine, "op1"),
            batch=batch,
            name="processing",
            room_code="B01",
            start=start,
            open_processing=True,
        )
    with unit_of_work(engine) as s:
        end_step(s, signer=as_(engine, "op1"), step_id=step.id, end=start + timedelta(minutes=9))
    with unit_of_work(engine) as s:
        batch = get_batch(s, "CT-16")
        sync_links(s, batch=batch)
        linked = {link.excursion_id for link in links_of(s, batch)}
    assert linked
    assert linked.isdisjoint({e.id for e in tests})

    # the record: QA signs it once the window is over; the signature covers the figures
    with unit_of_work(engine) as s:
        challenges.sign_record(s, signer=as_(engine, "qa1"), challenge_id=ch_id, comment="OQ-EMS-07 passed")
    with unit_of_work(engine) as s, pytest.raises(ConflictError):
        challenges.sign_record(s, signer=as_(engine, "qa1"), challenge_id=ch_id)
    with unit_of_work(engine) as s:
        record, check = challenges.signed_record(s, ch_id)
        starts = [sig.scope for sig in signatures_of(s, "alarm_challenge", str(ch_id))]
    assert check.intact
    assert starts == ["challenge_start", "challenge_record"]
    assert {e["excursion"] for e in record["excursions"]} == {e.id for e in tests}
    step_rows = [x for e in record["excursions"] for x in e["steps"]]
    assert step_rows
    assert all(x["delivered_at"] and x["reading_to_delivery_s"] > 0 for x in step_rows)
    assert all(e["reading_to_excursion_s"] is not None for e in record["excursions"])

    url = engine.url.render_as_string(hide_password=False)
    out = CliRunner().invoke(
        app,
        [
            "challenge",
            "record",
            str(ch_id),
            "--db",
            url,
            "--out",
            str(tmp_path / "c.json"),
            "--pdf",
            str(tmp_path / "c.pdf"),
            "--lang",
            "en",
        ],
    )
    assert out.exit_code == 0, out.output
    assert (tmp_path / "c.pdf").read_bytes().startswith(b"%PDF")
    assert json.loads((tmp_path / "c.json").read_text())["signature"]["intact"] is True

    # the annual report names none of the challenge's excursions and counts the real one
    with unit_of_work(engine) as s:
        site = get_site(s)
        report = build_annual_report(
            s,
            site=site,
            period=year_period(site.timezone, now.astimezone(ZoneInfo(site.timezone)).year),
            as_of=now.astimezone(ZoneInfo(site.timezone)).date(),
            compare=False,
        )
    assert _ids(report, "excursion").isdisjoint({e.id for e in tests})
    site_figures = report["environment"]["total"]["excursions"]
    standing = [e for e in real if e.type == "limit" and e.status != "superseded"]
    assert site_figures["action"] == sum(e.level == "action" for e in standing)
    assert site_figures["alert"] == sum(e.level == "alert" for e in standing)

    # a tampered record shows its signature broken
    with unit_of_work(engine) as s:
        row = s.get(challenges.AlarmChallenge, ch_id)
        row.record = row.record.replace('"action"', '"alert"', 1)
        s.add(row)
    with unit_of_work(engine) as s:
        assert not challenges.signed_record(s, ch_id)[1].intact


def test_a_challenge_cannot_turn_a_standing_excursion_into_a_test(engine: Engine) -> None:
    text = FACILITY.read_text(encoding="utf-8")
    with unit_of_work(engine) as s:
        load_facility(s, parse_facility(text), actor="test")
    make_people(engine)
    now = utcnow().replace(microsecond=0)
    messages = [
        InboundMessage(
            topic("B01", MONITOR, site="NN-CPC"),
            scalar(
                monitor=MONITOR,
                kind="pressure",
                seq=i + 1,
                ts=now - timedelta(minutes=5) + timedelta(seconds=10 * i),
                value=-6.0 if i == 1 else 8.0,
                unit="Pa",
            ),
            now,
        )
        for i in range(6)
    ]
    with unit_of_work(engine) as s:
        BatchProcessor(Intake()).process(s, messages)
    with unit_of_work(engine) as s, pytest.raises(ConflictError, match="excursion"):
        challenges.start_challenge(
            s,
            signer=as_(engine, "qa1"),
            monitor_code=MONITOR,
            minutes=30,
            reason="OQ",
            starts_at=now - timedelta(minutes=10),
        )
    with unit_of_work(engine) as s:
        challenges.start_challenge(
            s, signer=as_(engine, "qa1"), monitor_code=MONITOR, minutes=30, reason="OQ"
        )
    with unit_of_work(engine) as s, pytest.raises(ConflictError, match="challenge"):  # overlapping windows
        challenges.start_challenge(
            s, signer=as_(engine, "qa1"), monitor_code=MONITOR, minutes=5, reason="again"
        )


def test_qa_runs_a_challenge_from_the_web_page_and_downloads_its_signed_record(
    web_app, web_engine: Engine
) -> None:
    """The page does what ``tracker challenge`` does: an e-signed start, an early end, the signed
    record, and its JSON and PDF; a viewer sees the list and no form."""
    from tests.factories import PASSWORD
    from tests.web_helpers import browser

    qa, token = browser(web_app, "qa1", lang="zh-CN")
    assert "启动报警挑战" in qa.get("/challenges").text
    wrong = qa.post(
        "/challenges",
        data={
            "monitor": "T-B1-DP",
            "minutes": "30",
            "reason": "OQ",
            "password": "wrong",
            "csrf_token": token,
        },
    )
    assert wrong.status_code == 303  # back to the page with the refusal shown; nothing started
    with unit_of_work(web_engine) as s:
        assert challenges.challenge_docs(s) == []
    r = qa.post(
        "/challenges",
        data={
            "monitor": "T-B1-DP",
            "minutes": "30",
            "reason": "OQ alarm test",
            "password": PASSWORD,
            "csrf_token": token,
        },
    )
    assert r.status_code == 303, r.text[:500]
    with unit_of_work(web_engine) as s:
        (row,) = challenges.challenge_docs(s)
    assert (row["monitor"], row["running"], row["started_by"]) == ("T-B1-DP", True, "qa1")
    assert qa.post(f"/challenges/{row['id']}/end", data={"csrf_token": token}).status_code == 303
    r = qa.post(f"/challenges/{row['id']}/sign", data={"password": PASSWORD, "csrf_token": token})
    assert r.status_code == 303, r.text[:500]
    record = qa.get(f"/reports/challenges/{row['id']}/record.json")
    assert record.status_code == 200
    assert record.json()["signature"]["intact"] is True
    pdf = qa.get(f"/reports/challenges/{row['id']}/record.pdf")
    assert pdf.status_code == 200
    assert pdf.content.startswith(b"%PDF")
    viewer, _ = browser(web_app, "viewer1", lang="en")
    page = viewer.get("/challenges")
    assert page.status_code == 200
    assert 'action="/challenges"' not in page.text
