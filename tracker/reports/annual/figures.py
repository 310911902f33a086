"""How the report writes its numbers and orders its rooms, shared by every block.

Percentages are 0–100 rounded to 3 decimals and ``null`` where the denominator is 0 (the counts
behind them are given beside them); durations are hours rounded to 3 decimals. One rounding
everywhere keeps the document reproducible, which its signatures depend on.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta

from tracker.facility.models import Room

#: grades from the cleanest; every per-room and per-grade list follows this order
GRADE_ORDER = ("A", "B", "C", "D", "CNC")


def pct(num: float, den: float) -> float | None:
    """``num`` as a percentage of ``den``; ``None`` when there is nothing to divide by."""
    return None if not den else round(100.0 * num / den, 3)


def rounded(value: float | None, digits: int = 3) -> float | None:
    """A plain float rounded for the JSON (numpy scalars included); ``None`` stays ``None``."""
    return None if value is None else round(float(value), digits)


def hours_of(td: timedelta) -> float:
    """A duration in hours, rounded like every other figure."""
    return round(td.total_seconds() / 3600, 3)


def in_grade_order(rooms: Iterable[Room]) -> list[Room]:
    """Rooms by grade (cleanest first), then code."""
    return sorted(rooms, key=lambda r: (GRADE_ORDER.index(r.grade), r.code))
