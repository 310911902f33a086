"""The API's own response documents (those that are not a service's read view).

Every ``/api/v1`` route declares what it answers — these, or a read view's type from the
service layer (``tracker.quality.views``, ``tracker.quality.batches.views``, …) — so that
``/openapi.json`` carries a schema for every response; pydantic validates and serialises the
returned dicts through them. They are ``TypedDict``s, as the read views are: the JSON keys are
exactly the dict's keys, ``null`` included.
"""

from __future__ import annotations

from typing import NotRequired

from typing_extensions import TypedDict

from tracker.quality.deviations import DeviationDoc


class Me(TypedDict):
    username: str
    full_name: str
    roles: list[str]
    via: str  # session | token


class LatestValue(TypedDict):
    monitor: str
    kind: str
    channel: str | None
    value: int | float | None  # null: the monitor has never reported
    level: str
    at: str | None
    #: older than the site's data-gap threshold: shown as no data with its age
    stale: bool
    age_s: float | None
    alert_low: float | None
    alert_high: float | None
    action_low: float | None
    action_high: float | None


class RoomTile(TypedDict):
    code: str
    name: str
    name_en: str
    grade: str
    background: str | None
    state: str
    worst: str  # in limit, alert, action, no data, invalid: the tile's colour
    open_excursions: int
    values: list[LatestValue]


class Dashboard(TypedDict):
    """The floor view; without a site (no facility loaded yet) only ``site: null`` and no rooms."""

    site: str | None
    timezone: NotRequired[str]
    as_of: NotRequired[str | None]
    rooms: list[RoomTile]


class Acknowledged(TypedDict):
    id: int
    acknowledged_by: str | None
    ack_level: str | None


class ReadingDoc(TypedDict):
    seq: int
    channel: str | None
    at: str
    value: int | float
    level: str
    state: str
    status: str


class DeviationState(DeviationDoc):
    """The deviation with what its current state still lacks (English and Chinese)."""

    missing: list[str]
    missing_zh: list[str]


class LinkDecided(TypedDict):
    id: int
    status: str


class QuarantinedDoc(TypedDict):
    id: int
    received_at: str
    topic: str
    reason: str
    detail: str
    monitor: str | None
    #: SHA-256 of topic, NUL and the whole payload as received
    payload_sha256: str
    #: bytes received (only a prefix is kept of a payload over the size limit)
    payload_size: int


class LoggedOut(TypedDict):
    logged_out: str
    via: str


class ChainStatus(TypedDict):
    intact: bool
    events: int
    first_broken: int | None


class PageCursors(TypedDict):
    total: int
    older: int | None
    newer: int | None


class QuarantinePageDoc(TypedDict):
    page: PageCursors
    messages: list[QuarantinedDoc]


class AuditEventDoc(TypedDict):
    id: int
    at: str
    actor: str
    action: str
    entity: str
    key: str
    before: str | None  # canonical JSON as recorded
    after: str | None
    reason: str | None
    hash: str


class AuditPage(TypedDict):
    chain: ChainStatus
    page: PageCursors
    events: list[AuditEventDoc]
