"""Alarms that reach people (issue 16): ``[[notify]]`` rules, the outbox and the dispatcher,
through a real mosquitto, a real SMTP server (aiosmtpd) and a real HTTP sink on 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta

import pytest
from sqlalchemy import Engine
from sqlmodel import select
from typer.testing import CliRunner

from tests.conftest import MIN_FACILITY
from tests.factories import T0, as_, scalar, topic
from tests.mqtt_helpers import publish_all, running_ingester, wait_until
from tests.notify_sinks import http_sink, smtp_server
from tracker.cli.main import app
from tracker.core.db import unit_of_work
from tracker.core.errors import FacilityFileError
from tracker.core.timeutil import utcnow
from tracker.facility.file import parse_facility
from tracker.facility.load import load_facility
from tracker.facility.notify import redact
from tracker.monitoring.excursions import Excursion, acknowledge, list_excursions
from tracker.monitoring.health import heartbeats
from tracker.monitoring.outbox import NotificationAttempt, NotificationOutbox
from tracker.notify.dispatcher import Dispatcher, failed_targets
from tracker.wire.broker import LocalBroker

BASE = MIN_FACILITY.read_text(encoding="utf-8")


def with_rules(rules: str) -> str:
    return BASE + "\n" + rules


def rule(name: str, targets: list[str], *, extra: str = "", grades: str = '["A", "B"]') -> str:
    return (
        f'[[notify]]\nname = "{name}"\nlevels = ["action"]\ngrades = {grades}\n'
        f"targets = {json.dumps(targets)}\n{extra}\n"
    )


def load_rules(engine: Engine, rules: str) -> None:
    """Rules are a change of who is alarmed: QA approves them with an e-signature."""
    with unit_of_work(engine) as s:
        result = load_facility(
            s, parse_facility(with_rules(rules)), actor="admin", approver=as_(engine, "qa1")
        )
    assert any(c.startswith("[notify]") for c in result.evaluation_changes)


def inversion(engine: Engine, broker: LocalBroker) -> int:
    """A pressure inversion in grade B room T-B1 (an action excursion at once), through mosquitto."""
    values = [15.0, 15.0, -2.0, 15.0, 15.0, 15.0, 15.0]
    messages = [
        (
            topic("T-B1", "T-B1-DP"),
            scalar(
                monitor="T-B1-DP",
                kind="pressure",
                seq=i + 1,
                ts=T0 + timedelta(seconds=10 * i),
                value=v,
                unit="Pa",
            ),
        )
        for i, v in enumerate(values)
    ]
    with running_ingester(engine, broker) as ingester:
        sent = publish_all(broker, messages)
        wait_until(lambda: ingester.stats.received >= sent, what=f"{sent} messages")
    with unit_of_work(engine) as s:
        (ex,) = list_excursions(s, type_="limit")
    assert ex["level"] == "action"
    return ex["id"]


def later(seconds: float):
    """The dispatcher's clock, ``seconds`` ahead of the wall clock."""
    return lambda: utcnow() + timedelta(seconds=seconds)


def drain(engine: Engine, *, at: float = 0.0, **kwargs) -> Dispatcher:
    dispatcher = Dispatcher(engine, clock=later(at), **kwargs)
    dispatcher.run_once()
    return dispatcher


def outbox(engine: Engine) -> list[NotificationOutbox]:
    with unit_of_work(engine) as s:
        return list(s.exec(select(NotificationOutbox).order_by(NotificationOutbox.id)))


def test_a_matching_rule_delivers_once_by_mail_and_http_and_another_rule_delivers_nothing(
    people_engine: Engine, broker: LocalBroker
) -> None:
    with http_sink() as sink, smtp_server() as (port, mails):
        mail = f"mailto://127.0.0.1:{port}?from=tracker@example.com&to=qa@example.com"
        load_rules(
            people_engine,
            rule("A/B action", [mail, sink.url("/hook")]) + rule("C only", [sink.url("/c")], grades='["C"]'),
        )
        ex_id = inversion(people_engine, broker)
        drain(people_engine)
        drain(people_engine)  # a second pass sends nothing again
        assert len(sink.posts("/hook")) == 1
        assert len(mails) == 1
        assert sink.posts("/c") == []
    post = sink.posts("/hook")[0]
    assert "【纠偏】T-SITE 测试中心 T-B1" in post["title"]
    for words in ("细胞制备间（B 级）", "T-B1-DP", "-2 Pa", "08:00:20 CST", f"/excursions?id={ex_id}"):
        assert words in post["message"], words
    with unit_of_work(people_engine) as s:
        attempts = s.exec(select(NotificationAttempt)).all()
    assert [(a.rule, a.outcome) for a in attempts] == [("A/B action", "sent")] * 2


def test_the_outbox_row_is_written_with_the_excursion_and_a_replay_does_not_queue_it_again(
    people_engine: Engine, broker: LocalBroker
) -> None:
    load_rules(people_engine, rule("A/B action", ["json://127.0.0.1:9/hook"]))
    ex_id = inversion(people_engine, broker)
    rows = outbox(people_engine)
    assert [(r.excursion_id, r.step, r.status) for r in rows] == [(ex_id, "action", "pending")]
    assert rows[0].key == f"x{ex_id}:A/B action:action:0"
    with unit_of_work(people_engine) as s:  # a replay that lowers and raises the level again
        ex = s.get(Excursion, ex_id)
        ex.level = "alert"
        s.add(ex)
        s.flush()
        ex.level = "action"
        s.add(ex)
    assert len(outbox(people_engine)) == 1


def test_a_rise_from_alert_to_action_is_announced_and_a_fall_is_not(
    people_engine: Engine, broker: LocalBroker
) -> None:
    ex_id = inversion(people_engine, broker)  # before any rule: nothing queued
    load_rules(people_engine, rule("all", ["json://127.0.0.1:9/hook"]).replace('levels = ["action"]\n', ""))
    with unit_of_work(people_engine) as s:
        ex = s.get(Excursion, ex_id)
        ex.level = "alert"  # a fall: no news
        s.add(ex)
        s.flush()
        ex.level = "action"  # a rise: announced, in the same transaction
        s.add(ex)
    assert [(r.step, r.level) for r in outbox(people_engine)] == [("action", "action")]


def test_escalation_fires_when_not_acknowledged_and_not_when_acknowledged(
    people_engine: Engine, broker: LocalBroker
) -> None:
    extra = 'escalate_after_s = 600\nescalate_to = ["{esc}"]'
    with http_sink() as sink:
        load_rules(
            people_engine, rule("A/B action", [sink.url("/hook")], extra=extra.format(esc=sink.url("/esc")))
        )
        inversion(people_engine, broker)
        drain(people_engine)
        drain(people_engine, at=300)
        assert sink.posts("/esc") == []  # not yet due
        drain(people_engine, at=601)
        drain(people_engine, at=1200)
        assert len(sink.posts("/esc")) == 1
    assert "升级通知：未确认" in sink.posts("/esc")[0]["message"]


def test_no_escalation_once_acknowledged(people_engine: Engine, broker: LocalBroker) -> None:
    extra = 'escalate_after_s = 600\nescalate_to = ["{esc}"]'
    with http_sink() as sink:
        load_rules(
            people_engine, rule("A/B action", [sink.url("/hook")], extra=extra.format(esc=sink.url("/esc")))
        )
        ex_id = inversion(people_engine, broker)
        drain(people_engine)
        with unit_of_work(people_engine) as s:
            acknowledge(s, actor=as_(people_engine, "qa1"), excursion_id=ex_id, comment="door seal checked")
        drain(people_engine, at=601)
        assert len(sink.posts("/hook")) == 1
        assert sink.posts("/esc") == []
    assert {r.step: r.status for r in outbox(people_engine)} == {"action": "sent", "escalate": "cancelled"}


def test_a_rule_that_asks_also_tells_of_the_close_and_the_acknowledgement_once(
    people_engine: Engine, broker: LocalBroker
) -> None:
    """``also = ["acknowledged", "closed"]``: the targets hear that the alarm is over, once each,
    without escalation or reminders; a rule without ``also`` hears only the alarm."""
    extra = 'also = ["acknowledged", "closed"]\nrepeat_every_s = 60\nescalate_after_s = 600\nescalate_to = ["{esc}"]'
    with http_sink() as sink:
        load_rules(
            people_engine,
            rule("A/B action", [sink.url("/hook")], extra=extra.format(esc=sink.url("/esc")))
            + rule("alarm only", [sink.url("/plain")]),
        )
        ex_id = inversion(people_engine, broker)  # the inversion ends: the episode closes in the run
        drain(people_engine)
        with unit_of_work(people_engine) as s:
            acknowledge(s, actor=as_(people_engine, "qa1"), excursion_id=ex_id, comment="door seal checked")
        drain(people_engine)
        drain(people_engine, at=601)
        titles = [p["title"] for p in sink.posts("/hook")]
        assert len(sink.posts("/plain")) == 1
        assert sink.posts("/esc") == []
    assert len(titles) == 3, titles
    assert any(t.startswith("【已结束】") for t in titles)
    (acked,) = [p for p in sink.posts("/hook") if p["title"].startswith("【已确认】")]
    assert "已由 qa1 确认" in acked["message"]
    steps = {r.step: r.status for r in outbox(people_engine) if r.rule == "A/B action"}
    assert steps == {
        "action": "sent",
        "closed": "sent",
        "acknowledged": "sent",
        "escalate": "cancelled",
        "remind:1": "cancelled",
    }


def test_reminders_repeat_until_acknowledged(people_engine: Engine, broker: LocalBroker) -> None:
    with http_sink() as sink:
        load_rules(people_engine, rule("A/B action", [sink.url("/hook")], extra="repeat_every_s = 900"))
        ex_id = inversion(people_engine, broker)
        drain(people_engine)
        drain(people_engine, at=901)  # first reminder
        drain(people_engine, at=1802)  # second reminder
        assert len(sink.posts("/hook")) == 3
        assert "提醒：尚未确认" in sink.posts("/hook")[1]["message"]
        with unit_of_work(people_engine) as s:
            acknowledge(s, actor=as_(people_engine, "qa1"), excursion_id=ex_id, comment="assessed")
        for at in (2703, 3604, 5000):
            drain(people_engine, at=at)
        assert len(sink.posts("/hook")) == 3
    assert [r.status for r in outbox(people_engine)] == ["sent", "sent", "sent", "cancelled"]


def test_a_failing_target_is_retried_with_backoff_shown_and_delivered_once(
    people_engine: Engine, broker: LocalBroker
) -> None:
    with http_sink(fail_first={"/hook": 2}) as sink:
        load_rules(people_engine, rule("A/B action", [sink.url("/hook")]))
        inversion(people_engine, broker)
        drain(people_engine, backoff_s=30)
        drain(people_engine, backoff_s=30)  # backing off: not due again yet
        assert sink.refused["/hook"] == 1
        with unit_of_work(people_engine) as s:
            (shown,) = failed_targets(s)
            assert (shown.status, shown.attempts) == ("pending", 1)
            assert "500" in shown.last_error
        listed = CliRunner().invoke(
            app,
            ["notify-failed", "--json", "--db", str(people_engine.url.render_as_string(hide_password=False))],
        )
        assert listed.exit_code == 0, listed.output
        assert json.loads(listed.output)[0]["rule"] == "A/B action"
        drain(people_engine, at=31, backoff_s=30)
        drain(people_engine, at=200, backoff_s=30)
        assert sink.refused["/hook"] == 2
        assert len(sink.posts("/hook")) == 1
    with unit_of_work(people_engine) as s:
        assert failed_targets(s) == []
        outcomes = [a.outcome for a in s.exec(select(NotificationAttempt).order_by(NotificationAttempt.id))]
    assert outcomes == ["failed", "failed", "sent"]


def test_a_target_that_never_answers_gives_up_and_stays_shown(
    people_engine: Engine, broker: LocalBroker
) -> None:
    load_rules(people_engine, rule("A/B action", ["json://127.0.0.1:9/hook"]))
    inversion(people_engine, broker)
    for at in (0, 10, 100, 1000):
        drain(people_engine, at=at, max_attempts=3, backoff_s=1)
    with unit_of_work(people_engine) as s:
        (shown,) = failed_targets(s)
    assert (shown.status, shown.attempts) == ("failed", 3)


def test_secrets_come_from_the_environment_and_never_reach_the_log(
    people_engine: Engine, broker: LocalBroker
) -> None:
    with http_sink() as sink:
        target = f"json://tracker:${{TRACKER_HOOK_PASSWORD}}@127.0.0.1:{sink.port}/hook"
        load_rules(people_engine, rule("A/B action", [target]))
        inversion(people_engine, broker)
        drain(people_engine, environ={})  # unset: a failed attempt that says which variable
        with unit_of_work(people_engine) as s:
            assert "TRACKER_HOOK_PASSWORD" in failed_targets(s)[0].last_error
        drain(people_engine, at=60, environ={"TRACKER_HOOK_PASSWORD": "s3cret"})
        assert len(sink.posts("/hook")) == 1
    with unit_of_work(people_engine) as s:
        logged = [a.target for a in s.exec(select(NotificationAttempt))]
    assert all("s3cret" not in t and "${TRACKER_HOOK_PASSWORD}" not in t for t in logged)
    assert redact("mailtos://user:pw@smtp.example.com") == "mailtos://user:***@smtp.example.com"


def test_a_password_written_in_the_file_is_refused() -> None:
    with pytest.raises(FacilityFileError, match="environment"):
        parse_facility(with_rules(rule("x", ["mailtos://qa:hunter2@smtp.example.com"])))


def _dispatcher_process(db_url: str, poll: float) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tracker.cli", "notify", "--db", db_url, "--poll", str(poll)],
        env={**os.environ, "TRACKER_LANG": "en"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _dispatcher_beats(engine: Engine) -> bool:
    with unit_of_work(engine) as s:
        return any(hb.kind == "notify" for hb in heartbeats(s))


def test_a_dispatcher_killed_between_outbox_write_and_delivery_delivers_once_after_restart(
    people_engine: Engine, broker: LocalBroker
) -> None:
    url = people_engine.url.render_as_string(hide_password=False)
    with http_sink() as sink:
        load_rules(people_engine, rule("A/B action", [sink.url("/hook")]))
        first = _dispatcher_process(url, poll=3600)  # looks once, then sleeps for an hour
        wait_until(lambda: _dispatcher_beats(people_engine), timeout=60, what="the first dispatcher's pass")
        inversion(people_engine, broker)  # outbox row written; the sleeping dispatcher has not sent it
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        assert sink.posts("/hook") == []
        assert [r.status for r in outbox(people_engine)] == ["pending"]
        second = _dispatcher_process(url, poll=0.2)
        try:
            wait_until(lambda: len(sink.posts("/hook")) >= 1, timeout=30, what="delivery after restart")
            time.sleep(1.5)  # several more polls: nothing is sent again
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(10)
        assert len(sink.posts("/hook")) == 1
    assert [r.status for r in outbox(people_engine)] == ["sent"]


def test_the_dispatcher_sends_in_english_when_the_site_says_so(
    people_engine: Engine, broker: LocalBroker
) -> None:
    with http_sink() as sink:
        rules = rule("A/B action", [sink.url("/hook")]).replace("", "", 0)
        text = with_rules(rules).replace(
            'limit_set = "CN-GMP-2010"',
            'limit_set = "CN-GMP-2010"\nlanguage = "en"\nbase_url = "https://em.example.com"',
        )
        with unit_of_work(people_engine) as s:
            load_facility(s, parse_facility(text), actor="admin", approver=as_(people_engine, "qa1"))
        ex_id = inversion(people_engine, broker)
        drain(people_engine)
    post = sink.posts("/hook")[0]
    assert post["title"].startswith("[ACTION] T-SITE Test centre T-B1")
    assert f"https://em.example.com/excursions?id={ex_id}" in post["message"]
    assert "Cell processing room (grade B)" in post["message"]


def test_a_change_of_notify_rules_needs_qa_approval(people_engine: Engine) -> None:
    from tracker.core.errors import TrackerError

    with unit_of_work(people_engine) as s, pytest.raises(TrackerError):
        load_facility(s, parse_facility(with_rules(rule("x", ["json://127.0.0.1:9/h"]))), actor="admin")
