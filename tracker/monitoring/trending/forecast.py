"""Breach forecast: a local linear trend with a prediction band, and when it crosses a level.

The series (per-minute medians, so sensor noise, sampling rate and door openings of a few
seconds do not drive the fit) of the last ``window`` minutes is fitted by ordinary least
squares. The trend is projected *damped* (Gardner & McKenzie (1985) "Forecasting trends in
time series", *Management Science* 31(10): 1237-1246): ``h`` minutes ahead it has moved by
slope·τ·(1 − e^(−h/τ)) rather than slope·h, τ = ``MEMORY_MIN``, because a slow HVAC cycle
looks linear over an hour and must not be extrapolated for four. Around it, the classical
prediction interval of a new observation from a straight-line fit, ŷ ± t(0.975, n−2)·s·
√(1 + 1/n + (x − x̄)²/Sxx) at the damped position x (Montgomery, Peck & Vining, *Introduction
to Linear Regression Analysis*, §2.4.2). A warning needs the band to cross the level *and*
the fitted slope to be significant (|t| > ``SLOPE_T``) toward it, so a flat noisy series does
not warn. Assumptions: a locally linear drift, independent residuals (minute medians reduce,
not remove, autocorrelation), and a level that does not change within the horizon.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

#: confidence of the two-sided band
BAND = 0.95
#: the slope must differ from zero by this many standard errors (≈ p < 0.001) to warn
SLOPE_T = 4.0
MIN_POINTS = 20
#: how long a fitted trend is trusted to continue (minutes): the damping time constant
MEMORY_MIN = 45.0
#: a trend that is significantly slowing down (the quadratic term opposes the slope by this
#: many standard errors) is the turn of a cycle, not a drift: no warning; 0 switches it off
DECELERATION_T = 3.0


@dataclass(frozen=True, slots=True)
class Crossing:
    """The band's first crossing of a level within the horizon."""

    #: minutes after the last point at which the (damped) band reaches the level
    in_min: float
    direction: str  # low | high
    limit: float
    forecast: float
    bound: float
    slope_per_h: float
    #: minutes until the fitted line, undamped, reaches the level: "at this trend, in about …"
    eta_min: float


def band(t_min: ArrayLike, y: ArrayLike, ahead_min: ArrayLike):
    """Fit and forecast: ``(mean, lower, upper, slope per minute, slope t)`` at ``ahead_min`` after the last point."""
    t = np.asarray(t_min, dtype=float)
    v = np.asarray(y, dtype=float)
    n = t.size
    tbar = float(t.mean())
    sxx = float(((t - tbar) ** 2).sum())
    slope = float(((t - tbar) * (v - v.mean())).sum() / sxx)
    icpt = float(v.mean() - slope * tbar)
    resid = v - (icpt + slope * t)
    s = float(np.sqrt((resid**2).sum() / (n - 2)))
    h = np.asarray(ahead_min, dtype=float)
    at = t[-1] + (MEMORY_MIN * (1 - np.exp(-h / MEMORY_MIN)) if MEMORY_MIN > 0 else h)
    mean = icpt + slope * at
    half = stats.t.ppf(0.5 + BAND / 2, n - 2) * s * np.sqrt(1 + 1 / n + (at - tbar) ** 2 / sxx)
    se_slope = s / np.sqrt(sxx) if s > 0 else 0.0
    slope_t = slope / se_slope if se_slope > 0 else (np.inf if slope else 0.0)
    return mean, mean - half, mean + half, slope, float(slope_t)


def crossing(
    t_min: ArrayLike,
    y: ArrayLike,
    *,
    horizon_min: float,
    low: float | None = None,
    high: float | None = None,
    step_min: float = 5.0,
) -> Crossing | None:
    """Where the band first crosses ``low`` (from above) or ``high`` (from below) within the horizon."""
    t = np.asarray(t_min, dtype=float)
    if t.size < MIN_POINTS or np.ptp(t) <= 0:
        return None
    ahead = np.arange(step_min, horizon_min + step_min / 2, step_min)
    mean, lower, upper, slope, slope_t = band(t, y, ahead)
    now = float(band(t, y, [0.0])[0][0])
    if DECELERATION_T > 0 and curvature_t(t, y) * np.sign(slope) < -DECELERATION_T:
        return None
    if low is not None and slope < 0 and slope_t < -SLOPE_T:
        hit = np.flatnonzero(lower <= low)
        if hit.size:
            i = int(hit[0])
            eta = (low - now) / slope
            return Crossing(float(ahead[i]), "low", low, float(mean[i]), float(lower[i]), slope * 60, eta)
    if high is not None and slope > 0 and slope_t > SLOPE_T:
        hit = np.flatnonzero(upper >= high)
        if hit.size:
            i = int(hit[0])
            eta = (high - now) / slope
            return Crossing(float(ahead[i]), "high", high, float(mean[i]), float(upper[i]), slope * 60, eta)
    return None


def curvature_t(t_min: ArrayLike, y: ArrayLike) -> float:
    """t statistic of the quadratic term of a second-order fit (centred time)."""
    t = np.asarray(t_min, dtype=float)
    v = np.asarray(y, dtype=float)
    x = t - t.mean()
    design = np.column_stack([np.ones_like(x), x, x * x])
    coef, *_ = np.linalg.lstsq(design, v, rcond=None)
    resid = v - design @ coef
    dof = t.size - 3
    if dof <= 0:
        return 0.0
    s2 = float(resid @ resid) / dof
    cov = s2 * np.linalg.pinv(design.T @ design)
    se = float(np.sqrt(cov[2, 2]))
    return float(coef[2] / se) if se > 0 else 0.0


def minute_medians(t_s: ArrayLike, y: ArrayLike, *, bucket_s: float = 60.0):
    """Per-bucket medians: ``(bucket start in minutes, median)`` of the buckets holding data
    (``t_s`` sorted)."""
    t = np.asarray(t_s, dtype=float)
    v = np.asarray(y, dtype=float)
    if t.size == 0:
        return np.empty(0), np.empty(0)
    keys = np.floor(t / bucket_s).astype(np.int64)
    order = np.lexsort((v, keys))  # by bucket, then by value: each bucket's values sorted
    ks, vs = keys[order], v[order]
    uniq, first, counts = np.unique(ks, return_index=True, return_counts=True)
    medians = (vs[first + (counts - 1) // 2] + vs[first + counts // 2]) / 2
    return uniq * bucket_s / 60.0, medians


@dataclass(frozen=True, slots=True)
class Levels:
    """A series' alert and action levels in force (``None``: that side is not judged)."""

    alert_low: float | None = None
    alert_high: float | None = None
    action_low: float | None = None
    action_high: float | None = None


@dataclass(frozen=True, slots=True)
class Prediction:
    level: str  # alert | action
    crossing: Crossing


def predict(
    t_s: ArrayLike, y: ArrayLike, *, levels: Levels, horizon_min: float, window_min: float
) -> Prediction | None:
    """The most severe level the band crosses within the horizon, from the last ``window_min``
    of ``(seconds, value)``; a level the newest minute already breaches is a breach, not a
    prediction, so it is skipped (the next level up may still be predicted)."""
    t = np.asarray(t_s, dtype=float)
    v = np.asarray(y, dtype=float)
    if t.size == 0:
        return None
    keep = t >= t[-1] - window_min * 60
    tm, ym = minute_medians(t[keep], v[keep])
    if tm.size < MIN_POINTS:
        return None
    now = float(ym[-1])
    for level, low, high in (
        ("action", levels.action_low, levels.action_high),
        ("alert", levels.alert_low, levels.alert_high),
    ):
        low = low if low is not None and now > low else None
        high = high if high is not None and now < high else None
        if low is None and high is None:
            continue
        found = crossing(tm, ym, horizon_min=horizon_min, low=low, high=high)
        if found is not None:
            return Prediction(level, found)
    return None


@dataclass(slots=True)
class WarningState:
    """One series' warning as evaluations come in: open at a level, raised, or closed.

    Pure, so ingest (``trending.rule``) and the benchmark (``bench/prediction.py``) open and
    close warnings by the same logic. ``feed`` returns ``opened``, ``raised`` (alert → action),
    ``closed`` or None (no change)."""

    level: str | None = None

    def feed(self, prediction: Prediction | None) -> str | None:
        if prediction is None:
            if self.level is None:
                return None
            self.level = None
            return "closed"
        if self.level is None:
            self.level = prediction.level
            return "opened"
        if self.level == "alert" and prediction.level == "action":
            self.level = "action"
            return "raised"
        return None
