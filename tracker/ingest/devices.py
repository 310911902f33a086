"""What the device paths share: a record from a Sparkplug metric set or a counter's buffer becomes
a ``gmp.reading/1`` document, parsed by the same parser as a JSON monitor's message and
stored by the same intake (DESIGN §10: one intake).

Identity (docs/devices.md): ``seq`` is the sample's own time stamp in milliseconds since the
epoch. Sparkplug's ``seq`` wraps at 256 and restarts at every birth, ``bdSeq`` wraps too, and
a counter's record index is a position in a ring buffer that shifts once it is full: none of
them names one sample for ever, while the instrument's time stamp does (a counter does not
take two samples in the same millisecond). Redelivery, a rebirth, a host or poller restart
and a buffer read twice all give the same ``(monitor, seq)`` and the same content: a counted
duplicate. The same time stamp with other values is a ``seq_conflict`` (quarantined), as on
the JSON path. The protocol's own counters are kept in the stored document (``source``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from tracker.monitoring.intake import IncomingReading
from tracker.monitoring.snapshot import MonitorEntry
from tracker.wire.payload import KnownMonitor, parse_reading
from tracker.wire.topics import reading_topic


class _One:
    """A one-monitor directory for the parser: the mapping has already named the monitor."""

    def __init__(self, entry: MonitorEntry) -> None:
        self.known = KnownMonitor(
            site=entry.site_code,
            room=entry.room_code,
            code=entry.code,
            kind=entry.kind,
            channels=entry.channels,
        )

    def lookup(self, site: str, code: str) -> KnownMonitor | None:
        return self.known if (site, code) == (self.known.site, self.known.code) else None


def seq_of(event_ms: int) -> int:
    """The reading's identity within its monitor (see the module docstring)."""
    return int(event_ms)


def device_reading(
    entry: MonitorEntry,
    *,
    event_ms: int,
    status: str,
    source_topic: str,
    source: Mapping[str, object],
    received_at: datetime,
    counts: Mapping[str, int] | None = None,
    volume_l: float | None = None,
    value: float | None = None,
    unit: str | None = None,
    future_tolerance: timedelta = timedelta(minutes=5),
) -> IncomingReading:
    """One sample as the intake takes it; raises ``PayloadRejected`` like a JSON message would."""
    doc: dict[str, object] = {
        "schema": "gmp.reading/1",
        "monitor": entry.code,
        "seq": seq_of(event_ms),
        "ts": datetime.fromtimestamp(event_ms / 1000, tz=UTC).isoformat().replace("+00:00", "Z"),
        "kind": entry.kind,
        "status": status,
    }
    if entry.kind == "particles":
        doc["sample"] = {"volume": volume_l, "unit": "L"}
        doc["counts"] = dict(counts or {})
    else:
        doc["value"], doc["unit"] = value, unit
    doc["source"] = dict(source)
    payload = json.dumps(doc, ensure_ascii=False, sort_keys=True, default=str).encode()
    parsed = parse_reading(
        reading_topic(entry.site_code, entry.room_code, entry.code),
        payload,
        received_at,
        _One(entry),
        max_bytes=256 * 1024,  # a Sparkplug payload kept inside may be larger than a JSON reading
        future_tolerance=future_tolerance,
    )
    return IncomingReading(
        monitor_id=entry.id,
        seq=parsed.seq,
        event_time=parsed.event_time,
        status=parsed.status,
        values=parsed.values,
        digest=parsed.digest,
        topic=source_topic,
        payload=payload,
        received_at=received_at,
        volume_l=parsed.volume_l,
    )
