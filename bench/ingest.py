"""Ingest throughput against the raw broker ceiling, measured on the same broker in one run.

    uv run python bench/ingest.py [--readings 100000]

Two phases on one Debian mosquitto (loopback), each with the same pre-generated messages of
the sample facility published by a separate process at QoS 1:

* ceiling  — a paho subscriber that only counts (QoS 1, persistent session, auto-ack);
* ingester — ``tracker.ingest.client.Ingester``: parse, pint-normalise (cached factors), evaluate,
  dedupe, Core bulk insert into SQLite (WAL), excursion machine, commit, then manual ack.

Each phase runs "live" (subscriber connected while the publisher floods) and "backlog"
(messages queued for an offline persistent session, then drained). Prints messages/s of
each and the ratio ingester / ceiling. A benchmark, not a test: nothing is asserted.

    uv run python bench/ingest.py --rules-cost

prices the rules beyond limit episodes (data gaps, ≥5 µm recurrence, adverse trends,
recovery) and the hourly rollups: the live phase runs alternately with everything on and
with a bench-only intake that skips them (limit evaluation, rolling-volume verdicts and
limit episodes stay), and prints both rates and their ratio (issue 6 target: ≥ 0.85).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import sys
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import paho.mqtt.client as mqtt  # noqa: E402
from sqlalchemy import func  # noqa: E402
from sqlmodel import select  # noqa: E402

from bench.common import FACILITY, fresh_database  # noqa: E402
from simulators.facility import load_facility as load_sim_facility  # noqa: E402
from simulators.publisher import generate  # noqa: E402
from tracker.core.db import unit_of_work  # noqa: E402
from tracker.ingest.client import Ingester, IngestOptions  # noqa: E402
from tracker.monitoring.intake import Intake  # noqa: E402
from tracker.monitoring.readings import RawMessage  # noqa: E402
from tracker.wire.broker import LocalBroker  # noqa: E402
from tracker.wire.mqtt import connect, make_client, parse_broker_url  # noqa: E402


def make_messages(n: int) -> list[tuple[str, bytes]]:
    """The first ``n`` reading messages of the sample facility, in simulated-time order."""
    facility = load_sim_facility(FACILITY)
    start = (datetime.now(UTC) - timedelta(days=30)).replace(microsecond=0)
    out: list[tuple[str, bytes]] = []
    for msg in generate(facility, None, seed=7, start=start, duration=timedelta(days=29)):
        if msg.kind == "reading":
            out.append((msg.topic, msg.payload))
            if len(out) == n:
                break
    return out


def publisher(url: str, messages: list[tuple[str, bytes]], tag: str) -> None:
    """Separate process: publish everything at QoS 1 with a bounded window."""
    address = parse_broker_url(url)
    client = make_client(address, client_id=f"bench-pub-{tag}")
    connect(client, address)
    client.loop_start()
    window: deque[mqtt.MQTTMessageInfo] = deque()
    for topic, payload in messages:
        info = client.publish(topic, payload, qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise SystemExit(f"publish failed: {info.rc}")
        window.append(info)
        while len(window) >= 2000:
            window.popleft().wait_for_publish(30)
    for info in window:
        info.wait_for_publish(30)
    client.disconnect()
    client.loop_stop()


def publish_in_process(url: str, messages: list[tuple[str, bytes]], tag: str) -> mp.Process:
    proc = mp.get_context("fork").Process(target=publisher, args=(url, messages, tag))
    proc.start()
    return proc


class Counter:
    """The ceiling: a paho subscriber that only counts messages."""

    def __init__(self, url: str, client_id: str, total: int) -> None:
        self.total, self.count = total, 0
        self.first = self.last = 0.0
        self.done = threading.Event()
        self.subscribed = threading.Event()
        address = parse_broker_url(url)
        self.client = make_client(address, client_id=client_id)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.on_connect = lambda c, *a: c.subscribe("gmp/#", qos=1)
        self.address = address

    def _on_message(self, *_args) -> None:
        now = time.perf_counter()
        if self.count == 0:
            self.first = now
        self.count += 1
        self.last = now
        if self.count >= self.total:
            self.done.set()

    def start(self) -> None:
        connect(self.client, self.address, persistent=True)
        self.client.loop_start()
        self.subscribed.wait(10)

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def ceiling(url: str, messages: list, mode: str) -> float:
    counter = Counter(url, f"bench-ceiling-{mode}", len(messages))
    counter.start()
    if mode.startswith("backlog"):
        counter.stop()
        publish_in_process(url, messages, f"c-{mode}").join()
        counter = Counter(url, f"bench-ceiling-{mode}", len(messages))
        t0 = time.perf_counter()
        counter.start()
        counter.done.wait(600)
        elapsed = counter.last - t0
    else:
        proc = publish_in_process(url, messages, f"c-{mode}")
        counter.done.wait(600)
        proc.join()
        elapsed = counter.last - counter.first
    counter.stop()
    return counter.count / elapsed


class CoreOnlyIntake(Intake):
    """Bench-only: limit evaluation and limit episodes, without the other rules and rollups."""

    def _roll_up(self, session, batch) -> None:
        pass

    def _apply_rules(self, session, registry, batch, statuses, now) -> None:
        self.book.process(session, registry, batch.series, now=now)


def stored(engine) -> int:
    with unit_of_work(engine) as s:
        return s.exec(select(func.count()).select_from(RawMessage)).one()


def ingest(
    url: str, messages: list, mode: str, workdir: Path, batch_size: int, core_only: bool = False
) -> tuple[float, int]:
    """Rate of one in-process ingester into a fresh SQLite file."""
    engine = fresh_database(f"sqlite:///{workdir / f'bench-{mode}.db'}")
    options = IngestOptions(client_id=f"bench-ingest-{mode}", batch_size=batch_size)

    def start_ingester() -> tuple[Ingester, threading.Event, threading.Thread]:
        ing = Ingester(engine, parse_broker_url(url), options)
        if core_only:
            ing.intake = CoreOnlyIntake(close_after=options.close_after, gap_factor=options.gap_factor)
        stop = threading.Event()
        thread = threading.Thread(target=ing.run, args=(stop,), daemon=True)
        thread.start()
        ing.subscribed.wait(10)
        return ing, stop, thread

    ing, stop, thread = start_ingester()
    if mode.startswith("backlog"):
        stop.set()
        thread.join()
        publish_in_process(url, messages, f"i-{mode}").join()
        t0 = time.perf_counter()
        ing, stop, thread = start_ingester()
        proc = None
    else:
        t0 = None
        proc = publish_in_process(url, messages, f"i-{mode}")
        while ing.stats.received == 0 and not ing.pending:
            time.sleep(0.001)
        t0 = time.perf_counter()
    while ing.stats.received < len(messages):
        time.sleep(0.01)
    elapsed = time.perf_counter() - t0
    stop.set()
    thread.join()
    if proc:
        proc.join()
    return ing.stats.received / elapsed, stored(engine)


@dataclass(frozen=True)
class Throughput:
    mode: str
    ceiling: float
    rate: float
    low: float
    high: float
    stored_ok: bool

    @property
    def ratio(self) -> float:
        return self.rate / self.ceiling


def throughput(
    url: str, messages: list, workdir: Path, *, repeat: int = 3, batch_size: int = IngestOptions.batch_size
) -> list[Throughput]:
    """Live and backlog phases, each the median of ``repeat`` alternating runs."""
    rows = []
    for mode in ("live", "backlog"):
        ceilings, rates, complete = [], [], True
        for run in range(repeat):  # alternate, so drift hits both phases alike
            ceilings.append(ceiling(url, messages, f"{mode}-{run}"))
            rate, n_stored = ingest(url, messages, f"{mode}-{run}", workdir, batch_size)
            rates.append(rate)
            if n_stored != len(messages):
                complete = False
                print(f"WARNING: {mode} run {run} stored {n_stored} of {len(messages)}")
        ratios = [r / c for r, c in zip(rates, ceilings, strict=True)]
        rows.append(
            Throughput(
                mode,
                statistics.median(ceilings),
                statistics.median(rates),
                min(ratios),
                max(ratios),
                complete,
            )
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readings", type=int, default=100_000)
    parser.add_argument(
        "--batch-size",
        type=int,
        default=IngestOptions.batch_size,
        help="messages per transaction (TRACKER_INGEST_BATCH_SIZE)",
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs per phase; the median is reported (figures vary ±15 %%)"
    )
    parser.add_argument(
        "--rules-cost", action="store_true", help="live ingest with rules and rollups on vs off, same run"
    )
    args = parser.parse_args()
    t = time.perf_counter()
    messages = make_messages(args.readings)
    print(
        f"generated {len(messages):,} reading messages of {FACILITY.name} in {time.perf_counter() - t:.1f}s"
    )
    with (
        tempfile.TemporaryDirectory(prefix="gmp-bench-") as tmp,
        LocalBroker(data_dir=Path(tmp) / "broker", persistence=False) as broker,
    ):
        print(f"broker: {broker.kind} {broker.url}")
        if args.rules_cost:
            rules_cost(broker.url, messages, Path(tmp), args)
            return
        rows = throughput(broker.url, messages, Path(tmp), repeat=args.repeat, batch_size=args.batch_size)
        print(f"\nmedian of {args.repeat} runs, {len(messages):,} readings each")
        print(f"{'mode':8} {'ceiling msg/s':>14} {'ingester readings/s':>20} {'ratio':>6} {'range':>11}")
        for r in rows:
            print(f"{r.mode:8} {r.ceiling:14,.0f} {r.rate:20,.0f} {r.ratio:6.2f} {r.low:5.2f}–{r.high:4.2f}")


def rules_cost(url: str, messages: list, workdir: Path, args: argparse.Namespace) -> None:
    on, off = [], []
    for run in range(args.repeat):  # alternate, so drift hits both alike
        off.append(ingest(url, messages, f"live-off-{run}", workdir, args.batch_size, core_only=True)[0])
        on.append(ingest(url, messages, f"live-on-{run}", workdir, args.batch_size)[0])
    m_on, m_off = statistics.median(on), statistics.median(off)
    print(f"\nmedian of {args.repeat} live runs, {len(messages):,} readings each")
    print(f"rules + rollups off {m_off:12,.0f} readings/s")
    print(f"rules + rollups on  {m_on:12,.0f} readings/s")
    print(
        f"on / off            {m_on / m_off:12.2f}  (runs: "
        + ", ".join(f"{a / b:.2f}" for a, b in zip(on, off, strict=True))
        + ")"
    )


if __name__ == "__main__":
    main()
