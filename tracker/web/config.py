"""Web settings (``TRACKER_WEB_*``), kept apart from the core settings the ingester reads."""

from __future__ import annotations

import secrets
from functools import lru_cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class WebSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TRACKER_WEB_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    #: signs API tokens; without it a random key per process (tokens die with the process)
    secret_key: str | None = Field(default=None, min_length=32)
    session_idle_minutes: float = Field(
        default=15.0, gt=0, description="a session ends after this long without a request"
    )
    #: ``auto``: Secure cookies when the request came over https (directly or via a trusted proxy)
    secure_cookies: str = Field(default="auto", pattern="^(auto|always|never)$")
    poll_seconds: float = Field(default=3.0, gt=0, description="dashboard live-update interval")
    token_days: int = Field(default=90, ge=1, le=366)
    login_attempts_per_minute: int = Field(
        default=20, ge=1, description="login POSTs per client address per minute"
    )

    def key(self) -> bytes:
        return (self.secret_key or _process_key()).encode()


@lru_cache(maxsize=1)
def _process_key() -> str:
    return secrets.token_urlsafe(48)
