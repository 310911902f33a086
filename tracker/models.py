"""Every table of the application, imported in one place for Alembic's metadata.

The batch-record tables live in ``tracker.quality.batches``; they are
imported here only so that one migration history covers the whole schema.
"""

from sqlmodel import SQLModel

from tracker.core.audit import AuditEvent
from tracker.core.counters import IngestCounter
from tracker.facility.basis import EvaluationBasis
from tracker.facility.inhibits import Inhibit
from tracker.facility.models import FacilityLimit, FacilityRevision, Monitor, Room, Site
from tracker.facility.roomstate import OperationPeriod, RoomStateChange
from tracker.identity.sessions import WebSessionRow
from tracker.identity.signatures import Signature
from tracker.identity.tokens import ApiToken
from tracker.identity.users import RoleGrant, User
from tracker.monitoring.alarm_records import AlarmChallenge, ServiceHeartbeat, SystemAlarm
from tracker.monitoring.device_events import DeviceEvent
from tracker.monitoring.excursions import Excursion
from tracker.monitoring.ingest_state import IngestState
from tracker.monitoring.outbox import NotificationAttempt, NotificationOutbox
from tracker.monitoring.proposals import LimitProposal
from tracker.monitoring.quarantine import QuarantinedMessage
from tracker.monitoring.readings import MonitorStatusEvent, RawMessage, Reading, ReadingVerdict
from tracker.monitoring.rollups import RollupHourly
from tracker.monitoring.trending.store import ChangePoint
from tracker.monitoring.viable.models import ViableSample
from tracker.quality.batches.models import (
    Batch,
    ExcursionLink,
    PostReleaseAssessment,
    PostReleaseEvent,
    ProcessStep,
    ReviewAssessment,
    ViableReleaseReview,
)
from tracker.quality.deviations import (
    CapaAction,
    Deviation,
    DeviationAuthor,
    DeviationBatch,
    DeviationExcursion,
)

metadata = SQLModel.metadata

__all__ = [
    "AlarmChallenge",
    "ApiToken",
    "AuditEvent",
    "Batch",
    "CapaAction",
    "ChangePoint",
    "Deviation",
    "DeviationAuthor",
    "DeviationBatch",
    "DeviationExcursion",
    "DeviceEvent",
    "EvaluationBasis",
    "Excursion",
    "ExcursionLink",
    "FacilityLimit",
    "FacilityRevision",
    "IngestCounter",
    "IngestState",
    "Inhibit",
    "LimitProposal",
    "Monitor",
    "MonitorStatusEvent",
    "NotificationAttempt",
    "NotificationOutbox",
    "OperationPeriod",
    "PostReleaseAssessment",
    "PostReleaseEvent",
    "ProcessStep",
    "QuarantinedMessage",
    "RawMessage",
    "Reading",
    "ReadingVerdict",
    "ReviewAssessment",
    "RoleGrant",
    "RollupHourly",
    "Room",
    "RoomStateChange",
    "ServiceHeartbeat",
    "Signature",
    "Site",
    "SystemAlarm",
    "User",
    "ViableReleaseReview",
    "ViableSample",
    "WebSessionRow",
    "metadata",
]
