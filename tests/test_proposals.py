"""Data-driven alert and action levels (issue 6 item 11): percentiles of a period's valid
readings, refused on too few data, capped at the regulation, in force only once another QA
person approves them with an e-signature, and kept across facility-file loads."""

from __future__ import annotations

import json
import math
from datetime import timedelta

import pytest
from sqlalchemy import Engine

from tests.conftest import MIN_FACILITY
from tests.factories import T0, as_, particles, scalar, topic
from tracker.core.db import unit_of_work
from tracker.core.errors import InvalidInputError, PermissionDeniedError
from tracker.facility.file import parse_facility
from tracker.facility.load import load_facility
from tracker.facility.models import get_site
from tracker.facility.policy import compliance_of
from tracker.ingest.processor import BatchProcessor, InboundMessage
from tracker.monitoring.intake import Intake
from tracker.monitoring.proposals import approve, list_proposals, propose
from tracker.monitoring.snapshot import build_registry
from tracker.quality.batches.integrity import all_signature_checks

END = T0 + timedelta(days=10)


def feed_counts(engine: Engine, counts: list[int]) -> None:
    """T-B1's counter at rest, one 28.3 L sample every 10 minutes (1,200 samples ≈ 8.3 days)."""
    received = END + timedelta(days=1)
    messages = [
        InboundMessage(
            topic("T-B1", "T-B1-PC"), particles(seq=i + 1, ts=T0 + timedelta(minutes=10 * i), c05=c), received
        )
        for i, c in enumerate(counts)
    ]
    with unit_of_work(engine) as s:
        BatchProcessor(Intake()).process(s, messages)


def per_m3(count: int) -> float:
    return round(count / 0.0283, 3)


def b1_bounds(engine: Engine, state: str = "at_rest"):
    with unit_of_work(engine) as s:
        registry = build_registry(s)
    return registry.lookup("T-SITE", "T-B1-PC").limits.for_reading("0.5", state)


def test_percentile_levels_need_another_qa_to_take_effect(people_engine: Engine) -> None:
    engine = people_engine
    feed_counts(engine, [i % 100 for i in range(1200)])  # twelve of each count 0…99
    with unit_of_work(engine) as s:
        p = propose(
            s,
            actor=as_(engine, "qa1"),
            room_code="T-B1",
            kind="particles",
            channel="0.5",
            state="at_rest",
            start=T0,
            end=END,
        )
        pid = p.id
        # 95th percentile of 1,200 sorted samples: 0.05 of the way from count 94 to 95; 99th: 98 → 99
        assert p.alert_value == math.ceil(per_m3(94) + 0.05 * (per_m3(95) - per_m3(94)))
        assert p.action_value == math.ceil(per_m3(98) + 0.01 * (per_m3(99) - per_m3(98)))
        assert (p.readings, p.days, p.regulatory_value) == (1200, 9, 3520.0)
        (doc,) = list_proposals(s)
        assert not any("not normally distributed" in n for n in doc["notes"])  # uniform: skew 0
        assert any("looser than the current" in n for n in doc["notes"])  # current alert is 1,760
    assert b1_bounds(engine).alert_high == 1760.0  # nothing changed yet
    with unit_of_work(engine) as s, pytest.raises(PermissionDeniedError, match="another QA person"):
        approve(s, signer=as_(engine, "qa1"), proposal_id=pid)
    with unit_of_work(engine) as s:
        before = compliance_of(s, get_site(s))
        approve(s, signer=as_(engine, "qa2"), proposal_id=pid, comment="annual limit review 2026")
        assert get_site(s).revision == 2
        # the levels' revision keeps the rules (and notifications) the site judged by
        assert compliance_of(s, get_site(s)) == before
        assert [c.status for c in all_signature_checks(s) if c.signature.entity != "user"] == ["intact"]
    bounds = b1_bounds(engine)
    assert (bounds.alert_high, bounds.action_high) == (3324.0, 3464.0)
    assert b1_bounds(engine, "in_operation").action_high == 352_000.0  # other state untouched
    # a facility file that changes nothing about this scope keeps the approved level in force
    renamed = MIN_FACILITY.read_text(encoding="utf-8").replace("准备间", "准备室")
    with unit_of_work(engine) as s:
        assert load_facility(s, parse_facility(renamed), actor="admin").revision == 3
    assert b1_bounds(engine).action_high == 3464.0


def test_a_proposal_never_goes_beyond_the_regulation(people_engine: Engine) -> None:
    engine = people_engine
    feed_counts(engine, [i % 200 for i in range(1200)])  # up to 7,000 /m³: above the 3,520 limit
    with unit_of_work(engine) as s:
        p = propose(
            s,
            actor=as_(engine, "qa1"),
            room_code="T-B1",
            kind="particles",
            channel="0.5",
            state="at_rest",
            start=T0,
            end=END,
        )
        assert p.action_value == 3520.0
        assert p.alert_value <= p.action_value
        (doc,) = list_proposals(s)
        assert any("above the regulatory limit" in n for n in doc["notes"])


def test_too_few_data_are_refused_with_the_counts(people_engine: Engine) -> None:
    engine = people_engine
    feed_counts(engine, [i % 100 for i in range(1200)])
    with unit_of_work(engine) as s, pytest.raises(InvalidInputError, match="288 valid at_rest readings on 2"):
        propose(
            s,
            actor=as_(engine, "qa1"),
            room_code="T-B1",
            kind="particles",
            channel="0.5",
            state="at_rest",
            start=T0,
            end=T0 + timedelta(days=2),
        )
    with unit_of_work(engine) as s, pytest.raises(InvalidInputError, match="0 valid in_operation"):
        propose(
            s,
            actor=as_(engine, "qa1"),
            room_code="T-B1",
            kind="particles",
            channel="0.5",
            state="in_operation",
            start=T0,
            end=END,
        )


def test_pressure_levels_are_lower_percentiles_floored_at_the_regulation(people_engine: Engine) -> None:
    engine = people_engine
    received = END + timedelta(days=1)
    values = [10.0 + (i // 12) * 0.1 for i in range(1200)]  # twelve of each 10.0 … 19.9 Pa
    messages = [
        InboundMessage(
            topic("T-B1", "T-B1-DP"),
            scalar(
                monitor="T-B1-DP",
                kind="pressure",
                seq=i + 1,
                ts=T0 + timedelta(minutes=10 * i),
                value=round(v, 1),
                unit="Pa",
            ),
            received,
        )
        for i, v in enumerate(values)
    ]
    with unit_of_work(engine) as s:
        BatchProcessor(Intake()).process(s, messages)
        p = propose(
            s,
            actor=as_(engine, "qa1"),
            room_code="T-B1",
            kind="pressure",
            channel=None,
            state="at_rest",
            start=T0,
            end=END,
        )
        # 5th percentile: 0.95 of the way from 10.4 to 10.5 → 10.495, rounded down to 10.4;
        # 1st: 10.099 → 10.0, which is the ≥ 10 Pa floor of GMP 2010 Art. 48
        assert (p.bound, p.alert_value, p.action_value, p.regulatory_value) == ("low", 10.4, 10.0, 10.0)
        pid = p.id
    with unit_of_work(engine) as s:
        with pytest.raises(InvalidInputError, match="say why"):
            approve(s, signer=as_(engine, "qa2"), proposal_id=pid)  # 10.4 Pa alert is looser than 12
        approve(s, signer=as_(engine, "qa2"), proposal_id=pid, comment="cascade stable all year")
        bounds = build_registry(s).lookup("T-SITE", "T-B1-DP").limits.for_reading("", "at_rest")
    assert (bounds.alert_low, bounds.action_low, bounds.delay_s) == (10.4, 10.0, 60.0)


def test_a_stale_proposal_or_a_grade_change_is_not_applied_silently(people_engine: Engine) -> None:
    from tracker.core.errors import ConflictError

    engine = people_engine
    feed_counts(engine, [i % 100 for i in range(1200)])
    with unit_of_work(engine) as s:
        stale = propose(
            s,
            actor=as_(engine, "qa1"),
            room_code="T-B1",
            kind="particles",
            channel="0.5",
            state="at_rest",
            start=T0,
            end=END,
        ).id
    tighter = MIN_FACILITY.read_text(encoding="utf-8").replace("alert_low = 12.0", "alert_low = 13.0")
    with unit_of_work(engine) as s:
        load_facility(s, parse_facility(tighter), actor="admin", approver=as_(engine, "qa2"))
    with unit_of_work(engine) as s, pytest.raises(ConflictError, match="facility changed since"):
        approve(s, signer=as_(engine, "qa2"), proposal_id=stale, comment="review")
    with unit_of_work(engine) as s:
        fresh = propose(
            s,
            actor=as_(engine, "qa1"),
            room_code="T-B1",
            kind="particles",
            channel="0.5",
            state="at_rest",
            start=T0,
            end=END,
        ).id
    with unit_of_work(engine) as s:
        approve(s, signer=as_(engine, "qa2"), proposal_id=fresh, comment="review")
    # the room becomes grade C: its approved grade B level no longer applies, and dropping it is a
    # limit change QA must approve
    regraded = tighter.replace(
        'code = "T-B1"\nname = "细胞制备间"\nname_en = "Cell processing room"\ngrade = "B"',
        'code = "T-B1"\nname = "细胞制备间"\nname_en = "Cell processing room"\ngrade = "C"',
    )
    assert regraded != tighter
    with unit_of_work(engine) as s, pytest.raises(PermissionDeniedError, match="QA must approve"):
        load_facility(s, parse_facility(regraded), actor="admin")


def test_mostly_empty_samples_do_not_give_a_zero_level(people_engine: Engine) -> None:
    engine = people_engine
    feed_counts(engine, [1 if i % 200 == 0 else 0 for i in range(1200)])
    with unit_of_work(engine) as s:
        p = propose(
            s,
            actor=as_(engine, "qa1"),
            room_code="T-B1",
            kind="particles",
            channel="0.5",
            state="at_rest",
            start=T0,
            end=END,
        )
        assert (p.alert_value, p.action_value) == (36.0, 36.0)  # one count in 28.3 L: 35.3 /m³
        assert any("below one particle per sample" in n for n in json.loads(p.notes))
