"""Pure signal generators: what a healthy cleanroom's monitors read, before any scripted fault.

Every random draw comes from a per-monitor ``numpy.random.Generator`` seeded from
``(seed, crc32(monitor code), stream)``, so adding a monitor or an event to one monitor
never changes the numbers of another. Times are seconds since the simulation start.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

#: Independent random streams of one monitor.
STREAM_NOISE = 0
STREAM_DOORS = 1
STREAM_DRIFT = 2

#: Typical particle concentrations (particles/m³, cumulative ≥ size) by (grade, in operation).
#: Chosen so Poisson counting noise never reaches half of the CN GMP 2010 limit (the default
#: alert level): B at rest and A must read exactly 0 at ≥5.0 µm, because one particle in 28.3 L
#: is already 35/m³, above the 20 (A) and 29 (B at rest) limits.
PARTICLE_BASELINES: dict[tuple[str, bool], dict[str, float]] = {
    ("A", False): {"0.5": 200.0, "5.0": 0.0},
    ("A", True): {"0.5": 200.0, "5.0": 0.0},
    ("B", False): {"0.5": 500.0, "5.0": 0.0},
    ("B", True): {"0.5": 60_000.0, "5.0": 200.0},
    ("C", False): {"0.5": 50_000.0, "5.0": 300.0},
    ("C", True): {"0.5": 500_000.0, "5.0": 3_000.0},
    ("D", False): {"0.5": 600_000.0, "5.0": 4_000.0},
    ("D", True): {"0.5": 600_000.0, "5.0": 4_000.0},
    ("CNC", False): {"0.5": 1_500_000.0, "5.0": 10_000.0},
    ("CNC", True): {"0.5": 1_500_000.0, "5.0": 10_000.0},
}

PRESSURE_NOISE_PA = 0.3
DEFAULT_SETPOINTS = {"pressure": 15.0, "temperature": 22.0, "humidity": 50.0}
#: Slow HVAC drift: amplitude and sensor noise (σ) per kind, well inside the alert bands.
DRIFT_AMPLITUDE = {"temperature": 0.4, "humidity": 2.0}
DRIFT_NOISE = {"temperature": 0.05, "humidity": 0.3}
DRIFT_PERIOD_S = (6 * 3600, 12 * 3600)

#: Door openings during operations: mean spacing, allowed length, depth as a share of setpoint.
DOOR_MEAN_GAP_S = 900.0
DOOR_MIN_GAP_S = 120
DOOR_DURATION_S = (8, 20)
DOOR_DEPTH = (0.3, 0.4)
#: Keep generated door openings this far from a scripted pressure event on the same monitor,
#: so the two cannot merge into one run longer than the 60 s alarm delay.
DOOR_CLEARANCE_S = 180


@dataclass(frozen=True, slots=True)
class DoorOpening:
    start_s: int
    end_s: int
    level: float

    def covers(self, t: int) -> bool:
        """Whether a reading at ``t`` falls inside the opening."""
        return self.start_s <= t < self.end_s


@dataclass(frozen=True, slots=True)
class Drift:
    base: float
    amplitude: float
    period_s: float
    phase: float
    noise: float


def monitor_rng(seed: int, code: str, stream: int = STREAM_NOISE) -> np.random.Generator:
    """Per-monitor generator, independent of every other monitor and stream."""
    return np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(code.encode()), stream]))


def monitor_phase(code: str, interval_s: int) -> int:
    """Offset (1..interval) of a monitor's first reading, so monitors do not all fire at once."""
    return 1 + zlib.crc32(code.encode()) % interval_s


def particle_baseline(grade: str, in_operation: bool) -> dict[str, float]:
    """Grade-typical concentrations for the room's state."""
    return dict(PARTICLE_BASELINES[(grade, in_operation)])


def particle_counts(
    rng: np.random.Generator,
    concentrations: Mapping[str, float],
    volume_l: float,
    channels: Sequence[str],
) -> dict[str, int]:
    """Poisson counts ≥ each size in ``volume_l``; cumulative, so a smaller size never counts less."""
    total = 0
    counts: dict[str, int] = {}
    larger = 0.0
    for channel in sorted(channels, key=float, reverse=True):
        conc = float(concentrations.get(channel, 0.0))
        expected = max(conc - larger, 0.0) * volume_l / 1000.0
        total += int(rng.poisson(expected)) if expected > 0 else 0
        counts[channel] = total
        larger = max(larger, conc)
    return {c: counts[c] for c in channels}


def pressure_value(rng: np.random.Generator, level: float, sigma: float = PRESSURE_NOISE_PA) -> float:
    """A differential-pressure reading around ``level`` (Pa), to the transmitter's 0.1 Pa."""
    return round(level + float(rng.normal(0.0, sigma)), 1)


def door_openings(
    rng: np.random.Generator,
    windows: Sequence[tuple[int, int]],
    setpoint: float,
    *,
    avoid: Sequence[tuple[int, int]] = (),
) -> list[DoorOpening]:
    """Short pressure dips while a room is in operation; each far shorter than the 60 s delay."""
    openings: list[DoorOpening] = []
    for start, end in windows:
        t = start + float(rng.exponential(DOOR_MEAN_GAP_S))
        while True:
            length = int(rng.integers(DOOR_DURATION_S[0], DOOR_DURATION_S[1] + 1))
            level = setpoint * float(rng.uniform(*DOOR_DEPTH))
            begin = math.ceil(t)
            if begin + length >= end:
                break
            if not _near_any(begin, begin + length, avoid, DOOR_CLEARANCE_S):
                openings.append(DoorOpening(begin, begin + length, round(level, 2)))
            t = begin + length + DOOR_MIN_GAP_S + float(rng.exponential(DOOR_MEAN_GAP_S))
    return openings


def _near_any(start: int, end: int, spans: Sequence[tuple[int, int]], margin: int) -> bool:
    """Whether [start, end) comes within ``margin`` seconds of any span."""
    return any(start < s_end + margin and s_start - margin < end for s_start, s_end in spans)


def drift_for(rng: np.random.Generator, kind: str, base: float) -> Drift:
    """Draw one monitor's slow HVAC cycle (period and phase)."""
    period = float(rng.uniform(*DRIFT_PERIOD_S))
    phase = float(rng.uniform(0.0, 2 * math.pi))
    return Drift(base, DRIFT_AMPLITUDE[kind], period, phase, DRIFT_NOISE[kind])


def drift_value(rng: np.random.Generator, drift: Drift, t: float) -> float:
    """Temperature or humidity at ``t``: a sine over hours plus sensor noise."""
    cycle = drift.amplitude * math.sin(2 * math.pi * t / drift.period_s + drift.phase)
    return drift.base + cycle + float(rng.normal(0.0, drift.noise))


def held_value(rng: np.random.Generator, value: float, noise: float) -> float:
    """A scripted value held by a fault, still carrying the sensor's noise."""
    return value + float(rng.normal(0.0, noise))
