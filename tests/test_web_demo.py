"""Issue 7: ``tracker demo`` also starts the web app and prints its URL and one login per role
(passwords generated at start, in the demo database only); ``tracker serve`` is the same app."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.web_helpers import csrf_of
from tracker.identity.users import ROLES
from tracker.wire.broker import free_port

ROOT = Path(__file__).resolve().parent.parent


def test_demo_serves_the_web_app_with_a_login_per_role(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "TRACKER_LANG": "en", "COLUMNS": "160"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tracker.cli",
            "demo",
            "--speed",
            "1800",
            "--duration",
            "25s",
            "--data-dir",
            str(tmp_path),
            "--web-port",
            str(port),
        ],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines: list[str] = []
        deadline = time.monotonic() + 180  # the demo enrols a password per role (argon2 each)
        while len([x for x in lines if x.strip().startswith("demo.") or " demo." in x]) < len(ROLES):
            assert time.monotonic() < deadline, "".join(lines)
            line = proc.stdout.readline()
            assert line, proc.stderr.read()[-2000:]
            lines.append(line)
        text = "".join(lines)
        assert f"http://127.0.0.1:{port}/" in text
        logins = dict(re.findall(r"^\s+\w+\s+(demo\.\w+)\s+(\S+)$", text, flags=re.M))
        assert set(logins) == {
            "demo.admin",
            "demo.operator",
            "demo.production",
            "demo.qa",
            "demo.qp",
            "demo.viewer",
            "demo.steward",  # identity_reveal (issue 20)
        }
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", follow_redirects=False) as web:
            token = csrf_of(web.get("/login").text)
            r = web.post(
                "/login", data={"username": "demo.qa", "password": logins["demo.qa"], "csrf_token": token}
            )
            assert r.status_code == 303
            assert r.headers["location"] == "/"
            assert web.get("/").status_code == 200
            assert web.get("/docs").status_code == 200
        _out, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    # nothing of the demo's passwords is in the repository
    tracked = subprocess.run(
        ["git", "grep", "-l", logins["demo.qa"]], cwd=ROOT, capture_output=True, text=True
    )
    assert tracked.stdout == ""
