"""API tokens for machine clients: ``Authorization: Bearer <token>``.

A token is signed (HMAC-SHA256 with ``TRACKER_WEB_SECRET_KEY``) and names the user, an expiry
and a fingerprint of the user's password hash: changing the password revokes every token of
that user, and a deactivated account's tokens stop working at once (checked per request).
Tokens authenticate requests; they never sign: signatures always need the password.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import datetime, timedelta

from tracker.core.errors import AuthenticationError, Reason


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def fingerprint(password_hash: str) -> str:
    return hashlib.sha256(password_hash.encode()).hexdigest()[:16]


def issue(key: bytes, *, user_id: int, password_hash: str, now: datetime, days: int) -> str:
    body = _b64(
        json.dumps(
            {
                "u": user_id,
                "e": int((now + timedelta(days=days)).timestamp()),
                "p": fingerprint(password_hash),
            },
            separators=(",", ":"),
        ).encode()
    )
    mac = _b64(hmac.new(key, body.encode(), hashlib.sha256).digest())
    return f"gmpt.{body}.{mac}"


def read(key: bytes, token: str, *, now: datetime) -> tuple[int, str]:
    """(user id, password fingerprint) of a valid, unexpired token."""
    try:
        prefix, body, mac = token.split(".")
        expected = _b64(hmac.new(key, body.encode(), hashlib.sha256).digest())
        if prefix != "gmpt" or not hmac.compare_digest(mac, expected):
            raise ValueError("bad signature")
        doc = json.loads(_unb64(body))
        user_id, expires, fp = int(doc["u"]), int(doc["e"]), str(doc["p"])
    except (ValueError, KeyError, TypeError) as exc:
        raise AuthenticationError(Reason("invalid API token", "API 令牌无效")) from exc
    if now.timestamp() > expires:
        raise AuthenticationError(Reason("the API token has expired", "API 令牌已过期"))
    return user_id, fp
