"""``tracker poll``: remote particle counters over Modbus TCP, straight into the one intake.

Each poll walks the counter's record buffer from the newest record back to the newest one
already stored, then stores the new ones oldest first, each stamped with the instrument's own
record time (never the poller's clock) and judged by it. After an outage the walk simply goes
further back: every record the instrument kept is stored once. Where the poller resumes is
read from the database (the monitor's newest stored sample), so a restart, a lost transaction
or a record read twice costs nothing: the intake absorbs it as a duplicate.

The poller writes to the database directly rather than publishing our JSON over MQTT: the
only safe moment to move past a record is when it is committed, and the database is where
that is known. A counter that does not answer goes offline at once (its data gap opens, as a
last will does); the records it kept meanwhile are backfilled when it answers again.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from pymodbus.client import ModbusTcpClient
from pymodbus.exceptions import ModbusException
from sqlalchemy import Engine, func
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, select

from tracker.core.db import unit_of_work
from tracker.core.timeutil import utcnow
from tracker.facility.devices import ModbusMap, devices_of
from tracker.facility.models import Site
from tracker.ingest.devices import device_reading
from tracker.monitoring.device_events import DeviceNote, record_device_events
from tracker.monitoring.ingest_state import default_writer
from tracker.monitoring.intake import BatchOutcome, IncomingReading, IncomingStatus, Intake
from tracker.monitoring.quarantine import Rejection
from tracker.monitoring.readings import RawMessage
from tracker.wire.payload import PayloadRejected, QuarantineCode
from tracker.wire.registermap import (
    CounterRecord,
    RegisterMap,
    RegisterMapError,
    bit,
    decode_record,
    load_register_map,
)

log = logging.getLogger(__name__)
#: a counter never polled before is read back this far at most (older records predate it here)
FIRST_POLL_BACK = timedelta(hours=24)
#: data-status bits that make a record a fault, and the one that says sampling was interrupted
FAULT_BITS = ("laser", "flow", "overflow", "service")
STOPPED_BIT = "sampler"


class CounterUnreachable(ConnectionError):
    """The counter did not answer (network, power, wrong address)."""


@dataclass(frozen=True, slots=True)
class BufferRecord:
    index: int
    record: CounterRecord
    words: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class BufferRead:
    records: list[BufferRecord]  # oldest first
    count: int
    sampling: bool


def read_buffer(mapping: ModbusMap, regmap: RegisterMap, *, after_s: int | None) -> BufferRead:
    """Every buffered record newer than ``after_s`` (seconds since the epoch), oldest first."""
    client = ModbusTcpClient(mapping.host, port=mapping.port, timeout=mapping.timeout_s, retries=1)
    try:
        if not client.connect():
            raise CounterUnreachable(f"no answer from {mapping.host}:{mapping.port}")

        def ok(response):
            if response.isError():
                raise CounterUnreachable(f"counter refused a request: {response}")
            return response

        unit = mapping.unit_id
        count = ok(client.read_holding_registers(regmap.record_count, count=1, device_id=unit)).registers[0]
        status = ok(client.read_holding_registers(regmap.device_status, count=1, device_id=unit)).registers[0]
        newest_first: list[BufferRecord] = []
        for index in range(count - 1, -1, -1):
            ok(client.write_register(regmap.record_index, index, device_id=unit))
            words = ok(
                client.read_input_registers(regmap.record_first, count=regmap.record_length, device_id=unit)
            ).registers
            record = decode_record(regmap, list(words))
            if after_s is not None and record.timestamp <= after_s:
                break
            newest_first.append(BufferRecord(index, record, tuple(words)))
        sampling = bit(status, regmap.device_bits.get("running")) and not bit(
            status, regmap.device_bits.get("device_error")
        )
        return BufferRead(list(reversed(newest_first)), count, sampling)
    except (ModbusException, OSError) as exc:
        raise CounterUnreachable(str(exc)) from None
    finally:
        client.close()


def record_status(regmap: RegisterMap, record: CounterRecord) -> str:
    """The instrument's own verdict on a record: a fault or an interrupted sample is stored with
    that status (never a breach); its threshold bits are its own alarm levels, not ours, so they
    do not change the status: the tracker judges the counts itself."""
    if any(bit(record.data_status, regmap.data_bits.get(name)) for name in FAULT_BITS):
        return "fault"
    if bit(record.data_status, regmap.data_bits.get(STOPPED_BIT)):
        return "stopped"
    return "ok"


@dataclass
class Counter:
    site: str
    mapping: ModbusMap
    regmap: RegisterMap
    next_due: float = 0.0
    reachable: bool | None = None
    sampling: bool | None = None

    @property
    def source(self) -> str:
        return f"modbus://{self.mapping.host}:{self.mapping.port}/{self.mapping.unit_id}"


@dataclass
class PollStats:
    polls: int = 0
    stored: int = 0
    duplicates: int = 0
    quarantined: int = 0
    unreachable: int = 0
    backfilled: int = 0
    by_monitor: dict[str, int] = field(default_factory=dict)


class ModbusPoller:
    """Polls every counter of the current facility revision, each at its own ``poll_s``."""

    def __init__(
        self,
        engine: Engine,
        *,
        client_id: str = "modbus-poller",
        future_tolerance: timedelta = timedelta(minutes=5),
        clock=time.monotonic,
    ) -> None:
        self.engine = engine
        self.intake = Intake(writer=default_writer(client_id))
        self.future_tolerance = future_tolerance
        self.clock = clock
        self.counters: dict[str, Counter] = {}
        self.stats = PollStats()
        self._marker = None

    def refresh(self, session: Session) -> None:
        """Take the counters of the current revision (a new facility load changes them)."""
        registry = self.intake.refresh(session)
        if registry is self._marker:
            return
        self._marker = registry
        wanted: dict[str, Counter] = {}
        for site in session.exec(select(Site)).all():
            for mapping in devices_of(session, site).modbus:
                try:
                    regmap = load_register_map(mapping.model)
                except RegisterMapError:
                    log.exception("counter %s: register map %s unusable", mapping.monitor, mapping.model)
                    continue
                old = self.counters.get(mapping.monitor)
                counter = Counter(site.code, mapping, regmap)
                if old is not None and old.mapping == mapping:
                    counter = old
                wanted[mapping.monitor] = counter
        self.counters = wanted

    def _cursor_s(self, session: Session, monitor_id: int) -> int | None:
        newest = session.exec(
            select(func.max(RawMessage.seq)).where(RawMessage.monitor_id == monitor_id)
        ).one()
        return None if newest is None else int(newest) // 1000

    def poll(self, counter: Counter, *, now: datetime | None = None) -> BatchOutcome:
        """One poll of one counter: read what is new, store it, record what happened."""
        now = now or utcnow()
        with unit_of_work(self.engine) as session:
            self.refresh(session)
            entry = self.intake.registry.lookup(counter.site, counter.mapping.monitor)
            if entry is None:
                return BatchOutcome()
            cursor = self._cursor_s(session, entry.id)
        after = cursor if cursor is not None else int((now - FIRST_POLL_BACK).timestamp())
        notes: list[DeviceNote] = []
        statuses: list[IncomingStatus] = []
        self.stats.polls += 1
        try:
            read = read_buffer(counter.mapping, counter.regmap, after_s=after)
        except CounterUnreachable as exc:
            self.stats.unreachable += 1
            if counter.reachable is not False:
                log.warning("counter %s (%s) unreachable: %s", counter.mapping.monitor, counter.source, exc)
                notes.append(
                    DeviceNote(now, counter.source, "unreachable", str(exc), counter.mapping.monitor)
                )
                statuses.append(IncomingStatus(entry.id, False, now))
            counter.reachable = False
            return self._store(counter, [], [], statuses, notes)
        if counter.reachable is False:
            statuses.append(IncomingStatus(entry.id, True, now))
        counter.reachable = True
        if read.sampling != counter.sampling and (counter.sampling is not None or not read.sampling):
            kind = "sampling_resumed" if read.sampling else "sampling_stopped"
            notes.append(
                DeviceNote(now, counter.source, kind, "device status register", counter.mapping.monitor)
            )
        counter.sampling = read.sampling
        if len(read.records) > 1:
            self.stats.backfilled += len(read.records) - 1
            notes.append(
                DeviceNote(
                    now,
                    counter.source,
                    "backfill",
                    f"{len(read.records)} records read back from the buffer "
                    f"({read.records[0].record.event_time.isoformat()} … {read.records[-1].record.event_time.isoformat()})",
                    counter.mapping.monitor,
                )
            )
        readings: list[IncomingReading] = []
        rejections: list[Rejection] = []
        for buffered in read.records:
            try:
                readings.append(self._reading(counter, entry, buffered, read.count, now))
            except PayloadRejected as exc:
                rejections.append(
                    Rejection(
                        now,
                        counter.source,
                        bytes(str(buffered.words), "ascii"),
                        exc.reason.value,
                        f"record {buffered.index}: {exc.detail}",
                        counter.mapping.monitor,
                    )
                )
        return self._store(counter, readings, rejections, statuses, notes)

    def _reading(
        self, counter: Counter, entry, buffered: BufferRecord, count: int, now: datetime
    ) -> IncomingReading:
        mapping, regmap, record = counter.mapping, counter.regmap, buffered.record
        flow = mapping.flow_l_min or regmap.nominal_flow_l_min
        volume_l = round(flow * record.sample_time_s / 60.0, 6)
        if volume_l <= 0:
            raise PayloadRejected(QuarantineCode.OUT_OF_RANGE, f"sample time {record.sample_time_s} s")
        return device_reading(
            entry,
            event_ms=record.timestamp * 1000,
            status=record_status(regmap, record),
            counts={size: record.counts[number - 1] for size, number in mapping.channels},
            volume_l=volume_l,
            source_topic=counter.source,
            source={
                "protocol": "modbus_tcp",
                "model": regmap.model,
                "record_index": buffered.index,
                "record_count": count,
                "data_status": record.data_status,
                "registers": list(buffered.words),
            },
            received_at=now,
            future_tolerance=self.future_tolerance,
        )

    def _store(self, counter, readings, rejections, statuses, notes) -> BatchOutcome:
        with unit_of_work(self.engine) as session:
            self.refresh(session)
            outcome = self.intake.store(session, readings, rejections, statuses)
            record_device_events(session, notes)
        self.stats.stored += outcome.stored
        self.stats.duplicates += outcome.duplicates
        self.stats.quarantined += outcome.quarantined
        name = counter.mapping.monitor
        self.stats.by_monitor[name] = self.stats.by_monitor.get(name, 0) + outcome.stored
        return outcome

    def run(self, stop: threading.Event) -> PollStats:
        """Poll each counter when it is due until ``stop``; a database outage is waited out."""
        while not stop.is_set():
            try:
                with unit_of_work(self.engine) as session:
                    self.refresh(session)
                for counter in list(self.counters.values()):
                    if self.clock() >= counter.next_due:
                        counter.next_due = self.clock() + counter.mapping.poll_s
                        self.poll(counter)
            except SQLAlchemyError:
                self.intake.forget()
                self._marker = None
                log.warning("database unavailable for the poller; trying again", exc_info=True)
                stop.wait(2.0)
            due = min((c.next_due for c in self.counters.values()), default=self.clock() + 5.0)
            stop.wait(max(0.05, min(1.0, due - self.clock())))
        return self.stats
