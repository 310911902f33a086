"""Broker addresses and paho-mqtt client construction shared by ingester and simulator.

The URL form is ``mqtt://[user:pass@]host:port`` or ``mqtts://`` for TLS.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}
#: Session survives disconnects for this long (seconds); a restarted ingester resumes its queue.
SESSION_EXPIRY_S = 7 * 24 * 3600


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = None

    def display(self) -> str:
        """URL without the password, safe for logs."""
        scheme = "mqtts" if self.tls else "mqtt"
        user = f"{self.username}@" if self.username else ""
        return f"{scheme}://{user}{self.host}:{self.port}"


def parse_broker_url(url: str) -> BrokerAddress:
    """Parse ``mqtt://[user:pass@]host[:port]``; raise ``ValueError`` naming what is wrong."""
    parts = urlsplit(url)
    if parts.scheme not in DEFAULT_PORTS:
        raise ValueError(f"MQTT URL must start with mqtt:// or mqtts://, got {url!r}")
    if not parts.hostname:
        raise ValueError(f"MQTT URL has no host: {url!r}")
    return BrokerAddress(
        host=parts.hostname,
        port=parts.port or DEFAULT_PORTS[parts.scheme],
        tls=parts.scheme == "mqtts",
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )


def make_client(
    address: BrokerAddress,
    *,
    client_id: str,
    protocol: int = 5,
    persistent: bool = False,
    manual_ack: bool = False,
    ca_file: str | None = None,
) -> mqtt.Client:
    """Build a paho 2.x client for ``address``; the caller connects it with :func:`connect`."""
    version = mqtt.MQTTv5 if protocol == 5 else mqtt.MQTTv311
    kwargs: dict = {}
    if version == mqtt.MQTTv311:
        kwargs["clean_session"] = not persistent
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=version,
        manual_ack=manual_ack,
        **kwargs,
    )
    if address.username:
        client.username_pw_set(address.username, address.password)
    if address.tls:
        client.tls_set(ca_certs=ca_file, cert_reqs=ssl.CERT_REQUIRED)
    client.reconnect_delay_set(min_delay=1, max_delay=30)
    return client


def connect(
    client: mqtt.Client,
    address: BrokerAddress,
    *,
    persistent: bool = False,
    keepalive: int = 30,
    receive_maximum: int = 65535,
) -> None:
    """Connect; for MQTT v5 a persistent session is ``clean_start=False`` plus an expiry.

    ``receive_maximum`` (MQTT v5 only) caps the QoS 1 messages the broker sends us without
    an acknowledgement: the rest wait in the broker's queue, which is our back-pressure.
    """
    if client.protocol == mqtt.MQTTv5:
        props = Properties(PacketTypes.CONNECT)
        if persistent:
            props.SessionExpiryInterval = SESSION_EXPIRY_S
        props.ReceiveMaximum = max(1, min(receive_maximum, 65535))
        client.connect(
            address.host, address.port, keepalive=keepalive, clean_start=not persistent, properties=props
        )
    else:
        client.connect(address.host, address.port, keepalive=keepalive)
