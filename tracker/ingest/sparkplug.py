"""Sparkplug B 3.0 host application: plant-floor gateways straight into the one intake.

The host is an ingest worker (:class:`tracker.ingest.client.Ingester`: batches, one transaction
each, acknowledgement after commit, retries while the database is away) whose processor speaks
Sparkplug instead of our JSON contract. Per edge node it keeps the birth's ``bdSeq``, the last
``seq`` and the aliases of the node's and its devices' births. A message's effect on that state
is computed once and remembered until its batch is committed, so a batch retried after a
database error neither reports a sequence gap that is not there nor asks twice for a rebirth.

* data (NDATA/DDATA): mapped metrics → one reading per monitor and metric time stamp (docs/devices.md)
* a ``seq`` that skips: ``seq_gap`` event, NCMD ``Node Control/Rebirth`` (also for data before
  any birth and for unknown aliases), the data itself is still stored
* NDEATH with the birth's ``bdSeq`` / DDEATH: the monitors go offline at once, which opens their
  data gap like our last will; an NDEATH with another ``bdSeq`` arrived after a newer birth and
  is ignored (recorded as ``stale_death``)
* a birth whose metrics do not hold what the mapping names is quarantined (``device_mapping``)
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta

from sqlalchemy import Engine
from sqlmodel import Session, select

from tracker.core.timeutil import utcnow
from tracker.facility.devices import SparkplugMap, devices_of
from tracker.facility.models import Site
from tracker.ingest.client import Ingester, IngestOptions
from tracker.ingest.devices import device_reading
from tracker.ingest.processor import InboundMessage
from tracker.monitoring.device_events import DeviceNote, record_device_events
from tracker.monitoring.intake import BatchOutcome, IncomingReading, IncomingStatus, Intake
from tracker.monitoring.quarantine import Rejection
from tracker.monitoring.snapshot import MonitorEntry, Registry
from tracker.wire.mqtt import BrokerAddress
from tracker.wire.payload import PayloadRejected, QuarantineCode
from tracker.wire.sparkplug import (
    BDSEQ,
    NAMESPACE,
    SparkplugRejected,
    SpbPayload,
    SpbTopic,
    decode_payload,
    parse_spb_topic,
    rebirth_command,
    state_payload,
    state_topic,
)
from tracker.wire.units import converter

log = logging.getLogger(__name__)
#: a node is asked for a rebirth at most this often (a burst of gaps is one request)
REBIRTH_EVERY_S = 5.0
STATUS_WORDS = {"ok", "fault", "calibration", "maintenance", "stopped"}


@dataclass
class NodeState:
    bd_seq: int | None = None
    seq: int | None = None
    aliases: dict[str, dict[int, str]] = field(default_factory=dict)  # "" = the node's own
    rebirth_at: float = -1e9


@dataclass
class Effect:
    """What one message does: computed once, stored with its batch."""

    readings: list[IncomingReading] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    statuses: list[IncomingStatus] = field(default_factory=list)
    notes: list[DeviceNote] = field(default_factory=list)
    commands: list[tuple[str, bytes]] = field(default_factory=list)


@dataclass(frozen=True)
class Route:
    mapping: SparkplugMap
    entry: MonitorEntry


class Routes:
    """The facility's Sparkplug mappings resolved against the registry's monitors."""

    def __init__(self, session: Session, registry: Registry) -> None:
        self.registry = registry
        self.by_source: dict[tuple[str, str, str], list[Route]] = {}
        for site in session.exec(select(Site)).all():
            for mapping in devices_of(session, site).sparkplug:
                entry = registry.lookup(site.code, mapping.monitor)
                if entry is not None:
                    key = (mapping.group, mapping.edge_node, mapping.device or "")
                    self.by_source.setdefault(key, []).append(Route(mapping, entry))
        self.nodes = {(g, n) for g, n, _ in self.by_source}

    def of(self, group: str, node: str, device: str | None) -> list[Route]:
        return self.by_source.get((group, node, device or ""), [])

    def under_node(self, group: str, node: str) -> list[Route]:
        return [r for (g, n, _), routes in self.by_source.items() if (g, n) == (group, node) for r in routes]


def _status(value: object) -> str:
    if isinstance(value, str):
        return value if value in STATUS_WORDS else "fault"
    return "fault" if value else "ok"


class SparkplugProcessor:
    """Sparkplug messages → readings, statuses, quarantine rows and device events."""

    def __init__(self, intake: Intake, *, future_tolerance: timedelta = timedelta(minutes=5)) -> None:
        self.intake = intake
        self.future_tolerance = future_tolerance
        self.nodes: dict[tuple[str, str], NodeState] = {}
        #: effects of messages not yet committed (a retried batch reuses them)
        self.effects: dict[InboundMessage, Effect] = {}
        self._routes: Routes | None = None

    def process(self, session: Session, messages: Sequence[InboundMessage]) -> BatchOutcome:
        registry = self.intake.refresh(session)
        if self._routes is None or self._routes.registry is not registry:
            self._routes = Routes(session, registry)
        total = Effect()
        for msg in messages:
            effect = self.effects.get(msg)
            if effect is None:
                effect = self.effects[msg] = self._effect(msg, self._routes)
            total.readings += effect.readings
            total.rejections += effect.rejections
            total.statuses += effect.statuses
            total.notes += effect.notes
        outcome = self.intake.store(session, total.readings, total.rejections, total.statuses)
        record_device_events(session, total.notes)
        return outcome

    def committed(self, messages: Sequence[InboundMessage]) -> list[tuple[str, bytes]]:
        """Forget the committed messages' effects; returns the commands they call for."""
        commands: list[tuple[str, bytes]] = []
        for msg in messages:
            effect = self.effects.pop(msg, None)
            if effect is not None:
                commands += effect.commands
        return commands

    # one message
    def _effect(self, msg: InboundMessage, routes: Routes) -> Effect:
        effect = Effect()
        topic = parse_spb_topic(msg.topic)
        if topic is None or topic.type in ("STATE", "NCMD", "DCMD"):
            return effect  # host states and commands: not data
        if (topic.group, topic.edge_node) not in routes.nodes:
            return effect  # equipment the facility file does not map: not ours
        source = "/".join(p for p in (NAMESPACE, topic.group, topic.edge_node, topic.device) if p)
        try:
            payload = decode_payload(msg.payload)
        except SparkplugRejected as exc:
            effect.rejections.append(self._reject(msg, QuarantineCode.DEVICE_PAYLOAD, exc.detail, None))
            return effect
        node = self.nodes.setdefault((topic.group, topic.edge_node), NodeState())
        if topic.type == "NBIRTH":
            self._node_birth(msg, topic, payload, node, routes, source, effect)
        elif topic.type == "NDEATH":
            self._node_death(msg, topic, payload, node, routes, source, effect)
        else:
            self._sequence(msg, topic, payload, node, source, effect)
            if topic.type == "DBIRTH":
                self._device_birth(msg, topic, payload, node, routes, source, effect)
            elif topic.type == "DDEATH":
                for route in routes.of(topic.group, topic.edge_node, topic.device):
                    effect.statuses.append(IncomingStatus(route.entry.id, False, msg.received_at))
                effect.notes.append(DeviceNote(msg.received_at, source, "device_death", "DDEATH"))
            else:  # NDATA, DDATA
                self._data(msg, topic, payload, node, routes, source, effect)
        return effect

    def _reject(
        self, msg: InboundMessage, code: QuarantineCode, detail: str, monitor: str | None
    ) -> Rejection:
        return Rejection(msg.received_at, msg.topic, msg.payload, code.value, detail, monitor, msg.dup)

    def _rebirth(self, topic: SpbTopic, node: NodeState, source: str, why: str, effect: Effect) -> None:
        now = time.monotonic()
        if now - node.rebirth_at < REBIRTH_EVERY_S:
            return
        node.rebirth_at = now
        stamp = int(utcnow().timestamp() * 1000)
        effect.commands.append(rebirth_command(topic.group, topic.edge_node, timestamp_ms=stamp))
        effect.notes.append(DeviceNote(utcnow(), source, "rebirth_requested", why))

    def _sequence(
        self,
        msg: InboundMessage,
        topic: SpbTopic,
        payload: SpbPayload,
        node: NodeState,
        source: str,
        effect: Effect,
    ) -> None:
        """Every message after NBIRTH carries the node's next ``seq`` (0–255, wrapping)."""
        if node.seq is None:
            self._rebirth(
                topic, node, source, f"{topic.type} before any birth since the host started", effect
            )
        elif payload.seq is not None and payload.seq != (node.seq + 1) % 256:
            detail = f"{topic.type} seq {payload.seq}, expected {(node.seq + 1) % 256}: messages were lost"
            effect.notes.append(DeviceNote(msg.received_at, source, "seq_gap", detail))
            log.warning("Sparkplug %s: %s; asking for a rebirth", source, detail)
            self._rebirth(topic, node, source, "seq gap", effect)
        if payload.seq is not None:
            node.seq = payload.seq

    def _node_birth(
        self,
        msg: InboundMessage,
        topic: SpbTopic,
        payload: SpbPayload,
        node: NodeState,
        routes: Routes,
        source: str,
        effect: Effect,
    ) -> None:
        bd = payload.metric(BDSEQ)
        node.bd_seq = None if bd is None or bd.value is None else int(bd.value)
        node.seq = payload.seq if payload.seq is not None else 0
        node.aliases = {"": {m.alias: m.name for m in payload.metrics if m.alias is not None and m.name}}
        effect.notes.append(DeviceNote(msg.received_at, source, "birth", f"NBIRTH bdSeq {node.bd_seq}"))
        self._check_birth(msg, payload, routes.of(topic.group, topic.edge_node, None), source, effect)

    def _device_birth(
        self,
        msg: InboundMessage,
        topic: SpbTopic,
        payload: SpbPayload,
        node: NodeState,
        routes: Routes,
        source: str,
        effect: Effect,
    ) -> None:
        node.aliases[topic.device or ""] = {
            m.alias: m.name for m in payload.metrics if m.alias is not None and m.name
        }
        effect.notes.append(DeviceNote(msg.received_at, source, "birth", "DBIRTH"))
        self._check_birth(msg, payload, routes.of(topic.group, topic.edge_node, topic.device), source, effect)

    def _check_birth(
        self, msg: InboundMessage, payload: SpbPayload, mapped: list[Route], source: str, effect: Effect
    ) -> None:
        """Monitors whose metrics are all in the birth go online; the others are quarantined."""
        names = {m.name for m in payload.metrics if m.name}
        for route in mapped:
            missing = [n for n in route.mapping.metric_names if n not in names]
            if missing:
                detail = (
                    f"birth of {source} lacks metric(s) {', '.join(missing)} that the facility file maps "
                    f"to monitor {route.entry.code}"
                )
                log.warning("Sparkplug: %s", detail)
                effect.rejections.append(
                    self._reject(msg, QuarantineCode.DEVICE_MAPPING, detail, route.entry.code)
                )
            else:
                effect.statuses.append(IncomingStatus(route.entry.id, True, msg.received_at))

    def _node_death(
        self,
        msg: InboundMessage,
        topic: SpbTopic,
        payload: SpbPayload,
        node: NodeState,
        routes: Routes,
        source: str,
        effect: Effect,
    ) -> None:
        bd = payload.metric(BDSEQ)
        bd_seq = None if bd is None or bd.value is None else int(bd.value)
        if node.bd_seq is not None and bd_seq is not None and bd_seq != node.bd_seq:
            detail = f"NDEATH bdSeq {bd_seq} is not the current birth's {node.bd_seq}: an old session's will"
            effect.notes.append(DeviceNote(msg.received_at, source, "stale_death", detail))
            return
        node.seq = None
        for route in routes.under_node(topic.group, topic.edge_node):
            effect.statuses.append(IncomingStatus(route.entry.id, False, msg.received_at))
        effect.notes.append(DeviceNote(msg.received_at, source, "node_death", f"NDEATH bdSeq {bd_seq}"))

    def _data(
        self,
        msg: InboundMessage,
        topic: SpbTopic,
        payload: SpbPayload,
        node: NodeState,
        routes: Routes,
        source: str,
        effect: Effect,
    ) -> None:
        aliases = node.aliases.get(topic.device or "", {})
        values: dict[str, list[tuple[int | None, object]]] = {}
        unknown = []
        for metric in payload.metrics:
            name = metric.name or aliases.get(metric.alias)
            if name is None:
                unknown.append(metric.alias)
                continue
            values.setdefault(name, []).append((metric.timestamp or payload.timestamp, metric.value))
        if unknown:
            self._rebirth(topic, node, source, f"unknown alias(es) {unknown}", effect)
        base = {"protocol": "sparkplug_b", "topic": msg.topic, "seq": payload.seq, "bdSeq": node.bd_seq}
        for route in routes.of(topic.group, topic.edge_node, topic.device):
            self._readings(msg, route, values, base, unknown, effect)

    def _readings(
        self,
        msg: InboundMessage,
        route: Route,
        values: dict[str, list[tuple[int | None, object]]],
        base: dict,
        unknown: list,
        effect: Effect,
    ) -> None:
        """One reading per time stamp among the monitor's channel metrics."""
        mapping, entry = route.mapping, route.entry
        by_time: dict[int | None, dict[str, object]] = {}
        for channel, name in mapping.metrics:
            for stamp, value in values.get(name, []):
                by_time.setdefault(stamp, {})[channel] = value
        if not by_time:
            if unknown:  # the message may hold this monitor's data under aliases we do not know
                detail = f"aliases {unknown} unknown (no birth seen): rebirth requested"
                effect.rejections.append(self._reject(msg, QuarantineCode.DEVICE_MAPPING, detail, entry.code))
            return
        extras = {n: dict(values.get(n, [])) for n in (mapping.volume_metric, mapping.status_metric) if n}
        for stamp, channels in sorted(by_time.items(), key=lambda kv: kv[0] or 0):
            try:
                effect.readings.append(self._reading(msg, mapping, entry, stamp, channels, extras, base))
            except PayloadRejected as exc:
                effect.rejections.append(self._reject(msg, exc.reason, exc.detail, entry.code))

    def _reading(
        self,
        msg: InboundMessage,
        mapping: SparkplugMap,
        entry: MonitorEntry,
        stamp: int | None,
        channels: dict[str, object],
        extras: dict[str, dict],
        base: dict,
    ) -> IncomingReading:
        if stamp is None:
            raise PayloadRejected(QuarantineCode.SCHEMA, "metric without a time stamp (metric or payload)")
        missing = [c for c, _ in mapping.metrics if channels.get(c) is None]
        if missing:
            raise PayloadRejected(
                QuarantineCode.DEVICE_MAPPING,
                f"the sample at {stamp} lacks channel(s) {', '.join(missing) or 'value'}: publish a "
                "counter's sample metrics together (docs/devices.md)",
            )
        status = "ok"
        if mapping.status_metric and stamp in extras.get(mapping.status_metric, {}):
            status = _status(extras[mapping.status_metric][stamp])
        source = {**base, "metrics": {name: channels[c] for c, name in mapping.metrics}}
        common = {
            "event_ms": stamp,
            "status": status,
            "source_topic": msg.topic,
            "received_at": msg.received_at,
            "future_tolerance": self.future_tolerance,
        }
        if entry.kind != "particles":
            value = channels[""]
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise PayloadRejected(
                    QuarantineCode.SCHEMA, f"metric {mapping.metrics[0][1]} is not a number"
                )
            return device_reading(entry, value=float(value), unit=mapping.unit, source=source, **common)
        counts: dict[str, int] = {}
        for channel, value in channels.items():
            if isinstance(value, bool) or not isinstance(value, int | float) or float(value) != int(value):
                raise PayloadRejected(QuarantineCode.SCHEMA, f"count of ≥{channel} µm is not a whole number")
            counts[channel] = int(value)
        volume = mapping.sample_volume_l
        if mapping.volume_metric:
            raw = extras.get(mapping.volume_metric, {}).get(stamp)
            if raw is None:
                raise PayloadRejected(
                    QuarantineCode.DEVICE_MAPPING, f"no {mapping.volume_metric} at the sample's time {stamp}"
                )
            volume = _litres(float(raw), mapping.volume_unit)
        return device_reading(entry, counts=counts, volume_l=volume, source=source, **common)


def _litres(value: float, unit: str) -> float:
    return converter("volume", unit)(value) * 1000.0


class SparkplugHost(Ingester):
    """The host application: an ingest worker on ``spBv1.0/#`` with a Sparkplug processor, its
    STATE birth and will (Sparkplug 3.0 §7.2: JSON, QoS 1, retained; the will carries the
    birth's time stamp), and the NCMDs its batches call for, sent after their commit."""

    def __init__(
        self, engine: Engine, broker: BrokerAddress, options: IngestOptions, *, host_id: str
    ) -> None:
        super().__init__(engine, broker, replace(options, subscription=f"{NAMESPACE}/#"))
        self.host_id = host_id
        self.processor = SparkplugProcessor(self.intake, future_tolerance=options.future_tolerance)
        self._stamp = int(utcnow().timestamp() * 1000)
        self.client.will_set(
            state_topic(host_id), state_payload(online=False, timestamp_ms=self._stamp), qos=1, retain=True
        )
        self.commands_sent = 0
        self.state_published = threading.Event()
        self._plain_disconnect = self.client.disconnect
        self.client.disconnect = self._disconnect  # the worker's clean stop goes through it

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        super()._on_connect(client, userdata, flags, reason_code, properties)
        if not reason_code.is_failure:
            client.publish(
                state_topic(self.host_id),
                state_payload(online=True, timestamp_ms=self._stamp),
                qos=1,
                retain=True,
            )
            self.state_published.set()

    def _commit(self, stop: threading.Event) -> bool:
        batch = self.pending[: self.options.batch_size]
        if not super()._commit(stop):
            return False
        for topic, payload in self.processor.committed(batch):
            log.info("asking %s for a rebirth", topic)
            self.client.publish(topic, payload, qos=0)
            self.commands_sent += 1
        return True

    def _disconnect(self, *args, **kwargs):
        """A clean stop sends no will: say offline first (§7.2), then disconnect."""
        if self.stats.connected:
            self.client.publish(
                state_topic(self.host_id),
                state_payload(online=False, timestamp_ms=self._stamp),
                qos=1,
                retain=True,
            )
        return self._plain_disconnect(*args, **kwargs)
