"""QA's pages for data leaving the site: the report of reads of donor records and the
exchange-package download (docs/exchange.md, docs/data-protection.md)."""

from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Annotated
from zoneinfo import ZoneInfo

from fastapi import APIRouter, BackgroundTasks, Form, Query, Request
from fastapi.responses import HTMLResponse, Response

from tracker.core.errors import InvalidInputError, Reason
from tracker.core.settings import get_settings
from tracker.core.timeutil import utcnow
from tracker.exchange.package import build_package
from tracker.quality.batches.identity import read_report
from tracker.web.deps import CurrentUser, SessionDep
from tracker.web.render import render
from tracker.web.sites import the_site

router = APIRouter(include_in_schema=False)


def anchor_directory() -> Path:
    """Where the anchor a package was cut at is written (as ``tracker audit anchor`` writes)."""
    settings = get_settings()
    return settings.audit_anchor_dir or settings.data_dir / "anchors"


def _day(text: str | None, tz: str, default: date) -> datetime:
    """The start of a day typed in a date field, in the site's time zone."""
    try:
        day = date.fromisoformat(text) if text else default
    except ValueError:
        raise InvalidInputError(
            Reason(f"{text[:40]!r} is not a date (YYYY-MM-DD)", f"{text[:40]!r} 不是日期（YYYY-MM-DD）")
        ) from None
    return datetime.combine(day, time(0), ZoneInfo(tz))


@router.get("/reads", response_class=HTMLResponse)
def reads_page(
    request: Request,
    me: CurrentUser,
    session: SessionDep,
    start: Annotated[str | None, Query(max_length=10)] = None,
    end: Annotated[str | None, Query(max_length=10)] = None,
    donor: Annotated[str | None, Query(max_length=100)] = None,
) -> HTMLResponse:
    """Who read or revealed which donors' records in a period (QA; GB/T 39725-2020 §8)."""
    tz = the_site(session).timezone
    today = utcnow().astimezone(ZoneInfo(tz)).date()
    since = _day(start, tz, today - timedelta(days=30))
    until = _day(end, tz, today) + timedelta(days=1)
    rows = read_report(
        session, start=since, end=until, donor=donor.strip() if donor and donor.strip() else None
    )
    return render(
        request,
        "reads.html",
        rows=rows,
        start=since.date().isoformat(),
        end=(until - timedelta(days=1)).date().isoformat(),
        donor=donor or "",
    )


@router.post("/exchange/package")
def package_download(
    request: Request,
    me: CurrentUser,
    session: SessionDep,
    background: BackgroundTasks,
    start: Annotated[str, Form(max_length=10)],
    end: Annotated[str, Form(max_length=10)],
    receiver: Annotated[str, Form(max_length=120)],
    readings: Annotated[bool, Form()] = False,
) -> Response:
    """An exchange package (zip, pseudonymised) of whole days in the site's time zone. The anchor
    it was cut at is written to the anchor directory once the request has committed."""
    tz = the_site(session).timezone
    today = utcnow().astimezone(ZoneInfo(tz)).date()
    since = _day(start, tz, today)
    until = min(_day(end, tz, today) + timedelta(days=1), utcnow())
    built = build_package(
        session, actor=me.actor(), start=since, end=until, receiver=receiver, readings=readings
    )
    background.add_task(built.anchor.write, anchor_directory())
    return Response(
        built.zip_bytes(),
        media_type="application/zip",
        headers={
            "Content-Disposition": f'attachment; filename="{built.name}.zip"',
            "Cache-Control": "no-store",
        },
        background=background,
    )
