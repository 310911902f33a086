"""Charts of the annual report as self-contained SVG (text drawn as paths: no fonts needed).

matplotlib ``Figure`` objects saved as SVG (no pyplot, no global backend); Chinese labels need
the Noto CJK collection registered by file (Debian ``fonts-noto-cjk``; it registers as "Noto
Sans CJK JP", which covers simplified Chinese) and ``axes.unicode_minus=False`` (platform.md).
The settings below apply to the report's charts only (``tracker.core.fonts.chart_style``).
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from tracker.core.fonts import chart_font_family, chart_style


def _style() -> dict:
    return {
        "font.family": "sans-serif",
        "font.sans-serif": list(chart_font_family()),
        "axes.unicode_minus": False,
        "svg.fonttype": "path",
        "font.size": 8,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "svg.hashsalt": "gmp-tracker",  # stable element ids
    }


def _render(figsize: tuple[float, float], draw: Callable[[Axes], None]) -> str:
    """One chart in the report's style: ``draw`` fills the axes of a fresh figure."""
    return _render_panels(figsize, 1, lambda axes: draw(axes[0]))


def _render_panels(figsize: tuple[float, float], n: int, draw: Callable[[list[Axes]], None]) -> str:
    """A chart of ``n`` panels side by side sharing the y axis, in the report's style."""
    with chart_style(_style()):
        fig = Figure(figsize=figsize)
        axes = fig.subplots(1, n, sharey=True, squeeze=False)[0]
        draw(list(axes))
        buf = io.StringIO()
        fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    return buf.getvalue()


#: how each limit is drawn: (key in the bounds, line style, colour, label above or below the line)
LIMIT_LINES = (("action_high", "--", "#c0392b", "bottom"), ("alert_high", ":", "#d68910", "top"))


def _limit_lines(ax: Axes, series: list[dict], state: str, x_end: float, labels: dict[str, str]) -> None:
    """The alert and action limits of ``state`` of the plotted monitors, each drawn once."""
    drawn: set[tuple[str, float]] = set()
    for s in series:
        limits = s["states"][state]["limits"] or {}
        for key, style, colour, va in LIMIT_LINES:
            value = limits.get(key)
            if value and (key, value) not in drawn:
                drawn.add((key, value))
                ax.axhline(value, linestyle=style, linewidth=0.8, color=colour)
                ax.annotate(
                    f"{labels[key]} {value:g}",
                    (x_end, value),
                    fontsize=6,
                    color=colour,
                    ha="right",
                    va=va,
                )


def particle_trend(
    series: list[dict],
    months: list[str],
    *,
    title: str,
    state_titles: dict[str, str],
    limit_labels: dict[str, str],
) -> str:
    """Monthly P95 per monitor (log scale), one panel per room state (at rest, in operation), each
    with that state's alert (dotted) and action (dashed) limits: a P95 is only compared with the
    limit of its own state. ``limit_labels`` names ``action_high`` and ``alert_high``."""

    def draw(axes: list[Axes]) -> None:
        x = np.arange(len(months))
        for ax, state in zip(axes, state_titles, strict=True):
            for s in series:
                values = s["states"][state]["monthly_p95"]
                y = np.array([np.nan if v is None else max(v, 0.5) for v in values], dtype=float)
                ax.plot(x, y, marker="o", markersize=2.5, linewidth=1, label=s["monitor"])
            _limit_lines(ax, series, state, x[-1] if len(x) else 0, limit_labels)
            ax.set_yscale("log")
            ax.set_xticks(x, [m[5:] for m in months])
            ax.set_title(state_titles[state], fontsize=8)
        axes[0].set_ylabel("/m³")
        if series:
            axes[0].legend(fontsize=6, ncol=3, frameon=False, loc="upper left")
        axes[0].get_figure().suptitle(title, fontsize=9, y=1.03)

    return _render_panels((7.0, 2.8), len(state_titles), draw)


def heatmap(rooms: list[str], months: list[str], counts: list[list[int]], *, title: str) -> str:
    """Limit excursions per room (rows) and month (columns)."""

    def draw(ax: Axes) -> None:
        data = np.array(counts, dtype=float) if rooms else np.zeros((1, len(months)))
        ax.imshow(data, aspect="auto", cmap="Reds", vmin=0, vmax=max(1.0, float(data.max())))
        ax.set_xticks(np.arange(len(months)), [m[5:] for m in months])
        ax.set_yticks(np.arange(len(rooms)), rooms)
        for (i, j), v in np.ndenumerate(data):
            if rooms and v:
                ax.text(
                    j,
                    i,
                    f"{int(v)}",
                    ha="center",
                    va="center",
                    fontsize=6,
                    color="white" if v > data.max() / 2 else "black",
                )
        ax.set_title(title, fontsize=9)
        for side in ("top", "right", "left", "bottom"):
            ax.spines[side].set_visible(False)

    return _render((7.0, max(1.4, 0.28 * len(rooms) + 0.8)), draw)


def pareto(categories: list[str], counts: list[int], *, title: str, count_label: str) -> str:
    """Deviations by category, largest first, with the cumulative share."""

    def draw(ax: Axes) -> None:
        x = np.arange(len(categories))
        ax.bar(x, counts, color="#2c6e9b")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))  # counts: no half deviations
        ax.set_xticks(x, categories, rotation=20, ha="right")
        ax.set_ylabel(count_label)
        ax.set_title(title, fontsize=9)
        if counts:
            ax2 = ax.twinx()
            ax2.plot(
                x, np.cumsum(counts) / max(1, sum(counts)) * 100, color="#c0392b", marker="o", markersize=3
            )
            ax2.set_ylim(0, 105)
            ax2.set_ylabel("%")
            ax2.spines["top"].set_visible(False)

    return _render((7.0, 2.4), draw)


def monthly_bars(months: list[str], values: list[int], *, title: str, label: str) -> str:
    """Batches (or another count) per month."""

    def draw(ax: Axes) -> None:
        x = np.arange(len(months))
        ax.bar(x, values, color="#2c6e9b")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xticks(x, [m[5:] for m in months])
        ax.set_ylabel(label)
        ax.set_title(title, fontsize=9)

    return _render((7.0, 2.0), draw)
