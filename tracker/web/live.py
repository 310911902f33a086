"""Live push for the dashboard and the queue: server-sent events fed by one poller per process.

Each process of ``tracker serve`` (each uvicorn worker, each host behind the proxy) runs one
:class:`LiveFeed` while a screen is connected to it: a task that reads
:func:`tracker.monitoring.dashboard.live_marker` every ``TRACKER_WEB_LIVE_POLL_SECONDS`` (0.25 s)
in the threadpool and wakes the streams of that process when something changed. The database
is the one meeting point of the ingest workers, the dispatcher and every web process, so no
broker or shared memory is needed and a new process joins by reading it; the cost is a handful
of indexed or tiny-table statements per process per poll, not per screen. Screens get:

* ``change`` with ``{"kinds": [...], "new_action": [...]}``: ``excursions`` (a new, changed or
  acknowledged excursion: at once), ``alarms`` (system alarms, failing notifications: at once),
  ``readings`` (new data: at most every ``TRACKER_WEB_POLL_SECONDS``); ``new_action`` lists the
  ids of action excursions opened since the previous poll (the page plays its sound and raises
  its notification for them);
* a comment every 15 s (proxies keep the connection), and the end of the stream after
  ``TRACKER_WEB_LIVE_STREAM_SECONDS``: the browser reconnects by itself, so a session that
  expired or was ended meanwhile is refused at the reconnection like any request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from collections.abc import AsyncIterator

from anyio import to_thread
from sqlalchemy import Engine
from sqlmodel import Session

from tracker.monitoring.dashboard import LiveMarker, live_marker

HEARTBEAT_S = 15.0


class LiveFeed:
    """One poller per process and event loop; any number of streams wait on it."""

    def __init__(self, engine: Engine, *, interval: float, data_interval: float) -> None:
        self.engine = engine
        self.interval = interval
        self.data_interval = data_interval
        self.version = 0
        self._news: deque[tuple[int, frozenset[str], tuple[int, ...]]] = deque(maxlen=256)
        self._changed = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._listeners = 0
        self._last: LiveMarker | None = None
        self._data_sent = 0.0
        self.polls = 0

    def _read(self) -> LiveMarker:
        with Session(self.engine) as session:
            return live_marker(session)

    async def _run(self) -> None:
        while self._listeners > 0:
            try:
                marker = await to_thread.run_sync(self._read)
            except Exception:  # the database away: keep the streams, try again
                await asyncio.sleep(max(self.interval, 1.0))
                continue
            self.polls += 1
            self._compare(marker)
            await asyncio.sleep(self.interval)
        self._task = None

    def _compare(self, marker: LiveMarker) -> None:
        before, self._last = self._last, marker
        if before is None:
            return
        kinds: set[str] = set()
        if marker.excursions != before.excursions or marker.open_action != before.open_action:
            kinds.add("excursions")
        if marker.alarms != before.alarms:
            kinds.add("alarms")
        now = time.monotonic()
        if marker.data != before.data:
            if now - self._data_sent >= self.data_interval:
                kinds.add("readings")
                self._data_sent = now
            else:
                self._last = LiveMarker(marker.excursions, marker.open_action, marker.alarms, before.data)
        if kinds:
            self.version += 1
            new_action = tuple(sorted(marker.open_action - before.open_action))
            self._news.append((self.version, frozenset(kinds), new_action))
            self._changed.set()
            self._changed = asyncio.Event()

    def news_since(self, version: int) -> tuple[set[str], list[int]]:
        kinds: set[str] = set()
        new_action: list[int] = []
        for v, k, ids in self._news:
            if v > version:
                kinds |= k
                new_action.extend(ids)
        return kinds, sorted(set(new_action))

    @contextlib.asynccontextmanager
    async def listening(self) -> AsyncIterator[None]:
        self._listeners += 1
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())
        try:
            yield
        finally:
            self._listeners -= 1

    async def wait(self, version: int, timeout: float) -> int:
        """Wait until the feed is past ``version`` (or ``timeout``); the feed's version now."""
        if self.version <= version:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout)
        return self.version


def feed_of(app) -> LiveFeed:
    """The app's feed in the running event loop (made on first use)."""
    loop = asyncio.get_running_loop()
    feed = getattr(app.state, "live_feed", None)
    if feed is None or getattr(app.state, "live_loop", None) is not loop:
        settings = app.state.web_settings
        feed = LiveFeed(
            app.state.engine, interval=settings.live_poll_seconds, data_interval=settings.poll_seconds
        )
        app.state.live_feed, app.state.live_loop = feed, loop
    return feed


def sse(event: str, data: dict) -> str:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


async def stream(app, is_disconnected, *, max_seconds: float) -> AsyncIterator[str]:
    """The event stream of one screen."""
    feed = feed_of(app)
    async with feed.listening():
        version = feed.version
        yield "retry: 1500\n\n"
        yield sse("hello", {"version": version})
        started = last_beat = time.monotonic()
        while time.monotonic() - started < max_seconds:
            if await is_disconnected():
                return
            now_version = await feed.wait(version, timeout=1.0)
            if now_version > version:
                kinds, new_action = feed.news_since(version)
                version = now_version
                yield sse("change", {"kinds": sorted(kinds), "new_action": new_action})
                last_beat = time.monotonic()
            elif time.monotonic() - last_beat >= HEARTBEAT_S:
                yield ": beat\n\n"
                last_beat = time.monotonic()
