"""The command line: JSON read-outs in DESIGN §9 shapes, clear errors, the demo end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine

from tests.conftest import MIN_FACILITY
from tests.factories import PASSWORD, T0, make_people, particles, topic
from tracker.core.db import get_engine, unit_of_work
from tracker.ingest.processor import BatchProcessor, InboundMessage
from tracker.monitoring.intake import Intake
from tracker.monitoring.stats import ingest_stats

ROOT = Path(__file__).resolve().parent.parent


def tracker(
    *args: str, db_url: str, lang: str = "en", stdin: str = "", password: str | None = None
) -> subprocess.CompletedProcess:
    """``tracker ARGS``; ``password`` goes in TRACKER_PASSWORD, ``stdin`` feeds --password-stdin."""
    env = {**os.environ, "TRACKER_DATABASE_URL": db_url, "TRACKER_LANG": lang, "COLUMNS": "200"}
    env.pop("TRACKER_PASSWORD", None)
    if password is not None:
        env["TRACKER_PASSWORD"] = password
    return subprocess.run(
        [sys.executable, "-m", "tracker.cli", *args],
        env=env,
        cwd=ROOT,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def populated(facility_engine: Engine, db_url: str) -> str:
    received = T0 + timedelta(days=1)
    batch = [
        InboundMessage(
            topic("T-B1", "T-B1-PC"),
            particles(seq=m + 1, ts=T0 + timedelta(minutes=m), c05=200 if 3 <= m < 6 else 10),
            received,
        )
        for m in range(10)
    ]
    batch += [
        InboundMessage(topic("T-B1", "T-B1-PC"), b"{broken", received),
        InboundMessage(topic("T-B1", "T-B1-PC"), batch[0].payload, received),
    ]
    with unit_of_work(facility_engine) as s:
        BatchProcessor(Intake()).process(s, batch)
    return db_url


def test_json_readouts_have_the_documented_shapes(populated: str) -> None:
    ex = json.loads(tracker("excursions", "--json", db_url=populated).stdout)
    assert len(ex) == 1
    assert {
        "id",
        "type",
        "monitor",
        "room",
        "kind",
        "channel",
        "level",
        "state",
        "started_at",
        "ended_at",
        "peak",
        "limit",
        "readings",
    } <= set(ex[0])
    assert (ex[0]["type"], ex[0]["kind"], ex[0]["channel"], ex[0]["level"]) == (
        "limit",
        "particles",
        "0.5",
        "action",
    )
    assert ex[0]["started_at"] == "2026-11-20T00:03:00Z"
    q = json.loads(tracker("quarantine", "--json", db_url=populated).stdout)
    assert [(r["reason"], r["payload"], r["topic"]) for r in q] == [
        ("bad_json", "{broken", "gmp/T-SITE/T-B1/T-B1-PC")
    ]
    assert {"id", "received_at", "topic", "reason", "detail", "payload"} == set(q[0])
    stats = json.loads(tracker("stats", "--json", db_url=populated).stdout)
    assert stats["readings"] == 10
    assert stats["duplicates"] == 1
    assert stats["quarantined"] == 1
    assert stats["quarantine_by_reason"] == {"bad_json": 1}
    assert stats["excursions"] == {"alert": 0, "action": 1}


def test_human_tables_in_both_languages(populated: str) -> None:
    zh = tracker("excursions", db_url=populated, lang="zh-CN").stdout
    en = tracker("excursions", db_url=populated, lang="en").stdout
    assert "纠偏" in zh
    assert "静态" in zh
    assert "2026-11-20 08:03:00 +0800" in zh
    assert "action" in en
    assert "at rest" in en


def test_facility_errors_are_clear_and_exit_nonzero(tmp_path: Path, db_url: str) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(MIN_FACILITY.read_text().replace('reference = "T-C1"\n', ""))
    result = tracker("facility", "load", str(bad), db_url=db_url)
    assert result.returncode == 2
    assert "T-B1-DP" in result.stderr
    assert "needs 'reference'" in result.stderr


def test_room_state_and_audit_verify(facility_engine: Engine, db_url: str) -> None:
    make_people(facility_engine)
    anonymous = tracker("room", "state", "T-B1", "in_operation", db_url=db_url)
    assert anonymous.returncode == 2
    assert "--as USER" in anonymous.stderr
    ok = tracker(
        "room",
        "state",
        "T-B1",
        "in_operation",
        "--at",
        "2026-11-20T10:00:00+08:00",
        "--reason",
        "batch B-001",
        "--as",
        "op1",
        "--password-stdin",
        db_url=db_url,
        stdin=PASSWORD + "\n",
    )
    assert ok.returncode == 0, ok.stderr
    bad = tracker("room", "state", "T-B1", "busy", "--as", "op1", db_url=db_url, password=PASSWORD)
    assert bad.returncode == 2
    assert "in_operation" in bad.stderr
    verify = tracker("audit", "verify", db_url=db_url)
    assert verify.returncode == 0
    assert "intact" in verify.stdout


def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    """The README's demo, bounded: readings flow and the scenario's first excursions appear."""
    env = {**os.environ, "TRACKER_LANG": "en", "COLUMNS": "160"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tracker.cli",
            "demo",
            "--speed",
            "1800",
            "--duration",
            "20s",
            "--data-dir",
            str(tmp_path),
            "--web-port",
            "0",
        ],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "GMP cleanroom monitoring" in result.stdout
    with unit_of_work(get_engine(f"sqlite:///{tmp_path / 'demo' / 'demo.db'}")) as s:
        stats = ingest_stats(s)
    assert stats["readings"] > 10_000
    assert stats["excursions"]["action"] >= 1  # 20 s at ×1800 covers the 2 h burst in B01


def test_retroactive_inhibit_reevaluates_and_lists(populated: str, facility_engine: Engine) -> None:
    make_people(facility_engine)
    op = tracker(
        "inhibit",
        "add",
        "--monitor",
        "T-B1-PC",
        "--from",
        "2026-11-20T00:02:00Z",
        "--to",
        "2026-11-20T00:07:00Z",
        "--reason",
        "x",
        "--as",
        "op1",
        db_url=populated,
        password=PASSWORD,
    )
    assert op.returncode == 2
    assert "adding an inhibit needs the role qa" in op.stderr
    added = tracker(
        "inhibit",
        "add",
        "--monitor",
        "T-B1-PC",
        "--from",
        "2026-11-20T00:02:00Z",
        "--to",
        "2026-11-20T00:07:00Z",
        "--reason",
        "WO-7 probe swap",
        "--as",
        "qa1",
        db_url=populated,
        password=PASSWORD,
    )
    assert added.returncode == 0, added.stderr
    assert "Re-evaluated" in added.stdout
    assert json.loads(tracker("excursions", "--json", "--type", "limit", db_url=populated).stdout) == []
    listed = json.loads(tracker("inhibit", "list", "--all", "--json", db_url=populated).stdout)
    assert [(i["monitor"], i["reason"], i["created_by"]) for i in listed] == [
        ("T-B1-PC", "WO-7 probe swap", "qa1")
    ]
    assert json.loads(tracker("inhibit", "list", "--json", db_url=populated).stdout) == []
    refused = tracker(
        "inhibit",
        "add",
        "--room",
        "T-B1",
        "--from",
        "2026-11-20T00:00:00Z",
        "--to",
        "2026-11-19T00:00:00Z",
        "--reason",
        "x",
        "--as",
        "qa1",
        db_url=populated,
        password=PASSWORD,
    )
    assert refused.returncode == 2
    assert "end after it starts" in refused.stderr
