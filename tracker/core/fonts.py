"""The one place that finds the Chinese font for server-drawn charts (web pages and the report),
and applies a chart family's matplotlib settings to its own drawing only.

Debian's ``fonts-noto-cjk`` ships a ``.ttc`` that matplotlib does not find by itself; it has
to be registered (platform.md). It registers as "Noto Sans CJK JP", which covers simplified
Chinese.

Charts are built as ``matplotlib.figure.Figure`` objects — never pyplot, whose global figure
manager is not thread-safe under FastAPI's threadpool — and never through ``matplotlib.use``
or a lasting ``rcParams.update``: the web charts and the report charts want different
settings, and whichever module ran last would otherwise restyle the other's charts.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

import matplotlib
from matplotlib import font_manager

#: ``rcParams`` are process-global even inside ``rc_context``: one chart is styled at a time
_STYLE_LOCK = threading.RLock()

CJK_FONTS = (
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/opentype/noto-cjk/NotoSansCJK-Regular.ttc",
)


@lru_cache(maxsize=1)
def chart_font_family() -> tuple[str, ...]:
    """Register the CJK face with matplotlib (once) and return the families for charts: the CJK
    face first when installed, DejaVu Sans for the rest."""
    with _STYLE_LOCK:  # the font manager is global too
        return _register_cjk()


def _register_cjk() -> tuple[str, ...]:
    for path in CJK_FONTS:
        if Path(path).exists():
            font_manager.fontManager.addfont(path)
            return (font_manager.FontProperties(fname=path).get_name(), "DejaVu Sans")
    return ("DejaVu Sans",)


@contextmanager
def chart_style(rc: Mapping[str, Any]) -> Iterator[None]:
    """Build and save a chart inside this block: ``rc`` applies to it and is undone after.

    Some settings are read only when the figure is drawn (``svg.fonttype``, ``svg.hashsalt``,
    the families behind "sans-serif"), so the block must cover ``savefig`` too. The lock keeps
    two threads from swapping settings under each other's charts."""
    with _STYLE_LOCK, matplotlib.rc_context(dict(rc)):
        yield
