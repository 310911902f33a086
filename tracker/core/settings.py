"""Runtime configuration from ``TRACKER_*`` environment variables (DESIGN §6)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from zoneinfo import ZoneInfo

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Everything an operator may set; defaults give the embedded single-site setup."""

    model_config = SettingsConfigDict(env_prefix="TRACKER_", extra="ignore")

    # Operational settings only: the rules that decide what counts as an excursion or how a
    # deviation is classed live in the facility file under QA's change control
    # (tracker.facility.policy; the former TRACKER_EXCURSION_CLOSE_AFTER, _GAP_FACTOR,
    # _TREND_ALERTS, _TREND_WINDOW_H, _DEVIATION_CLASSES and _DEVIATION_CAPA_REQUIRED).

    database_url: str = Field(
        default="sqlite:///tracker.db", description="SQLAlchemy URL; PostgreSQL in production"
    )
    mqtt_url: str = Field(default="mqtt://127.0.0.1:1883", description="mqtt[s]://[user:pass@]host:port")
    mqtt_protocol: int = Field(default=5, description="5 (default) or 3 for MQTT 3.1.1 brokers")
    mqtt_ca_file: str | None = None
    mqtt_client_id: str = "gmp-tracker-ingest"
    mqtt_subscription: str = Field(
        default="gmp/#",
        description="topic filter(s), separated by spaces; plain or $share/GROUP/filter for scale-out",
    )
    mqtt_share_group: str | None = Field(
        default=None,
        description="subscribe as $share/GROUP/<subscription>: several ingest "
        "workers share the stream (docs/scale-out.md)",
    )
    ingest_worker: str | None = Field(
        default=None,
        description="this worker's fixed name in a share group; the MQTT client "
        "id becomes <mqtt_client_id>-<worker>",
    )
    ingest_batch_size: int = Field(default=1000, ge=1)
    ingest_linger_ms: int = Field(
        default=50, ge=0, description="wait this long for more messages before committing"
    )
    ingest_stats_s: float = Field(default=60.0, gt=0, description="how often the ingester logs its counters")
    max_payload_bytes: int = Field(default=16 * 1024, ge=256)
    future_tolerance_s: int = Field(
        default=300, ge=0, description="readings stamped further ahead of receipt are refused"
    )
    gap_check_s: float = Field(default=5.0, gt=0, description="how often live silence is checked")
    password_hash_profile: str = Field(
        default="RFC_9106_LOW_MEMORY",
        description="argon2 parameter profile; CHEAPEST only for the test suite",
    )
    proposal_min_readings: int = Field(
        default=1000, ge=30, description="valid readings a level proposal needs at least…"
    )
    proposal_min_days: int = Field(default=7, ge=1, description="…spread over at least this many days")
    password_min_length: int = Field(default=12, ge=8, description="shortest password accepted")
    password_min_score: int = Field(
        default=3,
        ge=0,
        le=4,
        description="least zxcvbn score (0-4) a new password needs: 3 refuses common passwords, "
        "words, names and patterns",
    )
    login_alert_failures: int = Field(
        default=5,
        ge=1,
        description="every this many failed password checks in a row (login or signing) of one "
        "account, the administrators are told (audit auth.alert, log warning, users page)",
    )
    batch_number_pattern: str = Field(
        default=r"[A-Za-z0-9][A-Za-z0-9._-]{0,59}",
        description="what a batch number looks like (a full match; no '/', no leading '.')",
    )
    signature_window_s: int = Field(
        default=120, ge=10, description="a signature needs a re-authentication this recent"
    )
    timezone: str = "Asia/Shanghai"
    lang: str = Field(default="zh-CN", description="zh-CN or en")
    data_dir: Path = Path(".tracker")
    audit_key_file: Path | None = Field(
        default=None,
        description="file holding the audit/seal key (first line signs, later lines are retired keys)",
    )
    audit_key: SecretStr | None = Field(
        default=None, description="the audit/seal key itself (>= 32 characters)"
    )
    identity_key_file: Path | None = Field(
        default=None,
        description="file holding the donor/patient identity key (pseudonyms and encryption; "
        "first line in use, later lines retired keys that still decrypt)",
    )
    identity_key: SecretStr | None = Field(
        default=None, description="the donor/patient identity key itself (>= 32 characters)"
    )
    audit_anchor_dir: Path | None = Field(
        default=None,
        description="where `tracker audit anchor` writes checkpoints (default <data_dir>/anchors)",
    )

    @field_validator("lang")
    @classmethod
    def _known_lang(cls, value: str) -> str:
        if value not in ("zh-CN", "en"):
            raise ValueError("TRACKER_LANG must be zh-CN or en")
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        ZoneInfo(value)  # raises for an unknown zone
        return value

    @field_validator("password_hash_profile")
    @classmethod
    def _known_profile(cls, value: str) -> str:
        import argon2.profiles

        if not hasattr(argon2.profiles, value) or not value.isupper():
            raise ValueError("TRACKER_PASSWORD_HASH_PROFILE must name an argon2.profiles constant")
        return value

    @field_validator("batch_number_pattern")
    @classmethod
    def _sane_pattern(cls, value: str) -> str:
        import re

        pattern = re.compile(value)
        for bad in ("../users", "a/b", "", "x" * 61, "a b", "<b>"):
            if pattern.fullmatch(bad):
                raise ValueError(f"TRACKER_BATCH_NUMBER_PATTERN must not match {bad!r}")
        return value

    @field_validator("mqtt_protocol")
    @classmethod
    def _known_protocol(cls, value: int) -> int:
        if value not in (3, 5):
            raise ValueError("TRACKER_MQTT_PROTOCOL must be 3 or 5")
        return value


@lru_cache
def get_settings() -> Settings:
    return Settings()
