"""Every table of the tracker, imported in one place for Alembic's metadata."""

from sqlmodel import SQLModel

from tracker.audit import AuditEvent
from tracker.counters import IngestCounter
from tracker.excursions import Excursion
from tracker.facility import FacilityLimit, Monitor, Room, Site
from tracker.inhibits import Inhibit
from tracker.quarantine import QuarantinedMessage
from tracker.readings import EvaluationBasis, MonitorStatusEvent, RawMessage, Reading
from tracker.rollups import RollupHourly
from tracker.roomstate import RoomStateChange

metadata = SQLModel.metadata

__all__ = [
    "AuditEvent",
    "EvaluationBasis",
    "Excursion",
    "FacilityLimit",
    "IngestCounter",
    "Inhibit",
    "Monitor",
    "MonitorStatusEvent",
    "QuarantinedMessage",
    "RawMessage",
    "Reading",
    "RollupHourly",
    "Room",
    "RoomStateChange",
    "Site",
    "metadata",
]
