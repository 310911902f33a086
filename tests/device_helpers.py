"""Shared by the device-path tests: a facility with device mappings, the JSON path to compare with."""

from __future__ import annotations

import json
from datetime import datetime

from sqlalchemy import Engine, func
from sqlmodel import select

from tests.conftest import MIN_FACILITY
from tests.factories import particles, topic
from tracker.core.db import unit_of_work
from tracker.facility.models import Monitor
from tracker.ingest.processor import BatchProcessor, InboundMessage
from tracker.monitoring.excursions import list_excursions
from tracker.monitoring.intake import Intake
from tracker.monitoring.readings import RawMessage, Reading

DEVICES = """
[[sparkplug]]
monitor = "T-B1-PC"
group = "Plant1"
edge_node = "GW1"
device = "PC1"
metrics = { "0.5" = "Counts/0.5um", "5.0" = "Counts/5.0um" }
volume_metric = "Sample/Volume_L"
status_metric = "Status"

[[sparkplug]]
monitor = "T-B1-DP"
group = "Plant1"
edge_node = "GW1"
metric = "Room/DP_Pa"
unit = "Pa"

[[modbus]]
monitor = "T-C1-PC"
host = "127.0.0.1"
port = {port}
unit_id = 1
model = "lighthouse-remote"
channels = { "0.5" = 2, "5.0" = 4 }
poll_s = 1
"""


def facility_text(port: int = 5020) -> str:
    return MIN_FACILITY.read_text(encoding="utf-8") + DEVICES.replace("{port}", str(port))


def json_path_excursions(engine: Engine, monitor: str, room: str, samples: list[dict]) -> list[tuple]:
    """Feed ``samples`` as gmp.reading/1 JSON through the JSON path's processor; the excursions."""
    processor = BatchProcessor(Intake())
    messages = [
        InboundMessage(
            topic=topic(room, monitor),
            payload=particles(
                monitor=monitor,
                seq=i + 1,
                ts=s["ts"],
                c05=s["c05"],
                c50=s["c50"],
                volume=s["vol"],
                status=s["status"],
            ),
            received_at=s["ts"],
        )
        for i, s in enumerate(samples)
    ]
    with unit_of_work(engine) as session:
        processor.process(session, messages)
    return limit_excursions(engine, monitor)


def limit_excursions(engine: Engine, monitor: str) -> list[tuple]:
    with unit_of_work(engine) as session:
        return sorted(
            (e["type"], e["channel"], e["level"], e["started_at"], e["ended_at"], e["peak"], e["status"])
            for e in list_excursions(session)
            if e["monitor"] == monitor and e["type"] != "data_gap"
        )


def stored(engine: Engine, monitor: str) -> list[tuple[int, datetime, str, dict]]:
    """(seq, event time, status, stored document) of every stored sample of ``monitor``."""
    with unit_of_work(engine) as session:
        monitor_id = session.exec(select(Monitor.id).where(Monitor.code == monitor)).one()
        rows = session.exec(
            select(RawMessage.seq, RawMessage.payload).where(RawMessage.monitor_id == monitor_id)
        ).all()
        times = dict(
            session.exec(
                select(Reading.seq, func.min(Reading.event_time))
                .where(Reading.monitor_id == monitor_id)
                .group_by(Reading.seq)
            ).all()
        )
        status = dict(
            session.exec(select(Reading.seq, Reading.status).where(Reading.monitor_id == monitor_id)).all()
        )
        return sorted((seq, times[seq], status[seq], json.loads(payload)) for seq, payload in rows)
