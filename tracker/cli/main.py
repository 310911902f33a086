"""``tracker`` command line: thin commands over plain functions that take a session.

Broker and database come from TRACKER_MQTT_URL / TRACKER_DATABASE_URL or --mqtt / --db.
Read-outs take --json and print one JSON document with ISO 8601 UTC times (DESIGN §9).
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from datetime import timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from tracker.cli.alarms import register as register_alarm_commands
from tracker.cli.common import (
    AsOpt,
    DbOpt,
    JsonOpt,
    MqttOpt,
    PwStdin,
    console,
    db_url,
    engine_for,
    login_cli,
    print_json,
)
from tracker.cli.exchange import register as register_exchange_commands
from tracker.cli.notify import register as register_notify_commands
from tracker.cli.quality import register as register_quality_commands
from tracker.cli.report import report_app
from tracker.cli.trending import register as register_trending_commands
from tracker.core import audit
from tracker.core.db import unit_of_work
from tracker.core.errors import ConflictError, NotFoundError, Reason, TrackerError, in_language
from tracker.core.i18n import current_lang, t
from tracker.core.settings import get_settings
from tracker.core.timeutil import local_display, parse_duration, parse_instant, utcnow

app = typer.Typer(
    help="GMP cleanroom monitoring and batch-record compliance tracker.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database schema (Alembic migrations).", no_args_is_help=True)
facility_app = typer.Typer(help="Facility registry: sites, rooms, monitors, limits.", no_args_is_help=True)
room_app = typer.Typer(help="Room operational state (静态/动态).", no_args_is_help=True)
audit_app = typer.Typer(help="Audit trail (审计追踪).", no_args_is_help=True)
rollups_app = typer.Typer(help="Hourly rollups behind reports.", no_args_is_help=True)
inhibit_app = typer.Typer(help="Maintenance inhibits that expire by themselves.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(facility_app, name="facility")
app.add_typer(room_app, name="room")
app.add_typer(audit_app, name="audit")
app.add_typer(inhibit_app, name="inhibit")
app.add_typer(rollups_app, name="rollups")
app.add_typer(report_app, name="report")
register_quality_commands(app)
register_trending_commands(app)
register_notify_commands(app)
register_alarm_commands(app)
register_exchange_commands(app)


@db_app.command("upgrade")
def db_upgrade(db: DbOpt = None) -> None:
    """Create or migrate the schema to the newest revision."""
    from tracker.core.migrate import upgrade
    from tracker.core.partitions import ensure_ahead

    upgrade(db_url(db))
    console.print(f"{t('db_upgraded')}: {db_url(db)}")
    with unit_of_work(engine_for(db)) as session:
        created = ensure_ahead(session.connection(), now=utcnow())
    if created:
        console.print(f"{t('partitions_created')}: {', '.join(created)}")


@db_app.command("partitions")
def db_partitions(
    ensure: Annotated[
        bool,
        typer.Option(
            "--ensure",
            help="create this month's and the coming months' partitions, and those of "
            "months whose readings sit in the DEFAULT partition",
        ),
    ] = False,
    ahead: Annotated[int, typer.Option(help="months ahead to create with --ensure")] = 3,
    db: DbOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """List (and with --ensure create) the monthly partitions of readings on PostgreSQL."""
    from tracker.core.partitions import ensure_ahead, ensure_strays, is_partitioned, list_partitions
    from tracker.core.timeutil import iso_utc

    created: list[str] = []
    with unit_of_work(engine_for(db)) as session:
        connection = session.connection()
        partitioned = is_partitioned(connection)
        if ensure and partitioned:
            created = ensure_ahead(connection, now=utcnow(), months=ahead) + ensure_strays(connection)
        parts = list_partitions(connection)
    if json_out:
        print_json(
            {
                "partitioned": partitioned,
                "created": created,
                "partitions": [
                    {
                        "name": p.name,
                        "from": iso_utc(p.start),
                        "to": iso_utc(p.end),
                        "default": p.is_default,
                        "rows": p.rows,
                    }
                    for p in parts
                ],
            }
        )
        return
    if not partitioned:
        console.print(t("partitions_none"))
        return
    if created:
        console.print(f"{t('partitions_created')}: {', '.join(created)}")
    table = Table(title=t("partitions"))
    for key in ("partition", "partition_from", "partition_to", "partition_rows"):
        table.add_column(t(key))
    for p in parts:
        table.add_row(
            p.name,
            iso_utc(p.start) or "DEFAULT",
            iso_utc(p.end) or "",
            "—" if p.rows is None else str(p.rows),
        )
    console.print(table)
    default = next((p for p in parts if p.is_default), None)
    if default is not None and default.rows:
        console.print(f"[yellow]{t('partition_default_rows')} ({default.rows})[/yellow]")


@facility_app.command("load")
def facility_load(
    file: Path,
    db: DbOpt = None,
    as_: Annotated[
        str | None,
        typer.Option("--as", help="admin loading the file (may be omitted only while no user exists)"),
    ] = None,
    approve_as: Annotated[
        str | None,
        typer.Option(
            "--approve-as", help="QA user approving a change of limits or evaluation settings (e-signature)"
        ),
    ] = None,
    password_stdin: PwStdin = False,
) -> None:
    """Load a facility file (idempotent; every change is audited; a change of limits or of how
    readings are judged needs QA's signature)."""
    from tracker.facility.file import read_facility_file
    from tracker.facility.load import load_facility
    from tracker.identity.users import count_users

    facility = read_facility_file(file)
    for warning in facility.warnings:
        console.print(f"[yellow]{t('warning')}: {in_language(warning, current_lang())}[/yellow]")
    with unit_of_work(engine_for(db)) as session:
        users_exist = count_users(session) > 0
    if as_ is None and users_exist:
        raise typer.BadParameter("name the admin loading the file with --as")
    loading = Reason("loading a facility file", "载入设施文件")
    approving = Reason("approving limits", "批准限度")
    actor = login_cli(db, as_, password_stdin, "admin", action=loading).username if as_ else "bootstrap"
    approver = (
        login_cli(db, approve_as, password_stdin, "qa", action=approving, signing=True)
        if approve_as
        else None
    )
    with unit_of_work(engine_for(db)) as session:
        result = load_facility(session, facility, actor=actor, approver=approver)
    key = "facility_loaded" if result.changed else "facility_unchanged"
    console.print(
        f"{t(key)}: {result.site} {t('revision')} {result.revision} — "
        f"{result.rooms} rooms, {result.monitors} monitors, {result.limits} limits"
    )
    for item in result.deactivated:
        console.print(f"  deactivated {item}")
    for item in result.evaluation_changes:
        console.print(f"  {t('approved_change')}: {item}")


@room_app.command("state")
def room_state(
    room: str,
    state: str,
    at: Annotated[str | None, typer.Option(help="ISO 8601 with offset; default now")] = None,
    reason: Annotated[str | None, typer.Option(help="why; required when recorded late")] = None,
    site: Annotated[str | None, typer.Option()] = None,
    db: DbOpt = None,
    as_: AsOpt = "",
    approve_as: Annotated[
        str | None,
        typer.Option(
            "--approve-as",
            help="QA user approving a backdated change or one that re-judges excursions (e-signature)",
        ),
    ] = None,
    password_stdin: PwStdin = False,
) -> None:
    """Record a room's operational state from a moment on: in_operation or at_rest.

    Readings already stored after that moment are judged again (re-evaluation). A change
    recorded late needs --reason; one past the backdating limit, or one that would supersede
    or reshape an excursion, needs QA's approval (--approve-as).
    """
    from tracker.monitoring.state_changes import change_room_state

    settings = get_settings()
    effective = parse_instant(at) if at else utcnow()
    by = login_cli(
        db,
        as_,
        password_stdin,
        "operator",
        "production_head",
        "qa",
        action=Reason("recording a room state", "记录房间状态"),
    )
    approver = (
        login_cli(
            db,
            approve_as,
            password_stdin,
            "qa",
            action=Reason("approving a room-state change", "批准房间状态变更"),
            signing=True,
        )
        if approve_as
        else None
    )
    with unit_of_work(engine_for(db)) as session:
        changed = change_room_state(
            session,
            by=by,
            room_code=room,
            state=state,
            effective_at=effective,
            reason=reason,
            approver=approver,
            site_code=site,
        )
    result = changed.reevaluation
    console.print(
        f"{t('room_state_set')}: {room} → {t(state)} @ {local_display(effective, settings.timezone)}"
    )
    if result.readings_changed:
        console.print(
            f"  {t('reevaluated')}: {result.readings_changed} / "
            f"{result.readings_checked} {t('readings')}, {result.series_rebuilt} series"
        )
    if changed.affected:
        console.print(f"  {t('excursions_rejudged')}: {', '.join(str(i) for i in changed.affected)}")
    _watch_released(db)


def _watch_released(db: str | None) -> None:
    """After a re-judgement: raise the post-release events of released batches it reached."""
    from tracker.quality.batches.models import Batch
    from tracker.quality.batches.postrelease import watch

    with unit_of_work(engine_for(db)) as session:
        raised = [(session.get(Batch, e.batch_id).number, e.id, e.kinds) for e in watch(session)]
    for number, event_id, kinds in raised:
        console.print(f"  {t('batch')} {number}: {t('post_release_event')} {event_id} ({kinds})")


@app.command()
def reevaluate(
    room: Annotated[str, typer.Option(help="room code (its zones are included)")],
    start: Annotated[str, typer.Option("--from", help="ISO 8601 with offset")],
    end: Annotated[str | None, typer.Option("--to", help="ISO 8601; default open")] = None,
    reason: Annotated[str | None, typer.Option()] = None,
    site: Annotated[str | None, typer.Option()] = None,
    db: DbOpt = None,
    as_: AsOpt = "",
    password_stdin: PwStdin = False,
) -> None:
    """Judge a room's stored readings again (after a retroactive state or limit change)."""
    from tracker.monitoring.reevaluate import reevaluate as run_reevaluation

    by = login_cli(db, as_, password_stdin, "qa", action=Reason("re-evaluation", "重新评价")).username
    with unit_of_work(engine_for(db)) as session:
        result = run_reevaluation(
            session,
            room_code=room,
            start=parse_instant(start),
            end=parse_instant(end) if end else None,
            actor=by,
            reason=reason,
            site_code=site,
        )
    console.print(
        f"{t('reevaluated')}: {result.readings_changed} / {result.readings_checked} "
        f"{t('readings')}, {result.series_rebuilt} series"
    )
    _watch_released(db)


@app.command()
def ingest(
    db: DbOpt = None,
    mqtt: MqttOpt = None,
    subscription: Annotated[
        list[str] | None,
        typer.Option(
            help="topic filter, plain or $share/GROUP/filter; repeat it for several "
            "(TRACKER_MQTT_SUBSCRIPTION, separated by spaces)"
        ),
    ] = None,
    client_id: Annotated[str | None, typer.Option("--client-id")] = None,
    shared: Annotated[
        str | None,
        typer.Option(
            "--shared",
            help="share group: several workers split the stream "
            "(TRACKER_MQTT_SHARE_GROUP, docs/scale-out.md)",
        ),
    ] = None,
    worker: Annotated[
        str | None, typer.Option(help="this worker's fixed name in the group (TRACKER_INGEST_WORKER)")
    ] = None,
) -> None:
    """Ingest readings from the broker until SIGTERM/SIGINT (finishes its batch first)."""
    from tracker.ingest.client import Ingester, IngestOptions, SharedSubscriptionError
    from tracker.wire.mqtt import parse_broker_url

    settings = get_settings()
    try:
        options = IngestOptions.from_settings(
            settings,
            subscription=" ".join(subscription or ()),
            client_id=client_id,
            share_group=shared,
            worker=worker,
        )
    except SharedSubscriptionError as exc:
        raise typer.BadParameter(t(exc.key)) from None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    ingester = Ingester(engine_for(db), parse_broker_url(mqtt or settings.mqtt_url), options)
    stats = ingester.run(stop)
    console.print(
        f"stored {stats.stored}, duplicates {stats.duplicates}, "
        f"quarantined {stats.quarantined} in {stats.batches} batches"
    )


@app.command()
def sparkplug(
    db: DbOpt = None,
    mqtt: MqttOpt = None,
    host_id: Annotated[
        str, typer.Option("--host-id", help="Sparkplug host application id (its STATE topic)")
    ] = "gmp-tracker",
    client_id: Annotated[str, typer.Option("--client-id")] = "gmp-tracker-sparkplug",
) -> None:
    """Sparkplug B host: readings from the plant-floor gateways of the facility file's sparkplug tables (docs/devices.md)."""
    from tracker.ingest.client import IngestOptions
    from tracker.ingest.sparkplug import SparkplugHost
    from tracker.wire.mqtt import parse_broker_url

    settings = get_settings()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    options = IngestOptions.from_settings(settings, client_id=client_id)
    host = SparkplugHost(
        engine_for(db), parse_broker_url(mqtt or settings.mqtt_url), options, host_id=host_id
    )
    stats = host.run(stop)
    console.print(
        t("sparkplug_summary").format(
            stored=stats.stored,
            duplicates=stats.duplicates,
            quarantined=stats.quarantined,
            commands=host.commands_sent,
        )
    )


@app.command()
def poll(db: DbOpt = None) -> None:
    """Poll the Modbus TCP particle counters of the facility file's modbus tables, each at its poll_s (docs/devices.md)."""
    from tracker.ingest.modbus import ModbusPoller

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    poller = ModbusPoller(engine_for(db))
    with unit_of_work(poller.engine) as session:
        poller.refresh(session)
    if not poller.counters:
        console.print(t("poll_no_counters"))
    stats = poller.run(stop)
    console.print(
        t("poll_summary").format(
            polls=stats.polls,
            stored=stats.stored,
            duplicates=stats.duplicates,
            quarantined=stats.quarantined,
            backfilled=stats.backfilled,
            unreachable=stats.unreachable,
        )
    )


@app.command()
def simulate(
    facility: Annotated[Path, typer.Option(help="facility TOML")],
    scenario: Annotated[Path | None, typer.Option(help="scenario TOML")] = None,
    speed: Annotated[float, typer.Option(help="× real time; 0 = as fast as possible")] = 60.0,
    seed: Annotated[int, typer.Option()] = 1,
    duration: Annotated[str | None, typer.Option(help="e.g. 2h, 1h30m")] = None,
    start: Annotated[str | None, typer.Option(help="simulated start, ISO 8601")] = None,
    mqtt: MqttOpt = None,
    challenge: Annotated[
        str | None, typer.Option(help="inject the alarm-challenge signal: MONITOR@AT+FOR, e.g. B01-DP1@5m+2m")
    ] = None,
) -> None:
    """Publish a simulated facility's readings over MQTT (stand-in for hardware)."""
    from simulators.publisher import run_simulation
    from tracker.wire.mqtt import parse_broker_url

    settings = get_settings()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    result = run_simulation(
        facility_path=facility,
        scenario_path=scenario,
        broker=parse_broker_url(mqtt or settings.mqtt_url),
        speed=speed,
        seed=seed,
        duration=parse_duration(duration) if duration else None,
        start=parse_instant(start) if start else None,
        stop=stop,
        protocol=settings.mqtt_protocol,
        challenge=_challenge_option(challenge) if challenge else None,
    )
    console.print(result.summary())


def _challenge_option(text: str) -> tuple[str, timedelta, timedelta]:
    """``MONITOR@AT+FOR`` → (monitor, at, duration), e.g. ``B01-DP1@5m+2m``."""
    monitor, _, rest = text.partition("@")
    at, _, length = rest.partition("+")
    if not monitor or not at or not length:
        raise typer.BadParameter("write --challenge MONITOR@AT+FOR, e.g. B01-DP1@5m+2m")
    return monitor, parse_duration(at), parse_duration(length)


@app.command()
def excursions(
    json_out: JsonOpt = False,
    open_only: Annotated[bool, typer.Option("--open")] = False,
    room: Annotated[str | None, typer.Option()] = None,
    type_: Annotated[str | None, typer.Option("--type", help="limit, data_gap, …")] = None,
    unacknowledged: Annotated[
        bool, typer.Option("--unacknowledged", help="only those QA has not acknowledged")
    ] = False,
    superseded: Annotated[
        bool, typer.Option("--superseded", help="also those superseded by re-evaluation, with who and why")
    ] = False,
    db: DbOpt = None,
) -> None:
    """List excursions (超标/偏离)."""
    from tracker.monitoring.excursions import list_excursions

    with unit_of_work(engine_for(db)) as session:
        rows = list_excursions(
            session,
            open_only=open_only,
            room=room,
            type_=type_,
            unacknowledged=unacknowledged,
            include_superseded=superseded,
        )
    if json_out:
        print_json(rows)
        return
    tz = get_settings().timezone
    table = Table(title=t("excursions"))
    for key in (
        "id",
        "type",
        "room",
        "monitor",
        "channel",
        "level",
        "state",
        "started",
        "ended",
        "peak",
        "limit",
        "readings",
    ):
        table.add_column(t(key))
    for r in rows:
        table.add_row(
            str(r["id"]),
            t(f"type_{r['type']}"),
            r["room"],
            r["monitor"],
            r["channel"] or "",
            t(r["level"]),
            t(r["state"]),
            local_display(parse_instant(r["started_at"]), tz),
            local_display(parse_instant(r["ended_at"]), tz) if r["ended_at"] else t("open"),
            f"{r['peak']:g}",
            "" if r["limit"] is None else f"{r['limit']:g}",
            str(r["readings"]),
        )
    console.print(table)
    for r in rows:
        if r["status"] == "superseded":
            by = r["superseded_by"] or "system"
            signed = (
                f" ({t('signature')} {r['superseded_signature_id']})" if r["superseded_signature_id"] else ""
            )
            console.print(f"  #{r['id']} {t('superseded')}: {by}{signed} — {r['superseded_reason'] or ''}")


@app.command()
def acknowledge(
    excursion_id: int,
    comment: Annotated[str, typer.Option(help="what QA saw and decided")],
    as_: AsOpt = "",
    password_stdin: PwStdin = False,
    db: DbOpt = None,
) -> None:
    """QA acknowledges an excursion with a comment (or raises a deviation: tracker deviation open)."""
    from tracker.monitoring.excursions import acknowledge as ack

    actor = login_cli(db, as_, password_stdin, "qa", action=Reason("acknowledging an excursion", "确认超标"))
    with unit_of_work(engine_for(db)) as session:
        ex = ack(session, actor=actor, excursion_id=excursion_id, comment=comment)
    console.print(f"excursion {excursion_id}: {t(ex.level)} — acknowledged by {actor.username}")


@app.command()
def quarantine(
    json_out: JsonOpt = False,
    reason: Annotated[str | None, typer.Option()] = None,
    limit: Annotated[int | None, typer.Option()] = None,
    db: DbOpt = None,
) -> None:
    """List quarantined messages with their reasons."""
    from tracker.core.timeutil import iso_utc
    from tracker.monitoring.quarantine import list_quarantine

    with unit_of_work(engine_for(db)) as session:
        rows = list_quarantine(session, limit=limit, reason=reason)
    docs = [
        {
            "id": q.id,
            "received_at": iso_utc(q.received_at),
            "topic": q.topic,
            "reason": q.reason,
            "detail": q.detail,
            "payload": q.payload.decode("utf-8", errors="replace"),
        }
        for q in rows
    ]
    if json_out:
        print_json(docs)
        return
    table = Table(title=t("quarantine"))
    for key in ("received", "reason", "topic", "detail"):
        table.add_column(t(key))
    tz = get_settings().timezone
    for q in rows:
        table.add_row(local_display(q.received_at, tz), t(q.reason), q.topic, q.detail[:100])
    console.print(table)


@app.command()
def verdicts(
    monitor: str,
    start: Annotated[str | None, typer.Option("--from", help="ISO 8601 with offset")] = None,
    end: Annotated[str | None, typer.Option("--to", help="ISO 8601 with offset")] = None,
    site: Annotated[str | None, typer.Option()] = None,
    json_out: JsonOpt = False,
    db: DbOpt = None,
) -> None:
    """Previous verdicts of a monitor's re-judged readings: what was shown before, and why it changed."""
    from sqlmodel import select

    from tracker.core.timeutil import iso_utc
    from tracker.facility.models import Monitor, get_site
    from tracker.monitoring.readings import verdict_history

    with unit_of_work(engine_for(db)) as session:
        site_row = get_site(session, site)
        row = session.exec(
            select(Monitor).where(Monitor.site_id == site_row.id, Monitor.code == monitor)
        ).first()
        if row is None:
            raise NotFoundError(Reason(f"no monitor {monitor!r}", f"没有监测点 {monitor!r}"))
        history = verdict_history(
            session,
            row.id,
            start=parse_instant(start) if start else None,
            end=parse_instant(end) if end else None,
        )
    docs = [
        {
            "seq": h.seq,
            "channel": h.channel or None,
            "event_time": iso_utc(h.event_time),
            "level": h.level,
            "state": h.state,
            "invalid_reason": h.invalid_reason,
            "replaced_at": iso_utc(h.replaced_at),
            "cause": h.cause,
        }
        for h in history
    ]
    if json_out:
        print_json(docs)
        return
    tz = get_settings().timezone
    table = Table(title=t("previous_verdicts"))
    for key in ("seq", "channel", "time", "level", "state", "replaced", "cause"):
        table.add_column(t(key))
    for d in docs:
        table.add_row(
            str(d["seq"]),
            d["channel"] or "",
            local_display(parse_instant(d["event_time"]), tz),
            t(d["level"]),
            t(d["state"]),
            local_display(parse_instant(d["replaced_at"]), tz),
            d["cause"],
        )
    console.print(table)


@app.command()
def stats(json_out: JsonOpt = False, db: DbOpt = None) -> None:
    """Counts of readings, duplicates, quarantine and excursions."""
    from tracker.monitoring.stats import ingest_stats

    with unit_of_work(engine_for(db)) as session:
        doc = ingest_stats(session)
    if json_out:
        print_json(doc)
        return
    table = Table(title=t("stats"))
    table.add_column("")
    table.add_column(t("count"), justify="right")
    table.add_row(t("stored_readings"), str(doc["readings"]))
    table.add_row(t("duplicates"), str(doc["duplicates"]))
    table.add_row(t("quarantined"), str(doc["quarantined"]))
    for reason, n in sorted(doc["quarantine_by_reason"].items()):
        table.add_row(f"  {t(reason)} ({reason})", str(n))
    for level, n in doc["excursions"].items():
        table.add_row(f"{t('excursions')}: {t(level)}", str(n))
    console.print(table)


@app.command()
def monitors(
    json_out: JsonOpt = False, site: Annotated[str | None, typer.Option()] = None, db: DbOpt = None
) -> None:
    """List monitoring points with calibration status (due within 30 days / overdue)."""
    from zoneinfo import ZoneInfo

    from tracker.facility.models import list_monitors

    settings = get_settings()
    today = utcnow().astimezone(ZoneInfo(settings.timezone)).date()
    with unit_of_work(engine_for(db)) as session:
        rows = list_monitors(session, today=today, site_code=site)
    if json_out:
        print_json(rows)
        return
    table = Table(title=t("monitor"))
    for key in ("monitor", "room", "grade", "kind", "calibration"):
        table.add_column(t(key))
    style = {"overdue": "bold red", "due_soon": "yellow"}
    for r in rows:
        due = r["calibration_due"] or ""
        table.add_row(
            r["monitor"],
            r["room"],
            r["grade"],
            t(r["kind"]),
            f"[{style.get(r['calibration'], '')}]{t(r['calibration'])} {due}[/]"
            if r["calibration"] in style
            else f"{t(r['calibration'])} {due}",
        )
    console.print(table)


@inhibit_app.command("add")
def inhibit_add(
    start: Annotated[str, typer.Option("--from", help="ISO 8601 with offset")],
    end: Annotated[str, typer.Option("--to", help="ISO 8601 with offset")],
    reason: Annotated[str, typer.Option(help="why (work order, SOP)")],
    monitor: Annotated[str | None, typer.Option()] = None,
    room: Annotated[str | None, typer.Option(help="the room and its zones")] = None,
    site: Annotated[str | None, typer.Option()] = None,
    db: DbOpt = None,
    as_: AsOpt = "",
    password_stdin: PwStdin = False,
) -> None:
    """Flag, not alarm, a monitor's or room's readings in a window; it ends by itself."""
    from tracker.facility.inhibits import add_inhibit
    from tracker.facility.models import Monitor, Room
    from tracker.monitoring.reevaluate import reevaluate as run_reevaluation

    by = login_cli(db, as_, password_stdin, "qa", action=Reason("adding an inhibit", "添加监测屏蔽")).username
    with unit_of_work(engine_for(db)) as session:
        row = add_inhibit(
            session,
            starts_at=parse_instant(start),
            ends_at=parse_instant(end),
            reason=reason,
            actor=by,
            monitor_code=monitor,
            room_code=room,
            site_code=site,
        )
        room_id = row.room_id or session.get(Monitor, row.monitor_id).room_id
        result = run_reevaluation(
            session,
            room_code=session.get(Room, room_id).code,
            start=row.starts_at,
            end=row.ends_at,
            actor=by,
            site_code=site,
            reason=f"inhibit {row.id}",
        )
    console.print(
        f"inhibit {row.id}: {monitor or room} "
        f"{local_display(row.starts_at, get_settings().timezone)} → "
        f"{local_display(row.ends_at, get_settings().timezone)}"
        + (
            f" ({t('reevaluated')}: {result.readings_changed} {t('readings')})"
            if result.readings_changed
            else ""
        )
    )


@inhibit_app.command("list")
def inhibit_list(
    json_out: JsonOpt = False,
    all_: Annotated[bool, typer.Option("--all", help="not only those in force")] = False,
    db: DbOpt = None,
) -> None:
    """Inhibits in force now (or all of them)."""
    from tracker.facility.inhibits import list_inhibits

    with unit_of_work(engine_for(db)) as session:
        rows = list_inhibits(session, active_at=None if all_ else utcnow())
    if json_out:
        print_json(rows)
        return
    table = Table(title="inhibits")
    for key in ("id", "monitor", "room", "starts_at", "ends_at", "cancelled_at", "reason", "created_by"):
        table.add_column(key)
    for r in rows:
        table.add_row(
            *(
                str(r[k] or "")
                for k in (
                    "id",
                    "monitor",
                    "room",
                    "starts_at",
                    "ends_at",
                    "cancelled_at",
                    "reason",
                    "created_by",
                )
            )
        )
    console.print(table)


@inhibit_app.command("cancel")
def inhibit_cancel(
    inhibit_id: int,
    reason: Annotated[str, typer.Option()],
    db: DbOpt = None,
    as_: AsOpt = "",
    password_stdin: PwStdin = False,
) -> None:
    """End an inhibit early (recorded with who, when and why)."""
    from tracker.facility.inhibits import cancel_inhibit

    by = login_cli(
        db, as_, password_stdin, "qa", action=Reason("cancelling an inhibit", "取消监测屏蔽")
    ).username
    with unit_of_work(engine_for(db)) as session:
        cancel_inhibit(session, inhibit_id, actor=by, reason=reason)
    console.print(f"inhibit {inhibit_id} ended")


def _kinds(session) -> dict[int, str]:
    from sqlmodel import select

    from tracker.facility.models import Monitor

    return dict(session.exec(select(Monitor.id, Monitor.kind)).all())


@rollups_app.command("verify")
def rollups_verify(
    start: Annotated[str, typer.Option("--from", help="ISO 8601 with offset")],
    end: Annotated[str, typer.Option("--to", help="ISO 8601 with offset")],
    db: DbOpt = None,
) -> None:
    """Recompute the window's hourly rollups from raw readings; exit 1 on any difference."""
    from tracker.monitoring.rollups import verify_rollups

    with unit_of_work(engine_for(db)) as session:
        diffs = verify_rollups(session, _kinds(session), parse_instant(start), parse_instant(end))
    if not diffs:
        console.print("rollups match the raw readings")
        return
    for (monitor_id, channel, hour), stored, expected in diffs[:50]:
        console.print(
            f"monitor {monitor_id} {channel or '-'} {hour.isoformat()}: stored {stored} ≠ raw {expected}"
        )
    console.print(f"[red]{len(diffs)} hour(s) differ[/red]")
    raise typer.Exit(1)


@rollups_app.command("rebuild")
def rollups_rebuild(
    start: Annotated[str, typer.Option("--from", help="ISO 8601 with offset")],
    end: Annotated[str, typer.Option("--to", help="ISO 8601 with offset")],
    db: DbOpt = None,
    as_: AsOpt = "",
    password_stdin: PwStdin = False,
) -> None:
    """Replace the window's hourly rollups with a recomputation from raw readings (audited)."""
    from tracker.monitoring.rollups import rebuild_rollups

    by = login_cli(
        db, as_, password_stdin, "admin", "qa", action=Reason("rebuilding rollups", "重建小时汇总")
    ).username
    with unit_of_work(engine_for(db)) as session:
        kinds = _kinds(session)
        n = rebuild_rollups(session, kinds, list(kinds), parse_instant(start), parse_instant(end))
        audit.record(
            session,
            actor=by,
            action="rollups.rebuild",
            entity="rollup_hourly",
            entity_key=f"{start}..{end}",
            after={"hours": n},
        )
    console.print(f"rebuilt {n} hour(s)")


def _anchor_dir(directory: Path | None) -> Path:
    settings = get_settings()
    return directory or settings.audit_anchor_dir or settings.data_dir / "anchors"


AnchorDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--anchors", help="anchor directory (default TRACKER_AUDIT_ANCHOR_DIR or <data dir>/anchors)"
    ),
]


@audit_app.command("anchor")
def audit_anchor(
    directory: AnchorDirOpt = None,
    db: DbOpt = None,
    as_: AsOpt = "",
    password_stdin: PwStdin = False,
) -> None:
    """Write a signed checkpoint of the audit chain (head, count, time) outside the database.

    Keep the directory where the database owner cannot rewrite it (another host, write-once
    storage); `tracker audit verify` checks the database against every anchor in it."""
    from tracker.core.anchors import take_anchor

    actor = (
        login_cli(
            db, as_, password_stdin, "qa", "admin", action=Reason("anchoring the audit trail", "锚定审计追踪")
        ).username
        if as_
        else "system:anchor"
    )
    with unit_of_work(engine_for(db)) as session:
        anchor = take_anchor(session, actor=actor)
    path = anchor.write(_anchor_dir(directory))
    console.print(f"{t('anchor_written')}: {path} ({anchor.count} events, head {anchor.head_hash[:16]}…)")


@audit_app.command("verify")
def audit_verify(directory: AnchorDirOpt = None, db: DbOpt = None) -> None:
    """Check the keyed hash chain (naming the first broken event), the database against every
    anchor, every e-signature against its record, signatures against the audit trail, batch
    statuses against signatures, and acknowledgements, link decisions, assessments and roles
    against the audit events that recorded them."""
    from tracker.core.anchors import check_anchors
    from tracker.quality.batches.integrity import all_signature_checks, environment_notes, integrity_problems
    from tracker.quality.batches.reconcile import reconciliation_problems

    with unit_of_work(engine_for(db)) as session:
        chain = audit.check_chain(session)
        anchors = check_anchors(session, _anchor_dir(directory))
        checks = all_signature_checks(session)
        problems = integrity_problems(session) + reconciliation_problems(session)
        notes = environment_notes(session)
    bad = [c for c in checks if c.broken]
    changed = [c for c in checks if c.outdated]
    if chain.intact:
        keyed = f" ({chain.unkeyed} sealed before the key)" if chain.unkeyed else ""
        console.print(f"audit chain intact: {chain.count} events{keyed}")
    else:
        console.print(
            f"[red]audit chain BROKEN at event {chain.broken}[/red]: {chain.problem} "
            f"({chain.count} events verified before it)"
        )
    for check in anchors:
        if check.ok:
            console.print(f"anchor {check.source}: holds ({check.anchor.count} events)")
        else:
            console.print(f"[red]anchor {check.source} BROKEN[/red]: {check.problem}")
    if not anchors:
        console.print(f"[yellow]no anchors in {_anchor_dir(directory)}: run `tracker audit anchor`[/yellow]")
    for c in bad:
        sig = c.signature
        console.print(
            f"[red]signature {sig.id} BROKEN[/red] ({sig.entity} {sig.entity_key}, "
            f"{sig.meaning} by {sig.username}): {c.problem}"
        )
    for problem in problems:
        console.print(f"[red]{problem}[/red]")
    for note in notes:
        console.print(f"[yellow]{note}[/yellow]")
    console.print(
        f"signatures: {len(checks) - len(bad) - len(changed)} intact, {len(bad)} broken"
        + (f", {len(changed)} no longer matching a changed environmental picture" if changed else "")
    )
    if not chain.intact or bad or problems or not all(c.ok for c in anchors):
        raise typer.Exit(1)


@audit_app.command("digest")
def audit_digest(db: DbOpt = None) -> None:
    """Print the head hash of the audit chain, for publishing outside the database."""
    with unit_of_work(engine_for(db)) as session:
        console.print(audit.head_hash(session))


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="default TRACKER_WEB_HOST (127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(help="default TRACKER_WEB_PORT (8000)")] = None,
    trusted_proxies: Annotated[
        str | None,
        typer.Option(
            help="reverse proxies (addresses or networks, comma-separated) whose X-Forwarded-* headers "
            "are believed; default TRACKER_WEB_TRUSTED_PROXIES, none"
        ),
    ] = None,
    db: DbOpt = None,
) -> None:
    """The web app: pages for QA, production and the QP, and the JSON API under /api/v1 (docs/web.md)."""
    from tracker.web.config import WebSettings
    from tracker.web.serve import serve as run_server

    web = WebSettings()
    run_server(engine_for(db), host=host or web.host, port=port or web.port, trusted_proxies=trusted_proxies)


@app.command()
def demo(
    speed: Annotated[float, typer.Option(help="simulated seconds per real second")] = 120.0,
    seed: Annotated[int, typer.Option()] = 1,
    data_dir: Annotated[Path | None, typer.Option(help="default TRACKER_DATA_DIR/.tracker")] = None,
    duration: Annotated[str | None, typer.Option(help="stop after this long (wall clock)")] = None,
    web_port: Annotated[
        int | None,
        typer.Option(
            help="port of the demo's web app on 127.0.0.1; default TRACKER_WEB_PORT (8000); 0: none"
        ),
    ] = None,
) -> None:
    """Everything on one machine: broker, database, sample facility, simulator, ingester, live view,
    and the web app with one demo login per role (passwords generated at start and printed)."""
    from tracker.cli.demo import run_demo

    run_demo(
        data_dir=data_dir or get_settings().data_dir,
        speed=speed,
        seed=seed,
        wall_limit=parse_duration(duration) if duration else None,
        web_port=demo_web_port(web_port),
    )


def demo_web_port(option: int | None) -> int | None:
    """The demo's web port: the option, else ``TRACKER_WEB_PORT`` (issue 17: the variable was ignored); 0: none."""
    from tracker.web.config import WebSettings

    port = option if option is not None else WebSettings().port
    return port or None


def main() -> None:
    try:
        app()
    except ConflictError as exc:  # say every reason on its own line
        err = Console(stderr=True)
        err.print(f"[red]error:[/red] {exc.said(current_lang())}")
        if exc.reasons != [exc.message]:
            for reason in exc.reasons:
                err.print(f"  • {in_language(reason, current_lang())}")
        sys.exit(2)
    except TrackerError as exc:
        Console(stderr=True).print(f"[red]error:[/red] {exc.said(current_lang())}")
        sys.exit(2)


if __name__ == "__main__":
    main()
