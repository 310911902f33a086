"""The test facility with a viable sampling plan, loaded under change control (QA approves)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine

from tests.factories import as_
from tracker.core.db import unit_of_work
from tracker.facility.file import parse_facility
from tracker.facility.load import load_facility

MIN_FACILITY = Path(__file__).parent / "data" / "facility-min.toml"

PLAN = """
[viable]
media = "TSA 胰酪大豆胨琼脂"
incubation = [{ temperature = "20-25 °C", hours = 72 }, { temperature = "30-35 °C", hours = 48 }]
reading_grace_h = 4

[[viable_locations]]
code = "V-BSC-1"
room = "T-B1-BSC"
position = [0.6, 0.4]
methods = ["air", "settle", "contact", "glove_l", "glove_r"]
frequency = "session"
air_volume_l = 1000
exposure_min = 240

[[viable_locations]]
code = "V-B1-1"
room = "T-B1"
position = [2.0, 3.5]
methods = ["air", "settle", "contact"]
frequency = "session"
air_volume_l = 1000
exposure_min = 240

[[viable_locations]]
code = "V-C1-1"
room = "T-C1"
methods = ["settle", "contact"]
frequency = "weekly"
exposure_min = 240
"""


def facility_text(extra: str = "") -> str:
    return MIN_FACILITY.read_text(encoding="utf-8") + PLAN + extra


def load_plan(engine: Engine, extra: str = "") -> None:
    """The plan is an evaluation change of a loaded facility: QA approves it with an e-signature."""
    with unit_of_work(engine) as s:
        load_facility(s, parse_facility(facility_text(extra)), actor="admin", approver=as_(engine, "qa1"))
