"""Trending statistics, pure (issue 21): each Nelson run rule on its textbook pattern, the
count chart, CUSUM change points within their documented delay, and the breach forecast."""

from __future__ import annotations

import numpy as np
import pytest

from tracker.monitoring.trending.changepoints import cusum
from tracker.monitoring.trending.charts import count_baseline, ewma_signals, individuals_baseline
from tracker.monitoring.trending.forecast import Levels, WarningState, predict
from tracker.monitoring.trending.runrules import first_firings, run_rules


def fired(series: list[float], rule: int) -> list[int]:
    """Indices completing a pattern of ``rule`` in a series charted at centre 0, σ 1."""
    return [s.end for s in run_rules(series, center=0.0, sigma=1.0, rules=(rule,))]


def test_rule_1_one_point_beyond_3_sigma() -> None:
    assert fired([0.1, -0.4, 0.3, 3.2, 0.0], 1) == [3]
    assert fired([0.1, -0.4, 0.3, 2.9, 0.0], 1) == []
    assert fired([0.0, -3.1], 1) == [1]


def test_rule_2_nine_points_on_one_side() -> None:
    assert fired([0.4] * 9, 2)[0] == 8
    assert fired([0.4] * 8, 2) == []
    assert fired([0.4] * 4 + [-0.1] + [0.4] * 4, 2) == []
    assert fired([-0.2] * 9, 2) == [8]


def test_rule_3_six_points_steadily_moving() -> None:
    assert fired([0.0, 0.1, 0.2, 0.3, 0.4, 0.5], 3) == [5]
    assert fired([0.0, 0.1, 0.2, 0.3, 0.4], 3) == []
    assert fired([0.5, 0.4, 0.3, 0.35, 0.2, 0.1], 3) == []  # one reversal breaks the run
    assert fired([1.0, 0.8, 0.6, 0.4, 0.2, 0.0], 3) == [5]


def test_rule_4_fourteen_points_alternating() -> None:
    alternating = [0.5 if i % 2 else -0.5 for i in range(14)]
    assert fired(alternating, 4) == [13]
    assert fired(alternating[:13], 4) == []
    broken = [*alternating[:7], alternating[6], *alternating[7:]]  # a repeat breaks the pattern
    assert fired(broken, 4) == []


def test_rule_5_two_of_three_beyond_2_sigma() -> None:
    assert fired([0.0, 2.5, 0.3, 2.4], 5) == [3]
    assert fired([2.5, 0.0, 0.0, 2.5], 5) == []  # two of four, not of three
    assert fired([0.0, 2.5, -2.5], 5) == []  # opposite sides
    assert fired([-2.1, -2.2], 5) == []  # needs a window of three
    assert fired([0.0, -2.1, -2.2], 5) == [2]


def test_rule_6_four_of_five_beyond_1_sigma() -> None:
    assert fired([1.5, 1.2, 0.0, 1.1, 1.3], 6) == [4]
    assert fired([1.5, 1.2, 0.0, 0.0, 1.3], 6) == []
    assert fired([-1.5, -1.2, -1.1, 0.2, -1.3], 6) == [4]


def test_rule_7_fifteen_points_within_1_sigma() -> None:
    hugging = [0.3, -0.2, 0.5, -0.6, 0.1, 0.0, -0.4, 0.2, 0.7, -0.1, 0.4, -0.3, 0.2, -0.5, 0.6]
    assert fired(hugging, 7) == [14]
    assert fired(hugging[:14], 7) == []
    assert fired([*hugging[:7], 1.4, *hugging[7:]], 7) == []


def test_rule_8_eight_points_beyond_1_sigma_either_side() -> None:
    mixture = [1.5, -1.4, 1.2, -1.6, 1.3, -1.1, 1.8, -1.2]
    assert fired(mixture, 8) == [7]
    assert fired(mixture[:7], 8) == []
    assert fired([*mixture[:4], 0.5, *mixture[4:]], 8) == []


def test_first_firings_reports_a_run_once() -> None:
    signals = run_rules([0.4] * 12, center=0.0, sigma=1.0, rules=(2,))
    assert [s.end for s in signals] == [8, 9, 10, 11]
    assert [(s.start, s.end) for s in first_firings(signals)] == [(0, 8)]


def test_individuals_baseline_uses_the_moving_range() -> None:
    rng = np.random.default_rng(1)
    x = 15 + rng.normal(0, 0.3, 2000)
    b = individuals_baseline(x)
    assert b.center == pytest.approx(15, abs=0.03)
    assert b.sigma == pytest.approx(0.3, rel=0.05)
    assert b.ucl - b.center == pytest.approx(3 * b.sigma)
    # a slow drift inflates the standard deviation but not the moving range
    drifting = x + np.linspace(0, 3, x.size)
    assert individuals_baseline(drifting).sigma == pytest.approx(b.sigma, rel=0.05)
    assert np.std(drifting) > 2 * b.sigma


def test_count_chart_poisson_and_overdispersed() -> None:
    rng = np.random.default_rng(2)
    per_count = 1000 / 28.3  # one particle in 28.3 L
    poisson = rng.poisson(0.4, 5000) * per_count  # mostly zeros
    b = count_baseline(poisson, per_count=per_count)
    assert b.method == "poisson"
    # Poisson(0.4): P(X ≤ 2) = 0.9921, P(X ≤ 3) = 0.9992 — the 0.99865 quantile is 3 counts
    assert b.ucl == pytest.approx(3 * per_count)
    assert b.lcl is None
    clumped = rng.negative_binomial(0.5, 0.5 / 1.5, 5000) * per_count  # mean 1, variance 3
    nb = count_baseline(clumped, per_count=per_count)
    assert nb.method == "negative_binomial"
    assert nb.ucl > count_baseline(rng.poisson(1.0, 5000) * per_count, per_count=per_count).ucl
    # the limit covers what the distribution produces: about 0.135 % beyond
    assert np.mean(clumped > nb.ucl) < 0.005


def test_ewma_sees_a_small_sustained_shift_the_shewhart_limit_misses() -> None:
    rng = np.random.default_rng(3)
    base = individuals_baseline(rng.normal(0, 1, 500))
    shifted = rng.normal(1.0, 1, 60)  # a 1σ shift
    assert ewma_signals(shifted, base)
    assert not ewma_signals(rng.normal(0, 1, 60), base)


@pytest.mark.parametrize(("shift", "documented"), [(2.0, 4.01), (1.0, 10.4)])
def test_a_step_is_detected_within_the_documented_delay(shift: float, documented: float) -> None:
    """docs/trending.md: k = 0.5σ, h = 5σ detects a 2σ shift after ~4 points and a 1σ shift
    after ~10 on average (Montgomery Table 9.3): the median over the 200 series without a false
    alarm before the step (those are counted by the in-control test), and every one within 3 ×
    that."""
    delays: list[int] = []
    errors: list[int] = []  # how far the estimated start lies from the true one
    for seed in range(200):
        rng = np.random.default_rng(seed)
        x = np.concatenate([rng.normal(0, 1, 100), rng.normal(shift, 1, 100)])
        found = cusum(x, center=0.0, sigma=1.0)
        if found and found[0].detected < 100:
            continue
        assert found, seed
        assert found[0].direction == "up"
        delays.append(found[0].detected - 100 + 1)
        errors.append(abs(found[0].index - 100))
    assert len(delays) > 100
    assert np.median(delays) <= documented * 1.2
    assert max(delays) <= 3 * documented
    assert np.median(errors) <= 2


def test_cusum_estimates_the_new_level_and_restarts() -> None:
    x = np.array([0.0] * 50 + [3.0] * 50 + [0.0] * 50)
    found = cusum(x, center=0.0, sigma=1.0)
    assert [(c.index, c.direction) for c in found] == [(50, "up"), (100, "down")]
    assert found[0].after == pytest.approx(3.0)


def test_cusum_rarely_alarms_on_noise() -> None:
    rng = np.random.default_rng(9)
    alarms = sum(len(cusum(rng.normal(0, 1, 200), center=0.0, sigma=1.0)) for _ in range(100))
    assert alarms / 20_000 < 1 / 150  # in-control ARL of the two-sided scheme ≈ 230 points


PRESSURE = Levels(alert_low=12.0, action_low=10.0)


def readings(rate_per_h: float, hours: float, *, seed: int = 0, start: float = 15.0):
    rng = np.random.default_rng(seed)
    t = np.arange(0, hours * 3600, 10.0)
    return t, start + rate_per_h * t / 3600 + rng.normal(0, 0.3, t.size)


def test_a_drift_toward_a_level_is_predicted_before_it_is_reached() -> None:
    t, v = readings(-1.0, 2.0)  # 15 → 13 Pa in 2 h: alert (12 Pa) in about an hour
    p = predict(t, v, levels=PRESSURE, horizon_min=240, window_min=120)
    assert p is not None
    assert (p.level, p.crossing.direction, p.crossing.limit) == ("alert", "low", 12.0)
    assert p.crossing.slope_per_h == pytest.approx(-1.0, abs=0.1)
    # at the fitted trend the level is an hour away; the damped band reaches it within the horizon
    assert p.crossing.eta_min == pytest.approx(60, abs=10)
    assert p.crossing.in_min <= 240


def test_flat_noise_and_a_drift_away_predict_nothing() -> None:
    for seed in range(20):
        t, v = readings(0.0, 2.0, seed=seed)
        assert predict(t, v, levels=PRESSURE, horizon_min=240, window_min=120) is None
    t, v = readings(+1.0, 2.0)
    assert predict(t, v, levels=PRESSURE, horizon_min=240, window_min=120) is None


def test_a_level_already_breached_is_not_predicted_but_the_next_is() -> None:
    t, v = readings(-1.0, 2.0, start=12.8)  # below 12 Pa at the end: alert breached
    p = predict(t, v, levels=PRESSURE, horizon_min=240, window_min=120)
    assert p is not None
    assert p.level == "action"


def test_warning_state_opens_raises_and_closes() -> None:
    t, v = readings(-1.0, 2.0)
    alert = predict(t, v, levels=PRESSURE, horizon_min=240, window_min=120)
    t2, v2 = readings(-1.0, 2.0, start=12.8)
    action = predict(t2, v2, levels=PRESSURE, horizon_min=240, window_min=120)
    state = WarningState()
    assert [state.feed(p) for p in (None, alert, alert, action, action, None, None)] == [
        None,
        "opened",
        None,
        "raised",
        None,
        "closed",
        None,
    ]


def test_the_turn_of_a_cycle_is_not_a_drift() -> None:
    """Two hours of a 6-hour cycle going down into its trough 1.5 units above the level: the
    slope is significant, but so is its slowing down, so no warning; the same start as a
    straight drift warns."""
    rng = np.random.default_rng(4)
    t = np.arange(0, 7200, 60.0)
    phase = 2 * np.pi * (t - 7200) / (6 * 3600) - np.pi / 2  # reaches the trough just after the window
    cycle = 48.0 + 2.0 * np.sin(phase) + 2.0 + rng.normal(0, 0.2, t.size)
    levels = Levels(alert_low=46.0, action_low=45.0)
    assert predict(t, cycle, levels=levels, horizon_min=240, window_min=120) is None
    drift = 50.0 - 2.0 * t / 3600 + rng.normal(0, 0.2, t.size)
    assert predict(t, drift, levels=levels, horizon_min=240, window_min=120) is not None
