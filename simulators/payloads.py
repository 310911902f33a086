"""Wire contract v1 payloads (DESIGN §5): readings, unit conversion and deliberately bad messages.

Conversion factors are hard-coded (no pint): the simulator stands in for devices, which
report in their own unit; the tracker is the one that normalises with pint.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

SCHEMA = "gmp.reading/1"
GHOST_MONITOR = "ZZ-GHOST"
#: Malformed messages naming a real monitor use seq numbers from here up: never a real seq.
MALFORMED_SEQ_BASE = 900_000_000
FUTURE_SKEW = timedelta(days=3650)
TOO_LARGE_BYTES = 70 * 1024
MALFORMED_VARIANTS = (
    "bad_json",
    "schema",
    "unknown_monitor",
    "room_mismatch",
    "bad_unit",
    "future_timestamp",
    "out_of_range",
    "too_large",
)

#: Litres per unit of sampled volume.
VOLUME_UNITS = {"L": 1.0, "m^3": 1000.0, "ft^3": 28.316846592}
#: Pascal per unit of differential pressure.
PRESSURE_UNITS = {"Pa": 1.0, "hPa": 100.0, "mbar": 100.0, "inH2O": 249.08891, "mmH2O": 9.80665}
TEMPERATURE_UNITS = ("degC", "degF", "K")
HUMIDITY_UNITS = ("percent",)
#: Units a monitor of each kind may switch to (for particles: the sample-volume unit).
UNITS_BY_KIND: dict[str, tuple[str, ...]] = {
    "particles": tuple(VOLUME_UNITS),
    "pressure": tuple(PRESSURE_UNITS),
    "temperature": TEMPERATURE_UNITS,
    "humidity": HUMIDITY_UNITS,
}
CANONICAL_UNIT = {"particles": "L", "pressure": "Pa", "temperature": "degC", "humidity": "percent"}
#: Decimal places a device reports in each unit (enough to keep the canonical resolution).
DECIMALS = {
    "L": 2,
    "m^3": 6,
    "ft^3": 6,
    "Pa": 1,
    "hPa": 4,
    "mbar": 4,
    "inH2O": 6,
    "mmH2O": 3,
    "degC": 2,
    "degF": 2,
    "K": 2,
    "percent": 1,
}


def iso_z(ts: datetime) -> str:
    """ISO 8601 UTC with ``Z`` and whole seconds, as the contract asks."""
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def convert(kind: str, canonical: float, unit: str) -> float:
    """Express a canonical value (L, Pa, °C, %RH) in ``unit``, rounded as a device would."""
    if kind == "particles":
        value = canonical / VOLUME_UNITS[unit]
    elif kind == "pressure":
        value = canonical / PRESSURE_UNITS[unit]
    elif kind == "temperature":
        value = {"degC": canonical, "degF": canonical * 9 / 5 + 32, "K": canonical + 273.15}[unit]
    elif unit == "percent":
        value = canonical
    else:
        raise ValueError(f"unit {unit!r} is not a {kind} unit")
    return round(value, DECIMALS[unit])


def to_canonical(kind: str, value: float, unit: str) -> float:
    """Inverse of :func:`convert` (for tests and summaries)."""
    if kind == "particles":
        return value * VOLUME_UNITS[unit]
    if kind == "pressure":
        return value * PRESSURE_UNITS[unit]
    if kind == "temperature":
        return {"degC": value, "degF": (value - 32) * 5 / 9, "K": value - 273.15}[unit]
    return value


def particle_reading(
    monitor: str,
    seq: int,
    ts: datetime,
    *,
    volume: float,
    unit: str,
    counts: Mapping[str, int],
    status: str = "ok",
) -> dict[str, Any]:
    """A particle-counter reading; ``volume`` is already in ``unit``."""
    return {
        "schema": SCHEMA,
        "monitor": monitor,
        "seq": seq,
        "ts": iso_z(ts),
        "kind": "particles",
        "sample": {"volume": volume, "unit": unit},
        "counts": dict(counts),
        "status": status,
    }


def value_reading(
    monitor: str, seq: int, ts: datetime, *, kind: str, value: float, unit: str, status: str = "ok"
) -> dict[str, Any]:
    """A pressure, temperature or humidity reading; ``value`` is already in ``unit``."""
    return {
        "schema": SCHEMA,
        "monitor": monitor,
        "seq": seq,
        "ts": iso_z(ts),
        "kind": kind,
        "value": value,
        "unit": unit,
        "status": status,
    }


def encode(message: Mapping[str, Any]) -> bytes:
    """UTF-8 JSON, one reading per message."""
    return json.dumps(message, ensure_ascii=False).encode()


def sample_reading(kind: str, monitor: str, seq: int, ts: datetime) -> dict[str, Any]:
    """A plausible in-limit reading, the raw material of the malformed variants."""
    if kind == "particles":
        return particle_reading(monitor, seq, ts, volume=28.3, unit="L", counts={"0.5": 12, "5.0": 0})
    value = {"pressure": 15.0, "temperature": 22.0, "humidity": 50.0}[kind]
    return value_reading(monitor, seq, ts, kind=kind, value=value, unit=CANONICAL_UNIT[kind])


def malformed(variant: str, *, monitor: str, kind: str, seq: int, ts: datetime) -> bytes:
    """Bytes of one bad message of ``variant`` (the caller chooses the topic)."""
    message = sample_reading(kind, monitor, seq, ts)
    if variant == "bad_json":
        raw = encode(message)
        return raw[: len(raw) // 2]
    if variant == "schema":
        del message["seq"]
    elif variant == "bad_unit":
        _set_unit(message, "furlong")
    elif variant == "future_timestamp":
        # ten years ahead: in the future of the wall clock too, even when replaying a past day
        message["ts"] = iso_z(ts + FUTURE_SKEW)
    elif variant == "out_of_range":
        _make_impossible(message)
    elif variant == "too_large":
        return _padded(message, TOO_LARGE_BYTES)
    elif variant not in ("unknown_monitor", "room_mismatch"):
        raise ValueError(f"unknown malformed variant {variant!r}")
    return encode(message)


def _set_unit(message: dict[str, Any], unit: str) -> None:
    """Replace the unit: the sample-volume unit for particles, else the value unit."""
    if message["kind"] == "particles":
        message["sample"]["unit"] = unit
    else:
        message["unit"] = unit


def _make_impossible(message: dict[str, Any]) -> None:
    """Humidity 140 %, negative particle counts, or a temperature below absolute zero."""
    kind = message["kind"]
    if kind == "humidity":
        message["value"] = 140.0
    elif kind == "particles":
        message["counts"] = {"0.5": -5, "5.0": -1}
    elif kind == "temperature":
        message["value"] = -300.0
    else:
        raise ValueError("out_of_range needs a humidity, particles or temperature monitor")


def _padded(message: dict[str, Any], size: int) -> bytes:
    """A well-formed reading padded to exactly ``size`` bytes: only its size is wrong."""
    message["pad"] = ""
    filler = size - len(encode(message))
    message["pad"] = "x" * filler
    raw = encode(message)
    assert len(raw) == size
    return raw
