"""The Sparkplug B host against an edge node nobody here wrote (pysparkplug, its own process and
locked environment: tests/spb_edge) through a real mosquitto: births, data with the metrics'
own time stamps, a lost seq (rebirth asked for and recorded), a death (data gap at once),
redelivery and host restart without doubles, a birth that does not match the mapping
(quarantined), and the same excursion as the JSON path."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlmodel import select

from tests.device_helpers import facility_text, json_path_excursions, limit_excursions, stored
from tests.mqtt_helpers import wait_until
from tracker.core.db import get_engine, unit_of_work
from tracker.core.timeutil import utcnow
from tracker.facility.file import parse_facility
from tracker.facility.load import load_facility
from tracker.ingest.client import IngestOptions
from tracker.ingest.processor import InboundMessage
from tracker.ingest.sparkplug import SparkplugHost, SparkplugProcessor
from tracker.monitoring.device_events import DeviceEvent
from tracker.monitoring.excursions import list_excursions
from tracker.monitoring.intake import Intake
from tracker.monitoring.quarantine import QuarantinedMessage
from tracker.wire.broker import LocalBroker
from tracker.wire.mqtt import connect, make_client, parse_broker_url
from tracker.wire.sparkplug import encode_payload, state_topic

EDGE = Path(__file__).parent / "spb_edge"


def uv() -> str:
    found = shutil.which("uv") or str(Path.home() / ".local/bin/uv")
    if not Path(found).exists():
        pytest.fail("uv is needed to run the independent edge node (tests/spb_edge)")
    return found


class Edge:
    """The pysparkplug edge node process, one JSON command per line."""

    def __init__(self, broker: LocalBroker) -> None:
        address = parse_broker_url(broker.url)
        env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
        self.proc = subprocess.Popen(
            [
                uv(),
                "run",
                "--frozen",
                "--quiet",
                "--project",
                str(EDGE),
                "python",
                str(EDGE / "edge.py"),
                "Plant1",
                "GW1",
                "PC1",
                address.host,
                str(address.port),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.commands: list[str] = []

    def send(self, **cmd) -> None:
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        if cmd["cmd"] == "die":
            self.proc.wait(10)
            return
        while True:
            line = self.proc.stdout.readline().strip()
            assert line, "the edge node process ended"
            if line.startswith("NCMD"):
                self.commands.append(line)
                continue
            assert line == "ok", line
            return

    def read_commands(self, timeout: float = 10) -> list[str]:
        """Ask for nothing; collect NCMD lines that arrive (a no-op command flushes them)."""
        deadline = time.monotonic() + timeout
        while not self.commands and time.monotonic() < deadline:
            self.send(cmd="noop")
            time.sleep(0.2)
        return self.commands

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


@contextmanager
def running_host(
    engine: Engine, broker: LocalBroker, host_id: str = "gmp-tracker"
) -> Iterator[SparkplugHost]:
    host = SparkplugHost(
        engine,
        parse_broker_url(broker.url),
        IngestOptions(client_id=f"test-spb-{host_id}", protocol=broker.protocol, gap_check_s=3600),
        host_id=host_id,
    )
    stop = threading.Event()
    thread = threading.Thread(target=host.run, args=(stop,), daemon=True)
    thread.start()
    try:
        assert host.subscribed.wait(10), "host did not subscribe"
        yield host
    finally:
        stop.set()
        thread.join(15)
        assert not thread.is_alive()


def retained(broker: LocalBroker, topic: str) -> bytes | None:
    """The retained message on ``topic`` as a new subscriber sees it."""
    got: list[bytes] = []
    address = parse_broker_url(broker.url)
    client = make_client(address, client_id="test-state-reader", protocol=broker.protocol)
    client.on_message = lambda _c, _u, msg: got.append(msg.payload)
    connect(client, address)
    client.subscribe(topic, qos=1)
    deadline = time.monotonic() + 3
    while not got and time.monotonic() < deadline:
        client.loop(0.1)
    client.disconnect()
    return got[0] if got else None


def events(engine: Engine) -> list[str]:
    with unit_of_work(engine) as s:
        return [e.kind for e in s.exec(select(DeviceEvent).order_by(DeviceEvent.id)).all()]


def test_edge_node_from_an_independent_library(engine: Engine, broker: LocalBroker, clone_db) -> None:
    with unit_of_work(engine) as s:
        load_facility(s, parse_facility(facility_text()), actor="test")
    json_engine = get_engine(clone_db(engine.url.render_as_string(hide_password=False)))
    start = (utcnow() - timedelta(minutes=30)).replace(second=0, microsecond=0)
    ms = [int((start + timedelta(minutes=m)).timestamp() * 1000) for m in range(12)]
    # grade B at rest: 0.5 µm action 3 520 /m³ = 99.6 in 28.3 L; minutes 3-5 above it; minute 6
    # above it but the counter says fault (stored as status, never a breach)
    c05 = {3: 400, 4: 900, 5: 300, 6: 5000}
    samples = [
        {"ts": ms[m], "c05": c05.get(m, 10), "c50": 0, "vol": 28.3, "status": "fault" if m == 6 else "ok"}
        for m in range(10)
    ]
    with running_host(engine, broker) as host:
        assert json.loads(retained(broker, state_topic("gmp-tracker")))["online"] is True
        edge = Edge(broker)
        try:
            edge.send(cmd="connect")  # NBIRTH + DBIRTH
            wait_until(lambda: events(engine).count("birth") == 2, what="both births")
            for s in samples[:6]:
                edge.send(cmd="sample", **s)
            edge.send(cmd="node", ts=ms[5], dp=14.5)
            wait_until(lambda: len(stored(engine, "T-B1-PC")) == 6, what="six samples")
            assert "seq_gap" not in events(engine)
            edge.send(cmd="skip")  # one message lost on the way (seq jumps)
            for s in samples[6:]:
                edge.send(cmd="sample", **s)
            wait_until(lambda: len(stored(engine, "T-B1-PC")) == 10, what="all ten samples")
            wait_until(lambda: "seq_gap" in events(engine), what="the gap recorded")
            assert any("Node Control/Rebirth" in c for c in edge.read_commands())
            assert host.commands_sent == 1
            edge.send(cmd="die")  # no DISCONNECT: the broker sends its NDEATH will
            wait_until(lambda: "node_death" in events(engine), timeout=15, what="NDEATH")
        finally:
            edge.kill()
        with unit_of_work(engine) as s:
            gaps = {e["monitor"] for e in list_excursions(s, type_="data_gap", open_only=True)}
        assert gaps >= {"T-B1-PC", "T-B1-DP"}  # at once, not after 3 × the interval

    rows = stored(engine, "T-B1-PC")
    assert [seq for seq, *_ in rows] == ms[:10]  # identity: the metric's own time stamp
    assert [int(t.timestamp() * 1000) for _, t, *_ in rows] == ms[:10]
    assert rows[6][2] == "fault"
    assert rows[0][3]["source"]["protocol"] == "sparkplug_b"
    assert rows[0][3]["source"]["bdSeq"] == 0
    (dp,) = stored(engine, "T-B1-DP")
    assert dp[0] == ms[5]
    assert events(engine).index("seq_gap") < events(engine).index("rebirth_requested")

    # the edge node comes back (a new session, births again) and resends what it had: no doubles
    with running_host(engine, broker, host_id="gmp-tracker") as host:
        edge = Edge(broker)
        try:
            edge.send(cmd="connect")
            for s in samples[:3]:
                edge.send(cmd="sample", **s)
            wait_until(lambda: host.stats.duplicates >= 3, what="resent samples absorbed")
        finally:
            edge.send(cmd="quit")
            edge.kill()
    assert len(stored(engine, "T-B1-PC")) == 10

    via_sparkplug = limit_excursions(engine, "T-B1-PC")
    assert via_sparkplug
    assert via_sparkplug[0][:3] == ("limit", "0.5", "action")
    as_json = [{**s, "ts": start + timedelta(minutes=m)} for m, s in enumerate(samples)]
    assert json_path_excursions(json_engine, "T-B1-PC", "T-B1", as_json) == via_sparkplug


def test_birth_that_does_not_match_the_mapping_is_quarantined(engine: Engine) -> None:
    with unit_of_work(engine) as s:
        load_facility(s, parse_facility(facility_text()), actor="test")
    processor = SparkplugProcessor(Intake())
    now = utcnow()
    stamp = int(now.timestamp() * 1000)
    birth = encode_payload(
        timestamp_ms=stamp, seq=0, metrics=[("bdSeq", None, 8, 0), ("Room/DP_Pa", 1, 10, 12.0)]
    )
    dbirth = encode_payload(  # the counter's 5.0 µm channel is missing
        timestamp_ms=stamp, seq=1, metrics=[("Counts/0.5um", 2, 8, 1), ("Sample/Volume_L", 3, 10, 28.3)]
    )
    data = encode_payload(timestamp_ms=stamp, seq=2, metrics=[(None, 1, 10, 13.0)])  # by alias only
    messages = [
        InboundMessage("spBv1.0/Plant1/NBIRTH/GW1", birth, now),
        InboundMessage("spBv1.0/Plant1/DBIRTH/GW1/PC1", dbirth, now),
        InboundMessage("spBv1.0/Plant1/NDATA/GW1", data, now),
        InboundMessage("spBv1.0/Plant1/NDATA/GW1", b"\xff\xfenot protobuf", now),
        InboundMessage("spBv1.0/Other/NDATA/X", b"not ours, not decoded", now),
    ]
    with unit_of_work(engine) as s:
        outcome = processor.process(s, messages)
        quarantined = s.exec(select(QuarantinedMessage.reason, QuarantinedMessage.detail)).all()
    assert outcome.stored == 1  # the pressure metric, resolved through the birth's alias
    assert sorted(r for r, _ in quarantined) == ["device_mapping", "device_payload"]
    assert any("Counts/5.0um" in d and "T-B1-PC" in d for _, d in quarantined)
    (dp,) = stored(engine, "T-B1-DP")
    assert dp[0] == stamp
    assert dp[3]["value"] == 13.0


def test_stale_death_is_ignored(engine: Engine) -> None:
    """An NDEATH carrying an older session's bdSeq (it can arrive after the new NBIRTH) leaves the
    node alive (eclipse/tahu and go-sparkplugb notes, reference/anchors.md)."""
    with unit_of_work(engine) as s:
        load_facility(s, parse_facility(facility_text()), actor="test")
    processor = SparkplugProcessor(Intake())
    now = utcnow()
    stamp = int(now.timestamp() * 1000)
    birth = encode_payload(
        timestamp_ms=stamp, seq=0, metrics=[("bdSeq", None, 8, 5), ("Room/DP_Pa", None, 10, 12.0)]
    )
    old_death = encode_payload(timestamp_ms=stamp, seq=None, metrics=[("bdSeq", None, 8, 4)])
    with unit_of_work(engine) as s:
        processor.process(
            s,
            [
                InboundMessage("spBv1.0/Plant1/NBIRTH/GW1", birth, now),
                InboundMessage("spBv1.0/Plant1/NDEATH/GW1", old_death, now),
            ],
        )
    assert events(engine) == ["birth", "stale_death"]
