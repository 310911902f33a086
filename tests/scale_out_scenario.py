"""One scripted stream for the scale-out tests: several monitors, alert and action episodes on
pressure and particles, ≥5.0 µm recurrences in grade A, and real data gaps."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

from sqlalchemy import Engine
from sqlmodel import select

from tests.factories import T0, particles, scalar, topic
from tracker.core.db import unit_of_work
from tracker.facility.models import Monitor
from tracker.monitoring.excursions import Excursion
from tracker.monitoring.readings import RawMessage

#: the columns that make an excursion what it is (ids and bookkeeping times differ by run)
SHAPE = ("monitor", "type", "channel", "level", "started_at", "ended_at", "peak", "status", "readings")


def _runs(rng: random.Random, n: int, quiet: tuple[int, int], bad: tuple[int, int]):
    """Per index: 0 in limit, 1 alert, 2 action; out-of-limit runs between quiet stretches."""
    out: list[int] = []
    while len(out) < n:
        out += [0] * rng.randint(*quiet)
        out += [rng.choice((1, 1, 2))] * rng.randint(*bad)
    return out[:n]


def scenario(*, seed: int = 7, pressure: int = 1200, particle: int = 600) -> list[tuple[str, bytes]]:
    """Messages in event-time order across monitors, the way a facility publishes them."""
    rng = random.Random(seed)
    stream: list[tuple[datetime, str, bytes]] = []

    def times(n: int, step: float) -> list[datetime]:
        t, out = T0, []
        for _ in range(n):
            out.append(t)
            # now and then a real outage: 5 intervals of silence (a data gap, factor 3)
            t += timedelta(seconds=step * (5 if rng.random() < 0.01 else 1))
        return out

    levels = _runs(rng, pressure, (20, 60), (3, 12))  # delay 60 s = 6 readings
    for i, (t, lv) in enumerate(zip(times(pressure, 10), levels, strict=True)):
        pa = (15.0 + rng.random() * 2, 11.0 + rng.random() * 0.5, 8.0 + rng.random())[lv]
        stream.append(
            (
                t,
                topic("T-B1", "T-B1-DP"),
                scalar(monitor="T-B1-DP", kind="pressure", seq=i + 1, ts=t, value=round(pa, 2), unit="Pa"),
            )
        )
    levels = _runs(rng, particle, (15, 50), (1, 5))
    for i, (t, lv) in enumerate(zip(times(particle, 60), levels, strict=True)):
        c05 = (rng.randint(0, 20), rng.randint(55, 90), rng.randint(110, 200))[lv]
        stream.append((t, topic("T-B1", "T-B1-PC"), particles(monitor="T-B1-PC", seq=i + 1, ts=t, c05=c05)))
    levels = _runs(rng, particle, (15, 50), (1, 4))
    for i, (t, lv) in enumerate(zip(times(particle, 60), levels, strict=True)):
        c05 = (rng.randint(1, 50), rng.randint(180, 300), rng.randint(360, 500))[lv]
        c50 = 1 if rng.random() < 0.08 else 0  # scattered ≥5.0 µm counts
        stream.append(
            (
                t,
                topic("T-B1-BSC", "T-BSC-PC"),
                particles(monitor="T-BSC-PC", seq=i + 1, ts=t, c05=c05, c50=c50, volume=100),
            )
        )
    stream.sort(key=lambda item: item[0])
    return [(tp, payload) for _, tp, payload in stream]


def excursion_shapes(engine: Engine, *, superseded: bool = False) -> list[tuple]:
    """The excursions of a run, comparable across databases (superseded ones apart)."""
    with unit_of_work(engine) as s:
        rows = s.exec(select(Excursion, Monitor.code).join(Monitor, Monitor.id == Excursion.monitor_id)).all()
    shapes = []
    for ex, code in rows:
        if (ex.status == "superseded") != superseded:
            continue
        values = {
            "monitor": code,
            "type": ex.type,
            "channel": ex.channel,
            "level": ex.level,
            "started_at": ex.started_at,
            "ended_at": ex.ended_at,
            "peak": round(ex.peak, 6),
            "status": ex.status,
            "readings": ex.readings,
        }
        shapes.append(tuple(values[k] for k in SHAPE))
    return sorted(shapes, key=repr)


def stored_keys(engine: Engine) -> list[tuple[str, int]]:
    """Every stored (monitor, seq), in order; the primary key forbids twins, so a count equal
    to the scenario's is 'each exactly once'."""
    with unit_of_work(engine) as s:
        return sorted(
            s.exec(
                select(Monitor.code, RawMessage.seq).join(Monitor, Monitor.id == RawMessage.monitor_id)
            ).all()
        )
