"""The limits a monitor is shown against in the report: those of the facility revision in force
at the period end, resolved exactly as ingest resolves them (``tracker.facility.limits``), so a
P95 or a time-within-limits figure is compared with the numbers the site actually ran under.
"""

from __future__ import annotations

from tracker.facility.limits import (
    Bounds,
    FacilityLevel,
    LimitSet,
    MonitorLimits,
    MonitorSpec,
    resolve_monitor_limits,
)
from tracker.facility.models import Monitor, Room


def monitor_limits(
    rooms: dict[int, Room], levels: list[FacilityLevel], limit_set: LimitSet, m: Monitor
) -> MonitorLimits:
    """The monitor's bounds per channel and room state (pressure: against its reference room)."""
    room = rooms[m.room_id]
    ref = rooms.get(m.reference_room_id) if m.reference_room_id else None
    spec = MonitorSpec(
        code=m.code,
        room=room.code,
        grade=room.grade,
        kind=m.kind,
        reference_grade=ref.grade if ref else None,
        channels=tuple(c for c in m.channels.split(",") if c),
    )
    return resolve_monitor_limits(limit_set, spec, levels)


def bounds_json(b: Bounds | None) -> dict | None:
    """Bounds as the document shows them; ``None`` where no limit applies."""
    if b is None or b.empty:
        return None
    return {
        "alert_low": b.alert_low,
        "alert_high": b.alert_high,
        "action_low": b.action_low,
        "action_high": b.action_high,
    }
