"""Facility file: validation messages, idempotent load, audited changes, deactivation."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import Engine
from sqlmodel import select

from tests.conftest import MIN_FACILITY
from tracker.core import audit
from tracker.core.db import unit_of_work
from tracker.core.errors import FacilityFileError, LimitTooLooseError
from tracker.facility.file import parse_facility, read_facility_file
from tracker.facility.load import load_facility
from tracker.facility.models import Monitor, Room

BASE = MIN_FACILITY.read_text(encoding="utf-8")


REFUSALS = [
    (lambda s: s.replace('background = "T-B1"', 'background = "NOPE"'), "unknown background room 'NOPE'"),
    (lambda s: s.replace('reference = "T-C1"', 'reference = "NOPE"'), "unknown reference room 'NOPE'"),
    (lambda s: s.replace('reference = "T-C1"\n', ""), "needs 'reference'"),
    (lambda s: s.replace('code = "T-C1"', 'code = "T-B1"', 1), "duplicate room code 'T-B1'"),
    (lambda s: s.replace('code = "T-B1-H"', 'code = "T-B1-T"'), "duplicate monitor code 'T-B1-T'"),
    (lambda s: s.replace('grade = "D"', 'grade = "E"'), "unknown grade 'E'"),
    (lambda s: s.replace('kind = "humidity"', 'kind = "noise"'), "unknown kind 'noise'"),
    (
        lambda s: s.replace('room = "T-B1"\nkind = "humidity"', 'room = "T-X"\nkind = "humidity"'),
        "unknown room 'T-X'",
    ),
    (lambda s: s.replace('timezone = "Asia/Shanghai"', 'timezone = "Mars/Olympus"'), "time zone"),
    (lambda s: s.replace('limit_set = "CN-GMP-2010"', 'limit_set = "FDA-1987"'), "unknown limit set"),
    (lambda s: s + "\n[[rooms]]\ncode = 'L1'\nname = 'l'\ngrade = 'C'\nbackground = 'L1'\n", "loop"),
    (lambda s: s + "\n[[limits]]\ngrade = 'B'\nkind = 'particles'\naction_high = 10\n", "need a 'channel'"),
    (lambda s: s.replace("[site]", "[site\n"), "not valid TOML"),
]


@pytest.mark.parametrize(("change", "message"), REFUSALS)
def test_inconsistent_files_are_refused_with_a_clear_message(change, message: str) -> None:
    with pytest.raises(FacilityFileError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_facility(change(BASE))


@pytest.mark.parametrize(("change", "message"), REFUSALS)
def test_the_refusals_carry_their_chinese_wording(change, message: str) -> None:
    """``tracker facility load`` prints them in ``TRACKER_LANG`` (zh-CN by default)."""
    with pytest.raises(FacilityFileError) as refused:
        parse_facility(change(BASE))
    said = refused.value.said("zh-CN")
    assert re.search(r"[\u4e00-\u9fff]", said), said
    assert message not in said
    assert refused.value.said("en") == str(refused.value)


def test_a_looser_level_is_refused_in_chinese_too() -> None:
    looser = BASE + (
        "\n[[limits]]\ngrade = 'B'\nkind = 'particles'\nchannel = '0.5'\nstate = 'at_rest'\n"
        "action_high = 1e9\n"
    )
    with pytest.raises(LimitTooLooseError, match="may only be tighter") as refused:
        parse_facility(looser)
    assert "设施限度只能严于法规" in refused.value.said("zh-CN")


def test_load_is_idempotent_and_audited(engine: Engine) -> None:
    facility = read_facility_file(MIN_FACILITY)
    with unit_of_work(engine) as s:
        first = load_facility(s, facility, actor="qa.li")
    with unit_of_work(engine) as s:
        events_after_first = len(s.exec(select(audit.AuditEvent)).all())
        second = load_facility(s, facility, actor="qa.li")
        assert len(s.exec(select(audit.AuditEvent)).all()) == events_after_first
    assert first.changed
    assert not second.changed
    assert second.revision == first.revision == 1
    with unit_of_work(engine) as s:
        rooms = s.exec(select(Room)).all()
        bsc = next(r for r in rooms if r.code == "T-B1-BSC")
        assert bsc.grade == "A"
        assert bsc.background_id == next(r.id for r in rooms if r.code == "T-B1")
        assert audit.verify_chain(s)[0]


def test_changed_file_makes_a_revision_and_deactivates_missing(engine: Engine) -> None:
    with unit_of_work(engine) as s:
        load_facility(s, parse_facility(BASE), actor="qa.li")
    humidity = '[[monitors]]\ncode = "T-B1-H"\nroom = "T-B1"\nkind = "humidity"\ninterval_s = 60\n'
    trimmed = BASE.replace(humidity, "")
    assert trimmed != BASE
    with unit_of_work(engine) as s:
        result = load_facility(s, parse_facility(trimmed), actor="qa.wang")
    assert result.changed
    assert result.revision == 2
    assert result.deactivated == ("monitor T-B1-H",)
    with unit_of_work(engine) as s:
        humidity = s.exec(select(Monitor).where(Monitor.code == "T-B1-H")).one()
        assert humidity.active is False  # kept, never deleted
        actions = [e.action for e in s.exec(select(audit.AuditEvent))]
        assert "monitor.deactivate" in actions
        intact, count, broken = audit.verify_chain(s)
        assert intact
        assert broken is None
        assert count == len(actions)


def test_tampered_audit_row_breaks_the_chain(engine: Engine) -> None:
    with unit_of_work(engine) as s:
        load_facility(s, parse_facility(BASE), actor="qa.li")
    with unit_of_work(engine) as s:
        third = s.exec(select(audit.AuditEvent).order_by(audit.AuditEvent.id).offset(2)).first()
        third.actor = "someone.else"
        s.add(third)
    with unit_of_work(engine) as s:
        assert audit.verify_chain(s) == (False, 2, third.id)
