"""The sample centre's scripted day, simulated over real mosquitto and ingested end to end:
exactly the excursions the scenario declares, every reading once, every fault quarantined."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta

import pytest
from sqlalchemy import Engine

from simulators.facility import load_facility as load_sim_facility
from simulators.publisher import dry_run
from simulators.scenario import load_scenario
from tests.mqtt_helpers import running_ingester, wait_until
from tracker.cli.demo import FACILITY, SCENARIO, schedule_operations
from tracker.core.db import unit_of_work
from tracker.core.timeutil import parse_instant
from tracker.facility.file import read_facility_file
from tracker.facility.load import load_facility
from tracker.monitoring.excursions import list_excursions
from tracker.monitoring.stats import ingest_stats
from tracker.wire.broker import LocalBroker


@pytest.mark.slow
def test_day_in_the_life(engine: Engine, broker: LocalBroker) -> None:
    sim_facility = load_sim_facility(FACILITY)
    scenario = load_scenario(SCENARIO, sim_facility)
    assert scenario.start is not None
    with unit_of_work(engine) as s:
        load_facility(s, read_facility_file(FACILITY), actor="test")
    schedule_operations(engine, scenario.start)

    result = dry_run(sim_facility, scenario, seed=1, start=scenario.start, duration=scenario.duration)
    with running_ingester(engine, broker, client_id="day-ingest") as ingester:
        # the publisher runs in its own process (the second core), as real hardware would
        subprocess.run(
            [
                sys.executable,
                "-m",
                "simulators",
                "--facility",
                str(FACILITY),
                "--scenario",
                str(SCENARIO),
                "--mqtt",
                broker.url,
                "--speed",
                "0",
                "--seed",
                "1",
            ],
            check=True,
            capture_output=True,
            timeout=600,
        )
        wait_until(
            lambda: ingester.stats.received >= result.published,
            timeout=300,
            what=f"{result.published} messages ingested",
        )

    with unit_of_work(engine) as s:
        stats = ingest_stats(s)
        excursions = list_excursions(s, type_="limit")
        gaps = list_excursions(s, type_="data_gap", include_superseded=True)
    assert stats["readings"] == result.total_readings
    assert stats["duplicates"] == result.duplicates
    assert stats["quarantine_by_reason"] == dict(result.malformed)

    interval = {m.code: m.interval_s for m in sim_facility.monitors}
    unmatched = list(excursions)
    for exp in result.expected:
        match = next(
            (
                e
                for e in unmatched
                if (e["monitor"], e["channel"], e["level"], e["state"])
                == (exp.monitor, exp.channel, exp.level, exp.state)
                and exp.start
                <= parse_instant(e["started_at"])
                <= exp.start + timedelta(seconds=interval[exp.monitor])
            ),
            None,
        )
        assert match is not None, f"expected excursion not found: {exp}\nfound: {excursions}"
        unmatched.remove(match)
        assert match["ended_at"] is not None
    assert unmatched == [], f"unexpected excursions: {unmatched}"

    # data gaps: the 30-minute outage was backfilled completely (its gap superseded); at the
    # end of the run every monitor publishes a retained `offline`, so each has an open gap
    # starting at its last reading
    open_gaps = {g["monitor"] for g in gaps if g["status"] == "open"}
    assert open_gaps == {m.code for m in sim_facility.monitors}
    assert [g for g in gaps if g["status"] == "closed"] == []
    assert any(g["status"] == "superseded" for g in gaps)
