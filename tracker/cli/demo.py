"""``tracker demo``: the whole pipeline on one machine, with a live terminal view.

Embedded defaults, no manual setup: a fresh SQLite file, a broker it starts itself
(Debian's mosquitto when installed, otherwise the embedded amqtt), the sample facility,
the simulator playing the day-in-the-life scenario at speed, and the ingester.
"""

from __future__ import annotations

import signal
import socket
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text
from sqlmodel import select

from simulators.device_sims import run_counter, run_edge_node
from simulators.facility import load_facility as load_sim_facility
from simulators.modbus_counter import SimulatedCounter
from simulators.publisher import run_simulation
from simulators.scenario import load_scenario
from simulators.viable import viable_results
from tracker.core.db import get_engine, unit_of_work
from tracker.core.i18n import current_lang, t
from tracker.core.migrate import upgrade
from tracker.core.settings import get_settings
from tracker.core.timeutil import local_display
from tracker.facility.file import parse_facility
from tracker.facility.load import load_facility
from tracker.facility.models import Room, get_site
from tracker.facility.roomstate import set_room_state
from tracker.identity.users import Authenticated
from tracker.ingest.client import Ingester, IngestOptions
from tracker.ingest.modbus import ModbusPoller
from tracker.ingest.sparkplug import SparkplugHost
from tracker.monitoring.dashboard import FloorView, floor_view
from tracker.monitoring.excursions import list_excursions
from tracker.monitoring.stats import ingest_stats
from tracker.monitoring.viable import lifecycle as life
from tracker.notify.dispatcher import Dispatcher
from tracker.wire.broker import LocalBroker
from tracker.wire.mqtt import parse_broker_url
from tracker.wire.registermap import load_register_map

SIM_DATA = Path(__file__).resolve().parents[2] / "simulators" / "data"
FACILITY = SIM_DATA / "nn-cpc.toml"
SCENARIO = SIM_DATA / "day-in-the-life.toml"
STYLE = {"ok": "green", "alert": "yellow", "action": "bold red", "not_evaluated": "dim", "no_data": "dim"}
UNIT = {"particles": "/m³", "pressure": "Pa", "temperature": "°C", "humidity": "%RH"}


#: one monitor through each device path (docs/devices.md): added to the sample facility for the
#: demo only; the JSON simulator does not know them, so each has exactly one source
DEVICE_MONITORS = """
[[monitors]]
code = "B01-SPB"
room = "B01"
kind = "particles"
interval_s = 60

[[monitors]]
code = "B01-MB"
room = "B01"
kind = "particles"
interval_s = 60

[[sparkplug]]
monitor = "B01-SPB"
group = "Demo"
edge_node = "GW1"
device = "PC1"
metrics = { "0.5" = "Counts/0.5um", "5.0" = "Counts/5.0um" }
volume_metric = "Sample/Volume_L"
status_metric = "Status"

[[modbus]]
monitor = "B01-MB"
host = "127.0.0.1"
port = {port}
model = "lighthouse-remote"
channels = { "0.5" = 2, "5.0" = 4 }
poll_s = 2
"""


#: the demo's viable sampling plan (docs/viable.md): the BSC sampled every session, the B room daily
VIABLE_PLAN = """
[viable]
media = "TSA"
incubation = [{ temperature = "20-25 °C", hours = 72 }, { temperature = "30-35 °C", hours = 48 }]

[[viable_locations]]
code = "V-BSC1"
room = "C02-BSC1"
methods = ["air", "settle", "contact", "glove_l", "glove_r"]
frequency = "daily"
air_volume_l = 1000
exposure_min = 240

[[viable_locations]]
code = "V-B01"
room = "B01"
methods = ["air", "settle", "contact"]
frequency = "daily"
air_volume_l = 1000
exposure_min = 240
"""


def demo_facility_text(modbus_port: int) -> str:
    """The sample facility plus the two device-path monitors and a viable sampling plan."""
    return (
        FACILITY.read_text(encoding="utf-8")
        + DEVICE_MONITORS.replace("{port}", str(modbus_port))
        + VIABLE_PLAN
    )


def viable_cycle(engine, start: datetime, *, seed: int = 1) -> int:
    """The day's viable samples through their whole cycle, with the simulator's plate results
    (one colony on a grade A settle plate: an action ``viable`` excursion for QA to see).
    The demo's own lab staff record the steps (two persons, so counts are verified by another)."""

    def staff(name: str, person: str) -> Authenticated:
        return Authenticated(
            user_id=0,
            username=name,
            full_name=name,
            roles=frozenset({"operator"}),
            at=start,
            person=person,
            enrolled=True,
        )

    reader, checker = staff("demo-lab1", "DEMO-1"), staff("demo-lab2", "DEMO-2")
    with unit_of_work(engine) as session:
        site = get_site(session)
        samples = life.plan_calendar(
            session, site=site, frequency="daily", day=start, actor="demo", now=start
        )
        results = viable_results(
            [{"code": s.code, "grade": s.grade, "method": s.method, "location": s.location} for s in samples],
            scenario="day-in-the-life",
            seed=seed,
        )
        for sample, result in zip(samples, results, strict=True):
            life.take(
                session, actor=reader, sample=sample, media_lot="TSA-DEMO-01", taken_at=start, now=start
            )
            life.incubate(session, actor=reader, sample=sample, incubator="INC-1", start=start, now=start)
            read_at = start + timedelta(hours=120)
            life.read(session, actor=reader, sample=sample, count=result.count, now=read_at)
            if sample.needs_verification:
                life.verify(session, actor=checker, sample=sample, count=result.count, now=read_at)
            if sample.needs_identification:
                life.identify(
                    session,
                    actor=checker,
                    sample=sample,
                    organism=result.organism,
                    method="MALDI-TOF",
                    now=read_at,
                )
            life.close(session, actor=checker, sample=sample, now=read_at)
    return len(samples)


def start_device_paths(
    engine,
    broker_url: str,
    protocol: int,
    start: datetime,
    speed: float,
    stop: threading.Event,
    *,
    modbus_port: int,
):
    """The simulated counter and edge node, and the poller and host that take them in."""
    counter = SimulatedCounter(load_register_map("lighthouse-remote"), port=modbus_port).start()
    broker = parse_broker_url(broker_url)
    settings = get_settings().model_copy(update={"mqtt_protocol": protocol})
    host = SparkplugHost(
        engine,
        broker,
        IngestOptions.from_settings(settings, client_id="demo-sparkplug"),
        host_id="gmp-tracker-demo",
    )
    poller = ModbusPoller(engine)
    threads = [
        threading.Thread(target=host.run, args=(stop,), daemon=True),
        threading.Thread(target=poller.run, args=(stop,), daemon=True),
    ]
    for thread in threads:
        thread.start()
    host.subscribed.wait(10)
    sims = [
        threading.Thread(
            target=run_edge_node,
            kwargs={
                "broker": broker,
                "group": "Demo",
                "edge_node": "GW1",
                "device": "PC1",
                "start": start,
                "speed": speed,
                "interval_s": 60.0,
                "stop": stop,
                "protocol": protocol,
            },
            daemon=True,
        ),
        threading.Thread(
            target=run_counter,
            args=(counter,),
            kwargs={"start": start, "speed": speed, "interval_s": 60.0, "stop": stop},
            daemon=True,
        ),
    ]
    for thread in sims:
        thread.start()
    return counter, threads + sims


def schedule_operations(engine, start: datetime) -> int:
    """Put the scenario's processing sessions on the rooms' state timelines (audited)."""
    sim_facility = load_sim_facility(FACILITY)
    scenario = load_scenario(SCENARIO, sim_facility)
    n = 0
    with unit_of_work(engine) as session:
        rooms = {r.code: r for r in session.exec(select(Room)).all()}
        for op in scenario.operations:
            # as the simulator does: a room's operation covers its zones, a zone's its background
            op_room = rooms[op.room]
            affected = {op.room} | {
                code
                for code, r in rooms.items()
                if r.background_id == op_room.id or r.id == op_room.background_id
            }
            for code in sorted(affected):
                for state, offset in (("in_operation", op.start), ("at_rest", op.end)):
                    set_room_state(
                        session,
                        room_code=code,
                        state=state,
                        effective_at=start + offset,
                        actor="demo",
                        reason=f"scenario {scenario.name}",
                        source="demo-scenario",
                    )
                    n += 1
    return n


def _compact(kind: str, channel: str, value: float) -> str:
    """Short form for a tile: ``≥0.5µm 60k`` · ``ΔP 14.8Pa`` · ``22.3°C`` · ``49%RH``."""
    if kind == "particles":
        scaled = (
            f"{value / 1e6:.2f}M"
            if value >= 1e6
            else f"{value / 1e3:.1f}k"
            if value >= 1e4
            else f"{value:.0f}"
        )
        return f"≥{channel}µm {scaled}"
    if kind == "pressure":
        return f"ΔP {value:.1f}Pa"
    return f"{value:.1f}{UNIT[kind]}"


def _render(view: FloorView, stats: dict, open_ex: list[dict], lang: str, header: str) -> Group:
    tz = view.timezone
    title = Text(f"{t('demo_title', lang)} · {view.site_name} ({view.site})", style="bold")
    sub = Text(f"{t('demo_sim_time', lang)}: {local_display(view.as_of, tz)}   {header}")
    rooms = Table(expand=True, show_lines=False)
    for key in ("grade", "room", "state", "latest", "open_excursions"):
        rooms.add_column(t(key, lang))
    for tile in view.rooms:
        name = tile.name if lang == "zh-CN" else (tile.name_en or tile.name)
        latest = Text()
        for v in tile.values:
            if v.value is None:  # a monitor that has not reported yet
                latest.append(f"{v.monitor} —  ", style=STYLE["no_data"])
                continue
            latest.append(_compact(v.kind, v.channel, v.value) + "  ", style=STYLE.get(v.level, ""))
        rooms.add_row(
            tile.grade,
            Text(f"{tile.code} {name}", style=STYLE.get(tile.worst, "")),
            t(tile.state, lang),
            latest,
            str(tile.open_excursions or ""),
        )
    counts = Text(
        f"{t('stored_readings', lang)} {stats['readings']:,} · "
        f"{t('duplicates', lang)} {stats['duplicates']} · "
        f"{t('quarantined', lang)} {stats['quarantined']} "
        f"{dict(sorted(stats['quarantine_by_reason'].items()))} · "
        f"{t('excursions', lang)} {t('alert', lang)} {stats['excursions']['alert']} / "
        f"{t('action', lang)} {stats['excursions']['action']}"
    )
    ex = Table(title=t("open_excursions", lang), expand=True)
    for key in ("type", "monitor", "channel", "level", "state", "started", "peak", "limit"):
        ex.add_column(t(key, lang))
    for e in open_ex[-8:]:
        ex.add_row(
            t(f"type_{e['type']}", lang),
            e["monitor"],
            e["channel"] or "",
            Text(t(e["level"], lang), style=STYLE[e["level"]]),
            t(e["state"], lang),
            local_display(datetime.fromisoformat(e["started_at"]), tz),
            f"{e['peak']:,.1f}",
            "" if e["limit"] is None else f"{e['limit']:,.1f}",
        )
    return Group(title, sub, Panel(rooms), counts, ex, Text(t("demo_quit", lang), style="dim"))


def run_demo(
    *,
    data_dir: Path,
    speed: float = 120.0,
    seed: int = 1,
    wall_limit: timedelta | None = None,
    console: Console | None = None,
    web_port: int | None = None,
) -> str:
    """Run everything until Ctrl-C (or ``wall_limit``); returns the database URL used. With
    ``web_port`` the web app runs too, on 127.0.0.1, with one demo login per role."""
    console = console or Console()
    lang = current_lang()
    demo_dir = (data_dir / "demo").resolve()
    demo_dir.mkdir(parents=True, exist_ok=True)
    db_path = demo_dir / "demo.db"
    for stale in demo_dir.glob("demo.db*"):
        stale.unlink()  # the demo database is throwaway: a fresh one each run
    db_url = f"sqlite:///{db_path}"
    upgrade(db_url)
    engine = get_engine(db_url)
    with socket.socket() as probe:  # the simulated Modbus counter's port, named in the facility
        probe.bind(("127.0.0.1", 0))
        modbus_port = probe.getsockname()[1]
    with unit_of_work(engine) as session:
        load_facility(session, parse_facility(demo_facility_text(modbus_port)), actor="demo")

    scenario = load_scenario(SCENARIO, load_sim_facility(FACILITY))
    now = datetime.now(UTC).replace(microsecond=0)
    start = now - scenario.duration * (1 - 1 / speed) if speed > 0 else now - scenario.duration
    start = start.replace(microsecond=0)
    schedule_operations(engine, start)
    viable_cycle(engine, start - timedelta(days=6), seed=seed)

    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    web_server = None
    if web_port:
        from tracker.web.serve import create_demo_users, start_background

        logins = create_demo_users(engine)
        web_server, _ = start_background(engine, host="127.0.0.1", port=web_port)
        console.print(f"web: http://127.0.0.1:{web_port}/  (API: /docs) · demo logins, this database only:")
        for role, username, password in logins:
            console.print(f"  {role:<16} {username:<18} {password}", markup=False, highlight=False)
    with LocalBroker(data_dir=demo_dir / "broker", persistence=False) as broker:
        console.print(f"broker: {broker.kind} {broker.url} · database: {db_url}")
        settings = get_settings().model_copy(
            update={"mqtt_protocol": broker.protocol, "mqtt_client_id": "demo-ingest"}
        )
        ingester = Ingester(engine, parse_broker_url(broker.url), IngestOptions.from_settings(settings))
        ing_thread = threading.Thread(target=ingester.run, args=(stop,), daemon=True)
        ing_thread.start()
        ingester.subscribed.wait(10)
        # the dispatcher is a worker of its own: a slow channel never holds up ingest
        notify_thread = threading.Thread(target=Dispatcher(engine).run, args=(stop,), daemon=True)
        notify_thread.start()
        sim_thread = threading.Thread(
            target=run_simulation,
            daemon=True,
            kwargs={
                "facility_path": FACILITY,
                "scenario_path": SCENARIO,
                "broker": parse_broker_url(broker.url),
                "speed": speed,
                "seed": seed,
                "start": start,
                "stop": stop,
                "protocol": broker.protocol,
                "client_id": "demo-simulator",
            },
        )
        sim_thread.start()
        if speed > 0:
            counter, device_threads = start_device_paths(
                engine, broker.url, broker.protocol, start, speed, stop, modbus_port=modbus_port
            )
        deadline = time.monotonic() + wall_limit.total_seconds() if wall_limit else None
        header = f"×{speed:g} · {broker.kind}"
        with Live(console=console, refresh_per_second=2, screen=False) as live:
            while not stop.is_set():
                with unit_of_work(engine) as session:
                    view = floor_view(session, site=get_site(session))
                    live.update(
                        _render(
                            view,
                            ingest_stats(session),
                            list_excursions(session, open_only=True),
                            lang,
                            header,
                        )
                    )
                if deadline and time.monotonic() >= deadline:
                    stop.set()
                stop.wait(1.0)
        sim_thread.join(10)
        ing_thread.join(15)
        if speed > 0:
            for thread in device_threads:
                thread.join(15)
            counter.stop()
    if web_server is not None:
        web_server.should_exit = True
    console.print(f"\nTRACKER_DATABASE_URL={db_url} tracker excursions   # inspect what happened")
    return db_url
