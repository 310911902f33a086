"""``tracker challenge …`` (alarm challenge mode) and ``tracker system-alarms`` (issue 16 items 4, 5)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from tracker.cli.common import AsOpt, DbOpt, JsonOpt, PwStdin, console, engine_for, login_cli, print_json
from tracker.core.db import unit_of_work
from tracker.core.errors import Reason
from tracker.core.i18n import current_lang, t
from tracker.monitoring import challenges
from tracker.monitoring.health import acknowledge_system_alarm, system_alarm_docs

challenge_app = typer.Typer(help="alarm challenge mode: test the alarm chain with one monitor (QA, e-signed)")
CommentOpt = Annotated[str | None, typer.Option(help="a comment kept with the signature")]


def register(app: typer.Typer) -> None:
    app.add_typer(challenge_app, name="challenge")
    app.command("system-alarms")(system_alarms)
    app.command("system-alarm-ack")(system_alarm_ack)


@challenge_app.command("start")
def challenge_start(
    monitor: str,
    minutes: Annotated[float, typer.Option(help="length of the window")],
    reason: Annotated[str, typer.Option(help="why (e.g. OQ alarm test, periodic review)")],
    as_: AsOpt = "",
    password_stdin: PwStdin = False,
    db: DbOpt = None,
) -> None:
    """Start a challenge of MONITOR now (QA, e-signed): its excursions in the window are tests."""
    signer = login_cli(
        db,
        as_,
        password_stdin,
        "qa",
        action=Reason("starting an alarm challenge", "启动报警挑战"),
        signing=True,
    )
    with unit_of_work(engine_for(db)) as session:
        ch = challenges.start_challenge(
            session, signer=signer, monitor_code=monitor, minutes=minutes, reason=reason
        )
        cid, until = ch.id, ch.until
    console.print(f"{t('challenge')} {cid}: {t('challenge_started')} → {until.isoformat()}")


@challenge_app.command("end")
def challenge_end(
    challenge_id: int, as_: AsOpt = "", password_stdin: PwStdin = False, db: DbOpt = None
) -> None:
    """End a running challenge early (QA)."""
    actor = login_cli(
        db, as_, password_stdin, "qa", action=Reason("ending an alarm challenge", "结束报警挑战")
    )
    with unit_of_work(engine_for(db)) as session:
        challenges.end_challenge(session, actor=actor, challenge_id=challenge_id)
    console.print(f"{t('challenge')} {challenge_id}: {t('challenge_ended')}")


@challenge_app.command("list")
def challenge_list(db: DbOpt = None, as_json: JsonOpt = False) -> None:
    """Every challenge, newest first."""
    with unit_of_work(engine_for(db)) as session:
        docs = challenges.challenge_docs(session)
    if as_json:
        print_json(docs)
        return
    table = Table("id", t("monitor"), t("window"), t("reason"), t("excursions"), t("state"))
    for d in docs:
        state = t("running") if d["running"] else t("signed") if d["signed"] else t("challenge_ended")
        table.add_row(
            str(d["id"]),
            d["monitor"],
            f"{d['starts_at']} – {d['ends_at']}",
            d["reason"],
            str(d["excursions"]),
            state,
        )
    console.print(table)


@challenge_app.command("sign")
def challenge_sign(
    challenge_id: int,
    as_: AsOpt = "",
    comment: CommentOpt = None,
    password_stdin: PwStdin = False,
    db: DbOpt = None,
) -> None:
    """QA signs the record of a finished challenge as evidence."""
    signer = login_cli(
        db,
        as_,
        password_stdin,
        "qa",
        action=Reason("signing an alarm challenge record", "签署报警挑战记录"),
        signing=True,
    )
    with unit_of_work(engine_for(db)) as session:
        challenges.sign_record(session, signer=signer, challenge_id=challenge_id, comment=comment)
    console.print(f"{t('challenge')} {challenge_id}: {t('challenge_signed')}")


@challenge_app.command("record")
def challenge_record(
    challenge_id: int,
    db: DbOpt = None,
    pdf: Annotated[Path | None, typer.Option(help="write the signed record as PDF here")] = None,
    out: Annotated[Path | None, typer.Option(help="write the signed record as JSON here")] = None,
    lang: Annotated[str | None, typer.Option(help="zh-CN or en (default TRACKER_LANG)")] = None,
) -> None:
    """The signed record (JSON on stdout, or --out/--pdf), and whether it matches its signature."""
    with unit_of_work(engine_for(db)) as session:
        record, check = challenges.signed_record(session, challenge_id)
        document = {
            **record,
            "signature": {"id": check.signature.id, "intact": check.intact, "problem": check.problem},
        }
        if pdf is not None:
            from tracker.reports.challenge import render_pdf

            pdf.write_bytes(render_pdf(record, check, lang=lang or current_lang()))
    if out is not None:
        out.write_text(json.dumps(document, ensure_ascii=False, indent=2), encoding="utf-8")
    if out is None and pdf is None:
        print_json(document)
    else:
        console.print(t("record_intact") if check.intact else t("record_broken"))
    if not check.intact:
        raise typer.Exit(1)


def system_alarms(
    db: DbOpt = None,
    as_json: JsonOpt = False,
    open_only: Annotated[bool, typer.Option("--open", help="only those open now")] = False,
) -> None:
    """System alarms: ingester, broker, database, notification targets, quarantine, clocks, calibration."""
    with unit_of_work(engine_for(db)) as session:
        docs = system_alarm_docs(session, open_only=open_only)
    if as_json:
        print_json(docs)
        return
    en = current_lang() == "en"
    table = Table("id", t("system_alarm"), t("subject"), t("level"), t("state"), t("started"), t("detail"))
    for d in docs:
        state = d["status"] + (f" · {t('acknowledged')}" if d["acknowledged_by"] else "")
        table.add_row(
            str(d["id"]),
            d["what"] if en else d["what_zh"],
            d["subject"],
            t(d["level"]),
            state,
            d["started_at"],
            d["detail"][:80],
        )
    console.print(table)


def system_alarm_ack(
    alarm_id: int,
    comment: Annotated[str, typer.Option(help="what was seen and done")],
    as_: AsOpt = "",
    password_stdin: PwStdin = False,
    db: DbOpt = None,
) -> None:
    """Acknowledge a system alarm (QA or admin): escalation and reminders stop."""
    actor = login_cli(
        db, as_, password_stdin, "qa", "admin", action=Reason("acknowledging a system alarm", "确认系统报警")
    )
    with unit_of_work(engine_for(db)) as session:
        acknowledge_system_alarm(session, actor=actor, alarm_id=alarm_id, comment=comment)
    console.print(f"{t('system_alarm')} {alarm_id}: {t('acknowledged')}")
