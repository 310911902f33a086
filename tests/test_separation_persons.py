"""Issue 15 item 3: separation of duties compares persons, and two people stand behind every
signing role and every signing password.

Each attack named in the issue is a test here, failing before the change: one person with two
accounts (or one account holding QA and QP) signing QA review and QP release of one batch; a QA
user who wrote a deviation's root cause, owned and completed its CAPA and closed it; an admin
giving itself or another account a signing role; an admin resetting a QA user's password,
logging in as them, changing it and signing.
"""

from __future__ import annotations

from datetime import date

import pytest
from sqlalchemy import Engine, text

from tests.conftest import MIN_FACILITY
from tests.factories import PASSWORD, T0, TEMPORARY_PASSWORD, add_person, as_, minutes
from tests.test_quality_rules import finished_batch
from tracker.core import audit
from tracker.core.db import unit_of_work
from tracker.core.errors import AuthenticationError, FacilityFileError, PermissionDeniedError
from tracker.facility.file import parse_facility
from tracker.facility.load import load_facility
from tracker.facility.models import get_site
from tracker.identity import signatures
from tracker.identity.grants import approve_roles, bootstrap_roles, role_requests
from tracker.identity.users import (
    Authenticated,
    change_password,
    create_user,
    enrol,
    get_user,
    login,
    require_fresh,
    set_password,
    set_roles,
)
from tracker.quality import deviations as dv
from tracker.quality.batches.integrity import all_signature_checks
from tracker.quality.batches.reconcile import reconciliation_problems
from tracker.quality.batches.release import qa_review, release, sign_production
from tracker.quality.batches.steps import get_batch

ALLOW_QA_QP = MIN_FACILITY.read_text(encoding="utf-8") + "\n[separation]\nqa_reviewer_may_release = true\n"


def reviewed_batch(engine: Engine, reviewer: str = "qa1") -> None:
    finished_batch(engine, end=T0 + minutes(30))
    with unit_of_work(engine) as s:
        sign_production(s, signer=as_(engine, "prod"), batch=get_batch(s, "CT-1"))
    with unit_of_work(engine) as s:
        qa_review(s, signer=as_(engine, reviewer), batch=get_batch(s, "CT-1"))


# -- one person, many accounts ----------------------------------------------------------------------


def test_a_person_with_two_accounts_cannot_sign_two_steps_of_one_batchs_chain(people_engine: Engine) -> None:
    engine = people_engine
    # qa1's person also holds a QP account (QA and QP may be combined, Art. 20) …
    add_person(engine, "liu.qp", "质量受权人 刘洋 Liu Yang", ["qp"], person="E-qa1")
    reviewed_batch(engine, reviewer="qa1")
    # … but the QA reviewer and the QP releaser of one batch are two persons, whatever the account
    with unit_of_work(engine) as s, pytest.raises(PermissionDeniedError, match="signed the QA review"):
        release(s, signer=as_(engine, "liu.qp"), batch=get_batch(s, "CT-1"))
    with unit_of_work(engine) as s:
        assert release(s, signer=as_(engine, "qp1"), batch=get_batch(s, "CT-1")).status == "released"


def test_the_production_heads_person_cannot_hold_qa_on_another_account(people_engine: Engine) -> None:
    engine = people_engine
    with unit_of_work(engine) as s, pytest.raises(PermissionDeniedError, match="person E-prod also holds"):
        create_user(
            s,
            username="zhang.qa",
            full_name="张伟 Zhang Wei",
            person="E-prod",
            roles=["qa"],
            password=TEMPORARY_PASSWORD,
            actor=as_(engine, "admin"),
        )
    # an account of the admin's person holds no signing role either
    with unit_of_work(engine) as s, pytest.raises(PermissionDeniedError, match="no GMP signing role"):
        create_user(
            s,
            username="admin.qa",
            full_name="Admin",
            person="E-admin",
            roles=["qa"],
            password=TEMPORARY_PASSWORD,
            actor=as_(engine, "admin"),
        )
    # accounts from before the rule (two accounts of one person, prod and QA) still sign once
    finished_batch(engine, end=T0 + minutes(30))
    with unit_of_work(engine) as s:
        s.exec(text("UPDATE app_user SET person_id = 'E-prod' WHERE username = 'qa2'"))
        sign_production(s, signer=as_(engine, "prod"), batch=get_batch(s, "CT-1"))
    with unit_of_work(engine) as s, pytest.raises(PermissionDeniedError, match="different people"):
        qa_review(s, signer=as_(engine, "qa2"), batch=get_batch(s, "CT-1"))


def test_an_account_holding_qa_and_qp_reviews_or_releases_unless_the_site_allows_both(
    people_engine: Engine,
) -> None:
    engine = people_engine
    add_person(engine, "chen.qaqp", "QA/QP 陈静 Chen Jing", ["qa", "qp"])
    reviewed_batch(engine, reviewer="chen.qaqp")
    with unit_of_work(engine) as s, pytest.raises(PermissionDeniedError) as refused:
        release(s, signer=as_(engine, "chen.qaqp"), batch=get_batch(s, "CT-1"))
    assert "qa_reviewer_may_release = true" in str(refused.value)
    assert "另一人" in refused.value.said("zh-CN")
    # the policy lives in the facility file; changing it is a change QA approves, signed
    with unit_of_work(engine) as s, pytest.raises(PermissionDeniedError, match="separation-of-duties policy"):
        load_facility(s, parse_facility(ALLOW_QA_QP), actor="admin")
    with unit_of_work(engine) as s:
        result = load_facility(s, parse_facility(ALLOW_QA_QP), actor="admin", approver=as_(engine, "qa2"))
        assert result.evaluation_changes == ("[separation] qa_reviewer_may_release: false → true",)
        assert get_site(s).qa_reviewer_may_release is True
        (approval,) = [c for c in all_signature_checks(s) if c.signature.entity == "site"]
        assert (approval.signature.scope, approval.status) == (
            f"facility_evaluation:{result.revision}",
            "intact",
        )
    with unit_of_work(engine) as s:
        assert release(s, signer=as_(engine, "chen.qaqp"), batch=get_batch(s, "CT-1")).status == "released"


def test_the_separation_table_takes_booleans_and_known_keys_only() -> None:
    with pytest.raises(FacilityFileError, match="must be true or false"):
        parse_facility(MIN_FACILITY.read_text() + '\n[separation]\nqa_reviewer_may_release = "yes"\n')
    with pytest.raises(FacilityFileError, match="did you mean 'qa_reviewer_may_release'"):
        parse_facility(MIN_FACILITY.read_text() + "\n[separation]\nqa_reviewer_may_releases = true\n")
    assert parse_facility(MIN_FACILITY.read_text()).separation.qa_reviewer_may_release is False


# -- deviations: nobody closes what they wrote or own -----------------------------------------------


def _investigated(engine: Engine) -> str:
    """A deviation whose root cause qa1 wrote and qa2 rewrote; qa3 approves the report."""
    finished_batch(engine, end=T0 + minutes(30))
    add_person(engine, "qa3", "QA 孙丽 Sun Li", ["qa"])
    with unit_of_work(engine) as s:
        dev = dv.open_deviation(
            s,
            actor=as_(engine, "qa1"),
            site=get_site(s),
            title="sash",
            classification="major",
            category="environment",
            description="sash too high",
        )
        dv.start_investigation(s, actor=as_(engine, "qa1"), dev=dev)
        dv.update_deviation(s, actor=as_(engine, "qa1"), dev=dev, reason="finding", root_cause="sash high")
        dv.update_deviation(
            s, actor=as_(engine, "qa2"), dev=dev, reason="wording", root_cause="sash too high"
        )
        return dev.number


def test_every_contributor_is_an_author_not_only_the_last_writer(people_engine: Engine) -> None:
    engine = people_engine
    number = _investigated(engine)
    with unit_of_work(engine) as s:
        dev = dv.get_deviation(s, number)
        assert dev.root_cause_by == "qa2"  # the last writer …
        assert set(dv.authors(s, dev)) == {"E-qa1", "E-qa2"}  # … and every contributor
    for who in ("qa1", "qa2"):  # qa1 wrote the first version: still an author
        with unit_of_work(engine) as s, pytest.raises(PermissionDeniedError, match="nobody checks their own"):
            dv.approve_investigation(s, signer=as_(engine, who), dev=dv.get_deviation(s, number))
    with unit_of_work(engine) as s:
        assert dv.approve_investigation(s, signer=as_(engine, "qa3"), dev=dv.get_deviation(s, number))


def test_a_deviation_is_closed_by_none_of_its_authors_nor_its_capa_owner(people_engine: Engine) -> None:
    engine = people_engine
    number = _investigated(engine)
    add_person(engine, "qa1.b", "QA 刘洋 Liu Yang (2nd account)", ["qa"], person="E-qa1")
    add_person(engine, "qa4", "QA 周强 Zhou Qiang", ["qa"])
    with unit_of_work(engine) as s:
        dev = dv.get_deviation(s, number)
        dv.approve_investigation(s, signer=as_(engine, "qa3"), dev=dev)
        capa = dv.add_capa(
            s,
            actor=as_(engine, "qa4"),
            dev=dev,
            kind="corrective",
            description="mark the sash height",
            owner="qa3",
            due=date(2026, 12, 31),
        )
        dv.complete_capa(s, actor=as_(engine, "qa3"), capa_id=capa.id, outcome="marked")
    # the attack: wrote the root cause (qa1, also as its second account), owns the CAPA (qa3)
    for who, part in (("qa1", "root_cause"), ("qa1.b", "root_cause"), ("qa2", "root_cause"), ("qa3", "CAPA")):
        with unit_of_work(engine) as s, pytest.raises(PermissionDeniedError, match=part):
            dv.close_deviation(s, signer=as_(engine, who), dev=dv.get_deviation(s, number))
    with unit_of_work(engine) as s:
        assert (
            dv.close_deviation(s, signer=as_(engine, "qa4"), dev=dv.get_deviation(s, number)).status
            == "closed"
        )


# -- an admin never obtains a signature -------------------------------------------------------------


def test_an_admin_cannot_give_itself_or_another_account_a_signing_role_alone(people_engine: Engine) -> None:
    engine = people_engine
    add_person(engine, "viewer1", "只读 孙丽 Sun Li", ["viewer"])
    with (
        unit_of_work(engine) as s,
        pytest.raises(PermissionDeniedError, match="nobody changes their own roles"),
    ):
        set_roles(s, actor=as_(engine, "admin"), username="admin", roles=["qa"], reason="I am QA now")
    with unit_of_work(engine) as s:
        user = set_roles(s, actor=as_(engine, "admin"), username="viewer1", roles=["qa"], reason="joins QA")
        assert user.roles == ""  # asked for, not given
    (request,) = [r for r in role_requests_of(engine) if r["username"] == "viewer1"]
    with unit_of_work(engine) as s, pytest.raises(PermissionDeniedError, match="needs the role qa"):
        approve_roles(s, signer=as_(engine, "admin"), grant_id=request["id"])
    with unit_of_work(engine) as s, pytest.raises(PermissionDeniedError, match="only the site's first QA"):
        bootstrap_roles(s, admin=as_(engine, "admin"), grant_id=request["id"])
    with unit_of_work(engine) as s:
        approve_roles(s, signer=as_(engine, "qa1"), grant_id=request["id"], comment="training record QA-T-7")
        assert get_user(s, "viewer1").roles == "qa"
        (check,) = [c for c in all_signature_checks(s) if c.signature.entity_key == "viewer1"]
        assert (check.signature.scope, check.signature.username, check.status) == (
            f"role_grant:{request['id']}",
            "qa1",
            "intact",
        )
        assert reconciliation_problems(s) == []
    # nobody approves a role for themselves (the approver is neither requester nor receiver)
    with unit_of_work(engine) as s:
        set_roles(s, actor=as_(engine, "admin"), username="qa2", roles=["qa", "qp"], reason="QA head is QP")
    (request,) = [r for r in role_requests_of(engine) if r["username"] == "qa2"]
    with unit_of_work(engine) as s, pytest.raises(PermissionDeniedError, match="another person"):
        approve_roles(s, signer=as_(engine, "qa2"), grant_id=request["id"])


def role_requests_of(engine: Engine) -> list[dict]:
    with unit_of_work(engine) as s:
        return role_requests(s)


def test_an_admin_who_resets_a_qa_password_cannot_sign_as_them(people_engine: Engine) -> None:
    engine = people_engine
    finished_batch(engine, end=T0 + minutes(30))
    with unit_of_work(engine) as s:
        sign_production(s, signer=as_(engine, "prod"), batch=get_batch(s, "CT-1"))
        set_password(
            s, actor=as_(engine, "admin"), username="qa2", new_password="the admin knows this one", reason="r"
        )
    # the admin logs in as qa2 and changes the password: the account is now the admin's to use …
    as_qa2 = login(engine, username="qa2", password="the admin knows this one")
    with unit_of_work(engine) as s:
        change_password(s, actor=as_qa2, new_password="the admin chose this too")
    as_qa2 = login(engine, username="qa2", password="the admin chose this too")
    # … but neither signs nor records GMP work with it
    with unit_of_work(engine) as s, pytest.raises(PermissionDeniedError, match="no password enrolled"):
        qa_review(s, signer=as_qa2, batch=get_batch(s, "CT-1"))
    with unit_of_work(engine) as s, pytest.raises(AuthenticationError, match="no password enrolled"):
        signatures.sign(
            s,
            signer=as_qa2,
            meaning="reviewed",
            entity="batch",
            entity_key="CT-1",
            scope="qa_review",
            statement="forged",
            content={},
        )
    # and the admin cannot witness the enrolment it would need, nor anyone for themselves
    admin = login(engine, username="admin", password=PASSWORD)
    for witness in (admin, as_qa2):
        with unit_of_work(engine) as s, pytest.raises(PermissionDeniedError, match="witness"):
            enrol(s, owner=as_qa2, witness=witness, new_password="enrolled by the admin")
    # the real owner enrols before a QA witness (two people, audited) and signs again
    with unit_of_work(engine) as s:
        enrol(s, owner=as_qa2, witness=as_(engine, "qa1"), new_password=PASSWORD)
        events = [e for e in s.exec(audit.AuditEvent.__table__.select()) if e.action == "user.enrol"]
        assert events[-1].entity_key == "qa2"
        assert '"witness": "qa1"' in events[-1].after or '"witness":"qa1"' in events[-1].after
    with unit_of_work(engine) as s:
        assert qa_review(s, signer=as_(engine, "qa2"), batch=get_batch(s, "CT-1")).status == "qa_reviewed"


def test_a_logged_in_session_never_signs(people_engine: Engine) -> None:
    engine = people_engine
    proof = as_(engine, "qa1")
    session_proof = Authenticated(
        proof.user_id,
        proof.username,
        proof.full_name,
        proof.roles,
        proof.at,
        person=proof.person,
        enrolled=True,
        method="session",
    )
    with unit_of_work(engine) as s, pytest.raises(AuthenticationError, match="not a logged-in session"):
        require_fresh(s, session_proof)
