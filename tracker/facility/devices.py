"""Device mappings of the facility file: ``[[sparkplug]]`` and ``[[modbus]]`` (docs/devices.md).

A mapping says where a monitor's readings come from when the equipment does not speak our JSON
contract. It is configuration of the input path, not of evaluation: which limits judge a
reading, who is alarmed and what a release needs stay where they were. A change is therefore a
new facility revision (versioned, the loaded file's digest changes) without QA's e-signature;
the revision's stored settings keep the mapping (``devices``), and the Sparkplug host and the
Modbus poller read it from there, never from a file that was not loaded.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlmodel import Session, select

from tracker.core.errors import FacilityFileError, Reason
from tracker.facility.models import FacilityRevision, Site
from tracker.wire.registermap import RegisterMapError, load_register_map

SPARKPLUG_KEYS = (
    "monitor",
    "group",
    "edge_node",
    "device",
    "metrics",
    "metric",
    "unit",
    "volume_metric",
    "volume_unit",
    "sample_volume_l",
    "status_metric",
)
MODBUS_KEYS = ("monitor", "host", "port", "unit_id", "model", "channels", "poll_s", "flow_l_min", "timeout_s")
#: a counter is polled at least once an hour and at most once a second
POLL_RANGE_S = (1.0, 3600.0)


@dataclass(frozen=True)
class SparkplugMap:
    """One monitor fed by Sparkplug metrics of an edge node (or of one of its devices)."""

    monitor: str
    group: str
    edge_node: str
    device: str | None
    #: channel ("" for a scalar monitor, else the particle size) → metric name
    metrics: tuple[tuple[str, str], ...]
    unit: str | None = None  # scalar monitors: the unit of the metric's value
    volume_metric: str | None = None  # particles: the sampled volume, per message
    volume_unit: str = "L"
    sample_volume_l: float | None = None  # particles: a fixed sampled volume instead
    status_metric: str | None = None

    @property
    def metric_names(self) -> tuple[str, ...]:
        extra = (self.volume_metric, self.status_metric)
        return tuple(name for _, name in self.metrics) + tuple(n for n in extra if n)


@dataclass(frozen=True)
class ModbusMap:
    """One particle counter polled over Modbus TCP."""

    monitor: str
    host: str
    model: str
    #: particle size → the counter's channel number (1-based, as in the register map)
    channels: tuple[tuple[str, int], ...]
    port: int = 502
    unit_id: int = 1
    poll_s: float = 10.0
    flow_l_min: float | None = None
    timeout_s: float = 3.0


@dataclass(frozen=True)
class DevicesDef:
    sparkplug: tuple[SparkplugMap, ...] = field(default=())
    modbus: tuple[ModbusMap, ...] = field(default=())

    def __bool__(self) -> bool:
        return bool(self.sparkplug or self.modbus)

    def as_dict(self) -> dict:
        return {"sparkplug": [asdict(s) for s in self.sparkplug], "modbus": [asdict(m) for m in self.modbus]}

    @classmethod
    def from_dict(cls, data: dict | None) -> DevicesDef:
        data = data or {}

        def tuples(entry: dict, key: str) -> dict:
            return {**entry, key: tuple(tuple(pair) for pair in entry[key])}

        return cls(
            sparkplug=tuple(SparkplugMap(**tuples(s, "metrics")) for s in data.get("sparkplug", [])),
            modbus=tuple(ModbusMap(**tuples(m, "channels")) for m in data.get("modbus", [])),
        )


def _refuse(where: str, en: str, zh: str) -> FacilityFileError:
    return FacilityFileError(Reason(f"{where}: {en}", f"{where}：{zh}"))


def _text(entry: dict, key: str, where: str, *, required: bool = True, topic: bool = False) -> str | None:
    """A name; ``topic`` names are MQTT topic levels and may not hold / + #."""
    value = entry.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip() or (topic and any(c in value for c in "/+#")):
        extra_en, extra_zh = (" without / + #", "不含 / + # 的") if topic else ("", "")
        raise _refuse(where, f"'{key}' must be a non-empty name{extra_en}", f"'{key}' 须为{extra_zh}非空名称")
    return value


def _number(
    entry: dict, key: str, where: str, low: float, high: float, default: float | None
) -> float | None:
    value = entry.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise _refuse(
            where,
            f"'{key}' must be a number in [{low:g}, {high:g}]",
            f"'{key}' 须为 [{low:g}, {high:g}] 内的数字",
        )
    return float(value)


def _parse_sparkplug(i: int, entry: dict, monitors: dict[str, tuple[str, tuple[str, ...]]]) -> SparkplugMap:
    where = f"sparkplug[{i}] ({entry.get('monitor')})"
    code = _text(entry, "monitor", where)
    if code not in monitors:
        raise _refuse(where, f"unknown monitor {code!r}", f"未知监测点 {code!r}")
    kind, channels = monitors[code]
    if kind == "particles":
        metrics = entry.get("metrics")
        if not isinstance(metrics, dict) or set(map(str, metrics)) != set(channels) or entry.get("metric"):
            raise _refuse(
                where,
                f"a particle counter maps each of its channels {', '.join(channels)} with "
                'metrics = {"0.5" = "metric name", …}',
                f'粒子计数器须用 metrics = {{"0.5" = "指标名", …}} 映射其每个通道 {"、".join(channels)}',
            )
        pairs = tuple((str(size), _text(metrics, size, where)) for size in metrics)
        if not entry.get("volume_metric") and entry.get("sample_volume_l") is None:
            raise _refuse(
                where,
                "a particle counter needs volume_metric or sample_volume_l (the sampled volume)",
                "粒子计数器须指定 volume_metric 或 sample_volume_l（采样体积）",
            )
        unit = None
    else:
        if entry.get("metrics") or not entry.get("unit"):
            raise _refuse(
                where,
                f'a {kind} monitor maps one metric: metric = "name", unit = "Pa"',
                f'{kind} 监测点映射一个指标：metric = "名称"，unit = "Pa"',
            )
        pairs = (("", _text(entry, "metric", where)),)
        unit = str(entry["unit"])
    mapping = SparkplugMap(
        monitor=code,
        group=_text(entry, "group", where, topic=True),
        edge_node=_text(entry, "edge_node", where, topic=True),
        device=_text(entry, "device", where, required=False, topic=True),
        metrics=pairs,
        unit=unit,
        volume_metric=_text(entry, "volume_metric", where, required=False),
        volume_unit=str(entry.get("volume_unit", "L")),
        sample_volume_l=_number(entry, "sample_volume_l", where, 0.001, 1000.0, None),
        status_metric=_text(entry, "status_metric", where, required=False),
    )
    if len(set(mapping.metric_names)) != len(mapping.metric_names):
        raise _refuse(where, "a metric is mapped twice", "同一指标被映射了两次")
    return mapping


def _parse_modbus(i: int, entry: dict, monitors: dict[str, tuple[str, tuple[str, ...]]]) -> ModbusMap:
    where = f"modbus[{i}] ({entry.get('monitor')})"
    code = _text(entry, "monitor", where)
    if code not in monitors or monitors[code][0] != "particles":
        raise _refuse(
            where, f"{code!r} is not a particle monitor of the file", f"{code!r} 不是本文件中的粒子监测点"
        )
    model = _text(entry, "model", where)
    try:
        regmap = load_register_map(model)
    except RegisterMapError as exc:
        raise _refuse(where, str(exc), f"没有寄存器表 {model!r}") from None
    channels = entry.get("channels")
    wanted = monitors[code][1]
    if (
        not isinstance(channels, dict)
        or set(map(str, channels)) != set(wanted)
        or not all(isinstance(n, int) and 1 <= n <= regmap.channels for n in channels.values())
    ):
        raise _refuse(
            where,
            f"channels maps each size {', '.join(wanted)} to a channel 1–{regmap.channels} of the counter",
            f"channels 须把每个粒径 {'、'.join(wanted)} 映射到计数器的通道 1–{regmap.channels}",
        )
    host = entry.get("host")
    if not isinstance(host, str) or not host.strip():
        raise _refuse(where, "missing 'host'", "缺少 'host'")
    return ModbusMap(
        monitor=code,
        host=host.strip(),
        model=model,
        channels=tuple(sorted((str(s), int(n)) for s, n in channels.items())),
        port=int(_number(entry, "port", where, 1, 65535, 502)),
        unit_id=int(_number(entry, "unit_id", where, 0, 247, 1)),
        poll_s=_number(entry, "poll_s", where, *POLL_RANGE_S, 10.0),
        flow_l_min=_number(entry, "flow_l_min", where, 0.1, 1000.0, None),
        timeout_s=_number(entry, "timeout_s", where, 0.1, 60.0, 3.0),
    )


def parse_devices(
    sparkplug: list[dict[str, Any]],
    modbus: list[dict[str, Any]],
    monitors: dict[str, tuple[str, tuple[str, ...]]],
) -> DevicesDef:
    """Both tables, checked against the file's monitors (``code → (kind, channels)``)."""
    devices = DevicesDef(
        sparkplug=tuple(_parse_sparkplug(i, e, monitors) for i, e in enumerate(sparkplug)),
        modbus=tuple(_parse_modbus(i, e, monitors) for i, e in enumerate(modbus)),
    )
    seen: dict[str, str] = {}
    for table, code in [("sparkplug", s.monitor) for s in devices.sparkplug] + [
        ("modbus", m.monitor) for m in devices.modbus
    ]:
        if code in seen:
            raise _refuse(
                f"[[{table}]]",
                f"monitor {code} is mapped twice ({seen[code]} and {table}): one reading, one source",
                f"监测点 {code} 被映射了两次（{seen[code]} 与 {table}）：一个读数只能有一个来源",
            )
        seen[code] = table
    addresses = [
        (s.group, s.edge_node, s.device or "", name) for s in devices.sparkplug for name in s.metric_names
    ]
    if len(set(addresses)) != len(addresses):
        raise _refuse(
            "[[sparkplug]]",
            "one Sparkplug metric is mapped to two monitors",
            "同一个 Sparkplug 指标被映射到两个监测点",
        )
    return devices


def devices_of(session: Session, site: Site) -> DevicesDef:
    """The device mappings of the site's current revision (none before they existed)."""
    settings = session.exec(
        select(FacilityRevision.settings).where(
            FacilityRevision.site_id == site.id, FacilityRevision.revision == site.revision
        )
    ).first()
    return DevicesDef.from_dict(json.loads(settings).get("devices") if settings else None)
