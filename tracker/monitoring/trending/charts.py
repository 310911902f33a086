"""Control-chart baselines: individuals (Shewhart I-MR), EWMA and count charts.

Slow quantities (pressure, temperature, humidity) get an individuals chart whose σ is
estimated from the average moving range (MR̄/d2, d2 = 1.128; Montgomery, *Introduction to
Statistical Quality Control*, 7th ed., §6.4), robust to a slow drift in the baseline period,
plus an EWMA (λ = 0.2, L = 3; Montgomery §9.2) for small sustained shifts. Particle counts are
counts with many zeros and overdispersion: their limits come from a Poisson or, when the
variance exceeds the mean, a negative-binomial fitted by the method of moments, as the
0.99865 quantile (the one-sided 3σ tail) — a normal ±3σ limit on such data would sit below
the second count and alarm on noise (PDA TR13 §7, Annex 1 (2022) §9.4 on count data).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

#: d2 for moving ranges of two (Montgomery, Appendix VI)
D2 = 1.128
#: the one-sided tail of a 3σ normal limit, used as the count charts' quantile
TAIL = stats.norm.sf(3.0)
EWMA_LAMBDA = 0.2
EWMA_L = 3.0
#: kinds charted as counts
COUNT_KINDS = frozenset({"particles"})


@dataclass(frozen=True, slots=True)
class Baseline:
    """A series' centre line and 3σ limits from its qualified period."""

    method: str  # individuals | poisson | negative_binomial
    center: float
    sigma: float
    lcl: float | None
    ucl: float
    n: int
    #: negative binomial: the dispersion size (None for the other methods)
    size: float | None = None

    def as_dict(self) -> dict:
        return {
            "method": self.method,
            "center": self.center,
            "sigma": self.sigma,
            "lcl": self.lcl,
            "ucl": self.ucl,
            "n": self.n,
            "size": self.size,
        }


def individuals_baseline(values: ArrayLike, *, cycles: bool = False) -> Baseline:
    """Mean ± 3·MR̄/d2 of a baseline period (at least two values).

    ``cycles``: the points are autocorrelated (hourly means of a quantity with an HVAC cycle of
    hours), where MR̄/d2 sees only the hour-to-hour step and underestimates the spread, so
    every half cycle would look like a shift; σ is then the larger of MR̄/d2 and the sample
    standard deviation (Montgomery §10.4 on autocorrelated data: widen, or model the cycle)."""
    x = np.asarray(values, dtype=float)
    if x.size < 2:
        raise ValueError("an individuals baseline needs at least two values")
    sigma = float(np.mean(np.abs(np.diff(x)))) / D2
    if cycles:
        sigma = max(sigma, float(np.std(x, ddof=1)))
    center = float(np.mean(x))
    return Baseline("individuals", center, sigma, center - 3 * sigma, center + 3 * sigma, int(x.size))


def count_baseline(values: ArrayLike, *, per_count: float = 1.0) -> Baseline:
    """Upper limit for counts: Poisson, or negative binomial when overdispersed.

    ``values`` are concentrations; ``per_count`` is what one counted particle reads as
    (1000 / sample litres), so the distribution is fitted to the counts the instrument made.
    """
    counts = np.asarray(values, dtype=float) / per_count
    if counts.size < 2:
        raise ValueError("a count baseline needs at least two values")
    mean = float(np.mean(counts))
    var = float(np.var(counts, ddof=1))
    if var > mean * 1.05 and mean > 0:
        size = mean * mean / (var - mean)
        ucl = float(stats.nbinom.ppf(1 - TAIL, size, size / (size + mean)))
        return Baseline(
            "negative_binomial",
            mean * per_count,
            var**0.5 * per_count,
            None,
            ucl * per_count,
            counts.size,
            size,
        )
    ucl = float(stats.poisson.ppf(1 - TAIL, mean)) if mean > 0 else 0.0
    return Baseline("poisson", mean * per_count, mean**0.5 * per_count, None, ucl * per_count, counts.size)


def baseline_for(kind: str, values: ArrayLike, *, per_count: float = 1.0) -> Baseline:
    """The chart a kind gets: counts for particles, individuals for the rest."""
    if kind in COUNT_KINDS:
        return count_baseline(values, per_count=per_count)
    return individuals_baseline(values)


def ewma(values: ArrayLike, *, center: float, sigma: float, lam: float = EWMA_LAMBDA, L: float = EWMA_L):
    """EWMA statistic and its time-varying limits: ``(z, lower, upper)`` arrays."""
    x = np.asarray(values, dtype=float)
    z = np.empty_like(x)
    prev = center
    for i, v in enumerate(x):
        prev = lam * v + (1 - lam) * prev
        z[i] = prev
    i = np.arange(1, x.size + 1)
    half = L * sigma * np.sqrt(lam / (2 - lam) * (1 - (1 - lam) ** (2 * i)))
    return z, center - half, center + half


def ewma_signals(values: ArrayLike, baseline: Baseline, *, lam: float = EWMA_LAMBDA) -> list[int]:
    """Indices where the EWMA leaves its limits."""
    z, lo, hi = ewma(values, center=baseline.center, sigma=baseline.sigma, lam=lam)
    return [int(i) for i in np.flatnonzero((z < lo) | (z > hi))]
