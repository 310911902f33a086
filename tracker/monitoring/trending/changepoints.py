"""Change points: a sustained shift of a series' level, by a two-sided tabular CUSUM.

Page, E. S. (1954) "Continuous inspection schemes", *Biometrika* 41: 100-115; tabular form and
design (k = 0.5σ, h = 5σ: in-control ARL ≈ 465, a 1σ shift detected after ≈ 10 points, a 2σ
shift after ≈ 4) from Montgomery, *Introduction to Statistical Quality Control* 7th ed.,
§9.1, Table 9.3. The change is dated at the last time the alarming side's sum was zero (the
usual estimate of when the shift began), and the new level is the mean from there to
``min_after`` points past the detection (the series is analysed after the fact, so the
estimate may use them: a level estimated from the few points before the alarm is noisy enough
to trigger the next alarm).
After a detection the CUSUM restarts from the new level, so a later baseline starts there.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

K_SIGMA = 0.5
H_SIGMA = 5.0


@dataclass(frozen=True, slots=True)
class Shift:
    #: index where the shift is estimated to begin, and where it was detected
    index: int
    detected: int
    direction: str  # up | down
    before: float
    after: float


def cusum(
    values: ArrayLike,
    *,
    center: float,
    sigma: float,
    k: float = K_SIGMA,
    h: float = H_SIGMA,
    min_after: int = 3,
) -> list[Shift]:
    """Every sustained shift in ``values`` relative to ``center``; restarts after each one."""
    x = np.asarray(values, dtype=float)
    if sigma <= 0:
        return []
    found: list[Shift] = []
    level = center
    hi = lo = 0.0
    hi_zero = lo_zero = 0
    i = 0
    while i < x.size:
        z = (x[i] - level) / sigma
        hi = max(0.0, hi + z - k)
        lo = max(0.0, lo - z - k)
        if hi == 0.0:
            hi_zero = i + 1
        if lo == 0.0:
            lo_zero = i + 1
        if hi > h or lo > h:
            up = hi > h
            start = hi_zero if up else lo_zero
            tail = x[start : min(x.size, i + 1 + min_after)]
            after = float(np.mean(tail)) if tail.size else float(x[i])
            found.append(Shift(start, i, "up" if up else "down", level, after))
            level = after
            hi = lo = 0.0
            hi_zero = lo_zero = i + 1
        i += 1
    return found
