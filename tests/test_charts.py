"""Charts keep their settings to themselves: the web trend chart and the report charts each
draw with their own fonts and sizes whatever was drawn before, in any thread, and leave
``matplotlib.rcParams`` as they found it (tracker.core.fonts.chart_style; no pyplot, no
``matplotlib.use``).

Each order runs in a fresh interpreter, where matplotlib's state is pristine: the chart drawn
first there is the reference for the same chart drawn after the other family.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

from sqlalchemy import Engine

from tests.factories import T0, particles, topic
from tracker.core.db import unit_of_work
from tracker.core.fonts import CJK_FONTS
from tracker.ingest.processor import BatchProcessor, InboundMessage
from tracker.monitoring.intake import Intake

ROOT = Path(__file__).resolve().parent.parent

DRAW = r"""
import json, sys
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

import matplotlib
from sqlmodel import Session, select

from tracker.core.db import get_engine
from tracker.facility.models import Monitor

db_url, order = sys.argv[1], sys.argv[2].split(",")
T0 = datetime.fromisoformat(sys.argv[3])
MONTHS = [f"2026-{m:02d}" for m in range(1, 13)]


def report() -> dict:
    from tracker.reports import charts

    return {
        "trend": charts.particle_trend(
            [{"monitor": "B01-PC1", "states": {
                "at_rest": {"monthly_p95": [1200, None, 3000] + [10] * 9,
                            "limits": {"action_high": 3520, "alert_high": 1000}},
                "in_operation": {"monthly_p95": [None] * 12, "limits": {"action_high": 352000}}}}],
            MONTHS, title="悬浮粒子 P95 趋势", state_titles={"at_rest": "静态", "in_operation": "动态"},
            limit_labels={"action_high": "纠偏限度", "alert_high": "警戒限度"}),
        "heatmap": charts.heatmap(["B01", "C01"], MONTHS, [[1] * 12, [0, 3] + [0] * 10], title="超标热图"),
        "pareto": charts.pareto(["环境", "设备"], [5, 2], title="偏差帕累托", count_label="数量"),
        "bars": charts.monthly_bars(MONTHS, list(range(12)), title="每月批次", label="批次"),
    }


def web() -> dict:
    from tracker.web.charts import trend_svg

    labels = {"alert": "警戒", "action": "纠偏", "at_rest": "静态", "in_operation": "动态",
              "particles": "悬浮粒子", "readings": "读数"}
    with Session(get_engine(db_url)) as s:
        mon = s.exec(select(Monitor).where(Monitor.code == "T-B1-PC")).one()
        return {"web": trend_svg(s, mon, "0.5", T0, T0 + timedelta(hours=3), labels=labels)}


def settings() -> dict:
    return {k: repr(v) for k, v in dict(matplotlib.rcParams.copy()).items()}


DRAWERS = {"report": report, "web": web}
before = settings()
out = {"drawn": [], "changed": []}
for family in order:
    out["drawn"].append(DRAWERS[family]())
    out["changed"].append(sorted(k for k, v in settings().items() if before.get(k) != v))
# both families at once from a threadpool (as FastAPI's is while a report renders)
with ThreadPoolExecutor(6) as pool:
    out["threads"] = [f.result() for f in [pool.submit(DRAWERS[order[i % 2]]) for i in range(6)]]
out["changed_after_threads"] = sorted(k for k, v in settings().items() if before.get(k) != v)
out["pyplot"] = "matplotlib.pyplot" in sys.modules
json.dump(out, sys.stdout)
"""


def _normalise(svg: str) -> str:
    """The web chart's SVG without what differs between two drawings of the same chart: its
    date and its random element ids (``svg.hashsalt`` unset)."""
    svg = re.sub(r"<dc:date>.*?</dc:date>", "", svg)
    ids: dict[str, str] = {}
    return re.sub(r"\b[mp][0-9a-f]{10}\b", lambda m: ids.setdefault(m.group(0), f"id{len(ids)}"), svg)


def _draw(db_url: str, order: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", DRAW, db_url, order, T0.isoformat()],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def test_web_and_report_charts_keep_their_own_settings_in_any_order(
    facility_engine: Engine, db_url: str
) -> None:
    messages = [
        InboundMessage(
            topic=topic("T-B1", "T-B1-PC"),
            received_at=T0 + timedelta(days=1),
            dup=False,
            payload=particles(
                monitor="T-B1-PC", seq=m + 1, ts=T0 + timedelta(minutes=m), c05=50_000 if m % 60 < 5 else 1000
            ),
        )
        for m in range(180)
        if not 100 <= m < 120
    ]
    with unit_of_work(facility_engine) as s:
        BatchProcessor(Intake(close_after=3)).process(s, messages)

    web_first = _draw(db_url, "web,report")
    report_first = _draw(db_url, "report,web")
    for run in (web_first, report_first):
        assert run["changed"] == [[], []]  # rcParams as found after each chart
        assert run["changed_after_threads"] == []
        assert run["pyplot"] is False  # no global figure manager, no backend
    web_alone, report_after_web = web_first["drawn"]
    report_alone, web_after_report = report_first["drawn"]
    # the report's charts are deterministic (stable ids, no date): byte for byte
    assert report_after_web == report_alone
    # the web chart: same drawing, its own 10 pt text and spines (the report's 8 pt once leaked in)
    assert _normalise(web_after_report["web"]) == _normalise(web_alone["web"])
    assert "scale(0.1 -0.1)" in web_alone["web"]  # glyphs drawn at the web chart's size
    if any(Path(font).exists() for font in CJK_FONTS):  # Chinese labels drawn with the CJK face
        assert 'id="NotoSansCJK' in web_alone["web"]
        assert all('id="NotoSansCJK' in svg for svg in report_alone.values())
    for run, (first, second) in (
        (web_first, (web_alone, report_after_web)),
        (report_first, (report_alone, web_after_report)),
    ):
        for i, drawn in enumerate(run["threads"]):
            expected = (first, second)[i % 2]
            if "web" in drawn:
                assert _normalise(drawn["web"]) == _normalise(expected["web"])
            else:
                assert drawn == expected
