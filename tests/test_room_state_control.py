"""Room-state changes under control (issue 14 item 2): late ones need a reason, backdated ones
and those that re-judge excursions need QA's e-signed approval, superseded excursions say who,
why and with which signature."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, func, text
from sqlmodel import select

from tests.conftest import use_records_policy
from tests.factories import PASSWORD, T0, as_, particles, topic
from tests.test_cli import tracker
from tracker.core.db import unit_of_work
from tracker.core.errors import InvalidInputError, PermissionDeniedError
from tracker.facility.roomstate import RoomStateChange
from tracker.identity.users import login
from tracker.ingest.processor import BatchProcessor, InboundMessage
from tracker.monitoring.excursions import list_excursions
from tracker.monitoring.intake import Intake
from tracker.monitoring.state_changes import StatePolicy, change_room_state
from tracker.quality.batches.integrity import all_signature_checks


def signer(engine: Engine, username: str, when: datetime):
    """A re-authentication at ``when`` (the simulated time of the change), as a signature needs."""
    return login(engine, username=username, password=PASSWORD, now=when)


def _burst(engine: Engine, start: datetime, *, received: datetime) -> None:
    """Ten minutes of T-B1 particles with an at-rest action burst in minutes 3-5: in limit in operation."""
    batch = [
        InboundMessage(
            topic("T-B1", "T-B1-PC"),
            particles(seq=m + 1, ts=start + timedelta(minutes=m), c05=2830 if 3 <= m < 6 else 10),
            received,
        )
        for m in range(10)
    ]
    with unit_of_work(engine) as s:
        BatchProcessor(Intake(close_after=3)).process(s, batch)


def _changes(engine: Engine) -> int:
    with unit_of_work(engine) as s:
        return s.exec(select(func.count()).select_from(RoomStateChange)).one()


def test_a_late_change_needs_its_reason(people_engine: Engine) -> None:
    use_records_policy(people_engine)  # the defaults (15 min, 24 h), not the suite's
    now = T0 + timedelta(hours=1)
    with unit_of_work(people_engine) as s, pytest.raises(InvalidInputError) as refused:
        change_room_state(
            s, by=as_(people_engine, "prod"), room_code="T-C1", state="in_operation", effective_at=T0, now=now
        )
    assert str(refused.value) == "the change took effect 60 min ago: say why it is recorded late (--reason)"
    assert refused.value.said("zh-CN") == "该状态已于 60 分钟前生效：请说明补记原因（--reason）"
    with unit_of_work(people_engine) as s:
        done = change_room_state(
            s,
            by=as_(people_engine, "prod"),
            room_code="T-C1",
            state="in_operation",
            effective_at=T0,
            now=now,
            reason="entered after the session",
        )
    assert done.approval_signature_id is None
    with unit_of_work(people_engine) as s, pytest.raises(InvalidInputError, match="for the future"):
        change_room_state(
            s,
            by=as_(people_engine, "prod"),
            room_code="T-C1",
            state="at_rest",
            effective_at=now + timedelta(hours=1),
            now=now,
        )


def test_a_change_that_supersedes_an_excursion_needs_qa_and_says_who_and_why(people_engine: Engine) -> None:
    engine = people_engine
    _burst(engine, T0, received=T0 + timedelta(minutes=10))
    with unit_of_work(engine) as s:
        (before,) = list_excursions(s, type_="limit")
    assert (before["monitor"], before["level"], before["state"]) == ("T-B1-PC", "action", "at_rest")
    now = T0 + timedelta(minutes=30)
    changes_before = _changes(engine)
    # within the late-entry window, but it would supersede the excursion: refused, nothing kept
    with pytest.raises(PermissionDeniedError) as refused, unit_of_work(engine) as s:
        change_room_state(
            s,
            by=as_(engine, "prod"),
            room_code="T-B1",
            state="in_operation",
            effective_at=T0,
            now=now,
            reason="session started at 00:00",
        )
    assert f"would supersede or reshape excursion(s) {before['id']}" in str(refused.value)
    assert "须由 QA 以电子签名批准" in refused.value.said("zh-CN")
    assert _changes(engine) == changes_before
    with unit_of_work(engine) as s:
        assert list_excursions(s, type_="limit") == [before]
    # the recorder cannot approve their own change
    with pytest.raises(PermissionDeniedError, match="another person"), unit_of_work(engine) as s:
        change_room_state(
            s,
            by=as_(engine, "qa1"),
            approver=signer(engine, "qa1", now),
            room_code="T-B1",
            state="in_operation",
            effective_at=T0,
            now=now,
            reason="session started at 00:00",
        )
    with unit_of_work(engine) as s:
        done = change_room_state(
            s,
            by=as_(engine, "prod"),
            approver=signer(engine, "qa1", now),
            room_code="T-B1",
            state="in_operation",
            effective_at=T0,
            now=now,
            reason="session started at 00:00",
        )
    assert done.affected == (before["id"],)
    with unit_of_work(engine) as s:
        assert list_excursions(s, type_="limit") == []
        (gone,) = list_excursions(s, type_="limit", include_superseded=True)
        assert gone["status"] == "superseded"
        assert gone["superseded_by"] == "prod"
        assert gone["superseded_reason"].endswith("recorded by prod: session started at 00:00")
        assert gone["superseded_signature_id"] == done.approval_signature_id
        checks = {c.signature.scope: c for c in all_signature_checks(s)}
        check = checks[f"room_state:{done.change_id}"]
        assert (check.intact, check.signature.username) == (True, "qa1")
        assert json.loads(check.signature.content)["affected_excursions"] == [before["id"]]
        s.exec(
            text("UPDATE room_state_change SET reason = 'other' WHERE id = :i"), params={"i": done.change_id}
        )
    with unit_of_work(engine) as s:
        checks = {c.signature.scope: c for c in all_signature_checks(s)}
        assert checks[f"room_state:{done.change_id}"].intact is False


def test_a_backdated_change_needs_qa_even_when_it_touches_nothing(people_engine: Engine) -> None:
    now = T0 + timedelta(hours=26)
    policy = StatePolicy(late_after=timedelta(minutes=15), backdate_max=timedelta(hours=24))
    with pytest.raises(PermissionDeniedError, match="more than 24 h ago"), unit_of_work(people_engine) as s:
        change_room_state(
            s,
            by=as_(people_engine, "prod"),
            room_code="T-C1",
            state="in_operation",
            effective_at=T0,
            now=now,
            reason="forgotten",
            policy=policy,
        )
    with unit_of_work(people_engine) as s:
        done = change_room_state(
            s,
            by=as_(people_engine, "prod"),
            approver=signer(people_engine, "qa1", now),
            room_code="T-C1",
            state="in_operation",
            effective_at=T0,
            now=now,
            reason="forgotten",
            policy=policy,
        )
    assert done.affected == ()
    assert done.approval_signature_id is not None


def test_the_cli_refuses_a_backdated_change_and_records_it_with_qa_approval(
    people_engine: Engine, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The issue's must-show: 26 hours back as a production head, then with --approve-as."""
    use_records_policy(people_engine)  # the defaults, not the suite's
    now = datetime.now(UTC).replace(microsecond=0)
    at = now - timedelta(hours=26)
    _burst(people_engine, at - timedelta(minutes=3), received=now)
    changes_before = _changes(people_engine)
    args = ("room", "state", "T-B1", "in_operation", "--at", at.isoformat(), "--reason", "session log found")
    refused = tracker(
        *args, "--as", "prod", "--password-stdin", db_url=db_url, lang="zh-CN", stdin=PASSWORD + "\n"
    )
    assert refused.returncode != 0
    assert "该状态的生效时间早于 24 小时之前：须由 QA 以电子签名批准（--approve-as QA_USER）" in (
        refused.stderr + refused.stdout
    )
    refused_en = tracker(*args, "--as", "prod", "--password-stdin", db_url=db_url, stdin=PASSWORD + "\n")
    assert "the change is dated more than 24 h ago: QA must approve it with an e-signature" in (
        refused_en.stderr + refused_en.stdout
    )
    assert _changes(people_engine) == changes_before
    approved = tracker(
        *args,
        "--as",
        "prod",
        "--approve-as",
        "qa1",
        "--password-stdin",
        db_url=db_url,
        stdin=f"{PASSWORD}\n{PASSWORD}\n",
    )
    assert approved.returncode == 0, approved.stderr
    assert "Re-evaluated" in approved.stdout or "re-evaluated" in approved.stdout.lower()
    assert _changes(people_engine) == changes_before + 1
    with unit_of_work(people_engine) as s:
        (gone,) = list_excursions(s, type_="limit", include_superseded=True)
        assert (gone["status"], gone["superseded_by"]) == ("superseded", "prod")
