"""UTC everywhere inside; facility time zone only for display."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo


def utcnow() -> datetime:
    return datetime.now(UTC)


def ensure_utc(value: datetime) -> datetime:
    """Refuse naive datetimes: a GMP timestamp without an offset is ambiguous."""
    if value.tzinfo is None:
        raise ValueError(f"timestamp without time zone: {value.isoformat()}")
    return value.astimezone(UTC)


def parse_instant(text: str) -> datetime:
    """Parse ISO 8601 with an offset (``Z`` accepted) into aware UTC."""
    return ensure_utc(datetime.fromisoformat(text.strip().replace("z", "Z")))


def iso_utc(value: datetime | None) -> str | None:
    """ISO 8601 in UTC with ``Z``, the form of every machine-readable output."""
    if value is None:
        return None
    return ensure_utc(value).isoformat().replace("+00:00", "Z")


def local_display(value: datetime | None, tz: str) -> str:
    """Facility-local wall time with its offset, for people."""
    if value is None:
        return "—"
    return ensure_utc(value).astimezone(ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M:%S %z")


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(d|h|m|s)")


def parse_duration(text: str) -> timedelta:
    """Parse ``90s``, ``5m``, ``1h30m``, ``2d``."""
    text = text.strip()
    pos, total = 0, 0.0
    units = {"d": 86400, "h": 3600, "m": 60, "s": 1}
    for match in _DURATION.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * units[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise ValueError(f"not a duration: {text!r} (use e.g. 90s, 5m, 1h30m)")
    return timedelta(seconds=total)
