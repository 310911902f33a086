"""Dashboard (floor view with live updates), excursion queue, monitor detail with trend chart."""

from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import func
from sqlmodel import select

from tracker.core.errors import NotFoundError, Reason
from tracker.core.timeutil import parse_instant, utcnow
from tracker.facility.inhibits import windows_by_monitor
from tracker.facility.limits import UNITS
from tracker.facility.models import Monitor, Room, Site
from tracker.monitoring.dashboard import floor_view
from tracker.monitoring.excursions import acknowledge, list_excursions
from tracker.monitoring.readings import Reading
from tracker.quality.batches.linking import raise_deviation
from tracker.web.charts import control_svg, svg_policy, trend_svg
from tracker.web.deps import CurrentUser, RowId, SessionDep
from tracker.web.pages._common import form_instant
from tracker.web.render import done, gettext, render, tr
from tracker.web.sites import site_or_none, the_site

router = APIRouter(include_in_schema=False)
GRADES = ("A", "B", "C", "D", "CNC")


def _live_context(session) -> dict:
    site = site_or_none(session)
    view = floor_view(session, site=site) if site else None
    groups: dict[str, list] = {}
    colour: dict[str, str] = {}
    if view:
        inhibited = _inhibited_monitors(session, view.as_of)
        for tile in view.rooms:
            groups.setdefault(tile.grade, []).append(tile)
            # a maintenance inhibit shows unless the room is in alert or action anyway
            held = any(v.monitor in inhibited for v in tile.values)
            colour[tile.code] = "inhibited" if held and tile.worst not in ("alert", "action") else tile.worst
    waiting = list_excursions(session, unacknowledged=True)
    waiting.reverse()
    return {
        "view": view,
        "groups": groups,
        "colour": colour,
        "waiting": waiting[:30],
        "waiting_total": len(waiting),
        "units": UNITS,
    }


def _inhibited_monitors(session, at: datetime | None) -> set[str]:
    if at is None:
        return set()
    codes = dict(session.exec(select(Monitor.id, Monitor.code)).all())
    return {
        codes[mid]
        for mid, windows in windows_by_monitor(session).items()
        if mid in codes and any(start <= at < end for start, end in windows)
    }


@router.get("/", response_class=HTMLResponse)
def dashboard(request: Request, me: CurrentUser, session: SessionDep) -> HTMLResponse:
    return render(request, "dashboard.html", **_live_context(session))


@router.get("/dashboard/live", response_class=HTMLResponse)
def dashboard_live(request: Request, me: CurrentUser, session: SessionDep) -> HTMLResponse:
    """The part of the dashboard that the page's script refreshes without a reload."""
    return render(request, "_live.html", **_live_context(session))


def _when(text: str | None) -> datetime | None:
    if not text:
        return None
    return form_instant(text)


@router.get("/excursions", response_class=HTMLResponse)
def excursion_queue(
    request: Request,
    me: CurrentUser,
    session: SessionDep,
    room: Annotated[str | None, Query(max_length=40)] = None,
    grade: Annotated[str | None, Query(max_length=3)] = None,
    type: Annotated[str | None, Query(max_length=20)] = None,
    level: Annotated[str | None, Query(max_length=16)] = None,
    since: Annotated[str | None, Query(max_length=40)] = None,
    until: Annotated[str | None, Query(max_length=40)] = None,
    show: Annotated[str, Query(pattern="^(pending|all)$")] = "pending",
) -> HTMLResponse:
    rows = list_excursions(session, room=room or None, type_=type or None, unacknowledged=show == "pending")
    grades = dict(session.exec(select(Room.code, Room.grade)).all())
    start, end = _when(since), _when(until)
    rows = [
        r
        for r in rows
        if (not level or r["level"] == level)
        and (not grade or grades.get(r["room"]) == grade)
        and (start is None or parse_instant(r["ended_at"] or r["started_at"]) >= start)
        and (end is None or parse_instant(r["started_at"]) <= end)
    ]
    rows.reverse()
    return render(
        request,
        "excursions.html",
        rows=rows,
        rooms=sorted(grades),
        grades=GRADES,
        filters={
            "room": room or "",
            "grade": grade or "",
            "type": type or "",
            "level": level or "",
            "since": since or "",
            "until": until or "",
            "show": show,
        },
        classes=("critical", "major", "minor"),
    )


@router.post("/excursions/{excursion_id}/acknowledge")
def excursion_acknowledge(
    request: Request,
    me: CurrentUser,
    session: SessionDep,
    excursion_id: RowId,
    comment: Annotated[str, Form(max_length=2000)],
) -> RedirectResponse:
    acknowledge(session, actor=me.actor(), excursion_id=excursion_id, comment=comment)
    return done(request, "/excursions", tr(request, "Excursion acknowledged."))


@router.post("/excursions/{excursion_id}/deviation")
def excursion_deviation(
    request: Request,
    me: CurrentUser,
    session: SessionDep,
    excursion_id: RowId,
    title: Annotated[str, Form(max_length=200)],
    classification: Annotated[str, Form(max_length=20)],
    category: Annotated[str, Form(max_length=60)],
    description: Annotated[str, Form(max_length=5000)],
) -> RedirectResponse:
    dev = raise_deviation(
        session,
        actor=me.actor(),
        site=the_site(session),
        excursion_ids=[excursion_id],
        title=title,
        classification=classification,
        category=category,
        description=description,
    )
    return done(request, f"/deviations/{dev.number}", tr(request, "Deviation raised:") + f" {dev.number}")


def _monitor(session, code: str) -> Monitor:
    mon = session.exec(select(Monitor).where(Monitor.code == code)).first()
    if mon is None:
        raise NotFoundError(Reason(f"no monitor {code!r}", f"没有监测点 {code!r}"))
    return mon


def _window(session, mon: Monitor, hours: float, end: str | None) -> tuple[datetime, datetime]:
    if end:
        stop = _when(end)
    else:
        stop = session.exec(select(func.max(Reading.event_time)).where(Reading.monitor_id == mon.id)).one()
        stop = stop or utcnow()
    return stop - timedelta(hours=hours), stop


@router.get("/monitors/{code}", response_class=HTMLResponse)
def monitor_page(
    request: Request,
    me: CurrentUser,
    session: SessionDep,
    code: str,
    hours: Annotated[float, Query(gt=0, le=24 * 31)] = 6,
    end: Annotated[str | None, Query(max_length=40)] = None,
    channel: Annotated[str | None, Query(max_length=8)] = None,
) -> HTMLResponse:
    mon = _monitor(session, code)
    room = session.get(Room, mon.room_id)
    channels = [c for c in mon.channels.split(",") if c] or [""]
    chosen = channel if channel in channels else channels[0]
    start, stop = _window(session, mon, hours, end)
    excursions = [e for e in list_excursions(session, room=room.code) if e["monitor"] == mon.code]
    excursions.reverse()
    return render(
        request,
        "monitor.html",
        monitor=mon,
        room=room,
        channels=channels,
        channel=chosen,
        hours=hours,
        end=end or "",
        start_at=start,
        end_at=stop,
        excursions=excursions[:50],
        unit=UNITS[mon.kind],
    )


@router.get("/monitors/{code}/chart.svg")
def monitor_chart(
    request: Request,
    me: CurrentUser,
    session: SessionDep,
    code: str,
    hours: Annotated[float, Query(gt=0, le=24 * 31)] = 6,
    end: Annotated[str | None, Query(max_length=40)] = None,
    channel: Annotated[str, Query(max_length=8)] = "",
) -> Response:
    mon = _monitor(session, code)
    start, stop = _window(session, mon, hours, end)
    _ = gettext(request)
    labels = {k: _(k) for k in ("alert", "action", "at_rest", "in_operation", mon.kind)}
    labels["readings"] = _("Readings")
    svg = trend_svg(session, mon, channel, start, stop, labels=labels)
    return Response(
        svg,
        media_type="image/svg+xml",
        headers={"Cache-Control": "no-store", "Content-Security-Policy": svg_policy(svg)},
    )


def _control_chart(session, mon: Monitor, channel: str, days: float, end: str | None):
    from tracker.monitoring.trending.store import chart

    start, stop = _window(session, mon, days * 24, end)
    start = start.replace(minute=0, second=0, microsecond=0)
    return chart(session, mon, channel, start, stop)


@router.get("/monitors/{code}/control", response_class=HTMLResponse)
def control_page(
    request: Request,
    me: CurrentUser,
    session: SessionDep,
    code: str,
    days: Annotated[float, Query(gt=0, le=366)] = 14,
    end: Annotated[str | None, Query(max_length=40)] = None,
    channel: Annotated[str | None, Query(max_length=8)] = None,
) -> HTMLResponse:
    """The monitor's control chart: baseline and limits, the run rules that fired and why, and
    its change points (docs/trending.md)."""
    mon = _monitor(session, code)
    channels = [c for c in mon.channels.split(",") if c] or [""]
    chosen = channel if channel in channels else channels[0]
    c = _control_chart(session, mon, chosen, days, end)
    return render(
        request,
        "control.html",
        monitor=mon,
        room=session.get(Room, mon.room_id),
        channels=channels,
        channel=chosen,
        days=days,
        end=end or "",
        chart=c.as_dict(),
        unit=UNITS[mon.kind],
    )


@router.get("/monitors/{code}/control.svg")
def control_chart_svg(
    request: Request,
    me: CurrentUser,
    session: SessionDep,
    code: str,
    days: Annotated[float, Query(gt=0, le=366)] = 14,
    end: Annotated[str | None, Query(max_length=40)] = None,
    channel: Annotated[str, Query(max_length=8)] = "",
) -> Response:
    mon = _monitor(session, code)
    c = _control_chart(session, mon, channel, days, end)
    _ = gettext(request)
    labels = {
        mon.kind: _(mon.kind),
        "means": _("Hourly means"),
        "center": _("Centre line"),
        "limits": _("Control limits (3σ)"),
        "signals": _("Run rule fired"),
        "change_points": _("Change point"),
    }
    svg = control_svg(c, session.get(Site, mon.site_id).timezone, labels=labels)
    return Response(
        svg,
        media_type="image/svg+xml",
        headers={"Cache-Control": "no-store", "Content-Security-Policy": svg_policy(svg)},
    )
