"""Times typed into forms, queries and JSON bodies: ISO 8601 with an offset, within the range the
records can hold. A naive time is ambiguous in a GMP record, and one far outside the range (year
1 or 9999) would overflow the arithmetic behind a chart window: both are refused with a 422 in
the page's language (JSON: ``detail`` and ``detail_zh``), never a server error."""

from __future__ import annotations

from datetime import UTC, datetime

from tracker.core.errors import InvalidInputError, Reason

#: the records begin with the monitors' clocks (``tracker.wire.payload.EARLIEST``) …
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
#: … and no record of this system is stamped beyond
LATEST = datetime(2100, 1, 1, tzinfo=UTC)
EXAMPLE = "2026-11-20T08:00:00+08:00"


def _refusal(text: str) -> Reason:
    shown = text[:60]
    return Reason(
        f"{shown!r}: a time is ISO 8601 with its offset between {EARLIEST.year} and {LATEST.year - 1}, "
        f"e.g. {EXAMPLE}",
        f"{shown!r}：时间须为带时区偏移的 ISO 8601 格式，且在 {EARLIEST.year} 至 {LATEST.year - 1} 年之间，"
        f"例如 {EXAMPLE}",
    )


def checked_instant(value: datetime) -> datetime:
    """``value`` as aware UTC, or ``ValueError`` carrying the bilingual reason (for validators)."""
    try:
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError
        value = value.astimezone(UTC)
    except (ValueError, OverflowError):
        raise ValueError(_refusal(value.isoformat())) from None
    if not EARLIEST <= value < LATEST:
        raise ValueError(_refusal(value.isoformat()))
    return value


def instant(text: str) -> datetime:
    """A time from a form or query, refused (422, in the page's language) unless it is ISO 8601
    with an offset and within range."""
    try:
        return checked_instant(datetime.fromisoformat(text.strip().replace("z", "Z")))
    except ValueError:
        reason = _refusal(text)  # the text as typed
        raise InvalidInputError(reason) from None
