"""Issue 3 end to end through a real broker: excursion during an open step → link → deviation
→ CAPA → signatures → the release gate refusing and then letting the batch through."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import Engine
from sqlmodel import select

from tests.factories import T0, as_, minutes, particles, topic
from tests.mqtt_helpers import publish_all, running_ingester, wait_until
from tracker.core.audit import AuditEvent, verify_chain
from tracker.core.db import unit_of_work
from tracker.core.errors import ConflictError, PermissionDeniedError
from tracker.facility.models import Monitor, get_site
from tracker.monitoring.excursions import list_excursions
from tracker.monitoring.readings import Reading
from tracker.quality import deviations as dv
from tracker.quality.batches.integrity import all_signature_checks, integrity_problems
from tracker.quality.batches.linking import decide_link, links_of, raise_deviation, sync_links
from tracker.quality.batches.release import gate_reasons, qa_review, release, sign_production
from tracker.quality.batches.steps import complete_batch, create_batch, end_step, get_batch, start_step
from tracker.quality.batches.views import batch_report
from tracker.wire.broker import LocalBroker


def bsc_counts(minute: int) -> int:
    """0.5 µm counts per 100 L sample of the BSC counter: clean except minutes 10–12."""
    return 1000 if 10 <= minute <= 12 else 20  # 1000/0.1 m³ = 10,000 /m³ > 3,520 action


def ingest_bsc(engine: Engine, broker: LocalBroker, minutes_: range) -> None:
    messages = [
        (
            topic("T-B1-BSC", "T-BSC-PC"),
            particles(monitor="T-BSC-PC", seq=m + 1, ts=T0 + minutes(m), c05=bsc_counts(m), volume=100),
        )
        for m in minutes_
    ]
    with running_ingester(engine, broker) as ingester:
        sent = publish_all(broker, messages)
        wait_until(lambda: ingester.stats.received >= sent, what=f"{sent} messages")


def states_of(engine: Engine, monitor: str) -> dict[int, str]:
    with unit_of_work(engine) as s:
        mon = s.exec(select(Monitor).where(Monitor.code == monitor)).one()
        rows = s.exec(select(Reading).where(Reading.monitor_id == mon.id, Reading.channel == "0.5")).all()
        return {int((r.event_time - T0).total_seconds() // 60): r.state for r in rows}


def test_batch_from_excursion_to_release_with_gate_and_audit(
    people_engine: Engine, broker: LocalBroker
) -> None:
    engine = people_engine
    with unit_of_work(engine) as s:
        batch = create_batch(
            s,
            actor=as_(engine, "op1"),
            site=get_site(s),
            number="CT-2026-001",
            product="CAR-T 细胞注射液",
            donor_id="D-0001",
            patient_id="P-0001",
        )
        step = start_step(
            s,
            actor=as_(engine, "op1"),
            batch=batch,
            name="细胞接种 seeding",
            room_code="T-B1-BSC",
            start=T0,
            open_processing=True,
        )
        step_id = step.id

    ingest_bsc(engine, broker, range(50))
    with unit_of_work(engine) as s:
        end_step(s, signer=as_(engine, "op1"), step_id=step_id, end=T0 + minutes(20))
    # the step drove the state timeline: in operation while it ran; in-operation limits through
    # the 20 min recovery window after it (docs/limits.md), at rest after that
    states = states_of(engine, "T-BSC-PC")
    assert {states[m] for m in range(40)} == {"in_operation"}
    assert {states[m] for m in range(40, 50)} == {"at_rest"}

    with unit_of_work(engine) as s:
        (ex,) = list_excursions(s, type_="limit")
        assert (ex["monitor"], ex["level"], ex["state"]) == ("T-BSC-PC", "action", "in_operation")
        batch = get_batch(s, "CT-2026-001")
        complete_batch(s, actor=as_(engine, "op1"), batch=batch)
        sync_links(s, batch=batch)
        (link,) = links_of(s, batch)
        assert (link.excursion_id, link.step_id, link.status) == (ex["id"], step_id, "proposed")
        assert any("undecided" in r for r in gate_reasons(s, batch))

        decide_link(
            s,
            signer=as_(engine, "qa1"),
            link_id=link.id,
            exposed=True,
            reason="open seeding in the BSC during the particle action excursion",
        )
        # a confirmed action exposure with no deviation keeps the gate closed
        assert any("no deviation" in r for r in gate_reasons(s, batch))
        dev = raise_deviation(
            s,
            actor=as_(engine, "qa1"),
            site=get_site(s),
            excursion_ids=[ex["id"]],
            title="BSC 0.5 µm action excursion during seeding",
            classification="major",
            category="environment",
            description="0.5 µm at 10,000 /m³ for 3 minutes",
        )
        number = dev.number
        assert number == "DEV-2026-0001"
        assert [b.batch_id for b in dv.batch_links(s, dev)] == [batch.id]

    with unit_of_work(engine) as s:
        sign_production(s, signer=as_(engine, "prod"), batch=get_batch(s, "CT-2026-001"))
    with pytest.raises(ConflictError) as refused, unit_of_work(engine) as s:
        qa_review(s, signer=as_(engine, "qa1"), batch=get_batch(s, "CT-2026-001"))
    assert refused.value.reasons == [f"deviation {number} is open, not closed"]

    with unit_of_work(engine) as s:
        dev = dv.get_deviation(s, number)
        dv.start_investigation(s, actor=as_(engine, "qa1"), dev=dev)
        with pytest.raises(ConflictError, match="root cause not recorded"):
            dv.approve_investigation(s, signer=as_(engine, "qa1"), dev=dev)
        dv.update_deviation(
            s,
            actor=as_(engine, "qa1"),
            dev=dev,
            reason="investigation finding",
            root_cause="BSC sash raised above the marked height during seeding",
        )
        batch = get_batch(s, "CT-2026-001")
        dv.assess_impact(
            s,
            actor=as_(engine, "qa1"),
            dev=dev,
            batch_id=batch.id,
            batch_number=batch.number,
            impact="minor",
            assessment="closed vessels except 2 min; sterility test passed",
        )
        with pytest.raises(PermissionDeniedError, match="nobody checks their own entry"):
            dv.approve_investigation(s, signer=as_(engine, "qa1"), dev=dev)
        dv.approve_investigation(s, signer=as_(engine, "qa2"), dev=dev)
        with pytest.raises(ConflictError, match="at least one CAPA"):
            dv.close_deviation(s, signer=as_(engine, "qa1"), dev=dev)
        capa = dv.add_capa(
            s,
            actor=as_(engine, "qa1"),
            dev=dev,
            kind="corrective",
            description="mark sash height; retrain operators",
            owner="op1",
            due=(T0 + timedelta(days=14)).date(),
        )
        with pytest.raises(ConflictError, match="not done"):
            dv.close_deviation(s, signer=as_(engine, "qa1"), dev=dev)
        prevent = dv.add_capa(
            s,
            actor=as_(engine, "qa1"),
            dev=dev,
            kind="preventive",
            description="sash interlock alarm",
            owner="prod",
            due=(T0 + timedelta(days=60)).date(),
        )
        dv.complete_capa(s, actor=as_(engine, "op1"), capa_id=capa.id, outcome="marked; 6 operators trained")
        with pytest.raises(PermissionDeniedError, match="wrote or owns part"):  # qa1 wrote the root cause
            dv.close_deviation(s, signer=as_(engine, "qa1"), dev=dev)
        dv.close_deviation(s, signer=as_(engine, "qa2"), dev=dev)
    with unit_of_work(engine) as s:  # the preventive action and its check come after closure
        dv.complete_capa(s, actor=as_(engine, "prod"), capa_id=prevent.id, outcome="alarm installed")
        dv.check_effectiveness(
            s,
            actor=as_(engine, "qa2"),
            capa_id=prevent.id,
            effective=True,
            note="no sash excursion in 30 days",
        )
        dev = dv.get_deviation(s, number)
        assert [(c.signature.scope, c.status) for c in dv.signature_checks(s, dev)] == [
            ("investigation", "intact"),
            ("closure", "intact"),
        ]

    with unit_of_work(engine) as s:
        qa_review(s, signer=as_(engine, "qa1"), batch=get_batch(s, "CT-2026-001"))
    with unit_of_work(engine) as s:
        batch = release(s, signer=as_(engine, "qp1"), batch=get_batch(s, "CT-2026-001"))
        assert batch.status == "released"
        report = batch_report(s, batch)
        assert [(g["meaning"], g["username"], g["intact"]) for g in report["signatures"]] == [
            ("approved", "prod", True),
            ("reviewed", "qa1", True),
            ("released", "qp1", True),
            ("performed", "op1", True),
            ("reviewed", "qa1", True),  # the exposure-link decision, e-signed since issue 15
        ]
        assert report["signatures"][2]["signed_at_local"].endswith("+0800")
        assert [i["exposed"] for i in report["review"]] == ["yes"]
        actions = [e.action for e in s.exec(select(AuditEvent).order_by(AuditEvent.id))]
        intact, count, broken = verify_chain(s)
        assert {c.status for c in all_signature_checks(s)} == {"intact"}
        assert integrity_problems(s) == []
    assert (intact, broken) == (True, None)
    assert count == len(actions)
    expected = [
        "batch.create",
        "batch.step_start",
        "signature.performed",
        "batch.step_end",
        "batch.complete",
        "link.propose",
        "link.confirmed",
        "deviation.open",
        "deviation.link_batch",
        "signature.approved",
        "batch.production_signed",
        "deviation.investigate",
        "deviation.update",
        "deviation.assess_impact",
        "deviation.approve_investigation",
        "capa.add",
        "capa.done",
        "deviation.close",
        "signature.reviewed",
        "batch.qa_reviewed",
        "signature.released",
        "batch.released",
    ]
    # in this order, others between (role approvals of the people fixture before; since issue 15
    # the link decision's own signature.reviewed after link.propose)
    remaining = iter(actions)
    assert all(a in remaining for a in expected), "audit events out of order"
    assert "readings.reevaluate" in actions  # the step re-judged the readings it covered


def test_a_step_recorded_after_its_readings_rejudges_them(people_engine: Engine, broker: LocalBroker) -> None:
    engine = people_engine
    ingest_bsc(engine, broker, range(50))
    assert set(states_of(engine, "T-BSC-PC").values()) == {"at_rest"}
    with unit_of_work(engine) as s:
        batch = create_batch(
            s,
            actor=as_(engine, "op2"),
            site=get_site(s),
            number="CT-2026-002",
            product="CAR-T",
            donor_id="D-0002",
        )
        step = start_step(
            s,
            actor=as_(engine, "op2"),
            batch=batch,
            name="harvest",
            room_code="T-B1-BSC",
            start=T0 + minutes(5),
            open_processing=True,
        )
    with unit_of_work(engine) as s:
        end_step(s, signer=as_(engine, "op2"), step_id=step.id, end=T0 + minutes(15))
    states = states_of(engine, "T-BSC-PC")
    assert [m for m in range(50) if states[m] == "in_operation"] == list(range(5, 35))  # + recovery
    with unit_of_work(engine) as s:
        (ex,) = list_excursions(s, type_="limit")
        assert ex["state"] == "in_operation"
