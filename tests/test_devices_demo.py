"""The demo runs one monitor through each device path by itself: a simulated Sparkplug edge node
(B01-SPB) and a simulated Modbus counter (B01-MB), with the host and the poller it starts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sqlmodel import func, select

from tracker.core.db import get_engine, unit_of_work
from tracker.facility.models import Monitor
from tracker.monitoring.excursions import list_excursions
from tracker.monitoring.readings import RawMessage

ROOT = Path(__file__).resolve().parents[1]


def test_demo_feeds_a_monitor_through_each_device_path(tmp_path: Path) -> None:
    env = {**os.environ, "TRACKER_LANG": "en", "COLUMNS": "160"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tracker.cli",
            "demo",
            "--speed",
            "600",
            "--duration",
            "15s",
            "--data-dir",
            str(tmp_path),
        ],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    with unit_of_work(get_engine(f"sqlite:///{tmp_path / 'demo' / 'demo.db'}")) as s:
        counts = dict(
            s.exec(
                select(Monitor.code, func.count())
                .join(RawMessage, RawMessage.monitor_id == Monitor.id)
                .where(Monitor.code.in_(["B01-SPB", "B01-MB"]))
                .group_by(Monitor.code)
            ).all()
        )
        topics = set(
            s.exec(
                select(RawMessage.topic).join(Monitor).where(Monitor.code.in_(["B01-SPB", "B01-MB"]))
            ).all()
        )
        limits = {e["monitor"] for e in list_excursions(s, type_="limit")}
    assert counts.get("B01-SPB", 0) >= 20, counts
    assert counts.get("B01-MB", 0) >= 20, counts
    assert any(t.startswith("spBv1.0/Demo/DDATA/GW1/PC1") for t in topics)
    assert any(t.startswith("modbus://127.0.0.1:") for t in topics)
    assert {"B01-SPB", "B01-MB"} <= limits  # the simulated bursts open an excursion through each path
