"""Trend charts as SVG, drawn on the server with matplotlib (no fonts needed by the browser).

Readings of one monitor channel over a window, the alert and action bounds of each operational
state, excursion spans shaded by level, and data gaps left as gaps (the line breaks where the
monitor was silent for more than the gap factor × its interval).
"""

from __future__ import annotations

import base64
import hashlib
import io
from datetime import datetime, timedelta
from xml.etree import ElementTree
from zoneinfo import ZoneInfo

import matplotlib.dates as mdates
import numpy as np
from matplotlib.figure import Figure
from sqlmodel import Session, select

from tracker.core.fonts import chart_font_family, chart_style
from tracker.facility.limits import UNITS
from tracker.facility.models import Monitor, Site
from tracker.facility.policy import compliance_of
from tracker.monitoring.excursions import PREDICTED, Excursion
from tracker.monitoring.readings import Reading
from tracker.monitoring.snapshot import build_registry
from tracker.monitoring.trending.store import Chart

LEVEL_COLOURS = {"alert": "#e0a800", "action": "#c62828"}
#: a forecast warning is shaded apart from the breaches: it is not one
PREDICTED_COLOUR = "#5c6bc0"


def _style() -> dict:
    """The web charts' settings (applied around each chart only: ``tracker.core.fonts.chart_style``)."""
    return {"font.family": list(chart_font_family()), "axes.unicode_minus": False, "svg.fonttype": "path"}


def series(
    session: Session, monitor: Monitor, channel: str, start: datetime, end: datetime
) -> tuple[list[datetime], list[float]]:
    rows = session.exec(
        select(Reading.event_time, Reading.value)
        .where(
            Reading.monitor_id == monitor.id,
            Reading.channel == channel,
            Reading.event_time >= start,
            Reading.event_time <= end,
        )
        .order_by(Reading.event_time)
    ).all()
    return [r[0] for r in rows], [r[1] for r in rows]


def trend_svg(
    session: Session,
    monitor: Monitor,
    channel: str,
    start: datetime,
    end: datetime,
    *,
    labels: dict[str, str],
) -> str:
    site = session.get(Site, monitor.site_id)
    tz = ZoneInfo(site.timezone)
    times, values = series(session, monitor, channel, start, end)
    gap = (
        timedelta(seconds=monitor.interval_s * compliance_of(session, site).gap_factor)
        if monitor.interval_s
        else None
    )
    xs: list[datetime] = []
    ys: list[float] = []
    for i, (t, v) in enumerate(zip(times, values, strict=True)):
        if gap and i and t - times[i - 1] > gap:
            xs.append(times[i - 1] + (t - times[i - 1]) / 2)
            ys.append(np.nan)  # break the line: the monitor was silent
        xs.append(t)
        ys.append(v)
    entry = build_registry(session).lookup(site.code, monitor.code)
    excursions = session.exec(
        select(Excursion).where(
            Excursion.monitor_id == monitor.id,
            Excursion.status != "superseded",
            Excursion.started_at <= end,
            (Excursion.ended_at.is_(None)) | (Excursion.ended_at >= start),
        )
    ).all()
    with chart_style(_style()):
        fig = Figure(figsize=(10, 3.6), dpi=96)
        ax = fig.add_subplot()
        if xs:
            ax.plot(
                [x.astimezone(tz) for x in xs], ys, color="#1f4e79", linewidth=1.1, label=labels["readings"]
            )
        for ex in excursions:
            if channel and ex.channel and ex.channel != channel:
                continue
            predicted = ex.type == PREDICTED
            ax.axvspan(
                max(ex.started_at, start).astimezone(tz),
                min(ex.ended_at or end, end).astimezone(tz),
                color=PREDICTED_COLOUR if predicted else LEVEL_COLOURS.get(ex.level, "#888888"),
                alpha=0.10 if predicted else 0.18,
                linewidth=0,
            )
        if entry is not None:
            for state, style in (("at_rest", "-"), ("in_operation", "--")):
                bounds = entry.limits.for_reading(channel, state)
                if bounds is None:
                    continue
                for level in ("alert", "action"):
                    for side in ("low", "high"):
                        value = getattr(bounds, f"{level}_{side}")
                        if value is not None:
                            ax.axhline(
                                value,
                                color=LEVEL_COLOURS[level],
                                linestyle=style,
                                linewidth=0.9,
                                label=f"{labels[level]} ({labels[state]})",
                            )
        ax.set_xlim(start.astimezone(tz), end.astimezone(tz))
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%m-%d %H:%M", tz=tz))
        ax.set_ylabel(f"{labels[monitor.kind]} {channel + ' µm ' if channel else ''}({UNITS[monitor.kind]})")
        ax.grid(alpha=0.25)
        handles, names = ax.get_legend_handles_labels()
        unique = dict(zip(names, handles, strict=True))
        if unique:
            ax.legend(unique.values(), unique.keys(), loc="upper left", fontsize=8, ncols=3)
        fig.autofmt_xdate()
        fig.tight_layout()
        buf = io.StringIO()
        fig.savefig(buf, format="svg")
    return buf.getvalue()


def control_svg(chart: Chart, timezone: str, *, labels: dict[str, str]) -> str:
    """A control chart (``tracker.monitoring.trending.store.chart``): hourly means, centre line
    and 3σ limits of the baseline, points that complete a run-rule pattern ringed, change
    points as vertical lines."""
    tz = ZoneInfo(timezone)
    hours = [h.astimezone(tz) for h in chart.hours]
    with chart_style(_style()):
        fig = Figure(figsize=(10, 3.6), dpi=96)
        ax = fig.add_subplot()
        if hours:
            ax.plot(hours, chart.means, color="#1f4e79", linewidth=1.0, marker=".", label=labels["means"])
        b = chart.baseline
        if b is not None:
            ax.axhline(b.center, color="#2e7d32", linewidth=1.0, label=labels["center"])
            for value in (b.lcl, b.ucl):
                if value is not None:
                    ax.axhline(value, color="#2e7d32", linestyle="--", linewidth=0.9, label=labels["limits"])
        index = {h: i for i, h in enumerate(chart.hours)}
        flagged = sorted({index[_hour(s["end"])] for s in chart.signals if _hour(s["end"]) in index})
        if flagged:
            ax.scatter(
                [hours[i] for i in flagged],
                [chart.means[i] for i in flagged],
                s=60,
                facecolors="none",
                edgecolors="#c62828",
                label=labels["signals"],
            )
        for cp in chart.change_points:
            if chart.hours and chart.hours[0] <= cp.at <= chart.hours[-1]:
                ax.axvline(
                    cp.at.astimezone(tz),
                    color="#6a1b9a",
                    linestyle=":" if cp.status == "dismissed" else "-",
                    linewidth=1.0,
                    label=labels["change_points"],
                )
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%m-%d %H:%M", tz=tz))
        ax.set_ylabel(
            f"{labels[chart.kind]} {chart.channel + ' µm ' if chart.channel else ''}({UNITS[chart.kind]})"
        )
        ax.grid(alpha=0.25)
        handles, names = ax.get_legend_handles_labels()
        unique = dict(zip(names, handles, strict=True))
        if unique:
            ax.legend(unique.values(), unique.keys(), loc="upper left", fontsize=8, ncols=3)
        fig.autofmt_xdate()
        fig.tight_layout()
        buf = io.StringIO()
        fig.savefig(buf, format="svg")
    return buf.getvalue()


def _hour(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


SVG_NS = "{http://www.w3.org/2000/svg}"


def svg_policy(svg: str) -> str:
    """The content-security policy of a chart opened on its own: matplotlib styles its SVG with
    a ``<style>`` element and ``style`` attributes, which the pages' policy (``style-src 'self'``)
    would refuse (issue 15 counted 52 console errors). This one allows exactly those styles, by
    their hashes, and nothing else: no script, no fetch, no frame."""
    root = ElementTree.fromstring(svg)
    texts = {"".join(el.itertext()) for el in root.iter(f"{SVG_NS}style")}
    texts |= {el.attrib["style"] for el in root.iter() if "style" in el.attrib}
    hashes = " ".join(
        sorted(f"'sha256-{base64.b64encode(hashlib.sha256(t.encode()).digest()).decode()}'" for t in texts)
    )
    return (
        f"default-src 'none'; style-src 'unsafe-hashes' {hashes}; img-src data:; "
        "frame-ancestors 'self'; form-action 'none'; base-uri 'none'"
    )
