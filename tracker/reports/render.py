"""The report document as HTML (Jinja2, ``templates/report/``) and PDF (WeasyPrint).

Times are shown in the site's time zone; the JSON keeps UTC. Charts are SVG embedded as data
URIs. WeasyPrint needs pango/harfbuzz and the Noto CJK fonts (``scripts/bootstrap``); its
``@page`` margin boxes set their font explicitly (platform.md).
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from tracker.core.errors import InvalidInputError, Reason
from tracker.core.timeutil import local_display, parse_instant
from tracker.reports import charts
from tracker.reports.annual.document import SCHEMA
from tracker.reports.text import text_for

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
LANGS = ("zh-CN", "en")


@lru_cache(maxsize=1)
def _env() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(("html", "j2")),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env


def _uri(svg: str) -> str:
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode("utf-8")).decode("ascii")


def chart_uris(report: dict, lang: str) -> dict:
    """Every chart of the report as a data URI, labelled in ``lang``."""
    t = text_for(lang)
    months = report["period"]["months"]
    env = report["environment"]
    out = {
        "batches": _uri(
            charts.monthly_bars(
                months, report["production"]["by_month"], title=t("batches_by_month"), label=t("count")
            )
        ),
        "heatmap": _uri(
            charts.heatmap(env["heatmap"]["rooms"], months, env["heatmap"]["counts"], title=t("heatmap"))
        ),
        "particles": [],
        "pareto": None,
    }
    groups: dict[tuple[str, str], list[dict]] = {}
    for p in env["particles"]:
        if any(v is not None for st in p["states"].values() for v in st["monthly_p95"]):
            groups.setdefault((p["grade"], p["channel"]), []).append(p)
    for (grade, channel), series in sorted(groups.items()):
        out["particles"].append(
            _uri(
                charts.particle_trend(
                    series,
                    months,
                    title=f"{t('p95_trend')} · {t('grade')} {grade} · ≥{channel} µm",
                    state_titles={"at_rest": t("at_rest"), "in_operation": t("in_operation")},
                    limit_labels={"action_high": t("action_limit"), "alert_high": t("alert_limit")},
                )
            )
        )
    pareto = report["deviations"]["by_category"]
    if pareto:
        out["pareto"] = _uri(
            charts.pareto(
                [p["category"] for p in pareto],
                [p["count"] for p in pareto],
                title=t("pareto"),
                count_label=t("count"),
            )
        )
    return out


def render_html(report: dict, *, lang: str = "zh-CN", signoff: Sequence[dict] = ()) -> str:
    """The report as one self-contained HTML page in ``lang`` (``zh-CN`` or ``en``)."""
    if lang not in LANGS:
        raise ValueError(f"language must be one of {', '.join(LANGS)}")
    if report.get("schema") != SCHEMA:  # a report signed under an earlier version of the document
        raise InvalidInputError(
            Reason(
                f"this template renders {SCHEMA} documents, not {report.get('schema')}: use --format json",
                f"此模板只能生成 {SCHEMA} 版本的报告，不能生成 {report.get('schema')}：请用 --format json",
            )
        )
    tz = report["site"]["timezone"]
    env = _env().overlay()
    env.filters["local"] = lambda iso: local_display(parse_instant(iso), tz) if iso else "—"
    return env.get_template("report/annual.html.j2").render(
        report=report,
        t=text_for(lang),
        en=lang == "en",
        charts=chart_uris(report, lang),
        signoff=list(signoff),
    )


def html_to_pdf(html: str) -> bytes:
    from weasyprint import HTML  # imported here: ≈0.5 s, and only the PDF needs it

    return HTML(string=html, base_url=str(TEMPLATES)).write_pdf()


def render_pdf(report: dict, *, lang: str = "zh-CN", signoff: Sequence[dict] = ()) -> bytes:
    return html_to_pdf(render_html(report, lang=lang, signoff=signoff))
