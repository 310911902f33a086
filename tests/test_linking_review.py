"""Which excursions a batch step is proposed against, what happens when an excursion is
superseded, and invalid periods in the review by exception (no broker: the intake directly)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import Engine

from tests.factories import T0, as_, minutes, particles, scalar, topic
from tracker.core.db import unit_of_work
from tracker.core.errors import ConflictError
from tracker.facility.models import get_site
from tracker.ingest.processor import BatchProcessor, InboundMessage
from tracker.monitoring.excursions import list_excursions
from tracker.monitoring.intake import Intake
from tracker.quality.batches.linking import decide_link, links_of, sync_links
from tracker.quality.batches.release import gate_reasons
from tracker.quality.batches.review import assess_item, review_items
from tracker.quality.batches.steps import create_batch, end_step, get_batch, start_step


def feed(engine: Engine, messages: list[tuple[str, bytes]]) -> None:
    received = T0 + timedelta(days=1)
    with unit_of_work(engine) as s:
        BatchProcessor(Intake()).process(s, [InboundMessage(t, p, received) for t, p in messages])


def batch_with_step(engine: Engine, number: str, room: str, start_min: int, end_min: int) -> int:
    with unit_of_work(engine) as s:
        batch = create_batch(
            s,
            actor=as_(engine, "op1"),
            site=get_site(s),
            number=number,
            product="CAR-T",
            donor_id=f"D-{number}",
        )
        step = start_step(
            s,
            actor=as_(engine, "op1"),
            batch=batch,
            name="processing",
            room_code=room,
            start=T0 + minutes(start_min),
            open_processing=True,
        )
    with unit_of_work(engine) as s:
        end_step(s, signer=as_(engine, "op1"), step_id=step.id, end=T0 + minutes(end_min))
    return step.id


def b1_particles(high: range, n: int = 40, *, seq0: int = 1, skip: frozenset[int] = frozenset()):
    return [
        (
            topic("T-B1", "T-B1-PC"),
            particles(seq=seq0 + m, ts=T0 + minutes(m), c05=100_000 if m in high else 10),
        )
        for m in range(n)
        if m not in skip
    ]


def bsc_particles(n: int = 40):
    """The BSC (grade A zone) counter, in limit every minute: the step's own room monitored
    throughout, so the release gate has no coverage hole to list (issue 14 item 5)."""
    return [
        (
            topic("T-B1-BSC", "T-BSC-PC"),
            particles(monitor="T-BSC-PC", seq=1 + m, ts=T0 + minutes(m), c05=20, volume=100),
        )
        for m in range(n)
    ]


def test_links_follow_containment_and_the_pressure_reference(people_engine: Engine) -> None:
    engine = people_engine
    feed(engine, b1_particles(range(10, 13)))  # B room action excursion
    feed(
        engine,
        [
            (
                topic("T-B1", "T-B1-DP"),
                scalar(
                    monitor="T-B1-DP",
                    kind="pressure",
                    seq=i + 1,
                    ts=T0 + timedelta(seconds=10 * i),
                    value=-3.0 if 150 <= i < 153 else 15.0,
                    unit="Pa",
                ),
            )
            for i in range(240)
        ],
    )
    in_zone = batch_with_step(engine, "IN-ZONE", "T-B1-BSC", 0, 30)  # A zone inside the B room
    in_ref = batch_with_step(engine, "IN-REF", "T-C1", 20, 30)  # pressure reference room
    elsewhere = batch_with_step(engine, "ELSEWHERE", "T-D1", 0, 30)
    after = batch_with_step(engine, "AFTER", "T-B1-BSC", 35, 38)  # no overlap in time
    with unit_of_work(engine) as s:
        sync_links(s)
        by_type = {e["id"]: (e["kind"]) for e in list_excursions(s)}
        found = {
            n: sorted((by_type[lk.excursion_id], lk.step_id) for lk in links_of(s, get_batch(s, n)))
            for n in ("IN-ZONE", "IN-REF", "ELSEWHERE", "AFTER")
        }
    assert found == {
        "IN-ZONE": [("particles", in_zone), ("pressure", in_zone)],
        "IN-REF": [("pressure", in_ref)],  # inversion at 25 min, on both sides of the door
        "ELSEWHERE": [],
        "AFTER": [],
    }
    assert elsewhere
    assert after


def test_a_superseded_excursion_withdraws_its_undecided_link(people_engine: Engine) -> None:
    engine = people_engine
    feed(engine, b1_particles(range(10, 13), skip=frozenset({15, 16, 17})))  # 4 min silence: a gap
    batch_with_step(engine, "CT-1", "T-B1", 0, 40)
    with unit_of_work(engine) as s:
        sync_links(s)
        before = {e["id"]: e["type"] for e in list_excursions(s)}
        assert sorted(before.values()) == ["data_gap", "limit"]
        assert {lk.status for lk in links_of(s, get_batch(s, "CT-1"))} == {"proposed"}
    # the monitor backfills the silent minutes, still high: no gap, and a longer limit episode
    feed(
        engine,
        [
            (topic("T-B1", "T-B1-PC"), particles(seq=1 + m, ts=T0 + minutes(m), c05=100_000))
            for m in (15, 16, 17)
        ],
    )
    with unit_of_work(engine) as s:
        sync_links(s)
        after = {
            e["id"]: (e["type"], e["status"], e["ended_at"])
            for e in list_excursions(s, include_superseded=True)
        }
        statuses = {before[lk.excursion_id]: lk.status for lk in links_of(s, get_batch(s, "CT-1"))}
    gap_id = next(i for i, kind in before.items() if kind == "data_gap")
    limit_id = next(i for i, kind in before.items() if kind == "limit")
    assert after[gap_id][1] == "superseded"
    assert after[limit_id][:2] == ("limit", "closed")
    assert after[limit_id][2] == "2026-11-20T00:18:00Z"  # reshaped in place: same id, QA history kept
    assert statuses == {"data_gap": "withdrawn", "limit": "proposed"}


def test_invalid_readings_during_a_step_must_be_assessed(people_engine: Engine) -> None:
    engine = people_engine
    feed(
        engine,
        [
            (
                topic("T-B1", "T-B1-PC"),
                particles(
                    seq=m + 1, ts=T0 + minutes(m), c05=10, status="calibration" if 5 <= m < 9 else "ok"
                ),
            )
            for m in range(30)
        ]
        + bsc_particles(30),
    )
    batch_with_step(engine, "CT-1", "T-B1-BSC", 0, 20)
    with unit_of_work(engine) as s:
        batch = get_batch(s, "CT-1")
        sync_links(s, batch=batch)
        # issue 14 item 5: readings under calibration are no monitoring, so the stretch is a
        # data gap too (an excursion QA decides through its link) besides the invalid period
        gap_item, item = review_items(s, batch)
        assert (gap_item.kind, gap_item.detail["type"]) == ("excursion", "data_gap")
        assert (item.kind, item.monitor, item.exposed, item.detail["invalid_reasons"]) == (
            "invalid_period",
            "T-B1-PC",
            "unassessed",
            "status_calibration",
        )
        assert (item.start, item.end) == (T0 + minutes(5), T0 + minutes(8))
        link_id = gap_item.detail["link"]
        assert gate_reasons(s, batch)[-1] == f"review item {item.key} (status_calibration) is unassessed"
        decide_link(s, signer=as_(engine, "qa1"), link_id=link_id, exposed=False, reason="room counter only")
        assert gate_reasons(s, batch) == [f"review item {item.key} (status_calibration) is unassessed"]
        assess_item(
            s,
            actor=as_(engine, "qa1"),
            batch=batch,
            item_key=item.key,
            exposed=False,
            reason="calibration of the room counter; BSC counter valid throughout",
        )
        assert gate_reasons(s, batch) == []
        with pytest.raises(ConflictError, match="assessed already"):
            assess_item(
                s, actor=as_(engine, "qa1"), batch=batch, item_key=item.key, exposed=True, reason="again"
            )


def test_a_rejected_link_needs_no_deviation(people_engine: Engine) -> None:
    engine = people_engine
    feed(engine, b1_particles(range(10, 13)) + bsc_particles())
    batch_with_step(engine, "CT-1", "T-B1-BSC", 0, 30)
    with unit_of_work(engine) as s:
        batch = get_batch(s, "CT-1")
        sync_links(s, batch=batch)
        (link,) = links_of(s, batch)
        decide_link(
            s,
            signer=as_(engine, "qa1"),
            link_id=link.id,
            exposed=False,
            reason="BSC sash closed and BSC counter in limit throughout",
        )
        assert gate_reasons(s, batch) == []
        with pytest.raises(ConflictError, match="rejected already"):
            decide_link(s, signer=as_(engine, "qa1"), link_id=link.id, exposed=True, reason="changed mind")


def test_a_decision_reopens_when_its_excursion_grows(people_engine: Engine) -> None:
    engine = people_engine
    feed(engine, b1_particles(range(10, 13), n=14) + bsc_particles(61))  # still open at minute 13
    batch_with_step(engine, "CT-1", "T-B1-BSC", 0, 60)
    with unit_of_work(engine) as s:
        batch = get_batch(s, "CT-1")
        sync_links(s, batch=batch)
        (link,) = links_of(s, batch)
        decide_link(
            s,
            signer=as_(engine, "qa1"),
            link_id=link.id,
            exposed=False,
            reason="sash closed during the burst",
        )
        assert gate_reasons(s, batch) == []
    feed(engine, b1_particles(range(14, 20), n=40, seq0=1)[14:])  # it goes on: a longer episode
    with unit_of_work(engine) as s:
        batch = get_batch(s, "CT-1")
        reasons = gate_reasons(s, batch)
        (link,) = links_of(s, batch)
        assert link.status == "proposed"
        assert reasons == [
            f"exposure link {link.id} (excursion {link.excursion_id}, step {link.step_id}) is undecided"
        ]


def test_a_room_that_does_not_clean_up_after_a_step_opens_a_recovery_excursion(people_engine: Engine) -> None:
    engine = people_engine
    # the B room counter: busy while the step runs, still dirty when the recovery window ends
    feed(
        engine,
        [
            (
                topic("T-B1", "T-B1-PC"),
                particles(seq=m + 1, ts=T0 + minutes(m), c05=200_000 if m < 45 else 10),
            )
            for m in range(60)
        ],
    )
    step = batch_with_step(engine, "CT-1", "T-B1", 0, 20)  # recorded after the readings
    with unit_of_work(engine) as s:
        (rec,) = list_excursions(s, type_="recovery")
        assert (rec["monitor"], rec["started_at"], rec["ended_at"]) == (
            "T-B1-PC",
            "2026-11-20T00:40:00Z",
            "2026-11-20T00:45:00Z",
        )
        sync_links(s)
        linked = {lk.excursion_id for lk in links_of(s, get_batch(s, "CT-1"))}
    assert rec["id"] not in linked  # after the step: an excursion of the room, not of the batch
    assert step


def test_qa_acknowledges_an_excursion_again_when_it_escalates(people_engine: Engine) -> None:
    from tracker.core.errors import InvalidInputError, PermissionDeniedError
    from tracker.monitoring.excursions import acknowledge

    engine = people_engine
    feed(
        engine,
        [
            (topic("T-B1", "T-B1-PC"), particles(seq=m + 1, ts=T0 + minutes(m), c05=57 if m == 10 else 10))
            for m in range(11)
        ],
    )
    with unit_of_work(engine) as s:
        (ex,) = list_excursions(s, unacknowledged=True)
        assert (ex["level"], ex["acknowledged_by"]) == ("alert", None)
        with pytest.raises(PermissionDeniedError, match="needs the role qa"):
            acknowledge(s, actor=as_(engine, "op1"), excursion_id=ex["id"], comment="seen")
        with pytest.raises(InvalidInputError, match="needs a comment"):
            acknowledge(s, actor=as_(engine, "qa1"), excursion_id=ex["id"], comment=" ")
        acknowledge(s, actor=as_(engine, "qa1"), excursion_id=ex["id"], comment="door left open; closed")
        assert list_excursions(s, unacknowledged=True) == []
        with pytest.raises(ConflictError, match="acknowledged already"):
            acknowledge(s, actor=as_(engine, "qa1"), excursion_id=ex["id"], comment="again")
    feed(engine, [(topic("T-B1", "T-B1-PC"), particles(seq=12, ts=T0 + minutes(11), c05=200))])
    with unit_of_work(engine) as s:
        (ex,) = list_excursions(s, unacknowledged=True)  # escalated to action: to be seen again
        assert (ex["level"], ex["acknowledged_by"]) == ("action", "qa1")
        acknowledge(s, actor=as_(engine, "qa2"), excursion_id=ex["id"], comment="action: DEV raised")
        assert list_excursions(s, unacknowledged=True) == []
