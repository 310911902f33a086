"""The stored side of a browser login session (the web layer's cookie store keeps it here)."""

from __future__ import annotations

import hashlib
from datetime import datetime

from sqlalchemy import Column, Text
from sqlmodel import Field, SQLModel

from tracker.core.db import UTCDateTime


class WebSessionRow(SQLModel, table=True):
    """One browser session; ``token_hash`` is the SHA-256 of the cookie's token."""

    __tablename__ = "web_session"

    id: int | None = Field(default=None, primary_key=True)
    token_hash: str = Field(max_length=64, unique=True, index=True)
    csrf: str = Field(max_length=64)
    user_id: int | None = Field(default=None, foreign_key="app_user.id", index=True)
    #: when the user logged in (a password change after it ends the session)
    authenticated_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    created_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    last_seen: datetime = Field(sa_type=UTCDateTime, nullable=False, index=True)
    #: messages for the next page, already in the language of the page that made them
    flashes: str = Field(default="[]", sa_column=Column(Text, nullable=False))


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
