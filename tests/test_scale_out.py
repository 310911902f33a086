"""Several ingest workers on one database (scale-out): one monitor's messages reach different
workers, commit out of order and are redelivered to the other worker; the result must be the
one a single worker gets from the same stream. In process, so the interleaving is exact."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, func
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import select

from tests.factories import T0, scalar, topic
from tests.scale_out_scenario import excursion_shapes, scenario, stored_keys
from tracker.core.counters import read as read_counter
from tracker.core.db import get_engine, unit_of_work
from tracker.core.settings import Settings
from tracker.core.timeutil import utcnow
from tracker.ingest.client import IngestOptions, SharedSubscriptionError
from tracker.ingest.processor import BatchProcessor, InboundMessage
from tracker.monitoring.ingest_state import IngestState, WriterGuard
from tracker.monitoring.intake import GAP_SETTLE, Intake
from tracker.monitoring.quarantine import QuarantinedMessage
from tracker.monitoring.readings import RawMessage
from tracker.monitoring.rollups import RollupHourly

RECEIVED = T0.replace(year=2027)  # long after the event times: nothing here is live


@pytest.fixture
def twin_engine(
    request: pytest.FixtureRequest, facility_engine: Engine, db_url: str, tmp_path: Path
) -> Engine:
    """A second database identical to ``facility_engine``'s (same ids), for the other run."""
    try:  # the PostgreSQL-aware conftest clones any backend
        clone: Callable[[str], str] = request.getfixturevalue("clone_db")
    except pytest.FixtureLookupError:
        with facility_engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        path = tmp_path / "twin.db"
        shutil.copy(db_url.removeprefix("sqlite:///"), path)
        return get_engine(f"sqlite:///{path}")
    return get_engine(clone(db_url))


def _messages() -> list[InboundMessage]:
    return [InboundMessage(topic=t, payload=p, received_at=RECEIVED) for t, p in scenario()]


def _chunks(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _one_worker(engine: Engine, messages: list[InboundMessage]) -> None:
    processor = BatchProcessor(Intake(close_after=3, writer="solo"))
    for batch in _chunks(messages, 50):
        with unit_of_work(engine) as s:
            processor.process(s, batch)


def _two_workers(
    engine: Engine,
    messages: list[InboundMessage],
    *,
    seed: int = 3,
    redeliver: bool = True,
    settle: bool = True,
) -> int:
    """Round robin by message (as mosquitto shares a subscription), batches of different
    sizes, commits in a random order, one worker stalled for a while, and some committed
    messages redelivered to the *other* worker. Returns how many were redelivered."""
    rng = random.Random(seed)
    workers = {
        "a": BatchProcessor(Intake(close_after=3, writer="a")),
        "b": BatchProcessor(Intake(close_after=3, writer="b")),
    }
    queues = {"a": list(_chunks(messages[0::2], 37)), "b": list(_chunks(messages[1::2], 53))}
    stalled = queues["a"].pop(4)  # a slow batch: committed after many of b's later ones
    redelivered = 0
    turn = 0
    while queues["a"] or queues["b"]:
        name = rng.choice([n for n in queues if queues[n]])
        batch = queues[name].pop(0)
        other = "b" if name == "a" else "a"
        with unit_of_work(engine) as s:
            workers[name].process(s, batch)
        turn += 1
        if turn == 12:
            with unit_of_work(engine) as s:
                workers["a"].process(s, stalled)
        if redeliver and turn % 5 == 0 and queues[other]:
            # the broker hands a few of them again to the other worker (a lost PUBACK)
            again = [
                InboundMessage(m.topic, m.payload, m.received_at, dup=True) for m in rng.sample(batch, 3)
            ]
            queues[other][0] = again + queues[other][0]
            redelivered += len(again)
    if settle:  # the workers' silence ticks, once the deferred gap checks are due
        with unit_of_work(engine) as s:
            workers["b"].intake.recheck_gaps(s, now=utcnow() + 2 * GAP_SETTLE)
    return redelivered


def _rollups(engine: Engine) -> list[tuple]:
    with unit_of_work(engine) as s:
        rows = s.exec(select(RollupHourly)).all()
    return sorted(
        (
            r.monitor_id,
            r.channel,
            r.hour,
            r.count,
            r.invalid,
            r.n_alert,
            r.n_action,
            r.vmin,
            r.vmax,
            round(r.vsum, 6),
            r.hist,
        )
        for r in rows
    )


def test_two_interleaved_workers_store_what_one_worker_stores(
    facility_engine: Engine, twin_engine: Engine
) -> None:
    messages = _messages()
    _one_worker(facility_engine, messages)
    redelivered = _two_workers(twin_engine, messages)

    expected = stored_keys(facility_engine)
    assert len(expected) == len(messages)
    assert stored_keys(twin_engine) == expected  # each (monitor, seq) once
    one = excursion_shapes(facility_engine)
    assert {s[1] for s in one} >= {"limit", "data_gap", "recurrence"}
    assert {s[3] for s in one if s[1] == "limit"} == {"alert", "action"}
    assert excursion_shapes(twin_engine) == one
    assert _rollups(twin_engine) == _rollups(facility_engine)
    with unit_of_work(twin_engine) as s:
        # a redelivered duplicate the other worker sees is absorbed, not quarantined
        assert s.exec(select(func.count()).select_from(QuarantinedMessage)).one() == 0
        assert read_counter(s, "duplicates") == redelivered > 0
        writers = set(s.exec(select(IngestState.writer)).all())
        versions = dict(s.exec(select(IngestState.monitor_id, IngestState.version)).all())
        # the highest stored seq the workers hand each other is the true one
        kept = dict(s.exec(select(IngestState.monitor_id, IngestState.max_seq)).all())
        true = dict(
            s.exec(
                select(RawMessage.monitor_id, func.max(RawMessage.seq)).group_by(RawMessage.monitor_id)
            ).all()
        )
    assert kept == true
    assert writers <= {"a", "b"}
    assert len(versions) == 3


def _gap_checks_pending(engine: Engine) -> int:
    with unit_of_work(engine) as s:
        return s.exec(
            select(func.count()).select_from(IngestState).where(IngestState.gap_recheck_due.is_not(None))
        ).one()


def test_gaps_found_while_the_other_worker_writes_wait_and_are_drawn_by_any_worker(
    facility_engine: Engine, twin_engine: Engine
) -> None:
    """A hole that is only the other worker's share in flight is not drawn (then withdrawn):
    it is kept on the monitor's row and checked again once due, by whichever worker ticks."""
    messages = _messages()
    _one_worker(facility_engine, messages)
    started = utcnow()  # every deferral is due GAP_SETTLE after it was made, so not yet
    _two_workers(twin_engine, messages, settle=False)
    one = excursion_shapes(facility_engine)
    assert _gap_checks_pending(twin_engine) > 0
    assert excursion_shapes(twin_engine, superseded=True) == []  # nothing drawn in vain
    assert excursion_shapes(twin_engine) != one  # real gaps still held

    other = Intake(close_after=3, writer="c")  # a worker that stored none of it
    with unit_of_work(twin_engine) as s:
        assert other.recheck_gaps(s, now=started) == 0  # not due yet: nothing happens
    assert _gap_checks_pending(twin_engine) > 0
    with unit_of_work(twin_engine) as s:
        assert other.recheck_gaps(s, now=utcnow() + 2 * GAP_SETTLE) > 0
    assert _gap_checks_pending(twin_engine) == 0
    assert excursion_shapes(twin_engine) == one
    assert excursion_shapes(twin_engine, superseded=True) == []


def test_control_without_deferral_draws_gaps_then_withdraws_them(
    facility_engine: Engine, twin_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The control: taking every hole at face value ends exact too, but only after drawing
    false gaps that are then superseded, each with an audit event for QA to read."""
    monkeypatch.setattr(WriterGuard, "shared", lambda self, monitor_id: False)
    messages = _messages()
    _one_worker(facility_engine, messages)
    _two_workers(twin_engine, messages)
    assert excursion_shapes(twin_engine) == excursion_shapes(facility_engine)
    assert {s[1] for s in excursion_shapes(twin_engine, superseded=True)} == {"data_gap"}


def _pressure(seqs: range, start: datetime) -> list[InboundMessage]:
    return [
        InboundMessage(
            topic=topic("T-B1", "T-B1-DP"),
            received_at=RECEIVED,
            payload=scalar(
                monitor="T-B1-DP",
                kind="pressure",
                seq=i,
                ts=start + timedelta(seconds=10 * (i - seqs[0])),
                value=15.0,
                unit="Pa",
            ),
        )
        for i in seqs
    ]


def test_a_worker_reaching_back_past_every_stored_reading_draws_the_gap_before_them(
    facility_engine: Engine,
) -> None:
    """The other worker stored a monitor's later readings first; this worker's share is older
    than all of them, with a hole in between: a gap, although no stored reading precedes it."""
    a = BatchProcessor(Intake(close_after=3, writer="a"))
    b = BatchProcessor(Intake(close_after=3, writer="b"))
    with unit_of_work(facility_engine) as s:
        b.process(s, _pressure(range(100, 130), T0 + timedelta(minutes=30)))
    with unit_of_work(facility_engine) as s:
        a.process(s, _pressure(range(1, 13), T0))  # 00:00 … 00:01:50, then silence
    gaps = [g for g in excursion_shapes(facility_engine) if g[1] == "data_gap"]
    assert [(g[4], g[5]) for g in gaps] == [(T0 + timedelta(seconds=110), T0 + timedelta(minutes=30))]


def test_a_share_landing_inside_a_deferred_stretch_is_judged_by_its_recheck(facility_engine: Engine) -> None:
    """Worker a stores a monitor's later readings while b still holds older ones: a defers the
    hole after the newest stored reading. b's share then lands inside that hole with a real gap
    of its own, among stored readings and touching no stored gap (b skips the gap queries);
    the re-check must still find it — the deferred stretch starts at the hole's left edge."""
    a = BatchProcessor(Intake(close_after=3, writer="a"))
    b = BatchProcessor(Intake(close_after=3, writer="b"))
    for worker, seqs, start in (
        (a, range(1, 2), 0),
        (b, range(2, 3), 10),
        (a, range(12, 22), 110),
        (b, range(3, 4), 20),
        (b, range(7, 12), 60),
    ):
        with unit_of_work(facility_engine) as s:
            worker.process(s, _pressure(seqs, T0 + timedelta(seconds=start)))
    assert _gap_checks_pending(facility_engine) == 1
    with unit_of_work(facility_engine) as s:
        b.intake.recheck_gaps(s, now=utcnow() + 2 * GAP_SETTLE)
    gaps = [(g[4], g[5]) for g in excursion_shapes(facility_engine) if g[1] == "data_gap"]
    assert gaps == [(T0 + timedelta(seconds=20), T0 + timedelta(seconds=60))]  # 40 s > 30 s


@pytest.fixture
def without_version_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """The controls: rows still locked and versions bumped, but stale in-memory state kept."""
    claim = WriterGuard.claim
    monkeypatch.setattr(
        WriterGuard, "claim", lambda self, session, ids: (claim(self, session, ids), set())[1]
    )


@pytest.mark.usefixtures("without_version_check")
def test_control_stale_state_draws_other_excursions(facility_engine: Engine, twin_engine: Engine) -> None:
    messages = _messages()
    _one_worker(facility_engine, messages)
    _two_workers(twin_engine, messages, redeliver=False)
    assert stored_keys(twin_engine) == stored_keys(facility_engine)
    assert excursion_shapes(twin_engine) != excursion_shapes(facility_engine)


@pytest.mark.usefixtures("without_version_check")
def test_control_stale_highest_seq_lets_a_redelivery_hit_the_key(facility_engine: Engine) -> None:
    """A duplicate redelivered to the other worker passes its stale highest seq."""
    with pytest.raises(SQLAlchemyError, match="raw_message"):
        _two_workers(facility_engine, _messages())


def test_a_share_group_needs_a_fixed_worker_name() -> None:
    settings = Settings(mqtt_share_group="tracker", ingest_worker="2")
    options = IngestOptions.from_settings(settings)
    assert options.subscription == "$share/tracker/gmp/#"
    assert options.client_id == "gmp-tracker-ingest-2"
    assert (
        IngestOptions.from_settings(Settings(), share_group="g", client_id="x").subscription
        == "$share/g/gmp/#"
    )
    with pytest.raises(SharedSubscriptionError):
        IngestOptions.from_settings(Settings(mqtt_share_group="tracker"))
    with pytest.raises(SharedSubscriptionError):
        IngestOptions.from_settings(Settings(), share_group="a/b", worker="1")


@pytest.mark.parametrize(("lang", "words"), [("en", "fixed, unique name"), ("zh-CN", "固定且唯一")])
def test_cli_refuses_a_shared_ingester_without_a_name(lang: str, words: str, db_url: str) -> None:
    env = {
        **os.environ,
        "TRACKER_DATABASE_URL": db_url,
        "TRACKER_LANG": lang,
        "TRACKER_MQTT_SHARE_GROUP": "tracker",
        "COLUMNS": "200",
    }
    env.pop("TRACKER_INGEST_WORKER", None)
    done = subprocess.run(
        [sys.executable, "-m", "tracker.cli", "ingest"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert words in " ".join(done.stderr.split())


def _dp(seq: int, at: datetime) -> InboundMessage:
    """A live pressure reading of T-B1-DP (interval 10 s: silence over 30 s is a gap)."""
    return InboundMessage(
        topic=topic("T-B1", "T-B1-DP"),
        payload=scalar(monitor="T-B1-DP", kind="pressure", seq=seq, ts=at, value=15.0, unit="Pa"),
        received_at=at + timedelta(seconds=1),
    )


def _gaps(engine: Engine) -> list[tuple]:
    return [s for s in excursion_shapes(engine) if s[1] == "data_gap"]


def test_a_worker_that_sees_half_the_traffic_takes_no_share_for_silence(facility_engine: Engine) -> None:
    a = BatchProcessor(Intake(writer="a"))
    b = BatchProcessor(Intake(writer="b"))
    t = T0 + timedelta(days=3)
    with unit_of_work(facility_engine) as s:
        a.process(s, [_dp(1, t), _dp(2, t + timedelta(seconds=10))])
    for i in range(3, 12):  # the monitor goes on, through the other worker only
        with unit_of_work(facility_engine) as s:
            b.process(s, [_dp(i, t + timedelta(seconds=10 * (i - 1)))])
    last = t + timedelta(seconds=100)
    with unit_of_work(facility_engine) as s:  # 90 s after a's own last reading: not silence
        assert a.intake.check_silence(s, now=last + timedelta(seconds=20)) == 0
    assert _gaps(facility_engine) == []
    quiet = last + timedelta(seconds=45)  # really silent now: one gap, whoever looks
    with unit_of_work(facility_engine) as s:
        assert a.intake.check_silence(s, now=quiet) == 1
    with unit_of_work(facility_engine) as s:
        assert b.intake.check_silence(s, now=quiet + timedelta(seconds=5)) == 0
    (gap,) = _gaps(facility_engine)
    assert gap[4] == last
    assert gap[7] == "open"
    back = last + timedelta(seconds=60)
    with unit_of_work(facility_engine) as s:  # b never saw the gap open: it must close it
        b.process(s, [_dp(12, back)])
    (gap,) = _gaps(facility_engine)
    assert (gap[4], gap[5], gap[7]) == (last, back, "closed")
