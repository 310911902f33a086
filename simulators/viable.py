"""Viable results for a scenario: what the plates show after incubation, so the demo can walk
samples through the whole cycle (taken → incubating → read → identified → closed).

Pure and seeded: the same samples, scenario and seed give the same counts. It knows only the
sample descriptors the caller hands it (code, grade, method, location), like the rest of the
simulator knows only the wire contract.

Scenarios:

* ``clean``: no growth in grade A; small counts well inside the limits elsewhere;
* ``day-in-the-life``: as ``clean``, plus one colony on the first grade A settle plate
  (*Staphylococcus epidermidis*, a skin commensal: the classic operator-borne isolate) and a
  grade B contact plate at its limit (5 cfu: it complies).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

SCENARIOS = ("clean", "day-in-the-life")
#: the typical cleanroom flora (skin commensals, environmental spore formers)
ORGANISMS = ("Staphylococcus epidermidis", "Micrococcus luteus", "Bacillus cereus", "Cutibacterium acnes")
#: counts that stay inside each grade's limits (cfu; settle plates per 4 h)
QUIET = {"A": 0, "B": 2, "C": 20, "D": 40}


@dataclass(frozen=True)
class PlateResult:
    code: str
    count: int
    organism: str | None = None


def viable_results(
    samples: Iterable[Mapping[str, str]], *, scenario: str = "clean", seed: int = 1
) -> list[PlateResult]:
    """The result of each sample (``code``, ``grade``, ``method``, ``location``) in order."""
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown viable scenario {scenario!r}; known: {', '.join(SCENARIOS)}")
    rng = random.Random(seed)
    out = []
    grown_a = at_limit_b = False
    for s in samples:
        grade, method = s["grade"], s["method"]
        count = rng.randint(0, QUIET.get(grade, 0))
        organism = None
        if scenario == "day-in-the-life" and grade == "A" and method == "settle" and not grown_a:
            count, organism, grown_a = 1, "Staphylococcus epidermidis", True
        elif scenario == "day-in-the-life" and grade == "B" and method == "contact" and not at_limit_b:
            count, at_limit_b = 5, True
        if count and organism is None:
            organism = rng.choice(ORGANISMS)
        out.append(PlateResult(s["code"], count, organism))
    return out
