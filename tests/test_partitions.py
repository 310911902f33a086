"""Readings partitioned by month on PostgreSQL (migration 0007, tracker.core.partitions).

Most of this is PostgreSQL's business; on SQLite the same calls must be harmless no-ops.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
from datetime import UTC, datetime, timedelta

import pytest
from alembic import command
from sqlalchemy import Engine, func, text
from sqlmodel import select

from tests.databases import ON_POSTGRES
from tests.factories import particles, topic
from tests.test_cli import tracker
from tracker.core.db import get_engine, unit_of_work
from tracker.core.migrate import alembic_config, upgrade
from tracker.core.partitions import (
    PartitionKeeper,
    ensure_months,
    ensure_strays,
    is_partitioned,
    list_partitions,
    month_start,
)
from tracker.core.timeutil import utcnow
from tracker.ingest.processor import BatchProcessor, InboundMessage
from tracker.monitoring.intake import Intake
from tracker.monitoring.readings import Reading
from tracker.monitoring.stats import ingest_stats

pg_only = pytest.mark.skipif(
    not ON_POSTGRES, reason="readings are partitioned on PostgreSQL only (SQLite has no table partitioning)"
)

OCT = datetime(2024, 10, 1, tzinfo=UTC)  # long before the migration's window: no partition


def pc(seq: int, at: datetime) -> InboundMessage:
    return InboundMessage(
        topic=topic("T-B1", "T-B1-PC"),
        payload=particles(seq=seq, ts=at, c05=10),
        received_at=at + timedelta(minutes=1),
    )


def ingest(
    engine: Engine, batches: list[list[InboundMessage]], processor: BatchProcessor | None = None
) -> BatchProcessor:
    processor = processor or BatchProcessor(Intake(close_after=3))
    for batch in batches:
        with unit_of_work(engine) as s:
            processor.process(s, batch)
    return processor


def names(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return [p.name for p in list_partitions(conn)]


def scanned(plan: str) -> set[str]:
    """Tables an EXPLAIN plan reads (``Seq Scan on x``, ``Index Scan using i on x``)."""
    return set(re.findall(r"\bon (reading\w*)", plan))


def explain(engine: Engine, sql: str, **params) -> str:
    with engine.connect() as conn:
        return "\n".join(conn.execute(text("EXPLAIN " + sql), params).scalars())


@pg_only
def test_migration_gives_this_month_the_months_ahead_and_a_default(engine: Engine) -> None:
    this_month = month_start(utcnow())
    with engine.connect() as conn:
        assert is_partitioned(conn)
        parts = list_partitions(conn)
    assert parts[-1].is_default
    assert parts[-1].rows == 0
    starts = [p.start for p in parts[:-1]]
    assert starts[0] == this_month
    assert len(starts) == 4  # this month and three ahead
    assert all(p.end == q.start for p, q in itertools.pairwise(parts[:-1]))


@pg_only
def test_ingest_creates_the_month_before_its_rows_arrive(facility_engine: Engine) -> None:
    """Backfilled readings of a month without partition land in their own partition, not in
    DEFAULT; a second batch of the same month costs no DDL (the keeper remembers)."""
    processor = ingest(facility_engine, [[pc(1, OCT + timedelta(days=3)), pc(2, OCT + timedelta(days=40))]])
    assert {"reading_y2024m10", "reading_y2024m11"} <= set(names(facility_engine))
    keeper: PartitionKeeper = processor.intake.partitions
    assert {(2024, 10), (2024, 11)} <= keeper.known
    ingest(facility_engine, [[pc(3, OCT + timedelta(days=4))]], processor)
    with facility_engine.connect() as conn:
        counts = dict(
            conn.execute(text("SELECT tableoid::regclass::text, count(*) FROM reading GROUP BY 1")).all()
        )
    assert counts == {"reading_y2024m10": 4, "reading_y2024m11": 2}  # two channels per sample
    with unit_of_work(facility_engine) as s:
        assert ingest_stats(s)["readings"] == 3


@pg_only
def test_rows_in_default_move_into_the_new_month(facility_engine: Engine) -> None:
    """A row that reached DEFAULT (written around the keeper) would make PostgreSQL refuse
    the month's partition; ensure_months moves it in with the new partition."""
    ingest(facility_engine, [[pc(1, utcnow())]])  # a real row to copy from
    with unit_of_work(facility_engine) as s:
        conn = s.connection()
        conn.execute(
            text(
                "INSERT INTO reading SELECT monitor_id, seq + 100, channel, :at, value, status, level, "
                "direction, state, basis_id, invalid_reason, sample_volume_l FROM reading"
            ),
            {"at": OCT + timedelta(days=9)},
        )
    with facility_engine.connect() as conn:
        assert list_partitions(conn)[-1].rows == 2
        conn.rollback()
        with pytest.raises(Exception, match="would be violated by some row"), conn.begin():
            conn.exec_driver_sql(
                "CREATE TABLE reading_y2024m10 PARTITION OF reading "
                "FOR VALUES FROM ('2024-10-01 00:00+00') TO ('2024-11-01 00:00+00')"
            )
    with unit_of_work(facility_engine) as s:
        assert ensure_strays(s.connection()) == ["reading_y2024m10"]
    with facility_engine.connect() as conn:
        parts = list_partitions(conn)
        assert parts[-1].rows == 0
        assert conn.execute(text("SELECT count(*) FROM reading_y2024m10")).scalar() == 2
        assert conn.execute(text("SELECT count(*) FROM reading")).scalar() == 4


@pg_only
def test_a_month_that_cannot_get_its_partition_is_stored_in_default_not_refused(
    facility_engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    """A hand-made partition overlapping October partly makes October's partition impossible:
    the batch is still stored (in DEFAULT) and judged, with a warning, not quarantined —
    refusing it would have put a month of valid readings out of evaluation."""
    with facility_engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE reading_odd PARTITION OF reading "
            "FOR VALUES FROM ('2024-10-15 00:00+00') TO ('2024-10-20 00:00+00')"
        )
    processor = ingest(facility_engine, [[pc(1, OCT + timedelta(days=3))]])
    assert "could not create the partitions" in caplog.text
    assert (2024, 10) in processor.intake.partitions.known  # logged once, not every batch
    with facility_engine.connect() as conn:
        where = dict(
            conn.execute(text("SELECT tableoid::regclass::text, count(*) FROM reading GROUP BY 1")).all()
        )
    assert where == {"reading_default": 2}
    with unit_of_work(facility_engine) as s:
        stats = ingest_stats(s)
    assert stats["readings"] == 1
    assert stats["quarantined"] == 0


@pg_only
def test_a_month_query_reads_only_that_months_partition(facility_engine: Engine) -> None:
    ingest(facility_engine, [[pc(i + 1, OCT + timedelta(days=10 * i)) for i in range(8)]])
    assert {"reading_y2024m10", "reading_y2024m11", "reading_y2024m12"} <= set(names(facility_engine))
    nov, dec = datetime(2024, 11, 1, tzinfo=UTC), datetime(2024, 12, 1, tzinfo=UTC)
    plan = explain(
        facility_engine,
        "SELECT count(*), max(value) FROM reading WHERE event_time >= :a AND event_time < :b",
        a=nov,
        b=dec,
    )
    assert scanned(plan) == {"reading_y2024m11"}, plan
    # the application's own queries (bound parameters, a monitor and a window) prune as well
    with facility_engine.connect() as conn:
        stmt = select(Reading.event_time, Reading.value).where(
            Reading.monitor_id == 1,
            Reading.channel == "0.5",
            Reading.event_time >= nov + timedelta(days=3),
            Reading.event_time < nov + timedelta(days=9),
        )
        compiled = stmt.compile(dialect=conn.dialect)
        plan = "\n".join(conn.exec_driver_sql("EXPLAIN " + str(compiled), compiled.params).scalars())
    assert scanned(plan) == {"reading_y2024m11"}, plan


@pg_only
def test_two_workers_creating_the_same_month_make_one_partition(facility_engine: Engine, db_url: str) -> None:
    """Shared-subscription workers meet the same new month: the advisory lock serialises them
    and the second sees the first's committed partition."""
    other = get_engine(db_url)
    first = facility_engine.connect()
    tx = first.begin()
    assert ensure_months(first, [OCT]) == ["reading_y2024m10"]
    second_result: list = []
    started = threading.Event()

    def second() -> None:
        with other.connect() as conn, conn.begin():
            started.set()
            second_result.append(ensure_months(conn, [OCT]))

    worker = threading.Thread(target=second)
    worker.start()
    started.wait(5)
    worker.join(0.5)
    assert worker.is_alive(), "the second worker must wait for the first's transaction"
    tx.commit()
    first.close()
    worker.join(10)
    assert second_result == [[]]
    assert names(facility_engine).count("reading_y2024m10") == 1


@pg_only
def test_migration_moves_existing_readings_and_downgrade_restores_them(databases) -> None:
    url = databases.empty()
    try:
        upgrade(url, "0006")
        engine = get_engine(url)
        with engine.begin() as conn:
            conn.exec_driver_sql(
                "INSERT INTO site (id, code, name, name_en, timezone, limit_set, revision, file_sha256, "
                "updated_at) VALUES (1, 'S', 'S', 'S', 'UTC', 'CN-GMP-2010', 1, '', now())"
            )
            conn.exec_driver_sql(
                "INSERT INTO room (id, site_id, code, name, name_en, grade, active) "
                "VALUES (1, 1, 'R', 'R', 'R', 'B', true)"
            )
            conn.exec_driver_sql(
                "INSERT INTO monitor (id, site_id, room_id, code, kind, interval_s, channels, active) "
                "VALUES (1, 1, 1, 'M', 'pressure', 10, '', true)"
            )
            conn.exec_driver_sql(
                "INSERT INTO evaluation_basis (id, site_id, limit_set_code, limit_set_version, "
                "limit_set_sha256, facility_revision) VALUES (1, 1, 'CN-GMP-2010', '1', '', 1)"
            )
            conn.execute(
                text(
                    "INSERT INTO reading (monitor_id, seq, channel, event_time, value, status, level, "
                    "state, basis_id) VALUES (1, :seq, '', :at, 12.5, 'ok', 'ok', 'at_rest', 1)"
                ),
                [{"seq": i, "at": OCT + timedelta(days=20 * i)} for i in range(5)],
            )
        engine.dispose()
        upgrade(url)
        with engine.connect() as conn:
            parts = list_partitions(conn)
            assert {"reading_y2024m10", "reading_y2024m11", "reading_y2024m12"} <= {p.name for p in parts}
            assert parts[-1].is_default
            assert parts[-1].rows == 0
            assert conn.execute(text("SELECT count(*) FROM reading")).scalar() == 5
            pk = conn.execute(
                text("SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'pk_reading'")
            ).scalar()
            assert pk == "PRIMARY KEY (monitor_id, seq, channel, event_time)"
        engine.dispose()
        command.downgrade(alembic_config(url), "0006")
        with engine.connect() as conn:
            assert not is_partitioned(conn)
            assert conn.execute(text("SELECT count(*) FROM reading")).scalar() == 5
    finally:
        databases.drop(url)


def test_partition_calls_are_no_ops_on_sqlite_and_the_cli_says_which(
    facility_engine: Engine, db_url: str
) -> None:
    """On both backends: ingest works through the keeper; ``tracker db partitions`` reports."""
    processor = ingest(facility_engine, [[pc(1, OCT)]])
    assert processor.intake.partitions.enabled is ON_POSTGRES
    listed = tracker("db", "partitions", "--json", db_url=db_url)
    assert listed.returncode == 0, listed.stderr
    doc = json.loads(listed.stdout)
    assert doc["partitioned"] is ON_POSTGRES
    if not ON_POSTGRES:
        assert doc["partitions"] == []
        assert "not partitioned" in tracker("db", "partitions", db_url=db_url).stdout
        with facility_engine.connect() as conn:
            assert ensure_months(conn, [OCT]) == []
        return
    assert "reading_y2024m10" in [p["name"] for p in doc["partitions"]]
    ensured = json.loads(
        tracker("db", "partitions", "--ensure", "--ahead", "6", "--json", db_url=db_url).stdout
    )
    assert len(ensured["created"]) == 3  # the migration made +3, now up to +6
    assert ensured["partitions"][-1] == {
        "name": "reading_default",
        "from": None,
        "to": None,
        "default": True,
        "rows": 0,
    }
    shown = tracker("db", "partitions", db_url=db_url, lang="zh-CN").stdout
    assert "读数分区" in shown
    assert "reading_y2024m10" in shown
    with unit_of_work(facility_engine) as s:
        assert s.exec(select(func.count()).select_from(Reading)).one() == 2


PARTITION = re.compile(r"^reading_(y\d{4}m\d\d|default)$")


def test_the_migrations_build_exactly_the_models_on_this_backend(engine: Engine) -> None:
    """One Alembic history for both backends: what it builds is what the models say (alembic's
    autogenerate comparison finds nothing to do), apart from what PostgreSQL adds on purpose —
    the monthly partitions of ``reading`` and their BRIN index (migration 0007)."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from tracker.models import metadata

    def include(obj, name, type_, reflected, compare_to) -> bool:
        if type_ == "table":
            return not PARTITION.match(name or "")
        if type_ == "index":
            return name != "ix_reading_event_time_brin" and not PARTITION.match(obj.table.name)
        return True

    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True, "include_object": include})
        assert compare_metadata(context, metadata) == []
