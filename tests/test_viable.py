"""Issue 18: viable (microbial) monitoring and conditional release, on both backends.

The plan generates a processing step's grade A/B samples; a grade A settle plate with 1 cfu opens
an action ``viable`` excursion and the release gate holds; counts at a grade B limit comply and
one more is an action; a 2 h settle plate is normalised to 4 h; the second-person check refuses
the same person (another account of theirs too); a conditional release without its viable review
is flagged by the integrity check once the incubation period has run.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import Engine
from sqlmodel import select

from tests.factories import T0, add_person, as_, assess_coverage, minutes
from tests.viable_helpers import load_plan
from tracker.core.db import unit_of_work
from tracker.core.errors import ConflictError, FacilityFileError, LimitTooLooseError, PermissionDeniedError
from tracker.facility.file import parse_facility
from tracker.facility.load import load_facility
from tracker.facility.models import get_site
from tracker.facility.viable import ViableBounds, judge, load_viable_limits, normalised, session_total
from tracker.monitoring.excursions import Excursion, list_excursions
from tracker.monitoring.viable import lifecycle as life
from tracker.monitoring.viable.models import ViableSample
from tracker.quality.batches.integrity import integrity_problems
from tracker.quality.batches.linking import links_of, sync_links
from tracker.quality.batches.release import gate_reasons, qa_review, release, sign_production
from tracker.quality.batches.steps import complete_batch, create_batch, end_step, get_batch, start_step
from tracker.quality.batches.viable import display_status, open_samples, review_results, samples_of

NOW = T0 + timedelta(hours=1)


@pytest.fixture
def viable_engine(people_engine: Engine) -> Engine:
    load_plan(people_engine)
    return people_engine


def processing(engine: Engine, number: str, room: str = "T-B1-BSC", *, end_min: int = 40) -> int:
    """A batch with one processing step in ``room`` from T0 to T0 + end_min, ended and signed."""
    with unit_of_work(engine) as s:
        batch = create_batch(
            s,
            actor=as_(engine, "op1"),
            site=get_site(s),
            number=number,
            product="CAR-T",
            donor_id=f"D-{number}",
        )
        step = start_step(
            s,
            actor=as_(engine, "op1"),
            batch=batch,
            name="transduction",
            room_code=room,
            start=T0,
            open_processing=True,
        )
    with unit_of_work(engine) as s:
        end_step(s, signer=as_(engine, "op1"), step_id=step.id, end=T0 + minutes(end_min))
    return step.id


def sample(engine: Engine, number: str, location: str, method: str) -> str:
    with unit_of_work(engine) as s:
        batch = get_batch(s, number)
        (found,) = [x for x in samples_of(s, batch) if x.location == location and x.method == method]
        return found.code


def to_reading(
    engine: Engine, code: str, count: int, *, exposure: timedelta = timedelta(hours=4), who: str = "op1"
):
    """Take (exposure ending at T0 + 40 min), incubate and read ``code`` as ``who``."""
    end = T0 + minutes(40)
    with unit_of_work(engine) as s:
        life.take(
            s,
            actor=as_(engine, who),
            sample=life.get_sample(s, code),
            media_lot="TSA-2611-07",
            taken_at=end,
            exposure_start=end - exposure,
            exposure_end=end,
            now=end,
        )
    with unit_of_work(engine) as s:
        life.incubate(
            s,
            actor=as_(engine, who),
            sample=life.get_sample(s, code),
            incubator="INC-1",
            start=T0 + minutes(60),
            now=T0 + minutes(60),
        )
    read_at = T0 + timedelta(days=5, hours=1)
    with unit_of_work(engine) as s:
        return life.read(s, actor=as_(engine, who), sample=life.get_sample(s, code), count=count, now=read_at)


def test_the_plan_generates_the_grade_a_and_b_samples_of_a_processing_step(viable_engine: Engine) -> None:
    step_id = processing(viable_engine, "CT-V1")
    with unit_of_work(viable_engine) as s:
        samples = samples_of(s, get_batch(s, "CT-V1"))
        got = sorted((x.location, x.method, x.grade) for x in samples)
        assert got == sorted(
            [("V-BSC-1", m, "A") for m in ("air", "settle", "contact", "glove_l", "glove_r")]
            + [("V-B1-1", m, "B") for m in ("air", "settle", "contact")]
        )
        assert all(x.step_id == step_id and x.status == "planned" for x in samples)
        assert {x.air_volume_l for x in samples if x.method == "air"} == {1000.0}
        assert len({x.code for x in samples}) == 8  # one label each
    # a grade C step generates nothing (the C location is sampled weekly)
    processing(viable_engine, "CT-V2", room="T-C1")
    with unit_of_work(viable_engine) as s:
        assert samples_of(s, get_batch(s, "CT-V2")) == []
        weekly = life.plan_calendar(s, site=get_site(s), frequency="weekly", day=T0, actor="qa1", now=T0)
        assert sorted(x.method for x in weekly) == ["contact", "settle"]


def test_grade_a_settle_plate_with_one_cfu_is_an_action_excursion_and_holds_the_release(
    viable_engine: Engine,
) -> None:
    processing(viable_engine, "CT-V3")
    code = sample(viable_engine, "CT-V3", "V-BSC-1", "settle")
    to_reading(viable_engine, code, 1)
    with unit_of_work(viable_engine) as s:
        sam = life.get_sample(s, code)
        assert (sam.verdict, sam.judged_value, sam.limit_value) == ("action", 1.0, 0.0)
        ex = s.exec(select(Excursion).where(Excursion.viable_sample_id == sam.id)).one()
        assert (ex.type, ex.level, ex.monitor_id) == ("viable", "action", None)
        listed = [e for e in list_excursions(s, type_="viable")]
        assert listed
        assert listed[0]["monitor"] == "V-BSC-1"
        batch = get_batch(s, "CT-V3")
        complete_batch(s, actor=as_(viable_engine, "op1"), batch=batch)
        sync_links(s, batch=batch)
        assert [link.excursion_id for link in links_of(s, batch)] == [ex.id]  # proposed against the step
    with unit_of_work(viable_engine) as s:
        sign_production(s, signer=as_(viable_engine, "prod"), batch=get_batch(s, "CT-V3"))
    with unit_of_work(viable_engine) as s:
        reasons = [str(r) for r in gate_reasons(s, get_batch(s, "CT-V3"))]
        assert any(f"excursion {ex.id}" in r and "undecided" in r for r in reasons)
    with pytest.raises(ConflictError), unit_of_work(viable_engine) as s:
        qa_review(s, signer=as_(viable_engine, "qa1"), batch=get_batch(s, "CT-V3"))
    # and with the gate open, open viable results still refuse an unconditional release
    with unit_of_work(viable_engine) as s:
        batch = get_batch(s, "CT-V3")
        assert len(open_samples(s, batch)) == 8


def test_counts_at_the_grade_b_limit_comply_and_one_more_is_action(viable_engine: Engine) -> None:
    regulation = load_viable_limits("CN-GMP-2010")
    for method, limit in (("air", 10), ("settle", 5), ("contact", 5), ("glove_l", 5)):
        bounds = ViableBounds(alert=None, action=regulation.regulatory("B", method).high)
        assert judge(limit, bounds).level == "ok"
        assert judge(limit + 1, bounds).level == "action"
    assert load_viable_limits("EU-GMP-ANNEX1-2022").regulatory("B", "contact").high == 5
    processing(viable_engine, "CT-V4")
    at_limit = sample(viable_engine, "CT-V4", "V-B1-1", "contact")
    above = sample(viable_engine, "CT-V4", "V-B1-1", "air")
    assert to_reading(viable_engine, at_limit, 5).verdict == "ok"
    assert to_reading(viable_engine, above, 11).verdict == "action"
    with unit_of_work(viable_engine) as s:
        kinds = {e["channel"]: e["level"] for e in list_excursions(s, type_="viable")}
        assert kinds == {"air": "action"}


def test_a_settle_plate_exposed_two_hours_is_normalised_to_four(viable_engine: Engine) -> None:
    assert normalised(3, 120) == 6
    assert normalised(3, 240) == 3
    assert session_total([(2, 120), (2, 120)]) == 4  # two plates in turn over 4 h: summed
    processing(viable_engine, "CT-V5")
    code = sample(viable_engine, "CT-V5", "V-B1-1", "settle")
    read = to_reading(viable_engine, code, 3, exposure=timedelta(hours=2))
    assert (read.judged_value, read.verdict) == (6.0, "action")  # 6 per 4 h > 5
    # exposure over 4 h is refused: the plate is recorded invalid with that reason
    code2 = sample(viable_engine, "CT-V5", "V-BSC-1", "settle")
    with pytest.raises(Exception, match="more than 4 h"), unit_of_work(viable_engine) as s:
        life.take(
            s,
            actor=as_(viable_engine, "op1"),
            sample=life.get_sample(s, code2),
            media_lot="L1",
            taken_at=NOW,
            exposure_start=NOW - timedelta(hours=5),
            exposure_end=NOW,
            now=NOW,
        )
    with unit_of_work(viable_engine) as s:
        life.void(
            s,
            actor=as_(viable_engine, "op1"),
            sample=life.get_sample(s, code2),
            status="invalid",
            reason="exposed 5 h",
            now=NOW,
        )
        assert life.get_sample(s, code2).status == "invalid"


def test_the_second_person_check_refuses_the_same_person(viable_engine: Engine) -> None:
    add_person(viable_engine, "op1b", "操作员 王芳 (second account)", ["operator"], person="E-op1")
    processing(viable_engine, "CT-V6")
    code = sample(viable_engine, "CT-V6", "V-BSC-1", "contact")
    to_reading(viable_engine, code, 0)
    for same_person in ("op1", "op1b"):
        with pytest.raises(PermissionDeniedError, match="another person"), unit_of_work(viable_engine) as s:
            life.verify(
                s, actor=as_(viable_engine, same_person), sample=life.get_sample(s, code), count=0, now=NOW
            )
    with pytest.raises(ConflictError, match="not verified"), unit_of_work(viable_engine) as s:
        life.close(s, actor=as_(viable_engine, "op1"), sample=life.get_sample(s, code), now=NOW)
    with unit_of_work(viable_engine) as s:
        life.verify(s, actor=as_(viable_engine, "op2"), sample=life.get_sample(s, code), count=0, now=NOW)
        life.close(s, actor=as_(viable_engine, "op2"), sample=life.get_sample(s, code), now=NOW)
        assert life.get_sample(s, code).status == "closed"


def _released_conditionally(engine: Engine, number: str) -> None:
    processing(engine, number)
    with unit_of_work(engine) as s:
        batch = get_batch(s, number)
        complete_batch(s, actor=as_(engine, "op1"), batch=batch)
    assess_coverage(engine, number)  # the step had no particle readings (issue 14 item 5)
    with unit_of_work(engine) as s:
        sign_production(s, signer=as_(engine, "prod"), batch=get_batch(s, number))
    with unit_of_work(engine) as s:
        qa_review(s, signer=as_(engine, "qa1"), batch=get_batch(s, number))
    with pytest.raises(ConflictError, match="conditionally") as refused, unit_of_work(engine) as s:
        release(s, signer=as_(engine, "qp1"), batch=get_batch(s, number))
    assert len(refused.value.reasons) == 8  # every open sample named
    with unit_of_work(engine) as s:
        release(
            s,
            signer=as_(engine, "qp1"),
            batch=get_batch(s, number),
            conditional_reason="shelf life 72 h; the patient's infusion is scheduled",
        )


def test_a_conditional_release_without_its_viable_review_is_flagged_after_the_incubation(
    viable_engine: Engine,
) -> None:
    _released_conditionally(viable_engine, "CT-V7")
    with unit_of_work(viable_engine) as s:
        batch = get_batch(s, "CT-V7")
        assert display_status(s, batch) == "conditionally_released"
        released = batch.updated_at
        assert not [p for p in integrity_problems(s, now=released + timedelta(days=2)) if "CT-V7" in p]
        flagged = [p for p in integrity_problems(s, now=released + timedelta(days=6)) if "CT-V7" in p]
        assert flagged
        assert "no signed viable review" in flagged[0]
    # the results come in (all clean); the review cannot be signed before the last
    codes = [x.code for x in _samples(viable_engine, "CT-V7")]
    with pytest.raises(ConflictError, match="still has open"), unit_of_work(viable_engine) as s:
        review_results(
            s,
            signer=as_(viable_engine, "qa1"),
            batch=get_batch(s, "CT-V7"),
            outcome="acceptable",
            assessment="ok",
        )
    for code in codes:
        to_reading(viable_engine, code, 0)
        with unit_of_work(viable_engine) as s:
            sam = life.get_sample(s, code)
            if sam.needs_verification:
                life.verify(s, actor=as_(viable_engine, "op2"), sample=sam, count=0)
            life.close(s, actor=as_(viable_engine, "op2"), sample=sam)
    with unit_of_work(viable_engine) as s:
        review_results(
            s,
            signer=as_(viable_engine, "qa1"),
            batch=get_batch(s, "CT-V7"),
            outcome="acceptable",
            assessment="no growth",
        )
    with unit_of_work(viable_engine) as s:
        batch = get_batch(s, "CT-V7")
        assert display_status(s, batch) == "released"
        assert not [p for p in integrity_problems(s, now=released + timedelta(days=30)) if "CT-V7" in p]


def _samples(engine: Engine, number: str) -> list[ViableSample]:
    with unit_of_work(engine) as s:
        return samples_of(s, get_batch(s, number))


def test_the_plan_is_under_change_control_and_levels_only_tighter(people_engine: Engine) -> None:
    from tests.viable_helpers import facility_text

    with pytest.raises(PermissionDeniedError, match="QA must approve"), unit_of_work(people_engine) as s:
        load_facility(s, parse_facility(facility_text()), actor="admin")
    looser = '\n[[viable_levels]]\ngrade = "B"\nmethod = "settle"\naction = 8\n'
    with pytest.raises(LimitTooLooseError, match="only be tighter"):
        parse_facility(facility_text(looser))
    with pytest.raises(FacilityFileError, match="exposure_min"):
        parse_facility(facility_text().replace("exposure_min = 240\n", "exposure_min = 300\n", 1))


def test_the_annual_report_has_its_viable_section_in_both_languages(viable_engine: Engine, tmp_path) -> None:
    import subprocess
    from zoneinfo import ZoneInfo

    from tracker.core.timeutil import utcnow
    from tracker.reports.annual.document import build_annual_report, validate_report
    from tracker.reports.annual.period import year_period
    from tracker.reports.render import render_html, render_pdf

    _released_conditionally(viable_engine, "CT-VC")
    processing(viable_engine, "CT-VR")
    grown = sample(viable_engine, "CT-VR", "V-BSC-1", "settle")
    to_reading(viable_engine, grown, 1)
    with unit_of_work(viable_engine) as s:
        sam = life.get_sample(s, grown)
        life.verify(s, actor=as_(viable_engine, "op2"), sample=sam, count=1, now=NOW)
        life.identify(
            s,
            actor=as_(viable_engine, "qa1"),
            sample=sam,
            organism="Staphylococcus epidermidis",
            method="MALDI-TOF",
            now=NOW,
        )
        missed = life.get_sample(s, sample(viable_engine, "CT-VR", "V-BSC-1", "glove_l"))
        life.void(
            s,
            actor=as_(viable_engine, "op1"),
            sample=missed,
            status="missed",
            reason="operator left before the print",
            now=NOW,
        )
    with unit_of_work(viable_engine) as s:
        site = get_site(s)
        today = (
            utcnow().astimezone(ZoneInfo(site.timezone)).date()
        )  # as at the end of today (release included)
        report = build_annual_report(
            s, site=site, period=year_period(site.timezone, 2026), compare=False, as_of=today
        )
    validate_report(report)
    v = report["viable"]
    a_settle = next(r for r in v["samples"] if (r["grade"], r["method"]) == ("A", "settle"))
    assert (a_settle["planned"], a_settle["taken"], a_settle["action"], a_settle["max_cfu"]) == (2, 1, 1, 1.0)
    assert next(r for r in v["samples"] if (r["grade"], r["method"]) == ("A", "glove_l"))["missed"] == 1
    assert [e["level"] for e in v["excursions"] if e["type"] == "viable"] == ["action"]
    assert v["organisms"][0] == {
        "organism": "Staphylococcus epidermidis",
        "isolates": 1,
        "locations": ["V-BSC-1"],
        "cumulative_pct": 100.0,
    }
    assert [(c["batch"], c["outcome"]) for c in v["conditional_releases"]] == [("CT-VC", None)]
    # the environment section's figures are unchanged by viable results (their own section)
    assert "viable" not in report["environment"]["total"]["excursions"]["by_type"]
    html_en, html_zh = render_html(report, lang="en"), render_html(report, lang="zh-CN")
    assert "Viable (microbial) monitoring" in html_en
    assert "Conditional releases and their outcome" in html_en
    assert "微生物监测" in html_zh
    assert "有条件放行及其结论" in html_zh
    for lang, words in (
        ("zh-CN", ("6b. 微生物监测", "分离菌（帕累托）", "Staphylococcus epidermidis", "CT-VC", "待审核")),
        ("en", ("6b. Viable (microbial) monitoring", "Isolates (Pareto)", "review pending")),
    ):
        pdf = tmp_path / f"report-{lang}.pdf"
        pdf.write_bytes(render_pdf(report, lang=lang))
        text = subprocess.run(
            ["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, check=True
        ).stdout
        for word in words:
            assert word in " ".join(text.split()), (lang, word)
        pages = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True, check=True).stdout
        count = int(next(line.split()[-1] for line in pages.splitlines() if line.startswith("Pages:")))
        subprocess.run(["pdftoppm", "-r", "40", "-png", str(pdf), str(tmp_path / f"page-{lang}")], check=True)
        rendered = sorted(tmp_path.glob(f"page-{lang}-*.png"))
        assert len(rendered) == count
        assert all(p.stat().st_size > 1000 for p in rendered)


def test_the_simulator_gives_the_demo_a_full_viable_cycle(engine: Engine) -> None:
    from simulators.viable import viable_results
    from tracker.cli.demo import demo_facility_text, viable_cycle

    descriptors = [
        {"code": f"S{i}", "grade": g, "method": "settle", "location": "L"} for i, g in enumerate("AAB")
    ]
    assert viable_results(descriptors, scenario="day-in-the-life") == viable_results(
        descriptors, scenario="day-in-the-life"
    )  # seeded: the same every run
    with unit_of_work(engine) as s:
        load_facility(s, parse_facility(demo_facility_text(1502)), actor="demo")
    assert viable_cycle(engine, T0) == 8
    with unit_of_work(engine) as s:
        samples = s.exec(select(ViableSample)).all()
        assert {x.status for x in samples} == {"closed"}
        grown = [x for x in samples if x.grade == "A" and x.count]
        assert [(x.method, x.organism, x.verified_by) for x in grown] == [
            ("settle", "Staphylococcus epidermidis", "demo-lab2")
        ]
        assert [(e["type"], e["level"]) for e in list_excursions(s, type_="viable")] == [("viable", "action")]


def test_the_qp_releases_conditionally_and_qa_reviews_the_results_on_the_pages_and_the_api(
    viable_engine: Engine, web_app
) -> None:
    """The conditional release and its viable review are reachable where people work: the batch
    page offers "release conditionally" (with the reason) while samples are open, the API takes
    ``conditional_reason``, and the signed review follows on the page once the last result is in."""
    from tests.factories import PASSWORD
    from tests.web_helpers import browser
    from tracker.quality.batches.viable import review_of

    processing(viable_engine, "CT-VW")
    with unit_of_work(viable_engine) as s:
        complete_batch(s, actor=as_(viable_engine, "op1"), batch=get_batch(s, "CT-VW"))
    assess_coverage(viable_engine, "CT-VW")
    with unit_of_work(viable_engine) as s:
        sign_production(s, signer=as_(viable_engine, "prod"), batch=get_batch(s, "CT-VW"))
    with unit_of_work(viable_engine) as s:
        qa_review(s, signer=as_(viable_engine, "qa1"), batch=get_batch(s, "CT-VW"))
    qp, token = browser(web_app, "qp1", lang="en")
    page = qp.get("/batches/CT-VW").text
    assert "Release conditionally" in page
    assert 'name="conditional_reason"' in page
    assert 'data-testid="batch-viable"' in page
    assert "V-BSC-1" in page
    # the API without the reason: 409 naming the open samples; with it: conditionally released
    refused = qp.post(
        "/api/v1/batches/CT-VW/release", json={"password": PASSWORD}, headers={"X-CSRF-Token": token}
    )
    assert refused.status_code == 409, refused.text
    r = qp.post(
        "/batches/CT-VW/release",
        data={"password": PASSWORD, "conditional_reason": "shelf life 72 h", "csrf_token": token},
    )
    assert r.status_code == 303, r.text[:500]
    with unit_of_work(viable_engine) as s:
        batch = get_batch(s, "CT-VW")
        assert (batch.status, batch.conditional_release) == ("released", True)
        codes = [x.code for x in samples_of(s, batch)]
    assert "Open viable samples remain" in qp.get("/batches/CT-VW").text
    for code in codes:
        to_reading(viable_engine, code, 0)
        with unit_of_work(viable_engine) as s:
            sam = life.get_sample(s, code)
            if sam.needs_verification:
                life.verify(s, actor=as_(viable_engine, "op2"), sample=sam, count=0)
            life.close(s, actor=as_(viable_engine, "op2"), sample=sam)
    qa, qa_token = browser(web_app, "qa1", lang="zh-CN")
    assert "审核微生物结果" in qa.get("/batches/CT-VW").text
    r = qa.post(
        "/batches/CT-VW/viable-review",
        data={
            "password": PASSWORD,
            "outcome": "acceptable",
            "assessment": "no growth",
            "csrf_token": qa_token,
        },
    )
    assert r.status_code == 303, r.text[:500]
    with unit_of_work(viable_engine) as s:
        assert review_of(s, get_batch(s, "CT-VW")).outcome == "acceptable"
    assert "微生物结果已审核" in qa.get("/batches/CT-VW").text


def test_a_viable_excursion_has_its_page_and_is_in_the_queue(viable_engine: Engine, web_app) -> None:
    """A plate's result has no monitor: its page names the sampling location and draws no series."""
    from tests.web_helpers import browser

    processing(viable_engine, "CT-VP")
    code = sample(viable_engine, "CT-VP", "V-BSC-1", "settle")
    to_reading(viable_engine, code, 1)
    with unit_of_work(viable_engine) as s:
        ex = s.exec(select(Excursion).where(Excursion.type == "viable")).one()
    qa, _ = browser(web_app, "qa1", lang="en")
    page = qa.get(f"/excursions/{ex.id}")
    assert page.status_code == 200, page.text[:500]
    assert "V-BSC-1" in page.text
    assert "/chart.svg" not in page.text
    assert qa.get("/excursions").status_code == 200
    assert qa.get("/").status_code == 200
