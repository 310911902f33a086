"""API tokens for machine clients (``Authorization: Bearer <token>``), stored and revocable.

A token is 256 random bits; the table keeps only its SHA-256 (a copy of the table opens
nothing), who it belongs to, when it expires and whether it was revoked. A token also dies
with a password change (it names a fingerprint of the hash it was issued under) and with the
account's deactivation. Issuance and revocation are audited. Tokens authenticate requests;
they never sign: signatures always need the password.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from sqlmodel import Field, Session, SQLModel, select
from typing_extensions import TypedDict

from tracker.core import audit
from tracker.core.db import UTCDateTime
from tracker.core.errors import ConflictError, NotFoundError, Reason
from tracker.core.timeutil import iso_utc, utcnow
from tracker.identity.users import Authenticated, User

PREFIX = "gmpt_"


class ApiToken(SQLModel, table=True):
    __tablename__ = "api_token"

    id: int | None = Field(default=None, primary_key=True)
    token_hash: str = Field(max_length=64, unique=True, index=True)
    user_id: int = Field(foreign_key="app_user.id", index=True)
    #: the password hash's fingerprint at issuance: a password change ends the token
    password_fp: str = Field(max_length=16)
    created_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    expires_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    client: str | None = Field(default=None, max_length=64)
    revoked_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    revoked_by: str | None = Field(default=None, max_length=60)


class TokenDoc(TypedDict):
    """A token as its owner (or an administrator) sees it: never the token itself."""

    id: int
    username: str
    created_at: str
    expires_at: str
    client: str | None
    revoked_at: str | None
    revoked_by: str | None


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def fingerprint(password_hash: str) -> str:
    return hashlib.sha256(password_hash.encode()).hexdigest()[:16]


def issue(
    session: Session,
    *,
    who: Authenticated,
    days: int,
    client: str | None,
    now: datetime | None = None,
) -> tuple[str, ApiToken]:
    """A new token for a user who has just given their password; audited (``token.issue``)."""
    now = now or utcnow()
    user = session.get(User, who.user_id)
    token = PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(
        token_hash=token_hash(token),
        user_id=user.id,
        password_fp=fingerprint(user.password_hash),
        created_at=now,
        expires_at=now + timedelta(days=days),
        client=client,
    )
    session.add(row)
    session.flush()
    audit.record(
        session,
        actor=user.username,
        action="token.issue",
        entity="api_token",
        entity_key=str(row.id),
        after={"user": user.username, "expires_at": iso_utc(row.expires_at), "client": client},
        at=now,
    )
    return token, row


def holder(session: Session, token: str, *, now: datetime | None = None) -> tuple[ApiToken, User] | None:
    """The live token and its active user, or ``None`` (unknown, expired, revoked, password
    changed since, account deactivated). Reads only."""
    if not token.startswith(PREFIX) or len(token) > 100:
        return None
    now = now or utcnow()
    found = session.exec(
        select(ApiToken, User)
        .join(User, User.id == ApiToken.user_id)
        .where(ApiToken.token_hash == token_hash(token))
    ).first()
    if found is None:
        return None
    row, user = found
    if row.revoked_at is not None or row.expires_at <= now or not user.active:
        return None
    if fingerprint(user.password_hash) != row.password_fp:
        return None
    return row, user


def _revoke(session: Session, row: ApiToken, *, by: str, reason: str, now: datetime) -> None:
    row.revoked_at, row.revoked_by = now, by
    session.add(row)
    audit.record(
        session,
        actor=by,
        action="token.revoke",
        entity="api_token",
        entity_key=str(row.id),
        after={"revoked_at": iso_utc(now)},
        reason=reason,
        at=now,
    )


def revoke(
    session: Session,
    *,
    actor: Authenticated,
    token_id: int,
    reason: str,
    now: datetime | None = None,
) -> ApiToken:
    """End a token: its owner's, or anyone's by an administrator; audited (``token.revoke``)."""
    now = now or utcnow()
    row = session.get(ApiToken, token_id)
    if row is None or (row.user_id != actor.user_id and not actor.has("admin")):
        raise NotFoundError(Reason(f"no API token {token_id} of yours", f"没有您的 API 令牌 {token_id}"))
    if row.revoked_at is not None:
        raise ConflictError(
            Reason(f"API token {token_id} is revoked already", f"API 令牌 {token_id} 已被撤销")
        )
    _revoke(session, row, by=actor.username, reason=reason, now=now)
    return row


def revoke_current(session: Session, *, token_id: int, username: str, reason: str) -> None:
    """The token that authenticated the request ends (logout with a token)."""
    _revoke(session, session.get(ApiToken, token_id), by=username, reason=reason, now=utcnow())


def revoke_all(session: Session, *, user_id: int, by: str, reason: str, now: datetime | None = None) -> int:
    """End every live token of a user (deactivation, password reset); one audit event each."""
    now = now or utcnow()
    rows = session.exec(
        select(ApiToken).where(
            ApiToken.user_id == user_id, ApiToken.revoked_at.is_(None), ApiToken.expires_at > now
        )
    ).all()
    for row in rows:
        _revoke(session, row, by=by, reason=reason, now=now)
    return len(rows)


def tokens_of(session: Session, *, user_id: int | None = None) -> list[TokenDoc]:
    """Tokens newest first (one user's, or everyone's for an administrator)."""
    query = select(ApiToken, User.username).join(User, User.id == ApiToken.user_id)
    if user_id is not None:
        query = query.where(ApiToken.user_id == user_id)
    return [
        {
            "id": row.id,
            "username": username,
            "created_at": iso_utc(row.created_at),
            "expires_at": iso_utc(row.expires_at),
            "client": row.client,
            "revoked_at": iso_utc(row.revoked_at),
            "revoked_by": row.revoked_by,
        }
        for row, username in session.exec(query.order_by(ApiToken.id.desc())).all()
    ]


__all__ = ["ApiToken", "TokenDoc", "holder", "issue", "revoke", "revoke_all", "revoke_current", "tokens_of"]
