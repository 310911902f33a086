"""The simulator against a real mosquitto: everything generated arrives, QoS 1, retained statuses."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from simulators.facility import load_facility
from simulators.publisher import SimulationResult, generate, run_simulation
from tracker.wire.mqtt import BrokerAddress, connect, make_client

DATA = Path(__file__).resolve().parents[1] / "simulators" / "data"
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
START = datetime(2026, 11, 20, tzinfo=UTC)

pytestmark = pytest.mark.skipif(not Path(MOSQUITTO).exists(), reason="mosquitto not installed")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[BrokerAddress]:
    port = _free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        "max_queued_messages 1000000\nmax_inflight_messages 0\n"
    )
    proc = subprocess.Popen(
        [MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail("mosquitto did not start")
            time.sleep(0.05)
    yield BrokerAddress("127.0.0.1", port)
    proc.terminate()
    proc.wait(timeout=10)


class Collector:
    """A QoS 1 subscriber that keeps every message it receives."""

    def __init__(self, address: BrokerAddress, topic: str = "gmp/#") -> None:
        self.messages: list[mqtt.MQTTMessage] = []
        self.ready = threading.Event()
        self.client = make_client(address, client_id=f"collector-{time.monotonic_ns()}")
        self.client.on_connect = lambda c, *_: (c.subscribe(topic, qos=1), None)[1]
        self.client.on_subscribe = lambda *_: self.ready.set()
        self.client.on_message = lambda _c, _u, msg: self.messages.append(msg)
        connect(self.client, address)
        self.client.loop_start()
        assert self.ready.wait(10)

    def wait_for(self, count: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while len(self.messages) < count and time.monotonic() < deadline:
            time.sleep(0.05)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_everything_generated_arrives(broker: BrokerAddress) -> None:
    collector = Collector(broker)
    try:
        result = run_simulation(
            facility_path=DATA / "test-small.toml",
            broker=broker,
            speed=0,
            seed=4,
            duration=timedelta(hours=1),
            start=START,
        )
        collector.wait_for(result.published)
    finally:
        collector.close()
    expected = list(
        generate(load_facility(DATA / "test-small.toml"), seed=4, start=START, duration=timedelta(hours=1))
    )
    assert result.published == len(expected)
    assert result.undelivered == 0
    assert not result.stopped
    assert Counter((m.topic, m.payload) for m in collector.messages) == Counter(
        (m.topic, m.payload) for m in expected
    )
    assert result.readings["T-B1-DP"].count == 360
    assert result.readings["T-B1-DP"].last_seq == 360

    late = Collector(broker, "gmp/+/+/+/status")  # retained statuses survive the run
    try:
        late.wait_for(7, timeout=5)
    finally:
        late.close()
    assert {(m.topic, m.payload, m.retain) for m in late.messages} == {
        (f"gmp/T-SITE/{room}/{code}/status", b"offline", True)
        for room, code in [
            ("T-B1", "T-B1-PC"),
            ("T-B1-BSC", "T-BSC-PC"),
            ("T-C1", "T-C1-PC"),
            ("T-B1", "T-B1-DP"),
            ("T-C1", "T-C1-DP"),
            ("T-B1", "T-B1-T"),
            ("T-B1", "T-B1-H"),
        ]
    }


def test_a_large_burst_is_bounded_and_complete(broker: BrokerAddress) -> None:
    collector = Collector(broker)
    try:
        began = time.monotonic()
        result = run_simulation(
            facility_path=DATA / "nn-cpc.toml",
            scenario_path=DATA / "day-in-the-life.toml",
            broker=broker,
            speed=0,
            duration=timedelta(hours=2),
        )
        elapsed = time.monotonic() - began
        collector.wait_for(result.published)
    finally:
        collector.close()
    assert result.published > 29_000
    assert len(collector.messages) == result.published
    assert result.malformed == {"bad_json": 3, "schema": 2}
    assert elapsed < 60


def test_stop_ends_a_paced_run_and_marks_monitors_offline(broker: BrokerAddress) -> None:
    stop = threading.Event()
    progress: list[int] = []

    def on_progress(result: SimulationResult) -> None:
        progress.append(result.published)
        stop.set()

    collector = Collector(broker)
    try:
        began = time.monotonic()
        result = run_simulation(
            facility_path=DATA / "test-small.toml",
            broker=broker,
            speed=60,
            duration=timedelta(hours=24),
            stop=stop,
            on_progress=on_progress,
        )
        collector.wait_for(result.published)
    finally:
        collector.close()
    assert time.monotonic() - began < 10
    assert result.stopped
    assert progress
    assert result.last_sim_time is not None
    assert result.last_sim_time <= datetime.now(UTC)  # never ahead of the wall clock
    offline = [m for m in collector.messages if m.payload == b"offline"]
    assert len(offline) == 7
    assert len(collector.messages) == result.published


def test_unreachable_broker_is_a_clear_error() -> None:
    address = BrokerAddress("127.0.0.1", _free_port())
    with pytest.raises(ConnectionError, match=r"cannot reach MQTT broker mqtt://127\.0\.0\.1"):
        run_simulation(
            facility_path=DATA / "test-small.toml", broker=address, speed=0, duration=timedelta(minutes=5)
        )
