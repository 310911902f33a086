"""The annual report download, kept affordable: built at most once per site, period, language,
format and state of the audit trail within ``report_cache_minutes`` (others get that copy, which
names when it was generated), one build at a time per process, and a few builds per user an hour.

A PDF costs seconds of CPU; without these any viewer could keep the server busy with it.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from tracker.core.errors import Reason, TooManyRequestsError
from tracker.web.throttle import RateLimiter

#: built documents kept (PDFs of a few MB each)
KEEP_DOCUMENTS = 16


@dataclass(frozen=True)
class _Built:
    body: bytes
    at: float


class ReportCache:
    def __init__(
        self,
        *,
        builds_per_hour: int,
        keep_seconds: float,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.keep_seconds, self.clock = keep_seconds, clock
        self.per_user = RateLimiter(builds_per_hour, window=3600.0, max_keys=max_keys, clock=clock)
        self._built: OrderedDict[Hashable, _Built] = OrderedDict()
        self._lock = threading.Lock()
        self._building: dict[Hashable, threading.Lock] = {}
        self._one_build = threading.Semaphore(1)
        self.builds = 0  # how many documents were built (tests, logs)

    def _fresh(self, key: Hashable) -> bytes | None:
        with self._lock:
            found = self._built.get(key)
            if found is None or self.clock() - found.at > self.keep_seconds:
                return None
            self._built.move_to_end(key)
            return found.body

    def get(self, key: Hashable, *, user: str, build: Callable[[], bytes]) -> bytes:
        """The document for ``key``: a fresh copy, or one built now by ``build`` (blocking; the
        caller runs in the threadpool). A second request for a key being built waits for it."""
        body = self._fresh(key)
        if body is not None:
            return body
        with self._lock:
            key_lock = self._building.setdefault(key, threading.Lock())
        with key_lock:
            body = self._fresh(key)
            if body is not None:
                return body
            try:
                return self._build(key, user=user, build=build)
            finally:
                with self._lock:
                    self._building.pop(key, None)

    def _build(self, key: Hashable, *, user: str, build: Callable[[], bytes]) -> bytes:
        """Build under the process's one-at-a-time rule and the user's hourly allowance."""
        if not self._one_build.acquire(blocking=False):
            raise TooManyRequestsError(
                Reason(
                    "another report is being generated: try again in a minute",
                    "正在生成另一份报告：请一分钟后再试",
                ),
                retry_after=60,
            )
        try:
            if not self.per_user.allow(user):
                wait = self.per_user.wait(user)
                raise TooManyRequestsError(
                    Reason(
                        f"{user} has had {self.per_user.limit} reports generated in the last hour: "
                        f"try again in {max(1, round(wait / 60))} min",
                        f"{user} 在过去一小时内已生成 {self.per_user.limit} 份报告：请 "
                        f"{max(1, round(wait / 60))} 分钟后再试",
                    ),
                    retry_after=wait,
                )
            body = build()
            self.builds += 1
        finally:
            self._one_build.release()
        with self._lock:
            self._built[key] = _Built(body, self.clock())
            self._built.move_to_end(key)
            while len(self._built) > KEEP_DOCUMENTS:
                self._built.popitem(last=False)
        return body
