"""Web sessions under a busy database: a page view records activity at most once a minute
(not one write per request contending with the ingester), and a request waiting for the
database does not stall the other requests of the process (the store runs in the threadpool).
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from datetime import datetime, timedelta

import httpx
from sqlalchemy import Engine, event, text
from sqlmodel import Session, select

from tests.web_helpers import browser
from tracker.core.timeutil import utcnow
from tracker.identity.sessions import WebSessionRow, token_hash
from tracker.web.sessions import COOKIE, TOUCH_EVERY, SessionStore


def _stored_last_seen(engine: Engine, sid: str) -> datetime:
    with Session(engine) as s:
        return s.exec(
            select(WebSessionRow.last_seen).where(WebSessionRow.token_hash == token_hash(sid))
        ).one()


def _count_session_updates(engine: Engine) -> list[str]:
    """Every UPDATE of ``web_session`` the engine sends from now on."""
    seen: list[str] = []

    @event.listens_for(engine, "before_cursor_execute")
    def _spy(conn, cursor, statement, parameters, context, executemany) -> None:
        if statement.lstrip().upper().startswith("UPDATE WEB_SESSION"):
            seen.append(statement)

    return seen


def test_a_page_view_writes_last_seen_at_most_once_a_minute(web_app, web_engine: Engine) -> None:
    now = [utcnow()]
    store = web_app.state.sessions
    store.clock = lambda: now[0]
    client, _ = browser(web_app, "qa1")
    sid = client.cookies[COOKIE]
    logged_in = _stored_last_seen(web_engine, sid)
    assert logged_in == now[0]
    updates = _count_session_updates(web_engine)
    for _ in range(3):  # page views within the minute
        now[0] += timedelta(seconds=19)
        assert client.get("/").status_code == 200
    assert updates == []
    assert _stored_last_seen(web_engine, sid) == logged_in
    now[0] = logged_in + TOUCH_EVERY  # a minute after the stored value
    assert client.get("/").status_code == 200
    assert len(updates) == 1
    assert _stored_last_seen(web_engine, sid) == now[0]
    now[0] += TOUCH_EVERY * 5  # polling never writes it
    assert client.get("/dashboard/live").status_code == 200
    assert len(updates) == 1
    assert _stored_last_seen(web_engine, sid) == logged_in + TOUCH_EVERY


def test_the_idle_limit_is_never_exceeded_and_misses_at_most_the_unrecorded_minute(web_app) -> None:
    """Idleness is judged from the stored ``last_seen`` (docs/web.md): a session ends at the
    latest ``idle`` after its last request, at the earliest ``idle`` − 1 min after it."""
    now = [utcnow()]
    store = web_app.state.sessions
    store.clock = lambda: now[0]
    idle = timedelta(seconds=store.idle_seconds)
    client, _ = browser(web_app, "qa1")
    t0 = now[0]
    now[0] = t0 + TOUCH_EVERY  # recorded
    assert client.get("/").status_code == 200
    now[0] = t0 + TOUCH_EVERY + idle - timedelta(seconds=1)  # just inside the limit: still alive
    assert client.get("/").status_code == 200  # (and recorded again)
    last = now[0]
    now[0] = last + timedelta(seconds=59)  # not recorded: within the minute
    assert client.get("/").status_code == 200
    now[0] = last + idle + timedelta(seconds=1)  # idle counted from the stored value
    r = client.get("/")
    assert r.status_code == 303
    assert r.headers["location"].startswith("/login")


def test_a_short_idle_limit_does_not_end_a_session_in_use(web_engine: Engine) -> None:
    """Idle limits under ten minutes record activity every tenth of the limit instead."""
    now = [utcnow()]
    store = SessionStore(web_engine, idle_seconds=30, clock=lambda: now[0])
    sid = store.new().sid
    for _ in range(9):  # a request every 20 s for 3 minutes
        now[0] += timedelta(seconds=20)
        assert store.get(sid) is not None
    now[0] += timedelta(seconds=31)
    assert store.get(sid) is None


class _WriteBlocker:
    """Another connection holding what the session's ``last_seen`` write needs: SQLite's
    database-wide write lock (as a committing ingester does), on PostgreSQL the row's lock."""

    def __init__(self, engine: Engine, sid: str) -> None:
        self._lock = threading.Lock()
        self._released = False
        if engine.dialect.name == "sqlite":
            self._conn = sqlite3.connect(engine.url.database, isolation_level=None, check_same_thread=False)
            self._conn.execute("BEGIN IMMEDIATE")
            self._end = lambda: self._conn.execute("ROLLBACK")
        else:
            self._conn = engine.connect()
            self._conn.execute(
                text("SELECT id FROM web_session WHERE token_hash = :h FOR UPDATE"), {"h": token_hash(sid)}
            )
            self._end = self._conn.rollback
        # a safety net: with a blocked event loop the test cannot release the lock itself
        self._timer = threading.Timer(10, self.release)
        self._timer.start()

    @property
    def released(self) -> bool:
        return self._released

    def release(self) -> None:
        with self._lock:
            if self._released:
                return
            self._released = True
            self._end()
            self._conn.close()
            self._timer.cancel()


def test_a_request_waiting_for_the_database_does_not_stall_the_others(web_app, web_engine: Engine) -> None:
    now = [utcnow()]
    store = web_app.state.sessions
    store.clock = lambda: now[0]
    client, _ = browser(web_app, "qa1")
    sid = client.cookies[COOKIE]
    now[0] += TOUCH_EVERY * 2  # the next page view writes last_seen

    async def scenario() -> tuple[bool, float, int, int]:
        transport = httpx.ASGITransport(app=web_app)
        async with (
            httpx.AsyncClient(
                transport=transport, base_url="http://testserver", cookies={COOKIE: sid}
            ) as user,
            httpx.AsyncClient(transport=transport, base_url="http://testserver") as anonymous,
        ):
            blocker = _WriteBlocker(web_engine, sid)
            try:
                started = time.monotonic()
                waiting = asyncio.create_task(user.get("/"))
                await asyncio.sleep(0.5)  # it reaches the write and waits
                other = await asyncio.wait_for(anonymous.get("/healthz"), timeout=8)
                # a blocked loop would only get here once the safety net freed the lock (10 s)
                served_in = time.monotonic() - started
                still_waiting = not waiting.done() and not blocker.released
            finally:
                blocker.release()
            first = await asyncio.wait_for(waiting, timeout=30)
            return still_waiting, served_in, other.status_code, first.status_code

    still_waiting, served_in, other_status, first_status = asyncio.run(scenario())
    assert other_status == 200
    assert still_waiting, "the second request was served only after the first one's database wait"
    assert served_in < 5, f"the second request took {served_in:.1f} s"
    assert first_status == 200  # it went on once the lock was free
    assert _stored_last_seen(web_engine, sid) == now[0]
