"""``python -m simulators``: publish a simulated facility over MQTT and print a summary."""

from __future__ import annotations

import argparse
import logging
import math
import os
import signal
import sys
import threading
from collections.abc import Sequence
from datetime import UTC, datetime

from simulators.facility import load_facility
from simulators.publisher import (
    SimulationResult,
    dry_run,
    resolve_duration,
    resolve_start,
    run_simulation,
)
from simulators.scenario import load_scenario, parse_duration
from tracker.wire.mqtt import parse_broker_url


def _speed(text: str) -> float:
    """``0``, ``inf`` or ``max`` mean as fast as possible."""
    if text.lower() in ("inf", "max"):
        return math.inf
    value = float(text)
    if value < 0 or math.isnan(value):
        raise argparse.ArgumentTypeError("speed must be ≥ 0")
    return value


def _start(text: str) -> datetime:
    """ISO 8601 with an offset or Z."""
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError("start needs an offset, e.g. 2026-11-20T00:00:00Z")
    return value.astimezone(UTC)


def build_parser() -> argparse.ArgumentParser:
    """Command-line options (the same as ``tracker simulate``)."""
    p = argparse.ArgumentParser(prog="python -m simulators", description=__doc__)
    p.add_argument("--facility", required=True, help="facility TOML file")
    p.add_argument("--scenario", help="scenario TOML file (default: a healthy facility)")
    p.add_argument(
        "--mqtt",
        default=os.environ.get("TRACKER_MQTT_URL", "mqtt://127.0.0.1:1883"),
        help="broker URL mqtt[s]://[user:pass@]host:port (env TRACKER_MQTT_URL)",
    )
    p.add_argument(
        "--speed",
        type=_speed,
        default=60.0,
        help="simulated seconds per wall second; 0 or inf = as fast as possible",
    )
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--duration", type=parse_duration, help="e.g. 2h, 90m (default: scenario's)")
    p.add_argument(
        "--start",
        type=_start,
        help="simulated start time (default: scenario's, else so that the run ends at the wall clock)",
    )
    p.add_argument("--client-id", default="gmp-simulator")
    p.add_argument("--protocol", type=int, choices=(5, 311), default=5)
    p.add_argument("--first-seq", type=int, default=1, help="first seq of every monitor")
    p.add_argument("--dry-run", action="store_true", help="generate without a broker")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the simulator until the scenario ends or SIGINT/SIGTERM."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        result = _dry_run(args) if args.dry_run else _live_run(args)
    except (ValueError, ConnectionError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(result.summary())
    return 0


def _dry_run(args: argparse.Namespace) -> SimulationResult:
    facility = load_facility(args.facility)
    scenario = load_scenario(args.scenario, facility) if args.scenario else None
    duration = resolve_duration(args.duration, scenario)
    start = resolve_start(args.start, scenario, duration=duration, speed=args.speed, now=datetime.now(UTC))
    return dry_run(
        facility, scenario, seed=args.seed, start=start, duration=duration, first_seq=args.first_seq
    )


def _live_run(args: argparse.Namespace) -> SimulationResult:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return run_simulation(
        facility_path=args.facility,
        scenario_path=args.scenario,
        broker=parse_broker_url(args.mqtt),
        speed=args.speed,
        seed=args.seed,
        duration=args.duration,
        start=args.start,
        stop=stop,
        client_id=args.client_id,
        protocol=args.protocol,
        first_seq=args.first_seq,
    )


if __name__ == "__main__":
    sys.exit(main())
