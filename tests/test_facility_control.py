"""Facility changes under QA control (issue 14 item 3): unknown tables and keys refused with
their line and the nearest name, bounded values, the grade A background rule, and changes to
how readings are judged approved by QA with an e-signature."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import Engine, text
from sqlmodel import select

from tests.conftest import MIN_FACILITY
from tests.factories import PASSWORD, as_
from tests.test_cli import tracker
from tracker.core.db import unit_of_work
from tracker.core.errors import FacilityFileError, PermissionDeniedError
from tracker.facility.file import parse_facility
from tracker.facility.load import evaluation_content, load_facility
from tracker.facility.models import FacilityRevision, Monitor, Room
from tracker.quality.batches.integrity import all_signature_checks

BASE = MIN_FACILITY.read_text(encoding="utf-8")


def _line_of(source: str, needle: str) -> int:
    return next(i for i, line in enumerate(source.splitlines(), start=1) if needle in line)


# -- the file says exactly what it means ---------------------------------------------------------


def test_a_misspelt_table_is_refused_with_its_line_and_the_nearest_name() -> None:
    changed = BASE.replace('[[monitors]]\ncode = "T-B1-H"', '[[monitorz]]\ncode = "T-B1-H"')
    assert changed != BASE
    with pytest.raises(FacilityFileError) as refused:
        parse_facility(changed, source="site.toml")
    line = _line_of(changed, "[[monitorz]]")
    assert str(refused.value) == (
        f"site.toml line {line}: unknown table [[monitorz]]; did you mean [[monitors]]?"
    )
    assert (
        refused.value.said("zh-CN")
        == f"site.toml 第 {line} 行：未知的表 [[monitorz]]；是否应为 [[monitors]]？"
    )


def test_a_misspelt_key_is_refused_with_its_line_and_the_nearest_name() -> None:
    head, _, tail = BASE.partition("interval_s = 60")  # the first monitor's interval
    changed = head + "intervall_s = 60" + tail
    with pytest.raises(FacilityFileError) as refused:
        parse_facility(changed, source="site.toml")
    line = _line_of(changed, "intervall_s")
    said = str(refused.value)
    assert said.startswith(f"site.toml line {line}: monitors[")
    assert said.endswith("unknown key 'intervall_s'; did you mean 'interval_s'?")
    assert "未知的键 'intervall_s'；是否应为 'interval_s'？" in refused.value.said("zh-CN")


def test_a_key_in_a_table_that_takes_none_lists_the_known_ones() -> None:
    with pytest.raises(FacilityFileError, match=r"\[site\]: unknown key 'colour'; known: code, name"):
        parse_facility(BASE.replace("[site]\n", "[site]\ncolour = 'red'\n"))
    with pytest.raises(FacilityFileError, match=r"rules must be written as \[rules\]"):
        parse_facility(BASE + "\n[[rules]]\nrecovery_min = 20\n")


BOUNDS = [
    ("\n[rules]\nrecovery_min = 0\n", "'recovery_min' 0 is outside [1, 60]"),
    ("\n[rules]\nrecovery_min = 240\n", "'recovery_min' 240 is outside [1, 60]"),
    ("\n[rules]\nparticle_rolling_volume_m3 = 5\n", "'particle_rolling_volume_m3' 5 is outside (0, 1]"),
]


@pytest.mark.parametrize(("extra", "message"), BOUNDS)
def test_values_that_steer_evaluation_are_bounded(extra: str, message: str) -> None:
    with pytest.raises(FacilityFileError, match=re.escape(message)) as refused:
        parse_facility(BASE + extra)
    assert re.search(r"[\u4e00-\u9fff]", refused.value.said("zh-CN"))


def test_monitor_numbers_are_bounded() -> None:
    head, _, tail = BASE.partition("interval_s = 60")
    with pytest.raises(FacilityFileError, match=r"'interval_s' 90000 is outside \(0, 86400\]"):
        parse_facility(head + "interval_s = 90000" + tail)
    with pytest.raises(FacilityFileError, match="range_low 10 must be below range_high 5"):
        parse_facility(head + "interval_s = 60\nrange_low = 10\nrange_high = 5" + tail)
    with pytest.raises(FacilityFileError, match=r"'sample_volume_l' 5000 is outside \(0, 1000\]"):
        parse_facility(head + "interval_s = 60\nsample_volume_l = 5000" + tail)


def test_a_grade_a_zone_needs_at_least_a_grade_c_background() -> None:
    """Nanning pilot rules Art. 6; a C background is allowed with a warning, D is refused."""
    in_c = BASE.replace('grade = "A"\nbackground = "T-B1"', 'grade = "A"\nbackground = "T-C1"')
    assert in_c != BASE
    facility = parse_facility(in_c)
    (warning,) = facility.warnings
    assert "grade A zone in a grade C background" in warning
    assert "A 级区域位于 C 级背景中" in warning.zh
    assert parse_facility(BASE).warnings == ()
    assert facility.digest() == parse_facility(in_c).digest()  # warnings are not content
    in_d = BASE.replace('grade = "A"\nbackground = "T-B1"', 'grade = "A"\nbackground = "T-D1"')
    with pytest.raises(FacilityFileError, match="at least a grade C background, not D") as refused:
        parse_facility(in_d)
    assert "南宁试点管理办法第六条" in refused.value.said("zh-CN")


# -- changes of how readings are judged need QA --------------------------------------------------

REGRADED = BASE.replace(
    'code = "T-C1"\nname = "准备间"\nname_en = "Preparation room"\ngrade = "C"',
    'code = "T-C1"\nname = "准备间"\nname_en = "Preparation room"\ngrade = "B"',
)


def _grade(engine: Engine, room: str) -> str:
    with unit_of_work(engine) as s:
        return s.exec(select(Room.grade).where(Room.code == room)).one()


def test_a_grade_change_needs_qa_approval_and_is_signed(people_engine: Engine) -> None:
    engine = people_engine
    assert REGRADED != BASE
    with unit_of_work(engine) as s, pytest.raises(PermissionDeniedError) as refused:
        load_facility(s, parse_facility(REGRADED), actor="admin")
    assert "room T-C1: grade C → B" in str(refused.value)
    assert "须由 QA 以电子签名批准" in refused.value.said("zh-CN")
    assert _grade(engine, "T-C1") == "C"
    with unit_of_work(engine) as s, pytest.raises(PermissionDeniedError, match="needs the role qa"):
        load_facility(s, parse_facility(REGRADED), actor="admin", approver=as_(engine, "prod"))
    assert _grade(engine, "T-C1") == "C"
    with unit_of_work(engine) as s:
        result = load_facility(s, parse_facility(REGRADED), actor="admin", approver=as_(engine, "qa1"))
    assert result.evaluation_changes == ("room T-C1: grade C → B",)
    assert _grade(engine, "T-C1") == "B"
    with unit_of_work(engine) as s:
        checks = {c.signature.scope: c for c in all_signature_checks(s)}
        check = checks[f"facility_evaluation:{result.revision}"]
        assert (check.intact, check.signature.username) == (True, "qa1")
        # the approval covers the revision's stored settings: editing them breaks it
        s.exec(
            text("UPDATE facility_revision SET changes = '[]' WHERE revision = :r"),
            params={"r": result.revision},
        )
    with unit_of_work(engine) as s:
        checks = {c.signature.scope: c for c in all_signature_checks(s)}
        assert checks[f"facility_evaluation:{result.revision}"].intact is False


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda s: s.replace("interval_s = 60", "interval_s = 120", 1), "interval_s 60.0 → 120.0"),
        (lambda s: s + "\n[rules]\nrecovery_min = 15\n", "[rules] recovery_s: 1200 → 900"),
        (
            lambda s: s.replace("interval_s = 60", "interval_s = 60\ncalibration_due = 2027-03-01", 1),
            "calibration_due None → 2027-03-01",
        ),
    ],
)
def test_other_evaluation_settings_need_approval_too(people_engine: Engine, change, expected: str) -> None:
    changed = change(BASE)
    with unit_of_work(people_engine) as s, pytest.raises(PermissionDeniedError, match=re.escape(expected)):
        load_facility(s, parse_facility(changed), actor="admin")
    with unit_of_work(people_engine) as s:
        result = load_facility(s, parse_facility(changed), actor="admin", approver=as_(people_engine, "qa1"))
        assert any(expected in c for c in result.evaluation_changes)
        content = evaluation_content(s, _site(s), result.revision)
        assert content["changes"] == list(result.evaluation_changes)


def _site(session):
    from tracker.facility.models import Site

    return session.exec(select(Site)).one()


def test_names_additions_and_deactivations_need_no_approval(people_engine: Engine) -> None:
    """Renaming a room, adding or dropping a monitor: audited, not an evaluation change."""
    renamed = BASE.replace("准备间", "准备间二")
    with unit_of_work(people_engine) as s:
        result = load_facility(s, parse_facility(renamed), actor="admin")
        assert result.changed
        assert result.evaluation_changes == ()
        revisions = s.exec(select(FacilityRevision.revision).order_by(FacilityRevision.revision)).all()
        assert revisions == [1, 2]
        assert s.exec(select(Monitor).where(Monitor.active)).all()


def test_the_cli_refuses_a_grade_change_without_approval(
    people_engine: Engine, db_url: str, tmp_path
) -> None:
    path = tmp_path / "site.toml"
    path.write_text(REGRADED, encoding="utf-8")
    refused = tracker(
        "facility",
        "load",
        str(path),
        "--as",
        "admin",
        "--password-stdin",
        db_url=db_url,
        lang="zh-CN",
        stdin=PASSWORD + "\n",
    )
    assert refused.returncode != 0
    assert "room T-C1: grade C → B" in refused.stderr + refused.stdout
    assert "须由 QA 以电子签名批准此更改" in refused.stderr + refused.stdout
    assert _grade(people_engine, "T-C1") == "C"
    approved = tracker(
        "facility",
        "load",
        str(path),
        "--as",
        "admin",
        "--approve-as",
        "qa1",
        "--password-stdin",
        db_url=db_url,
        stdin=f"{PASSWORD}\n{PASSWORD}\n",
    )
    assert approved.returncode == 0, approved.stderr
    assert "change approved by QA: room T-C1: grade C → B" in approved.stdout
    assert _grade(people_engine, "T-C1") == "B"


def test_a_dropped_monitor_cannot_come_back_changed_without_qa(people_engine: Engine) -> None:
    """Dropping a monitor needs no approval; bringing it back is an evaluation change, so a
    change cannot be split over two loads to pass without QA's signature."""
    block = '[[monitors]]\ncode = "T-D1-DP"\nroom = "T-D1"\nkind = "pressure"\nreference = "T-CNC"\ninterval_s = 10\n'
    assert block in BASE
    with unit_of_work(people_engine) as s:
        assert (
            load_facility(s, parse_facility(BASE.replace(block, "")), actor="admin").evaluation_changes == ()
        )
    back = BASE.replace(block, block.replace("interval_s = 10", "interval_s = 600"))
    with unit_of_work(people_engine) as s, pytest.raises(PermissionDeniedError) as refused:
        load_facility(s, parse_facility(back), actor="admin")
    assert "monitor T-D1-DP: reactivated" in str(refused.value)
    assert "monitor T-D1-DP: interval_s 10.0 → 600.0" in str(refused.value)
    with unit_of_work(people_engine) as s:
        assert not s.exec(select(Monitor).where(Monitor.code == "T-D1-DP")).one().active
    with unit_of_work(people_engine) as s:
        done = load_facility(s, parse_facility(back), actor="admin", approver=as_(people_engine, "qa1"))
    assert "monitor T-D1-DP: reactivated" in done.evaluation_changes
    with unit_of_work(people_engine) as s:
        assert s.exec(select(Monitor).where(Monitor.code == "T-D1-DP")).one().active
