"""System alarms, the on-call rota and the dispatcher lease (issue 16 item 4 and the rest of
items 1-2), through a real mosquitto, a real SMTP server and a real HTTP sink on 127.0.0.1."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine
from sqlmodel import select

from tests.factories import as_, scalar, topic
from tests.mqtt_helpers import publish_all, running_ingester, wait_until
from tests.notify_sinks import http_sink, smtp_server
from tests.test_alarms import drain, inversion, later, load_rules, outbox, rule, with_rules
from tracker.core.db import get_engine, unit_of_work
from tracker.core.errors import ConflictError, FacilityFileError
from tracker.core.timeutil import utcnow
from tracker.facility.file import parse_facility
from tracker.facility.models import Monitor
from tracker.facility.notify import Duty
from tracker.monitoring.alarm_records import ServiceHeartbeat, SystemAlarm
from tracker.monitoring.excursions import Excursion
from tracker.monitoring.health import acknowledge_system_alarm
from tracker.notify.dispatcher import Dispatcher
from tracker.notify.watchdog import Thresholds, Watchdog
from tracker.wire.broker import LocalBroker


def system_rule(targets: list[str], extra: str = "") -> str:
    return f'[[notify]]\nname = "system"\ntypes = ["system"]\ntargets = {json.dumps(targets)}\n{extra}\n'


def alarms(engine: Engine, kind: str | None = None) -> list[SystemAlarm]:
    with unit_of_work(engine) as s:
        query = select(SystemAlarm).order_by(SystemAlarm.id)
        if kind:
            query = query.where(SystemAlarm.kind == kind)
        return list(s.exec(query))


def watch(engine: Engine, at: float = 0.0, **thresholds) -> list[int]:
    return Watchdog(engine, clock=later(at), thresholds=Thresholds(**thresholds)).tick()


def test_a_stopped_ingester_raises_a_system_alarm_by_mail_and_http_that_stops_at_acknowledgement(
    people_engine: Engine, broker: LocalBroker
) -> None:
    with http_sink() as sink, smtp_server() as (port, mails):
        mail = f"mailto://127.0.0.1:{port}?from=tracker@example.com&to=it@example.com"
        load_rules(
            people_engine,
            system_rule([mail, sink.url("/sys")], "repeat_every_s = 600")
            + rule("A/B action", [sink.url("/hook")]),
        )
        with running_ingester(people_engine, broker, client_id="ingest-1"):
            wait_until(lambda: _beat(people_engine, "ingest-1") is not None, what="a heartbeat")
            assert watch(people_engine) == []  # running and connected: nothing to say
        (alarm_id,) = watch(people_engine, at=60)
        watch(people_engine, at=70)  # still holding: the same alarm, not a second one
        (alarm,) = alarms(people_engine)
        assert (alarm.id, alarm.kind, alarm.subject, alarm.level) == (
            alarm_id,
            "ingester_down",
            "ingest-1",
            "action",
        )
        drain(people_engine, at=60)
        assert len(sink.posts("/sys")) == 1
        assert len(mails) == 1
        assert sink.posts("/hook") == []  # an excursion rule hears nothing of the system
        post = sink.posts("/sys")[0]
        assert "系统报警 采集服务未运行" in post["title"]
        assert "ingest-1" in post["message"]
        assert f"/system-alarms?id={alarm_id}" in post["message"]
        with unit_of_work(people_engine) as s:
            acknowledge_system_alarm(
                s, actor=as_(people_engine, "qa1"), alarm_id=alarm_id, comment="restarting it"
            )
        with unit_of_work(people_engine) as s, pytest.raises(ConflictError):
            acknowledge_system_alarm(s, actor=as_(people_engine, "qa1"), alarm_id=alarm_id, comment="again")
        drain(people_engine, at=700)  # the reminder due at 660 s is cancelled
        assert len(sink.posts("/sys")) == 1
        with running_ingester(people_engine, broker, client_id="ingest-1"):
            wait_until(
                lambda: _beat(people_engine, "ingest-1").beat_at > utcnow() - timedelta(seconds=2),
                what="beat",
            )
            watch(people_engine)
    (alarm,) = alarms(people_engine)
    assert alarm.status == "closed"
    assert alarm.ended_at is not None
    assert [r.status for r in outbox(people_engine) if r.system_alarm_id] == [
        "sent",
        "sent",
        "cancelled",
        "cancelled",
    ]


def _beat(engine: Engine, name: str) -> ServiceHeartbeat | None:
    with unit_of_work(engine) as s:
        return s.get(ServiceHeartbeat, name)


def test_a_lost_broker_is_told_apart_from_a_stopped_ingester(
    people_engine: Engine, broker: LocalBroker
) -> None:
    with running_ingester(people_engine, broker, client_id="ingest-2") as ingester:
        ingester.heartbeat_s = 0.2
        broker.stop()
        try:
            wait_until(
                lambda: _beat(people_engine, "ingest-2").disconnected_since is not None, what="disconnect"
            )
            wait_until(
                lambda: (
                    _beat(people_engine, "ingest-2").beat_at
                    > _beat(people_engine, "ingest-2").disconnected_since
                ),
                what="a beat while disconnected",
            )
            watch(people_engine, at=20)
        finally:
            broker.start()
    kinds = {a.kind for a in alarms(people_engine)}
    assert kinds == {"broker_lost"}


def test_a_failing_target_raises_a_system_alarm_through_another_target(
    people_engine: Engine, broker: LocalBroker
) -> None:
    with http_sink() as sink:
        load_rules(
            people_engine, rule("A/B action", ["json://127.0.0.1:9/dead"]) + system_rule([sink.url("/sys")])
        )
        inversion(people_engine, broker)
        for at in (0, 10, 100):
            drain(people_engine, at=at, backoff_s=1)
            watch(people_engine, at=at, stale_s=1e9, drift_s=1e12)  # only the target's failures
        (alarm,) = alarms(people_engine, "notification_failing")
        assert alarm.subject == "json://127.0.0.1:9/dead"
        assert alarm.status == "open"
        drain(people_engine, at=100)
        assert "通知目标发送失败" in sink.posts("/sys")[0]["title"]


def test_a_burst_of_quarantined_messages_raises_one_alarm(people_engine: Engine, broker: LocalBroker) -> None:
    messages = [(topic("T-B1", "T-B1-DP"), b"{not json %d" % i) for i in range(25)]
    with running_ingester(people_engine, broker) as ingester:
        sent = publish_all(broker, messages)
        wait_until(lambda: ingester.stats.received >= sent, what="the burst")
    watch(people_engine, burst_count=20, stale_s=3600)
    (alarm,) = alarms(people_engine, "quarantine_burst")
    assert alarm.level == "alert"
    assert "25 messages" in alarm.detail
    watch(people_engine, at=600, burst_count=20, stale_s=3600)  # the window has passed
    assert alarms(people_engine, "quarantine_burst")[0].status == "closed"


def test_a_monitor_clock_behind_receipt_time_is_a_drift_alarm(
    people_engine: Engine, broker: LocalBroker
) -> None:
    now = utcnow().replace(microsecond=0)
    messages = [
        (
            topic("T-B1", "T-B1-DP"),
            scalar(
                monitor="T-B1-DP",
                kind="pressure",
                seq=i + 1,
                ts=now - timedelta(seconds=600 - 10 * i),
                value=15.0,
                unit="Pa",
            ),
        )
        for i in range(3)
    ]
    with running_ingester(people_engine, broker) as ingester:
        sent = publish_all(broker, messages)
        wait_until(lambda: ingester.stats.received >= sent, what="readings")
    watch(people_engine, stale_s=3600)
    (alarm,) = alarms(people_engine, "clock_drift")
    assert alarm.subject == "T-B1-DP"
    assert "behind receipt time" in alarm.detail
    assert alarm.room_id is not None


def test_calibration_due_notifies_once_at_30_7_and_0_days(people_engine: Engine) -> None:
    with unit_of_work(people_engine) as s:
        monitor = s.exec(select(Monitor).where(Monitor.code == "T-B1-DP")).one()
        monitor.calibration_due = date(2027, 3, 1)
        s.add(monitor)
    tz = ZoneInfo("Asia/Shanghai")

    def on(day: date) -> None:
        at = datetime(day.year, day.month, day.day, 9, tzinfo=tz).astimezone(UTC)
        Watchdog(people_engine, clock=lambda: at, thresholds=Thresholds(stale_s=1e9)).tick()

    on(date(2027, 1, 20))  # 40 days: nothing
    assert alarms(people_engine) == []
    on(date(2027, 1, 30))  # 30 days
    on(date(2027, 2, 1))  # still the 30-day stage: no second alarm
    on(date(2027, 2, 22))  # 7 days
    on(date(2027, 3, 1))  # due
    shown = [(a.subject, a.level, a.status) for a in alarms(people_engine, "calibration_due")]
    assert shown == [
        ("T-B1-DP@30d", "alert", "closed"),
        ("T-B1-DP@7d", "alert", "closed"),
        ("T-B1-DP@0d", "action", "open"),
    ]


ROTA = """
[[rota]]
name = "QA on call"
otherwise = ["{other}"]
[[rota.duty]]
who = "Wang Fang"
hours = "{on}"
targets = ["{day}"]
[[rota.duty]]
who = "Li Na"
hours = "{off}"
targets = ["{night}"]
"""


def _hours_around_now() -> tuple[str, str]:
    """A duty holding now (site-local) and one that does not: the rota is resolved at queueing."""
    h = datetime.now(ZoneInfo("Asia/Shanghai")).hour
    on = f"{h:02d}:00-{(h + 2) % 24:02d}:00" if h < 22 else f"{h:02d}:00-24:00"
    off = f"{(h + 3) % 24:02d}:00-{(h + 4) % 24:02d}:00"
    return on, off


def test_a_rota_target_calls_whoever_is_on_duty_when_the_alarm_is_queued(
    people_engine: Engine, broker: LocalBroker
) -> None:
    on, off = _hours_around_now()
    with http_sink() as sink:
        rota = ROTA.format(
            day=sink.url("/day"), night=sink.url("/night"), other=sink.url("/other"), on=on, off=off
        )
        load_rules(people_engine, rota + rule("A/B action", ["rota:QA on call"]))
        inversion(people_engine, broker)
        drain(people_engine)
        assert len(sink.posts("/day")) == 1
        assert sink.posts("/night") == []
        assert sink.posts("/other") == []
    assert [r.key.rsplit(":", 1)[1] for r in outbox(people_engine)] == ["0.0"]


def test_nobody_on_duty_calls_the_rota_fallback(people_engine: Engine, broker: LocalBroker) -> None:
    _on, off = _hours_around_now()
    with http_sink() as sink:
        rota = ROTA.format(
            day=sink.url("/day"), night=sink.url("/night"), other=sink.url("/other"), on=off, off=off
        )
        load_rules(people_engine, rota + rule("A/B action", ["rota:QA on call"]))
        inversion(people_engine, broker)
        drain(people_engine)
    assert len(sink.posts("/other")) == 1
    assert sink.posts("/day") == []


def test_rota_hours_wrap_past_midnight_and_belong_to_the_day_they_start() -> None:
    tz = ZoneInfo("Asia/Shanghai")
    night = Duty(who="x", targets=("json://h/x",), start="20:00", end="08:00", days=("fri",))
    assert night.covers(datetime(2026, 11, 20, 21, 0, tzinfo=tz))  # Friday evening
    assert night.covers(datetime(2026, 11, 21, 7, 59, tzinfo=tz))  # Saturday morning, Friday's shift
    assert not night.covers(datetime(2026, 11, 21, 21, 0, tzinfo=tz))  # Saturday evening
    assert not night.covers(datetime(2026, 11, 20, 7, 0, tzinfo=tz))  # Thursday's night, not on the rota


def test_a_rota_the_rules_name_must_exist_and_a_duty_must_say_its_hours() -> None:
    with pytest.raises(FacilityFileError, match="names no"):
        parse_facility(with_rules(rule("x", ["rota:nobody"])))
    bad = ROTA.format(
        day="json://h/d", night="json://h/n", other="json://h/o", on="8pm-8am", off="01:00-02:00"
    )
    with pytest.raises(FacilityFileError, match="HH:MM"):
        parse_facility(with_rules(bad))


def test_two_dispatchers_never_send_one_step_twice(people_engine: Engine, broker: LocalBroker) -> None:
    with http_sink() as sink:
        load_rules(people_engine, rule("A/B action", [sink.url("/hook")]))
        inversion(people_engine, broker)
        (row,) = outbox(people_engine)
        first, second = Dispatcher(people_engine), Dispatcher(people_engine)
        assert first._claim(row.id)
        second.run_once()  # the row is leased to the first: the second leaves it
        assert sink.posts("/hook") == []
        first.deliver(row.id)
        second.run_once()
        assert len(sink.posts("/hook")) == 1
        # and racing: several dispatchers on threads, every row sent once
        load_rules(people_engine, rule("racers", [sink.url(f"/r{i}") for i in range(6)]))
        with unit_of_work(people_engine) as s:
            ex = s.get(Excursion, row.excursion_id)
            ex.level = "alert"
            s.add(ex)
            s.flush()
            ex.level = "action"  # a rise queues the new rule's six targets
            s.add(ex)
        racers = [threading.Thread(target=Dispatcher(people_engine).run_once) for _ in range(3)]
        for t in racers:
            t.start()
        for t in racers:
            t.join(30)
    assert [len(sink.posts(f"/r{i}")) for i in range(6)] == [1] * 6


def test_an_unreachable_database_is_told_directly_and_recorded_when_it_is_back(
    people_engine: Engine, tmp_path
) -> None:
    with http_sink() as sink:
        load_rules(people_engine, system_rule([sink.url("/sys")]))
        dispatcher = Dispatcher(people_engine, db_down_s=0.0)
        dispatcher._remember_fallback()
        good = dispatcher.engine
        dispatcher.engine = get_engine(f"sqlite:///{tmp_path}/missing/dir/x.db")
        stop = threading.Event()
        worker = threading.Thread(target=dispatcher.run, args=(stop,), kwargs={"poll_s": 0.05})
        worker.start()
        try:
            wait_until(lambda: len(sink.posts("/sys")) >= 1, timeout=10, what="the direct message")
            time.sleep(0.3)
            assert len(sink.posts("/sys")) == 1  # told once per outage
            dispatcher.engine = good
            wait_until(
                lambda: bool(alarms(people_engine, "database_unreachable")), timeout=10, what="the record"
            )
        finally:
            stop.set()
            worker.join(10)
    assert "数据库无法访问" in sink.posts("/sys")[0]["title"]
    (alarm,) = alarms(people_engine, "database_unreachable")
    assert alarm.status == "closed"
    assert alarm.started_at < alarm.ended_at
    assert [r for r in outbox(people_engine) if r.system_alarm_id] == []  # already told: nothing queued


def test_system_alarms_have_a_page_where_qa_or_the_admin_acknowledges_them(
    web_app, web_engine: Engine
) -> None:
    from tests.web_helpers import browser
    from tracker.facility.models import get_site
    from tracker.monitoring.health import Condition, reconcile, system_alarm_docs

    with unit_of_work(web_engine) as s:
        reconcile(
            s,
            site_id=get_site(s).id,
            kinds=("quarantine_burst",),
            holding=[Condition("quarantine_burst", "T-SITE", "alert", "25 messages in 5 min")],
            now=utcnow(),
        )
    admin, token = browser(web_app, "admin", lang="zh-CN")
    page = admin.get("/system-alarms")
    assert page.status_code == 200
    assert "25 messages in 5 min" in page.text
    (alarm,) = system_alarm_docs_of(web_engine, system_alarm_docs)
    r = admin.post(
        f"/system-alarms/{alarm['id']}/acknowledge",
        data={"comment": "a misconfigured gateway", "csrf_token": token},
    )
    assert r.status_code == 303
    (alarm,) = system_alarm_docs_of(web_engine, system_alarm_docs)
    assert (alarm["acknowledged_by"], alarm["ack_comment"]) == ("admin", "a misconfigured gateway")
    viewer, _ = browser(web_app, "viewer1", lang="en")
    shown = viewer.get("/system-alarms").text
    assert "a misconfigured gateway" in shown
    assert "/acknowledge" not in shown


def system_alarm_docs_of(engine: Engine, docs) -> list:
    with unit_of_work(engine) as s:
        return docs(s)
