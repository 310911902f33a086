"""Publish → excursion latency under background load, measured end to end.

    uv run python bench/latency.py [--duration 90] [--rate 1500] [--db-url URL]

A separate process publishes, at QoS 1 on one Debian mosquitto (loopback):

* background traffic: the sample centre's particle, temperature and humidity readings at
  ``--rate`` messages/s (1,500/s is DESIGN §7's provincial platform);
* triggers: every differential-pressure monitor of the centre sends one live reading per
  second; every fourth one is a pressure inversion (−2 Pa: an action excursion at once —
  ordinary low-pressure limits wait out a 60 s delay for door openings), the next three are
  back at set point, so each trigger opens exactly one limit excursion that then closes.

The ingester (``tracker.ingest.client.Ingester``, default options) runs in this process; after
each committed batch it looks up the excursions created since the last batch and matches
each to its trigger by (monitor, event time). Latency = wall time of that commit − wall time
the publisher handed the trigger to paho. Prints p50/p90/p99/max. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from sqlmodel import select  # noqa: E402

from bench.common import FACILITY, fresh_database  # noqa: E402
from simulators.facility import load_facility as load_sim_facility  # noqa: E402
from simulators.payloads import encode, value_reading  # noqa: E402
from simulators.publisher import generate  # noqa: E402
from tracker.facility.models import Monitor  # noqa: E402
from tracker.ingest.client import Ingester, IngestOptions  # noqa: E402
from tracker.monitoring.excursions import Excursion  # noqa: E402
from tracker.wire.broker import LocalBroker  # noqa: E402
from tracker.wire.mqtt import connect, make_client, parse_broker_url  # noqa: E402

TRIGGER_VALUE_PA = -2.0  # an inversion: no persistence delay (docs/limits.md)
CYCLE_S = 4  # one action reading, then three at set point


@dataclass(frozen=True)
class LatencyResult:
    samples: int
    triggers: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    background_rate: float


def background_messages(exclude: set[str], n: int) -> list[tuple[str, bytes]]:
    """``n`` simulated readings of every monitor not in ``exclude``, a month ago."""
    facility = load_sim_facility(FACILITY)
    start = (datetime.now(UTC) - timedelta(days=30)).replace(microsecond=0)
    out: list[tuple[str, bytes]] = []
    for msg in generate(facility, None, seed=11, start=start, duration=timedelta(days=20)):
        if msg.kind == "reading" and msg.monitor not in exclude:
            out.append((msg.topic, msg.payload))
            if len(out) == n:
                break
    return out


def publisher(
    url: str,
    background: list[tuple[str, bytes]],
    triggers: list[tuple[str, str, float]],
    duration: float,
    rate: float,
    sent: mp.Queue,
) -> None:
    """Paced background traffic plus one reading per second per pressure monitor."""
    address = parse_broker_url(url)
    client = make_client(address, client_id="bench-latency-pub")
    connect(client, address)
    client.loop_start()
    published: dict[tuple[str, str], float] = {}
    t0 = time.monotonic()
    next_tick = t0
    bg_index = 0
    seqs = {code: 0 for _, code, _ in triggers}
    second = 0
    while time.monotonic() - t0 < duration:
        now = time.monotonic()
        due = int((now - t0) * rate)
        while bg_index < min(due, len(background)):
            topic, payload = background[bg_index]
            client.publish(topic, payload, qos=1)
            bg_index += 1
        if now >= next_tick:
            stamp = datetime.now(UTC).replace(microsecond=0)
            for i, (topic, code, setpoint) in enumerate(triggers):
                seqs[code] += 1
                action = (second + i) % CYCLE_S == 0 and second >= CYCLE_S
                value = TRIGGER_VALUE_PA if action else setpoint
                client.publish(
                    topic,
                    encode(value_reading(code, seqs[code], stamp, kind="pressure", value=value, unit="Pa")),
                    qos=1,
                )
                if action:
                    published[(code, stamp.isoformat())] = time.time()
            second += 1
            next_tick += 1.0
        time.sleep(0.002)
    time.sleep(2)  # let the last excursions land before the subscriber is stopped
    client.disconnect()
    client.loop_stop()
    sent.put((published, bg_index))


def measure(*, duration: float = 90.0, rate: float = 1500.0, db_url: str | None = None) -> LatencyResult:
    """Run the scenario once; ``db_url`` (empty database) defaults to a fresh SQLite file."""
    sim = load_sim_facility(FACILITY)
    pressure = [
        (f"gmp/{sim.site.code}/{m.room}/{m.code}", m.code, m.setpoint or 15.0)
        for m in sim.monitors
        if m.kind == "pressure"
    ]
    background = background_messages({code for _, code, _ in pressure}, int(duration * rate) + 1)
    with (
        tempfile.TemporaryDirectory(prefix="gmp-latency-") as tmp,
        LocalBroker(data_dir=Path(tmp) / "broker", persistence=False) as broker,
    ):
        engine = fresh_database(db_url or f"sqlite:///{Path(tmp) / 'latency.db'}")
        with engine.connect() as conn:
            codes = dict(conn.execute(select(Monitor.id, Monitor.code)).all())
        latencies: dict[tuple[str, str], float] = {}
        last_id = 0

        def after_commit(_outcome) -> None:
            nonlocal last_id
            committed = time.time()
            with engine.connect() as conn:
                rows = conn.execute(
                    select(Excursion.id, Excursion.monitor_id, Excursion.started_at)
                    .where(Excursion.id > last_id, Excursion.type == "limit")
                    .order_by(Excursion.id)
                ).all()
            for ex_id, monitor_id, started_at in rows:
                latencies.setdefault((codes[monitor_id], started_at.isoformat()), committed)
                last_id = ex_id

        ingester = Ingester(
            engine,
            parse_broker_url(broker.url),
            IngestOptions(client_id="bench-latency-ingest"),
            on_batch=after_commit,
        )
        stop = threading.Event()
        thread = threading.Thread(target=ingester.run, args=(stop,), daemon=True)
        thread.start()
        ingester.subscribed.wait(10)
        sent: mp.Queue = mp.get_context("fork").Queue()
        proc = mp.get_context("fork").Process(
            target=publisher, args=(broker.url, background, pressure, duration, rate, sent)
        )
        proc.start()
        published, bg_sent = sent.get(timeout=duration + 120)
        proc.join()
        deadline = time.monotonic() + 30
        while len(latencies.keys() & published.keys()) < len(published) and time.monotonic() < deadline:
            time.sleep(0.05)
        stop.set()
        thread.join()
    ms = np.array([(latencies[k] - t) * 1000 for k, t in published.items() if k in latencies])
    return LatencyResult(
        samples=len(ms),
        triggers=len(published),
        p50_ms=float(np.percentile(ms, 50)),
        p90_ms=float(np.percentile(ms, 90)),
        p99_ms=float(np.percentile(ms, 99)),
        max_ms=float(ms.max()),
        background_rate=bg_sent / duration,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=90.0, help="seconds of traffic")
    parser.add_argument("--rate", type=float, default=1500.0, help="background messages/s")
    parser.add_argument("--db-url", help="an empty database (default: a fresh SQLite file)")
    args = parser.parse_args()
    r = measure(duration=args.duration, rate=args.rate, db_url=args.db_url)
    print(
        f"{r.samples} of {r.triggers} triggers became excursions; background {r.background_rate:,.0f} msg/s"
    )
    print(
        f"publish → excursion committed: p50 {r.p50_ms:.0f} ms · p90 {r.p90_ms:.0f} ms · "
        f"p99 {r.p99_ms:.0f} ms · max {r.max_ms:.0f} ms"
    )


if __name__ == "__main__":
    main()
