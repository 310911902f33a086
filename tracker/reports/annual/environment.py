"""§6 Environmental monitoring (``environment``): the site total, per grade and per room, the
per-monitor rows, the room × month heat map of limit excursions, the particle P95s, and the
superseded excursions of the period with who superseded each, when and why (GMP records are
corrected, never deleted, and the correction is attributable: GMP 2010 Art. 161, computerised
systems annex, regulatory.md §9; issue 14 item 7).

Rooms and grades without monitors of the period and without excursions are left out: an empty
row would read as "monitored, all well".
"""

from __future__ import annotations

from tracker.core.timeutil import iso_utc
from tracker.monitoring.excursions import Excursion
from tracker.reports.annual.excursions import excursion_figures
from tracker.reports.annual.figures import GRADE_ORDER, in_grade_order
from tracker.reports.annual.loader import EnvironmentRecords, Scope, Superseded
from tracker.reports.annual.monitors import MonitorRow, totals
from tracker.reports.annual.particles import particle_rows
from tracker.reports.annual.period import month_index, month_labels


def environment_block(scope: Scope, records: EnvironmentRecords, rows: dict[int, MonitorRow]) -> dict:
    """The document's ``environment``."""
    by_room = room_rows(scope, records, rows)
    return {
        "total": total_row(scope, records, rows),
        "by_grade": grade_rows(scope, records, rows),
        "by_room": by_room,
        "monitors": list(rows.values()),
        "heatmap": heatmap(scope, records.excursions, [r["room"] for r in by_room]),
        "particles": particle_rows(scope, records),
        "superseded": [superseded_row(scope, s) for s in records.superseded],
    }


def superseded_row(scope: Scope, s: Superseded) -> dict:
    """A superseded excursion: what it was, when and by whom it was superseded, why, and QA's
    approving signature when the correction needed one (a backdated room-state change)."""
    e = s.excursion
    return {
        "id": e.id,
        "monitor": scope.monitors[e.monitor_id].code,
        "room": scope.room_code(e.room_id),
        "type": e.type,
        "channel": e.channel,
        "level": e.level,
        "started_at": iso_utc(e.started_at),
        "ended_at": iso_utc(e.ended_at) if e.ended_at else None,
        "superseded_at": iso_utc(s.at) if s.at else None,
        "superseded_by": s.by,
        "reason": s.reason,
        "approved_by": s.signature.printed_name if s.signature else None,
        "approved_at": iso_utc(s.signature.signed_at) if s.signature else None,
    }


def _area(
    scope: Scope, records: EnvironmentRecords, rows: dict[int, MonitorRow], room_ids: set[int]
) -> tuple[dict, list[Excursion]] | None:
    """Sums and excursions of the monitors in some rooms; ``None`` when there is neither."""
    ids = [i for i, m in scope.monitors.items() if m.room_id in room_ids and i in rows]
    exc = [e for e in records.excursions if e.room_id in room_ids]
    if not ids and not exc:
        return None
    return totals([rows[i] for i in ids]), exc


def room_rows(scope: Scope, records: EnvironmentRecords, rows: dict[int, MonitorRow]) -> list[dict]:
    """``by_room``: one row per room, cleanest grade first."""
    out = []
    for room in in_grade_order(scope.rooms.values()):
        area = _area(scope, records, rows, {room.id})
        if area is None:
            continue
        agg, exc = area
        out.append(
            {
                "room": room.code,
                "name": room.name,
                "name_en": room.name_en,
                "grade": room.grade,
                **agg,
                "excursions": excursion_figures(scope, exc, records.responses, agg["monitored_hours"]),
            }
        )
    return out


def grade_rows(scope: Scope, records: EnvironmentRecords, rows: dict[int, MonitorRow]) -> list[dict]:
    """``by_grade``: one row per grade present, A to CNC."""
    out = []
    for grade in GRADE_ORDER:
        room_ids = {r.id for r in scope.rooms.values() if r.grade == grade}
        area = _area(scope, records, rows, room_ids)
        if area is None:
            continue
        agg, exc = area
        out.append(
            {
                "grade": grade,
                "rooms": len(room_ids),
                **agg,
                "excursions": excursion_figures(scope, exc, records.responses, agg["monitored_hours"]),
            }
        )
    return out


def total_row(scope: Scope, records: EnvironmentRecords, rows: dict[int, MonitorRow]) -> dict:
    """``total``: the whole site (every excursion of the period, whatever its room)."""
    total = totals(list(rows.values()))
    total["excursions"] = excursion_figures(
        scope, records.excursions, records.responses, total["monitored_hours"]
    )
    return total


def heatmap(scope: Scope, excursions: list[Excursion], rooms: list[str]) -> dict:
    """Limit excursions per room (the rows of ``by_room``) and local month, by start."""
    room_index = {code: i for i, code in enumerate(rooms)}
    counts = [[0] * (len(scope.edges) - 1) for _ in rooms]
    for e in excursions:
        code = scope.room_code(e.room_id)
        if e.type == "limit" and code in room_index:
            counts[room_index[code]][month_index(e.started_at, scope.edges)] += 1
    return {"rooms": rooms, "months": month_labels(scope.period), "counts": counts}
