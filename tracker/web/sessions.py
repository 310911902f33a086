"""Server-side sessions in the database: the cookie holds a random token, the table only its hash.

``tracker serve`` is stateless (DESIGN §6): any number of web workers over one database share
the logins, and a restart logs nobody out. A session ends ``session_max_hours`` after it
began however busy it is (an absolute lifetime), after ``session_idle_minutes``
without a user request (the dashboard's background polling does not count as activity, so an
unattended screen still times out; activity is recorded at most once a minute, see
:data:`TOUCH_EVERY`), at logout, when its user is deactivated, and when the
user's password changes after the session logged in (also a change made through the CLI or
by another worker). A stolen copy of the table opens no session: it holds SHA-256 hashes.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Engine, delete, update
from sqlmodel import Session, select

from tracker.core.timeutil import utcnow
from tracker.identity.sessions import WebSessionRow, token_hash

COOKIE = "tracker_session"

#: A request writes the session's ``last_seen`` only when the stored value is at least this old
#: (or a tenth of the idle limit, when that is shorter): one write per session per minute
#: instead of one per page view, which on SQLite would take the database-wide write lock the
#: ingester needs. Idleness is judged from the stored ``last_seen``, which can trail the last
#: request by up to this much, so a session ends between ``idle`` − 1 min and ``idle`` after its
#: last request: up to one minute early, never late (the idle limit stays a maximum).
TOUCH_EVERY = timedelta(minutes=1)


@dataclass
class WebSession:
    """The request's view of its session row; :meth:`SessionStore.save` writes changes back."""

    sid: str
    csrf: str
    last_seen: datetime
    user_id: int | None = None
    authenticated_at: datetime | None = None
    flashes: list[dict] = field(default_factory=list)
    dirty: bool = False
    #: not stored: the request authenticated with an API token, which has no browser session
    #: (nothing to write, so such a request never waits on the session table)
    transient: bool = False

    @classmethod
    def for_token(cls, now: datetime) -> WebSession:
        return cls(sid="", csrf=secrets.token_urlsafe(32), last_seen=now, transient=True)

    def flash(self, kind: str, message: str, reasons: list[str] | None = None) -> None:
        self.flashes.append(
            {"kind": kind, "message": str(message), "reasons": [str(r) for r in reasons or []]}
        )
        self.dirty = True

    def pop_flashes(self) -> list[dict]:
        out, self.flashes = self.flashes, []
        self.dirty = self.dirty or bool(out)
        return out


class SessionStore:
    """Sessions in the ``web_session`` table; ``clock`` gives aware UTC times (tests move it)."""

    def __init__(
        self,
        engine: Engine,
        idle_seconds: float,
        clock: Callable[[], datetime] = utcnow,
        *,
        max_seconds: float = 12 * 3600,
    ) -> None:
        self.engine = engine
        self.idle_seconds = idle_seconds
        self.max_seconds = max_seconds
        self.clock = clock
        #: a short idle limit must not end a session in use between two writes
        self.touch_every = min(TOUCH_EVERY, timedelta(seconds=idle_seconds) / 10)

    def _idle_before(self, now: datetime) -> datetime:
        return now - timedelta(seconds=self.idle_seconds)

    def _born_before(self, now: datetime) -> datetime:
        return now - timedelta(seconds=self.max_seconds)

    @contextmanager
    def _tx(self, db: Session | None) -> Iterator[Session]:
        """The request's unit of work when given (the change commits with it), else a short one."""
        if db is not None:
            yield db
            return
        with Session(self.engine) as s:
            yield s
            s.commit()

    def new(
        self, *, user_id: int | None = None, flashes: list[dict] | None = None, db: Session | None = None
    ) -> WebSession:
        now = self.clock()
        web = WebSession(
            sid=secrets.token_urlsafe(32),
            csrf=secrets.token_urlsafe(32),
            last_seen=now,
            user_id=user_id,
            authenticated_at=now if user_id is not None else None,
            flashes=list(flashes or []),
        )
        with self._tx(db) as s:
            # forget idle sessions as new ones come (anonymous visitors must not pile up)
            s.exec(
                delete(WebSessionRow).where(
                    (WebSessionRow.last_seen < self._idle_before(now))
                    | (WebSessionRow.created_at < self._born_before(now))
                )
            )
            s.add(
                WebSessionRow(
                    token_hash=token_hash(web.sid),
                    csrf=web.csrf,
                    user_id=user_id,
                    authenticated_at=web.authenticated_at,
                    created_at=now,
                    last_seen=now,
                    flashes=json.dumps(web.flashes, ensure_ascii=False),
                )
            )
        return web

    def get(self, sid: str | None, *, touch: bool = True) -> WebSession | None:
        """The live session of the cookie's token, or ``None``; an idle one is deleted. ``touch``
        records the request as activity (at most once per :data:`TOUCH_EVERY`). Blocking: an
        async caller runs it in the threadpool."""
        if not sid:
            return None
        now = self.clock()
        with Session(self.engine) as s:
            row = s.exec(select(WebSessionRow).where(WebSessionRow.token_hash == token_hash(sid))).first()
            if row is None:
                return None
            if row.last_seen < self._idle_before(now) or row.created_at < self._born_before(now):
                s.delete(row)
                s.commit()
                return None
            web = WebSession(
                sid=sid,
                csrf=row.csrf,
                last_seen=row.last_seen,
                user_id=row.user_id,
                authenticated_at=row.authenticated_at,
                flashes=json.loads(row.flashes),
            )
            if touch and now - row.last_seen >= self.touch_every:
                s.exec(update(WebSessionRow).where(WebSessionRow.id == row.id).values(last_seen=now))
                s.commit()
                web.last_seen = now
            return web

    def save(self, web: WebSession) -> None:
        """Write the flashes back (the rest of a session does not change within a request)."""
        if not web.dirty or web.transient:
            return
        with Session(self.engine) as s:
            s.exec(
                update(WebSessionRow)
                .where(WebSessionRow.token_hash == token_hash(web.sid))
                .values(flashes=json.dumps(web.flashes, ensure_ascii=False))
            )
            s.commit()
        web.dirty = False

    def login(self, web: WebSession, user_id: int, *, db: Session | None = None) -> WebSession:
        """A new token and CSRF token at login (no session fixation); flashes carry over."""
        fresh = self.new(user_id=user_id, flashes=web.flashes, db=db)
        self.drop(web.sid, db=db)
        return fresh

    def drop(self, sid: str, *, db: Session | None = None) -> None:
        with self._tx(db) as s:
            s.exec(delete(WebSessionRow).where(WebSessionRow.token_hash == token_hash(sid)))

    def drop_user(self, user_id: int, *, db: Session | None = None) -> None:
        """End every session of the user (``db``: in the request's unit of work, with the change
        that ends them)."""
        with self._tx(db) as s:
            s.exec(delete(WebSessionRow).where(WebSessionRow.user_id == user_id))
