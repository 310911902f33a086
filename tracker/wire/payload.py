"""Wire contract v1: bytes on a topic → a normalised reading, or a typed refusal.

``parse_reading`` is pure: given the topic, the payload bytes, the time of receipt and a
directory of known monitors, it returns a :class:`ParsedReading` or raises
:class:`PayloadRejected` carrying one of the stable reason codes of DESIGN §9.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from itertools import pairwise
from typing import Annotated, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tracker.wire.topics import parse_topic
from tracker.wire.units import UnitProblem, converter

SCHEMA_V1 = "gmp.reading/1"
#: readings stamped earlier come from a monitor whose clock was reset (1970 and the like)
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)


def printable(text: str, limit: int = 2000) -> str:
    """Text fit for a database column and a person: control characters escaped, length capped."""
    return "".join(c if c.isprintable() or c in "\n\t" else f"\\x{ord(c):02x}" for c in text[:limit])


class QuarantineCode(StrEnum):
    """Stable quarantine reason codes (DESIGN §9); never rename one."""

    BAD_JSON = "bad_json"
    SCHEMA = "schema"
    UNKNOWN_MONITOR = "unknown_monitor"
    ROOM_MISMATCH = "room_mismatch"
    BAD_UNIT = "bad_unit"
    OUT_OF_RANGE = "out_of_range"
    FUTURE_TIMESTAMP = "future_timestamp"
    TOO_LARGE = "too_large"
    #: same (monitor, seq) as a stored reading but different content: a counter reset
    #: or a misbehaving gateway. Kept for QA, never merged silently (extends DESIGN §9).
    SEQ_CONFLICT = "seq_conflict"
    #: a Sparkplug B or Modbus message that cannot be decoded (docs/devices.md)
    DEVICE_PAYLOAD = "device_payload"
    #: a Sparkplug birth or data whose metrics do not match the facility file's mapping
    DEVICE_MAPPING = "device_mapping"


class PayloadRejected(ValueError):
    """Why a message cannot become a reading; ``detail`` is meant for a person."""

    def __init__(self, reason: QuarantineCode, detail: str, monitor: str | None = None) -> None:
        detail = printable(detail)
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail
        self.monitor = None if monitor is None else printable(monitor, 60)


@dataclass(frozen=True, slots=True)
class KnownMonitor:
    """What the parser needs from the facility registry about one monitor."""

    site: str
    room: str
    code: str
    kind: str
    channels: tuple[str, ...] = ()


class MonitorDirectory(Protocol):
    def lookup(self, site: str, code: str) -> KnownMonitor | None: ...


@dataclass(frozen=True, slots=True)
class ParsedReading:
    """One message, normalised: ``values`` maps channel ("" if none) to canonical units."""

    monitor: KnownMonitor
    seq: int
    event_time: datetime
    status: str
    values: Mapping[str, float]
    digest: str  # content identity, to tell a true duplicate from a reused seq
    #: particles: the sampled volume in litres (volume-aware evaluation needs the counts)
    volume_l: float | None = None


@dataclass(frozen=True, slots=True)
class StatusMessage:
    """Retained ``online|offline`` from a monitor (or its last will)."""

    monitor: KnownMonitor
    online: bool


# --------------------------------------------------------------------------- schema

Number = Annotated[float, Field(allow_inf_nan=False)]


class _Sample(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False)
    volume: Number
    unit: str


class _Payload(BaseModel):
    model_config = ConfigDict(extra="allow")

    schema_: Literal["gmp.reading/1"] = Field(alias="schema")
    monitor: str = Field(min_length=1, max_length=60, pattern=r"^[^\x00-\x1f\x7f/+#]+$")
    seq: int = Field(ge=0, le=2**63 - 1)
    ts: datetime
    kind: Literal["particles", "pressure", "temperature", "humidity"]
    #: ``stopped``: a particle counter that reports it is not sampling (docs/devices.md)
    status: Literal["ok", "fault", "calibration", "maintenance", "stopped"] = "ok"
    sample: _Sample | None = None
    counts: dict[str, int] | None = Field(default=None, max_length=16)
    value: Number | None = None
    unit: str | None = None

    @field_validator("ts")
    @classmethod
    def _aware(cls, ts: datetime) -> datetime:
        if ts.tzinfo is None:
            raise ValueError("timestamp needs a UTC offset (e.g. Z or +08:00)")
        ts = ts.astimezone(UTC)
        if ts < EARLIEST:
            raise ValueError(f"timestamp before {EARLIEST.date()}: the monitor's clock is not set")
        return ts

    @field_validator("seq", mode="before")
    @classmethod
    def _integral(cls, seq: object) -> object:
        if isinstance(seq, bool) or not isinstance(seq, int):
            raise ValueError("seq must be an integer")
        return seq


def _first_error(exc: ValidationError) -> tuple[QuarantineCode, str]:
    errors = exc.errors(include_url=False)
    if any(e["type"] in ("json_invalid", "json_type") for e in errors):
        return QuarantineCode.BAD_JSON, "payload is not valid UTF-8 JSON: " + errors[0]["msg"]
    parts = []
    for e in errors[:3]:
        loc = ".".join(str(p) for p in e["loc"]) or "payload"
        parts.append(f"{loc}: {e['msg']}")
    return QuarantineCode.SCHEMA, "; ".join(parts)


def _size_key(size: str) -> str:
    """Normalise particle-size keys: "5" and "5.00" are the 5.0 µm channel."""
    try:
        value = float(size)
    except ValueError:
        raise PayloadRejected(QuarantineCode.SCHEMA, f"counts key {size!r} is not a particle size") from None
    if not math.isfinite(value) or value <= 0:
        raise PayloadRejected(QuarantineCode.SCHEMA, f"counts key {size!r} is not a particle size")
    return f"{value:.1f}"


# plausibility bounds: beyond these the value is impossible for the instrument class
_PLAUSIBLE = {"pressure": (-2000.0, 2000.0), "temperature": (-60.0, 120.0), "humidity": (0.0, 100.0)}


def parse_reading(
    topic: str,
    payload: bytes,
    received_at: datetime,
    directory: MonitorDirectory,
    *,
    max_bytes: int = 16 * 1024,
    future_tolerance: timedelta = timedelta(minutes=5),
) -> ParsedReading:
    """Turn one message into a reading in canonical units, or raise :class:`PayloadRejected`."""
    if len(payload) > max_bytes:
        raise PayloadRejected(QuarantineCode.TOO_LARGE, f"{len(payload)} bytes > limit of {max_bytes}")
    address = parse_topic(topic)
    if address is None or address.is_status:
        raise PayloadRejected(QuarantineCode.SCHEMA, f"topic {topic!r} is not gmp/<site>/<room>/<monitor>")
    try:
        msg = _Payload.model_validate_json(payload)
    except ValidationError as exc:
        reason, detail = _first_error(exc)
        raise PayloadRejected(reason, detail) from None
    if msg.monitor != address.monitor:
        raise PayloadRejected(
            QuarantineCode.SCHEMA,
            f"payload names monitor {msg.monitor!r} but the topic names {address.monitor!r}",
            msg.monitor,
        )
    known = directory.lookup(address.site, msg.monitor)
    if known is None:
        raise PayloadRejected(
            QuarantineCode.UNKNOWN_MONITOR,
            f"no monitor {msg.monitor!r} registered at site {address.site!r}",
            msg.monitor,
        )
    if known.room != address.room:
        raise PayloadRejected(
            QuarantineCode.ROOM_MISMATCH,
            f"monitor {msg.monitor} is registered in room {known.room}, topic says {address.room}",
            msg.monitor,
        )
    if msg.kind != known.kind:
        raise PayloadRejected(
            QuarantineCode.SCHEMA,
            f"monitor {msg.monitor} is a {known.kind} monitor, payload says {msg.kind}",
            msg.monitor,
        )
    if msg.ts > received_at + future_tolerance:
        raise PayloadRejected(
            QuarantineCode.FUTURE_TIMESTAMP,
            f"ts {msg.ts.isoformat()} is {(msg.ts - received_at)} ahead of "
            f"receipt (tolerance {future_tolerance})",
            msg.monitor,
        )
    volume_l = None
    if msg.kind == "particles":
        values, volume_l = _particles(msg, known)
    else:
        values = _scalar(msg, known)
    digest = hashlib.blake2b(
        repr((msg.ts.isoformat(), msg.status, sorted(values.items()))).encode(), digest_size=16
    ).hexdigest()
    return ParsedReading(
        monitor=known,
        seq=msg.seq,
        event_time=msg.ts,
        status=msg.status,
        values=values,
        digest=digest,
        volume_l=volume_l,
    )


def _particles(msg: _Payload, known: KnownMonitor) -> tuple[dict[str, float], float]:
    if msg.sample is None or msg.counts is None or msg.value is not None:
        raise PayloadRejected(
            QuarantineCode.SCHEMA,
            "a particles reading carries 'sample' and 'counts' (and no 'value')",
            known.code,
        )
    try:
        to_m3 = converter("volume", msg.sample.unit)
    except UnitProblem as exc:
        raise PayloadRejected(QuarantineCode.BAD_UNIT, str(exc), known.code) from None
    volume_m3 = to_m3(msg.sample.volume)
    if not volume_m3 > 1e-9:  # also catches denormals that would make the concentration inf
        raise PayloadRejected(
            QuarantineCode.OUT_OF_RANGE,
            f"sampled volume {msg.sample.volume} {msg.sample.unit} is not positive",
            known.code,
        )
    counts: dict[str, int] = {}
    for size, count in msg.counts.items():
        key = _size_key(size)
        if key in counts:
            raise PayloadRejected(
                QuarantineCode.SCHEMA, f"counts name the ≥{key} µm channel twice", known.code
            )
        if count < 0:
            raise PayloadRejected(
                QuarantineCode.OUT_OF_RANGE, f"negative count {count} at ≥{key} µm", known.code
            )
        counts[key] = count
    missing = [c for c in known.channels if c not in counts]
    if missing:
        raise PayloadRejected(
            QuarantineCode.SCHEMA, f"counts lack channel(s) {', '.join(missing)} µm", known.code
        )
    ordered = sorted(counts.items(), key=lambda kv: float(kv[0]))
    for (small, n_small), (big, n_big) in pairwise(ordered):
        if n_big > n_small:
            raise PayloadRejected(
                QuarantineCode.OUT_OF_RANGE,
                f"cumulative counts must not grow with size: ≥{big} µm {n_big} > ≥{small} µm {n_small}",
                known.code,
            )
    # only the monitor's registered channels become readings; others stay in the raw payload
    return (
        {size: round(counts[size] / volume_m3, 3) for size in known.channels},
        round(volume_m3 * 1000.0, 6),
    )


def _scalar(msg: _Payload, known: KnownMonitor) -> dict[str, float]:
    if msg.value is None or msg.unit is None or msg.counts is not None:
        raise PayloadRejected(
            QuarantineCode.SCHEMA, f"a {msg.kind} reading carries 'value' and 'unit'", known.code
        )
    try:
        convert = converter(msg.kind, msg.unit)
    except UnitProblem as exc:
        raise PayloadRejected(QuarantineCode.BAD_UNIT, str(exc), known.code) from None
    value = round(convert(msg.value), 6)
    low, high = _PLAUSIBLE[msg.kind]
    if not low <= value <= high:
        raise PayloadRejected(
            QuarantineCode.OUT_OF_RANGE,
            f"{msg.kind} {msg.value} {msg.unit} "
            f"({value:g} canonical) is outside the possible {low:g}…{high:g}",
            known.code,
        )
    return {"": value}


def parse_status(
    topic: str, payload: bytes, directory: MonitorDirectory, *, max_bytes: int = 16 * 1024
) -> StatusMessage:
    """A retained status message; unknown monitors, bad values and oversized payloads are refused
    like readings."""
    if len(payload) > max_bytes:
        raise PayloadRejected(QuarantineCode.TOO_LARGE, f"{len(payload)} bytes > limit of {max_bytes}")
    address = parse_topic(topic)
    if address is None or not address.is_status:
        raise PayloadRejected(QuarantineCode.SCHEMA, f"topic {topic!r} is not a status topic")
    text = payload.decode("utf-8", errors="replace").strip().lower()
    if text not in ("online", "offline"):
        raise PayloadRejected(
            QuarantineCode.SCHEMA, f"status must be online or offline, got {text[:40]!r}", address.monitor
        )
    known = directory.lookup(address.site, address.monitor)
    if known is None:
        raise PayloadRejected(
            QuarantineCode.UNKNOWN_MONITOR,
            f"no monitor {address.monitor!r} at site {address.site!r}",
            address.monitor,
        )
    if known.room != address.room:
        raise PayloadRejected(
            QuarantineCode.ROOM_MISMATCH,
            f"monitor {known.code} is registered in room {known.room}, topic says {address.room}",
            known.code,
        )
    return StatusMessage(known, text == "online")
