"""Issue 15 item 1: what the QA-review and QP-release signatures say they cover is what they
sign — the batch record and its environmental picture (exposure links and their decisions,
excursions, invalid periods, deviations with their states, readings per step) — and exposure-
link decisions are e-signed. A change afterwards shows the signature as no longer matching."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import Engine, text

from tests.batch_scenes import NUMBER, buffered_counter_comes_back, feed, signed_off
from tests.factories import as_
from tracker.core.db import unit_of_work
from tracker.core.errors import ConflictError
from tracker.identity import signatures
from tracker.quality.batches.linking import decide_link, links_of, sync_links
from tracker.quality.batches.reconcile import reconciliation_problems
from tracker.quality.batches.release import qa_review, release, signature_checks
from tracker.quality.batches.steps import get_batch


def statuses(engine: Engine) -> dict[str, str]:
    with unit_of_work(engine) as s:
        checks = signature_checks(s, get_batch(s, NUMBER))
        return {f"{c.signature.entity}:{c.signature.scope}": c.status for c in checks}


def test_qa_review_and_release_sign_the_environmental_picture(people_engine: Engine) -> None:
    engine = people_engine
    signed_off(engine)
    with unit_of_work(engine) as s:
        batch = get_batch(s, NUMBER)
        sigs = {sig.scope: sig for sig in signatures.signatures_of(s, "batch", NUMBER)}
        production = json.loads(sigs["production"].content)
        assert "environment" not in production  # the production head signs the record only
        for scope in ("qa_review", "release"):
            env = json.loads(sigs[scope].content)["environment"]
            (link,) = env["links"]
            (gap,) = env["excursions"]
            assert (link["status"], link["decided_by"], link["reason"]) == (
                "rejected",
                "qa1",
                "vessels closed while silent",
            )
            assert link["decision_signature"] is not None  # the decision's own e-signature, bound
            assert (gap["type"], gap["monitor"], gap["status"]) == ("data_gap", "T-B1-PC", "closed")
            assert env["deviations"] == []
            assert env["invalid_periods"] == []
            (covered,) = [c for c in env["coverage"] if c["monitor"] == "T-B1-PC"]
            assert covered["readings"] == 2 * (41 - 11)  # two channels, minutes 0–40 but the silent 11
        decision = links_of(s, batch)[0]
        (sig,) = signatures.signatures_of(s, "exposure_link", str(decision.id))
        assert (sig.meaning, sig.username, sig.scope) == ("reviewed", "qa1", "decision")
        assert sig.statement == f"QA confirms that step 1 of batch {NUMBER} was not exposed to excursion 1"
        assert signatures.statement_said(sig.statement).zh == f"QA 确认批次 {NUMBER} 的工序 1 未受超标 1 影响"
    assert set(statuses(engine).values()) == {"intact"}


def test_a_link_decision_needs_a_signature_and_an_edit_of_it_shows(people_engine: Engine) -> None:
    engine = people_engine
    signed_off(engine)
    with unit_of_work(engine) as s:  # behind the application's back: the decision's reason
        s.exec(text("UPDATE excursion_link SET reason = 'nothing to see'"))
    got = statuses(engine)
    assert got["exposure_link:decision"] == "broken"  # the decision's own signature
    assert got["batch:qa_review"] == got["batch:release"] == "changed"  # … and the picture they bound
    assert got["batch:production"] == "intact"
    with unit_of_work(engine) as s:
        assert any("decision differs from audit event" in p for p in reconciliation_problems(s))


@pytest.mark.parametrize(
    "change",
    ["excursion re-judged", "deviation state", "late in-limit reading"],
)
def test_any_change_of_the_picture_shows_the_signatures_no_longer_matching(
    people_engine: Engine, change: str
) -> None:
    engine = people_engine
    signed_off(engine)
    with unit_of_work(engine) as s:
        if change == "excursion re-judged":
            s.exec(text("UPDATE excursion SET level = 'action'"))
        elif change == "deviation state":
            from tracker.facility.models import get_site
            from tracker.quality.batches.linking import raise_deviation

            raise_deviation(
                s,
                actor=as_(engine, "qa2"),
                site=get_site(s),
                excursion_ids=[],
                title="door",
                classification="minor",
                category="environment",
                description="found later",
                batch_numbers=[NUMBER],
            )
    if change == "late in-limit reading":
        feed(engine, [16])
    got = statuses(engine)
    assert (got["batch:qa_review"], got["batch:release"]) == ("changed", "changed")
    assert got["batch:production"] == "intact"
    with unit_of_work(engine) as s:
        (check,) = [c for c in signature_checks(s, get_batch(s, NUMBER)) if c.signature.scope == "release"]
        assert check.problem == signatures.ENVIRONMENT_CHANGED
        assert not check.intact
        assert check.manifest("Asia/Shanghai")["problem"].zh == "签名后环境监测情况发生了变化"


def test_an_edit_of_the_record_is_broken_not_changed(people_engine: Engine) -> None:
    engine = people_engine
    signed_off(engine)
    with unit_of_work(engine) as s:
        s.exec(text(f"UPDATE batch SET product = 'relabelled' WHERE number = '{NUMBER}'"))
    got = statuses(engine)
    assert {got["batch:production"], got["batch:qa_review"], got["batch:release"]} == {"broken"}


def test_facts_arriving_between_review_and_release_make_qa_review_again(people_engine: Engine) -> None:
    engine = people_engine
    signed_off(engine, until="qa_reviewed")
    buffered_counter_comes_back(engine, high=range(0))  # in limit: no excursion, but more data
    with unit_of_work(engine) as s, pytest.raises(ConflictError) as refused:
        release(s, signer=as_(engine, "qp1"), batch=get_batch(s, NUMBER))
    assert any("QA reviews the batch again" in r for r in refused.value.reasons)
    assert any("重新审核" in r.zh for r in refused.value.reasons)
    with unit_of_work(engine) as s:
        sync_links(s)
        assert qa_review(s, signer=as_(engine, "qa2"), batch=get_batch(s, NUMBER)).status == "qa_reviewed"
    with unit_of_work(engine) as s:
        assert release(s, signer=as_(engine, "qp1"), batch=get_batch(s, NUMBER)).status == "released"
    got = [
        (c.signature.username, c.status)
        for c in signature_checks_of(engine)
        if c.signature.scope == "qa_review"
    ]
    assert got == [("qa1", "superseded"), ("qa2", "intact")]


def test_a_new_action_excursion_before_release_must_be_decided_signed(people_engine: Engine) -> None:
    engine = people_engine
    signed_off(engine, until="qa_reviewed")
    buffered_counter_comes_back(engine)  # an action excursion inside the step
    with unit_of_work(engine) as s, pytest.raises(ConflictError) as refused:
        release(s, signer=as_(engine, "qp1"), batch=get_batch(s, NUMBER))
    assert any("undecided" in r for r in refused.value.reasons)
    with unit_of_work(engine) as s:
        (new,) = [link for link in links_of(s, get_batch(s, NUMBER)) if link.status == "proposed"]
        decide_link(s, signer=as_(engine, "qa2"), link_id=new.id, exposed=True, reason="open processing")
    with unit_of_work(engine) as s, pytest.raises(ConflictError) as refused:
        release(s, signer=as_(engine, "qp1"), batch=get_batch(s, NUMBER))
    assert any("has no deviation" in r for r in refused.value.reasons)
    assert any("QA reviews the batch again" in r for r in refused.value.reasons)


def signature_checks_of(engine: Engine) -> list[signatures.SignatureCheck]:
    with unit_of_work(engine) as s:
        return signature_checks(s, get_batch(s, NUMBER))
