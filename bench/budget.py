"""The performance budget: run every benchmark once and write the figures into docs/performance.md.

    uv run --extra postgres python bench/budget.py [--pg-url ADMIN_URL] [--quick]

Runs, on this machine, in one go:

1. ingest throughput against the raw broker ceiling, same broker, same run (``bench/ingest.py``);
2. publish → excursion latency p50/p99 under background load (``bench/latency.py``), and
   publish → alarm delivered at a local webhook under the same load (``bench/alarm.py``);
3. 1, 2 and 4 ingester processes on PostgreSQL, on one shared subscription and routed by
   room: rate, scaling factor, each worker's peak memory, how busy the cores were
   (``bench/scale.py``);
4. the annual report of a site-year: JSON, HTML and PDF (``bench/report.py``);
5. the breach forecast: lead time of ``predicted`` warnings before real breaches, false
   warnings per monitor-day on unchanged data, and its cost in ingest (``bench/prediction.py``).

Without ``--pg-url`` a throwaway PostgreSQL cluster is started on loopback and removed after.
The generated part of docs/performance.md (between the ``budget`` markers) is replaced; the
hand-written analysis around it is kept. ``--quick`` shrinks every run (a smoke test of the
harness; its figures are not written unless ``--write`` is given too).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import alarm, latency, prediction, report, scale  # noqa: E402
from bench.common import FACILITY  # noqa: E402
from bench.ingest import make_messages, throughput  # noqa: E402
from bench.pgcluster import server_version, throwaway_cluster  # noqa: E402
from tracker.wire.broker import LocalBroker  # noqa: E402

DOC = ROOT / "docs" / "performance.md"
RESULTS = ROOT / "bench" / "results" / "budget.json"
BEGIN, END = "<!-- budget:begin -->", "<!-- budget:end -->"


def _version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except OSError:
        return "not found"
    return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr) else "?"


def machine() -> dict[str, str]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    import sqlite3

    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": _version(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"]),
        "cpu": f"{cpu} × {len(re.findall(r'^processor', Path('/proc/cpuinfo').read_text(), re.M))}",
        "python": platform.python_version(),
        "mosquitto": _version(["mosquitto", "-h"]),
        "sqlite": sqlite3.sqlite_version,
        "postgresql": server_version(),
    }


def run_all(pg_url: str, *, quick: bool) -> dict:
    readings = 20_000 if quick else 100_000
    results: dict = {"machine": machine(), "quick": quick, "readings": readings}
    t = time.perf_counter()
    messages = make_messages(readings)
    print(f"[budget] {len(messages):,} messages of {FACILITY.name} generated", flush=True)
    with (
        tempfile.TemporaryDirectory(prefix="gmp-budget-") as tmp,
        LocalBroker(data_dir=Path(tmp) / "broker", persistence=False) as broker,
    ):
        rows = throughput(broker.url, messages, Path(tmp), repeat=1 if quick else 3)
    results["throughput"] = [asdict(r) | {"ratio": r.ratio} for r in rows]
    print(f"[budget] throughput done ({time.perf_counter() - t:.0f} s)", flush=True)
    lat = latency.measure(duration=15 if quick else 90, rate=1500)
    results["latency"] = asdict(lat)
    print(f"[budget] latency done ({time.perf_counter() - t:.0f} s)", flush=True)
    results["alarm"] = asdict(alarm.measure(duration=15 if quick else 60, rate=1500))
    print(f"[budget] alarm delivery done ({time.perf_counter() - t:.0f} s)", flush=True)
    ceil, runs = scale.measure(pg_url, readings=readings, workers=(1, 2) if quick else (1, 2, 4))
    results["scale"] = {"ceiling": ceil, "runs": [asdict(r) for r in runs]}
    print(f"[budget] scale-out done ({time.perf_counter() - t:.0f} s)", flush=True)
    with tempfile.TemporaryDirectory(prefix="gmp-budget-report-") as tmp:
        rep = report.measure(pdf=True, workdir=Path(tmp))
    results["report"] = asdict(rep) | {"total_s": rep.total_s}
    print(f"[budget] report done ({time.perf_counter() - t:.0f} s)", flush=True)
    results["prediction"] = prediction.measure(seeds=2 if quick else 5)
    results["prediction"]["ingest"] = prediction.ingest_cost(hours=2 if quick else 6)
    results["prediction"].pop("cases")
    print(f"[budget] prediction done ({time.perf_counter() - t:.0f} s)", flush=True)
    results["elapsed_s"] = time.perf_counter() - t
    return results


def render(r: dict) -> str:
    """The generated section of docs/performance.md."""
    m = r["machine"]
    lines = [
        BEGIN,
        "## The budget — `uv run --extra postgres python bench/budget.py`",
        "",
        f"Generated {m['date']} at commit `{m['commit']}` in {r['elapsed_s'] / 60:.0f} min on "
        f"{m['cpu']}; Python {m['python']}, {m['mosquitto']}, SQLite {m['sqlite']}, "
        f"{m['postgresql']}. {r['readings']:,} reading messages of the sample centre per run. "
        "Broker, publisher, ingesters and database all share this machine.",
        "",
        "### Ingest vs the raw broker ceiling (same broker, same run; SQLite)",
        "",
        "| mode | ceiling: counting paho subscriber (msg/s) | ingester (readings/s) | ratio | range |",
        "|---|---|---|---|---|",
    ]
    for t in r["throughput"]:
        lines.append(
            f"| {t['mode']} | {t['ceiling']:,.0f} | {t['rate']:,.0f} | {t['ratio']:.2f} | "
            f"{t['low']:.2f}–{t['high']:.2f} |"
        )
    lat = r["latency"]
    lines += [
        "",
        "### Publish → excursion latency (SQLite)",
        "",
        f"{lat['samples']} of {lat['triggers']} pressure inversions became excursions while "
        f"background traffic ran at {lat['background_rate']:,.0f} msg/s (DESIGN §7's provincial "
        "platform: 1,500/s). Latency = the excursion's commit − the trigger's publish:",
        "",
        f"**p50 {lat['p50_ms']:.0f} ms · p90 {lat['p90_ms']:.0f} ms · p99 {lat['p99_ms']:.0f} ms** "
        f"(max {lat['max_ms']:.0f} ms). The ingester's linger (50 ms) is part of it.",
        "",
        *alarm_lines(r.get("alarm")),
        "### Scale-out on PostgreSQL: several ingesters, routed two ways",
        "",
        f"Raw broker ceiling in the same run: {r['scale']['ceiling']:,.0f} msg/s. Routing "
        "*share*: every ingester on one `$share` subscription (mosquitto deals messages round "
        "robin, so each monitor's readings reach every ingester); *rooms*: each ingester "
        "subscribed to the rooms dealt to it (`--subscription` per room), so each monitor "
        "stays on one ingester, as a broker routing by topic (EMQX `hash_topic`) would keep it.",
        "",
        "| ingesters | routing | readings/s | scaling factor | of ceiling | stored | peak RSS per "
        "ingester (MiB) | cores busy (ingesters' part) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    runs = r["scale"]["runs"]
    for run in runs:
        lines.append(
            f"| {run['workers']} | {run.get('routing', 'share') if run['workers'] > 1 else '—'} "
            f"| {run['rate']:,.0f} | ×{run['rate'] / runs[0]['rate']:.2f} "
            f"| {run['rate'] / r['scale']['ceiling']:.2f} | {run['stored']:,} of "
            f"{run['published']:,} | "
            + ", ".join(f"{x:.0f}" for x in run["peak_rss_mib"])
            + f" | {run.get('cpu_busy', 0):.0%} ({run.get('ingester_cpu_share', 0):.0%}) |"
        )
    rep = r["report"]
    lines += [
        "",
        "### Annual report of a site-year (SQLite)",
        "",
        f"{rep['monitors']} monitors, {rep['rollup_rows']:,} hourly rollup rows standing for "
        f"{rep['readings']:,} readings: JSON {rep['json_s']:.1f} s · HTML {rep['html_s']:.1f} s · "
        f"PDF {rep['pdf_s']:.1f} s · **total {rep['total_s']:.1f} s**.",
        "",
    ]
    pred = r.get("prediction")
    if pred:
        c = pred["ingest"]
        lines += [
            "",
            "### Breach forecast (`bench/prediction.py`, docs/trending.md)",
            "",
            f"Simulated T-SITE scenarios (`trending-drift`, `trending-step`, `trending-quiet`), seeds "
            f"{pred['first_seed']}–{pred['first_seed'] + pred['seeds'] - 1} (not those the constants were "
            f"chosen on); horizon {pred['horizon_h']:g} h, fitted on {pred['window_min']:g} min, one fit "
            f"per series every {pred['every_s']:g} s. Lead time = breach start − warning start.",
            "",
            *prediction.render(pred),
            "",
            f"Cost: {pred['fit_ms']['median']:.2f} ms per fit (p99 {pred['fit_ms']['p99']:.2f} ms) on its own; "
            f"in ingest on SQLite {c['ms_per_fit']:.1f} ms per fit with its query, "
            f"{c['rule_share']:.0%} of the time of {c['batches']:,} batches that each carry minutes of data "
            "(live batches carry 50 ms: the cost per second is fits × cost, i.e. series / 300 s × cost).",
        ]
    lines += [
        "",
        "Raw figures: [`bench/results/budget.json`](../bench/results/budget.json).",
        END,
    ]
    return "\n".join(lines)


def alarm_lines(a: dict | None) -> list[str]:
    """The alarm-delivery paragraph (absent from results older than issue 16)."""
    if a is None:
        return []
    return [
        "### Publish → alarm delivered at a webhook (SQLite; goal p99 < 2 s)",
        "",
        f"{a['samples']} of {a['triggers']} action excursions notified through a `[[notify]]` rule "
        f"(Apprise `json://` to an HTTP sink on 127.0.0.1) while background traffic ran at "
        f"{a['background_rate']:,.0f} msg/s; the dispatcher a process of its own, polling every "
        f"{a['poll_s']:g} s. Latency = arrival at the sink − the trigger's publish:",
        "",
        f"**p50 {a['p50_ms']:.0f} ms · p90 {a['p90_ms']:.0f} ms · p99 {a['p99_ms']:.0f} ms** "
        f"(max {a['max_ms']:.0f} ms).",
        "",
    ]


def write(results: dict) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n")
    doc = DOC.read_text()
    section = render(results)
    if BEGIN in doc:
        doc = doc[: doc.index(BEGIN)] + section + doc[doc.index(END) + len(END) :]
    else:
        head, _, rest = doc.partition("\n\n")
        doc = f"{head}\n\n{section}\n\n{rest}"
    DOC.write_text(doc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pg-url", help="admin URL of a PostgreSQL cluster (default: throwaway)")
    parser.add_argument("--quick", action="store_true", help="small runs: a smoke test")
    parser.add_argument("--write", action="store_true", help="with --quick: write anyway")
    args = parser.parse_args()
    with contextlib.nullcontext(args.pg_url) if args.pg_url else throwaway_cluster() as pg_url:
        results = run_all(pg_url, quick=args.quick)
    print(render(results))
    if not args.quick or args.write:
        write(results)
        print(f"\nwritten: {DOC.relative_to(ROOT)}, {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
