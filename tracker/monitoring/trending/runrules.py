"""Western Electric / Nelson run rules on a series standardised by its baseline.

Nelson, L. S. (1984) "The Shewhart control chart — tests for special causes", *Journal of
Quality Technology* 16(4): 237-239; the first four are the Western Electric *Statistical
Quality Control Handbook* (1956) zone rules. Each rule names the readings that make it fire,
so a chart can show *why*: the index reported is the last point of the pattern.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike


@dataclass(frozen=True, slots=True)
class RunRule:
    number: int
    en: str
    zh: str


RULES = (
    RunRule(1, "one point beyond 3σ", "1 点超出 3σ"),
    RunRule(2, "nine points in a row on one side of the centre line", "连续 9 点位于中心线同一侧"),
    RunRule(3, "six points in a row steadily increasing or decreasing", "连续 6 点持续上升或下降"),
    RunRule(4, "fourteen points in a row alternating up and down", "连续 14 点上下交替"),
    RunRule(5, "two of three points beyond 2σ on the same side", "连续 3 点中有 2 点超出同侧 2σ"),
    RunRule(6, "four of five points beyond 1σ on the same side", "连续 5 点中有 4 点超出同侧 1σ"),
    RunRule(7, "fifteen points in a row within 1σ", "连续 15 点位于 1σ 以内"),
    RunRule(8, "eight points in a row beyond 1σ on either side", "连续 8 点位于 1σ 以外（两侧）"),
)
RULE_BY_NUMBER = {r.number: r for r in RULES}


@dataclass(frozen=True, slots=True)
class Signal:
    rule: int
    #: first and last index of the pattern
    start: int
    end: int


def _runs(flags: np.ndarray, length: int) -> list[tuple[int, int]]:
    """(start, end) of each point ending a run of ``length`` True flags (end inclusive)."""
    out: list[tuple[int, int]] = []
    run = 0
    for i, f in enumerate(flags):
        run = run + 1 if f else 0
        if run >= length:
            out.append((i - length + 1, i))
    return out


def _k_of_m(flags: np.ndarray, k: int, m: int) -> list[tuple[int, int]]:
    """Windows of ``m`` points ending at a flagged point with at least ``k`` flagged."""
    out: list[tuple[int, int]] = []
    for i in range(m - 1, flags.size):
        if flags[i] and int(flags[i - m + 1 : i + 1].sum()) >= k:
            out.append((i - m + 1, i))
    return out


def run_rules(
    values: ArrayLike, *, center: float, sigma: float, rules: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7, 8)
) -> list[Signal]:
    """Every firing of the selected rules, in order of the point that completes the pattern."""
    x = np.asarray(values, dtype=float)
    if sigma <= 0 or x.size == 0:
        return []
    z = (x - center) / sigma
    found: list[Signal] = []

    def add(rule: int, spans: list[tuple[int, int]]) -> None:
        found.extend(Signal(rule, s, e) for s, e in spans)

    if 1 in rules:
        add(1, [(int(i), int(i)) for i in np.flatnonzero(np.abs(z) > 3)])
    if 2 in rules:
        add(2, _runs(z > 0, 9) + _runs(z < 0, 9))
    d = np.diff(x)
    if 3 in rules and d.size:
        # six points steadily moving: five consecutive differences of one sign
        add(3, [(s, e + 1) for s, e in _runs(d > 0, 5) + _runs(d < 0, 5)])
    if 4 in rules and d.size > 1:
        alternating = np.sign(d[1:]) * np.sign(d[:-1]) < 0
        # fourteen points: thirteen differences, twelve sign changes in a row
        add(4, [(s, e + 2) for s, e in _runs(alternating, 12)])
    if 5 in rules:
        add(5, _k_of_m(z > 2, 2, 3) + _k_of_m(z < -2, 2, 3))
    if 6 in rules:
        add(6, _k_of_m(z > 1, 4, 5) + _k_of_m(z < -1, 4, 5))
    if 7 in rules:
        add(7, _runs(np.abs(z) < 1, 15))
    if 8 in rules:
        add(8, _runs(np.abs(z) > 1, 8))
    return sorted(found, key=lambda s: (s.end, s.rule))


def first_firings(signals: list[Signal]) -> list[Signal]:
    """One signal per rule and run: drop those that only extend the previous firing of the rule."""
    out: list[Signal] = []
    last_end: dict[int, int] = {}
    for s in signals:
        if s.rule in last_end and s.start <= last_end[s.rule]:
            last_end[s.rule] = s.end
            continue
        last_end[s.rule] = s.end
        out.append(s)
    return out
