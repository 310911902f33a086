"""Breach forecast, measured: lead time of ``predicted`` warnings and false warnings per monitor-day.

    uv run python bench/prediction.py [--seeds N] [--horizon-h H] [--json]

Runs the simulator scenarios ``trending-drift`` (slow ramps through the levels), ``trending-step``
(level shifts that stay inside the limits) and ``trending-quiet`` (a week of normal days) of
the T-SITE facility over several seeds, and feeds every slow monitor's readings through the
same forecast and warning logic ingest uses (``tracker.monitoring.trending.forecast.predict``
and ``WarningState``, one fit per series every ``EVERY_S`` of event time, limits resolved from
the facility file as the tracker resolves them). The real breach is the start of the first run
of out-of-limit readings that lasts the level's delay (what opens a limit excursion).

Reported per quantity: breaches, the median lead time of the warning before each (a warning of
that level or higher, open at the breach or closed by it within the horizon), the share warned
≥ 30 min ahead, and false warnings per monitor-day on the step and no-change data (every
warning opened there, none of which is followed by a breach). Plus the cost of one fit, to
size the ingest rule (docs/trending.md "Where it runs").
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from simulators.facility import load_facility as load_facility_sim  # noqa: E402
from simulators.publisher import generate  # noqa: E402
from simulators.scenario import load_scenario  # noqa: E402
from tracker.facility.file import monitor_specs, parse_facility  # noqa: E402
from tracker.facility.limits import Bounds, load_limit_set, resolve_monitor_limits  # noqa: E402
from tracker.monitoring.trending.forecast import Levels, WarningState, predict  # noqa: E402
from tracker.monitoring.trending.rule import EVERY_S, SLOW_KINDS  # noqa: E402

DATA = ROOT / "simulators" / "data"
FACILITY = DATA / "test-small.toml"
BREACH_SCENARIOS = ("trending-drift",)
#: no breach in either: "quiet" is the no-change week, "step" level shifts that stay inside
QUIET_SCENARIOS = {"trending-quiet": "quiet", "trending-step": "step"}
LEAD_GOAL_MIN = 30.0


@dataclass
class Quantity:
    breaches: int = 0
    leads_min: list[float] = field(default_factory=list)
    warned_30: int = 0
    #: per scenario family: warnings opened, monitor-days
    false_warnings: dict[str, int] = field(default_factory=lambda: {"quiet": 0, "step": 0})
    monitor_days: dict[str, float] = field(default_factory=lambda: {"quiet": 0.0, "step": 0.0})

    def summary(self) -> dict:
        return {
            "breaches": self.breaches,
            "median_lead_min": statistics.median(self.leads_min) if self.leads_min else None,
            "share_warned_30min": self.warned_30 / self.breaches if self.breaches else None,
            "false_per_monitor_day": {
                k: self.false_warnings[k] / d if d else None for k, d in self.monitor_days.items()
            },
            "false_warnings": self.false_warnings,
            "monitor_days": self.monitor_days,
        }


def _series(
    scenario: str, seed: int
) -> tuple[dict[str, tuple[str, np.ndarray, np.ndarray]], datetime, float]:
    """``monitor → (kind, seconds, values)`` of every slow monitor, the start, the duration (s)."""
    facility = load_facility_sim(FACILITY)
    sc = load_scenario(DATA / f"{scenario}.toml", facility)
    start = sc.start
    assert start is not None
    out: dict[str, list[tuple[float, float]]] = {}
    kinds: dict[str, str] = {}
    for msg in generate(facility, sc, seed=seed, start=start, duration=sc.duration):
        if msg.kind != "reading" or msg.monitor is None:
            continue
        body = json.loads(msg.payload)
        if body.get("kind") not in SLOW_KINDS:
            continue
        kinds[msg.monitor] = body["kind"]
        out.setdefault(msg.monitor, []).append(((msg.sim_time - start).total_seconds(), float(body["value"])))
    series = {}
    for code, pts in out.items():
        arr = np.array(sorted(pts))
        series[code] = (kinds[code], arr[:, 0], arr[:, 1])
    return series, start, sc.duration.total_seconds()


def _limits() -> dict[str, Bounds]:
    """Each slow monitor's at-rest bounds, resolved as the tracker resolves them."""
    fdef = parse_facility(FACILITY.read_text())
    limit_set = load_limit_set(fdef.limit_set)
    out = {}
    for spec in monitor_specs(fdef):
        if spec.kind in SLOW_KINDS:
            bounds = resolve_monitor_limits(limit_set, spec, fdef.levels).for_reading("", "at_rest")
            if bounds is not None:
                out[spec.code] = bounds
    return out


def _breach_level(value: float, b: Bounds) -> str | None:
    def out(low: float | None, high: float | None) -> bool:
        return (low is not None and value < low) or (high is not None and value > high)

    if out(b.action_low, b.action_high):
        return "action"
    if out(b.alert_low, b.alert_high):
        return "alert"
    return None


def breaches(t: np.ndarray, v: np.ndarray, b: Bounds) -> dict[str, float]:
    """First start (s) of a run at or beyond each level lasting the delay (the excursion's start)."""
    first: dict[str, float] = {}
    delay = b.delay_s or 0.0
    for level in ("alert", "action"):
        run_start = None
        for ti, vi in zip(t, v, strict=True):
            lv = _breach_level(vi, b)
            beyond = lv == "action" or (lv == "alert" and level == "alert")
            if beyond:
                run_start = ti if run_start is None else run_start
                if ti - run_start >= delay:
                    first[level] = run_start
                    break
            else:
                run_start = None
    return first


def warnings(
    t: np.ndarray, v: np.ndarray, b: Bounds, *, horizon_h: float, window_min: float, timing: list[float]
) -> list[tuple[float, float | None, float | None]]:
    """``(opened s, at action since s or None, closed s or None)`` of each warning, fitted every
    ``EVERY_S``: a warning opened at alert and raised counts for the action level from its raise."""
    levels = Levels(b.alert_low, b.alert_high, b.action_low, b.action_high)
    state = WarningState()
    out: list[list] = []
    next_fit = 0.0
    for i in range(t.size):
        if t[i] < next_fit:
            continue
        next_fit = t[i] + EVERY_S
        lo = np.searchsorted(t, t[i] - window_min * 60)
        c0 = time.perf_counter()
        p = predict(
            t[lo : i + 1], v[lo : i + 1], levels=levels, horizon_min=horizon_h * 60, window_min=window_min
        )
        timing.append(time.perf_counter() - c0)
        change = state.feed(p)
        if change == "opened":
            out.append([t[i], t[i] if state.level == "action" else None, None])
        elif change == "raised":
            out[-1][1] = t[i]
        elif change == "closed":
            out[-1][2] = t[i]
    return [tuple(w) for w in out]


def lead_min(breach_s: float, level: str, warns: list, horizon_s: float) -> float:
    """Minutes between the first warning of ``level`` or higher that was open at the breach (or
    closed within the horizon before it) and the breach; 0 when none."""
    for opened, action_since, closed in warns:
        since = opened if level == "alert" else action_since
        if since is not None and since <= breach_s and (closed is None or closed >= breach_s - horizon_s):
            return (breach_s - since) / 60.0
    return 0.0


#: the forecast's constants were chosen on seeds 0-2 (docs/trending.md); the bench reports
#: seeds it was not tuned on
FIRST_SEED = 100


def measure(
    *, seeds: int = 5, horizon_h: float = 4.0, window_min: float = 120.0, first_seed: int = FIRST_SEED
) -> dict:
    limits = _limits()
    by_kind: dict[str, Quantity] = {k: Quantity() for k in sorted(SLOW_KINDS)}
    timing: list[float] = []
    cases: list[dict] = []
    t0 = time.perf_counter()
    for seed in range(first_seed, first_seed + seeds):
        for scenario in (*BREACH_SCENARIOS, *QUIET_SCENARIOS):
            series, _, duration = _series(scenario, seed)
            for code, (kind, t, v) in sorted(series.items()):
                b = limits[code]
                warns = warnings(t, v, b, horizon_h=horizon_h, window_min=window_min, timing=timing)
                q = by_kind[kind]
                if scenario in QUIET_SCENARIOS:
                    family = QUIET_SCENARIOS[scenario]
                    q.monitor_days[family] += duration / 86400
                    q.false_warnings[family] += len(warns)
                    continue
                for level, at in sorted(breaches(t, v, b).items()):
                    lead = lead_min(at, level, warns, horizon_h * 3600)
                    q.breaches += 1
                    q.leads_min.append(lead)
                    q.warned_30 += lead >= LEAD_GOAL_MIN
                    cases.append({"seed": seed, "monitor": code, "level": level, "lead_min": round(lead, 1)})
    return {
        "seeds": seeds,
        "first_seed": first_seed,
        "horizon_h": horizon_h,
        "window_min": window_min,
        "every_s": EVERY_S,
        "quantities": {k: q.summary() for k, q in by_kind.items()},
        "fit_ms": {
            "fits": len(timing),
            "median": 1000 * statistics.median(timing),
            "p99": 1000 * float(np.percentile(timing, 99)),
        },
        "cases": cases,
        "elapsed_s": time.perf_counter() - t0,
    }


def ingest_cost(*, hours: float = 6.0, batch: int = 50) -> dict:
    """The rule's cost in ingest: the drift scenario's first ``hours`` of every T-SITE monitor
    through the real intake on SQLite, in batches of ``batch`` messages, with the forecast on;
    the time inside ``ForecastRule.after_batch`` (its query and fit) against the whole batch."""
    import tempfile

    from tracker.core.db import get_engine, unit_of_work
    from tracker.core.migrate import upgrade
    from tracker.facility.load import load_facility as load_tracker_facility
    from tracker.ingest.processor import BatchProcessor, InboundMessage
    from tracker.monitoring.intake import Intake
    from tracker.monitoring.trending.rule import ForecastRule

    facility = load_facility_sim(FACILITY)
    sc = load_scenario(DATA / "trending-drift.toml", facility)
    assert sc.start is not None
    messages = [
        InboundMessage(topic=m.topic, payload=m.payload, received_at=m.sim_time + timedelta(seconds=1))
        for m in generate(facility, sc, seed=FIRST_SEED, start=sc.start, duration=timedelta(hours=hours))
        if m.kind == "reading"
    ]
    rule = ForecastRule(horizon_h=4.0)
    spent = [0.0]
    fits = [0]
    inner_fit = rule._fit

    def timed_fit(*args, **kwargs):
        fits[0] += 1
        return inner_fit(*args, **kwargs)

    rule._fit = timed_fit  # type: ignore[method-assign]
    inner_batch = rule.after_batch

    def timed_batch(session, stored):
        t0 = time.perf_counter()
        inner_batch(session, stored)
        spent[0] += time.perf_counter() - t0

    rule.after_batch = timed_batch  # type: ignore[method-assign]
    with tempfile.TemporaryDirectory(prefix="gmp-prediction-") as tmp:
        # the site key of a throwaway database stays with it (not in the working tree)
        if not os.environ.get("TRACKER_AUDIT_KEY_FILE") and not os.environ.get("TRACKER_AUDIT_KEY"):
            os.environ["TRACKER_AUDIT_KEY"] = secrets.token_hex(32)
        url = f"sqlite:///{tmp}/bench.db"
        upgrade(url)
        engine = get_engine(url)
        with unit_of_work(engine) as s:
            load_tracker_facility(s, parse_facility(FACILITY.read_text()), actor="bench")
        processor = BatchProcessor(Intake(forecast=rule))
        t0 = time.perf_counter()
        for i in range(0, len(messages), batch):
            with unit_of_work(engine) as s:
                processor.process(s, messages[i : i + batch])
        total = time.perf_counter() - t0
        engine.dispose()
    batches = -(-len(messages) // batch)
    return {
        "messages": len(messages),
        "batches": batches,
        "fits": fits[0],
        "total_s": total,
        "rule_s": spent[0],
        "rule_share": spent[0] / total,
        "ms_per_fit": 1000 * spent[0] / fits[0] if fits[0] else None,
        "rule_ms_per_batch": 1000 * spent[0] / batches,
    }


def render(r: dict) -> list[str]:
    """The rows of docs/performance.md's forecast table."""
    lines = [
        "| quantity | breaches | median lead (min) | warned ≥ 30 min ahead | false warnings per "
        "monitor-day, no change (per week) | … after a step inside the limits (per week) |",
        "|---|---|---|---|---|---|",
    ]
    for kind, q in r["quantities"].items():
        lead = "—" if q["median_lead_min"] is None else f"{q['median_lead_min']:.0f}"
        share = "—" if q["share_warned_30min"] is None else f"{q['share_warned_30min']:.0%}"
        rates = [q["false_per_monitor_day"][k] for k in ("quiet", "step")]
        lines.append(
            f"| {kind} | {q['breaches']} | {lead} | {share} | "
            + " | ".join("—" if f is None else f"{f:.3f} ({f * 7:.2f})" for f in rates)
            + " |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--horizon-h", type=float, default=4.0)
    parser.add_argument("--window-min", type=float, default=120.0)
    parser.add_argument("--first-seed", type=int, default=FIRST_SEED)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    r = measure(
        seeds=args.seeds, horizon_h=args.horizon_h, window_min=args.window_min, first_seed=args.first_seed
    )
    r["ingest"] = ingest_cost()
    if args.json:
        print(json.dumps(asdict_safe(r), indent=1))
        return
    print("\n".join(render(r)))
    c = r["ingest"]
    print(
        f"\nin ingest (SQLite, {c['messages']:,} messages in {c['batches']:,} batches): {c['fits']} fits, "
        f"{c['ms_per_fit']:.1f} ms per fit with its query, {c['rule_share']:.1%} of ingest time "
        f"({c['rule_ms_per_batch']:.2f} ms per batch)"
    )
    print(
        f"\n{r['fit_ms']['fits']:,} fits: median {r['fit_ms']['median']:.2f} ms, p99 {r['fit_ms']['p99']:.2f} ms; "
        f"{r['elapsed_s']:.0f} s; seeds {r['seeds']}, horizon {r['horizon_h']:g} h, window {r['window_min']:g} min"
    )


def asdict_safe(r: dict) -> dict:
    return json.loads(
        json.dumps(r, default=lambda o: asdict(o) if hasattr(o, "__dataclass_fields__") else str(o))
    )


if __name__ == "__main__":
    main()
