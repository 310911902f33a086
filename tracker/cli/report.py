"""``tracker report annual|sign|approve``: thin commands over tracker.reports."""

from __future__ import annotations

import json
from datetime import date
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from tracker.cli.common import AsOpt, DbOpt, PwStdin, console, engine_for, login_cli
from tracker.core.db import unit_of_work

report_app = typer.Typer(help="Reports: the annual evaluation report (年度评估报告).", no_args_is_help=True)

SiteOpt = Annotated[str | None, typer.Option("--site", help="site code (when several)")]
YearOpt = Annotated[int, typer.Option("--year", help="calendar year in the site's time zone")]
AsOfOpt = Annotated[
    str | None,
    typer.Option(
        "--as-of",
        help="figures as at the end of this local day (YYYY-MM-DD); default: the year's end, or for "
        "the current year the start of today, so every build of a day agrees",
    ),
]


def _as_of(text: str | None) -> date | None:
    """The ``--as-of`` date; a bad or future one is refused with the reason."""
    if text is None:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise typer.BadParameter(f"--as-of must be YYYY-MM-DD: {exc}") from exc


class Lang(StrEnum):
    zh = "zh"
    en = "en"


class Format(StrEnum):
    html = "html"
    pdf = "pdf"
    json = "json"


STEPS = ("facility", "environment", "deviations", "batches", "integrity", "comparison")


def _site_period(session, site_code: str | None, year: int):
    from tracker.facility.models import get_site
    from tracker.reports.annual.document import year_period

    site = get_site(session, site_code)
    return site, year_period(site.timezone, year)


@report_app.command("annual")
def annual(
    year: YearOpt,
    out: Annotated[Path, typer.Option("--out", help="file to write")],
    site: SiteOpt = None,
    lang: Annotated[Lang, typer.Option("--lang")] = Lang.zh,
    fmt: Annotated[Format, typer.Option("--format")] = Format.html,
    signed: Annotated[
        bool,
        typer.Option(
            "--signed", help="the report as last signed (stored content) instead of building it again"
        ),
    ] = False,
    as_of: AsOfOpt = None,
    db: DbOpt = None,
) -> None:
    """Build the annual report of a site (JSON, or HTML/PDF in zh-CN or en) with a progress bar."""
    from tracker.reports.annual.document import SCHEMA, build_annual_report, validate_report
    from tracker.reports.signoff import signed_report, signoff_block

    language = "en" if lang is Lang.en else "zh-CN"
    steps = (*STEPS, "render") if fmt is not Format.json else STEPS
    with Progress(
        TextColumn("{task.description:<12}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task("report", total=len(steps))

        def step(name: str) -> None:
            done = steps.index(name) if name in steps else 0
            bar.update(task, description=name, completed=done)

        with unit_of_work(engine_for(db)) as session:
            site_row, period = _site_period(session, site, year)
            if signed:
                report = signed_report(session, site_row, period)
            else:
                report = build_annual_report(
                    session, site=site_row, period=period, progress=step, as_of=_as_of(as_of)
                )
            signoff = signoff_block(session, site_row, period, report)
        if fmt is Format.json:
            document = {**report, "signoff": signoff}
            if document.get("schema") == SCHEMA:  # a report signed under an earlier version stays as signed
                validate_report(document)  # what we publish matches the published schema
            data = json.dumps(document, ensure_ascii=False, indent=2).encode("utf-8") + b"\n"
        else:
            step("render")
            from tracker.reports.render import render_html, render_pdf

            data = (
                render_pdf(report, lang=language, signoff=signoff)
                if fmt is Format.pdf
                else render_html(report, lang=language, signoff=signoff).encode("utf-8")
            )
        bar.update(task, completed=len(steps))
    out.write_bytes(data)
    console.print(f"{out} ({len(data):,} bytes, {fmt.value}, {language})")


def _sign(
    action: str,
    year: int,
    site: str | None,
    as_: str,
    password_stdin: bool,
    db: str | None,
    as_of: str | None,
) -> None:
    from tracker.reports import signoff
    from tracker.reports.annual.document import build_annual_report

    with unit_of_work(engine_for(db)) as session:
        site_row, period = _site_period(session, site, year)
        report = build_annual_report(session, site=site_row, period=period, as_of=_as_of(as_of))
    # authenticate after the build, so the re-authentication is fresh when the signature is made
    who = login_cli(db, as_, password_stdin, "qa", action=f"{action} the annual report", signing=True)
    with unit_of_work(engine_for(db)) as session:
        site_row, period = _site_period(session, site, year)
        fn = signoff.prepare if action == "preparing" else signoff.approve
        sig = fn(session, signer=who, site=site_row, period=period, report=report)
        console.print(
            f"{sig.meaning}: {signoff.entity_key(site_row, period)} by {sig.printed_name} "
            f"(content {sig.content_hash[:16]}…)"
        )


@report_app.command("sign")
def sign(
    year: YearOpt,
    as_: AsOpt,
    site: SiteOpt = None,
    password_stdin: PwStdin = False,
    as_of: AsOfOpt = None,
    db: DbOpt = None,
) -> None:
    """QA signs the report as prepared (e-signature over the report's JSON)."""
    _sign("preparing", year, site, as_, password_stdin, db, as_of)


@report_app.command("approve")
def approve(
    year: YearOpt,
    as_: AsOpt,
    site: SiteOpt = None,
    password_stdin: PwStdin = False,
    as_of: AsOfOpt = None,
    db: DbOpt = None,
) -> None:
    """The head of quality approves the report QA prepared (another person; same content)."""
    _sign("approving", year, site, as_, password_stdin, db, as_of)


@report_app.command("confirm-incidents")
def confirm_incidents(
    year: YearOpt,
    as_: AsOpt,
    incident: Annotated[
        list[str] | None,
        typer.Option(
            "--incident", help="a deviation QA finds was a major incident (repeatable); none: no incident"
        ),
    ] = None,
    comment: Annotated[
        str | None, typer.Option("--comment", help="QA's reasoning (needed when deviations were assessed)")
    ] = None,
    site: SiteOpt = None,
    password_stdin: PwStdin = False,
    as_of: AsOfOpt = None,
    db: DbOpt = None,
) -> None:
    """QA confirms the statement on major quality or safety incidents (e-signature; Nanning Art. 16)."""
    from tracker.reports import signoff
    from tracker.reports.annual.document import build_annual_report

    with unit_of_work(engine_for(db)) as session:
        site_row, period = _site_period(session, site, year)
        report = build_annual_report(session, site=site_row, period=period, as_of=_as_of(as_of))
    who = login_cli(
        db, as_, password_stdin, "qa", action="confirming the statement on major incidents", signing=True
    )
    with unit_of_work(engine_for(db)) as session:
        site_row, period = _site_period(session, site, year)
        sig = signoff.confirm_incidents(
            session,
            signer=who,
            site=site_row,
            period=period,
            report=report,
            incidents=incident or [],
            comment=comment,
        )
        finding = ", ".join(incident) if incident else "no major incident"
        console.print(f"confirmed: {signoff.entity_key(site_row, period)} ({finding}) by {sig.printed_name}")
