"""The quality commands as a QA team would script them: accounts, a batch, signatures, audit."""

from __future__ import annotations

import json

from sqlalchemy import Engine, text

from tests.factories import PASSWORD, T0, TEMPORARY_PASSWORD, iso, minutes
from tests.test_cli import tracker


def run(*args: str, db_url: str, stdin: str = "", lang: str = "en"):
    return tracker(*args, db_url=db_url, stdin=stdin, lang=lang)


def ok(*args: str, db_url: str, stdin: str = "") -> str:
    result = run(*args, db_url=db_url, stdin=stdin)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_accounts_batch_and_signatures_from_the_command_line(facility_engine: Engine, db_url: str) -> None:
    pw = PASSWORD + "\n"
    # the first admin: explicit, password typed twice (confirmation) — here through stdin
    ok(
        "user",
        "create",
        "admin",
        "--name",
        "Admin",
        "--person",
        "E-0",
        "--role",
        "admin",
        "--password-stdin",
        db_url=db_url,
        stdin=pw,
    )
    refused = run(
        "user",
        "create",
        "x",
        "--name",
        "X",
        "--person",
        "E-X",
        "--role",
        "qa",
        "--password-stdin",
        db_url=db_url,
        stdin=pw,
    )
    assert refused.returncode == 2
    assert "log in as an admin" in refused.stderr
    for name, roles in (("qa1", ["qa"]), ("op1", ["operator"]), ("prod", ["production_head"])):
        role_args = [a for r in roles for a in ("--role", r)]
        out = ok(
            "user",
            "create",
            name,
            "--name",
            f"Person {name}",
            "--person",
            f"E-{name}",
            *role_args,
            "--as",
            "admin",
            "--password-stdin",
            db_url=db_url,
            stdin=pw + TEMPORARY_PASSWORD + "\n",
        )
        assert "awaiting QA" in out  # a signing role is asked for, not given
    requests = {r["username"]: r["id"] for r in json.loads(ok("user", "requests", "--json", db_url=db_url))}
    # installation: the admin approves the first QA account (nobody from QA exists yet) …
    ok(
        "user",
        "bootstrap-qa",
        str(requests["qa1"]),
        "--as",
        "admin",
        "--password-stdin",
        db_url=db_url,
        stdin=pw,
    )
    # … whose owner enrols a password of their own before the admin as witness
    ok(
        "user",
        "enrol",
        "--as",
        "qa1",
        "--witness",
        "admin",
        "--password-stdin",
        db_url=db_url,
        stdin=TEMPORARY_PASSWORD + "\n" + pw + pw,
    )
    # from then on QA approves (signed) and witnesses; the admin can no longer do either
    again = run(
        "user",
        "bootstrap-qa",
        str(requests["op1"]),
        "--as",
        "admin",
        "--password-stdin",
        db_url=db_url,
        stdin=pw,
    )
    assert again.returncode != 0
    assert "first QA account" in again.stderr
    for name in ("op1", "prod"):
        ok(
            "user",
            "approve-roles",
            str(requests[name]),
            "--as",
            "qa1",
            "--password-stdin",
            db_url=db_url,
            stdin=pw,
        )
        ok(
            "user",
            "enrol",
            "--as",
            name,
            "--witness",
            "qa1",
            "--password-stdin",
            db_url=db_url,
            stdin=TEMPORARY_PASSWORD + "\n" + pw + pw,
        )
    users = json.loads(ok("user", "list", "--json", db_url=db_url))
    assert [(u["username"], u["person"], u["roles"], u["enrolled"]) for u in users] == [
        ("admin", "E-0", "admin", False),
        ("op1", "E-op1", "operator", True),
        ("prod", "E-prod", "production_head", True),
        ("qa1", "E-qa1", "qa", True),
    ]

    ok(
        "batch",
        "create",
        "CT-9",
        "--product",
        "CAR-T",
        "--donor",
        "D-9",
        "--as",
        "op1",
        "--password-stdin",
        db_url=db_url,
        stdin=pw,
    )
    out = ok(
        "step",
        "start",
        "CT-9",
        "--name",
        "seeding",
        "--room",
        "T-B1-BSC",
        "--open",
        "--at",
        iso(T0),
        "--as",
        "op1",
        "--password-stdin",
        db_url=db_url,
        stdin=pw,
    )
    step_id = out.split()[1].rstrip(":")
    env_password = tracker("step", "end", step_id, "--as", "op1", db_url=db_url, password=PASSWORD)
    assert env_password.returncode != 0  # TRACKER_PASSWORD never signs: it asked for the password
    wrong = run(
        "step",
        "end",
        step_id,
        "--at",
        iso(T0 + minutes(40)),
        "--as",
        "op1",
        "--password-stdin",
        db_url=db_url,
        stdin="wrong password!!\n",
    )
    assert wrong.returncode == 2
    assert "wrong user name or password" in wrong.stderr  # the same words for every failure
    ok(
        "step",
        "end",
        step_id,
        "--at",
        iso(T0 + minutes(40)),
        "--as",
        "op1",
        "--password-stdin",
        db_url=db_url,
        stdin=pw,
    )
    ok("batch", "complete", "CT-9", "--as", "op1", "--password-stdin", db_url=db_url, stdin=pw)
    ok("batch", "sign", "CT-9", "--as", "prod", "--password-stdin", db_url=db_url, stdin=pw)
    # the BSC counter sent nothing during the step (issue 14 item 5): QA assesses the stretch
    gap = "coverage:T-BSC-PC:2026-11-20T00:00:00Z"
    shown = json.loads(ok("batch", "show", "CT-9", "--json", db_url=db_url))
    assert shown["gate"] == [
        f"particle monitor T-BSC-PC in room T-B1-BSC sent nothing during step {step_id} "
        f"(2026-11-20T00:00:00Z – 2026-11-20T00:40:00Z): assess {gap}"
    ]
    ok(
        "batch",
        "assess",
        "CT-9",
        "--item",
        gap,
        "--not-exposed",
        "--reason",
        "counter under repair; settle plates clean",
        "--as",
        "qa1",
        "--password-stdin",
        db_url=db_url,
        stdin=pw,
    )
    shown = json.loads(ok("batch", "show", "CT-9", "--json", db_url=db_url))
    assert shown["status"] == "production_signed"
    assert shown["flags"] == []
    assert [s["meaning"] for s in shown["signatures"]] == ["approved", "performed"]
    assert shown["gate"] == []
    human = run("batch", "show", "CT-9", db_url=db_url, lang="zh-CN").stdout
    assert "生产负责人已签" in human
    assert "签名有效" in human

    # the batch's two and the two role approvals (op1, prod)
    assert "signatures: 4 intact, 0 broken" in ok("audit", "verify", db_url=db_url)
    with facility_engine.begin() as conn:  # behind the application's back
        conn.execute(text("UPDATE process_step SET open_processing = :no"), {"no": False})
    tampered = run("audit", "verify", db_url=db_url)
    assert tampered.returncode == 1
    assert "audit chain intact" in tampered.stdout
    assert "signature 4 BROKEN (batch CT-9, approved by prod)" in tampered.stdout.replace("\n", " ")
    assert "signature 3 BROKEN (process_step" in tampered.stdout
    review = run("batch", "review", "CT-9", "--as", "qa1", "--password-stdin", db_url=db_url, stdin=pw)
    assert review.returncode == 2
    assert "QA review of batch CT-9 refused" in review.stderr
    assert "is broken: the record changed after it was signed" in review.stderr


def test_help_lists_the_quality_commands(db_url: str) -> None:
    out = tracker("--help", db_url=db_url).stdout
    for command in ("user", "batch", "step", "link", "deviation", "capa"):
        assert command in out
