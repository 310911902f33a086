"""Compliance rules live in the facility file (issue 14 item 4): episode closing, gap factor,
adverse trends and the deviation classes are versioned with each revision, bounded, changed
only with QA's approval, and recorded with the revision that judged each reading."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine
from sqlmodel import select

from tests import conftest
from tests.conftest import MIN_FACILITY, SUITE_RECORDS
from tests.factories import T0, as_, particles, topic
from tracker.core.db import unit_of_work
from tracker.core.errors import FacilityFileError, InvalidInputError, PermissionDeniedError
from tracker.core.settings import Settings
from tracker.facility.file import parse_facility
from tracker.facility.load import load_facility
from tracker.facility.models import FacilityRevision, get_site
from tracker.facility.policy import Compliance, compliance_of
from tracker.ingest.processor import BatchProcessor, InboundMessage
from tracker.monitoring.excursions import list_excursions
from tracker.monitoring.intake import Intake
from tracker.quality import deviations as dv
from tracker.reports.annual.document import build_annual_report
from tracker.reports.annual.period import Period

BASE = MIN_FACILITY.read_text(encoding="utf-8")
STRICT = (
    BASE
    + """
[rules]
episode_close_after = 5
gap_factor = 2.5
trend_alerts = 4
trend_window_h = 12

[quality]
deviation_classes = ["critical", "major"]
capa_required = ["critical", "major"]
major_incident_classes = ["critical"]

[records]
late_entry_after_min = 30
backdate_max_h = 48
"""
)


def test_the_rules_are_read_from_the_file_with_defaults_and_bounds() -> None:
    assert conftest._parse_compliance({}, {}, {}) == Compliance()  # the parser itself, unrelaxed
    assert parse_facility(BASE).compliance == replace(Compliance(), **SUITE_RECORDS)
    assert parse_facility(STRICT).compliance == Compliance(
        close_after=5,
        gap_factor=2.5,
        trend_alerts=4,
        trend_window_h=12.0,
        deviation_classes=("critical", "major"),
        capa_required=("critical", "major"),
        major_incident_classes=("critical",),
        late_entry_min=30.0,
        backdate_max_h=48.0,
    )
    refusals = [
        ("\n[rules]\nepisode_close_after = 0\n", "'episode_close_after' 0 is outside [1, 20]"),
        ("\n[rules]\nepisode_close_after = 2.5\n", "'episode_close_after' must be a whole number"),
        ("\n[rules]\ngap_factor = 1\n", "'gap_factor' 1 is outside [1.5, 20]"),
        ("\n[records]\nbackdate_max_h = 0.5\n", "'backdate_max_h' 0.5 is outside [1, 720]"),
        ("\n[records]\nlate_entry_after_min = 2000\n", "'late_entry_after_min' 2000 is outside [1, 1440]"),
        (
            "\n[quality]\ncapa_required = ['grave']\n",
            "'capa_required' names grave, not among deviation_classes",
        ),
    ]
    for extra, message in refusals:
        with pytest.raises(FacilityFileError, match=re.escape(message)):
            parse_facility(BASE + extra)


def test_the_environment_no_longer_decides_what_counts() -> None:
    """The former TRACKER_GAP_FACTOR & co. are gone from the settings: a restart with another
    environment cannot change how readings are judged."""
    names = set(Settings.model_fields)
    for gone in (
        "excursion_close_after",
        "gap_factor",
        "trend_alerts",
        "trend_window_h",
        "deviation_classes",
        "step_late_after_min",
        "step_backdate_max_h",
    ):
        assert gone not in names


def test_a_change_of_the_rules_needs_qa_and_is_kept_with_the_revision(people_engine: Engine) -> None:
    with (
        pytest.raises(PermissionDeniedError, match=re.escape("[compliance] gap_factor: 3 → 2.5")),
        unit_of_work(people_engine) as s,
    ):
        load_facility(s, parse_facility(STRICT), actor="admin")
    with unit_of_work(people_engine) as s:
        result = load_facility(s, parse_facility(STRICT), actor="admin", approver=as_(people_engine, "qa1"))
        assert "[compliance] close_after: 3 → 5" in result.evaluation_changes
        assert "[compliance] backdate_max_h: 1e+09 → 48" in result.evaluation_changes
        site = get_site(s)
        assert compliance_of(s, site).close_after == 5
        # the revision row holds the rules that judge its readings; the first revision the defaults
        stored = {
            r.revision: json.loads(r.settings)["compliance"]
            for r in s.exec(select(FacilityRevision).where(FacilityRevision.site_id == site.id))
        }
    assert stored[1]["close_after"] == 3
    assert stored[result.revision]["close_after"] == 5


def test_episodes_close_after_the_sites_count(people_engine: Engine) -> None:
    with unit_of_work(people_engine) as s:
        load_facility(s, parse_facility(STRICT), actor="admin", approver=as_(people_engine, "qa1"))
    # out of limit in minutes 2-3, back in limit for 4 readings, out again at 8: with the
    # default (3) these would be two episodes; the facility's 5 keeps them one
    counts = {2: 200_000, 3: 200_000, 8: 200_000}
    batch = [
        InboundMessage(
            topic("T-B1", "T-B1-PC"),
            particles(seq=m + 1, ts=T0 + timedelta(minutes=m), c05=counts.get(m, 10)),
            T0 + timedelta(days=1),
        )
        for m in range(20)
    ]
    with unit_of_work(people_engine) as s:
        BatchProcessor(Intake()).process(s, batch)
    with unit_of_work(people_engine) as s:
        (episode,) = list_excursions(s, type_="limit")
    assert (episode["started_at"], episode["ended_at"]) == ("2026-11-20T00:02:00Z", "2026-11-20T00:09:00Z")


def test_deviation_classes_come_from_the_facility(people_engine: Engine) -> None:
    with unit_of_work(people_engine) as s:
        load_facility(s, parse_facility(STRICT), actor="admin", approver=as_(people_engine, "qa1"))
    with unit_of_work(people_engine) as s:
        assert dv.classes(s, get_site(s)) == ("critical", "major")
        with pytest.raises(InvalidInputError, match="classification must be one of critical, major"):
            dv.open_deviation(
                s,
                actor=as_(people_engine, "qa1"),
                site=get_site(s),
                title="minor thing",
                description="a minor thing",
                classification="minor",
                category="environment",
            )
    # the annual report counts by the site's classes (as at its cut-off), not the defaults
    with unit_of_work(people_engine) as s:
        dv.open_deviation(
            s,
            actor=as_(people_engine, "qa1"),
            site=get_site(s),
            title="door left open",
            description="the airlock door stood open",
            classification="major",
            category="environment",
        )
    with unit_of_work(people_engine) as s:
        now = datetime.now(UTC)
        period = Period(start=now - timedelta(days=1), end=now + timedelta(hours=1), timezone="Asia/Shanghai")
        report = build_annual_report(s, site=get_site(s), period=period, now=now + timedelta(days=2))
    assert report["deviations"]["by_classification"] == {"critical": 0, "major": 1}
