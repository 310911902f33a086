"""How long the annual report takes for one site-year at realistic scale.

    uv run python bench/report.py [--year 2025] [--keep DIR] [--pdf]

Builds the sample centre (``simulators/data/nn-cpc.toml``: 57 monitors, 38 of them every 10 s,
19 particle counters every 60 s with two channels) and writes **the hourly rollups of a whole
year** as ingest would have left them — one row per monitor × channel × hour × room state (in
operation 01:00–09:00 UTC, the local working day, at rest otherwise), with counts,
readings at alert/action, min/max/sum and the fixed-bin histogram of ``tracker.monitoring.rollups`` — for
≈ 140 million readings. The rollups are synthesised with numpy, not aggregated from 140 million
raw readings (that would take hours to generate and is what ingest does incrementally); the
report never reads raw readings anyway. On top: a few hundred excursions, deviations with CAPA
and batches with steps. Then it times the report's data assembly (JSON), HTML and, with
``--pdf``, the PDF. A benchmark, not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from sqlmodel import select  # noqa: E402

from tracker.core.db import get_engine, time_param, unit_of_work  # noqa: E402
from tracker.core.migrate import upgrade  # noqa: E402
from tracker.facility.basis import basis_id  # noqa: E402
from tracker.facility.file import read_facility_file  # noqa: E402
from tracker.facility.limits import load_limit_set  # noqa: E402
from tracker.facility.load import load_facility  # noqa: E402
from tracker.facility.models import Monitor, Room, get_site  # noqa: E402
from tracker.monitoring.excursions import Excursion  # noqa: E402
from tracker.monitoring.rollups import COLUMNS, bin_of  # noqa: E402
from tracker.quality.batches.models import Batch, ProcessStep  # noqa: E402
from tracker.quality.deviations import CapaAction, Deviation  # noqa: E402
from tracker.reports.annual.document import build_annual_report, year_period  # noqa: E402

FACILITY = ROOT / "simulators" / "data" / "nn-cpc.toml"
NORMAL = {"pressure": 15.0, "temperature": 21.0, "humidity": 50.0}


def synthesise(url: str, year: int, seed: int = 1) -> dict:
    rng = np.random.default_rng(seed)
    engine = get_engine(url)
    with unit_of_work(engine) as s:
        load_facility(
            s, read_facility_file(FACILITY), actor="bench", now=datetime(year - 1, 11, 1, tzinfo=UTC)
        )
    with unit_of_work(engine) as s:
        site = get_site(s)
        period = year_period(site.timezone, year)
        monitors = list(s.exec(select(Monitor).where(Monitor.site_id == site.id).order_by(Monitor.id)))
        rooms = list(s.exec(select(Room).where(Room.site_id == site.id)))
        hours = int((period.end - period.start).total_seconds() // 3600)
        to_db = time_param(s.connection().dialect.name)
        hour_text = [to_db(period.start + timedelta(hours=h)) for h in range(hours)]
        states = [
            "in_operation" if 1 <= (period.start + timedelta(hours=h)).hour < 9 else "at_rest"
            for h in range(hours)
        ]
        readings = rows_written = 0
        connection = s.connection()
        sql = f"INSERT INTO rollup_hourly ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
        for mon in monitors:
            per_hour = int(3600 // mon.interval_s)
            missing = rng.random(hours) < 0.002  # ≈ 0.2 % of hours lost
            for channel in mon.channels.split(",") if mon.channels else [""]:
                n_alert = (rng.random(hours) < 0.003) * rng.integers(1, 6, hours)
                n_action = (rng.random(hours) < 0.0005) * rng.integers(1, 3, hours)
                rows = []
                if mon.kind == "particles":
                    scale = 2000.0 if channel == "0.5" else 20.0
                    lo = rng.gamma(2.0, scale / 4, hours)
                    hi = lo * rng.uniform(2, 6, hours)
                else:
                    lo = NORMAL[mon.kind] - rng.uniform(0.2, 1.5, hours)
                    hi = NORMAL[mon.kind] + rng.uniform(0.2, 1.5, hours)
                for h in range(hours):
                    if missing[h]:
                        continue
                    a, b = float(lo[h]), float(hi[h])
                    bins: dict[int, int] = {}
                    for v, n in ((a, per_hour // 2), ((a + b) / 2, per_hour - per_hour // 2 - 1), (b, 1)):
                        k = bin_of(mon.kind, v)
                        bins[k] = bins.get(k, 0) + n
                    rows.append(
                        (
                            mon.id,
                            channel,
                            hour_text[h],
                            states[h],
                            per_hour,
                            0,
                            int(n_alert[h]),
                            int(n_action[h]),
                            0,
                            a,
                            b,
                            a * (per_hour // 2) + (a + b) / 2 * (per_hour - per_hour // 2 - 1) + b,
                            json.dumps(dict(sorted(bins.items())), separators=(",", ":")),
                        )
                    )
                connection.exec_driver_sql(sql, rows)
                readings += per_hour * len(rows)
                rows_written += len(rows)

        ls = load_limit_set(site.limit_set)
        basis = basis_id(
            s, site_id=site.id, code=ls.code, version=ls.version, sha256=ls.sha256, revision=site.revision
        )
        span = (period.end - period.start).total_seconds()
        for i in range(400):
            mon = monitors[int(rng.integers(len(monitors)))]
            start = period.start + timedelta(seconds=float(rng.uniform(0, span - 7200)))
            s.add(
                Excursion(
                    type="limit" if i % 10 else "data_gap",
                    site_id=site.id,
                    monitor_id=mon.id,
                    room_id=mon.room_id,
                    kind=mon.kind,
                    channel=(mon.channels.split(",")[0] if mon.channels else ""),
                    level="action" if i % 4 == 0 else "alert",
                    state="in_operation",
                    status="closed",
                    direction="high",
                    started_at=start,
                    ended_at=start + timedelta(minutes=float(rng.uniform(1, 120))),
                    peak=1.0,
                    limit_value=0.5,
                    readings=5,
                    basis_id=basis,
                    created_at=start,
                    updated_at=start,
                )
            )
        categories = ("environment", "equipment", "process", "documentation", "data integrity")
        for i in range(40):
            opened = period.start + timedelta(days=float(rng.uniform(0, 360)))
            closed = opened + timedelta(days=float(rng.uniform(3, 60))) if i % 5 else None
            dev = Deviation(
                site_id=site.id,
                number=f"DEV-{year}-{i + 1:04d}",
                title=f"deviation {i}",
                classification=("critical", "major", "minor", "minor")[i % 4] if i else "major",
                category=categories[i % 5],
                description="bench",
                root_cause=f"cause {i % 7}",
                status="closed" if closed else "investigating",
                opened_at=opened,
                opened_by="bench",
                closed_at=closed,
                updated_at=opened,
            )
            s.add(dev)
            s.flush()
            s.add(
                CapaAction(
                    deviation_id=dev.id,
                    kind="corrective",
                    description="fix",
                    owner="bench",
                    due=(opened + timedelta(days=30)).date(),
                    status="done" if closed else "open",
                    created_by="bench",
                    created_at=opened,
                    done_at=closed,
                )
            )
        zones = [r for r in rooms if r.grade == "A"] or rooms
        for i in range(300):
            created = period.start + timedelta(days=float(rng.uniform(0, 364)))
            batch = Batch(
                site_id=site.id,
                number=f"CT-{year}-{i + 1:04d}",
                product=("CAR-T", "MSC", "TIL")[i % 3],
                donor_id=f"D-{i:04d}",
                status="completed",
                created_at=created,
                created_by="bench",
                completed_at=created + timedelta(hours=8),
                updated_at=created,
            )
            s.add(batch)
            s.flush()
            zone = zones[i % len(zones)]
            for k in range(3):
                s.add(
                    ProcessStep(
                        batch_id=batch.id,
                        name=f"step {k}",
                        room_id=zone.id,
                        start=created + timedelta(hours=2 * k),
                        end=created + timedelta(hours=2 * k + 1),
                        open_processing=True,
                        operator="bench",
                        recorded_at=created,
                    )
                )
    return {
        "monitors": len(monitors),
        "rollup_rows": rows_written,
        "readings": readings,
        "period": period,
        "site": site.code,
    }


@dataclass
class ReportTiming:
    rollup_rows: int
    readings: int
    monitors: int
    json_s: float
    html_s: float
    pdf_s: float | None
    steps: list[tuple[str, float]]

    @property
    def total_s(self) -> float:
        return self.json_s + self.html_s + (self.pdf_s or 0.0)


def measure(
    *, year: int = 2025, pdf: bool = True, workdir: Path | None = None, db_url: str | None = None
) -> ReportTiming:
    """Synthesise a site-year into an empty database, then time JSON, HTML and the PDF."""
    workdir = workdir or Path(tempfile.mkdtemp(prefix="bench-report-"))
    workdir.mkdir(parents=True, exist_ok=True)
    if db_url is None:
        db = workdir / "report.db"
        db.unlink(missing_ok=True)
        db_url = f"sqlite:///{db}"
    upgrade(db_url)
    info = synthesise(db_url, year)
    now = datetime.combine(date(year + 1, 2, 1), datetime.min.time(), tzinfo=UTC)
    engine = get_engine(db_url)
    marks: list[tuple[str, float]] = []
    t0 = time.perf_counter()
    with unit_of_work(engine) as s:
        report = build_annual_report(
            s,
            site=get_site(s),
            period=info["period"],
            now=now,
            progress=lambda name: marks.append((name, time.perf_counter())),
        )
    t_json = time.perf_counter() - t0
    (workdir / "report.json").write_text(json.dumps(report, ensure_ascii=False, indent=1))
    ends = [t for _, t in marks[1:]] + [t0 + t_json]
    steps = [(name, end - t) for (name, t), end in zip(marks, ends, strict=True)]
    from tracker.reports.render import html_to_pdf, render_html

    t0 = time.perf_counter()
    html = render_html(report, lang="zh-CN")
    t_html = time.perf_counter() - t0
    (workdir / "report.html").write_text(html)
    t_pdf = None
    if pdf:
        t0 = time.perf_counter()
        (workdir / "report.pdf").write_bytes(html_to_pdf(html))
        t_pdf = time.perf_counter() - t0
    return ReportTiming(
        rollup_rows=info["rollup_rows"],
        readings=info["readings"],
        monitors=info["monitors"],
        json_s=t_json,
        html_s=t_html,
        pdf_s=t_pdf,
        steps=steps,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--year", type=int, default=2025)
    parser.add_argument("--keep", type=Path, help="directory to keep the database and outputs in")
    parser.add_argument("--pdf", action="store_true", help="also time the PDF (WeasyPrint)")
    parser.add_argument("--db-url", help="an empty database (default: SQLite in the work dir)")
    args = parser.parse_args()
    r = measure(year=args.year, pdf=args.pdf, workdir=args.keep, db_url=args.db_url)
    print(
        f"site-year: {r.monitors} monitors, {r.rollup_rows:,} rollup rows standing for "
        f"{r.readings:,} readings"
    )
    print(
        f"report data (JSON): {r.json_s:.2f} s  ["
        + ", ".join(f"{name} {t:.2f} s" for name, t in r.steps)
        + "]"
    )
    print(f"HTML with charts: {r.html_s:.2f} s")
    if r.pdf_s is not None:
        print(f"PDF: {r.pdf_s:.2f} s")
    print(f"total: {r.total_s:.2f} s (goal < 60 s)")


if __name__ == "__main__":
    main()
