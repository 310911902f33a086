"""Scale-out: 1, 2 and 4 ingester processes on PostgreSQL, routed two ways.

    uv run python bench/scale.py --pg-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres \
        [--readings 100000] [--workers 1 2 4] [--routing share rooms]

For each routing and worker count: a fresh PostgreSQL database (created through ``--pg-url``,
an admin URL), the sample centre loaded, that many ``tracker ingest`` processes, then a
separate process floods the same pre-generated readings at QoS 1. Routing ``share``: every
worker on ``$share/benchK/gmp/#`` (a group per run, each worker under its own name) — mosquitto
deals the messages round robin, so one monitor's readings reach every worker. Routing
``rooms``: the rooms' topic filters dealt to the workers by load (``--subscription`` per
room), so each monitor stays on one worker — what a broker routing shared subscriptions by
topic (EMQX ``hash_topic``) gives. Rate = readings / (publisher start → last reading
committed), from a poll of the database every 0.1 s. Also reports each worker's peak
resident memory (``VmHWM``) and the raw broker ceiling (a paho subscriber that only counts)
measured on the same broker in the same run. Scaling factor = rate(k) / rate(1). Every run
reports how many of the published readings were stored (none can be stored twice), how busy
the machine's cores were (``/proc/stat``: everything — ingesters, PostgreSQL, broker and
publisher — shares them here) and the ingesters' own share of that CPU time. A benchmark, not
a test.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, func, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402
from sqlmodel import select  # noqa: E402

from bench.common import fresh_database  # noqa: E402
from bench.ingest import ceiling, make_messages, publish_in_process  # noqa: E402
from tracker.core.db import unit_of_work  # noqa: E402
from tracker.monitoring.readings import RawMessage  # noqa: E402
from tracker.wire.broker import LocalBroker  # noqa: E402

#: no new reading stored for this long ends a run as stalled
STALL_S = 60.0


@dataclass
class ScaleRun:
    workers: int
    #: ``share``: one $share subscription (mosquitto: round robin by message);
    #: ``rooms``: each worker subscribed to the rooms dealt to it (routing by topic)
    routing: str
    rate: float
    stored: int
    published: int
    peak_rss_mib: list[float] = field(default_factory=list)
    #: fraction of all cores busy during the run, and the ingesters' part of that busy time
    cpu_busy: float = 0.0
    ingester_cpu_share: float = 0.0


def recreate_database(admin_url: str, name: str) -> str:
    """Drop and create ``name`` on the cluster of ``admin_url``; returns the new URL."""
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def start_worker(
    db_url: str, broker_url: str, worker: str, *, group: str | None = None, filters: list[str] | None = None
) -> subprocess.Popen:
    """One ``tracker ingest`` process under a fixed worker name, on the share group or on its
    own topic filters; returns once subscribed."""
    env = {
        **os.environ,
        "TRACKER_DATABASE_URL": db_url,
        "TRACKER_MQTT_URL": broker_url,
        "TRACKER_INGEST_WORKER": worker,
    }
    if group:
        env["TRACKER_MQTT_SHARE_GROUP"] = group
    if filters:
        env["TRACKER_MQTT_SUBSCRIPTION"] = " ".join(filters)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tracker.cli", "ingest"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    subscribed = threading.Event()

    log = Path(tempfile.gettempdir()) / f"gmp-bench-ingest-{worker}.log"

    def watch() -> None:  # keep the worker's log for when a figure looks wrong
        with log.open("w") as out:
            for line in proc.stderr:
                out.write(line)
                out.flush()
                if "subscription to" in line and "confirmed" in line:
                    subscribed.set()

    threading.Thread(target=watch, daemon=True).start()
    if not subscribed.wait(30):
        proc.kill()
        raise SystemExit(f"ingester {worker} did not subscribe")
    return proc


def peak_rss_mib(pid: int) -> float:
    """The process's high-water resident set (``VmHWM``), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of all cores since boot (``/proc/stat``)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields[:8]) - idle, sum(fields[:8])


def process_ticks(pid: int) -> int:
    """User + system clock ticks of one process so far."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    after = stat[stat.rindex(")") + 2 :].split()
    return int(after[11]) + int(after[12])


def stored_count(engine) -> int:
    """Readings stored; (monitor, seq) is raw_message's primary key, so none twice."""
    with unit_of_work(engine) as s:
        return s.exec(select(func.count()).select_from(RawMessage)).one()


def rooms_for(messages: list, workers: int) -> list[list[str]]:
    """Routing by topic: the rooms' filters dealt to the workers, busiest room first to the
    least loaded worker (what a broker hashing topics achieves, by hand)."""
    load: dict[str, int] = {}
    for topic, _ in messages:
        room = topic.rsplit("/", 1)[0]
        load[room] = load.get(room, 0) + 1
    dealt: list[list[str]] = [[] for _ in range(workers)]
    totals = [0] * workers
    for room, n in sorted(load.items(), key=lambda kv: -kv[1]):
        i = totals.index(min(totals))
        dealt[i].append(f"{room}/#")
        totals[i] += n
    return dealt


def run(admin_url: str, broker_url: str, messages: list, workers: int, routing: str = "share") -> ScaleRun:
    db_url = recreate_database(admin_url, f"bench_scale_{routing}_{workers}")
    engine = fresh_database(db_url)
    if routing == "share":
        # a group of its own per run: mosquitto keeps sharing messages round robin into the
        # persistent sessions of the previous run's stopped workers (docs/scale-out.md)
        procs = [
            start_worker(db_url, broker_url, f"bench-{workers}-{i}", group=f"bench{workers}")
            for i in range(workers)
        ]
    else:
        procs = [
            start_worker(db_url, broker_url, f"bench-rooms-{workers}-{i}", filters=rooms)
            for i, rooms in enumerate(rooms_for(messages, workers))
        ]
    t0 = time.perf_counter()
    busy0, total0 = cpu_ticks()
    worker0 = sum(process_ticks(p.pid) for p in procs)
    publisher = publish_in_process(broker_url, messages, f"scale-{workers}")
    stored, last_change = 0, time.monotonic()
    while stored < len(messages) and time.monotonic() - last_change < STALL_S:
        time.sleep(0.1)
        now_stored = stored_count(engine)
        if now_stored != stored:
            stored, last_change = now_stored, time.monotonic()
    elapsed = time.perf_counter() - t0
    busy1, total1 = cpu_ticks()
    worker_busy = sum(process_ticks(p.pid) for p in procs) - worker0
    if stored < len(messages):
        print(
            f"WARNING: {workers} worker(s) stalled at {stored:,} of {len(messages):,} for "
            f"{STALL_S:.0f} s; logs: {tempfile.gettempdir()}/gmp-bench-ingest-*.log"
        )
    publisher.join()
    rss = [peak_rss_mib(p.pid) for p in procs]
    for p in procs:
        p.send_signal(signal.SIGTERM)
    for p in procs:
        p.wait(60)
    stored = stored_count(engine)
    engine.dispose()
    return ScaleRun(
        workers=workers,
        routing=routing,
        rate=stored / elapsed,
        stored=stored,
        published=len(messages),
        peak_rss_mib=rss,
        cpu_busy=(busy1 - busy0) / max(1, total1 - total0),
        ingester_cpu_share=worker_busy / max(1, busy1 - busy0),
    )


def measure(
    admin_url: str,
    *,
    readings: int = 100_000,
    workers: tuple[int, ...] = (1, 2, 4),
    routings: tuple[str, ...] = ("share", "rooms"),
) -> tuple[float, list[ScaleRun]]:
    """The ceiling and one run per routing and worker count (one worker: once), on one broker."""
    messages = make_messages(readings)
    with (
        tempfile.TemporaryDirectory(prefix="gmp-scale-") as tmp,
        LocalBroker(data_dir=Path(tmp) / "broker", persistence=False) as broker,
    ):
        ceil = ceiling(broker.url, messages, "scale-live")
        runs = [
            run(admin_url, broker.url, messages, k, routing)
            for routing in routings
            for k in workers
            if k > 1 or routing == routings[0]
        ]
        return ceil, runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--pg-url", required=True, help="admin URL of a PostgreSQL cluster (databases are created in it)"
    )
    parser.add_argument("--readings", type=int, default=100_000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument(
        "--routing",
        nargs="+",
        choices=["share", "rooms"],
        default=["share", "rooms"],
        help="share: one $share subscription; rooms: rooms dealt to workers by topic",
    )
    args = parser.parse_args()
    ceil, runs = measure(
        args.pg_url, readings=args.readings, workers=tuple(args.workers), routings=tuple(args.routing)
    )
    print(f"raw broker ceiling (live, counting subscriber): {ceil:,.0f} msg/s")
    base = runs[0].rate
    for r in runs:
        print(
            f"{r.workers} worker(s), {r.routing:5}: {r.rate:8,.0f} readings/s · "
            f"scaling ×{r.rate / base:.2f} · "
            f"{r.rate / ceil:.2f} of ceiling · stored {r.stored:,} of {r.published:,} · "
            f"peak RSS " + ", ".join(f"{m:.0f}" for m in r.peak_rss_mib) + " MiB · "
            f"cores busy {r.cpu_busy:.0%} (ingesters {r.ingester_cpu_share:.0%} of it)"
        )


if __name__ == "__main__":
    main()
