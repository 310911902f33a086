"""Every table of the application, imported in one place for Alembic's metadata.

The batch-record tables live in ``batch_records`` (which builds on ``tracker``); they are
imported here only so that one migration history covers the whole schema.
"""

from sqlmodel import SQLModel

from batch_records.models import Batch, ExcursionLink, ProcessStep, ReviewAssessment
from tracker.audit import AuditEvent
from tracker.counters import IngestCounter
from tracker.deviations import CapaAction, Deviation, DeviationBatch, DeviationExcursion
from tracker.excursions import Excursion
from tracker.facility import FacilityLimit, Monitor, Room, Site
from tracker.ingest_state import IngestState
from tracker.inhibits import Inhibit
from tracker.proposals import LimitProposal
from tracker.quarantine import QuarantinedMessage
from tracker.readings import EvaluationBasis, MonitorStatusEvent, RawMessage, Reading
from tracker.rollups import RollupHourly
from tracker.roomstate import OperationPeriod, RoomStateChange
from tracker.signatures import Signature
from tracker.users import User
from tracker.web.sessions import WebSessionRow

metadata = SQLModel.metadata

__all__ = [
    "AuditEvent",
    "Batch",
    "CapaAction",
    "Deviation",
    "DeviationBatch",
    "DeviationExcursion",
    "EvaluationBasis",
    "Excursion",
    "ExcursionLink",
    "FacilityLimit",
    "IngestCounter",
    "IngestState",
    "Inhibit",
    "LimitProposal",
    "Monitor",
    "MonitorStatusEvent",
    "OperationPeriod",
    "ProcessStep",
    "QuarantinedMessage",
    "RawMessage",
    "Reading",
    "ReviewAssessment",
    "RollupHourly",
    "Room",
    "RoomStateChange",
    "Signature",
    "Site",
    "User",
    "WebSessionRow",
    "metadata",
]
