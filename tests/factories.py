"""Keyword-only builders of wire payloads for the tests."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

T0 = datetime(2026, 11, 20, 0, 0, tzinfo=UTC)
SITE = "T-SITE"


def iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def particles(*, monitor: str = "T-B1-PC", seq: int, ts: datetime, c05: int, c50: int = 0,
              volume: float = 28.3, unit: str = "L", status: str = "ok") -> bytes:
    return json.dumps({"schema": "gmp.reading/1", "monitor": monitor, "seq": seq, "ts": iso(ts),
                       "kind": "particles", "sample": {"volume": volume, "unit": unit},
                       "counts": {"0.5": c05, "5.0": c50}, "status": status}).encode()


def scalar(*, monitor: str, kind: str, seq: int, ts: datetime, value: float, unit: str,
           status: str = "ok") -> bytes:
    return json.dumps({"schema": "gmp.reading/1", "monitor": monitor, "seq": seq, "ts": iso(ts),
                       "kind": kind, "value": value, "unit": unit, "status": status}).encode()


def topic(room: str, monitor: str, *, site: str = SITE) -> str:
    return f"gmp/{site}/{room}/{monitor}"


def minutes(n: float) -> timedelta:
    return timedelta(minutes=n)


def seconds(n: float) -> timedelta:
    return timedelta(seconds=n)
