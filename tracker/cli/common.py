"""What every ``tracker`` command module shares: the console, common options, DB access."""

from __future__ import annotations

import getpass
import json
import os
import sys
from typing import Annotated

import typer
from rich.console import Console

from tracker.core.db import get_engine
from tracker.core.i18n import t
from tracker.core.settings import get_settings
from tracker.identity.users import Authenticated, login, require_role

console = Console()
DbOpt = Annotated[str | None, typer.Option("--db", help="database URL (TRACKER_DATABASE_URL)")]
MqttOpt = Annotated[str | None, typer.Option("--mqtt", help="broker URL (TRACKER_MQTT_URL)")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print one JSON document")]
AsOpt = Annotated[str, typer.Option("--as", help="your user name (you will be asked for your password)")]
PwStdin = Annotated[bool, typer.Option("--password-stdin", help="read the password from stdin's first line")]


def db_url(url: str | None) -> str:
    return url or get_settings().database_url


def engine_for(url: str | None):
    return get_engine(db_url(url))


def cli_reader() -> str:
    """Who reads on a command that does not log in (an audited read of personal data, issue 20):
    the operating-system account."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return f"cli:uid-{os.getuid()}"


def print_json(value) -> None:
    sys.stdout.write(json.dumps(value, ensure_ascii=False, indent=2) + "\n")


_stdin_lines: list[str] | None = None


def _stdin_line() -> str:
    """Next line of stdin (the password, then a new password for ``user passwd``)."""
    global _stdin_lines
    if _stdin_lines is None:
        _stdin_lines = sys.stdin.read().splitlines()
    if not _stdin_lines:
        raise typer.BadParameter("stdin has no (more) password lines")
    return _stdin_lines.pop(0)


def password_from(prompt: str, from_stdin: bool, *, env: bool = True, confirm: bool = False) -> str:
    if from_stdin:
        return _stdin_line()
    if env and os.environ.get("TRACKER_PASSWORD"):
        return os.environ["TRACKER_PASSWORD"]
    return typer.prompt(prompt, hide_input=True, confirmation_prompt=confirm)


def login_cli(
    db: str | None, username: str, from_stdin: bool, *roles: str, action: str = "this", signing: bool = False
) -> Authenticated:
    """Authenticate ``username`` (and, when ``roles`` are given, require one of them).

    For a signature the password is typed (or piped) each time, never taken from
    TRACKER_PASSWORD: a password left in the environment must not sign for its owner.
    """
    if not username:
        raise typer.BadParameter("name yourself with --as USER: the change is attributed to you")
    password = password_from(f"{t('password')} ({username})", from_stdin, env=not signing)
    who = login(engine_for(db), username=username, password=password)
    if roles:
        require_role(who, *roles, action=action)
    return who
