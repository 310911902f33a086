"""Issue 15 item 2: after release the batch keeps listening. The issue's attack — a buffered
counter coming back after release with an action excursion that attaches to the released batch,
every signature still "intact" and nothing flagged — now changes the release signature to "no
longer matching", raises a post-release event QA must assess with an e-signature, and shows in
the batch view, the integrity check and the annual report."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import Engine, text

from tests.batch_scenes import NUMBER, buffered_counter_comes_back, feed, signed_off
from tests.factories import PASSWORD, T0, as_
from tests.test_cli_quality import run
from tracker.core.db import unit_of_work
from tracker.core.errors import ConflictError, InvalidInputError
from tracker.facility.models import get_site
from tracker.quality.batches.integrity import all_signature_checks, environment_notes, integrity_problems
from tracker.quality.batches.linking import decide_link, links_of, raise_deviation
from tracker.quality.batches.postrelease import assess, events_of, watch
from tracker.quality.batches.reconcile import reconciliation_problems
from tracker.quality.batches.release import signature_checks
from tracker.quality.batches.steps import get_batch
from tracker.quality.batches.views import batch_report
from tracker.reports.annual.document import build_annual_report, validate_report, year_period
from tracker.reports.render import render_html

LATER = T0 + timedelta(days=3)


def release_status(engine: Engine) -> str:
    with unit_of_work(engine) as s:
        (check,) = [c for c in signature_checks(s, get_batch(s, NUMBER)) if c.signature.scope == "release"]
        return check.status


def test_a_backfilled_action_excursion_after_release_raises_an_event_qa_must_assess(
    people_engine: Engine,
) -> None:
    engine = people_engine
    signed_off(engine)
    assert release_status(engine) == "intact"
    buffered_counter_comes_back(engine)  # minutes 15–25, action at 18–21, after release
    # the release no longer matches what the QP signed, and the integrity check says so
    assert release_status(engine) == "changed"
    with unit_of_work(engine) as s:
        assert any("not raised as a post-release event yet" in n for n in environment_notes(s))
    with unit_of_work(engine) as s:
        (event,) = watch(s, now=LATER)
        assert set(event.kinds.split(",")) == {"late_readings", "excursion", "link"}
        assert watch(s, now=LATER) == []  # raised once
    with unit_of_work(engine) as s:
        batch = get_batch(s, NUMBER)
        (shown,) = batch_report(s, batch)["post_release"]
        assert shown["status"] == "open"
        said = " | ".join(c["en"] for c in shown["changes"])
        assert "late readings: T-B1-PC during step 1: +22 values" in said
        assert "new excursion" in said
        assert "limit action T-B1-PC" in said
        assert "exposure link" in said
        assert any("迟到读数" in c["zh"] for c in shown["changes"])
        assert any(f"post-release event {event.id}" in n and "awaits QA" in n for n in environment_notes(s))
        assert integrity_problems(s) == []  # new facts are not tampering
    # QA concludes only once the new link is decided and the action exposure has its deviation
    with unit_of_work(engine) as s, pytest.raises(ConflictError) as refused:
        assess(s, signer=as_(engine, "qa2"), batch=get_batch(s, NUMBER), outcome="no_impact", assessment="x")
    assert any("undecided" in r for r in refused.value.reasons)
    with unit_of_work(engine) as s:
        batch = get_batch(s, NUMBER)
        (new,) = [link for link in links_of(s, batch) if link.status == "proposed"]
        decide_link(s, signer=as_(engine, "qa2"), link_id=new.id, exposed=True, reason="open seeding")
        excursion = new.excursion_id
    with unit_of_work(engine) as s, pytest.raises(ConflictError) as refused:
        assess(s, signer=as_(engine, "qa2"), batch=get_batch(s, NUMBER), outcome="no_impact", assessment="x")
    assert any("has no deviation" in r for r in refused.value.reasons)
    with unit_of_work(engine) as s:
        dev = raise_deviation(
            s,
            actor=as_(engine, "qa2"),
            site=get_site(s),
            excursion_ids=[excursion],
            title="BSC room action excursion after release",
            classification="major",
            category="environment",
            description="buffered counter backfilled 0.5 µm action counts during seeding",
        )
        number = dev.number
    with unit_of_work(engine) as s:
        row = assess(
            s,
            signer=as_(engine, "qa2"),
            batch=get_batch(s, NUMBER),
            outcome="deviation",
            deviation=number,
            assessment="released batch exposed: QP informed, recall assessment under the deviation",
        )
        assert row.outcome == "deviation"
        batch = get_batch(s, NUMBER)
        assert {e.status for e in events_of(s, batch)} == {"assessed"}
        assert watch(s) == []  # the deviation linked by the assessment raised nothing new
        checks = {c.signature.scope: c for c in signature_checks(s, batch)}
        assessed = checks[f"post_release:{row.id}"]
        assert (assessed.signature.meaning, assessed.signature.username, assessed.status) == (
            "reviewed",
            "qa2",
            "intact",
        )
        assert assessed.signature.statement.endswith(f"after its release: deviation {number}")
        assert checks["release"].status == "changed"  # what the QP signed stays what it was
        assert integrity_problems(s) == []
        assert reconciliation_problems(s) == []
        assert not [n for n in environment_notes(s) if "awaits QA" in n]
        assert {c.status for c in all_signature_checks(s)} <= {"intact", "changed", "superseded"}


def test_late_in_limit_readings_reach_a_released_batch_too(people_engine: Engine) -> None:
    engine = people_engine
    signed_off(engine)
    buffered_counter_comes_back(engine, high=range(0))  # the gap fills in, nothing out of limit
    with unit_of_work(engine) as s:
        (event,) = watch(s, now=LATER)
        assert "late_readings" in event.kinds
        assert "excursion" in event.kinds  # the data gap QA judged is superseded by the data
    with unit_of_work(engine) as s, pytest.raises(InvalidInputError, match="name the deviation"):
        assess(s, signer=as_(engine, "qa2"), batch=get_batch(s, NUMBER), outcome="deviation", assessment="x")
    with unit_of_work(engine) as s:
        assess(
            s,
            signer=as_(engine, "qa2"),
            batch=get_batch(s, NUMBER),
            outcome="no_impact",
            assessment="the gap's readings arrived, all in limit",
        )
    with unit_of_work(engine) as s, pytest.raises(ConflictError, match="no open post-release event"):
        assess(s, signer=as_(engine, "qa2"), batch=get_batch(s, NUMBER), outcome="no_impact", assessment="x")
    # a later fact raises a new event
    feed(engine, [70])  # outside the step: nothing the batch saw
    with unit_of_work(engine) as s:
        assert watch(s) == []


def test_a_tampered_assessment_shows_broken(people_engine: Engine) -> None:
    engine = people_engine
    signed_off(engine)
    buffered_counter_comes_back(engine, high=range(0))
    with unit_of_work(engine) as s:
        watch(s)
        assess(
            s, signer=as_(engine, "qa2"), batch=get_batch(s, NUMBER), outcome="no_impact", assessment="fine"
        )
    with unit_of_work(engine) as s:
        s.exec(text("UPDATE post_release_assessment SET assessment = 'nothing happened'"))
    with unit_of_work(engine) as s:
        (check,) = [
            c for c in signature_checks(s, get_batch(s, NUMBER)) if c.signature.scope.startswith("post_")
        ]
        assert check.status == "broken"


def test_the_annual_report_lists_post_release_events(people_engine: Engine) -> None:
    engine = people_engine
    signed_off(engine)
    buffered_counter_comes_back(engine, high=range(0))
    with unit_of_work(engine) as s:
        watch(s, now=LATER)
    with unit_of_work(engine) as s:
        report = build_annual_report(
            s, site=get_site(s), period=year_period("Asia/Shanghai", 2026), now=LATER
        )
        validate_report(report)
        trace = report["traceability"]
        assert (trace["post_release_events"], trace["post_release_open_at_end"]) == (1, 1)
        (row,) = trace["post_release"]
        assert (row["batch"], row["status_at_end"], row["outcome"]) == (NUMBER, "open", None)
        assert "late_readings" in row["kinds"]
    zh, en = render_html(report, lang="zh-CN"), render_html(report, lang="en")
    assert "放行后事件" in zh
    assert "迟到读数" in zh
    assert "待 QA 评估" in zh
    assert "Post-release events" in en
    assert "late readings" in en


def test_the_command_line_watches_shows_and_assesses(people_engine: Engine, db_url: str) -> None:
    engine = people_engine
    signed_off(engine)
    buffered_counter_comes_back(engine, high=range(0))
    watched = run("batch", "watch", db_url=db_url)
    assert watched.returncode == 0, watched.stderr
    assert f"Batch {NUMBER}: Post-release event 1" in watched.stdout
    shown = run("batch", "show", NUMBER, db_url=db_url, lang="zh-CN").stdout
    assert "放行后事件 1" in shown
    assert "迟到读数" in shown
    verify = run("audit", "verify", db_url=db_url)
    assert verify.returncode == 0, verify.stdout  # new facts are not tampering …
    assert "awaits QA's assessment" in verify.stdout  # … but they are shown
    assert "no longer matching a changed environmental picture" in verify.stdout
    done = run(
        "batch",
        "post-release",
        NUMBER,
        "--outcome",
        "no_impact",
        "--assessment",
        "all in limit",
        "--as",
        "qa2",
        "--password-stdin",
        db_url=db_url,
        stdin=PASSWORD + "\n",
    )
    assert done.returncode == 0, done.stderr
    assert "awaits QA" not in run("audit", "verify", db_url=db_url).stdout


def test_the_pages_and_the_api_show_and_assess_post_release_events(web_app, web_engine: Engine) -> None:
    from tests.test_web_api_workflows import Api
    from tests.web_helpers import browser

    signed_off(web_engine)
    buffered_counter_comes_back(web_engine, high=range(0))
    qa, _ = browser(web_app, "qa2", lang="zh-CN")
    page = qa.get(f"/batches/{NUMBER}").text  # the page's read raises the event
    assert "放行之后" in page
    assert "迟到读数" in page
    assert "评估放行后事件" in page
    assert "已变化（不再一致）" in page  # the release signature no longer matches
    api = Api(web_app, "qa2")
    (event,) = api.get(f"/batches/{NUMBER}")["post_release"]
    assert event["status"] == "open"
    api.post(
        f"/batches/{NUMBER}/post-release", {"outcome": "no_impact", "assessment": "x"}, status=422
    )  # a signature: the password is required
    doc = api.post(
        f"/batches/{NUMBER}/post-release",
        {"outcome": "no_impact", "assessment": "the gap's readings, all in limit", "password": PASSWORD},
    )
    (event,) = doc["post_release"]
    assert (event["status"], event["outcome"], event["assessed_by"]) == ("assessed", "no_impact", "qa2")
    assert "评估放行后事件" not in qa.get(f"/batches/{NUMBER}").text


def test_a_re_evaluation_that_judges_a_released_batchs_readings_again_raises_an_event(
    people_engine: Engine,
) -> None:
    from tests.conftest import MIN_FACILITY
    from tracker.facility.file import parse_facility
    from tracker.facility.load import load_facility
    from tracker.monitoring.reevaluate import reevaluate

    engine = people_engine
    signed_off(engine)
    tighter = MIN_FACILITY.read_text(encoding="utf-8") + (
        '\n[[limits]]\nroom = "T-B1"\nkind = "particles"\nchannel = "0.5"\nstate = "in_operation"\n'
        "alert_high = 300.0\naction_high = 352000.0\n"
    )
    with unit_of_work(engine) as s:
        load_facility(s, parse_facility(tighter), actor="admin", approver=as_(engine, "qa2"))
    with unit_of_work(engine) as s:
        reevaluate(s, room_code="T-B1", start=T0, actor="qa2", reason="site alert level lowered")
    with unit_of_work(engine) as s:
        (event,) = watch(s, now=LATER)
        assert "reevaluation" in event.kinds.split(",")
        (shown,) = batch_report(s, get_batch(s, NUMBER))["post_release"]
        assert any(
            c["en"].startswith("readings judged again: T-B1-PC during step 1: alert 0 →")
            for c in shown["changes"]
        )
