"""Web settings (``TRACKER_WEB_*``), kept apart from the core settings the ingester reads."""

from __future__ import annotations

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from tracker.web.throttle import parse_networks


class WebSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TRACKER_WEB_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    session_idle_minutes: float = Field(
        default=15.0, gt=0, description="a session ends after this long without a request"
    )
    session_max_hours: float = Field(
        default=12.0, gt=0, le=24 * 7, description="a session ends this long after login, however busy"
    )
    #: ``auto``: Secure cookies when the request came over https (directly or via a trusted proxy)
    secure_cookies: str = Field(default="auto", pattern="^(auto|always|never)$")
    poll_seconds: float = Field(
        default=3.0, gt=0, description="dashboard refresh for new readings (excursions come at once)"
    )
    live_poll_seconds: float = Field(
        default=0.25, gt=0, le=5, description="how often each process looks for changes to push"
    )
    live_stream_seconds: float = Field(
        default=300.0, gt=0, description="an event stream ends after this long; the browser reconnects"
    )
    token_days: int = Field(
        default=90, ge=1, le=366, description="longest (and default) lifetime of an API token"
    )
    trusted_proxies: str = Field(
        default="",
        description="addresses or networks (comma-separated) of the reverse proxies whose "
        "X-Forwarded-For and X-Forwarded-Proto are believed; none by default",
    )
    login_attempts_per_minute: int = Field(
        default=20, ge=1, description="login and token requests per client address per minute"
    )
    login_free_failures: int = Field(
        default=5, ge=1, description="failed password checks per account and address before backoff"
    )
    login_backoff_seconds: float = Field(
        default=2.0, gt=0, description="the first wait after the free failures; doubles with each failure"
    )
    login_backoff_max_seconds: float = Field(default=900.0, gt=0, description="the longest wait")
    limiter_max_keys: int = Field(
        default=10_000, ge=100, description="addresses and account-address pairs a throttle remembers"
    )
    report_builds_per_hour: int = Field(
        default=6,
        ge=1,
        description="annual reports one user may have built per hour (cached copies are free)",
    )
    report_cache_minutes: float = Field(
        default=10.0, ge=0, description="a built report is served again for this long unless the trail moved"
    )

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: str) -> str:
        parse_networks(value)  # raises for a malformed entry
        return value
