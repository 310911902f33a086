"""Server-side sessions: the cookie holds only a random id; what it stands for stays here.

Sessions live in the process (a restart logs everybody out, which fails safe). They end after
``session_idle_minutes`` without a user request; the dashboard's background polling does not
count as activity, so an unattended screen still times out.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

COOKIE = "tracker_session"


@dataclass
class WebSession:
    sid: str
    csrf: str
    last_seen: float
    user_id: int | None = None
    username: str | None = None
    must_change_password: bool = False
    flashes: list[dict] = field(default_factory=list)

    def flash(self, kind: str, message: str, reasons: list[str] | None = None) -> None:
        self.flashes.append({"kind": kind, "message": message, "reasons": reasons or []})

    def pop_flashes(self) -> list[dict]:
        out, self.flashes = self.flashes, []
        return out


class SessionStore:
    def __init__(self, idle_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.idle_seconds = idle_seconds
        self.clock = clock
        self._sessions: dict[str, WebSession] = {}
        self._lock = threading.Lock()

    def new(self) -> WebSession:
        now = self.clock()
        s = WebSession(sid=secrets.token_urlsafe(32), csrf=secrets.token_urlsafe(32), last_seen=now)
        with self._lock:
            # forget idle sessions as new ones come (anonymous visitors must not pile up)
            for sid in [k for k, v in self._sessions.items() if now - v.last_seen > self.idle_seconds]:
                del self._sessions[sid]
            self._sessions[s.sid] = s
        return s

    def get(self, sid: str | None, *, touch: bool = True) -> WebSession | None:
        if not sid:
            return None
        now = self.clock()
        with self._lock:
            s = self._sessions.get(sid)
            if s is None:
                return None
            if now - s.last_seen > self.idle_seconds:
                del self._sessions[sid]
                return None
            if touch:
                s.last_seen = now
            return s

    def rotate(self, s: WebSession) -> WebSession:
        """A new id and CSRF token at login (no session fixation); flashes carry over."""
        fresh = self.new()
        fresh.flashes = s.flashes
        self.drop(s.sid)
        return fresh

    def drop(self, sid: str) -> None:
        with self._lock:
            self._sessions.pop(sid, None)

    def drop_user(self, user_id: int) -> None:
        with self._lock:
            for sid in [k for k, v in self._sessions.items() if v.user_id == user_id]:
                del self._sessions[sid]


class RateLimiter:
    """At most ``limit`` events per key in a sliding minute (login attempts per address)."""

    def __init__(self, limit: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit, self.clock = limit, clock
        self._events: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def allow(self, key: str) -> bool:
        now = self.clock()
        with self._lock:
            q = self._events.setdefault(key, deque())
            while q and now - q[0] > 60:
                q.popleft()
            if len(q) >= self.limit:
                return False
            q.append(now)
            return True
