"""Topic scheme of wire contract v1 (DESIGN §5): ``gmp/{site}/{room}/{monitor}``."""

from __future__ import annotations

from dataclasses import dataclass

ROOT = "gmp"
STATUS_SUFFIX = "status"


@dataclass(frozen=True, slots=True)
class TopicAddress:
    """Where a message says it comes from; the registry decides whether that is true."""

    site: str
    room: str
    monitor: str
    is_status: bool = False


def reading_topic(site: str, room: str, monitor: str) -> str:
    """Topic a monitor publishes its readings on."""
    return f"{ROOT}/{site}/{room}/{monitor}"


def status_topic(site: str, room: str, monitor: str) -> str:
    """Retained ``online|offline`` topic, also the monitor's MQTT last will."""
    return f"{reading_topic(site, room, monitor)}/{STATUS_SUFFIX}"


def parse_topic(topic: str) -> TopicAddress | None:
    """Split a topic of the v1 scheme; ``None`` when it is not one."""
    parts = topic.split("/")
    if len(parts) == 4 and parts[0] == ROOT and all(parts[1:]):
        return TopicAddress(parts[1], parts[2], parts[3])
    if len(parts) == 5 and parts[0] == ROOT and parts[4] == STATUS_SUFFIX and all(parts[1:4]):
        return TopicAddress(parts[1], parts[2], parts[3], is_status=True)
    return None
