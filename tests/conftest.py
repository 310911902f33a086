"""Real services for the tests: a database built by the migrations, Debian's mosquitto.

The database backend is ``TRACKER_TEST_BACKEND=sqlite|postgresql`` (default sqlite; PostgreSQL
also needs ``TRACKER_TEST_PG_URL``, see tests/databases.py): every test gets its own database
through ``db_url`` either way.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select

from tests.databases import ON_POSTGRES, PostgresDatabases, SQLiteDatabases, open_databases
from tracker.core.db import get_engine, unit_of_work
from tracker.facility import file as facility_file
from tracker.facility.file import read_facility_file
from tracker.facility.load import load_facility
from tracker.facility.models import FacilityRevision, Site
from tracker.facility.policy import Compliance
from tracker.facility.roomstate import set_room_state
from tracker.wire.broker import LocalBroker, find_mosquitto

# argon2's cheapest profile for the suite only (hundreds of logins); production keeps RFC 9106
os.environ.setdefault("TRACKER_PASSWORD_HASH_PROFILE", "CHEAPEST")


def _suite_compliance(rules: dict, quality: dict, records: dict) -> Compliance:
    """The suite records steps and room states against data stamped 2026-11-20 whatever today's
    date: by the wall clock they are late. So a facility the suite parses in this process takes
    no lateness limits unless its file states ``[records]`` (the file's bounds are for people;
    a FacilityDef may say anything). ``use_records_policy`` puts the defaults back for the tests
    of the lateness rules themselves."""
    parsed = _parse_compliance(rules, quality, records)
    return parsed if records else replace(parsed, **SUITE_RECORDS)


#: the ``[records]`` limits of a facility the suite parses without that table: none to speak of
SUITE_RECORDS = {"late_entry_min": 1e9, "backdate_max_h": 1e9}


# the parser itself (pytest may import this file twice, as ``conftest`` and ``tests.conftest``)
_parse_compliance = getattr(facility_file._parse_compliance, "unrelaxed", facility_file._parse_compliance)
_suite_compliance.unrelaxed = _parse_compliance  # type: ignore[attr-defined]
facility_file._parse_compliance = _suite_compliance


def use_records_policy(engine: Engine, *, late_entry_min: float = 15.0, backdate_max_h: float = 24.0) -> None:
    """Give the site's current revision these ``[records]`` limits (the production defaults)."""
    with unit_of_work(engine) as s:
        for site in s.exec(select(Site)):
            row = s.exec(
                select(FacilityRevision).where(
                    FacilityRevision.site_id == site.id, FacilityRevision.revision == site.revision
                )
            ).one()
            settings = json.loads(row.settings)
            settings["compliance"] = {
                **settings.get("compliance", {}),
                "late_entry_min": late_entry_min,
                "backdate_max_h": backdate_max_h,
            }
            row.settings = json.dumps(settings)
            s.add(row)


# one audit key for the suite and the CLI and server processes it starts (never a file in the tree)
os.environ.setdefault("TRACKER_AUDIT_KEY", "the-test-suite-audit-key-not-for-production-use")
# likewise the donor/patient identity key (pseudonyms and encryption, docs/data-protection.md)
os.environ.setdefault("TRACKER_IDENTITY_KEY", "the-test-suite-identity-key-not-for-production-use")

DATA = Path(__file__).parent / "data"
MIN_FACILITY = DATA / "facility-min.toml"


@pytest.fixture(scope="session")
def databases(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SQLiteDatabases | PostgresDatabases]:
    """Run the Alembic history once per session; ``new()`` gives a fresh migrated database,
    ``clone(url)`` a copy of one, ``drop(url)`` removes it (tests/databases.py)."""
    dbs = open_databases(tmp_path_factory.mktemp("databases"))
    yield dbs
    dbs.close()


@pytest.fixture(scope="session")
def migrated_template(databases: SQLiteDatabases | PostgresDatabases) -> Path:
    """The migrated SQLite template file (SQLite only: use ``databases.new()`` instead)."""
    if ON_POSTGRES:
        pytest.fail(
            "migrated_template is a SQLite file: use the `databases` fixture "
            "(databases.new(), databases.clone(url)) to run on both backends"
        )
    return databases.template


@pytest.fixture
def db_url(databases: SQLiteDatabases | PostgresDatabases, tmp_path: Path) -> Iterator[str]:
    """A database of its own for the test (a SQLite file or a PostgreSQL database)."""
    url = databases.new(tmp_path / "tracker.db")
    yield url
    databases.drop(url)


@pytest.fixture
def clone_db(databases: SQLiteDatabases | PostgresDatabases) -> Iterator[Callable[[str], str]]:
    """``clone_db(url)``: a copy of a test database as it is now, dropped after the test."""
    made: list[str] = []

    def clone(url: str) -> str:
        made.append(databases.clone(url))
        return made[-1]

    yield clone
    for url in made:
        databases.drop(url)


@pytest.fixture
def engine(db_url: str) -> Engine:
    return get_engine(db_url)


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    with unit_of_work(engine) as s:
        yield s


@pytest.fixture
def facility_engine(engine: Engine) -> Engine:
    """A database with the minimal test facility loaded."""
    with unit_of_work(engine) as s:
        load_facility(s, read_facility_file(MIN_FACILITY), actor="test")
    return engine


@pytest.fixture
def broker() -> Iterator[LocalBroker]:
    """Debian's mosquitto on a free loopback port, one per test: retained messages and
    persistent sessions of one test must not leak into the next (it starts in ~50 ms)."""
    if find_mosquitto() is None:
        pytest.fail("mosquitto is not installed: run the README's test command (it installs it)")
    with LocalBroker(persistence=False) as b:
        assert b.kind == "mosquitto"
        yield b


@pytest.fixture(autouse=True)
def _fail_on_logged_errors(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """A swallowed exception that was logged as an error fails the test (Home Assistant style)."""
    caplog.set_level(logging.WARNING)
    yield
    errors = [
        r
        for r in caplog.get_records("call")
        if r.levelno >= logging.ERROR and r.name.split(".")[0] in ("tracker", "simulators")
    ]
    if errors:
        pytest.fail("errors were logged: " + "; ".join(r.getMessage() for r in errors))


def operate(engine: Engine, room: str, start: datetime, end: datetime) -> None:
    """Record a processing session: ``room`` in operation from ``start``, at rest from ``end``."""
    with unit_of_work(engine) as s:
        set_room_state(s, room_code=room, state="in_operation", effective_at=start, actor="test")
        set_room_state(s, room_code=room, state="at_rest", effective_at=end, actor="test")


@pytest.fixture
def people_engine(facility_engine: Engine) -> Engine:
    """The minimal facility plus one account per role (tests.factories.PEOPLE)."""
    from tests.factories import make_people

    make_people(facility_engine)
    return facility_engine


# --- web app (issue 7) ---------------------------------------------------------------------------


@pytest.fixture
def web_engine(people_engine: Engine) -> Engine:
    """``people_engine`` plus a viewer and an identity steward (``identity_reveal``, issue 20): one
    account per role for the web tests."""
    from tests.factories import add_person

    add_person(people_engine, "viewer1", "只读 孙丽 Sun Li", ["viewer"])
    add_person(people_engine, "steward1", "身份查阅 周敏 Zhou Min", ["identity_reveal"])
    return people_engine


@pytest.fixture
def web_app(web_engine: Engine):
    from tracker.web.app import create_app
    from tracker.web.config import WebSettings

    return create_app(
        engine=web_engine, settings=WebSettings(secret_key="t" * 40, login_attempts_per_minute=10_000)
    )
