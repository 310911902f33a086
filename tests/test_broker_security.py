"""Issue 5 item 3: the ingester against a mosquitto with TLS from a self-made CA, a password
file and an ACL under which a monitor may publish only under its own topic."""

from __future__ import annotations

import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from sqlalchemy import Engine
from sqlmodel import select

from tests.factories import T0, minutes, particles, topic
from tests.mqtt_helpers import wait_until
from tracker.core.db import unit_of_work
from tracker.facility.models import Monitor
from tracker.ingest.client import Ingester, IngestOptions
from tracker.monitoring.readings import RawMessage
from tracker.wire.broker import BrokerSecurity, LocalBroker
from tracker.wire.mqtt import connect, make_client, parse_broker_url

INGEST_PASSWORD = "ingest secret for this test only"
MONITOR_PASSWORD = "monitor secret for this test only"


def _run(*args: str, cwd: Path) -> None:
    subprocess.run(args, cwd=cwd, check=True, capture_output=True)


@pytest.fixture
def secured_broker() -> Iterator[tuple[LocalBroker, Path]]:
    """A test CA, a server certificate for localhost, two accounts and the facility's ACL.

    Started as root, mosquitto reads them as its own ``mosquitto`` user: they live in a
    world-readable temporary directory (pytest's own is private to root)."""
    with tempfile.TemporaryDirectory(prefix="gmp-pki-") as name:
        d = Path(name)
        d.chmod(0o755)
        yield from _secured(d)


def _secured(d: Path) -> Iterator[tuple[LocalBroker, Path]]:
    _run(
        "openssl",
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=GMP tracker test CA",
        cwd=d,
    )
    _run(
        "openssl",
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
        cwd=d,
    )
    (d / "ext.cnf").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    _run(
        "openssl",
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
        cwd=d,
    )
    _run("mosquitto_passwd", "-c", "-b", "passwords", "tracker-ingest", INGEST_PASSWORD, cwd=d)
    _run("mosquitto_passwd", "-b", "passwords", "T-B1-PC", MONITOR_PASSWORD, cwd=d)
    # the ingester reads everything; a monitor writes only under its own code (its user name)
    (d / "acl").write_text(
        "user tracker-ingest\ntopic read gmp/#\n\npattern write gmp/+/+/%u\npattern write gmp/+/+/%u/status\n"
    )
    for f in d.iterdir():
        f.chmod(0o644)
    security = BrokerSecurity(
        certfile=d / "server.crt",
        keyfile=d / "server.key",
        cafile=d / "ca.crt",
        password_file=d / "passwords",
        acl_file=d / "acl",
    )
    with LocalBroker(persistence=False, security=security) as broker:
        yield broker, d / "ca.crt"


def url(broker: LocalBroker, user: str, password: str) -> str:
    return broker.url.replace("mqtts://", f"mqtts://{user}:{password}@")


def stored(engine: Engine, monitor: str) -> int:
    with unit_of_work(engine) as s:
        mon = s.exec(select(Monitor).where(Monitor.code == monitor)).one()
        return len(s.exec(select(RawMessage.seq).where(RawMessage.monitor_id == mon.id)).all())


def monitor_client(broker: LocalBroker, ca: Path, password: str) -> tuple[mqtt.Client, list]:
    address = parse_broker_url(url(broker, "T-B1-PC", password))
    client = make_client(address, client_id="T-B1-PC", ca_file=str(ca))
    outcome: list = []
    client.on_connect = lambda _c, _u, _f, reason, _p: outcome.append(reason)
    connect(client, address)
    client.loop_start()
    wait_until(lambda: bool(outcome), timeout=10, what="CONNACK")
    return client, outcome


def test_tls_passwords_and_the_acl_keep_monitors_to_their_own_topic(
    facility_engine: Engine, secured_broker: tuple[LocalBroker, Path]
) -> None:
    broker, ca = secured_broker
    ingester = Ingester(
        facility_engine,
        parse_broker_url(url(broker, "tracker-ingest", INGEST_PASSWORD)),
        IngestOptions(client_id="secure-ingest", ca_file=str(ca)),
    )
    stop = threading.Event()
    thread = threading.Thread(target=ingester.run, args=(stop,), daemon=True)
    thread.start()
    try:
        assert ingester.subscribed.wait(15), "the ingester did not get in over TLS"
        client, outcome = monitor_client(broker, ca, MONITOR_PASSWORD)
        assert not outcome[0].is_failure
        own = client.publish(topic("T-B1", "T-B1-PC"), particles(seq=1, ts=T0, c05=10), qos=1)
        other = client.publish(
            topic("T-C1", "T-C1-PC"), particles(monitor="T-C1-PC", seq=1, ts=T0, c05=10), qos=1
        )
        later = client.publish(topic("T-B1", "T-B1-PC"), particles(seq=2, ts=T0 + minutes(1), c05=10), qos=1)
        for info in (own, other, later):
            info.wait_for_publish(10)
        wait_until(lambda: stored(facility_engine, "T-B1-PC") == 2, timeout=15, what="own readings")
        assert stored(facility_engine, "T-C1-PC") == 0  # the broker refused it: not its topic
        client.disconnect()
        client.loop_stop()

        wrong, refused = monitor_client(broker, ca, "not the password")
        assert refused[0].is_failure  # bad user name or password
        wrong.loop_stop()
    finally:
        stop.set()
        thread.join(15)


def test_plain_mqtt_or_an_unknown_ca_gets_nowhere(
    secured_broker: tuple[LocalBroker, Path], tmp_path: Path
) -> None:
    broker, _ca = secured_broker
    plain = make_client(
        parse_broker_url(f"mqtt://T-B1-PC:{MONITOR_PASSWORD}@localhost:{broker.port}"), client_id="plain"
    )
    outcome: list = []
    plain.on_connect = lambda _c, _u, _f, reason, _p: outcome.append(reason)
    connect(plain, parse_broker_url(f"mqtt://localhost:{broker.port}"))
    plain.loop_start()
    time.sleep(2)  # the TLS listener does not answer plain MQTT: no CONNACK
    plain.loop_stop()
    assert outcome == []
    other = tmp_path / "other-ca"
    other.mkdir()
    _run(
        "openssl",
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=Someone else",
        cwd=other,
    )
    address = parse_broker_url(url(broker, "T-B1-PC", MONITOR_PASSWORD))
    stranger = make_client(address, client_id="stranger", ca_file=str(other / "ca.crt"))
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
        connect(stranger, address)  # the server is not who we trust
