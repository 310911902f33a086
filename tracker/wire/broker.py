"""Start a local MQTT broker for the demo and the tests: Debian's mosquitto, or amqtt.

Production uses an external broker (DESIGN §6); these are for one machine only.
The mosquitto configuration raises the queue limits: its default of 1,000 queued
messages per client loses QoS 1 messages when a subscriber falls behind (platform.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

MOSQUITTO_CONF = """\
listener {port} 127.0.0.1
{security}
persistence {persistence}
persistence_location {data_dir}/
max_queued_messages 1000000
max_queued_bytes 0
max_inflight_messages 0
persistent_client_expiration 14d
log_type error
log_type warning
log_dest file {data_dir}/mosquitto.log
"""


@dataclass(frozen=True)
class BrokerSecurity:
    """TLS and access control for a local mosquitto: the production setup of docs/broker.md in
    miniature (server certificate from the facility's CA, password file, ACL)."""

    certfile: Path
    keyfile: Path
    cafile: Path
    password_file: Path
    acl_file: Path

    def conf(self) -> str:
        return (
            f"cafile {self.cafile}\ncertfile {self.certfile}\nkeyfile {self.keyfile}\n"
            f"tls_version tlsv1.2\nallow_anonymous false\npassword_file {self.password_file}\n"
            f"acl_file {self.acl_file}"
        )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"no broker listening on 127.0.0.1:{port} after {timeout}s")


def find_mosquitto() -> str | None:
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).exists()), None
    )


class LocalBroker:
    """A broker on 127.0.0.1; ``kind`` is ``mosquitto`` or ``amqtt``. Use as a context manager."""

    def __init__(
        self,
        *,
        port: int | None = None,
        data_dir: Path | None = None,
        persistence: bool = True,
        prefer: str = "mosquitto",
        security: BrokerSecurity | None = None,
    ) -> None:
        self.port = port or free_port()
        self.security = security
        if security is not None and (prefer != "mosquitto" or not find_mosquitto()):
            raise RuntimeError("TLS and access control need Debian's mosquitto")
        self._tmp = None if data_dir else tempfile.TemporaryDirectory(prefix="gmp-broker-")
        self.data_dir = Path(data_dir or self._tmp.name)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.persistence = persistence
        self.kind = "mosquitto" if prefer == "mosquitto" and find_mosquitto() else "amqtt"
        self._proc: subprocess.Popen | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._amqtt = None

    @property
    def url(self) -> str:
        if self.security is not None:  # the certificate names localhost
            return f"mqtts://localhost:{self.port}"
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def protocol(self) -> int:
        """amqtt speaks MQTT 3.1.1 only."""
        return 5 if self.kind == "mosquitto" else 3

    def start(self) -> LocalBroker:
        if self.kind == "mosquitto":
            self._hand_data_dir_to_mosquitto()
            conf = self.data_dir / "mosquitto.conf"
            conf.write_text(
                MOSQUITTO_CONF.format(
                    port=self.port,
                    data_dir=self.data_dir,
                    persistence="true" if self.persistence else "false",
                    security=self.security.conf() if self.security else "allow_anonymous true",
                )
            )
            self._proc = subprocess.Popen(
                [find_mosquitto(), "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
            )
        else:
            self._start_amqtt()
        wait_for_port(self.port)
        return self

    def _hand_data_dir_to_mosquitto(self) -> None:
        """Started as root, mosquitto drops to its ``mosquitto`` user: without write access to
        the data directory it silently keeps neither its log nor its persistence file, and a
        restart then loses every queued QoS 1 message (tests/test_faults.py found this)."""
        if os.geteuid() == 0:
            with contextlib.suppress(LookupError, OSError):
                shutil.chown(self.data_dir, user="mosquitto")

    def _start_amqtt(self) -> None:
        from amqtt.broker import Broker  # optional fallback, imported only when needed

        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{self.port}"}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }
        ready = threading.Event()

        def serve() -> None:
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
            self._amqtt = Broker(config, loop=self._loop)
            self._loop.run_until_complete(self._amqtt.start())
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=serve, name="amqtt-broker", daemon=True)
        self._thread.start()
        ready.wait(10)

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
            self._proc = None
        if self._loop is not None and self._amqtt is not None:
            fut = asyncio.run_coroutine_threadsafe(self._amqtt.shutdown(), self._loop)
            with contextlib.suppress(Exception):
                fut.result(5)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._loop = None

    def restart(self) -> None:
        """Stop and start on the same port (persistent sessions survive with mosquitto)."""
        self.stop()
        self.start()

    def __enter__(self) -> LocalBroker:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
