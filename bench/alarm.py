"""Publish → delivered: an alarm's way from the monitor to a person's endpoint, under load.

    uv run python bench/alarm.py [--duration 60] [--rate 1500] [--db-url URL]

The traffic is ``bench/latency.py``'s: background readings of the sample centre at ``--rate``
messages/s (1,500/s is DESIGN §7's provincial platform) and, from every differential-pressure
monitor, one live reading a second of which every fourth is an inversion (an action excursion
at once). Here the centre's facility file carries one ``[[notify]]`` rule (action limit
excursions → a JSON webhook on 127.0.0.1), and the whole chain runs: mosquitto → the ingester
(excursion and outbox row in one commit) → the dispatcher (``tracker notify``'s defaults, a
process of its own) → Apprise → an HTTP sink that notes the wall time each message arrives.
Latency = arrival at the sink − the publisher handing the trigger to paho. Prints p50/p90/p99.
Goal (issue 16): p99 under 2 s. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import re
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from bench.common import FACILITY  # noqa: E402
from bench.latency import background_messages, publisher  # noqa: E402
from simulators.facility import load_facility as load_sim_facility  # noqa: E402
from tracker.core.db import get_engine, unit_of_work  # noqa: E402
from tracker.core.migrate import upgrade  # noqa: E402
from tracker.facility.file import parse_facility  # noqa: E402
from tracker.facility.load import load_facility  # noqa: E402
from tracker.ingest.client import Ingester, IngestOptions  # noqa: E402
from tracker.notify.dispatcher import Dispatcher  # noqa: E402
from tracker.wire.broker import LocalBroker  # noqa: E402
from tracker.wire.mqtt import parse_broker_url  # noqa: E402

#: what identifies a trigger in the English message: its monitor and its start (site time)
MONITOR = re.compile(r"Monitor: (\S+), channel")
STARTED = re.compile(r"Started: (.+)\n")


@dataclass(frozen=True)
class AlarmResult:
    samples: int
    triggers: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    background_rate: float
    poll_s: float


def _sink() -> tuple[ThreadingHTTPServer, dict[tuple[str, str], float]]:
    """An HTTP sink noting when each alarm arrives, keyed by (monitor, local start)."""
    arrived: dict[tuple[str, str], float] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            at = time.time()
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            monitor, started = MONITOR.search(body["message"]), STARTED.search(body["message"])
            if monitor and started:
                arrived.setdefault((monitor.group(1), started.group(1)), at)
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, arrived


def _database(url: str, hook: str):
    """The sample centre with one rule: action limit excursions → the sink, in English."""
    upgrade(url)
    engine = get_engine(url)
    text = FACILITY.read_text(encoding="utf-8").replace(
        'limit_set = "CN-GMP-2010"', 'limit_set = "CN-GMP-2010"\nlanguage = "en"'
    )
    text += f'\n[[notify]]\nname = "bench"\ntypes = ["limit"]\nlevels = ["action"]\ntargets = ["{hook}"]\n'
    with unit_of_work(engine) as s:
        load_facility(s, parse_facility(text), actor="bench")
    return engine


def _dispatch(url: str, done, poll_s: float) -> None:
    stop = threading.Event()
    threading.Thread(target=lambda: (done.wait(), stop.set()), daemon=True).start()
    Dispatcher(get_engine(url)).run(stop, poll_s=poll_s)


def measure(
    *, duration: float = 60.0, rate: float = 1500.0, db_url: str | None = None, poll_s: float = 0.25
) -> AlarmResult:
    """Run the chain once; ``db_url`` (empty database) defaults to a fresh SQLite file."""
    sim = load_sim_facility(FACILITY)
    tz = ZoneInfo(sim.site.timezone)
    pressure = [
        (f"gmp/{sim.site.code}/{m.room}/{m.code}", m.code, m.setpoint or 15.0)
        for m in sim.monitors
        if m.kind == "pressure"
    ]
    background = background_messages({code for _, code, _ in pressure}, int(duration * rate) + 1)
    server, arrived = _sink()
    try:
        with (
            tempfile.TemporaryDirectory(prefix="gmp-alarm-") as tmp,
            LocalBroker(data_dir=Path(tmp) / "broker", persistence=False) as broker,
        ):
            hook = f"json://127.0.0.1:{server.server_address[1]}/hook"
            engine = _database(db_url or f"sqlite:///{Path(tmp) / 'alarm.db'}", hook)
            ingester = Ingester(
                engine, parse_broker_url(broker.url), IngestOptions(client_id="bench-alarm-ingest")
            )
            stop = threading.Event()
            thread = threading.Thread(target=ingester.run, args=(stop,), daemon=True)
            thread.start()
            ingester.subscribed.wait(10)
            # the dispatcher is a process of its own, as `tracker notify` is
            done = mp.get_context("fork").Event()
            notifier = mp.get_context("fork").Process(target=_dispatch, args=(str(engine.url), done, poll_s))
            notifier.start()
            sent: mp.Queue = mp.get_context("fork").Queue()
            proc = mp.get_context("fork").Process(
                target=publisher, args=(broker.url, background, pressure, duration, rate, sent)
            )
            proc.start()
            published, bg_sent = sent.get(timeout=duration + 120)
            proc.join()

            def key(k: tuple[str, str]) -> tuple[str, str]:
                local = datetime.fromisoformat(k[1]).astimezone(tz)
                return k[0], local.strftime("%Y-%m-%d %H:%M:%S %Z")

            wanted = {key(k): t for k, t in published.items()}
            deadline = time.monotonic() + 30
            while len(arrived.keys() & wanted.keys()) < len(wanted) and time.monotonic() < deadline:
                time.sleep(0.05)
            stop.set()
            done.set()
            thread.join(15)
            notifier.join(15)
    finally:
        server.shutdown()
        server.server_close()
    ms = np.array([(arrived[k] - t) * 1000 for k, t in wanted.items() if k in arrived])
    return AlarmResult(
        samples=len(ms),
        triggers=len(wanted),
        p50_ms=float(np.percentile(ms, 50)),
        p90_ms=float(np.percentile(ms, 90)),
        p99_ms=float(np.percentile(ms, 99)),
        max_ms=float(ms.max()),
        background_rate=bg_sent / duration,
        poll_s=poll_s,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of traffic")
    parser.add_argument("--rate", type=float, default=1500.0, help="background messages/s")
    parser.add_argument("--db-url", help="an empty database (default: a fresh SQLite file)")
    args = parser.parse_args()
    r = measure(duration=args.duration, rate=args.rate, db_url=args.db_url)
    print(f"{r.samples} of {r.triggers} alarms delivered; background {r.background_rate:,.0f} msg/s")
    print(
        f"publish → delivered at the webhook: p50 {r.p50_ms:.0f} ms · p90 {r.p90_ms:.0f} ms · "
        f"p99 {r.p99_ms:.0f} ms · max {r.max_ms:.0f} ms (dispatcher poll {r.poll_s:g} s)"
    )


if __name__ == "__main__":
    main()
