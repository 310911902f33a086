"""Publishing and waiting helpers for tests against the real broker."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

from sqlalchemy import Engine

from tracker.ingest.client import Ingester, IngestOptions
from tracker.wire.broker import LocalBroker
from tracker.wire.mqtt import connect, make_client, parse_broker_url


def publish_all(
    broker: LocalBroker,
    messages: Iterable[tuple[str, bytes]],
    *,
    client_id: str = "test-publisher",
    retain: bool = False,
) -> int:
    """Publish at QoS 1 and wait until the broker has acknowledged every message."""
    address = parse_broker_url(broker.url)
    client = make_client(address, client_id=client_id, protocol=broker.protocol)
    connect(client, address)
    client.loop_start()
    infos, n = [], 0
    try:
        for topic, payload in messages:
            info = client.publish(topic, payload, qos=1, retain=retain)
            assert info.rc == 0, f"publish failed: {info.rc}"
            infos.append(info)
            n += 1
            if len(infos) >= 500:
                for i in infos:
                    i.wait_for_publish(10)
                infos.clear()
        for i in infos:
            i.wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()
    return n


def wait_until(predicate: Callable[[], bool], *, timeout: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")


@contextmanager
def running_ingester(
    engine: Engine,
    broker: LocalBroker,
    *,
    client_id: str = "test-ingest",
    close_after: int = 3,
    wait_subscribed: bool = True,
    gap_check_s: float = 5.0,
) -> Iterator[Ingester]:
    """An ingest worker on a thread, subscribed before the test publishes."""
    ingester = Ingester(
        engine,
        parse_broker_url(broker.url),
        IngestOptions(
            client_id=client_id, protocol=broker.protocol, close_after=close_after, gap_check_s=gap_check_s
        ),
    )
    stop = threading.Event()
    thread = threading.Thread(target=ingester.run, args=(stop,), name="ingester", daemon=True)
    thread.start()
    try:
        if wait_subscribed:
            assert ingester.subscribed.wait(10), "ingester did not subscribe"
        yield ingester
    finally:
        stop.set()
        thread.join(15)
        assert not thread.is_alive(), "ingester did not stop"
