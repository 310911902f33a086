"""The one place that finds the Chinese font for server-drawn charts (web pages and the report).

Debian's ``fonts-noto-cjk`` ships a ``.ttc`` that matplotlib does not find by itself; it has
to be registered (platform.md). It registers as "Noto Sans CJK JP", which covers simplified
Chinese.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from matplotlib import font_manager

CJK_FONTS = (
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/opentype/noto-cjk/NotoSansCJK-Regular.ttc",
)


@lru_cache(maxsize=1)
def chart_font_family() -> tuple[str, ...]:
    """Register the CJK face with matplotlib (once) and return the families for charts: the CJK
    face first when installed, DejaVu Sans for the rest."""
    for path in CJK_FONTS:
        if Path(path).exists():
            font_manager.fontManager.addfont(path)
            return (font_manager.FontProperties(fname=path).get_name(), "DejaVu Sans")
    return ("DejaVu Sans",)
