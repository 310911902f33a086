"""Data migrations: what an upgrade does to a database that already holds records.

Migration 0011 fills ``ingest_state``'s newest reading (event and receipt time) where 0008 left
it NULL, so the silence check watches monitors that went quiet before the upgrade. Runs on the
suite's backend (SQLite, or PostgreSQL with ``reading`` partitioned by month).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy import insert, select

from tracker.core.db import UTCDateTime, get_engine
from tracker.core.migrate import upgrade
from tracker.facility.basis import EvaluationBasis
from tracker.facility.models import Monitor, Room
from tracker.monitoring.ingest_state import TABLE as INGEST_STATE
from tracker.monitoring.ingest_state import latest_readings
from tracker.monitoring.readings import RawMessage, Reading

T = datetime(2026, 10, 30, 23, 0, tzinfo=UTC)  # readings across a month boundary (two partitions)


def _facility(conn, monitors: list[str]) -> None:
    # the site table as revision 0009 has it (later revisions add columns the model would fill)
    site_0009 = sa.table(
        "site",
        *(sa.column(c) for c in ("id", "code", "name", "name_en", "timezone", "limit_set", "revision")),
        *(sa.column(c) for c in ("file_sha256", "rolling_volume_m3", "recovery_s")),
        sa.column("updated_at", UTCDateTime()),
    )
    conn.execute(
        insert(site_0009).values(
            id=1,
            code="S",
            name="S",
            name_en="",
            timezone="Asia/Shanghai",
            limit_set="CN-GMP-2010",
            revision=0,
            file_sha256="",
            rolling_volume_m3=1.0,
            recovery_s=1200.0,
            updated_at=T,
        )
    )
    conn.execute(insert(Room.__table__).values(id=1, site_id=1, code="R", name="R", grade="B"))
    conn.execute(
        insert(Monitor.__table__),
        [
            {"id": i, "site_id": 1, "room_id": 1, "code": code, "kind": "particles", "interval_s": 60}
            for i, code in enumerate(monitors, start=1)
        ],
    )
    conn.execute(
        insert(EvaluationBasis.__table__).values(
            id=1,
            site_id=1,
            limit_set_code="CN-GMP-2010",
            limit_set_version="1",
            limit_set_sha256="",
            facility_revision=1,
        )
    )


def _readings(conn, monitor_id: int, events: list[tuple[int, datetime, datetime]]) -> None:
    """(seq, event time, receipt time) messages of two channels each."""
    conn.execute(
        insert(RawMessage.__table__),
        [
            {
                "monitor_id": monitor_id,
                "seq": seq,
                "received_at": received,
                "topic": "t",
                "payload": b"{}",
                "digest": "",
            }
            for seq, _event, received in events
        ],
    )
    conn.execute(
        insert(Reading.__table__),
        [
            {
                "monitor_id": monitor_id,
                "seq": seq,
                "channel": channel,
                "event_time": event,
                "value": 1.0,
                "level": "ok",
                "state": "at_rest",
                "basis_id": 1,
            }
            for seq, event, _received in events
            for channel in ("0.5", "5.0")
        ],
    )


def test_0011_fills_the_newest_reading_of_monitors_ingested_before_0008(databases) -> None:
    url = databases.empty()
    try:
        upgrade(url, "0009")
        engine = get_engine(url)
        minute = timedelta(minutes=1)
        with engine.begin() as conn:
            _facility(conn, ["NULLS", "NOROW", "ONLY-EVENT", "CURRENT", "SILENT-NEVER"])
            # 1: a row with both NULL; newest event is seq 3 (stored after seq 4, received later)
            _readings(
                conn,
                1,
                [
                    (1, T, T + minute),
                    (2, T + 2 * minute, T + 2 * minute),
                    (4, T + 90 * minute, T + 91 * minute),
                    (3, T + 3 * 60 * minute, T + 3 * 60 * minute + minute),
                ],
            )
            # 2: readings but no ingest_state row at all
            _readings(conn, 2, [(7, T + minute, T + 2 * minute)])
            # 3: what 0008 left: the event time, no receipt time
            _readings(conn, 3, [(1, T, T + minute), (2, T + 5 * minute, T + 6 * minute)])
            # 4: a monitor the ingester wrote since: left as it is
            _readings(conn, 4, [(1, T, T + minute)])
            conn.execute(
                insert(INGEST_STATE),
                [
                    {"monitor_id": m, "version": v, "writer": w, "last_event_at": e, "last_received_at": r}
                    for m, v, w, e, r in (
                        (1, 0, "", None, None),
                        (3, 2, "w", T + 5 * minute, None),
                        (4, 9, "w", T + 30 * minute, T + 31 * minute),
                        (5, 0, "", None, None),
                    )
                ],
            )  # 5: no readings ever
        engine.dispose()
        upgrade(url)
        with engine.connect() as conn:
            rows = {
                r.monitor_id: (r.version, r.writer, r.last_event_at, r.last_received_at)
                for r in conn.execute(select(INGEST_STATE))
            }
        assert rows == {
            1: (0, "", T + 180 * minute, T + 181 * minute),
            2: (0, "", T + minute, T + 2 * minute),
            3: (2, "w", T + 5 * minute, T + 6 * minute),
            4: (9, "w", T + 30 * minute, T + 31 * minute),
            5: (0, "", None, None),
        }
        # what the silence check reads: every monitor with readings, receipt time included
        from sqlmodel import Session

        with Session(engine) as s:
            assert latest_readings(s) == {m: (e, r) for m, (_v, _w, e, r) in rows.items() if e}
    finally:
        databases.drop(url)


def test_0020_makes_each_account_a_person_and_keeps_working_accounts_enrolled(databases) -> None:
    """Issue 15: existing accounts become their own person; one whose owner had replaced the
    admin's password stays able to work (enrolled, witness "migration 0020"), one still on the
    admin's password does not; every last writer of a root cause or impact is an author."""
    url = databases.empty()
    try:
        upgrade(url, "0019")
        engine = get_engine(url)
        with engine.begin() as conn:
            _facility(conn, ["M"])
            users = sa.table(
                "app_user",
                *(sa.column(c) for c in ("id", "username", "full_name", "roles")),
                *(sa.column(c) for c in ("password_hash", "active", "failed_attempts")),
                sa.column("must_change_password"),
                sa.column("password_changed_at", UTCDateTime()),
                sa.column("created_at", UTCDateTime()),
                sa.column("created_by"),
            )
            conn.execute(
                insert(users),
                [
                    {
                        "id": i,
                        "username": u,
                        "full_name": u,
                        "roles": r,
                        "password_hash": "x",
                        "active": True,
                        "failed_attempts": 0,
                        "must_change_password": m,
                        "password_changed_at": T,
                        "created_at": T,
                        "created_by": "admin",
                    }
                    for i, u, r, m in (
                        (1, "admin", "admin", False),
                        (2, "qa1", "qa", False),
                        (3, "new", "qa", True),
                    )
                ],
            )
            conn.execute(
                sa.text(
                    "INSERT INTO deviation (id, site_id, number, title, classification, category, description, "
                    "root_cause, root_cause_by, status, opened_at, opened_by, updated_at) VALUES "
                    "(1, 1, 'DEV-2026-0001', 't', 'major', 'c', 'd', 'r', 'qa1', 'investigating', :t, 'qa1', :t)"
                ),
                {"t": T},
            )
        engine.dispose()
        upgrade(url)
        with engine.connect() as conn:
            rows = {
                r.username: (r.person_id, r.enrolled_witness)
                for r in conn.execute(sa.text("SELECT username, person_id, enrolled_witness FROM app_user"))
            }
            authors = conn.execute(sa.text("SELECT part, username, person FROM deviation_author")).all()
            site = conn.execute(sa.text("SELECT qa_reviewer_may_release FROM site")).scalar_one()
        assert rows == {"admin": ("admin", None), "qa1": ("qa1", "migration 0020"), "new": ("new", None)}
        assert [tuple(a) for a in authors] == [("root_cause", "qa1", "qa1")]
        assert site in (False, 0)
    finally:
        databases.drop(url)
