"""Throttling password checks and costly requests: per client address, per account and address.

Nothing here locks an account. A login that keeps failing for one account name from one address
waits longer before each further try (exponential backoff, capped), so guessing is slow, but a
stranger's failures from another address never keep the owner out. The same rules apply to any
name typed, whether an account of that name exists or not, so the throttle tells nobody which
names exist. Repeated failures of an account (from any address) are reported to the
administrators by the identity layer (``tracker.identity.users``, audit ``auth.alert``).

State is kept per process, bounded (at most ``max_keys`` keys, the least recently used dropped
first) and forgetful (a key is dropped once nothing about it is remembered any more).
"""

from __future__ import annotations

import ipaddress
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

from fastapi import Request

from tracker.core.errors import Reason, TooManyRequestsError

Clock = Callable[[], float]


def parse_networks(text: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """``"10.0.0.5, 10.1.0.0/16"`` → networks; raises ``ValueError`` for a malformed entry."""
    return tuple(ipaddress.ip_network(part.strip(), strict=False) for part in text.split(",") if part.strip())


def _within(address: str, networks) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks)


def client_address(request: Request) -> str:
    """The address a request came from. ``X-Forwarded-For`` counts only when the peer is one of
    the configured proxies (``TRACKER_WEB_TRUSTED_PROXIES``); then the nearest address in it
    that is not itself a trusted proxy is the client (what the outermost trusted proxy saw)."""
    peer = request.client.host if request.client else "?"
    proxies = request.app.state.trusted_proxies
    if not proxies or not _within(peer, proxies):
        return peer
    hops = [h.strip() for line in request.headers.getlist("x-forwarded-for") for h in line.split(",")]
    for hop in reversed([h for h in hops if h]):
        if not _within(hop, proxies):
            return hop[:64]
    return peer


class RateLimiter:
    """At most ``limit`` events per key in a sliding ``window`` (login attempts per address)."""

    def __init__(
        self, limit: int, *, window: float = 60.0, max_keys: int = 10_000, clock: Clock = time.monotonic
    ) -> None:
        self.limit, self.window, self.max_keys, self.clock = limit, window, max_keys, clock
        self._events: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._events)

    def _forget(self, now: float) -> None:
        """Drop keys whose newest event left the window (they are at the front: least recent)."""
        while self._events:
            key, q = next(iter(self._events.items()))
            if q and now - q[-1] <= self.window:
                break
            del self._events[key]

    def wait(self, key: str) -> float:
        """Seconds until ``key`` may act again (0: now), without counting anything."""
        now = self.clock()
        with self._lock:
            q = self._events.get(key)
            if q is None or len(q) < self.limit:
                return 0.0
            return max(0.0, self.window - (now - q[-self.limit]))

    def allow(self, key: str) -> bool:
        """Count one event for ``key`` unless it is over the limit."""
        now = self.clock()
        with self._lock:
            self._forget(now)
            q = self._events.pop(key, None) or deque()
            while q and now - q[0] > self.window:
                q.popleft()
            self._events[key] = q  # most recently used last
            if len(q) >= self.limit:
                return False
            q.append(now)
            while len(self._events) > self.max_keys:
                self._events.popitem(last=False)
            return True


@dataclass
class _Failures:
    count: int
    last: float
    until: float  # no further try before this (monotonic)


class LoginThrottle:
    """Backoff per (account name, client address) after failed password checks.

    After ``free`` failures in a row the next try waits ``base`` seconds, and each further
    failure doubles the wait, up to ``cap``. A success, or ``forget`` seconds
    without a failure, clears the pair."""

    def __init__(
        self,
        *,
        free: int = 5,
        base: float = 2.0,
        cap: float = 900.0,
        forget: float = 3600.0,
        max_keys: int = 10_000,
        clock: Clock = time.monotonic,
    ) -> None:
        self.free, self.base, self.cap, self.forget = free, base, cap, forget
        self.max_keys, self.clock = max_keys, clock
        self._pairs: OrderedDict[tuple[str, str], _Failures] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._pairs)

    @staticmethod
    def _key(name: str, address: str) -> tuple[str, str]:
        return name.strip().lower()[:60], address

    def _prune(self, now: float) -> None:
        while self._pairs:
            key, f = next(iter(self._pairs.items()))
            if now - f.last < self.forget and now < f.until + self.forget:
                break
            del self._pairs[key]

    def wait(self, name: str, address: str) -> float:
        """Seconds before this pair may try again (0: now)."""
        now = self.clock()
        with self._lock:
            self._prune(now)
            f = self._pairs.get(self._key(name, address))
            return 0.0 if f is None else max(0.0, f.until - now)

    def failed(self, name: str, address: str) -> float:
        """Count a failure; returns the wait it imposes on the next try."""
        now = self.clock()
        key = self._key(name, address)
        with self._lock:
            f = self._pairs.pop(key, None) or _Failures(0, now, now)
            f.count, f.last = f.count + 1, now
            over = f.count - self.free
            delay = 0.0 if over < 0 else min(self.cap, self.base * 2 ** min(over, 32))
            f.until = now + delay
            self._pairs[key] = f
            while len(self._pairs) > self.max_keys:
                self._pairs.popitem(last=False)
            return delay

    def succeeded(self, name: str, address: str) -> None:
        with self._lock:
            self._pairs.pop(self._key(name, address), None)


def too_many_logins(wait: float) -> TooManyRequestsError:
    seconds = max(1, round(wait))
    return TooManyRequestsError(
        Reason(
            f"too many failed attempts: try again in {seconds} s",
            f"失败次数过多：请 {seconds} 秒后再试",
        ),
        retry_after=seconds,
    )


def too_many_from_address(wait: float) -> TooManyRequestsError:
    seconds = max(1, round(wait))
    return TooManyRequestsError(
        Reason(
            f"too many login attempts from this address: try again in {seconds} s",
            f"该地址登录尝试过多：请 {seconds} 秒后再试",
        ),
        retry_after=seconds,
    )
