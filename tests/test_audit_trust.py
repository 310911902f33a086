"""A trail that survives a re-seal (issue 15 item 4): keyed seals, anchors outside the
database, and the rows the chain does not cover reconciled against it."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import Engine, text
from sqlmodel import Session, select

from tests.factories import T0, as_, minutes
from tests.test_cli import tracker
from tests.test_linking_review import b1_particles, batch_with_step, feed
from tests.test_quality_rules import finished_batch
from tracker.core import audit
from tracker.core.db import unit_of_work
from tracker.core.keys import Keyring, keyring, keyring_from, use_keyring
from tracker.identity import signatures
from tracker.monitoring.excursions import acknowledge, list_excursions
from tracker.quality.batches.linking import decide_link, links_of, sync_links
from tracker.quality.batches.release import batch_content, qa_review, release, sign_production
from tracker.quality.batches.steps import get_batch


def released_batch(engine: Engine) -> None:
    finished_batch(engine, end=T0 + minutes(30))
    with unit_of_work(engine) as s:
        sign_production(s, signer=as_(engine, "prod"), batch=get_batch(s, "CT-1"))
    with unit_of_work(engine) as s:
        qa_review(s, signer=as_(engine, "qa1"), batch=get_batch(s, "CT-1"))
    with unit_of_work(engine) as s:
        assert release(s, signer=as_(engine, "qp1"), batch=get_batch(s, "CT-1")).status == "released"


def verify(db_url: str, anchors) -> tuple[int, str]:
    done = tracker("audit", "verify", "--anchors", str(anchors), db_url=db_url)
    return done.returncode, done.stdout + done.stderr


def anchor(db_url: str, anchors) -> None:
    done = tracker("audit", "anchor", "--anchors", str(anchors), db_url=db_url)
    assert done.returncode == 0, done.stderr
    assert "Audit anchor written" in done.stdout


def reseal_everything(s: Session, ring: Keyring) -> None:
    """What a database owner can do with the code's own functions: re-sign the batch's content
    as it now stands and rebuild the whole chain, signature events included."""
    batch = get_batch(s, "CT-1")
    content = batch_content(s, batch)
    old_to_new: dict[str, tuple[str, str]] = {}
    for sig in signatures.signatures_of(s, "batch", "CT-1"):
        old_seal = sig.seal
        sig.content = signatures.canonical(content)
        sig.content_hash = signatures.content_hash(content)
        sig.key_id, sig.seal = ring.mac(signatures._manifest(sig))
        old_to_new[old_seal] = (sig.content_hash, sig.seal)
        s.add(sig)
    s.flush()
    prev = audit.GENESIS
    for event in s.exec(select(audit.AuditEvent).order_by(audit.AuditEvent.id)).all():
        after = json.loads(event.after) if event.after else None
        if isinstance(after, dict) and after.get("seal") in old_to_new:
            after["content_hash"], after["seal"] = old_to_new[after["seal"]]
            event.after = audit._canonical(after)
        body = audit._body(
            prev,
            event.at,
            event.actor,
            event.action,
            event.entity,
            event.entity_key,
            event.before,
            event.after,
            event.reason,
        )
        event.prev_hash = prev
        event.key_id, event.hash = ring.mac(body)
        s.add(event)
        s.flush()
        prev = event.hash


def test_a_full_reseal_with_the_key_is_caught_by_the_anchors(
    people_engine: Engine, db_url: str, tmp_path
) -> None:
    engine, anchors = people_engine, tmp_path / "anchors"
    released_batch(engine)
    anchor(db_url, anchors)
    status, said = verify(db_url, anchors)
    assert status == 0, said
    assert "holds" in said
    with unit_of_work(engine) as s:
        s.exec(text("UPDATE batch SET product = 'CAR-T (relabelled)' WHERE number = 'CT-1'"))
        reseal_everything(s, keyring())
    status, said = verify(db_url, anchors)
    assert status == 1
    assert "audit chain intact" in said  # the re-seal itself is perfect …
    assert " 0 broken" in said
    assert "history before it was rewritten" in said  # … the anchor is not fooled


def test_a_reseal_without_the_key_breaks_the_chain(people_engine: Engine, db_url: str, tmp_path) -> None:
    engine = people_engine
    released_batch(engine)
    with unit_of_work(engine) as s:
        s.exec(text("UPDATE batch SET product = 'CAR-T (relabelled)' WHERE number = 'CT-1'"))
        reseal_everything(s, keyring_from([b"an attacker's own key, not the site's one!!"]))
    status, said = verify(db_url, tmp_path / "no-anchors")
    assert status == 1
    assert "audit chain BROKEN at event 1" in said
    assert "sealed with another key" in said
    # the step signature and the five role approvals of the people fixture were left alone
    assert "signatures: 6 intact, 3 broken" in said


def test_anchors_are_signed_and_later_history_is_free(people_engine: Engine, db_url: str, tmp_path) -> None:
    anchors = tmp_path / "anchors"
    anchor(db_url, anchors)
    released_batch(people_engine)  # events after the anchor are not rewrites
    assert verify(db_url, anchors)[0] == 0
    (path,) = anchors.glob("anchor-*.json")
    forged = json.loads(path.read_text())
    forged["count"] += 1
    (anchors / "anchor-999999999-forged.json").write_text(json.dumps(forged))
    status, said = verify(db_url, anchors)
    assert status == 1
    assert "forged, or another site's key" in said


def test_raw_sql_flips_of_a_link_decision_and_an_acknowledgement_are_detected(
    people_engine: Engine, db_url: str, tmp_path
) -> None:
    engine = people_engine
    feed(engine, b1_particles(range(10, 13)))
    batch_with_step(engine, "CT-1", "T-B1-BSC", 0, 30)
    with unit_of_work(engine) as s:
        batch = get_batch(s, "CT-1")
        sync_links(s, batch=batch)
        (link,) = links_of(s, batch)
        decide_link(s, signer=as_(engine, "qa1"), link_id=link.id, exposed=False, reason="sash closed")
    excursion_id = list_excursions_ids(engine)[0]
    assert verify(db_url, tmp_path)[0] == 0
    with unit_of_work(engine) as s:
        s.exec(text("UPDATE excursion_link SET status = 'confirmed' WHERE id = :i"), params={"i": link.id})
        s.exec(
            text(
                "UPDATE excursion SET acknowledged_by = 'qa2', ack_level = level, ack_comment = 'ok' WHERE id = :i"
            ),
            params={"i": excursion_id},
        )
    status, said = verify(db_url, tmp_path)
    assert status == 1
    assert f"link {link.id}: decision differs from audit event" in said
    assert f"excursion {excursion_id}: acknowledgement by qa2 has no audit event" in said


def test_a_raw_sql_change_of_an_accounts_person_is_detected(
    people_engine: Engine, db_url: str, tmp_path
) -> None:
    """Separation of duties compares persons: making two accounts one person (or one two) by
    rewriting ``person_id`` in the row must show in ``tracker audit verify``."""
    assert verify(db_url, tmp_path)[0] == 0
    with unit_of_work(people_engine) as s:
        s.exec(text("UPDATE app_user SET person_id = 'E-prod' WHERE username = 'qa2'"))
    status, said = verify(db_url, tmp_path)
    assert status == 1
    assert "user qa2: person differs from audit event" in said


def list_excursions_ids(engine: Engine) -> list[int]:
    with unit_of_work(engine) as s:
        return [e["id"] for e in list_excursions(s)]


def test_a_genuine_acknowledgement_and_role_change_reconcile(
    people_engine: Engine, db_url: str, tmp_path
) -> None:
    engine = people_engine
    feed(engine, b1_particles(range(10, 13)))
    with unit_of_work(engine) as s:
        acknowledge(s, actor=as_(engine, "qa1"), excursion_id=list_excursions(s)[0]["id"], comment="seen")
    assert verify(db_url, tmp_path)[0] == 0
    with unit_of_work(engine) as s:
        s.exec(text("UPDATE app_user SET roles = 'qa,qp' WHERE username = 'qa1'"))
    status, said = verify(db_url, tmp_path)
    assert status == 1
    assert "user qa1: roles or status differ from audit event" in said


@pytest.fixture(autouse=True)
def _process_keyring():
    """The tests above re-seal with the process's keyring; leave it as the suite set it."""
    yield
    use_keyring(None)
