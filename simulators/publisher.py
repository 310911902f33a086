"""Turn a facility and a scenario into wire messages, and publish them over MQTT.

:func:`generate` is pure and deterministic (the test oracle); :func:`run_simulation` paces
that stream to the wall clock and publishes it through one paho client acting as a gateway
for every monitor. A single MQTT connection has a single last will, so the per-monitor
``online``/``offline`` statuses are explicit retained publishes (``online`` at start and
after an outage, ``offline`` at an outage and at the end of the run) instead of wills; if
the simulator process dies, the statuses stay ``online`` and the tracker's data-gap rule
is what notices the silence.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from simulators import payloads, signals
from simulators.facility import Facility, Monitor, load_facility
from simulators.scenario import Event, Scenario, challenge_event, load_scenario
from tracker.wire.mqtt import BrokerAddress, connect, make_client
from tracker.wire.topics import reading_topic, status_topic

log = logging.getLogger(__name__)

OUTGOING_KINDS = ("reading", "status", "malformed", "duplicate", "backfill")
DEFAULT_DURATION = timedelta(hours=24)
#: Wait for acknowledgements once this many QoS 1 publishes are unacknowledged: paho has
#: 65,535 message ids and silently refuses beyond that.
MAX_OUTSTANDING = 1000
CONNECT_TIMEOUT_S = 10.0
DRAIN_TIMEOUT_S = 30.0

# Order of simultaneous actions: statuses, then state changes, readings, bad messages, end.
_TIMED_EVENTS = ("offline", "units", "malformed", "duplicate")
_PRIO_START, _PRIO_STATE, _PRIO_READING, _PRIO_MALFORMED, _PRIO_DUPLICATE, _PRIO_END = range(6)


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One MQTT message with the simulated time it belongs to."""

    sim_time: datetime
    topic: str
    payload: bytes
    retain: bool
    kind: str
    monitor: str | None = None
    seq: int | None = None
    variant: str | None = None


@dataclass(frozen=True, slots=True)
class ExpectedExcursion:
    monitor: str
    room: str
    kind: str
    channel: str | None
    level: str
    state: str
    start: datetime


@dataclass(frozen=True, slots=True)
class OperationWindow:
    room: str
    start: datetime
    end: datetime


@dataclass(frozen=True, slots=True)
class Outage:
    monitor: str
    start: datetime
    end: datetime
    backfill: bool


@dataclass(slots=True)
class MonitorTally:
    count: int = 0
    last_seq: int | None = None


@dataclass
class SimulationResult:
    """What was (or would be) published, and what the tracker should make of it."""

    start: datetime
    duration: timedelta
    seed: int
    readings: dict[str, MonitorTally] = field(default_factory=dict)
    malformed: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    backfilled: int = 0
    statuses: int = 0
    published: int = 0
    expected: list[ExpectedExcursion] = field(default_factory=list)
    operations: list[OperationWindow] = field(default_factory=list)
    outages: list[Outage] = field(default_factory=list)
    stopped: bool = False
    undelivered: int = 0
    last_sim_time: datetime | None = None

    @property
    def end(self) -> datetime:
        """Planned end of the simulated interval."""
        return self.start + self.duration

    @property
    def total_readings(self) -> int:
        """Real readings published (live and backfilled), without duplicates or bad messages."""
        return sum(t.count for t in self.readings.values())

    def record(self, out: Outgoing) -> None:
        """Count one message that went out."""
        self.published += 1
        self.last_sim_time = out.sim_time
        if out.kind in ("reading", "backfill") and out.monitor is not None:
            tally = self.readings.setdefault(out.monitor, MonitorTally())
            tally.count += 1
            tally.last_seq = out.seq
            self.backfilled += out.kind == "backfill"
        elif out.kind == "malformed" and out.variant:
            self.malformed[out.variant] += 1
        elif out.kind == "duplicate":
            self.duplicates += 1
        elif out.kind == "status":
            self.statuses += 1

    def summary(self) -> str:
        """A few human-readable lines for the command line."""
        lines = [
            f"simulated {_iso(self.start)} .. {_iso(self.end)}"
            + (" (stopped early)" if self.stopped else ""),
            f"readings: {self.total_readings} from {len(self.readings)} monitors "
            f"({self.backfilled} backfilled); statuses: {self.statuses}; "
            f"duplicates: {self.duplicates}",
            "malformed: " + (", ".join(f"{k}={v}" for k, v in sorted(self.malformed.items())) or "none"),
        ]
        if self.undelivered:
            lines.append(f"WARNING: {self.undelivered} messages not acknowledged by the broker")
        lines.append(f"expected excursions: {len(self.expected)}")
        lines += [
            f"  {_iso(e.start)} {e.monitor} {e.channel or '-'} {e.level} {e.state}" for e in self.expected
        ]
        return "\n".join(lines)


def _iso(ts: datetime) -> str:
    return payloads.iso_z(ts)


# --------------------------------------------------------------------------- generation


@dataclass
class _MonitorSim:
    """Mutable per-monitor state while generating: seq, unit, outage buffer, last messages."""

    monitor: Monitor
    grade: str
    topic: str
    status_topic: str
    rng: Any
    seq: int
    unit: str
    op_windows: list[tuple[int, int]]
    bursts: list[tuple[int, int, dict[str, float]]]
    levels: list[tuple[int, int, float]]
    doors: list[signals.DoorOpening]
    drift: signals.Drift | None
    #: scripted ramps ``(start, end, rate per second)`` and steps ``(start, end, offset)``
    ramps: list[tuple[int, int, float]] = field(default_factory=list)
    steps: list[tuple[int, int, float]] = field(default_factory=list)
    #: particle steps: concentrations added to the baseline
    particle_steps: list[tuple[int, int, dict[str, float]]] = field(default_factory=list)
    offline: Event | None = None
    buffer: list[Outgoing] = field(default_factory=list)
    recent: deque[Outgoing] = field(default_factory=deque)

    def in_operation(self, t: int) -> bool:
        """Signal levels switch only strictly inside an operation (see ``room_in_operation``)."""
        return any(start < t < end for start, end in self.op_windows)

    def message(self, t: int, ts: datetime) -> dict[str, Any]:
        """Next reading's payload; advances seq even when the reading will be lost."""
        seq = self.seq
        self.seq += 1
        m = self.monitor
        if m.kind == "particles":
            volume = payloads.convert("particles", m.sample_volume_l or 28.3, self.unit)
            counts = signals.particle_counts(
                self.rng, self._concentrations(t), m.sample_volume_l or 28.3, m.channels
            )
            return payloads.particle_reading(m.code, seq, ts, volume=volume, unit=self.unit, counts=counts)
        value = payloads.convert(m.kind, self._canonical_value(t), self.unit)
        return payloads.value_reading(m.code, seq, ts, kind=m.kind, value=value, unit=self.unit)

    def _concentrations(self, t: int) -> dict[str, float]:
        """Grade baseline for the room's state, overridden by a scripted burst."""
        conc = signals.particle_baseline(self.grade, self.in_operation(t))
        for start, end, added in self.particle_steps:
            if start <= t < end:
                conc = {c: v + added.get(c, 0.0) for c, v in conc.items()}
        for start, end, burst in self.bursts:
            if start <= t < end:
                conc.update(burst)
        return conc

    def _offset(self, t: int) -> float:
        """What scripted drifts and steps add at ``t``: a ramp holds its end value after it."""
        ramp = sum(rate * (min(t, end) - start) for start, end, rate in self.ramps if t >= start)
        return ramp + sum(off for start, end, off in self.steps if start <= t < end)

    def _canonical_value(self, t: int) -> float:
        """Pressure (Pa), temperature (°C) or humidity (%RH) at ``t``."""
        held = next((v for start, end, v in self.levels if start <= t < end), None)
        if self.monitor.kind == "pressure":
            if held is None:
                door = next((d for d in self.doors if d.covers(t)), None)
                held = door.level if door else _setpoint(self.monitor) + self._offset(t)
            return signals.pressure_value(self.rng, held)
        assert self.drift is not None
        if held is None:
            value = signals.drift_value(self.rng, self.drift, t) + self._offset(t)
        else:
            value = signals.held_value(self.rng, held, self.drift.noise)
        return round(value, 2 if self.monitor.kind == "temperature" else 1)


def _setpoint(monitor: Monitor) -> float:
    return monitor.setpoint if monitor.setpoint is not None else signals.DEFAULT_SETPOINTS[monitor.kind]


def _seconds(delta: timedelta) -> int:
    return int(delta.total_seconds())


def _op_windows(facility: Facility, scenario: Scenario | None, room: str) -> list[tuple[int, int]]:
    """Operations affecting ``room``: in it, in its background, or in a zone inside it."""
    if scenario is None:
        return []
    background = facility.room(room).background
    return [
        (_seconds(op.start), _seconds(op.end))
        for op in scenario.operations
        if op.room == room or op.room == background or facility.room(op.room).background == room
    ]


def _build_sim(
    facility: Facility, scenario: Scenario | None, monitor: Monitor, *, seed: int, first_seq: int
) -> _MonitorSim:
    """Precompute one monitor's scripted windows, door openings and drift."""
    events = [e for e in (scenario.events if scenario else ()) if e.monitor == monitor.code]
    spans = [(_seconds(e.at), _seconds(e.end)) for e in events]
    bursts = [
        (s, e, dict(ev.concentrations))
        for (s, e), ev in zip(spans, events, strict=True)
        if ev.type == "particle_burst"
    ]
    levels = [
        (s, e, float(ev.value))
        for (s, e), ev in zip(spans, events, strict=True)
        if ev.type in ("pressure_drop", "hold") and ev.value is not None
    ]
    ramps = [
        (s, e, float(ev.rate) / 3600.0)
        for (s, e), ev in zip(spans, events, strict=True)
        if ev.type == "drift" and ev.rate is not None
    ]
    steps = [
        (s, e, float(ev.offset))
        for (s, e), ev in zip(spans, events, strict=True)
        if ev.type == "step" and ev.offset is not None
    ]
    particle_steps = [
        (s, e, dict(ev.concentrations))
        for (s, e), ev in zip(spans, events, strict=True)
        if ev.type == "step" and ev.concentrations
    ]
    windows = _op_windows(facility, scenario, monitor.room)
    doors: list[signals.DoorOpening] = []
    drift = None
    if monitor.kind == "pressure":
        door_rng = signals.monitor_rng(seed, monitor.code, signals.STREAM_DOORS)
        doors = signals.door_openings(
            door_rng, windows, _setpoint(monitor), avoid=[(s, e) for s, e, _ in levels]
        )
    elif monitor.kind in ("temperature", "humidity"):
        drift_rng = signals.monitor_rng(seed, monitor.code, signals.STREAM_DRIFT)
        drift = signals.drift_for(drift_rng, monitor.kind, _setpoint(monitor))
    keep = max((e.count for e in events if e.type == "duplicate"), default=0)
    site, room = facility.site.code, monitor.room
    return _MonitorSim(
        monitor=monitor,
        grade=facility.room(room).grade,
        topic=reading_topic(site, room, monitor.code),
        status_topic=status_topic(site, room, monitor.code),
        rng=signals.monitor_rng(seed, monitor.code),
        seq=first_seq,
        unit=payloads.CANONICAL_UNIT[monitor.kind],
        op_windows=windows,
        bursts=bursts,
        levels=levels,
        doors=doors,
        drift=drift,
        ramps=ramps,
        steps=steps,
        particle_steps=particle_steps,
        recent=deque(maxlen=keep),
    )


class _Generator:
    """The event loop behind :func:`generate`: a heap of timed actions in simulated seconds."""

    def __init__(
        self,
        facility: Facility,
        scenario: Scenario | None,
        *,
        seed: int,
        start: datetime,
        duration: timedelta,
        first_seq: int,
    ) -> None:
        self.facility = facility
        self.start = start
        self.total = _seconds(duration)
        self.sims = {
            m.code: _build_sim(facility, scenario, m, seed=seed, first_seq=first_seq)
            for m in facility.monitors
        }
        self.malformed_n = 0
        self.heap: list[tuple[int, int, int, str, Any]] = []
        self.order = itertools.count()
        for sim in self.sims.values():
            self._push(
                signals.monitor_phase(sim.monitor.code, sim.monitor.interval_s), _PRIO_READING, "reading", sim
            )
        for event in scenario.events if scenario else ():
            if event.type in _TIMED_EVENTS:  # the others shape signals, see _build_sim
                self._push(_seconds(event.at), _event_priority(event), event.type, event)

    def _push(self, t: int, prio: int, action: str, item: Any) -> None:
        if t <= self.total:
            heapq.heappush(self.heap, (t, prio, next(self.order), action, item))

    def run(self) -> Iterator[Outgoing]:
        """Yield every message in simulated-time order."""
        yield from self._statuses(self.start, b"online")
        while self.heap:
            t, _, _, action, item = heapq.heappop(self.heap)
            yield from getattr(self, f"_do_{action}")(t, item)
        yield from self._statuses(self.start + timedelta(seconds=self.total), b"offline")

    def _statuses(self, when: datetime, state: bytes) -> Iterator[Outgoing]:
        for sim in self.sims.values():
            yield Outgoing(when, sim.status_topic, state, True, "status", sim.monitor.code)

    def _at(self, t: int) -> datetime:
        return self.start + timedelta(seconds=t)

    def _do_reading(self, t: int, sim: _MonitorSim) -> Iterator[Outgoing]:
        ts = self._at(t)
        seq = sim.seq
        out = Outgoing(
            ts, sim.topic, payloads.encode(sim.message(t, ts)), False, "reading", sim.monitor.code, seq
        )
        self._push(t + sim.monitor.interval_s, _PRIO_READING, "reading", sim)
        if sim.offline is None:
            sim.recent.append(out)
            yield out
        elif sim.offline.backfill:
            sim.buffer.append(out)

    def _do_offline(self, t: int, event: Event) -> Iterator[Outgoing]:
        sim = self.sims[event.monitor or ""]
        sim.offline = event
        self._push(_seconds(event.end), _PRIO_STATE, "return", event)
        yield Outgoing(self._at(t), sim.status_topic, b"offline", True, "status", event.monitor)

    def _do_return(self, t: int, event: Event) -> Iterator[Outgoing]:
        sim = self.sims[event.monitor or ""]
        sim.offline = None
        when = self._at(t)
        yield Outgoing(when, sim.status_topic, b"online", True, "status", event.monitor)
        for buffered in sim.buffer:
            out = replace(buffered, sim_time=when, kind="backfill")
            sim.recent.append(out)
            yield out
        sim.buffer.clear()

    def _do_units(self, t: int, event: Event) -> Iterator[Outgoing]:
        self.sims[event.monitor or ""].unit = event.unit or ""
        return iter(())

    def _do_duplicate(self, t: int, event: Event) -> Iterator[Outgoing]:
        sim = self.sims[event.monitor or ""]
        for old in list(sim.recent)[-event.count :]:
            yield replace(old, sim_time=self._at(t), kind="duplicate")

    def _do_malformed(self, t: int, event: Event) -> Iterator[Outgoing]:
        for _ in range(event.count):
            self.malformed_n += 1
            yield self._malformed(t, event, payloads.MALFORMED_SEQ_BASE + self.malformed_n)

    def _malformed(self, t: int, event: Event, seq: int) -> Outgoing:
        """One bad message; a real monitor's code comes with a seq from the malformed range."""
        variant = event.variant or ""
        monitor = _malformed_monitor(self.facility, variant, event.monitor)
        site, ts = self.facility.site.code, self._at(t)
        code, room = monitor.code, monitor.room
        if variant == "unknown_monitor":
            code = payloads.GHOST_MONITOR
        elif variant == "room_mismatch":
            room = next(r.code for r in self.facility.rooms if r.code != monitor.room)
        body = payloads.malformed(variant, monitor=code, kind=monitor.kind, seq=seq, ts=ts)
        return Outgoing(ts, reading_topic(site, room, code), body, False, "malformed", code, seq, variant)


def _event_priority(event: Event) -> int:
    if event.type == "malformed":
        return _PRIO_MALFORMED
    if event.type == "duplicate":
        return _PRIO_DUPLICATE
    return _PRIO_STATE


def _malformed_monitor(facility: Facility, variant: str, code: str | None) -> Monitor:
    """The named monitor, or a sensible default for the variant."""
    if code is not None:
        return facility.monitor(code)
    if variant == "out_of_range":
        for kind in ("humidity", "particles", "temperature"):
            found = next((m for m in facility.monitors if m.kind == kind), None)
            if found:
                return found
        raise ValueError("out_of_range needs a humidity, particles or temperature monitor")
    return facility.monitors[0]


def generate(
    facility: Facility,
    scenario: Scenario | None = None,
    *,
    seed: int,
    start: datetime,
    duration: timedelta,
    first_seq: int = 1,
) -> Iterator[Outgoing]:
    """Every message of a run in simulated-time order; same inputs, same bytes."""
    _check_start(start)
    if duration <= timedelta(0) or duration.microseconds:
        raise ValueError("duration must be a positive whole number of seconds")
    if seed < 0:
        raise ValueError("seed must be ≥ 0")
    return _Generator(
        facility, scenario, seed=seed, start=start, duration=duration, first_seq=first_seq
    ).run()


def _check_start(start: datetime) -> None:
    if start.tzinfo is None or start.utcoffset() is None:
        raise ValueError("start must be timezone-aware (UTC)")
    if start.microsecond:
        raise ValueError("start must be whole seconds")


# --------------------------------------------------------------------------- planning


def resolve_duration(duration: timedelta | None, scenario: Scenario | None) -> timedelta:
    """Explicit duration, else the scenario's, else a day."""
    if duration is not None:
        return duration
    return scenario.duration if scenario else DEFAULT_DURATION


def default_start(now: datetime, duration: timedelta, speed: float) -> datetime:
    """Start so that, paced at ``speed``, simulated time ends at the wall clock, never ahead."""
    begin = now - (duration if _unpaced(speed) else duration * (1 - 1 / speed))
    return begin.astimezone(UTC).replace(microsecond=0)


def resolve_start(
    start: datetime | None, scenario: Scenario | None, *, duration: timedelta, speed: float, now: datetime
) -> datetime:
    """Explicit start, else the scenario's, else :func:`default_start`."""
    if start is not None:
        _check_start(start)
        return start.astimezone(UTC)
    if scenario is not None and scenario.start is not None:
        return scenario.start
    return default_start(now, duration, speed)


def plan(
    facility: Facility, scenario: Scenario | None, *, seed: int, start: datetime, duration: timedelta
) -> SimulationResult:
    """An empty result carrying the scenario's windows and expectations in absolute time."""
    result = SimulationResult(start=start, duration=duration, seed=seed)
    if scenario is None:
        return result
    end = duration
    result.operations = [
        OperationWindow(op.room, start + op.start, start + min(op.end, end))
        for op in scenario.operations
        if op.start < end
    ]
    result.outages = [
        Outage(e.monitor or "", start + e.at, start + e.end, e.backfill)
        for e in scenario.events
        if e.type == "offline" and e.at < end
    ]
    for ex in scenario.expect:
        if ex.start < end:
            monitor = facility.monitor(ex.monitor)
            result.expected.append(
                ExpectedExcursion(
                    ex.monitor, monitor.room, monitor.kind, ex.channel, ex.level, ex.state, start + ex.start
                )
            )
    return result


def dry_run(
    facility: Facility,
    scenario: Scenario | None = None,
    *,
    seed: int,
    start: datetime,
    duration: timedelta,
    first_seq: int = 1,
) -> SimulationResult:
    """Generate a whole run without a broker and tally it (tests, ``--dry-run``)."""
    result = plan(facility, scenario, seed=seed, start=start, duration=duration)
    for out in generate(facility, scenario, seed=seed, start=start, duration=duration, first_seq=first_seq):
        result.record(out)
    return result


# --------------------------------------------------------------------------- MQTT


def _unpaced(speed: float) -> bool:
    return speed == 0 or math.isinf(speed)


class _Pacer:
    """Sleep so simulated time advances ``speed`` times faster than the wall clock."""

    def __init__(self, start: datetime, speed: float, stop: threading.Event) -> None:
        if speed < 0 or math.isnan(speed):
            raise ValueError("speed must be ≥ 0 (0 or inf: as fast as possible)")
        self.start, self.speed, self.stop = start, speed, stop
        self.wall0 = time.monotonic()

    def wait_until(self, sim_time: datetime) -> bool:
        """Block until ``sim_time`` is due; ``False`` when asked to stop."""
        if not _unpaced(self.speed):
            due = self.wall0 + (sim_time - self.start).total_seconds() / self.speed
            delay = due - time.monotonic()
            if delay > 0:
                self.stop.wait(delay)
        return not self.stop.is_set()


class _Gateway:
    """One paho client publishing for all monitors, QoS 1, with bounded unacknowledged messages."""

    def __init__(
        self,
        broker: BrokerAddress,
        *,
        client_id: str,
        protocol: int,
        stop: threading.Event,
        max_outstanding: int = MAX_OUTSTANDING,
    ) -> None:
        self.broker, self.stop, self.max_outstanding = broker, stop, max_outstanding
        self.client = make_client(broker, client_id=client_id, protocol=protocol)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.connected = threading.Event()
        self.refused: str | None = None
        self.outstanding: deque[mqtt.MQTTMessageInfo] = deque()

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        if reason.is_failure:
            self.refused = str(reason)
            log.error("broker %s refused the simulator: %s", self.broker.display(), reason)
            return
        self.connected.set()

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        self.connected.clear()
        if reason.is_failure:
            log.warning("simulator lost the broker (%s); paho reconnects", reason)

    def open(self) -> None:
        """Connect and wait for the broker's CONNACK."""
        try:
            connect(self.client, self.broker)
        except OSError as exc:
            raise ConnectionError(f"cannot reach MQTT broker {self.broker.display()}: {exc}") from exc
        self.client.loop_start()
        deadline = time.monotonic() + CONNECT_TIMEOUT_S
        while not self.connected.wait(0.1):
            if self.refused or time.monotonic() > deadline:
                self.close()
                raise ConnectionError(
                    f"MQTT broker {self.broker.display()} did not accept "
                    f"the simulator: {self.refused or 'timeout'}"
                )

    def publish(self, out: Outgoing) -> None:
        """Publish at QoS 1; fail loudly when paho refuses the message."""
        info = self.client.publish(out.topic, out.payload, qos=1, retain=out.retain)
        if info.rc == mqtt.MQTT_ERR_NO_CONN:
            # paho keeps a QoS 1 message published while disconnected and resends it on
            # reconnect, but leaves rc=NO_CONN, which wait_for_publish() reports as failure.
            info.rc = mqtt.MQTT_ERR_SUCCESS
        elif info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise RuntimeError(f"publish to {out.topic} failed: {mqtt.error_string(info.rc)}")
        self.outstanding.append(info)
        while len(self.outstanding) > self.max_outstanding:
            if not self._settle(self.outstanding.popleft(), deadline=None):
                break

    def _settle(self, info: mqtt.MQTTMessageInfo, deadline: float | None) -> bool:
        """Wait for one acknowledgement; give up at ``deadline`` or, without one, at stop."""
        while not info.is_published():
            if deadline is None and self.stop.is_set():
                return False
            if deadline is not None and time.monotonic() > deadline:
                return False
            info.wait_for_publish(timeout=0.5)
        return True

    def drain(self, timeout: float = DRAIN_TIMEOUT_S) -> int:
        """Wait for every outstanding acknowledgement; return how many never came."""
        deadline = time.monotonic() + timeout
        missing = 0
        while self.outstanding:
            info = self.outstanding.popleft()
            if not info.is_published() and not self._settle(info, deadline):
                missing += 1
        return missing

    def close(self) -> None:
        """Disconnect cleanly and stop paho's network thread."""
        self.client.disconnect()
        self.client.loop_stop()


def run_simulation(
    *,
    facility_path: str | Path,
    scenario_path: str | Path | None = None,
    broker: BrokerAddress,
    speed: float = 60.0,
    seed: int = 1,
    duration: timedelta | None = None,
    start: datetime | None = None,
    stop: threading.Event | None = None,
    client_id: str = "gmp-simulator",
    protocol: int = 5,
    on_progress: Callable[[SimulationResult], None] | None = None,
    first_seq: int = 1,
    challenge: tuple[str, timedelta, timedelta] | None = None,
) -> SimulationResult:
    """Publish a simulated facility to ``broker`` until the scenario ends or ``stop`` is set.

    ``challenge``: (monitor, at, for how long) — inject the alarm-challenge signal for that
    monitor (``CHALLENGE_SIGNAL``)."""
    facility = load_facility(facility_path)
    scenario = load_scenario(scenario_path, facility) if scenario_path else None
    duration = resolve_duration(duration, scenario)
    if challenge is not None:
        event = challenge_event(facility, *challenge)
        base = scenario or Scenario(name="challenge", description="alarm challenge", duration=duration)
        scenario = replace(base, events=(*base.events, event))
    start = resolve_start(start, scenario, duration=duration, speed=speed, now=datetime.now(UTC))
    stop = stop or threading.Event()
    result = plan(facility, scenario, seed=seed, start=start, duration=duration)
    messages = generate(facility, scenario, seed=seed, start=start, duration=duration, first_seq=first_seq)
    pacer = _Pacer(start, speed, stop)
    gateway = _Gateway(broker, client_id=client_id, protocol=protocol, stop=stop)
    gateway.open()
    try:
        _publish_all(messages, gateway, pacer, result, on_progress)
        if result.stopped:
            _publish_offline(facility, gateway, result)
        result.undelivered = gateway.drain()
    finally:
        gateway.close()
    if on_progress:
        on_progress(result)
    return result


def _publish_all(
    messages: Iterator[Outgoing],
    gateway: _Gateway,
    pacer: _Pacer,
    result: SimulationResult,
    on_progress: Callable[[SimulationResult], None] | None,
) -> None:
    """Pace and publish the stream, reporting progress about once a second."""
    next_report = time.monotonic() + 1.0
    for out in messages:
        if not pacer.wait_until(out.sim_time):
            result.stopped = True
            return
        gateway.publish(out)
        result.record(out)
        if on_progress and time.monotonic() >= next_report:
            on_progress(result)
            next_report = time.monotonic() + 1.0


def _publish_offline(facility: Facility, gateway: _Gateway, result: SimulationResult) -> None:
    """Stopped early: mark every monitor offline, as their last wills would."""
    when = result.last_sim_time or result.start
    for m in facility.monitors:
        out = Outgoing(
            when, status_topic(facility.site.code, m.room, m.code), b"offline", True, "status", m.code
        )
        gateway.publish(out)
        result.record(out)
