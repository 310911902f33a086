"""``tracker notify``: the notification dispatcher, and ``tracker notify-failed``: what did not arrive."""

from __future__ import annotations

import logging
import signal
import threading
from typing import Annotated

import typer
from rich.table import Table

from tracker.cli.common import DbOpt, JsonOpt, console, engine_for, print_json
from tracker.core.db import unit_of_work
from tracker.core.i18n import current_lang
from tracker.notify.dispatcher import Dispatcher, failed_target_docs
from tracker.notify.watchdog import Watchdog

HEAD = {
    "en": ("id", "excursion", "rule", "step", "target", "status", "attempts", "last error"),
    "zh-CN": ("编号", "超标", "规则", "步骤", "目标", "状态", "尝试次数", "最近错误"),
}


def register(app: typer.Typer) -> None:
    app.command("notify")(notify)
    app.command("notify-failed")(notify_failed)


def notify(
    db: DbOpt = None,
    poll: Annotated[float, typer.Option(help="seconds between looks at the outbox")] = 0.25,
    watch: Annotated[bool, typer.Option(help="run the watchdog (system alarms) in this process")] = True,
) -> None:
    """Deliver alarm notifications from the outbox until SIGTERM/SIGINT (docs/alarms.md); the
    watchdog raises system alarms (ingester, broker, database, targets, quarantine, clocks, calibration)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    engine = engine_for(db)
    Dispatcher(engine, watchdog=Watchdog(engine) if watch else None).run(stop, poll_s=poll)


def notify_failed(db: DbOpt = None, as_json: JsonOpt = False) -> None:
    """Notifications whose last attempt failed: retrying, or given up (状态 failed)."""
    with unit_of_work(engine_for(db)) as session:
        docs = failed_target_docs(session)
    if as_json:
        print_json(docs)
        return
    table = Table(*HEAD["en" if current_lang() == "en" else "zh-CN"])
    for d in docs:
        table.add_row(
            *(str(d[k]) for k in ("id", "excursion", "rule", "step", "target", "status", "attempts")),
            (d["last_error"] or "")[:80],
        )
    console.print(table)
