"""``tracker export|backup|restore|identity``: data leaving the site, backups, donor identities.

Thin commands over :mod:`tracker.exchange`, :mod:`tracker.core.backup` and
:mod:`tracker.quality.batches.identity` (docs/exchange.md, docs/operations.md,
docs/data-protection.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from tracker.cli.common import (
    AsOpt,
    DbOpt,
    JsonOpt,
    PwStdin,
    cli_reader,
    console,
    db_url,
    engine_for,
    login_cli,
    print_json,
)
from tracker.core.db import unit_of_work
from tracker.core.errors import InvalidInputError, Reason, in_language
from tracker.core.i18n import current_lang, t
from tracker.core.settings import get_settings
from tracker.core.timeutil import iso_utc, parse_instant, utcnow

export_app = typer.Typer(
    help="Exchange packages (数据交换包): cut one for a receiver, or verify packages.",
    invoke_without_command=True,
)
identity_app = typer.Typer(
    help="Donor and patient identities (供者/患者身份): reveal, search, who read what.", no_args_is_help=True
)

AnchorsOpt = Annotated[
    Path | None,
    typer.Option(
        "--anchors", help="anchor directory (default TRACKER_AUDIT_ANCHOR_DIR or <data dir>/anchors)"
    ),
]


def _anchor_dir(directory: Path | None) -> Path:
    settings = get_settings()
    return directory or settings.audit_anchor_dir or settings.data_dir / "anchors"


def _instant(text: str | None, what: str) -> object:
    if text is None:
        return None
    try:
        return parse_instant(text)
    except ValueError:
        raise InvalidInputError(
            Reason(
                f"{what}: {text!r} is not an ISO 8601 time with an offset (e.g. 2026-11-01T00:00+08:00)",
                f"{what}：{text!r} 不是带时区的 ISO 8601 时间（例如 2026-11-01T00:00+08:00）",
            )
        ) from None


@export_app.callback()
def export(
    ctx: typer.Context,
    site: Annotated[str | None, typer.Option("--site", help="site code (when several)")] = None,
    start: Annotated[str | None, typer.Option("--from", help="window start, ISO 8601 with offset")] = None,
    end: Annotated[str | None, typer.Option("--to", help="window end (default now)")] = None,
    receiver: Annotated[str, typer.Option(help="who the package is for")] = "",
    out: Annotated[
        Path | None, typer.Option("--out", help="package directory, or a path ending in .zip")
    ] = None,
    previous: Annotated[
        Path | None, typer.Option("--previous", help="the package this one continues (incremental)")
    ] = None,
    readings: Annotated[bool, typer.Option("--readings", help="include raw readings")] = False,
    clear: Annotated[
        bool, typer.Option("--clear-identifiers", help="donor/patient IDs in clear (identity_reveal, reason)")
    ] = False,
    reason: Annotated[str | None, typer.Option(help="why clear identifiers leave the site")] = None,
    anchors: AnchorsOpt = None,
    as_: AsOpt = "",
    password_stdin: PwStdin = False,
    db: DbOpt = None,
) -> None:
    """Cut an exchange package of --from … --to for --receiver (QA; docs/exchange.md)."""
    if ctx.invoked_subcommand is not None:
        return
    from tracker.exchange.package import build_package

    if out is None:
        raise typer.BadParameter("give --out DIR (or --out FILE.zip)")
    who = login_cli(db, as_, password_stdin)
    with unit_of_work(engine_for(db)) as session:
        built = build_package(
            session,
            actor=who,
            start=_instant(start, "--from"),
            end=_instant(end, "--to") or utcnow(),
            receiver=receiver,
            site_code=site,
            previous=previous,
            readings=readings,
            clear=clear,
            reason=reason,
        )
    path = built.write(out)
    anchor_path = built.anchor.write(_anchor_dir(anchors))
    m = built.manifest
    console.print(
        f"{t('package_written')}: {path} · #{m['sequence']} · {m['window']['from']} → {m['window']['to']} · "
        f"{t('identifiers')}: {t(m['receiver']['identifiers'])}"
    )
    console.print(f"{t('anchor_written')}: {anchor_path}")


@export_app.command("verify")
def export_verify(
    packages: Annotated[list[Path], typer.Argument(help="packages in order (each continues the one before)")],
    json_out: JsonOpt = False,
) -> None:
    """Check packages without the database: schemas, digests, signature, chaining."""
    from tracker.exchange.verify import verify_series

    checks = verify_series(packages)
    lang = current_lang()
    if json_out:
        print_json(
            [
                {
                    "package": c.source,
                    "ok": c.ok,
                    "records": c.records,
                    "problems": [in_language(p, lang) for p in c.problems],
                }
                for c in checks
            ]
        )
    else:
        for c in checks:
            if c.ok:
                counts = ", ".join(f"{k} {v}" for k, v in c.records.items())
                console.print(f"{c.source}: {t('package_ok')} ({counts})")
            else:
                console.print(f"[red]{c.source}: {t('package_bad')}[/red]")
                for p in c.problems:
                    console.print(f"  [red]{in_language(p, lang)}[/red]")
    if not all(c.ok for c in checks):
        raise typer.Exit(1)


def backup(
    out: Annotated[Path, typer.Argument(help="new directory for the backup")],
    as_: AsOpt = "",
    password_stdin: PwStdin = False,
    db: DbOpt = None,
) -> None:
    """Write a consistent backup (SQLite online backup / pg_dump) with a signed manifest; audited."""
    from tracker.core.backup import create_backup

    actor = (
        login_cli(db, as_, password_stdin, "admin", "qa", action=Reason("a backup", "备份")).username
        if as_
        else "system:backup"
    )
    manifest = create_backup(db_url(db), out, actor=actor)
    console.print(
        f"{t('backup_written')}: {out} · {manifest['file']['path']} sha256 {manifest['file']['sha256'][:16]}… · "
        f"{manifest['audit']['count']} {t('audit_events')} · {t('migration')} {manifest['migration']}"
    )


def restore(
    backup_dir: Annotated[Path, typer.Argument(help="the backup directory")],
    to: Annotated[str, typer.Option("--to", help="URL of the NEW database to restore into")],
    verify: Annotated[bool, typer.Option("--verify/--no-verify", help="prove the copy (always done)")] = True,
    anchors: AnchorsOpt = None,
    as_: AsOpt = "",
    json_out: JsonOpt = False,
) -> None:
    """Restore into a new database and prove it: migration, row counts, audit chain, anchors."""
    from tracker.core.backup import restore_backup

    if not verify:
        raise typer.BadParameter(
            "a restore is always verified (药品记录与数据管理要求: restores are validated)"
        )
    check = restore_backup(backup_dir, to, actor=as_ or "system:restore", anchor_dir=_anchor_dir(anchors))
    lang = current_lang()
    if json_out:
        print_json(
            {
                "ok": check.ok,
                "target": check.target,
                "anchors_checked": check.anchors_checked,
                "problems": [in_language(p, lang) for p in check.problems],
            }
        )
    elif check.ok:
        m = check.manifest or {}
        console.print(
            f"{t('restore_ok')}: {t('migration')} {m.get('migration')}, {len(m.get('row_counts', {}))} "
            f"{t('tables')}, {m.get('audit', {}).get('count')} {t('audit_events')}, "
            f"{check.anchors_checked} {t('anchors_checked')}"
        )
    else:
        console.print(f"[red]{t('restore_bad')}[/red]")
        for p in check.problems:
            console.print(f"  [red]{in_language(p, lang)}[/red]")
    if not check.ok:
        raise typer.Exit(1)


@identity_app.command("reveal")
def identity_reveal(
    number: str,
    reason: Annotated[str, typer.Option(help="why the clear identifier is needed (audited)")],
    as_: AsOpt = "",
    password_stdin: PwStdin = False,
    json_out: JsonOpt = False,
    db: DbOpt = None,
) -> None:
    """Show a batch's clear donor and patient identifiers (identity_reveal; audited)."""
    from tracker.quality.batches.identity import reveal
    from tracker.quality.batches.steps import get_batch

    who = login_cli(db, as_, password_stdin)
    with unit_of_work(engine_for(db)) as session:
        shown = reveal(session, actor=who, batch=get_batch(session, number), reason=reason, via="cli")
    if json_out:
        print_json(shown)
        return
    console.print(
        f"{t('batch')} {shown['batch']} · {t('donor')} {shown['donor_id']} ({shown['donor_pseudonym']})"
    )
    if shown["patient_id"]:
        console.print(f"{t('patient')} {shown['patient_id']} ({shown['patient_pseudonym']})")


@identity_app.command("find")
def identity_find(
    donor: Annotated[str, typer.Option(help="the donor identifier as written on the label")],
    json_out: JsonOpt = False,
    db: DbOpt = None,
) -> None:
    """The batches of a donor: the identifier typed is turned into its pseudonym (logged read)."""
    from tracker.quality.batches.identity import batches_of_donor, record_read

    with unit_of_work(engine_for(db)) as session:
        found = batches_of_donor(session, donor)
        record_read(session, actor=cli_reader(), via="cli", batches=found)
        rows = [
            {"number": b.number, "product": b.product, "donor_id": b.donor_id, "status": b.status}
            for b in found
        ]
    if json_out:
        print_json(rows)
        return
    table = Table(title=t("batches"))
    for key in ("batch", "product", "donor", "state"):
        table.add_column(t(key))
    for r in rows:
        table.add_row(r["number"], r["product"], r["donor_id"], t(r["status"]))
    console.print(table)


@identity_app.command("reads")
def identity_reads(
    start: Annotated[str, typer.Option("--from", help="period start, ISO 8601 with offset")],
    end: Annotated[str | None, typer.Option("--to", help="period end (default now)")] = None,
    donor: Annotated[str | None, typer.Option(help="only this donor (typed in clear)")] = None,
    as_: AsOpt = "",
    password_stdin: PwStdin = False,
    json_out: JsonOpt = False,
    db: DbOpt = None,
) -> None:
    """Who read or revealed which donors' records in a period (QA)."""
    from tracker.quality.batches.identity import read_report

    login_cli(
        db,
        as_,
        password_stdin,
        "qa",
        action=Reason("the report of reads of donor records", "供者记录查阅报告"),
    )
    with unit_of_work(engine_for(db)) as session:
        rows = read_report(
            session, start=_instant(start, "--from"), end=_instant(end, "--to") or utcnow(), donor=donor
        )
    if json_out:
        print_json(rows)
        return
    table = Table(title=t("reads_report"))
    for key in ("when", "user", "action", "via", "batch", "donor", "reason"):
        table.add_column(t(key))
    for r in rows:
        table.add_row(
            r["at"],
            r["actor"],
            t(r["action"]),
            r["via"],
            ", ".join(r["batches"]),
            ", ".join(r["donors"]),
            r["reason"] or "",
        )
    console.print(table)
    console.print(f"{t('as_of')} {iso_utc(utcnow())}")


@identity_app.command("classes")
def identity_classes() -> None:
    """Print the table of classified fields (docs/data-protection.md is generated from it)."""
    from sqlmodel import SQLModel

    import tracker.models  # noqa: F401  (every table)
    from tracker.core.classification import classified_fields, markdown_table

    typer.echo(markdown_table(classified_fields(SQLModel.metadata)), nl=False)


def register(app: typer.Typer) -> None:
    app.add_typer(export_app, name="export")
    app.add_typer(identity_app, name="identity")
    app.command("backup")(backup)
    app.command("restore")(restore)
