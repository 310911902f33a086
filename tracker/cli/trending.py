"""``tracker trending …`` (control charts, change points) and ``tracker limits review``
(issue 21; docs/trending.md): thin commands over ``tracker.monitoring.trending``."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table
from sqlmodel import select

from tracker.cli.common import AsOpt, DbOpt, JsonOpt, PwStdin, console, engine_for, print_json
from tracker.cli.common import login_cli as _login
from tracker.core.db import unit_of_work
from tracker.core.errors import InvalidInputError, NotFoundError, Reason
from tracker.core.i18n import current_lang, t
from tracker.core.timeutil import parse_instant
from tracker.facility.models import Monitor, get_site

trending_app = typer.Typer(
    help="Control charts and change points of the monitored series.", no_args_is_help=True
)
SiteOpt = Annotated[str | None, typer.Option("--site", help="site code (when the database holds several)")]


def _monitor(session, code: str) -> Monitor:
    row = session.exec(select(Monitor).where(Monitor.code == code)).first()
    if row is None:
        raise NotFoundError(Reason(f"no monitor {code}", f"没有监测点 {code}"))
    return row


def _span(session, period: str | None, start: str | None, end: str | None, site_code: str | None):
    from tracker.monitoring.trending.review import parse_period

    site = get_site(session, site_code)
    if period:
        return site, *parse_period(period, site.timezone)
    if not (start and end):
        raise InvalidInputError(
            Reason("give --period, or --from and --to", "请给出 --period，或 --from 与 --to")
        )
    return site, parse_instant(start), parse_instant(end)


@trending_app.command("chart")
def chart_cmd(
    monitor: Annotated[str, typer.Option(help="monitor code")],
    channel: Annotated[str, typer.Option(help="0.5 or 5.0 for particles; empty for the rest")] = "",
    period: Annotated[str | None, typer.Option(help="2026, 2026-Q4 or 2026-11")] = None,
    start: Annotated[str | None, typer.Option("--from")] = None,
    end: Annotated[str | None, typer.Option("--to")] = None,
    site: SiteOpt = None,
    json_out: JsonOpt = False,
    db: DbOpt = None,
) -> None:
    """A series' control chart: baseline, limits and the run rules that fired (hourly means)."""
    from tracker.monitoring.trending.store import chart

    with unit_of_work(engine_for(db)) as session:
        _, lo, hi = _span(session, period, start, end, site)
        doc = chart(session, _monitor(session, monitor), channel, lo, hi).as_dict()
    if json_out:
        print_json(doc)
        return
    b = doc["baseline"]
    console.print(f"{t('control_chart')} {monitor} {channel}: {len(doc['points'])} h")
    if b is None:
        console.print(f"  {t('baseline')}: {t('no_baseline')}")
    else:
        console.print(
            f"  {t('baseline')} ({doc['baseline_from']} → {doc['baseline_to']}): "
            f"{b['center']:.4g} ± 3 × {b['sigma']:.3g} → [{b['lcl']:.4g}, {b['ucl']:.4g}]"
        )
    zh = current_lang() == "zh-CN"
    for s in doc["signals"]:
        console.print(
            f"  {t('run_rules_fired')}: {s['rule']} {s['zh'] if zh else s['en']} ({s['start']} → {s['end']})"
        )
    for c in doc["change_points"]:
        console.print(
            f"  {t('change_points')} #{c['id']} {c['at']} {c['direction']} {c['before']:.4g} → {c['after']:.4g} [{t(c['status'])}]"
        )


@trending_app.command("changepoints")
def changepoints_cmd(
    monitor: Annotated[str, typer.Option(help="monitor code")],
    channel: Annotated[str, typer.Option()] = "",
    period: Annotated[str | None, typer.Option(help="2026, 2026-Q4 or 2026-11")] = None,
    start: Annotated[str | None, typer.Option("--from")] = None,
    end: Annotated[str | None, typer.Option("--to")] = None,
    site: SiteOpt = None,
    json_out: JsonOpt = False,
    db: DbOpt = None,
) -> None:
    """Detect level shifts (CUSUM on hourly means) and list the series' change points."""
    from tracker.monitoring.trending.store import change_point_doc, chart, detect

    with unit_of_work(engine_for(db)) as session:
        _, lo, hi = _span(session, period, start, end, site)
        mon = _monitor(session, monitor)
        detect(session, mon, channel, lo, hi)
        rows = [change_point_doc(c) for c in chart(session, mon, channel, lo, hi).change_points]
    if json_out:
        print_json(rows)
        return
    table = Table(title=t("change_points"))
    for col in ("id", "time", "direction", "before", "after", "state", "detail"):
        table.add_column(t(col))
    for c in rows:
        table.add_row(
            str(c["id"]),
            c["at"],
            c["direction"],
            f"{c['before']:.4g}",
            f"{c['after']:.4g}",
            t(c["status"]),
            c["note"] or "",
        )
    console.print(table)


@trending_app.command("annotate")
def annotate_cmd(
    change_point_id: int,
    note: Annotated[str, typer.Option(help="what happened: filter change, new process, …")],
    as_: AsOpt,
    dismiss: Annotated[bool, typer.Option(help="no real change: later baselines ignore it")] = False,
    password_stdin: PwStdin = False,
    db: DbOpt = None,
) -> None:
    """QA annotates a change point (or dismisses it); audited."""
    from tracker.monitoring.trending.store import annotate

    actor = _login(db, as_, password_stdin)
    with unit_of_work(engine_for(db)) as session:
        row = annotate(session, actor=actor, change_point_id=change_point_id, note=note, dismiss=dismiss)
    console.print(f"#{row.id}: {t('change_point_dismissed' if dismiss else 'change_point_annotated')}")


def review_cmd(
    period: Annotated[str | None, typer.Option(help="2026, 2026-Q4 or 2026-11 (site time zone)")] = None,
    start: Annotated[str | None, typer.Option("--from")] = None,
    end: Annotated[str | None, typer.Option("--to")] = None,
    as_: Annotated[str | None, typer.Option("--as", help="QA user signing the review")] = None,
    comment: Annotated[str | None, typer.Option(help="the signer's comment")] = None,
    site: SiteOpt = None,
    json_out: JsonOpt = False,
    password_stdin: PwStdin = False,
    db: DbOpt = None,
) -> None:
    """The periodic limits review: per room and channel the levels in force, the data-driven
    proposal, the control-chart baseline, excursion rates, change points and a recommendation;
    signed by QA with ``--as``. Changes go through ``tracker limits propose`` / ``approve``."""
    from tracker.monitoring.trending.review import build_review
    from tracker.reports.limits_review import sign_review

    signer = _login(db, as_, password_stdin, signing=True) if as_ else None
    with unit_of_work(engine_for(db)) as session:
        site_row, lo, hi = _span(session, period, start, end, site)
        doc = build_review(session, site_row, lo, hi)
        if signer is not None:
            sig = sign_review(
                session, signer=signer, site=site_row, start=lo, end=hi, review=doc, comment=comment
            )
            session.flush()
            doc = {**doc, "signature": {"id": sig.id, "by": sig.username, "hash": sig.content_hash}}
    if json_out:
        print_json(doc)
        return
    zh = current_lang() == "zh-CN"
    table = Table(title=f"{t('limits_review')} {doc['site']} {doc['from']} → {doc['to']}")
    for col in (
        "room",
        "kind",
        "channel",
        "state",
        "current_levels",
        "proposal",
        "baseline",
        "excursions",
        "change_points",
        "recommendation",
    ):
        table.add_column(t(col))
    for r in doc["rows"]:
        cur, prop, base = r["current"], r["proposal"], r["baseline"]
        table.add_row(
            r["room"],
            t(r["kind"]),
            r["channel"],
            t(r["state"]),
            f"{_num(cur['alert'])} / {_num(cur['action'])}",
            "—" if not prop or "alert" not in prop else f"{_num(prop['alert'])} / {_num(prop['action'])}",
            "—" if base is None else f"{base['center']:.4g} (UCL {base['ucl']:.4g})",
            f"{r['excursions']['alert']}/{r['excursions']['action']} ({t('predicted')} {r['excursions']['predicted']})",
            str(len(r["change_points"])),
            r["recommendation"]["zh" if zh else "en"],
        )
    console.print(table)
    if "signature" in doc:
        console.print(f"{t('review_signed')}: #{doc['signature']['id']} ({doc['signature']['by']})")


def _num(x: float | list | None) -> str:
    if isinstance(x, list):
        return "–".join(_num(v) for v in x)
    return "—" if x is None else f"{x:g}"


def register(app: typer.Typer) -> None:
    from tracker.cli.quality import limits_app

    limits_app.command("review")(review_cmd)
    app.add_typer(trending_app, name="trending")
