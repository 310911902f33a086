"""Grade A ≥ 5.0 µm transients (issue 14 item 1): a burst in one sample is an action at once,
a lone count is not, and the rolling window neither spans a change of state nor reaches
back further than its time bound."""

from __future__ import annotations

from sqlalchemy import Engine
from sqlmodel import select

from tests.test_volume_recovery import at, bsc, ingest, iso, shape
from tracker.core.db import unit_of_work
from tracker.facility.limits import Level, Verdict, load_limit_set
from tracker.monitoring.excursions import list_excursions
from tracker.monitoring.readings import Reading
from tracker.monitoring.rules.volume import UL_PER_M3, Sample, rolling_pass, volume_ul
from tracker.wire.broker import LocalBroker


def sample(minute: int, count: int, *, state: str = "in_operation", burst: bool = False) -> Sample:
    rolling = not burst
    return Sample(
        at=at(minute),
        seq=minute,
        count=count,
        volume_ul=volume_ul(28.3),
        limit=20.0,
        verdict=Verdict(Level.ACTION, "high", 20.0) if burst else Verdict(Level.OK),
        rolling=rolling,
        state=state,
        alert=10.0,
        burst=burst,
    )


def levels(samples: list[Sample]) -> dict[int, str]:
    return {s.seq: s.verdict.level.value for s in samples if s.verdict.level is not Level.OK}


def test_the_burst_threshold_is_a_cited_setting_of_both_limit_sets() -> None:
    for code in ("CN-GMP-2010", "EU-GMP-ANNEX1-2022"):
        assert load_limit_set(code).burst_counts == 2


def test_a_burst_stays_out_of_the_window_so_a_later_lone_count_is_no_action() -> None:
    """Before: 15 counts in one 28.3 L sample were only an alert (diluted in the cubic metre),
    and a lone count half an hour later became the action because the window still held them."""
    samples = [sample(0, 15, burst=True)] + [sample(m, 1 if m == 30 else 0) for m in range(1, 60)]
    rolling_pass({}, samples, target_ul=UL_PER_M3)
    assert levels(samples) == {0: "action"}


def test_the_window_never_spans_a_change_of_state() -> None:
    # 11 counts at rest fill the at-rest run to the alert level; the room goes into operation:
    # the same grade A limit, but a new run, so 5 more counts in operation raise nothing
    samples = [sample(m, 1, state="at_rest") for m in range(11)]
    samples += [sample(m, 1 if m < 16 else 0, state="in_operation") for m in range(11, 30)]
    rolling_pass({}, samples, target_ul=UL_PER_M3)
    assert levels(samples) == {10: "alert"}


def test_the_window_has_a_time_bound() -> None:
    # 10 counts, a quiet hour and a half (no samples: a counter stopped), then one count: without
    # a bound the window would hold 11 counts (an alert); with the default hour it holds one
    samples = [sample(m, 1) for m in range(10)] + [sample(100, 1)]
    rolling_pass({}, samples, target_ul=UL_PER_M3, max_age_s=3600)
    assert levels(samples) == {}
    unbounded = [sample(m, 1) for m in range(10)] + [sample(100, 1)]
    rolling_pass({}, unbounded, target_ul=UL_PER_M3)
    assert levels(unbounded) == {100: "alert"}


def test_a_grade_a_burst_through_mosquitto_opens_an_action_at_once_and_a_lone_count_does_not(
    facility_engine: Engine, broker: LocalBroker
) -> None:
    """The must-show: 15 counts ≥ 5.0 µm in one 28.3 L sample (530 /m³, 26 × the limit) is an
    action excursion of that sample alone; a single count 30 min later opens nothing."""
    counts = {10: 15, 40: 1}
    ingest(facility_engine, broker, [bsc(m, counts.get(m, 0)) for m in range(70)])
    with unit_of_work(facility_engine) as s:
        limits = list_excursions(s, type_="limit")
        action = s.exec(select(Reading.seq).where(Reading.channel == "5.0", Reading.level == "action")).all()
        lone = s.exec(select(Reading.level).where(Reading.channel == "5.0", Reading.seq == 41)).one()
    assert [shape(e) for e in limits] == [("5.0", "action", iso(10), iso(11), 1)]
    assert limits[0]["peak"] > 500  # 15 / 28.3 L ≈ 530 /m³
    assert limits[0]["limit"] == 20.0
    assert action == [11]
    assert lone == "ok"
