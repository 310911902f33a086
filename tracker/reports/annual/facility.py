"""§3 Facility and calibration status (``facility``) and the limit changes of the period
(``limit_changes``, shown in §6): the site as configured, and how its limits changed.

Calibration status is judged on the last local day of what the report covers (the period end,
or today if earlier), the day an inspector would ask about.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import date

from tracker.core import audit
from tracker.core.timeutil import iso_utc
from tracker.facility.models import Room, calibration_status
from tracker.identity.signatures import Signature
from tracker.reports.annual.figures import in_grade_order
from tracker.reports.annual.loader import LimitRecords, Scope, revision_named
from tracker.reports.annual.period import last_local_day


def facility_block(scope: Scope) -> dict:
    """The document's ``facility``: rooms by grade, monitors by kind, calibration, A-in-C zones."""
    rooms = in_grade_order(scope.rooms.values())
    end_day = last_local_day(scope.until, scope.site.timezone)
    calibration = calibration_rows(scope, end_day)
    by_kind = Counter(m.kind for m in scope.monitors.values() if m.active)
    return {
        "rooms": [room_row(scope, r) for r in rooms],
        "monitors_by_kind": dict(sorted(by_kind.items())),
        "calibration_as_of": end_day.isoformat(),
        "calibration": calibration,
        "calibration_summary": dict(sorted(Counter(c["status"] for c in calibration).items())),
        "a_in_c_zones": [
            r.code
            for r in rooms
            if r.grade == "A" and r.background_id and scope.rooms[r.background_id].grade == "C"
        ],
    }


def room_row(scope: Scope, r: Room) -> dict:
    """A room with its grade, background room and number of active monitors."""
    return {
        "code": r.code,
        "name": r.name,
        "name_en": r.name_en,
        "grade": r.grade,
        "background": scope.room_code(r.background_id),
        "area_m2": r.area_m2,
        "active": r.active,
        "monitors": sum(1 for m in scope.monitors.values() if m.room_id == r.id and m.active),
    }


def calibration_rows(scope: Scope, end_day: date) -> list[dict]:
    """The calibration status of every active monitor on ``end_day``."""
    return [
        {
            "monitor": m.code,
            "room": scope.room_code(m.room_id),
            "kind": m.kind,
            "due": m.calibration_due.isoformat() if m.calibration_due else None,
            "status": calibration_status(m.calibration_due, end_day),
        }
        for m in scope.monitors.values()
        if m.active
    ]


def limit_changes_block(records: LimitRecords) -> dict:
    """The document's ``limit_changes``: each revision of the period with its QA approval, and
    the levels in force at the end."""
    return {
        "changes": [change_row(ev, records.approvals) for ev in records.revisions],
        "in_force_at_end": records.in_force_at_end,
    }


def change_row(ev: audit.AuditEvent, approvals: dict[str, Signature]) -> dict:
    """One ``limits.revise`` audit event, with the approval signature of its revision if any."""
    revision = revision_named(ev.reason)
    sig = approvals.get(f"facility_limits:{revision}")
    return {
        "revision": revision,
        "at": iso_utc(ev.at),
        "by": ev.actor,
        "levels": len(json.loads(ev.after or "[]")),
        "audit_event": ev.id,
        "approved_by": sig.printed_name if sig else None,
        "approved_at": iso_utc(sig.signed_at) if sig else None,
    }
