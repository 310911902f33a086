"""Issue 20: exchange packages (schemas, digests, signature, chaining), pseudonymised donor and
patient identifiers with audited reads and reveals, the classification table, and validated
backup and restore. Runs on both backends (TRACKER_TEST_BACKEND)."""

from __future__ import annotations

import json
import shutil
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlmodel import SQLModel, select

from tests.batch_scenes import NUMBER, signed_off
from tests.factories import T0, add_person, as_
from tracker.core import audit
from tracker.core.backup import create_backup, restore_backup
from tracker.core.classification import classified_fields, markdown_table
from tracker.core.db import unit_of_work
from tracker.core.errors import InvalidInputError, PermissionDeniedError
from tracker.core.pseudonyms import is_pseudonym, pseudonym
from tracker.core.timeutil import utcnow
from tracker.exchange.package import build_package
from tracker.exchange.verify import read_package, verify_package, verify_series
from tracker.facility.models import get_site
from tracker.quality.batches.identity import batches_of_donor, read_report, record_read, reveal
from tracker.quality.batches.models import Batch
from tracker.quality.batches.release import signature_checks
from tracker.quality.batches.steps import get_batch
from tracker.quality.batches.views import batch_report
from tracker.quality.deviations import open_deviation

CLEAR_DONOR = f"D-{NUMBER}"  # what tests.test_linking_review.batch_with_step types


@pytest.fixture
def scene(people_engine: Engine) -> Engine:
    """A released batch with a data gap QA judged, signatures, a deviation whose text names the
    donor in clear (as people do), and an identity steward."""
    signed_off(people_engine)
    with unit_of_work(people_engine) as s:
        open_deviation(
            s,
            actor=as_(people_engine, "qa1"),
            site=get_site(s),
            title="label check",
            classification="minor",
            category="documentation",
            description=f"bag label of donor {CLEAR_DONOR} smudged; checked against the chain of identity",
            now=T0 + timedelta(hours=2),
        )
    add_person(people_engine, "steward", "身份查阅 周敏 Zhou Min", ["identity_reveal", "qa"])
    return people_engine


def cut(engine: Engine, out: Path, *, start=None, end=None, previous=None, clear=False, reason=None) -> Path:
    with unit_of_work(engine) as s:
        built = build_package(
            s,
            actor=as_(engine, "steward" if clear else "qa1"),
            start=start,
            end=end or utcnow(),
            receiver="Nansha cell data platform",
            previous=previous,
            readings=True,
            clear=clear,
            reason=reason,
        )
    return built.write(out)


# --- the package ------------------------------------------------------------------------------


def test_a_package_validates_and_any_changed_byte_fails(scene: Engine, tmp_path: Path) -> None:
    package = cut(scene, tmp_path / "p1", start=T0 - timedelta(days=1))
    check = verify_package(package)
    assert check.ok, [str(p) for p in check.problems]
    for kind in ("facility", "batch", "signature", "deviation", "excursion", "rollup", "reading"):
        assert check.records[kind] >= 1, kind
    manifest = json.loads((package / "manifest.json").read_text())
    assert manifest["audit"]["anchor"]["head_hash"] == manifest["audit"]["head_hash"]
    with unit_of_work(scene) as s:  # the export is in the trail with every file's digest
        event = s.exec(select(audit.AuditEvent).where(audit.AuditEvent.action == "exchange.export")).one()
        assert json.loads(event.after)["files"]["records/batch.jsonl"] == next(
            f["sha256"] for f in manifest["files"] if f["path"] == "records/batch.jsonl"
        )
    for name in read_package(package):
        copy = tmp_path / f"tampered-{name.replace('/', '_')}"
        shutil.copytree(package, copy)
        target = copy / name
        data = bytearray(target.read_bytes())
        data[len(data) // 2] ^= 0x01
        target.write_bytes(bytes(data))
        assert not verify_package(copy).ok, name
    extra = tmp_path / "extra"
    shutil.copytree(package, extra)
    (extra / "records" / "note.txt").write_text("added")
    assert not verify_package(extra).ok


def test_a_zip_package_verifies_and_a_foreign_key_does_not(scene: Engine, tmp_path: Path) -> None:
    from tracker.core.keys import keyring, keyring_from, use_keyring

    package = cut(scene, tmp_path / "p.zip", start=T0 - timedelta(days=1))
    assert verify_package(package).ok
    site_ring = keyring()
    use_keyring(keyring_from([b"another site's key, thirty-two chars or more"]))
    try:
        assert not verify_package(package).ok
    finally:
        use_keyring(site_ring)


def test_incremental_packages_chain_and_a_dropped_record_or_package_is_found(
    scene: Engine, tmp_path: Path
) -> None:
    first = cut(scene, tmp_path / "p1", start=T0 - timedelta(days=1), end=T0 + timedelta(minutes=30))
    second = cut(scene, tmp_path / "p2", previous=first, end=T0 + timedelta(hours=3))
    third = cut(scene, tmp_path / "p3", previous=second)
    assert all(c.ok for c in verify_series([first, second, third]))
    assert (
        json.loads((second / "manifest.json").read_text())["window"]["from"]
        == json.loads((first / "manifest.json").read_text())["window"]["to"]
    )
    # a package left out between two others
    checks = verify_series([first, third])
    assert checks[0].ok
    assert not checks[1].ok
    assert "does not continue" in str(checks[1].problems[0])
    # a record dropped from the second package (even with its digest fixed in the manifest)
    dropped = tmp_path / "p2-dropped"
    shutil.copytree(second, dropped)
    rollups = dropped / "records" / "reading.jsonl"
    lines = rollups.read_text().splitlines(keepends=True)
    assert len(lines) >= 2
    rollups.write_text("".join(lines[1:]))
    assert not verify_series([first, dropped])[1].ok
    manifest = json.loads((dropped / "manifest.json").read_text())
    import hashlib

    for entry in manifest["files"]:
        if entry["path"] == "records/reading.jsonl":
            entry.update(
                sha256=hashlib.sha256(rollups.read_bytes()).hexdigest(), bytes=rollups.stat().st_size
            )
            entry["records"] -= 1
    (dropped / "manifest.json").write_text(json.dumps(manifest))
    problems = [str(p) for p in verify_series([first, dropped])[1].problems]
    assert any("signature" in p for p in problems)
    # and the next package no longer continues the rewritten one
    assert not verify_series([first, dropped, third])[2].ok


def test_an_incremental_package_must_start_where_the_last_ended(scene: Engine, tmp_path: Path) -> None:
    first = cut(scene, tmp_path / "p1", start=T0 - timedelta(days=1), end=T0)
    with pytest.raises(InvalidInputError, match="starts where the previous one ended"):
        cut(scene, tmp_path / "p2", start=T0 + timedelta(hours=1), previous=first)


def _all_bytes(package: Path) -> bytes:
    return b"\n".join(read_package(package).values())


def test_a_package_for_an_unauthorised_receiver_holds_no_clear_donor_id(
    scene: Engine, tmp_path: Path
) -> None:
    package = cut(scene, tmp_path / "p", start=T0 - timedelta(days=1))
    everything = _all_bytes(package)
    assert CLEAR_DONOR.encode() not in everything  # grep the package
    ref = pseudonym("donor", CLEAR_DONOR)
    batches = [json.loads(x) for x in (package / "records" / "batch.jsonl").read_text().splitlines()]
    assert [(b["donor"], b["identifiers"]) for b in batches] == [(ref, "pseudonym")]
    deviation = json.loads((package / "records" / "deviation.jsonl").read_text().splitlines()[0])
    assert ref in deviation["description"]  # the free text names the pseudonym instead


def test_clear_identifiers_leave_only_for_an_authorised_receiver_with_a_reason(
    scene: Engine, tmp_path: Path
) -> None:
    with pytest.raises(PermissionDeniedError), unit_of_work(scene) as s:
        build_package(
            s,
            actor=as_(scene, "qa1"),
            start=T0 - timedelta(days=1),
            end=utcnow(),
            receiver="x",
            clear=True,
            reason="treating physician needs the donor number",
        )
    with pytest.raises(InvalidInputError, match="reason"):
        cut(scene, tmp_path / "p0", start=T0 - timedelta(days=1), clear=True, reason="")
    package = cut(
        scene,
        tmp_path / "p",
        start=T0 - timedelta(days=1),
        clear=True,
        reason="hospital receiving the product",
    )
    assert verify_package(package).ok
    assert CLEAR_DONOR.encode() in _all_bytes(package)
    with unit_of_work(scene) as s:
        rows = read_report(s, start=T0, end=utcnow() + timedelta(minutes=1), donor=CLEAR_DONOR)
    assert ("steward", "identity.reveal", "export") in {(r["actor"], r["action"], r["via"]) for r in rows}


# --- pseudonyms, reveal, audited reads ---------------------------------------------------------


def test_identifiers_are_stored_as_pseudonyms_and_signatures_still_verify(scene: Engine) -> None:
    with unit_of_work(scene) as s:
        batch = get_batch(s, NUMBER)
        assert batch.donor_id == pseudonym("donor", CLEAR_DONOR)
        assert is_pseudonym("donor", batch.donor_id)
        assert CLEAR_DONOR not in (batch.donor_enc or "")
        assert all(c.intact for c in signature_checks(s, batch))
        created = s.exec(select(audit.AuditEvent).where(audit.AuditEvent.action == "batch.create")).first()
        assert CLEAR_DONOR not in created.after
        assert [b.number for b in batches_of_donor(s, f"  {CLEAR_DONOR} ")] == [NUMBER]
        assert batches_of_donor(s, "D-unknown") == []


@pytest.mark.parametrize("role_user", ["viewer", "prod"])
def test_viewers_and_production_see_pseudonyms_and_cannot_reveal(scene: Engine, role_user: str) -> None:
    if role_user == "viewer":
        add_person(scene, "viewer", "只读 孙丽 Sun Li", ["viewer"])
    with unit_of_work(scene) as s:
        report = batch_report(s, get_batch(s, NUMBER))
        assert CLEAR_DONOR not in json.dumps(report, ensure_ascii=False)
        assert report["donor_id"] == pseudonym("donor", CLEAR_DONOR)
    with pytest.raises(PermissionDeniedError, match="identity_reveal"), unit_of_work(scene) as s:
        reveal(
            s, actor=as_(scene, role_user), batch=get_batch(s, NUMBER), reason="curious about it", via="cli"
        )


def test_a_reveal_needs_the_permission_and_a_reason_and_is_audited(scene: Engine) -> None:
    with pytest.raises(InvalidInputError, match="reason"), unit_of_work(scene) as s:
        reveal(s, actor=as_(scene, "steward"), batch=get_batch(s, NUMBER), reason="  why ", via="cli")
    with unit_of_work(scene) as s:
        shown = reveal(
            s,
            actor=as_(scene, "steward"),
            batch=get_batch(s, NUMBER),
            reason="donor recall, notice 2026-17",
            via="cli",
        )
    assert shown["donor_id"] == CLEAR_DONOR
    with unit_of_work(scene) as s:
        event = s.exec(select(audit.AuditEvent).where(audit.AuditEvent.action == "identity.reveal")).one()
        assert (event.actor, event.entity_key, event.reason) == (
            "steward",
            NUMBER,
            "donor recall, notice 2026-17",
        )
        assert CLEAR_DONOR not in event.after  # the trail names the pseudonym, not the value shown
        assert audit.check_chain(s).intact


def test_the_read_report_lists_who_read_which_donor(scene: Engine) -> None:
    with unit_of_work(scene) as s:
        batch = get_batch(s, NUMBER)
        record_read(s, actor="prod", via="page", batches=[batch])
        record_read(s, actor="qa2", via="api", batches=s.exec(select(Batch)).all())
    with unit_of_work(scene) as s:
        rows = read_report(
            s, start=utcnow() - timedelta(hours=1), end=utcnow() + timedelta(minutes=1), donor=CLEAR_DONOR
        )
        assert [(r["actor"], r["via"], r["batches"]) for r in rows] == [
            ("prod", "page", [NUMBER]),
            ("qa2", "api", [NUMBER]),
        ]
        assert read_report(s, start=utcnow() - timedelta(hours=1), end=utcnow(), donor="D-nobody") == []
        with pytest.raises(InvalidInputError):
            read_report(s, start=utcnow(), end=utcnow() - timedelta(hours=1))


# --- the web faces ------------------------------------------------------------------------------


def test_web_pages_and_api_show_pseudonyms_log_reads_and_reveal_with_reason(
    web_app, web_engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.test_linking_review import batch_with_step
    from tests.web_helpers import browser

    monkeypatch.setattr("tracker.web.pages.exchange.anchor_directory", lambda: tmp_path / "anchors")
    batch_with_step(web_engine, "CT-20", "T-B1", 0, 10)
    clear = "D-CT-20"
    for user in ("viewer1", "prod"):
        client, _ = browser(web_app, user)
        page = client.get("/batches/CT-20")
        assert page.status_code == 200
        assert clear not in page.text
        assert pseudonym("donor", clear) in page.text
        assert clear not in client.get("/api/v1/batches/CT-20").text
        listed = client.get("/batches", params={"donor": clear})
        assert "CT-20" in listed.text
        assert clear not in listed.text.replace(f'value="{clear}"', "")
        refused = client.post("/batches/CT-20/reveal", data={"reason": "need it for the recall"})
        assert refused.status_code in (403, 303)
    steward, token = browser(web_app, "steward1")
    short = steward.post("/batches/CT-20/reveal", data={"reason": "why", "csrf_token": token})
    assert clear not in short.text
    shown = steward.post(
        "/batches/CT-20/reveal", data={"reason": "donor recall notice 17", "csrf_token": token}
    )
    assert shown.status_code == 200
    assert clear in shown.text
    assert shown.headers["cache-control"] == "no-store"
    qa, token = browser(web_app, "qa1")
    report = qa.get("/reads", params={"donor": clear})
    assert report.status_code == 200
    assert "viewer1" in report.text
    assert "prod" in report.text
    assert "steward1" in report.text
    package = qa.post(
        "/exchange/package",
        data={"start": "2026-11-19", "end": "2026-11-21", "receiver": "platform", "csrf_token": token},
    )
    assert package.status_code == 200
    assert package.headers["content-type"] == "application/zip"
    assert clear.encode() not in package.content
    assert len(list((tmp_path / "anchors").glob("anchor-*.json"))) == 1  # written after the commit


def test_web_refuses_bad_input_with_a_clear_error(web_app) -> None:
    from tests.web_helpers import browser

    qa, _token = browser(web_app, "qa1")
    bad = qa.get("/reads", params={"start": "not-a-date"})
    assert bad.status_code in (400, 422)
    api = qa.get("/api/v1/reads", params={"from": "2026-11-20T00:00:00Z", "to": "yesterday"})
    assert api.status_code in (400, 422)
    assert "detail_zh" in api.json()


# --- classification ---------------------------------------------------------------------------


def test_the_data_protection_table_is_generated_from_the_tags() -> None:
    import tracker.models  # noqa: F401  (every table)

    fields = classified_fields(SQLModel.metadata)
    assert {(f.table, f.column) for f in fields} >= {("batch", "donor_id"), ("batch", "patient_id")}
    doc = (Path(__file__).parent.parent / "docs" / "data-protection.md").read_text(encoding="utf-8")
    table = markdown_table(fields)
    assert table in doc, "regenerate the table: tracker identity classes (docs/data-protection.md)"


# --- backup and restore -----------------------------------------------------------------------


def test_a_backup_restores_into_a_new_database_and_verifies_identical(
    scene: Engine, db_url: str, databases, tmp_path: Path
) -> None:
    with unit_of_work(scene) as s:
        from tracker.core.anchors import take_anchor

        anchor = take_anchor(s, actor="test")
    anchor.write(tmp_path / "anchors")
    manifest = create_backup(db_url, tmp_path / "backup", actor="admin")
    assert manifest["audit"]["intact"]
    assert manifest["row_counts"]["batch"] == 1
    target = databases.empty()
    try:
        check = restore_backup(tmp_path / "backup", target, actor="admin", anchor_dir=tmp_path / "anchors")
        assert check.ok, [str(p) for p in check.problems]
        assert check.anchors_checked == 1
        from tracker.core.db import get_engine

        with unit_of_work(get_engine(target)) as s:
            actions = [
                e.action
                for e in s.exec(select(audit.AuditEvent).order_by(audit.AuditEvent.id.desc()).limit(1))
            ]
            assert actions == ["backup.restore"]
            assert audit.check_chain(s).intact
        with unit_of_work(scene) as s:  # the backup is in the live trail
            assert s.exec(select(audit.AuditEvent).where(audit.AuditEvent.action == "backup.create")).one()
    finally:
        databases.drop(target)


def test_a_damaged_backup_or_a_changed_copy_fails_the_restore(
    scene: Engine, db_url: str, databases, tmp_path: Path
) -> None:
    manifest = create_backup(db_url, tmp_path / "backup", actor="admin")
    damaged = tmp_path / "damaged"
    shutil.copytree(tmp_path / "backup", damaged)
    copy = damaged / manifest["file"]["path"]
    data = bytearray(copy.read_bytes())
    data[-100] ^= 0x01
    copy.write_bytes(bytes(data))
    target = databases.empty()
    try:
        check = restore_backup(damaged, target, actor="admin")
        assert not check.ok
        assert "SHA-256" in str(check.problems[0])
    finally:
        databases.drop(target)
    # a manifest edited to hide a missing row: its signature no longer matches
    edited = tmp_path / "edited"
    shutil.copytree(tmp_path / "backup", edited)
    m = json.loads((edited / "manifest.json").read_text())
    m["row_counts"]["batch"] = 2
    (edited / "manifest.json").write_text(json.dumps(m))
    target = databases.empty()
    try:
        assert not restore_backup(edited, target, actor="admin").ok
    finally:
        databases.drop(target)


def test_the_migration_protects_clear_identifiers(databases, tmp_path: Path) -> None:
    from tracker.core.db import get_engine
    from tracker.core.migrate import upgrade

    url = databases.empty()
    try:
        upgrade(url, "0023")
        engine = get_engine(url)
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO site (code, name, name_en, timezone, limit_set, revision, file_sha256, "
                    "rolling_volume_m3, recovery_s, rolling_window_s, qa_reviewer_may_release, updated_at) "
                    "VALUES ('S', 'S', '', 'Asia/Shanghai', 'CN-GMP-2010', 0, '', 1, 900, 60, false, :t)"
                ),
                {"t": T0},
            )
            conn.execute(
                text(
                    "INSERT INTO batch (site_id, number, product, donor_id, patient_id, status, created_at, "
                    "created_by, updated_at, env_hash) SELECT id, 'B-1', 'P', 'DONOR-0042', 'PAT 7', "
                    "'in_progress', :t, 'op', :t, '' FROM site"
                ),
                {"t": T0},
            )
        upgrade(url)
        with unit_of_work(engine) as s:
            batch = get_batch(s, "B-1")
            assert batch.donor_id == pseudonym("donor", "DONOR-0042")
            assert batch.patient_id == pseudonym("patient", "PAT 7")
            shown = reveal(
                s,
                actor=as_identity_steward(),
                batch=batch,
                reason="checking the migration",
                via="cli",
            )
            assert (shown["donor_id"], shown["patient_id"]) == ("DONOR-0042", "PAT 7")
    finally:
        databases.drop(url)


def as_identity_steward():
    from tracker.identity.users import Authenticated

    return Authenticated(0, "steward", "Steward", frozenset({"identity_reveal"}), utcnow(), enrolled=True)


# --- the commands -----------------------------------------------------------------------------


def test_the_commands_export_verify_back_up_restore_and_report(
    scene: Engine, db_url: str, databases, tmp_path: Path
) -> None:
    from tests.factories import PASSWORD
    from tests.test_cli import tracker

    pw = PASSWORD + "\n"
    anchors = str(tmp_path / "anchors")
    window = ("--from", "2026-11-19T00:00:00+08:00", "--to", "2026-11-21T00:00:00+08:00")
    out = tmp_path / "pkg.zip"
    cut_ = tracker(
        "export", *window, "--receiver", "platform", "--out", str(out), "--anchors", anchors,
        "--as", "qa1", "--password-stdin", db_url=db_url, stdin=pw,
    )  # fmt: skip
    assert cut_.returncode == 0, cut_.stdout + cut_.stderr
    assert tracker("export", "verify", str(out), db_url=db_url).returncode == 0
    tampered = tmp_path / "tampered.zip"
    data = bytearray(out.read_bytes())
    data[len(data) // 3] ^= 0x01
    tampered.write_bytes(bytes(data))
    refused = tracker("export", "verify", str(tampered), db_url=db_url, lang="zh-CN")
    assert refused.returncode == 1
    assert "Traceback" not in refused.stdout + refused.stderr
    short = tracker(
        "identity", "reveal", NUMBER, "--reason", "why", "--as", "steward", "--password-stdin",
        db_url=db_url, stdin=pw,
    )  # fmt: skip
    assert short.returncode != 0
    assert "reason" in short.stdout + short.stderr
    assert "Traceback" not in short.stdout + short.stderr
    reads = tracker(
        "identity", "reads", "--from", "2026-01-01T00:00:00Z", "--donor", CLEAR_DONOR, "--json",
        "--as", "qa1", "--password-stdin", db_url=db_url, stdin=pw,
    )  # fmt: skip
    assert reads.returncode == 0, reads.stdout + reads.stderr
    assert {(r["actor"], r["via"]) for r in json.loads(reads.stdout)} >= {("qa1", "export")}
    backup = tracker("backup", str(tmp_path / "backup"), db_url=db_url)
    assert backup.returncode == 0, backup.stdout + backup.stderr
    target = databases.empty()
    try:
        restored = tracker(
            "restore", str(tmp_path / "backup"), "--to", target, "--anchors", anchors, db_url=db_url
        )
        assert restored.returncode == 0, restored.stdout + restored.stderr
        assert "1 anchors checked" in restored.stdout
    finally:
        databases.drop(target)
