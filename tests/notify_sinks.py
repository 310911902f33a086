"""Real local delivery endpoints for the alarm tests: an SMTP server (aiosmtpd) and an HTTP sink."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from aiosmtpd.controller import Controller


@dataclass
class HttpSink:
    """Records every JSON POST by path; answers 500 to the first ``fail_first`` requests of a path."""

    port: int = 0
    fail_first: dict[str, int] = field(default_factory=dict)
    received: dict[str, list[dict]] = field(default_factory=dict)
    refused: dict[str, int] = field(default_factory=dict)

    def posts(self, path: str) -> list[dict]:
        return self.received.get(path, [])

    def url(self, path: str) -> str:
        return f"json://127.0.0.1:{self.port}{path}"


@contextmanager
def http_sink(fail_first: dict[str, int] | None = None) -> Iterator[HttpSink]:
    sink = HttpSink(fail_first=dict(fail_first or {}))
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with lock:
                if sink.refused.get(self.path, 0) < sink.fail_first.get(self.path, 0):
                    sink.refused[self.path] = sink.refused.get(self.path, 0) + 1
                    code = 500
                else:
                    sink.received.setdefault(self.path, []).append(json.loads(body))
                    code = 200
            self.send_response(code)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    sink.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield sink
    finally:
        server.shutdown()
        server.server_close()


class _Mailbox:
    def __init__(self) -> None:
        self.messages: list[bytes] = []

    async def handle_DATA(self, server, session, envelope) -> str:
        self.messages.append(envelope.content)
        return "250 OK"


@contextmanager
def smtp_server() -> Iterator[tuple[int, list[bytes]]]:
    """A real SMTP server on a free loopback port; yields (port, messages received)."""
    mailbox = _Mailbox()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port, mailbox.messages
    finally:
        controller.stop()
