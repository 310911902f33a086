"""Register maps of Modbus particle counters: a data file per model, and the pure decoding of
one buffered record from its registers (``tracker/wire/registermaps/*.toml``).

Shared by the poller (``tracker.ingest.modbus``) and the simulated counter (``simulators``):
what one writes into registers and what the other reads out are one contract.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

MAPS = Path(__file__).parent / "registermaps"
HOLDING_BASE = 40001
INPUT_BASE = 30001


class RegisterMapError(ValueError):
    """A register map file that cannot be used, or registers that are not a record."""


@dataclass(frozen=True, slots=True)
class RegisterMap:
    model: str
    name: str
    source: str
    nominal_flow_l_min: float
    #: holding registers as 0-based protocol addresses
    record_count: int
    record_index: int
    device_status: int
    newest: int
    #: input registers of one record, 0-based protocol address and length
    record_first: int
    record_length: int
    timestamp: int  # offsets inside the record block
    sample_time_s: int
    data_status: int
    channel_1: int
    channels: int
    device_bits: dict[str, int]
    data_bits: dict[str, int]


@dataclass(frozen=True, slots=True)
class CounterRecord:
    """One sample as the instrument keeps it in its buffer."""

    timestamp: int  # seconds since the epoch, the instrument's clock
    sample_time_s: int
    data_status: int
    counts: tuple[int, ...]  # cumulative counts of channel 1..n

    @property
    def event_time(self) -> datetime:
        return datetime.fromtimestamp(self.timestamp, tz=UTC)


@cache
def load_register_map(model: str) -> RegisterMap:
    """The map of ``model`` (a file name in ``registermaps``), validated."""
    path = MAPS / f"{model}.toml"
    if "/" in model or not path.is_file():
        known = ", ".join(sorted(p.stem for p in MAPS.glob("*.toml")))
        raise RegisterMapError(f"no register map {model!r}; known: {known}")
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    holding, record = data["holding"], data["record"]
    first = record["first"] - INPUT_BASE
    if data.get("word_order", "big") != "big" or data.get("timestamp") != "unix_utc":
        raise RegisterMapError(f"{path.name}: only big-endian words and UTC epoch stamps are supported")
    if data.get("counts") != "cumulative":
        raise RegisterMapError(f"{path.name}: only cumulative counts are supported")
    offset = {
        k: record[k] - INPUT_BASE - first for k in ("timestamp", "sample_time_s", "data_status", "channel_1")
    }
    if offset["channel_1"] + 2 * record["channels"] > record["length"]:
        raise RegisterMapError(f"{path.name}: the channels do not fit in the record block")
    return RegisterMap(
        model=data["model"],
        name=data["name"],
        source=data["source"],
        nominal_flow_l_min=float(data["nominal_flow_l_min"]),
        record_count=holding["record_count"] - HOLDING_BASE,
        record_index=holding["record_index"] - HOLDING_BASE,
        device_status=holding["device_status"] - HOLDING_BASE,
        newest=holding["newest"],
        record_first=first,
        record_length=record["length"],
        channels=record["channels"],
        device_bits=dict(data["device_status_bits"]),
        data_bits=dict(data["data_status_bits"]),
        **offset,
    )


def _u32(words: list[int], at: int) -> int:
    return ((words[at] & 0xFFFF) << 16) | (words[at + 1] & 0xFFFF)


def decode_record(regmap: RegisterMap, words: list[int]) -> CounterRecord:
    """The record in ``words`` (the block read from ``record_first``)."""
    if len(words) < regmap.record_length:
        raise RegisterMapError(
            f"record block has {len(words)} registers, the map needs {regmap.record_length}"
        )
    return CounterRecord(
        timestamp=_u32(words, regmap.timestamp),
        sample_time_s=_u32(words, regmap.sample_time_s),
        data_status=_u32(words, regmap.data_status),
        counts=tuple(_u32(words, regmap.channel_1 + 2 * i) for i in range(regmap.channels)),
    )


def encode_record(regmap: RegisterMap, record: CounterRecord) -> list[int]:
    """The registers a counter shows for ``record`` (the simulated counter serves these)."""
    words = [0] * regmap.record_length

    def put(at: int, value: int) -> None:
        words[at], words[at + 1] = (value >> 16) & 0xFFFF, value & 0xFFFF

    put(regmap.timestamp, record.timestamp)
    put(regmap.sample_time_s, record.sample_time_s)
    put(regmap.data_status, record.data_status)
    for i, count in enumerate(record.counts[: regmap.channels]):
        put(regmap.channel_1 + 2 * i, count)
    return words


def bit(value: int, position: int | None) -> bool:
    return position is not None and bool((value >> position) & 1)
