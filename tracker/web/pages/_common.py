"""Small helpers shared by the page routers."""

from __future__ import annotations

from datetime import datetime

from tracker.core.errors import InvalidInputError, Reason
from tracker.core.timeutil import parse_instant


def form_instant(text: str) -> datetime:
    """A time typed into a form or query, refused in the page's language when it is not ISO 8601
    with an offset."""
    try:
        return parse_instant(text)
    except ValueError as exc:
        raise InvalidInputError(
            Reason(
                f"{text!r}: a time is ISO 8601 with its offset, e.g. 2026-11-20T08:00:00+08:00",
                f"{text!r}：时间须为带时区偏移的 ISO 8601 格式，例如 2026-11-20T08:00:00+08:00",
            )
        ) from exc
