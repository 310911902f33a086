"""What every benchmark shares: the sample centre and a fresh database built by the migrations."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine

from tracker.core.db import get_engine, unit_of_work
from tracker.core.migrate import upgrade
from tracker.facility.file import read_facility_file
from tracker.facility.load import load_facility

ROOT = Path(__file__).resolve().parent.parent
FACILITY = ROOT / "simulators" / "data" / "nn-cpc.toml"


def fresh_database(url: str) -> Engine:
    """Migrate an empty database at ``url`` and load the sample centre into it."""
    upgrade(url)
    engine = get_engine(url)
    with unit_of_work(engine) as s:
        load_facility(s, read_facility_file(FACILITY), actor="bench")
    return engine
