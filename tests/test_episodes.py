"""The pure excursion state machine: delay, escalation, peak, closing run."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.factories import T0
from tracker.facility.limits import Bounds, Level, evaluate
from tracker.monitoring.episodes import Judged, SeriesMachine, replay

PRESSURE = Bounds(alert_low=12.0, action_low=10.0, delay_s=60)
PARTICLES = Bounds(alert_high=1760.0, action_high=3520.0)


def series(values: list[float], bounds: Bounds, *, step_s: int = 10) -> list[Judged]:
    out = []
    for i, v in enumerate(values):
        verdict = evaluate(v, bounds)
        out.append(
            Judged(
                at=T0 + timedelta(seconds=i * step_s),
                value=v,
                level=verdict.level,
                direction=verdict.direction,
                bounds=bounds,
                state="at_rest",
            )
        )
    return out


def episodes(values: list[float], bounds: Bounds, *, step_s: int = 10, close_after: int = 3):
    m = replay(series(values, bounds, step_s=step_s), close_after=close_after)
    return [*m.closed, *([m.episode] if m.episode else [])]


def test_door_opening_shorter_than_delay_is_no_excursion() -> None:
    # 50 s below 10 Pa (readings at 0..50 s): the run lasts 50 s < 60 s delay.
    assert episodes([15, 5, 5, 5, 5, 5, 5, 15, 15, 15], PRESSURE) == []


def test_sustained_drop_opens_at_run_start_and_closes_after_in_limit_run() -> None:
    eps = episodes([15, 5, 5, 5, 5, 5, 5, 5, 5, 15, 15, 15, 15], PRESSURE)
    assert len(eps) == 1
    ep = eps[0]
    assert ep.level is Level.ACTION
    assert ep.direction == "low"
    assert ep.started_at == T0 + timedelta(seconds=10)  # first out-of-limit reading
    assert ep.ended_at == T0 + timedelta(seconds=90)  # first reading back in limit
    assert ep.closed_by_at == T0 + timedelta(seconds=110)  # third in-limit reading closes it
    assert ep.peak == 5
    assert ep.limit == 10.0
    assert ep.readings == 8


def test_alert_run_with_brief_action_dip_stays_alert() -> None:
    # 11 Pa (alert) for minutes, a 20 s dip to 5 Pa inside it: action never lasts the delay.
    values = [15] + [11] * 8 + [5, 5] + [11] * 4 + [15] * 3
    eps = episodes(values, PRESSURE)
    assert [e.level for e in eps] == [Level.ALERT]
    assert eps[0].peak == 5
    assert eps[0].limit == 12.0


def test_escalates_to_action_and_keeps_highest_level() -> None:
    values = [100] * 2 + [2000] * 2 + [5000] * 2 + [2000] + [100] * 3
    eps = episodes(values, PARTICLES, step_s=60)
    assert len(eps) == 1
    assert eps[0].level is Level.ACTION
    assert eps[0].peak == 5000
    assert eps[0].limit == 3520


def test_short_recovery_does_not_split_the_episode() -> None:
    values = [5000, 100, 100, 5000, 100, 100, 100]
    eps = episodes(values, PARTICLES, step_s=60)
    assert len(eps) == 1
    assert eps[0].readings == 2


@pytest.mark.parametrize("close_after", [1, 2, 5])
def test_close_after_is_configurable(close_after: int) -> None:
    values = [5000] + [100] * close_after
    eps = episodes(values, PARTICLES, step_s=60, close_after=close_after)
    assert not eps[0].open
    eps = episodes(values[:-1], PARTICLES, step_s=60, close_after=close_after)
    assert eps[0].open


def test_not_evaluated_readings_neither_open_nor_close() -> None:
    m = SeriesMachine(close_after=2)
    m.feed(series([5000], PARTICLES)[0])
    for i in range(5):
        m.feed(
            Judged(
                at=T0 + timedelta(minutes=5 + i),
                value=0,
                level=Level.NOT_EVALUATED,
                direction=None,
                bounds=PARTICLES,
                state="at_rest",
            )
        )
    assert m.episode is not None
    assert m.episode.open


def test_out_of_order_feed_is_refused() -> None:
    m = SeriesMachine()
    a, b = series([100, 100], PARTICLES)
    m.feed(b)
    with pytest.raises(ValueError, match="out-of-order"):
        m.feed(a)


def test_an_episode_ends_where_the_state_changes_and_each_part_has_its_own_limit() -> None:
    """Issue 14 item 7: a grade B room out of its at-rest limit when an operation starts: the
    at-rest part ends at the change, the in-operation part is judged by its own (looser) limit."""
    at_rest = Bounds(alert_high=1760.0, action_high=3520.0)
    in_op = Bounds(alert_high=176_000.0, action_high=352_000.0)
    t0 = T0
    machine = SeriesMachine(close_after=3)
    rows = [(0, 5000.0, "at_rest"), (1, 5000.0, "at_rest"), (2, 400_000.0, "in_operation")]
    rows += [(3, 400_000.0, "in_operation"), (4, 10.0, "in_operation"), (5, 10.0, "in_operation")]
    rows += [(6, 10.0, "in_operation")]
    for minute, value, state in rows:
        bounds = at_rest if state == "at_rest" else in_op
        verdict = evaluate(value, bounds)
        machine.feed(
            Judged(
                at=t0 + timedelta(minutes=minute),
                value=value,
                level=verdict.level,
                direction=verdict.direction,
                bounds=bounds,
                state=state,
            )
        )
    first, second = machine.closed
    assert (first.state, first.level, first.limit, first.readings) == ("at_rest", Level.ACTION, 3520.0, 2)
    assert first.ended_at == t0 + timedelta(minutes=2)
    assert (second.state, second.level, second.limit) == ("in_operation", Level.ACTION, 352_000.0)
    assert (second.started_at, second.ended_at) == (t0 + timedelta(minutes=2), t0 + timedelta(minutes=4))
