"""Issue 4: the annual evaluation report.

A synthetic year (2025, Asia/Shanghai) whose figures are known by construction: hourly rollups
written for every monitor and hour, a handful of excursions, deviations, CAPA and batches made
through the services at dated moments. The JSON numbers are checked exactly, the JSON against its
schema, the PDF's Chinese headings with ``pdftotext`` and its first pages with ``pdftoppm``. A
second test ingests real readings and checks the report's figures against them.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from sqlalchemy import Engine
from sqlmodel import select

from tests.conftest import MIN_FACILITY, operate
from tests.factories import PASSWORD, T0, assess_coverage, make_people, particles, scalar, topic
from tracker.core.db import bulk_insert, get_engine, time_param, unit_of_work
from tracker.core.errors import ConflictError, InvalidInputError, NotFoundError, PermissionDeniedError
from tracker.facility.basis import basis_id
from tracker.facility.file import parse_facility
from tracker.facility.limits import load_limit_set
from tracker.facility.load import load_facility
from tracker.facility.models import Monitor, Room, get_site
from tracker.identity.users import login
from tracker.ingest.processor import BatchProcessor, InboundMessage
from tracker.monitoring.excursions import REPLAY_REASON, Excursion, acknowledge, supersede_excursion
from tracker.monitoring.intake import Intake
from tracker.monitoring.rollups import COLUMNS, RollupHourly, bin_of, verify_rollups
from tracker.quality import deviations as dv
from tracker.quality.batches.linking import decide_link, links_of, sync_links
from tracker.quality.batches.release import qa_review, reject, release, sign_production
from tracker.quality.batches.steps import complete_batch, create_batch, end_step, get_batch, start_step
from tracker.reports import signoff
from tracker.reports.annual.document import (
    Period,
    build_annual_report,
    pct,
    report_schema,
    signed_content,
    validate_report,
    year_period,
)
from tracker.reports.render import render_html, render_pdf

ROOT = Path(__file__).resolve().parent.parent
TZ = "Asia/Shanghai"
YEAR = 2025
PERIOD = year_period(TZ, YEAR)  # 2024-12-31T16:00Z … 2025-12-31T16:00Z
HOURS = 8760
SUPERSEDED_WHY = "room state at_rest from 2025-07-01T00:00:00+00:00 recorded by qa1: door log"
NOW = datetime(2026, 2, 1, tzinfo=UTC)  # the report is built after the year ended


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def local(*args: int) -> datetime:
    from zoneinfo import ZoneInfo

    return datetime(*args, tzinfo=ZoneInfo(TZ)).astimezone(UTC)


def at(engine: Engine, username: str, when: datetime):
    """A fresh authentication of ``username`` at ``when`` (signatures dated inside 2025)."""
    return login(engine, username=username, password=PASSWORD, now=when)


def validate(report: dict) -> None:
    jsonschema.Draft202012Validator.check_schema(report_schema())
    validate_report(report)


# --------------------------------------------------------------------------- the synthetic year

C1_SILENT = (local(2025, 3, 10), local(2025, 3, 11))  # T-C1-PC silent for one local day (24 h)
T_BAD_HOUR = utc(2025, 8, 1, 4)  # T-B1-T: 10 valid + 50 invalid readings
DP_ALERT_HOURS = (utc(2025, 6, 1, 0), utc(2025, 6, 1, 1))  # T-B1-DP: 36 readings at alert in each
DP_ACTION_HOUR = utc(2025, 6, 2, 0)  # T-B1-DP: all 360 readings at action
B1PC_HIGH_MONTH = 5  # T-B1-PC ≥0.5: 4 of 60 readings high in May, when room T-B1 is in operation
B1PC_REST_MONTH = 8  # T-B1-PC ≥0.5: 10 of 60 readings at 5,000 in Aug, at rest (action 3,520 at rest)
BSC_HIGH_MONTH = 9  # T-BSC-PC ≥0.5: 4 of 60 readings at 5,000 in Sep
T_B1_MONITORS = ("T-B1-PC", "T-B1-DP", "T-B1-T", "T-B1-H")  # in operation all May (local)


def month_local(hour: datetime) -> int:
    from zoneinfo import ZoneInfo

    return hour.astimezone(ZoneInfo(TZ)).month


def rollup_rows(monitors: dict[str, Monitor], dialect: str) -> list[tuple]:
    """One row per monitor, channel and hour of the year, as ingest would have written them."""
    to_db = time_param(dialect)
    rows = []
    for h in range(HOURS):
        hour = PERIOD.start + timedelta(hours=h)
        month = month_local(hour)
        for code, mon in monitors.items():
            if code == "T-C1-PC" and C1_SILENT[0] <= hour < C1_SILENT[1]:
                continue
            state = "in_operation" if code in T_B1_MONITORS and month == B1PC_HIGH_MONTH else "at_rest"
            per_hour = int(3600 // mon.interval_s)
            for channel in mon.channels.split(",") if mon.channels else [""]:
                count, invalid, n_alert, n_action = per_hour, 0, 0, 0
                values: dict[float, int] = {}
                if mon.kind == "particles":
                    base = 1000.0 if code == "T-B1-PC" and channel == "0.5" else 0.0
                    values = {base: per_hour}
                    if code == "T-B1-PC" and channel == "0.5" and month == B1PC_HIGH_MONTH:
                        values = {1000.0: 56, 100000.0: 4}
                    if code == "T-B1-PC" and channel == "0.5" and month == B1PC_REST_MONTH:
                        values = {1000.0: 50, 5000.0: 10}
                    if code == "T-BSC-PC" and channel == "0.5" and month == BSC_HIGH_MONTH:
                        values = {0.0: 56, 5000.0: 4}
                elif mon.kind == "pressure":
                    values = {15.0: per_hour}
                    if code == "T-B1-DP" and hour in DP_ALERT_HOURS:
                        values, n_alert = {15.0: 324, 11.0: 36}, 36
                    if code == "T-B1-DP" and hour == DP_ACTION_HOUR:
                        values, n_action = {-1.0: 360}, 360
                elif mon.kind == "temperature":
                    values = {21.0: per_hour}
                    if code == "T-B1-T" and hour == T_BAD_HOUR:
                        count, invalid, values = 10, 50, {21.0: 10}
                else:
                    values = {50.0: per_hour}
                hist: dict[int, int] = {}
                for v, n in values.items():
                    b = bin_of(mon.kind, v)
                    hist[b] = hist.get(b, 0) + n
                rows.append(
                    (
                        mon.id,
                        channel,
                        to_db(hour),
                        state,
                        count,
                        invalid,
                        n_alert,
                        n_action,
                        0,
                        min(values),
                        max(values),
                        sum(v * n for v, n in values.items()),
                        json.dumps(dict(sorted(hist.items())), separators=(",", ":")),
                    )
                )
    return rows


def add_excursion(
    session,
    monitors,
    rooms,
    basis: int,
    *,
    monitor: str,
    type_: str = "limit",
    level: str,
    start: datetime,
    end: datetime | None,
    channel: str = "",
    status: str | None = None,
    superseded_by: str | None = None,
    superseded_reason: str | None = None,
) -> int:
    mon = monitors[monitor]
    row = Excursion(
        type=type_,
        site_id=mon.site_id,
        monitor_id=mon.id,
        room_id=mon.room_id,
        kind=mon.kind,
        channel=channel,
        level=level,
        state="in_operation",
        status=status or ("open" if end is None else "closed"),
        direction="high",
        started_at=start,
        ended_at=end,
        peak=1.0,
        limit_value=0.5,
        readings=3,
        basis_id=basis,
        created_at=start,
        updated_at=end or start,
        superseded_by=superseded_by,
        superseded_reason=superseded_reason,
    )
    session.add(row)
    session.flush()
    return row.id


def build_year(engine: Engine) -> dict:
    """Facility, people, batches, excursions, deviations, CAPA and the rollups of 2025."""
    text = MIN_FACILITY.read_text()
    with unit_of_work(engine) as s:
        load_facility(s, parse_facility(text), actor="test", now=utc(2024, 10, 1))
    make_people(engine)
    ids: dict = {}

    # -- batches (before the rollups: recording a step re-judges the room's readings) ------------
    def batch(number, product, donor, room, start, end, when):
        with unit_of_work(engine) as s:
            b = create_batch(
                s,
                actor=at(engine, "op1", when),
                site=get_site(s),
                number=number,
                product=product,
                donor_id=donor,
                now=when,
            )
            step = start_step(
                s,
                actor=at(engine, "op1", when),
                batch=b,
                name="seeding",
                room_code=room,
                start=start,
                open_processing=True,
                now=when,
            )
        with unit_of_work(engine) as s:
            end_step(s, signer=at(engine, "op1", end), step_id=step.id, end=end, now=end)
            complete_batch(s, actor=at(engine, "op1", end), batch=get_batch(s, number), now=end)

    batch("CT-1", "CAR-T", "D-1", "T-B1-BSC", utc(2025, 4, 1, 2), utc(2025, 4, 1, 4), utc(2025, 4, 1, 2))
    batch("CT-2", "CAR-T", "D-2", "T-B1-BSC", utc(2025, 9, 5, 1), utc(2025, 9, 5, 3), utc(2025, 9, 5, 1))
    batch("MSC-1", "MSC", "D-3", "T-B1-BSC", utc(2025, 12, 20, 1), utc(2025, 12, 20, 2), utc(2025, 12, 20, 1))
    batch(
        "MSC-2",
        "MSC",
        "D-4",
        "T-B1",
        utc(2025, 12, 20, 1, 30),
        utc(2025, 12, 20, 2, 30),
        utc(2025, 12, 20, 1, 30),
    )
    assess_coverage(engine, "CT-1")  # its step ran with no particle readings (issue 14 item 5)
    with unit_of_work(engine) as s:
        when = utc(2025, 4, 10)
        sign_production(s, signer=at(engine, "prod", when), batch=get_batch(s, "CT-1"), now=when)
        qa_review(s, signer=at(engine, "qa1", when), batch=get_batch(s, "CT-1"), now=when)
        release(s, signer=at(engine, "qp1", when), batch=get_batch(s, "CT-1"), now=when)

    # -- excursions (written as the engine writes them) -------------------------------------------
    with unit_of_work(engine) as s:
        site = get_site(s)
        ls = load_limit_set(site.limit_set)
        basis = basis_id(
            s, site_id=site.id, code=ls.code, version=ls.version, sha256=ls.sha256, revision=site.revision
        )
        monitors = {m.code: m for m in s.exec(select(Monitor))}
        rooms = {r.code: r for r in s.exec(select(Room))}
        add = lambda **kw: add_excursion(s, monitors, rooms, basis, **kw)  # noqa: E731
        ids["bsc"] = add(
            monitor="T-BSC-PC",
            channel="0.5",
            level="action",
            start=utc(2025, 9, 5, 2),
            end=utc(2025, 9, 5, 2, 30),
        )
        add(
            monitor="T-B1-PC",
            channel="0.5",
            level="alert",
            start=utc(2025, 5, 10, 0),
            end=utc(2025, 5, 10, 1),
        )
        add(monitor="T-B1-DP", level="alert", start=utc(2025, 6, 1, 0), end=utc(2025, 6, 1, 2))
        add(monitor="T-B1-DP", level="action", start=utc(2025, 6, 2, 0), end=utc(2025, 6, 2, 1))
        add(monitor="T-C1-PC", type_="data_gap", level="action", start=C1_SILENT[0], end=C1_SILENT[1])
        add(
            monitor="T-B1-PC",
            channel="0.5",
            level="alert",
            start=utc(2025, 7, 1),
            end=utc(2025, 7, 1, 1),
            status="superseded",
            superseded_by="qa1",
            superseded_reason=SUPERSEDED_WHY,
        )  # excluded: superseded (by a room-state correction)
        replayed = s.get(
            Excursion,
            add(
                monitor="T-C1-PC",
                channel="0.5",
                level="alert",
                start=utc(2025, 10, 1),
                end=utc(2025, 10, 1, 1),
            ),
        )
        supersede_excursion(s, replayed, utc(2025, 10, 2), REPLAY_REASON)  # by the ingester, after late data
        add(
            monitor="T-B1-PC",
            channel="0.5",
            level="action",
            start=utc(2024, 12, 31, 15),
            end=utc(2024, 12, 31, 17),
        )  # excluded: began in 2024
        add(monitor="T-B1-T", level="alert", start=utc(2025, 12, 31, 15), end=None)  # open at year end
        sync_links(s, batch=get_batch(s, "CT-2"), now=utc(2025, 9, 5, 4))
        (link,) = links_of(s, get_batch(s, "CT-2"))
        decide_link(
            s,
            signer=at(engine, "qa1", utc(2025, 9, 5, 4)),
            link_id=link.id,
            exposed=True,
            reason="open seeding during the action excursion",
            now=utc(2025, 9, 5, 4),
        )

    # -- deviations and CAPA, in the order they were opened ---------------------------------------
    def qa(user, when):
        return at(engine, user, when)

    with unit_of_work(engine) as s:  # DEV-2024-0001: opened last year, still open
        dv.open_deviation(
            s,
            actor=qa("qa1", utc(2024, 11, 1)),
            site=get_site(s),
            title="SOP overdue",
            classification="minor",
            category="documentation",
            description="x",
            now=utc(2024, 11, 1),
        )
    with unit_of_work(engine) as s:  # DEV-2025-0001: minor, closed without CAPA after 70 days
        d = dv.open_deviation(
            s,
            actor=qa("qa1", utc(2025, 2, 1)),
            site=get_site(s),
            title="form version",
            classification="minor",
            category="documentation",
            description="x",
            now=utc(2025, 2, 1),
        )
        dv.start_investigation(s, actor=qa("qa1", utc(2025, 2, 2)), dev=d, now=utc(2025, 2, 2))
        dv.update_deviation(
            s,
            actor=qa("qa1", utc(2025, 2, 2)),
            dev=d,
            reason="finding",
            root_cause="form version not controlled",
            now=utc(2025, 2, 2),
        )
        dv.approve_investigation(s, signer=qa("qa2", utc(2025, 2, 3)), dev=d, now=utc(2025, 2, 3))
        dv.justify_no_capa(
            s, actor=qa("qa1", utc(2025, 4, 12)), dev=d, justification="one-off", now=utc(2025, 4, 12)
        )
        dv.close_deviation(
            s, signer=qa("qa2", utc(2025, 4, 12)), dev=d, now=utc(2025, 4, 12)
        )  # not the author
    with unit_of_work(engine) as s:  # DEV-2025-0002: critical, from the BSC excursion, closed in 10 days
        when = utc(2025, 9, 5, 5)  # 3 h after the excursion began (the link decision came first)
        d = dv.open_deviation(
            s,
            actor=qa("qa1", when),
            site=get_site(s),
            title="BSC particles",
            classification="critical",
            category="environment",
            description="x",
            excursion_ids=[ids["bsc"]],
            now=when,
        )
        b = get_batch(s, "CT-2")
        dv.attach_batch(s, dev=d, batch_id=b.id, actor="qa1", batch_number=b.number, now=when)
        dv.start_investigation(s, actor=qa("qa1", when), dev=d, now=when)
        dv.update_deviation(
            s, actor=qa("qa1", when), dev=d, reason="finding", root_cause="HEPA filter leak", now=when
        )
        dv.assess_impact(
            s,
            actor=qa("qa1", when),
            dev=d,
            batch_id=b.id,
            batch_number=b.number,
            impact="significant",
            assessment="open seeding exposed",
            now=when,
        )
        dv.approve_investigation(s, signer=qa("qa2", utc(2025, 9, 6)), dev=d, now=utc(2025, 9, 6))
        c1 = dv.add_capa(
            s,
            actor=qa("qa1", utc(2025, 9, 6)),
            dev=d,
            kind="corrective",
            description="replace HEPA",
            owner="prod",
            due=date(2025, 9, 12),
            now=utc(2025, 9, 6),
        )
        c2 = dv.add_capa(
            s,
            actor=qa("qa1", utc(2025, 9, 6)),
            dev=d,
            kind="preventive",
            description="leak test",
            owner="prod",
            due=date(2025, 10, 1),
            now=utc(2025, 9, 6),
        )
        dv.complete_capa(
            s,
            actor=at(engine, "prod", utc(2025, 9, 10)),
            capa_id=c1.id,
            outcome="replaced",
            now=utc(2025, 9, 10),
        )
        dv.close_deviation(s, signer=qa("qa2", utc(2025, 9, 15, 5)), dev=d, now=utc(2025, 9, 15, 5))
        dv.complete_capa(
            s, actor=at(engine, "prod", utc(2025, 11, 1)), capa_id=c2.id, outcome="done", now=utc(2025, 11, 1)
        )
        dv.check_effectiveness(
            s,
            actor=qa("qa2", utc(2025, 12, 1)),
            capa_id=c2.id,
            effective=True,
            note="no recurrence",
            now=utc(2025, 12, 1),
        )
    with unit_of_work(engine) as s:  # CT-2 rejected by the QP
        reject(
            s,
            signer=at(engine, "qp1", utc(2025, 9, 20)),
            batch=get_batch(s, "CT-2"),
            reason="exposed to a grade A action excursion",
            now=utc(2025, 9, 20),
        )
    with unit_of_work(engine) as s:  # DEV-2025-0003: major, same cause as 0002 → recurrent; open at end
        when = utc(2025, 11, 1)
        d = dv.open_deviation(
            s,
            actor=qa("qa1", when),
            site=get_site(s),
            title="BSC again",
            classification="major",
            category="environment",
            description="x",
            now=when,
        )
        dv.start_investigation(s, actor=qa("qa1", when), dev=d, now=when)
        dv.update_deviation(
            s, actor=qa("qa1", when), dev=d, reason="finding", root_cause=" hepa  FILTER leak", now=when
        )
        dv.approve_investigation(s, signer=qa("qa2", utc(2025, 11, 2)), dev=d, now=utc(2025, 11, 2))
        dv.add_capa(
            s,
            actor=qa("qa1", utc(2025, 11, 5)),
            dev=d,
            kind="corrective",
            description="re-test",
            owner="prod",
            due=date(2025, 11, 20),
            now=utc(2025, 11, 5),
        )

    # -- a limit change approved by QA in June ----------------------------------------------------
    when = utc(2025, 6, 15)
    with unit_of_work(engine) as s:
        load_facility(
            s,
            parse_facility(text.replace("alert_low = 12.0", "alert_low = 13.0")),
            actor="admin",
            approver=at(engine, "qa1", when),
            now=when,
        )

    # -- the rollups of the year (last: nothing above re-judges them away) ------------------------
    with unit_of_work(engine) as s:
        monitors = {m.code: m for m in s.exec(select(Monitor).order_by(Monitor.code))}
        connection = s.connection()
        rows = rollup_rows(monitors, connection.dialect.name)
        bulk_insert(connection, RollupHourly.__table__, COLUMNS, rows)
    return ids


@pytest.fixture(scope="module")
def year_db(databases) -> Iterator[str]:
    url = databases.new()
    build_year(get_engine(url))
    yield url
    databases.drop(url)


@pytest.fixture(scope="module")
def year_report(year_db: str) -> dict:
    with unit_of_work(get_engine(year_db)) as s:
        return build_annual_report(s, site=get_site(s), period=PERIOD, now=NOW)


# --------------------------------------------------------------------------- exact figures


def test_synthetic_year_figures_are_exact(year_report: dict) -> None:
    r = year_report
    validate(r)
    assert (r["period"]["start"], r["period"]["end"]) == ("2024-12-31T16:00:00Z", "2025-12-31T16:00:00Z")
    assert r["period"]["months"][0] == "2025-01"
    assert len(r["period"]["months"]) == 12

    # completeness and readings, monitor by monitor
    mon = {m["monitor"]: m for m in r["environment"]["monitors"]}
    year_min = HOURS * 60
    assert (mon["T-B1-PC"]["expected"], mon["T-B1-PC"]["valid"]) == (2 * year_min, 2 * year_min)
    assert mon["T-C1-PC"]["expected"] == 2 * year_min
    assert mon["T-C1-PC"]["valid"] == 2 * (HOURS - 24) * 60 == 1_048_320
    assert mon["T-C1-PC"]["completeness_pct"] == pct(1_048_320, 1_051_200) == 99.726
    assert mon["T-C1-PC"]["monitored_hours"] == HOURS - 24
    assert (mon["T-B1-T"]["readings"], mon["T-B1-T"]["valid"], mon["T-B1-T"]["invalid"]) == (
        year_min,
        year_min - 50,
        50,
    )
    assert mon["T-B1-DP"]["expected"] == HOURS * 360 == 3_153_600
    assert (mon["T-B1-DP"]["at_alert"], mon["T-B1-DP"]["at_action"]) == (72, 360)
    total = r["environment"]["total"]
    assert total["readings"] == 10_509_120
    assert total["valid"] == 10_509_070
    assert total["expected"] == 10_512_000
    assert total["completeness_pct"] == 99.972
    assert total["monitored_hours"] == 7 * HOURS - 24

    # excursions: started in 2025, not superseded; limit ones at their level
    ex = total["excursions"]
    assert (ex["alert"], ex["action"]) == (3, 2)
    assert ex["by_type"] == {"limit": 5, "data_gap": 1, "recurrence": 0, "adverse_trend": 0, "recovery": 0}
    assert ex["per_1000_h"] == round(1000 * 5 / (7 * HOURS - 24), 3) == 0.082
    assert ex["longest"]["hours"] == 2.0
    assert ex["longest"]["monitor"] == "T-B1-DP"
    # QA's first response to the BSC excursion: the link decision 2 h after it began
    assert ex["time_to_response_h"] == {"responded": 1, "without_response": 4, "median": 2.0, "max": 2.0}
    grades = {g["grade"]: g for g in r["environment"]["by_grade"]}
    assert set(grades) == {"A", "B", "C", "D"}
    assert (grades["A"]["excursions"]["action"], grades["A"]["excursions"]["per_1000_h"]) == (1, 0.114)
    assert (grades["B"]["excursions"]["alert"], grades["B"]["excursions"]["action"]) == (3, 1)
    assert grades["B"]["monitored_hours"] == 4 * HOURS
    assert grades["B"]["excursions"]["per_1000_h"] == round(4000 / (4 * HOURS), 3)
    assert grades["C"]["excursions"]["by_type"]["data_gap"] == 1
    assert grades["C"]["completeness_pct"] == 99.726
    # the open T-B1-T excursion runs to the period end: 1 h
    cond = {c["monitor"]: c for c in r["conditions"]["monitors"]}
    assert cond["T-B1-T"]["excursions"] == {"alert": 1, "action": 0, "hours": 1.0, "longest_h": 1.0}
    heat = r["environment"]["heatmap"]
    row = heat["counts"][heat["rooms"].index("T-B1")]
    assert row == [0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 0, 1]
    assert heat["counts"][heat["rooms"].index("T-B1-BSC")] == [0] * 8 + [1, 0, 0, 0]

    # pressure: share of readings within limits; the alert limit changed in June (revision 2)
    dp = cond["T-B1-DP"]
    assert dp["within_limits_pct"] == pct(3_153_600 - 72 - 360, 3_153_600) == 99.986
    assert dp["within_action_pct"] == pct(3_153_600 - 360, 3_153_600) == 99.989
    assert dp["reference"] == "T-C1"
    assert dp["limits"]["in_operation"]["alert_low"] == 13.0
    assert dp["monthly"][5] == {
        "min": -1.0,
        "mean": round((15 * 360 * 717 + 324 * 15 * 2 + 36 * 11 * 2 - 360) / (720 * 360), 3),
        "max": 15.0,
    }

    # particles: monthly P95 per room state from the histograms (upper bin edges, capped at the
    # month's maximum), each against its own state's limits
    p95 = {(p["monitor"], p["channel"]): p for p in r["environment"]["particles"]}
    b1 = p95[("T-B1-PC", "0.5")]["states"]
    high, rest = B1PC_HIGH_MONTH - 1, B1PC_REST_MONTH - 1
    assert b1["in_operation"]["monthly_p95"] == [None] * high + [100000.0] + [None] * (11 - high)
    assert b1["at_rest"]["monthly_p95"][high] is None
    assert b1["at_rest"]["monthly_p95"][rest] == 5000.0
    assert [v for i, v in enumerate(b1["at_rest"]["monthly_p95"]) if i not in (high, rest)] == [1000.0] * 10
    bsc = p95[("T-BSC-PC", "0.5")]["states"]
    assert bsc["at_rest"]["monthly_p95"][BSC_HIGH_MONTH - 1] == 5000.0
    assert bsc["at_rest"]["limits"]["action_high"] == bsc["in_operation"]["limits"]["action_high"] == 3520.0
    assert bsc["at_rest"]["months_p95_above_action"] == 1
    assert p95[("T-C1-PC", "5.0")]["states"]["at_rest"]["monthly_p95"] == [0.0] * 12

    # deviations
    d = r["deviations"]
    assert d["total"] == 3
    assert d["by_classification"] == {"critical": 1, "major": 1, "minor": 1}
    assert d["by_category"] == [
        {"category": "environment", "count": 2, "cumulative_pct": 66.667},
        {"category": "documentation", "count": 1, "cumulative_pct": 100.0},
    ]
    assert (d["closed_in_period"], d["closed_within_target"]) == (2, 1)
    assert d["days_to_close"] == {"median": 40.0, "max": 70.0}
    assert d["open_at_end"] == ["DEV-2024-0001", "DEV-2025-0003"]
    assert d["recurrent"] == [{"number": "DEV-2025-0003", "repeats": ["DEV-2025-0002"]}]
    assert (d["batches_affected"], d["impact"]) == (1, {"significant": 1})
    assert [c["number"] for c in d["major_incident_class"]] == ["DEV-2025-0002"]
    mi = r["summary"]["major_incidents"]
    assert (mi["count"], mi["deviations"], mi["classes"]) == (1, ["DEV-2025-0002"], ["critical"])
    assert (mi["status"], mi["incidents"], mi["confirmation"]) == ("pending", None, None)
    assert "分类为“重大”的偏差 1 起（DEV-2025-0002）" in mi["statement_zh"]
    assert "待质量管理部门评估确认" in mi["statement_zh"]

    # CAPA, as at the end of the year
    c = r["capa"]
    assert (c["total"], c["by_kind"]) == (3, {"corrective": 2, "preventive": 1})
    assert c["status_at_end"] == {"open": 1, "done": 1, "effective": 1, "not_effective": 0}
    assert (c["overdue"], c["effective_pct"]) == (1, 100.0)

    # batches, exposure, flags
    p = r["production"]
    assert (p["started"], p["released"], p["rejected"], p["open_at_end"]) == (4, 1, 1, 2)
    assert p["by_product"] == [
        {"product": "CAR-T", "started": 2, "released": 1, "rejected": 1, "open_at_end": 0},
        {"product": "MSC", "started": 2, "released": 0, "rejected": 0, "open_at_end": 2},
    ]
    assert p["by_month"] == [0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 2]
    assert (p["donors"], p["process_steps"]) == (4, 4)
    tr = r["traceability"]
    assert tr["exposed"] == [
        {"batch": "CT-2", "product": "CAR-T", "excursions": [1], "action": True, "disposition": "rejected"}
    ]
    assert tr["flag_counts"] == {
        "segregation": 2,
        "a_in_c": 0,
        "a_background_below_c": 0,
        "open_not_grade_a": 1,
    }
    assert tr["flagged_batches"] == 2

    # limit changes, integrity, comparison
    (change,) = r["limit_changes"]["changes"]
    assert (change["revision"], change["at"], change["approved_by"]) == (
        2,
        "2025-06-15T00:00:00Z",
        "QA 刘洋 Liu Yang",
    )
    assert r["limit_changes"]["in_force_at_end"]["revision"] == 2
    integ = r["data_integrity"]
    assert integ["audit_chain"]["intact"] is True
    assert integ["signatures"]["broken"] == 0
    assert integ["signatures"]["in_period"] > 0
    assert integ["records"]["rollup_rows"] == (3 * 2 + 4) * HOURS - 2 * 24
    assert integ["records"]["excursions"] == 6
    assert integ["records"]["excursions_superseded"] == 2
    assert r["comparison"]["period"] == "2024"
    assert r["comparison"]["key_figures"]["deviations"] == 1
    assert r["comparison"]["key_figures"]["completeness_pct"] is None
    assert {s["section"] for s in r["inputs_required"]} == {2, 5, 10, 11, 13, 14, 16, 17}


def test_report_is_reproducible_and_as_at_the_period_end(year_db: str, year_report: dict) -> None:
    """Built again later, the document is the same (what the signatures are checked against)."""
    engine = get_engine(year_db)
    with unit_of_work(engine) as s:
        again = build_annual_report(s, site=get_site(s), period=PERIOD, now=NOW + timedelta(days=30))
    assert signed_content(again) == signed_content(year_report)


def test_signoff_by_qa_and_head_of_quality_and_tamper_evidence(
    year_db: str, clone_db: Callable[[str], str]
) -> None:
    engine = get_engine(clone_db(year_db))
    when = utc(2026, 1, 20)
    with unit_of_work(engine) as s:
        site = get_site(s)
        report = build_annual_report(s, site=site, period=PERIOD, now=when)
        with pytest.raises(PermissionDeniedError, match="role qa"):
            signoff.prepare(
                s, signer=at(engine, "prod", when), site=site, period=PERIOD, report=report, now=when
            )
        signoff.prepare(s, signer=at(engine, "qa1", when), site=site, period=PERIOD, report=report, now=when)
    with unit_of_work(engine) as s, pytest.raises(PermissionDeniedError, match="someone other") as same:
        signoff.approve(
            s, signer=at(engine, "qa1", when), site=get_site(s), period=PERIOD, report=report, now=when
        )
    assert same.value.said("zh-CN") == "年度报告须由编制人以外的人批准"
    with unit_of_work(engine) as s:
        site = get_site(s)
        signoff.approve(s, signer=at(engine, "qa2", when), site=site, period=PERIOD, report=report, now=when)
        block = signoff.signoff_block(
            s, site, PERIOD, build_annual_report(s, site=site, period=PERIOD, now=NOW)
        )
        assert [(b["role"], b["meaning"], b["status"]) for b in block] == [
            ("prepared", "performed", "intact"),
            ("approved", "approved", "intact"),
        ]
        # the signed report is kept: the stored content is the report as signed
        assert signed_content(signoff.signed_report(s, site, PERIOD)) == signed_content(report)
        validate({**report, "signoff": block})
    # a record behind a figure changes after signing, behind the application's back: both break
    with unit_of_work(engine) as s:
        site = get_site(s)
        s.connection().exec_driver_sql(
            "UPDATE deviation SET category = 'equipment' WHERE number = 'DEV-2025-0003'"
        )
        fresh = build_annual_report(s, site=site, period=PERIOD, now=NOW)
        assert [b["status"] for b in signoff.signoff_block(s, site, PERIOD, fresh)] == ["broken", "broken"]
        with pytest.raises(ConflictError, match="changed since it was prepared") as changed:
            signoff.approve(s, signer=at(engine, "qa2", NOW), site=site, period=PERIOD, report=fresh, now=NOW)
        assert changed.value.said("zh-CN").startswith("报告编制后已发生变化")


def test_signoff_refusals_read_in_the_terminal_language(people_engine: Engine) -> None:
    """Nothing prepared or signed yet: the refusals carry their Chinese (tracker.core.errors.Reason)."""
    with unit_of_work(people_engine) as s:
        site = get_site(s)
        with pytest.raises(NotFoundError, match="has not been prepared") as not_prepared:
            signoff.approve(
                s, signer=at(people_engine, "qa2", NOW), site=site, period=PERIOD, report={}, now=NOW
            )
        with pytest.raises(NotFoundError, match="has not been signed") as not_signed:
            signoff.signed_report(s, site, PERIOD)
    key = f"{site.code}/{PERIOD.label}"
    assert not_prepared.value.said("zh-CN") == f"年度报告 {key} 尚未由 QA 编制签名"
    assert not_signed.value.said("zh-CN") == f"年度报告 {key} 尚未签名"
    assert not_signed.value.said("en") == f"the report {key} has not been signed"


# --------------------------------------------------------------------------- HTML, PDF, CLI


def test_pdf_has_the_chinese_headings_and_its_pages_render(year_report: dict, tmp_path: Path) -> None:
    pdf = tmp_path / "report.pdf"
    pdf.write_bytes(render_pdf(year_report, lang="zh-CN"))
    text = subprocess.run(
        ["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, check=True
    ).stdout
    for heading in (
        "年度评估报告",
        "1. 摘要与声明",
        "重大质量、安全事故声明",
        "3. 厂房设施与校准状态",
        "4. 生产活动",
        "6. 环境监测",
        "7. 压差、温度与相对湿度",
        "8. 偏差",
        "9. 纠正预防措施及有效性",
        "12. 追溯性与隔离",
        "15. 数据完整性",
        "审核与批准",
        "待填写",
    ):
        assert heading in text, heading
    assert "DEV-2025-0002" in text
    assert "2025-01-01 00:00:00 +0800" in text  # facility time zone in the PDF
    assert "/ " in text  # page numbers "n / N"
    subprocess.run(
        ["pdftoppm", "-r", "40", "-png", "-f", "1", "-l", "3", str(pdf), str(tmp_path / "page")], check=True
    )
    pages = sorted(tmp_path.glob("page-*.png"))
    assert len(pages) == 3
    assert all(p.stat().st_size > 2000 for p in pages)


def test_english_html_shows_local_times_and_charts(year_report: dict) -> None:
    html = render_html(year_report, lang="en")
    for heading in (
        "Annual evaluation report",
        "Summary and declaration",
        "Environmental monitoring",
        "Deviations",
        "CAPA and effectiveness",
        "Data integrity",
        "To be completed",
    ):
        assert heading in html
    assert html.count("data:image/svg+xml;base64,") >= 4  # batches, heat map, P95 trends, Pareto
    assert "pending QA&#39;s confirmation" in html


def tracker_cli(*args: str, db_url: str, stdin: str = "") -> subprocess.CompletedProcess:
    env = {**os.environ, "TRACKER_DATABASE_URL": db_url, "TRACKER_LANG": "en", "COLUMNS": "200"}
    env.pop("TRACKER_PASSWORD", None)
    return subprocess.run(
        [sys.executable, "-m", "tracker.cli", *args],
        env=env,
        cwd=ROOT,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_cli_writes_json_html_and_pdf(year_db: str, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    done = tracker_cli(
        "report",
        "annual",
        "--site",
        "T-SITE",
        "--year",
        "2025",
        "--format",
        "json",
        "--out",
        str(out),
        db_url=year_db,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    validate(report)
    assert report["environment"]["total"]["readings"] == 10_509_120
    half = tmp_path / "half.json"
    done = tracker_cli(
        "report",
        "annual",
        "--year",
        "2025",
        "--as-of",
        "2025-06-30",
        "--format",
        "json",
        "--out",
        str(half),
        db_url=year_db,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(half.read_text())["period"]["cutoff"] == "2025-06-30T16:00:00Z"
    for fmt, lang in (("html", "en"), ("pdf", "zh")):
        path = tmp_path / f"r.{fmt}"
        done = tracker_cli(
            "report",
            "annual",
            "--year",
            "2025",
            "--format",
            fmt,
            "--lang",
            lang,
            "--out",
            str(path),
            db_url=year_db,
        )
        assert done.returncode == 0, done.stderr
        assert path.stat().st_size > 10_000
    assert (tmp_path / "r.pdf").read_bytes().startswith(b"%PDF")


def test_cli_sign_approve_and_render_the_signed_report(
    year_db: str, clone_db: Callable[[str], str], tmp_path: Path
) -> None:
    url = clone_db(year_db)
    refused = tracker_cli(
        "report",
        "approve",
        "--year",
        "2025",
        "--as",
        "qa2",
        "--password-stdin",
        db_url=url,
        stdin=PASSWORD + "\n",
    )
    assert refused.returncode == 2
    assert "not been prepared" in refused.stderr
    confirmed = tracker_cli(
        "report",
        "confirm-incidents",
        "--year",
        "2025",
        "--as",
        "qa1",
        "--comment",
        "DEV-2025-0002: HEPA leak, batch rejected; not a major incident",
        "--password-stdin",
        db_url=url,
        stdin=PASSWORD + "\n",
    )
    assert confirmed.returncode == 0, confirmed.stderr
    assert "no major incident" in confirmed.stdout
    for command, user in (("sign", "qa1"), ("approve", "qa2")):
        done = tracker_cli(
            "report",
            command,
            "--year",
            "2025",
            "--as",
            user,
            "--password-stdin",
            db_url=url,
            stdin=PASSWORD + "\n",
        )
        assert done.returncode == 0, done.stderr
    out = tmp_path / "signed.json"
    done = tracker_cli(
        "report", "annual", "--year", "2025", "--signed", "--format", "json", "--out", str(out), db_url=url
    )
    assert done.returncode == 0, done.stderr
    signed = json.loads(out.read_text())
    assert [(s["role"], s["status"]) for s in signed["signoff"]] == [
        ("prepared", "intact"),
        ("approved", "intact"),
    ]
    assert signed["signoff"][0]["printed_name"] == "QA 刘洋 Liu Yang"
    assert signed["summary"]["major_incidents"]["status"] == "confirmed"
    verify = tracker_cli("audit", "verify", db_url=url)
    assert verify.returncode == 0, verify.stdout + verify.stderr


# --------------------------------------------------------------------------- from real ingestion


def test_figures_from_real_ingestion_match_the_readings(people_engine: Engine) -> None:
    """Two hours of readings through the ingest path: the report's figures from the rollups equal
    what the readings themselves give."""
    engine = people_engine
    rng = np.random.default_rng(4)
    values = {m: int(c) for m, c in enumerate(rng.integers(0, 40, 120))}
    values.update({30: 200, 31: 220, 32: 210, 70: 90})  # 200 per 28.3 L = 7,067 /m³: action in B at rest
    skipped = {50, 51, 52, 53, 54}  # five silent minutes
    msgs = [
        InboundMessage(
            topic("T-B1", "T-B1-PC"),
            particles(seq=m + 1, ts=T0 + timedelta(minutes=m), c05=values[m], c50=0),
            T0 + timedelta(hours=3),
        )
        for m in range(120)
        if m not in skipped
    ]
    msgs += [
        InboundMessage(
            topic("T-B1", "T-B1-DP"),
            scalar(
                monitor="T-B1-DP",
                kind="pressure",
                seq=i + 1,
                ts=T0 + timedelta(seconds=10 * i),
                value=8.0 if 100 <= i < 112 else 15.0,
                unit="Pa",
            ),
            T0 + timedelta(hours=3),
        )
        for i in range(720)
    ]
    with unit_of_work(engine) as s:
        BatchProcessor(Intake()).process(s, msgs)
    period = Period(T0, T0 + timedelta(hours=2), TZ)
    with unit_of_work(engine) as s:
        assert (
            verify_rollups(s, {m.id: m.kind for m in s.exec(select(Monitor))}, period.start, period.end) == []
        )
        report = build_annual_report(s, site=get_site(s), period=period, now=T0 + timedelta(days=1))
        from tracker.monitoring.readings import Reading

        mon_id = s.exec(select(Monitor.id).where(Monitor.code == "T-B1-PC")).one()
        raw = s.exec(
            select(Reading.channel, Reading.value, Reading.level).where(Reading.monitor_id == mon_id)
        ).all()
        excursions = s.exec(select(Excursion).where(Excursion.status != "superseded")).all()
    validate(report)
    mon = {m["monitor"]: m for m in report["environment"]["monitors"]}
    pc = mon["T-B1-PC"]
    assert pc["readings"] == len(raw) == 2 * 115
    assert pc["expected"] == 2 * 120  # first reading at T0: the whole two hours
    assert pc["completeness_pct"] == pct(230, 240)
    assert pc["at_action"] == sum(1 for _, _, lvl in raw if lvl == "action")
    assert pc["at_alert"] == sum(1 for _, _, lvl in raw if lvl == "alert")
    assert pc["at_action"] >= 3
    dp = next(c for c in report["conditions"]["monitors"] if c["monitor"] == "T-B1-DP")
    assert dp["valid"] == 720
    assert dp["within_action_pct"] == pct(720 - 12, 720)
    total = report["environment"]["total"]["excursions"]
    limit = [e for e in excursions if e.type == "limit"]
    assert total["alert"] + total["action"] == len(limit) >= 2
    assert total["action"] == sum(1 for e in limit if e.level == "action")
    # the P95 from the histogram is the upper edge of the bin holding the true 95th percentile
    conc = sorted(v for ch, v, _ in raw if ch == "0.5")
    true_p95 = conc[math.ceil(0.95 * len(conc)) - 1]
    (p,) = [
        p for p in report["environment"]["particles"] if (p["monitor"], p["channel"]) == ("T-B1-PC", "0.5")
    ]
    upper = 10 ** (bin_of("particles", true_p95) / 4)
    at_rest = p["states"]["at_rest"]  # no room state recorded: at rest
    assert at_rest["monthly_p95"] == [round(min(upper, max(conc)), 1)]
    assert at_rest["max"] == round(max(conc), 1)
    assert at_rest["readings"] == len(conc)
    assert p["states"]["in_operation"]["readings"] == 0
    assert report["data_integrity"]["records"]["readings"] == sum(m["readings"] for m in mon.values())


def test_year_period_follows_the_site_time_zone() -> None:
    p = year_period("Asia/Shanghai", 2026)
    assert (p.start, p.end) == (utc(2025, 12, 31, 16), utc(2026, 12, 31, 16))
    assert replace(p, year=None).label == "2025-12-31T16:00:00Z/2026-12-31T16:00:00Z"


# --------------------------------------------------------------------------- issue 14 item 7: what it means


EXTRA_MONITORS = """
[[monitors]]
code = "T-D1-PC"
room = "T-D1"
kind = "particles"
interval_s = 60

[[monitors]]
code = "T-CNC-T"
room = "T-CNC"
kind = "temperature"
interval_s = 60
"""


def test_p95_is_judged_per_state_and_never_above_the_series_maximum(year_report: dict) -> None:
    """An at-rest P95 above the at-rest limit is a finding even below the in-operation limit, and a
    P95 read from a bin is never printed above the highest reading it summarises."""
    rows = {(p["monitor"], p["channel"]): p for p in year_report["environment"]["particles"]}
    b1 = rows[("T-B1-PC", "0.5")]["states"]
    assert b1["at_rest"]["limits"]["action_high"] == 3520.0
    assert b1["in_operation"]["limits"]["action_high"] == 352000.0
    assert b1["at_rest"]["months_p95_above_action"] == 1  # August at rest: 5,000 > 3,520
    assert b1["in_operation"]["months_p95_above_action"] == 0
    assert b1["at_rest"]["max"] == 5000.0
    assert b1["in_operation"]["max"] == 100000.0
    for row in rows.values():
        for st in row["states"].values():
            for p95, top in zip(st["monthly_p95"], st["monthly_max"], strict=True):
                assert (p95 is None) == (top is None)
                assert p95 is None or p95 <= top
            assert st["p95"] is None or st["p95"] <= st["max"]
    # a month of readings of 1,000 /m³ has a P95 of 1,000, not its bin's top edge 1,778.3
    assert b1["at_rest"]["monthly_p95"][0] == 1000.0


def test_grade_d_and_readings_not_evaluated_from_real_ingestion(engine: Engine) -> None:
    """Grade D is judged at rest (no in-operation limit in CN-GMP-2010); readings no limit judged
    (grade D in operation, a CNC room's temperature) are counted apart and are not "within limits"."""
    with unit_of_work(engine) as s:
        text = MIN_FACILITY.read_text() + EXTRA_MONITORS
        load_facility(s, parse_facility(text), actor="test", now=T0 - timedelta(days=1))
    operate(engine, "T-D1", T0 + timedelta(minutes=30), T0 + timedelta(minutes=60))
    msgs = []
    for m in range(120):
        ts = T0 + timedelta(minutes=m)
        c05 = 200_000 if 30 <= m < 80 else 150_000  # at rest 5.3 million /m³ > 3,520,000
        msgs.append(
            InboundMessage(
                topic("T-D1", "T-D1-PC"), particles(monitor="T-D1-PC", seq=m + 1, ts=ts, c05=c05), ts
            )
        )
        payload = scalar(monitor="T-CNC-T", kind="temperature", seq=m + 1, ts=ts, value=21.0, unit="degC")
        msgs.append(InboundMessage(topic("T-CNC", "T-CNC-T"), payload, ts))
    with unit_of_work(engine) as s:
        BatchProcessor(Intake()).process(s, msgs)
    period = Period(T0, T0 + timedelta(hours=2), TZ)
    with unit_of_work(engine) as s:
        kinds = {m.id: m.kind for m in s.exec(select(Monitor))}
        assert verify_rollups(s, kinds, period.start, period.end) == []
        report = build_annual_report(s, site=get_site(s), period=period, now=T0 + timedelta(days=1))
        from tracker.monitoring.readings import Reading

        levels = s.exec(
            select(Monitor.code, Reading.state, Reading.level)
            .join(Reading, Reading.monitor_id == Monitor.id)
            .where(Monitor.code.in_(("T-D1-PC", "T-CNC-T")))
        ).all()
    validate(report)
    not_evaluated = {
        code: sum(1 for c, _, lvl in levels if c == code and lvl == "not_evaluated")
        for code in ("T-D1-PC", "T-CNC-T")
    }
    in_operation = sum(1 for c, st, _ in levels if c == "T-D1-PC" and st == "in_operation") // 2
    assert in_operation >= 30
    assert not_evaluated["T-D1-PC"] == 2 * in_operation
    (d1,) = [
        p for p in report["environment"]["particles"] if (p["monitor"], p["channel"]) == ("T-D1-PC", "0.5")
    ]
    rest, op = d1["states"]["at_rest"], d1["states"]["in_operation"]
    assert rest["limits"]["action_high"] == 3_520_000.0
    assert rest["months_p95_above_action"] == 1
    assert (op["limits"], op["months_p95_above_action"], op["readings"]) == (None, None, in_operation)
    mon = {m["monitor"]: m for m in report["environment"]["monitors"]}
    assert mon["T-D1-PC"]["not_evaluated"] == not_evaluated["T-D1-PC"]
    cnc = next(c for c in report["conditions"]["monitors"] if c["monitor"] == "T-CNC-T")
    assert (cnc["valid"], cnc["not_evaluated"], cnc["evaluated"]) == (120, 120, 0)
    assert (cnc["within_limits_pct"], cnc["within_action_pct"]) == (None, None)
    html = render_html(report, lang="en")
    assert "no limit" in html
    assert "Not evaluated" in html


def test_data_gaps_count_in_grade_room_rows_and_key_figures(year_report: dict) -> None:
    """T-C1-PC went silent for 24 h (an action-level gap): its grade and room say so."""
    gap = {"count": 1, "alert": 0, "action": 1, "hours": 24.0, "longest_h": 24.0}
    grades = {g["grade"]: g for g in year_report["environment"]["by_grade"]}
    rooms = {g["room"]: g for g in year_report["environment"]["by_room"]}
    assert grades["C"]["excursions"]["data_gaps"] == gap == rooms["T-C1"]["excursions"]["data_gaps"]
    assert grades["A"]["excursions"]["data_gaps"]["count"] == 0
    assert year_report["environment"]["total"]["excursions"]["data_gaps"] == gap
    kf = year_report["summary"]["key_figures"]
    assert (kf["data_gaps"], kf["data_gaps_action"], kf["data_gap_hours"]) == (1, 1, 24.0)
    html = render_html(year_report, lang="en")
    assert "Data gaps (Action)" in html
    assert "Action-level data gaps" in html


def test_a_response_or_an_edit_after_the_period_does_not_change_it(
    year_db: str, year_report: dict, clone_db: Callable[[str], str]
) -> None:
    """An acknowledgement, a reclassification and an impact assessment made after the year ended
    leave the year's document as it was."""
    engine = get_engine(clone_db(year_db))
    late = utc(2026, 1, 10)
    with unit_of_work(engine) as s:  # a minor deviation still open at the year end …
        d = dv.open_deviation(
            s,
            actor=at(engine, "qa1", utc(2025, 12, 1)),
            site=get_site(s),
            title="late label",
            classification="minor",
            category="process",
            description="x",
            now=utc(2025, 12, 1),
        )
        b = get_batch(s, "MSC-1")
        dv.attach_batch(s, dev=d, batch_id=b.id, actor="qa1", batch_number=b.number, now=utc(2025, 12, 2))
    with unit_of_work(engine) as s:
        before = build_annual_report(s, site=get_site(s), period=PERIOD, now=NOW)
    with unit_of_work(engine) as s:  # … edited in January, when a DP alert is acknowledged too
        d = dv.get_deviation(s, "DEV-2025-0004")
        dv.update_deviation(
            s, actor=at(engine, "qa1", late), dev=d, reason="reassessed", classification="critical", now=late
        )
        b = get_batch(s, "MSC-1")
        dv.assess_impact(
            s,
            actor=at(engine, "qa1", late),
            dev=d,
            batch_id=b.id,
            batch_number=b.number,
            impact="minor",
            assessment="label reprinted",
            now=late,
        )
        dp_alert = s.exec(
            select(Excursion).where(Excursion.started_at == utc(2025, 6, 1, 0), Excursion.level == "alert")
        ).one()
        acknowledge(s, actor=at(engine, "qa1", late), excursion_id=dp_alert.id, comment="door", now=late)
    with unit_of_work(engine) as s:
        after = build_annual_report(s, site=get_site(s), period=PERIOD, now=NOW + timedelta(days=10))
    assert signed_content(after) == signed_content(before)
    row = next(x for x in after["deviations"]["list"] if x["number"] == "DEV-2025-0004")
    assert row["classification"] == "minor"
    assert after["deviations"]["impact"] == {"not_assessed": 1, "significant": 1}
    assert after["environment"]["total"]["excursions"]["time_to_response_h"]["responded"] == 1


def test_an_unfinished_year_has_one_cut_off_so_both_languages_agree(year_db: str, clone_db) -> None:
    """Built at 09:00 and at 17:00 on 1 July, the 2025 document is the same (cut-off: the start
    of that local day), in zh and en; ``as_of`` pins the same cut-off later."""
    engine = get_engine(clone_db(year_db))
    with unit_of_work(engine) as s:
        morning = build_annual_report(s, site=get_site(s), period=PERIOD, now=local(2025, 7, 1, 9))
        evening = build_annual_report(s, site=get_site(s), period=PERIOD, now=local(2025, 7, 1, 17))
        pinned = build_annual_report(
            s, site=get_site(s), period=PERIOD, now=NOW, as_of=date(2025, 6, 30), compare=False
        )
    validate(morning)
    assert signed_content(morning) == signed_content(evening)
    assert {k: v for k, v in signed_content(pinned).items() if k != "comparison"} == {
        k: v for k, v in signed_content(morning).items() if k != "comparison"
    }
    cutoff = "2025-06-30T16:00:00Z"
    assert (morning["period"]["cutoff"], morning["period"]["complete"]) == (cutoff, False)
    assert {m["monitored_to"] for m in morning["environment"]["monitors"]} == {cutoff}
    half = int((local(2025, 7, 1) - PERIOD.start).total_seconds() // 3600)
    assert morning["data_integrity"]["records"]["rollup_rows"] == (3 * 2 + 4) * half - 2 * 24
    zh, en = render_html(morning, lang="zh-CN"), render_html(evening, lang="en")
    assert "2025-07-01 00:00:00 +0800" in zh
    assert "2025-07-01 00:00:00 +0800" in en
    with pytest.raises(InvalidInputError, match="in the future"), unit_of_work(engine) as s:
        build_annual_report(
            s, site=get_site(s), period=PERIOD, now=local(2025, 7, 1, 9), as_of=date(2025, 7, 2)
        )


def test_an_undecided_exposure_is_reported_as_such(year_db: str, clone_db: Callable[[str], str]) -> None:
    """A deviation raised from an excursion whose exposure of MSC-1 QA has not decided says so, not
    "batches affected 0"; a decision made after the year ends does not change the year."""
    engine = get_engine(clone_db(year_db))
    with unit_of_work(engine) as s:
        site = get_site(s)
        ls = load_limit_set(site.limit_set)
        basis = basis_id(
            s, site_id=site.id, code=ls.code, version=ls.version, sha256=ls.sha256, revision=site.revision
        )
        monitors = {m.code: m for m in s.exec(select(Monitor))}
        ex_id = add_excursion(
            s,
            monitors,
            {},
            basis,
            monitor="T-BSC-PC",
            channel="0.5",
            level="action",
            start=utc(2025, 12, 20, 1, 10),
            end=utc(2025, 12, 20, 1, 20),
        )
        when = utc(2025, 12, 20, 3)
        dv.open_deviation(
            s,
            actor=at(engine, "qa1", when),
            site=site,
            title="BSC during MSC-1",
            classification="major",
            category="environment",
            description="x",
            excursion_ids=[ex_id],
            now=when,
        )
    with unit_of_work(engine) as s:
        report = build_annual_report(s, site=get_site(s), period=PERIOD, now=NOW)
    validate(report)
    row = next(x for x in report["deviations"]["list"] if x["number"] == "DEV-2025-0004")
    assert (row["batches_affected"], row["batches_exposure_undecided"]) == ([], ["MSC-1"])
    assert report["deviations"]["batches_exposure_undecided"] == 1
    tr = report["traceability"]
    assert [(u["batch"], u["excursion"], u["level"]) for u in tr["undecided"]] == [("MSC-1", ex_id, "action")]
    assert (tr["undecided_batches"], tr["exposed_batches"]) == (1, 1)
    assert report["summary"]["key_figures"]["exposure_undecided_batches"] == 1
    assert "exposure undecided" in render_html(report, lang="en")
    assert "影响未判定" in render_html(report, lang="zh-CN")
    with unit_of_work(engine) as s:  # the report proposed nothing (a read); QA decides in January
        assert [x for x in links_of(s, get_batch(s, "MSC-1")) if x.excursion_id == ex_id] == []
        late = utc(2026, 1, 5)
        sync_links(s, batch=get_batch(s, "MSC-1"), now=late)
        (link,) = [x for x in links_of(s, get_batch(s, "MSC-1")) if x.excursion_id == ex_id]
        decide_link(s, signer=at(engine, "qa1", late), link_id=link.id, exposed=True, reason="open", now=late)
    with unit_of_work(engine) as s:
        again = build_annual_report(s, site=get_site(s), period=PERIOD, now=NOW + timedelta(days=10))
    assert signed_content(again) == signed_content(report)


def test_superseded_excursions_are_listed_with_who_when_and_why(year_report: dict) -> None:
    rows = year_report["environment"]["superseded"]
    assert [(r["monitor"], r["superseded_by"], r["reason"]) for r in rows] == [
        ("T-B1-PC", "qa1", SUPERSEDED_WHY),
        ("T-C1-PC", "system:ingest", REPLAY_REASON),
    ]
    assert rows[1]["superseded_at"] == "2025-10-02T00:00:00Z"
    assert rows[0]["approved_by"] is None
    html = render_html(year_report, lang="en")
    assert "Superseded excursions (who superseded them, when and why)" in html
    assert "door log" in html


def test_major_incidents_follow_the_facility_files_classes_as_at_the_cut_off(
    year_db: str, clone_db: Callable[[str], str]
) -> None:
    """The classes counted are the facility file's ``[quality] major_incident_classes`` of the
    revision in force at the cut-off: a change in December counts for the year, one in January not."""
    engine = get_engine(clone_db(year_db))
    june = MIN_FACILITY.read_text().replace("alert_low = 12.0", "alert_low = 13.0")
    for when, classes in ((utc(2025, 12, 1), '"critical", "major"'), (utc(2026, 1, 10), '"critical"')):
        text = june + f"\n[quality]\nmajor_incident_classes = [{classes}]\n"
        with unit_of_work(engine) as s:
            load_facility(s, parse_facility(text), actor="admin", approver=at(engine, "qa1", when), now=when)
    with unit_of_work(engine) as s:
        site = get_site(s)
        assert dv.major_incident_classes(s, site) == ("critical",)  # the current revision
        report = build_annual_report(s, site=site, period=PERIOD, now=NOW, compare=False)
    mi = report["summary"]["major_incidents"]
    assert (mi["classes"], mi["deviations"]) == (["critical", "major"], ["DEV-2025-0002", "DEV-2025-0003"])
    assert report["summary"]["key_figures"]["deviations_major_incident_class"] == mi["count"] == 2
    assert "分类为“重大”、“主要”的偏差 2 起" in mi["statement_zh"]


def test_the_statement_on_major_incidents_needs_qa_confirmation(
    year_db: str, clone_db: Callable[[str], str]
) -> None:
    engine = get_engine(clone_db(year_db))
    when = utc(2026, 1, 15)

    def build(s):
        return build_annual_report(s, site=get_site(s), period=PERIOD, now=NOW)

    def confirm(s, user: str, **kw):
        return signoff.confirm_incidents(
            s, signer=at(engine, user, when), site=get_site(s), period=PERIOD, report=build(s), now=when, **kw
        )

    with unit_of_work(engine) as s:
        with pytest.raises(PermissionDeniedError, match="role qa"):
            confirm(s, "prod")
        with pytest.raises(InvalidInputError, match="needs its reasoning") as no_reason:
            confirm(s, "qa1")
        with pytest.raises(InvalidInputError, match="DEV-2024-0001"):
            confirm(s, "qa1", incidents=["DEV-2024-0001"], comment="x")
    assert no_reason.value.said("zh-CN").startswith("对 DEV-2025-0002 的评估须说明理由")
    with unit_of_work(engine) as s:
        confirm(s, "qa1", comment="HEPA leak found at once; the exposed batch was rejected")
    with unit_of_work(engine) as s:
        report = build(s)
        site = get_site(s)
        signoff.prepare(s, signer=at(engine, "qa1", when), site=site, period=PERIOD, report=report, now=when)
        signoff.approve(s, signer=at(engine, "qa2", when), site=site, period=PERIOD, report=report, now=when)
        roles = [b["role"] for b in signoff.signoff_block(s, site, PERIOD, build(s))]
        assert signed_content(signoff.signed_report(s, site, PERIOD)) == signed_content(report)
    validate(report)
    assert roles == ["prepared", "approved"]
    mi = report["summary"]["major_incidents"]
    assert (mi["status"], mi["incidents"], mi["confirmation"]["printed_name"]) == (
        "confirmed",
        [],
        "QA 刘洋 Liu Yang",
    )
    assert "经质量管理部门评估确认，其中无主要由于技术原因导致的重大质量、安全事故" in mi["statement_zh"]
    assert "confirms that none was a major quality or safety incident" in mi["statement_en"]
    assert report["summary"]["key_figures"]["major_incidents"] == 0
    assert "HEPA leak found at once" in render_html(report, lang="en")
    # the records behind the confirmation change (a critical deviation entered late): pending again
    with unit_of_work(engine) as s:
        late = utc(2025, 12, 30)
        dv.open_deviation(
            s,
            actor=at(engine, "qa1", late),
            site=get_site(s),
            title="isolator glove breach",
            classification="critical",
            category="equipment",
            description="x",
            now=late,
        )
    with unit_of_work(engine) as s:
        changed = build(s)
    mi = changed["summary"]["major_incidents"]
    assert (mi["status"], mi["confirmation"]["status"]) == ("pending", "outdated")
    assert mi["statement_zh"].endswith("（此前的确认所依据的记录已变化，须重新确认。）")
    # QA finds one was a major incident
    with unit_of_work(engine) as s:
        confirm(s, "qa2", incidents=["DEV-2025-0002"], comment="the HEPA leak exposed a patient's batch")
    with unit_of_work(engine) as s:
        mi = build(s)["summary"]["major_incidents"]
    assert (mi["status"], mi["incidents"]) == ("confirmed", ["DEV-2025-0002"])
    assert mi["statement_en"].startswith("QA confirms 1 major quality or safety incident(s)")


def test_no_major_incident_is_never_stated_without_qa(people_engine: Engine) -> None:
    """A year without a critical deviation still waits for QA before it says "no major incident"."""
    period = year_period(TZ, 2026)
    with unit_of_work(people_engine) as s:
        report = build_annual_report(s, site=get_site(s), period=period, now=utc(2027, 1, 5))
    mi = report["summary"]["major_incidents"]
    assert mi["status"] == "pending"
    assert mi["statement_zh"] == (
        "报告期内未记录分类为“重大”的偏差。关于报告期内未发生重大质量、安全事故的声明，待质量管理部门确认。"
    )
    assert "pending QA's confirmation" in mi["statement_en"]
    when = utc(2027, 1, 6)
    with unit_of_work(people_engine) as s:
        signoff.confirm_incidents(
            s, signer=at(people_engine, "qa1", when), site=get_site(s), period=period, report=report, now=when
        )
    with unit_of_work(people_engine) as s:
        mi = build_annual_report(s, site=get_site(s), period=period, now=utc(2027, 1, 7))["summary"][
            "major_incidents"
        ]
    assert mi["statement_en"] == (
        "Confirmed by QA: no major quality or safety incident caused mainly by technical reasons occurred in the period."
    )


def test_capa_due_dates_are_labelled_as_such(year_report: dict) -> None:
    for lang, due, calibration in (("en", "Due date", "Calibration due"), ("zh-CN", "到期日", "校准到期")):
        html = render_html(year_report, lang=lang)
        capa = html[html.index('<section id="s9">') : html.index('<section id="s12">')]
        assert f"<th>{due}</th>" in capa
        assert calibration not in capa
