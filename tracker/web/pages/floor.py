"""Dashboard (floor view with live updates), excursion queue, monitor detail with trend chart."""

from datetime import datetime, timedelta
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from sqlalchemy import func
from sqlmodel import select

from tracker.core.errors import NotFoundError, Reason, in_language
from tracker.core.timeutil import iso_utc, utcnow
from tracker.facility.inhibits import windows_by_monitor
from tracker.facility.limits import UNITS
from tracker.facility.models import Monitor, Room, Site
from tracker.facility.notify import VIABLE_TYPES
from tracker.monitoring.dashboard import floor_view
from tracker.monitoring.excursions import acknowledge, acknowledge_many, list_excursions
from tracker.monitoring.health import system_alarm_docs
from tracker.monitoring.readings import Reading
from tracker.notify.dispatcher import failed_target_docs
from tracker.quality.batches.linking import raise_deviation
from tracker.quality.deviations import classes as deviation_classes
from tracker.quality.views import QueueFilter, excursion_view, queue_page
from tracker.web.charts import control_svg, svg_policy, trend_svg
from tracker.web.deps import CurrentUser, RowId, SessionDep
from tracker.web.live import sse as live_sse
from tracker.web.live import stream as live_stream
from tracker.web.pages._common import form_instant
from tracker.web.render import back_path, done, gettext, render, tr
from tracker.web.sites import site_or_none, the_site

router = APIRouter(include_in_schema=False)
GRADES = ("A", "B", "C", "D", "CNC")


#: excursions a page of the dashboard's list and of the queue shows
DASHBOARD_PAGE = 30
QUEUE_PAGE = 50


def _live_context(session, page: int = 1) -> dict:
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
    waiting = queue_page(
        session, filters=QueueFilter(pending=True), offset=(page - 1) * DASHBOARD_PAGE, limit=DASHBOARD_PAGE
    )
    return {
        "view": view,
        "groups": groups,
        "colour": colour,
        "waiting": waiting,
        "page": page,
        "pages": max(1, -(-waiting.total // DASHBOARD_PAGE)),
        "system_alarms": system_alarm_docs(session, open_only=True, limit=50),
        "failed_targets": failed_target_docs(session),
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


Page = Annotated[int, Query(ge=1, le=100_000)]


@router.get("/", response_class=HTMLResponse)
def dashboard(request: Request, me: CurrentUser, session: SessionDep, page: Page = 1) -> HTMLResponse:
    return render(request, "dashboard.html", **_live_context(session, page))


@router.get("/dashboard/live", response_class=HTMLResponse)
def dashboard_live(request: Request, me: CurrentUser, session: SessionDep, page: Page = 1) -> HTMLResponse:
    """The part of the dashboard that the page's script refreshes without a reload."""
    return render(request, "_live.html", **_live_context(session, page))


@router.get("/dashboard/events")
async def dashboard_events(request: Request, me: CurrentUser) -> Response:
    """Server-sent events for the dashboard and the queue (``tracker.web.live``). It holds no
    database session: the process's one feed reads the database for every screen. A client that
    does not ask for ``text/event-stream`` gets the greeting alone (no endless answer)."""
    if "text/event-stream" not in request.headers.get("accept", ""):
        return Response(live_sse("hello", {"version": 0}), media_type="text/event-stream")
    settings = request.app.state.web_settings
    return StreamingResponse(
        live_stream(request.app, request.is_disconnected, max_seconds=settings.live_stream_seconds),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


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
    page: Page = 1,
) -> HTMLResponse:
    filters = QueueFilter(
        room=room or None,
        grade=grade or None,
        type=type or None,
        level=level or None,
        since=_when(since),
        until=_when(until),
        pending=show == "pending",
    )
    found = queue_page(session, filters=filters, offset=(page - 1) * QUEUE_PAGE, limit=QUEUE_PAGE)
    shown = {
        "room": room or "",
        "grade": grade or "",
        "type": type or "",
        "level": level or "",
        "since": since or "",
        "until": until or "",
        "show": show,
    }
    return render(
        request,
        "excursions.html",
        queue=found,
        rows=found.rows,
        page=page,
        pages=max(1, -(-found.total // QUEUE_PAGE)),
        query=urlencode({k: v for k, v in shown.items() if v}),
        rooms=sorted(session.exec(select(Room.code).where(Room.active)).all()),
        grades=GRADES,
        filters=shown,
        classes=("critical", "major", "minor"),
        units=UNITS,
    )


@router.get("/excursions/{excursion_id}", response_class=HTMLResponse)
def excursion_page(
    request: Request, me: CurrentUser, session: SessionDep, excursion_id: RowId
) -> HTMLResponse:
    view = excursion_view(session, excursion_id)
    viable = view.excursion["type"] in VIABLE_TYPES  # a plate's result: no monitor, no series to chart
    span_h = (view.chart_end - view.chart_start).total_seconds() / 3600
    chart = None
    if not viable:
        chart = "/monitors/{}/chart.svg?{}".format(
            view.excursion["monitor"],
            urlencode(
                {
                    "channel": view.excursion["channel"] or "",
                    "end": iso_utc(view.chart_end),
                    "hours": f"{span_h:.4f}",
                }
            ),
        )
    return render(
        request,
        "excursion.html",
        x=view,
        e=view.excursion,
        chart=chart,
        viable=viable,
        unit=UNITS.get(view.unit_kind, "cfu" if viable else ""),
        classes=deviation_classes(session, the_site(session)),  # the facility file's classes
    )


@router.post("/excursions/acknowledge")
def excursions_acknowledge(
    request: Request,
    me: CurrentUser,
    session: SessionDep,
    comment: Annotated[str, Form(max_length=2000)],
    ids: Annotated[list[RowId], Form(max_length=1000)] = [],  # noqa: B006  (FastAPI's form default)
) -> RedirectResponse:
    """Acknowledge the ticked excursions with one comment, each audited on its own."""
    done_, skipped = acknowledge_many(session, actor=me.actor(), excursion_ids=ids, comment=comment)
    message = tr(request, "Excursions acknowledged:") + f" {len(done_)}"
    if skipped:
        message += (
            " · "
            + tr(request, "skipped:")
            + " "
            + "; ".join(in_language(r, request.state.lang) for r in skipped)
        )
    return done(request, back_path(request, "/excursions"), message)


@router.post("/excursions/{excursion_id}/acknowledge")
def excursion_acknowledge(
    request: Request,
    me: CurrentUser,
    session: SessionDep,
    excursion_id: RowId,
    comment: Annotated[str, Form(max_length=2000)],
) -> RedirectResponse:
    acknowledge(session, actor=me.actor(), excursion_id=excursion_id, comment=comment)
    return done(request, back_path(request, "/excursions"), tr(request, "Excursion acknowledged."))


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
    also: Annotated[list[RowId], Form(max_length=1000)] = [],  # noqa: B006  (FastAPI's form default)
    again_reason: Annotated[str, Form(max_length=2000)] = "",
) -> RedirectResponse:
    dev = raise_deviation(
        session,
        actor=me.actor(),
        site=the_site(session),
        excursion_ids=[excursion_id, *(i for i in also if i != excursion_id)],
        title=title,
        classification=classification,
        category=category,
        description=description,
        again_reason=again_reason,
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
