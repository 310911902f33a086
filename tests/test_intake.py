"""Storing batches without the network: dedup, evaluation by state at event time, late data."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import Engine, func
from sqlmodel import select

from tests.conftest import operate
from tests.factories import T0, particles, scalar, topic
from tracker.core.audit import AuditEvent
from tracker.core.db import get_engine, unit_of_work
from tracker.facility.basis import EvaluationBasis
from tracker.ingest.processor import BatchProcessor, InboundMessage
from tracker.monitoring.excursions import list_excursions
from tracker.monitoring.intake import Intake
from tracker.monitoring.readings import RawMessage, Reading
from tracker.monitoring.reevaluate import record_room_state, reevaluate
from tracker.monitoring.stats import ingest_stats

RECEIVED = T0 + timedelta(days=1)


def msg(t: str, payload: bytes, *, dup: bool = False, at: datetime = RECEIVED) -> InboundMessage:
    return InboundMessage(topic=t, payload=payload, received_at=at, dup=dup)


def pc(seq: int, minute: float, c05: int, monitor: str = "T-B1-PC", room: str = "T-B1"):
    return msg(
        topic(room, monitor), particles(monitor=monitor, seq=seq, ts=T0 + timedelta(minutes=minute), c05=c05)
    )


def dp(seq: int, second: float, pa: float) -> InboundMessage:
    return msg(
        topic("T-B1", "T-B1-DP"),
        scalar(
            monitor="T-B1-DP",
            kind="pressure",
            seq=seq,
            ts=T0 + timedelta(seconds=second),
            value=pa,
            unit="Pa",
        ),
    )


def run(engine: Engine, batches: list[list[InboundMessage]], processor: BatchProcessor | None = None):
    processor = processor or BatchProcessor(Intake(close_after=3))
    for batch in batches:
        with unit_of_work(engine) as s:
            processor.process(s, batch)
    return processor


def test_duplicates_are_absorbed_and_counted(facility_engine: Engine) -> None:
    first = [pc(1, 0, 10), pc(2, 1, 10), pc(2, 1, 10)]  # in-batch duplicate
    run(facility_engine, [first, [pc(1, 0, 10), pc(3, 2, 10)]])  # redelivered + new
    with unit_of_work(facility_engine) as s:
        st = ingest_stats(s)
        assert st["readings"] == 3
        assert st["duplicates"] == 2
        assert st["channel_values"] == 6
        assert st["quarantined"] == 0


def test_reused_seq_with_other_content_is_quarantined_not_merged(facility_engine: Engine) -> None:
    run(facility_engine, [[pc(1, 0, 10)], [pc(1, 5, 99)]])
    with unit_of_work(facility_engine) as s:
        st = ingest_stats(s)
        assert st["readings"] == 1
        assert st["quarantine_by_reason"] == {"seq_conflict": 1}
        assert s.exec(select(Reading.value).where(Reading.channel == "0.5")).one() < 400


def test_state_at_event_time_selects_the_limit(facility_engine: Engine) -> None:
    # 100,000/m³ at ≥0.5 µm in a grade B room: action at rest (3,520), in limit in operation
    # (352,000, alert 176,000). 2830 counts in 28.3 L = 100,000/m³. Minute 25 lies in the
    # 20-minute recovery window after the operation: still judged by in-operation limits.
    operate(facility_engine, "T-B1", T0 + timedelta(minutes=10), T0 + timedelta(minutes=20))
    run(facility_engine, [[pc(i + 1, m, 2830) for i, m in enumerate([5, 12, 15, 25, 45])]])
    with unit_of_work(facility_engine) as s:
        rows = s.exec(
            select(Reading.seq, Reading.level, Reading.state)
            .where(Reading.channel == "0.5")
            .order_by(Reading.seq)
        ).all()
        assert rows == [
            (1, "action", "at_rest"),
            (2, "ok", "in_operation"),
            (3, "ok", "in_operation"),
            (4, "ok", "in_operation"),
            (5, "action", "at_rest"),
        ]
        basis = s.exec(select(EvaluationBasis)).one()
        assert (basis.limit_set_code, basis.limit_set_version, basis.facility_revision) == (
            "CN-GMP-2010",
            "1",
            1,
        )


def test_backfill_lands_in_the_right_episode(facility_engine: Engine) -> None:
    # Live: minutes 0-9 in limit, then monitor offline minutes 10-39, live again 40-49.
    live = [pc(m + 1, m, 10) for m in range(10)] + [pc(m + 1, m, 10) for m in range(40, 50)]
    # Backfilled buffer: an excursion at minutes 20-24 (200/28.3 L ≈ 7,067/m³ > 3,520).
    buffered = [pc(m + 1, m, 200 if 20 <= m < 25 else 10) for m in range(10, 40)]
    processor = run(facility_engine, [live[:10], live[10:]])
    with unit_of_work(facility_engine) as s:
        assert list_excursions(s, type_="limit") == []
        (gap,) = list_excursions(s, type_="data_gap")  # silence by event time: 00:09 → 00:40
        assert (gap["started_at"], gap["ended_at"], gap["level"]) == (
            "2026-11-20T00:09:00Z",
            "2026-11-20T00:40:00Z",
            "alert",
        )
    run(facility_engine, [buffered], processor)
    with unit_of_work(facility_engine) as s:
        (ex,) = list_excursions(s, type_="limit")
        assert (ex["monitor"], ex["channel"], ex["level"], ex["state"]) == (
            "T-B1-PC",
            "0.5",
            "action",
            "at_rest",
        )
        assert ex["started_at"] == "2026-11-20T00:20:00Z"
        assert ex["ended_at"] == "2026-11-20T00:25:00Z"
        assert ex["readings"] == 5
        assert ex["limit"] == 3520
        assert s.exec(select(func.count()).select_from(RawMessage)).one() == 50


def test_late_reading_inside_an_open_episode_extends_it(facility_engine: Engine) -> None:
    processor = run(
        facility_engine,
        [[dp(1, 0, 15), dp(2, 10, 4), dp(4, 30, 4), dp(5, 40, 4), dp(6, 50, 4), dp(7, 60, 4), dp(8, 70, 4)]],
    )
    with unit_of_work(facility_engine) as s:
        (ex,) = list_excursions(s, type_="limit")
        first_id = ex["id"]
        assert ex["started_at"] == "2026-11-20T00:00:10Z"
        assert ex["readings"] == 6
    run(facility_engine, [[dp(3, 20, 3.5)]], processor)  # the missing seq arrives late
    with unit_of_work(facility_engine) as s:
        (ex,) = list_excursions(s, type_="limit")
        assert ex["id"] == first_id  # same excursion, updated in place
        assert ex["readings"] == 7
        assert ex["peak"] == 3.5
        assert ex["level"] == "action"


def test_late_in_limit_readings_can_split_an_episode(facility_engine: Engine) -> None:
    # minutes 0..9 all out of limit except gaps 3,4,5 that arrive late and are in limit
    processor = run(facility_engine, [[pc(m + 1, m, 200) for m in range(10) if m not in (3, 4, 5)]])
    with unit_of_work(facility_engine) as s:
        assert len(list_excursions(s, type_="limit")) == 1
    run(facility_engine, [[pc(m + 1, m, 10) for m in (3, 4, 5)]], processor)
    with unit_of_work(facility_engine) as s:
        exs = list_excursions(s, type_="limit")
        assert [(e["started_at"], e["ended_at"]) for e in exs] == [
            ("2026-11-20T00:00:00Z", "2026-11-20T00:03:00Z"),
            ("2026-11-20T00:06:00Z", None),
        ]
        everything = list_excursions(s, include_superseded=True, type_="limit")
        assert len(everything) == 2  # the first row was re-shaped in place, the second is new


def test_restart_resumes_an_open_episode_from_the_database(facility_engine: Engine) -> None:
    run(facility_engine, [[pc(m + 1, m, 200) for m in range(3)]])
    # a new process: fresh Intake, the open episode must continue, not duplicate
    run(facility_engine, [[pc(4, 3, 200), pc(5, 4, 10), pc(6, 5, 10), pc(7, 6, 10)]])
    with unit_of_work(facility_engine) as s:
        (ex,) = list_excursions(s, type_="limit")
        assert ex["readings"] == 4
        assert ex["ended_at"] == "2026-11-20T00:04:00Z"


def test_bad_messages_are_quarantined_and_the_batch_still_stores(facility_engine: Engine) -> None:
    batch = [
        pc(1, 0, 10),
        msg(topic("T-B1", "T-B1-PC"), b"{nope"),
        msg(topic("T-B1", "T-B1-PC"), b"{nope", dup=True),
        pc(2, 1, 10),
    ]
    run(facility_engine, [batch])
    with unit_of_work(facility_engine) as s:
        st = ingest_stats(s)
        assert st["readings"] == 2
        # the DUP copy of an identical quarantined message is counted, not stored twice
        assert st["quarantine_by_reason"] == {"bad_json": 1}


def test_backdated_room_state_reevaluates_exactly_the_affected_episodes(facility_engine: Engine) -> None:
    # 100,000/m³ for minutes 10-14 in T-B1: an action at rest. The processing session that
    # explains it (in operation 5-20) is recorded only afterwards.
    readings = [pc(m + 1, m, 2830 if 10 <= m < 15 else 10) for m in range(30)]
    readings += [pc(m + 100, m, 12000, monitor="T-C1-PC", room="T-C1") for m in range(3, 8)]
    run(facility_engine, [readings])
    with unit_of_work(facility_engine) as s:
        before = list_excursions(s, type_="limit")
    assert [(e["monitor"], e["state"]) for e in before] == [("T-C1-PC", "at_rest"), ("T-B1-PC", "at_rest")]
    with unit_of_work(facility_engine) as s:
        result = record_room_state(
            s, room_code="T-B1", state="in_operation", effective_at=T0 + timedelta(minutes=5), actor="qa.li"
        )
        record_room_state(
            s, room_code="T-B1", state="at_rest", effective_at=T0 + timedelta(minutes=20), actor="qa.li"
        )
    assert result.readings_changed > 0
    with unit_of_work(facility_engine) as s:
        after = list_excursions(s, include_superseded=True, type_="limit")
        # the B room's excursion no longer holds (in limit in operation); the C room's is untouched
        assert [(e["monitor"], e["status"]) for e in after] == [
            ("T-C1-PC", "open"),
            ("T-B1-PC", "superseded"),
        ]
        assert after[0] == before[0]
        states = s.exec(select(Reading.state).where(Reading.monitor_id == 1, Reading.seq == 12)).all()
        assert set(states) == {"in_operation"}
        again = reevaluate(s, room_code="T-B1", start=T0, actor="qa.li")
        assert again.readings_changed == 0
        assert again.series_rebuilt == 0
        actions = [e.action for e in s.exec(select(AuditEvent))]
        assert "excursion.supersede" in actions
        assert "readings.reevaluate" in actions


def test_rules_do_not_depend_on_batch_boundaries(
    facility_engine: Engine, db_url: str, clone_db: Callable[[str], str]
) -> None:
    """One batch or one message per batch: the same excursions of every type."""
    alerts = {60, 61, 180, 181, 300, 301, 420}
    msgs = [pc(m + 1, m, 60 if m in alerts else 10) for m in range(480) if not 200 <= m < 215]
    other = clone_db(db_url)
    run(facility_engine, [msgs])
    run(get_engine(other), [[m] for m in msgs])

    def shapes(engine: Engine) -> list[tuple]:
        with unit_of_work(engine) as s:
            return [
                (e["type"], e["started_at"], e["ended_at"], e["level"], e["readings"])
                for e in list_excursions(s)
            ]

    one_batch = shapes(facility_engine)
    assert one_batch == shapes(get_engine(other))
    assert [t for t, *_ in one_batch].count("adverse_trend") == 1
    assert [t for t, *_ in one_batch].count("data_gap") == 1


def test_reevaluating_a_window_re_judges_the_rolling_volume_after_it(
    facility_engine: Engine, db_url: str, clone_db: Callable[[str], str]
) -> None:
    """Grade B at rest, ≥5.0 µm, 28.3 L: one count (35 /m³) exceeds 29 /m³, so action is
    judged over the rolling cubic metre. An operation recorded late for 00:05-00:10 (recovery
    to 00:30) takes those samples out of the at-rest window: re-evaluating only [00:05, 00:30)
    must leave every later verdict exactly as ingesting with the right timeline does."""
    msgs = [
        msg(
            topic("T-B1", "T-B1-PC"),
            particles(seq=m + 1, ts=T0 + timedelta(minutes=m), c05=10, c50=1 if 8 <= m < 45 else 0),
        )
        for m in range(90)
    ]
    other = clone_db(db_url)
    right = get_engine(other)
    operate(right, "T-B1", T0 + timedelta(minutes=5), T0 + timedelta(minutes=10))
    run(right, [msgs])
    run(facility_engine, [msgs])

    def levels(engine: Engine) -> list[tuple]:
        with unit_of_work(engine) as s:
            return s.exec(
                select(Reading.seq, Reading.level, Reading.state)
                .where(Reading.channel == "5.0")
                .order_by(Reading.seq)
            ).all()

    before = levels(facility_engine)
    operate(facility_engine, "T-B1", T0 + timedelta(minutes=5), T0 + timedelta(minutes=10))
    with unit_of_work(facility_engine) as s:
        reevaluate(
            s,
            room_code="T-B1",
            start=T0 + timedelta(minutes=5),
            end=T0 + timedelta(minutes=30),
            actor="qa.li",
        )
    after = levels(facility_engine)
    assert after == levels(right)
    changed_later = [a for a, b in zip(after, before, strict=True) if a != b and a[0] > 30]
    assert changed_later, "the samples after the window must have been judged again"
    # limit, recovery and recurrence episodes alike
    with unit_of_work(facility_engine) as s:
        shapes = [
            (e["type"], e["started_at"], e["ended_at"], e["level"])
            for e in list_excursions(s)
            if e["type"] in ("limit", "recovery", "recurrence")
        ]
    with unit_of_work(right) as s:
        assert shapes == [
            (e["type"], e["started_at"], e["ended_at"], e["level"])
            for e in list_excursions(s)
            if e["type"] in ("limit", "recovery", "recurrence")
        ]
    # the window's alert (14.5 /m³ over 1 m³: 15 counts) is reached at 00:44 and held until the
    # counts age out of the window (issue 14: single counts raise nothing on their own)
    assert ("limit", "2026-11-20T00:44:00Z", "2026-11-20T01:06:00Z", "alert") in shapes


def bsc(seq: int, minute: float, c50: int) -> InboundMessage:
    """The grade A zone's counter (100 L samples): ≥5.0 µm counts feed the recurrence rule."""
    return msg(
        topic("T-B1-BSC", "T-BSC-PC"),
        particles(
            monitor="T-BSC-PC", seq=seq, volume=100, ts=T0 + timedelta(minutes=minute), c05=c50, c50=c50
        ),
    )


def test_late_data_that_breaks_a_recurrence_supersedes_it(facility_engine: Engine) -> None:
    quiet = [bsc(s, s, 0) for s in range(1, 30) if s not in (10, 11, 12)]
    # minutes 10 and 12 counted, minute 11 missing: two consecutive samples as received
    processor = run(facility_engine, [[*quiet, bsc(10, 10, 1), bsc(12, 12, 1)]])
    with unit_of_work(facility_engine) as s:
        (rec,) = list_excursions(s, type_="recurrence")
        assert (rec["started_at"], rec["ended_at"]) == ("2026-11-20T00:10:00Z", "2026-11-20T00:12:00Z")
    run(facility_engine, [[bsc(11, 11, 0)]], processor)  # the missing sample arrives: no count
    with unit_of_work(facility_engine) as s:
        assert list_excursions(s, type_="recurrence") == []
        (gone,) = list_excursions(s, type_="recurrence", include_superseded=True)
        assert gone["status"] == "superseded"
        events = s.exec(select(AuditEvent.action).where(AuditEvent.entity_key == str(gone["id"]))).all()
    assert "excursion.supersede" in events


def test_late_counts_reshape_a_recurrence_exactly(facility_engine: Engine) -> None:
    counted = {3, 4, 20, 21}
    processor = run(
        facility_engine, [[bsc(s, s, 1 if s in counted else 0) for s in range(1, 40) if s not in (9, 10, 11)]]
    )
    with unit_of_work(facility_engine) as s:
        assert [
            (e["started_at"][11:16], e["ended_at"][11:16]) for e in list_excursions(s, type_="recurrence")
        ] == [("00:03", "00:04"), ("00:20", "00:21")]
    # backfilled minutes 9 and 10 had counts: with 3 and 4 that is ≥ 3 of the last 10 samples,
    # which stays true up to minute 13 (the window then still holds 4, 9 and 10)
    run(facility_engine, [[bsc(9, 9, 1), bsc(10, 10, 1), bsc(11, 11, 0)]], processor)
    with unit_of_work(facility_engine) as s:
        assert [
            (e["started_at"][11:16], e["ended_at"][11:16], e["readings"])
            for e in list_excursions(s, type_="recurrence")
        ] == [("00:03", "00:13", 4), ("00:20", "00:21", 2)]


def test_recurrences_under_random_late_delivery_equal_a_derivation_from_scratch(
    facility_engine: Engine,
) -> None:
    import random

    from tracker.monitoring.rules.recurrence import recurrence_spans

    rng = random.Random(20261123)
    for trial in range(4):
        # the last ten samples of a trial have no count, so trials cannot join (same monitor)
        counts = {m: int(m < 140 and rng.random() < 0.15) for m in range(150)}
        late = set(rng.sample(range(150), 18))  # 12 % arrive after the others

        def sample(m: int, trial: int = trial, counts: dict = counts) -> InboundMessage:
            return bsc(m + 1 + 1000 * trial, m + 200 * trial, counts[m])

        batches = [[sample(m) for m in range(150) if m not in late]]
        batches += [[sample(m)] for m in sorted(late, reverse=True)]
        processor = run(facility_engine, batches[:1])
        run(facility_engine, batches[1:], processor)
        samples = [(T0 + timedelta(minutes=m + 200 * trial), bool(counts[m])) for m in range(150)]
        expected = [(s.start, s.end, s.counted) for s in recurrence_spans(samples)]
        with unit_of_work(facility_engine) as s:
            got = [
                (
                    datetime.fromisoformat(e["started_at"]),
                    datetime.fromisoformat(e["ended_at"]),
                    e["readings"],
                )
                for e in list_excursions(s, type_="recurrence")
                if T0 + timedelta(minutes=200 * trial)
                <= datetime.fromisoformat(e["started_at"])
                < T0 + timedelta(minutes=200 * trial + 150)
            ]
        assert got == expected, f"trial {trial}"


def test_a_backdated_operation_keeps_a_grade_b_recurrence_in_scope(facility_engine: Engine) -> None:
    """Issue 14 item 6: grade B in operation is in the rule's scope too (Annex 1 第十条(六)); the
    re-judged recurrence is kept, now in operation, not superseded."""
    msgs = [pc(m + 1, m, 0) for m in range(60)]
    msgs[10] = msg(topic("T-B1", "T-B1-PC"), particles(seq=11, ts=T0 + timedelta(minutes=10), c05=1, c50=1))
    msgs[11] = msg(topic("T-B1", "T-B1-PC"), particles(seq=12, ts=T0 + timedelta(minutes=11), c05=1, c50=1))
    run(facility_engine, [msgs])
    with unit_of_work(facility_engine) as s:
        (rec,) = list_excursions(s, type_="recurrence")
        assert (rec["level"], rec["state"]) == ("alert", "at_rest")
        record_room_state(
            s, room_code="T-B1", state="in_operation", effective_at=T0 + timedelta(minutes=5), actor="qa.li"
        )
        record_room_state(
            s, room_code="T-B1", state="at_rest", effective_at=T0 + timedelta(minutes=15), actor="qa.li"
        )
    with unit_of_work(facility_engine) as s:
        (kept,) = list_excursions(s, type_="recurrence")
        assert (kept["id"], kept["level"]) == (rec["id"], "alert")


def test_a_64_bit_seq_is_stored_and_deduplicated_on_every_backend(facility_engine: Engine) -> None:
    """The wire allows any seq below 2⁶³ (monitors that count milliseconds pass 2³¹): SQLite's
    INTEGER always held it; PostgreSQL needs BIGINT (migration 0007)."""
    big = 1_763_596_800_000  # a millisecond counter
    run(facility_engine, [[pc(big, 0, 10), pc(2**63 - 1, 1, 10)], [pc(big, 0, 10)]])
    with unit_of_work(facility_engine) as s:
        assert ingest_stats(s)["readings"] == 2
        assert ingest_stats(s)["duplicates"] == 1
        assert sorted(s.exec(select(RawMessage.seq)).all()) == [big, 2**63 - 1]
        assert set(s.exec(select(Reading.seq)).all()) == {big, 2**63 - 1}
