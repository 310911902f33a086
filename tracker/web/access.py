"""Who may call what: one declarative table, ``"METHOD /path"`` → allowed roles.

Every route of the app must appear here (``create_app`` refuses to start otherwise) and the
authorisation-matrix test walks this table: each route × each role and anonymous gets exactly
the answer the table implies. ``anonymous`` marks routes open without login. Separation of
duties beyond the role (nobody approves their own entry, production head ≠ QA signer) stays
in the service layer, which refuses with its own reasons.
"""

from __future__ import annotations

from tracker.identity.users import ROLES

ANONYMOUS = "anonymous"
PUBLIC = frozenset({ANONYMOUS, *ROLES})
ANY = frozenset(ROLES)  # any logged-in user
QA = frozenset({"qa"})
QP = frozenset({"qp"})
PRODUCTION = frozenset({"production_head"})
SHOP_FLOOR = frozenset({"operator", "production_head"})
DECIDERS = frozenset({"qa", "qp"})
CAPA_OWNERS = frozenset({"operator", "production_head", "qa", "qp"})
AUDITORS = frozenset({"qa", "qp", "admin", "viewer"})
ADMIN = frozenset({"admin"})
#: who records viable sampling and reading steps (``tracker.monitoring.viable.lifecycle.WORKERS``)
VIABLE_WORKERS = frozenset({"operator", "production_head", "qa"})
REVEALERS = frozenset({"identity_reveal"})

ACCESS: dict[str, frozenset[str]] = {
    # --- pages -------------------------------------------------------------------------------
    "GET /healthz": PUBLIC,
    "GET /login": PUBLIC,
    "POST /login": PUBLIC,
    "GET /lang/{code}": PUBLIC,
    "POST /logout": ANY,
    "GET /account/password": ANY,
    "POST /account/password": ANY,
    "GET /": ANY,
    "GET /dashboard/live": ANY,
    "GET /dashboard/events": ANY,
    "GET /excursions": ANY,
    "POST /excursions/acknowledge": QA,
    "GET /excursions/{excursion_id}": ANY,
    "POST /excursions/{excursion_id}/acknowledge": QA,
    "POST /excursions/{excursion_id}/deviation": QA,
    "GET /monitors/{code}": ANY,
    "GET /monitors/{code}/chart.svg": ANY,
    "GET /monitors/{code}/control": ANY,
    "GET /monitors/{code}/control.svg": ANY,
    "GET /deviations": ANY,
    "GET /deviations/{number}": ANY,
    "POST /deviations/{number}/investigate": QA,
    "POST /deviations/{number}/update": QA,
    "POST /deviations/{number}/assess": QA,
    "POST /deviations/{number}/approve": QA,
    "POST /deviations/{number}/no-capa": QA,
    "POST /deviations/{number}/close": QA,
    "POST /deviations/{number}/capa": QA,
    "POST /capa/{capa_id}/done": CAPA_OWNERS,
    "POST /capa/{capa_id}/check": QA,
    "POST /links/decide": QA,
    "POST /links/{link_id}/decide": QA,
    "GET /viable": ANY,
    "GET /viable/s/{code}": ANY,
    "GET /viable/s/{code}/label.svg": ANY,
    "POST /viable/s/{code}/take": VIABLE_WORKERS,
    "POST /viable/s/{code}/incubate": VIABLE_WORKERS,
    "POST /viable/s/{code}/read": VIABLE_WORKERS,
    "POST /viable/s/{code}/verify": VIABLE_WORKERS,
    "POST /viable/s/{code}/identify": VIABLE_WORKERS,
    "POST /viable/s/{code}/close": VIABLE_WORKERS,
    "POST /viable/s/{code}/void": VIABLE_WORKERS,
    "GET /batches": ANY,
    "POST /batches": SHOP_FLOOR,
    "GET /batches/{number}": ANY,
    "POST /batches/{number}/reveal": REVEALERS,
    "GET /reads": QA,
    "POST /exchange/package": QA,
    "POST /batches/{number}/steps": SHOP_FLOOR,
    "POST /steps/{step_id}/end": SHOP_FLOOR,
    "POST /batches/{number}/complete": SHOP_FLOOR,
    "POST /batches/{number}/sign": PRODUCTION,
    "POST /batches/{number}/review": QA,
    "POST /batches/{number}/release": QP,
    "POST /batches/{number}/reject": DECIDERS,
    "POST /batches/{number}/assess": QA,
    "POST /batches/{number}/post-release": QA,
    "POST /batches/{number}/viable-review": DECIDERS,
    "GET /system-alarms": AUDITORS,
    "POST /system-alarms/{alarm_id}/acknowledge": frozenset({"qa", "admin"}),
    "GET /challenges": AUDITORS,
    "POST /challenges": QA,
    "POST /challenges/{challenge_id}/end": QA,
    "POST /challenges/{challenge_id}/sign": QA,
    "GET /reports/challenges/{challenge_id}/record.json": AUDITORS,
    "GET /reports/challenges/{challenge_id}/record.pdf": AUDITORS,
    "GET /quarantine": ANY,
    "GET /audit": AUDITORS,
    "GET /reports/annual": AUDITORS,
    "GET /limits": ANY,
    "POST /limits/proposals": QA,
    "POST /limits/proposals/{proposal_id}/approve": QA,
    "POST /limits/proposals/{proposal_id}/reject": QA,
    "GET /users": ADMIN,
    "POST /users": ADMIN,
    "POST /users/{username}/clear-failures": ADMIN,
    "POST /users/{username}/deactivate": ADMIN,
    "POST /users/{username}/roles": ADMIN,
    "POST /users/{username}/reset-password": ADMIN,
    "GET /access": QA,
    "POST /access/{grant_id}/approve": QA,
    # --- OpenAPI ------------------------------------------------------------------------------
    "GET /openapi.json": PUBLIC,
    "GET /docs": PUBLIC,
    # --- JSON API -----------------------------------------------------------------------------
    "POST /api/v1/tokens": PUBLIC,
    "GET /api/v1/tokens": ANY,
    "POST /api/v1/tokens/{token_id}/revoke": ANY,
    "POST /api/v1/logout": ANY,
    "GET /api/v1/me": ANY,
    "GET /api/v1/dashboard": ANY,
    "GET /api/v1/excursions": ANY,
    "GET /api/v1/notifications/failed": ANY,
    "POST /api/v1/excursions/{excursion_id}/acknowledge": QA,
    "GET /api/v1/monitors/{code}/readings": ANY,
    "GET /api/v1/deviations": ANY,
    "POST /api/v1/deviations": QA,
    "GET /api/v1/deviations/{number}": ANY,
    "POST /api/v1/deviations/{number}/investigate": QA,
    "POST /api/v1/deviations/{number}/update": QA,
    "POST /api/v1/deviations/{number}/assess": QA,
    "POST /api/v1/deviations/{number}/approve": QA,
    "POST /api/v1/deviations/{number}/no-capa": QA,
    "POST /api/v1/deviations/{number}/close": QA,
    "POST /api/v1/deviations/{number}/capa": QA,
    "POST /api/v1/capa/{capa_id}/done": CAPA_OWNERS,
    "POST /api/v1/capa/{capa_id}/check": QA,
    "GET /api/v1/links": ANY,
    "POST /api/v1/links/{link_id}/decide": QA,
    "GET /api/v1/batches": ANY,
    "GET /api/v1/batches/{number}": ANY,
    "POST /api/v1/batches/{number}/reveal": REVEALERS,
    "GET /api/v1/reads": QA,
    "POST /api/v1/batches/{number}/sign": PRODUCTION,
    "POST /api/v1/batches/{number}/review": QA,
    "POST /api/v1/batches/{number}/release": QP,
    "POST /api/v1/batches/{number}/reject": DECIDERS,
    "POST /api/v1/batches/{number}/post-release": QA,
    "POST /api/v1/batches/{number}/viable-review": DECIDERS,
    "GET /api/v1/quarantine": ANY,
    "GET /api/v1/audit": AUDITORS,
    "GET /api/v1/limits/proposals": ANY,
    "POST /api/v1/limits/proposals": QA,
    "POST /api/v1/limits/proposals/{proposal_id}/approve": QA,
    "POST /api/v1/limits/proposals/{proposal_id}/reject": QA,
    "GET /api/v1/users": ADMIN,
}


def allowed(method: str, path: str) -> frozenset[str] | None:
    return ACCESS.get(f"{method} {path}")
