"""Change points as QA records and the signed periodic limits review (issue 21 items 2 and 5),
on a simulated step scenario ingested through the real intake and driven from the CLI."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlalchemy import Engine
from sqlmodel import select

from tests.factories import PASSWORD, T0, as_
from tests.test_cli import tracker
from tests.test_trending_forecast import ingest
from tracker.core.audit import AuditEvent
from tracker.core.db import unit_of_work
from tracker.core.errors import ConflictError, PermissionDeniedError
from tracker.facility.models import Monitor, Site
from tracker.monitoring.trending.review import build_review, parse_period
from tracker.monitoring.trending.store import ChangePoint, annotate, chart, detect
from tracker.reports.limits_review import review_signatures, sign_review

END = T0 + timedelta(days=3)
STEP_AT = T0 + timedelta(hours=36)  # trending-step.toml: T-C1-PC +60,000 /m³ at 0.5 µm


def cli(*args: str, db_url: str, stdin: str = "") -> str:
    result = tracker(*args, db_url=db_url, stdin=stdin)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.fixture
def stepped(people_engine: Engine) -> Engine:
    ingest(people_engine, "trending-step", {"T-C1-PC", "T-B1-T"}, hours=72)
    return people_engine


def test_a_particle_baseline_step_is_found_annotated_and_starts_the_next_baseline(
    stepped: Engine, db_url: str
) -> None:
    args = ("--monitor", "T-C1-PC", "--channel", "0.5", "--from", T0.isoformat(), "--to", END.isoformat())
    found = json.loads(cli("trending", "changepoints", *args, "--json", db_url=db_url))
    assert [c["direction"] for c in found] == ["up"]
    at = found[0]["at"]
    # hourly means: detected within two hours of the step (docs/trending.md: a shift of many σ
    # is found at the first or second point)
    assert abs((_instant(at) - STEP_AT).total_seconds()) <= 3600
    assert _instant(found[0]["detected_at"]) - STEP_AT <= timedelta(hours=2)
    assert found[0]["after"] > found[0]["before"] + 40_000
    # detection is idempotent
    again = json.loads(cli("trending", "changepoints", *args, "--json", db_url=db_url))
    assert [c["id"] for c in again] == [found[0]["id"]]

    out = cli(
        "trending",
        "annotate",
        str(found[0]["id"]),
        "--note",
        "HEPA filter changed",
        "--as",
        "qa1",
        "--password-stdin",
        db_url=db_url,
        stdin=PASSWORD + "\n",
    )
    assert "annotated" in out
    with unit_of_work(stepped) as s:
        row = s.get(ChangePoint, found[0]["id"])
        assert (row.status, row.note, row.annotated_by) == ("annotated", "HEPA filter changed", "qa1")
        assert s.exec(select(AuditEvent).where(AuditEvent.action == "change_point.annotate")).one()
        mon = s.exec(select(Monitor).where(Monitor.code == "T-C1-PC")).one()
        # a chart of the last day starts its baseline at the change point, not 30 days before
        later = chart(s, mon, "0.5", END - timedelta(hours=12), END)
        assert later.baseline_from == row.at
        assert later.baseline is not None
        assert later.baseline.center > 90_000
        # one before it looks back the usual 30 days
        earlier = chart(s, mon, "0.5", T0 + timedelta(hours=30), T0 + timedelta(hours=36))
        assert earlier.baseline_from == T0 + timedelta(hours=30) - timedelta(days=30)
        assert earlier.baseline is not None
        assert earlier.baseline.center < 60_000


def test_annotation_needs_qa_and_a_dismissed_change_is_ignored_by_baselines(stepped: Engine) -> None:
    with unit_of_work(stepped) as s:
        mon = s.exec(select(Monitor).where(Monitor.code == "T-C1-PC")).one()
        (cp,) = detect(s, mon, "0.5", T0, END)
        cp_id = cp.id
    with pytest.raises(PermissionDeniedError), unit_of_work(stepped) as s:
        annotate(s, actor=as_(stepped, "op1"), change_point_id=cp_id, note="not mine to say")
    with unit_of_work(stepped) as s:
        annotate(s, actor=as_(stepped, "qa1"), change_point_id=cp_id, note="sampling artefact", dismiss=True)
    with pytest.raises(ConflictError), unit_of_work(stepped) as s:
        annotate(s, actor=as_(stepped, "qa2"), change_point_id=cp_id, note="again")
    with unit_of_work(stepped) as s:
        mon = s.exec(select(Monitor).where(Monitor.code == "T-C1-PC")).one()
        assert chart(s, mon, "0.5", END - timedelta(hours=12), END).baseline_from == END - timedelta(
            hours=12, days=30
        )


def test_the_limits_review_is_signed_and_checked_against_the_data(stepped: Engine, db_url: str) -> None:
    doc = json.loads(
        cli(
            "limits",
            "review",
            "--from",
            T0.isoformat(),
            "--to",
            END.isoformat(),
            "--as",
            "qa1",
            "--password-stdin",
            "--json",
            db_url=db_url,
            stdin=PASSWORD + "\n",
        )
    )
    rows = {(r["room"], r["kind"], r["channel"], r["state"]): r for r in doc["rows"]}
    particles = rows[("T-C1", "particles", "0.5", "at_rest")]
    assert particles["current"]["action"] is not None
    assert particles["proposal"]["alert"] > 0
    assert particles["baseline"]["method"] in ("poisson", "negative_binomial")
    assert [c["direction"] for c in particles["change_points"]] == ["up"]
    assert particles["recommendation"]["code"] == "annotate"  # a change nobody has explained yet
    temperature = rows[("T-B1", "temperature", "", "at_rest")]
    assert temperature["proposal"]["note"].startswith("temperature and humidity keep")
    assert temperature["baseline"]["method"] == "individuals"
    assert temperature["monitored_hours"] == 72
    assert set(temperature["excursions"]) == {"alert", "action", "predicted"}
    assert doc["signature"]["by"] == "qa1"

    with unit_of_work(stepped) as s:
        site = s.exec(select(Site)).one()
        (check,) = review_signatures(s, site, T0, END)
        assert check.intact, check.problem
        # QA explains the change point: the signed review no longer matches the data
        annotate(
            s, actor=as_(stepped, "qa1"), change_point_id=particles["change_points"][0]["id"], note="filter"
        )
    with unit_of_work(stepped) as s:
        (check,) = review_signatures(s, site, T0, END)
        assert not check.intact
        review = build_review(s, site, T0, END, detect=False)
        row = next(r for r in review["rows"] if (r["room"], r["channel"]) == ("T-C1", "0.5"))
        assert row["recommendation"]["code"] != "annotate"
        sig = sign_review(s, signer=as_(stepped, "qa1"), site=site, start=T0, end=END, review=review)
        assert sig.meaning == "reviewed"


def test_periods_in_the_site_time_zone() -> None:
    start, end = parse_period("2026-Q4", "Asia/Shanghai")
    assert (start.isoformat(), end.isoformat()) == ("2026-09-30T16:00:00+00:00", "2026-12-31T16:00:00+00:00")
    start, end = parse_period("2026-12", "Asia/Shanghai")
    assert end.isoformat() == "2026-12-31T16:00:00+00:00"
    assert parse_period("2026", "UTC")[1].isoformat() == "2027-01-01T00:00:00+00:00"


def _instant(text: str):
    from tracker.core.timeutil import parse_instant

    return parse_instant(text)


def test_the_control_chart_page_shows_limits_rules_and_change_points(web_engine: Engine) -> None:
    from tests.web_helpers import browser
    from tracker.web.app import create_app
    from tracker.web.config import WebSettings

    ingest(web_engine, "trending-step", {"T-C1-PC"}, hours=72)
    with unit_of_work(web_engine) as s:
        detect(s, s.exec(select(Monitor).where(Monitor.code == "T-C1-PC")).one(), "0.5", T0, END)
    app = create_app(
        engine=web_engine, settings=WebSettings(secret_key="t" * 40, login_attempts_per_minute=10_000)
    )
    window = {"days": 2, "channel": "0.5", "end": END.isoformat()}  # a baseline of the day before
    for lang, words in (
        ("en", ("Control chart", "Run rules that fired", "Change points")),
        ("zh-CN", ("控制图", "触发的判异准则", "变点")),
    ):
        client, _ = browser(app, "qa1", lang=lang)
        page = client.get("/monitors/T-C1-PC/control", params=window)
        assert page.status_code == 200, page.text
        for word in words:
            assert word in page.text
        # the step shows as a run rule (points beyond 3σ of the 30-day baseline before the window)
        assert ("one point beyond 3σ" if lang == "en" else "1 点超出 3σ") in page.text
        svg = client.get("/monitors/T-C1-PC/control.svg", params=window)
        assert svg.status_code == 200
        assert svg.text.lstrip().startswith("<?xml")
