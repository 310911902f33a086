"""What every ``tracker`` command module shares: the console, common options, DB access."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from rich.console import Console

from tracker.db import get_engine
from tracker.settings import get_settings

console = Console()
DbOpt = Annotated[str | None, typer.Option("--db", help="database URL (TRACKER_DATABASE_URL)")]
MqttOpt = Annotated[str | None, typer.Option("--mqtt", help="broker URL (TRACKER_MQTT_URL)")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print one JSON document")]
ActorOpt = Annotated[str, typer.Option("--by", help="who does this (recorded in the audit trail)")]


def db_url(url: str | None) -> str:
    return url or get_settings().database_url


def engine_for(url: str | None):
    return get_engine(db_url(url))


def print_json(value) -> None:
    sys.stdout.write(json.dumps(value, ensure_ascii=False, indent=2) + "\n")
