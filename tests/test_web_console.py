"""Issue 17: QA's daily console in Debian's Chromium and through the read views.

* 40 data gaps open after 4 action excursions: the 4 stay at the top of the dashboard, in red,
  with counts by level that add up and "N of M" with pagination (zh-CN and en);
* an excursion stored by the ingester (readings through mosquitto) appears on an open dashboard
  within 1 s, without a reload, with a sound and a browser notification for a user who allowed them;
* the queue, the excursion page and the acknowledgement work at 390 × 844 (zh-CN and en);
* bulk acknowledgement audits each excursion; a second deviation from one excursion needs a reason.

Screenshots go to ``artifacts/screenshots/console/`` (git-ignored).
"""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlmodel import select

from tests.console_helpers import bsc_burst, store
from tests.factories import PASSWORD, T0, as_, minutes, particles, topic
from tests.mqtt_helpers import publish_all, running_ingester, wait_until
from tests.test_web_browser import CONSOLE, Person, chromium, live_server
from tests.web_helpers import browser
from tracker.core.audit import AuditEvent
from tracker.core.db import unit_of_work
from tracker.facility.models import Monitor, Room, get_site
from tracker.identity.signatures import Signature
from tracker.monitoring.dashboard import floor_view
from tracker.monitoring.excursions import Excursion, acknowledge_many, list_excursions
from tracker.quality.batches.linking import raise_deviation
from tracker.quality.batches.models import ExcursionLink
from tracker.quality.batches.steps import create_batch, start_step
from tracker.quality.views import QueueFilter, queue_page

ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts" / "screenshots" / "console"
PHONE = {"width": 390, "height": 844}
#: the browser tests' fixtures, shared
FIXTURES = (chromium, live_server)


def four_action_excursions(engine: Engine) -> list[int]:
    """Four action excursions of the BSC's 0.5 µm counts, each over in 3 minutes."""
    highs = (5, 6, 7), (15, 16, 17), (25, 26, 27), (35, 36, 37)
    store(engine, bsc_burst(start_seq=1, minutes_=range(45), high=[m for h in highs for m in h]))
    with unit_of_work(engine) as s:
        found = [e["id"] for e in list_excursions(s, type_="limit") if e["level"] == "action"]
    assert len(found) == 4
    return found


def forty_data_gaps(engine: Engine) -> list[int]:
    """Forty open data gaps after the excursions, stored as the gap rule stores them: 20 in grade
    A (action level: continuous monitoring) and 20 elsewhere (alert), the newest last."""
    made = []
    with unit_of_work(engine) as s:
        template = s.exec(select(Excursion).order_by(Excursion.id)).first()
        monitors = s.exec(select(Monitor, Room).join(Room, Room.id == Monitor.room_id)).all()
        grade_a = [(m, r) for m, r in monitors if r.grade == "A"]
        other = [(m, r) for m, r in monitors if r.grade != "A"]
        for i in range(40):
            mon, room = grade_a[i % len(grade_a)] if i % 2 == 0 else other[i % len(other)]
            at = T0 + minutes(60 + i)
            row = Excursion(
                type="data_gap",
                site_id=template.site_id,
                monitor_id=mon.id,
                room_id=room.id,
                kind=mon.kind,
                channel="",
                level="action" if room.grade == "A" else "alert",
                state="at_rest",
                direction="low",
                started_at=at,
                peak=0.0,
                readings=0,
                basis_id=template.basis_id,
                created_at=at,
                updated_at=at,
            )
            s.add(row)
            s.flush()
            made.append(row.id)
    return made


# --------------------------------------------------------------------------- read views


def test_queue_sorts_by_severity_then_measured_then_time_and_counts_add_up(web_engine: Engine) -> None:
    actions = four_action_excursions(web_engine)
    forty_data_gaps(web_engine)
    with unit_of_work(web_engine) as s:
        first = queue_page(s, filters=QueueFilter(pending=True), offset=0, limit=30)
        rest = queue_page(s, filters=QueueFilter(pending=True), offset=30, limit=30)
        a_only = queue_page(s, filters=QueueFilter(grade="A", type="data_gap"), limit=100)
    assert first.total == 44
    assert sum(first.by_level.values()) == 44
    assert first.by_level == {"action": 24, "alert": 20}
    assert sorted(r["id"] for r in first.rows[:4]) == sorted(actions)
    assert [r["type"] for r in first.rows[:4]] == ["limit"] * 4
    assert [r["level"] for r in first.rows[:24]] == ["action"] * 24
    assert (first.first, first.last, rest.first, rest.last) == (1, 30, 31, 44)
    assert a_only.total == 20
    assert all(r["grade"] == "A" for r in a_only.rows)


def test_a_tile_is_red_while_an_action_excursion_is_open_and_stale_values_show_their_age(
    web_engine: Engine,
) -> None:
    four_action_excursions(web_engine)
    with unit_of_work(web_engine) as s:
        # an action excursion still open: the tile is red although the latest value is in limit
        open_one = s.exec(select(Excursion).where(Excursion.type == "limit")).first()
        open_one.status, open_one.ended_at = "open", None
        s.add(open_one)
    with unit_of_work(web_engine) as s:
        view = floor_view(
            s,
            site=get_site(s),
            now=T0
            + minutes(
                44,
            )
            + timedelta(seconds=30),
        )
        bsc = next(t for t in view.rooms if t.code == "T-B1-BSC")
        assert bsc.values[0].level == "ok"
        assert not bsc.values[0].stale
        assert bsc.worst == "action"
        assert bsc.reasons[0]["what"] == "excursion"
        assert bsc.reasons[0]["level"] == "action"
        assert bsc.values[0].action_high is not None  # the tile shows the value against its limit
        later = floor_view(s, site=get_site(s), now=T0 + minutes(48))
        bsc = next(t for t in later.rooms if t.code == "T-B1-BSC")
        assert bsc.values[0].stale
        assert 200 < bsc.values[0].age_s < 260
        c1 = next(t for t in later.rooms if t.code == "T-C1")
        assert c1.worst == "no_data"
        assert [(v.monitor, v.value, v.stale) for v in c1.values] == [("T-C1-PC", None, True)]


def test_bulk_acknowledgement_audits_each_and_skips_what_needs_none(web_engine: Engine) -> None:
    ids = four_action_excursions(web_engine)
    with unit_of_work(web_engine) as s:
        done, skipped = acknowledge_many(
            s, actor=as_(web_engine, "qa1"), excursion_ids=ids[:3], comment="gateway outage reviewed"
        )
        assert len(done) == 3
        assert skipped == []
    with unit_of_work(web_engine) as s:
        done, skipped = acknowledge_many(s, actor=as_(web_engine, "qa2"), excursion_ids=ids, comment="again")
        assert [e.id for e in done] == [ids[3]]
        assert len(skipped) == 3
        events = s.exec(select(AuditEvent).where(AuditEvent.action == "excursion.acknowledge")).all()
    assert sorted(int(e.entity_key) for e in events) == sorted(ids)
    assert {e.reason for e in events} == {"gateway outage reviewed", "again"}


def test_an_excursion_with_a_deviation_links_to_it_and_another_needs_a_reason(
    web_app, web_engine: Engine
) -> None:
    ids = four_action_excursions(web_engine)
    with unit_of_work(web_engine) as s:
        dev = raise_deviation(
            s,
            actor=as_(web_engine, "qa1"),
            site=get_site(s),
            excursion_ids=ids[:2],  # one deviation, two source excursions
            title="BSC bursts",
            classification="minor",
            category="environment",
            description="d",
        )
        number = dev.number
    for lang, refusal in (("zh-CN", "另开偏差须说明理由"), ("en", "give the reason for another one")):
        qa, token = browser(web_app, "qa1", lang=lang)
        page = qa.get(f"/excursions/{ids[0]}").text
        assert f'href="/deviations/{number}"' in page
        assert 'name="again_reason"' in page
        form = {
            "csrf_token": token,
            "title": "t",
            "classification": "minor",
            "category": "c",
            "description": "d",
        }
        r = qa.post(
            f"/excursions/{ids[0]}/deviation", data=form, headers={"referer": f"/excursions/{ids[0]}"}
        )
        assert r.status_code == 303
        assert r.headers["location"] == f"/excursions/{ids[0]}"
        assert refusal in qa.get(f"/excursions/{ids[0]}").text
    r = qa.post(f"/excursions/{ids[0]}/deviation", data={**form, "again_reason": "a separate root cause"})
    assert r.status_code == 303
    assert r.headers["location"].startswith("/deviations/")
    with unit_of_work(web_engine) as s:
        event = s.exec(select(AuditEvent).where(AuditEvent.action == "excursion.another_deviation")).one()
    assert event.entity_key == str(ids[0])
    assert event.reason == "a separate root cause"
    queue = qa.get("/excursions").text
    assert f'href="/deviations/{number}"' in queue
    assert qa.get("/excursions/999999").status_code == 404
    assert qa.get("/excursions/0").status_code == 422


# --------------------------------------------------------------------------- in the browser


class Screen(Person):
    """A logged-in browser in a language and at a viewport of its own."""

    def __init__(
        self, browser_, base: str, username: str, *, lang: str, viewport: dict | None = None
    ) -> None:
        self.context = browser_.new_context(
            base_url=base, locale=lang, viewport=viewport or {"width": 1400, "height": 1000}
        )
        self.context.grant_permissions(["notifications"], origin=base)
        self.context.add_cookies([{"name": "lang", "value": lang, "url": base}])
        self.page = self.context.new_page()
        self.page.on(
            "console",
            lambda m: CONSOLE.append(f"{username} {self.page.url}: {m.text}") if m.type == "error" else None,
        )
        self.page.on("pageerror", lambda e: CONSOLE.append(f"{username} {self.page.url}: {e}"))
        self.page.set_default_timeout(15_000)
        self.page.goto("/login")
        self.page.fill("input[name=username]", username)
        self.page.fill("input[name=password]", PASSWORD)
        self.page.click("form[action='/login'] button[type=submit]")
        self.page.wait_for_url(f"{base}/")

    def shot(self, name: str) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)

    def fits(self) -> None:
        width = self.page.evaluate("document.documentElement.scrollWidth")
        assert width <= self.page.viewport_size["width"], f"{self.page.url} is {width} px wide"


RED = "rgb(198, 40, 40)"  # --action


@pytest.mark.parametrize("lang", ["zh-CN", "en"])
def test_forty_data_gaps_never_hide_four_action_excursions(
    web_engine: Engine, live_server: str, chromium, lang: str
) -> None:
    CONSOLE.clear()
    actions = four_action_excursions(web_engine)
    forty_data_gaps(web_engine)
    qa = Screen(chromium, live_server, "qa1", lang=lang)
    rows = qa.page.locator("[data-testid=waiting] tbody tr")
    top = [int(rows.nth(i).get_attribute("data-excursion")) for i in range(4)]
    assert sorted(top) == sorted(actions)
    for i in range(4):
        assert rows.nth(i).get_attribute("class") == "lv action"
        cell = rows.nth(i).locator("td").nth(1)
        assert cell.evaluate("e => getComputedStyle(e).color") == RED
    assert rows.count() == 30
    counts = qa.page.locator("[data-testid=waiting-counts]").inner_text()
    words = {
        "zh-CN": ("纠偏限度 24", "警戒限度 20", "显示第 1–30 条，共 44 条"),
        "en": ("action level 24", "alert level 20", "shown 1–30 of 44"),
    }
    for text in words[lang]:
        assert text in counts, counts
    tile = qa.page.locator(".tile[data-room='T-B1-BSC']")
    assert tile.get_attribute("data-colour") == "action"
    assert tile.evaluate("e => getComputedStyle(e).borderLeftColor") == RED
    tile.locator("details.why summary").click()  # the reason for the colour, one click away
    assert tile.locator("details.why a[href^='/excursions/']").count() >= 1
    qa.shot(f"dashboard-40-gaps-{lang}")
    qa.page.locator("[data-testid=waiting-counts] a[data-page='2']").click()
    qa.page.wait_for_url("**/?page=2")
    assert qa.page.locator("[data-testid=waiting] tbody tr").count() == 14
    assert CONSOLE == []


def test_an_excursion_stored_by_the_ingester_reaches_an_open_dashboard_within_a_second(
    web_engine: Engine, broker, live_server: str, chromium
) -> None:
    CONSOLE.clear()
    qa = Screen(chromium, live_server, "qa1", lang="zh-CN")
    qa.page.locator("#enable-alerts").click()  # this user allows sound and notifications
    qa.page.evaluate("window.__notReloaded = true")
    qa.page.wait_for_function("() => document.body.getAttribute('data-live') === 'connected'")
    messages = [
        (
            topic("T-B1-BSC", "T-BSC-PC"),
            particles(
                monitor="T-BSC-PC",
                seq=m + 1,
                ts=T0 + minutes(m),
                c05=1000 if m in (3, 4, 5) else 20,
                volume=100,
            ),
        )
        for m in range(8)
    ]
    with running_ingester(web_engine, broker, gap_check_s=3600) as ingester:
        publish_all(broker, messages)
        deadline = time.monotonic() + 20
        stored = None
        while stored is None:
            assert time.monotonic() < deadline, "the ingester stored no excursion"
            with unit_of_work(web_engine) as s:
                stored = s.exec(select(Excursion.id).where(Excursion.level == "action")).first()
            if stored is None:
                time.sleep(0.01)
        t_stored = time.monotonic()
        qa.page.locator(f"[data-testid=waiting] tr[data-excursion='{stored}']").wait_for(timeout=1000)
        seen_after = time.monotonic() - t_stored
        wait_until(lambda: ingester.stats.received >= len(messages), what="8 readings")
    assert seen_after < 1.0, f"on the dashboard {seen_after:.2f} s after it was stored"
    assert qa.page.evaluate("window.__notReloaded") is True
    qa.page.wait_for_function("() => document.body.getAttribute('data-notified') !== null")
    assert int(qa.page.evaluate("document.body.getAttribute('data-notified')")) >= 1
    assert qa.page.evaluate("document.body.getAttribute('data-sounded')") is not None
    qa.shot("dashboard-live-zh")
    assert CONSOLE == []


@pytest.mark.parametrize("lang", ["zh-CN", "en"])
def test_queue_excursion_page_and_acknowledgement_on_a_phone(
    web_engine: Engine, live_server: str, chromium, lang: str
) -> None:
    CONSOLE.clear()
    ids = four_action_excursions(web_engine)
    qa = Screen(chromium, live_server, "qa1", lang=lang, viewport=PHONE)
    qa.fits()
    qa.page.goto("/excursions")
    qa.fits()
    row = qa.page.locator(f"tr[data-excursion='{ids[0]}']")
    button = row.locator(".ack-form button")
    box = button.bounding_box()
    assert box is not None
    assert box["x"] >= 0
    assert box["x"] + box["width"] <= PHONE["width"]
    qa.shot(f"phone-queue-{lang}")
    row.locator("input[name=comment]").fill("门开启后已恢复 recovered after the door closed")
    button.click()
    qa.page.wait_for_load_state()
    assert qa.page.locator(".flash.ok").count() == 1
    assert qa.page.locator(f"tr[data-excursion='{ids[0]}']").count() == 0
    # bulk: tick two, one comment
    for i in ids[1:3]:
        qa.page.locator(f"input[name=ids][value='{i}']").check()
    qa.page.locator("#bulk input[name=comment]").fill("同一次开门 one door opening")
    qa.page.locator("[data-testid=bulk-ack]").click()
    qa.page.wait_for_load_state()
    assert "2" in qa.page.locator(".flash.ok").inner_text()
    # the excursion page
    qa.page.goto(f"/excursions/{ids[3]}")
    qa.fits()
    assert qa.page.locator("[data-testid=excursion-readings] tbody tr").count() >= 3
    assert qa.page.locator(".chart img").evaluate("e => e.complete && e.naturalWidth > 0")
    qa.shot(f"phone-excursion-{lang}")
    qa.page.locator(".ack-form textarea[name=comment]").fill("reviewed on the phone")
    qa.page.locator(".ack-form button").click()
    qa.page.wait_for_url(f"**/excursions/{ids[3]}")
    assert "reviewed on the phone" in qa.page.locator(".ack").inner_text()
    with unit_of_work(web_engine) as s:
        acked = s.exec(
            select(AuditEvent.entity_key).where(AuditEvent.action == "excursion.acknowledge")
        ).all()
    assert sorted(int(k) for k in acked) == sorted(ids)
    assert CONSOLE == []


def test_the_links_of_one_step_are_decided_together_with_one_reason_and_one_password(
    web_app, web_engine: Engine
) -> None:
    with unit_of_work(web_engine) as s:
        batch = create_batch(
            s,
            actor=as_(web_engine, "op1"),
            site=get_site(s),
            number="CT-2026-017",
            product="CAR-T",
            donor_id="D-17",
        )
        start_step(
            s,
            actor=as_(web_engine, "op1"),
            batch=batch,
            name="接种 seeding",
            room_code="T-B1-BSC",
            start=T0,
            open_processing=True,
        )
    ids = four_action_excursions(web_engine)
    qa, token = browser(web_app, "qa1")
    page = qa.get("/batches/CT-2026-017").text  # proposes the links (docs/quality.md)
    assert 'data-testid="links-bulk"' in page
    with unit_of_work(web_engine) as s:
        links = s.exec(select(ExcursionLink).where(ExcursionLink.status == "proposed")).all()
        link_ids = sorted(link.id for link in links)
        assert sorted(link.excursion_id for link in links) == sorted(ids)
    wrong = qa.post(
        "/links/decide",
        data={"csrf_token": token, "ids": link_ids, "exposed": "true", "reason": "r", "password": "wrong"},
        headers={"referer": "/batches/CT-2026-017"},
    )
    assert wrong.status_code == 303
    r = qa.post(
        "/links/decide",
        data={
            "csrf_token": token,
            "ids": link_ids,
            "exposed": "true",
            "reason": "开放操作期间 open seeding during all four",
            "password": PASSWORD,
        },
        headers={"referer": "/batches/CT-2026-017"},
    )
    assert r.status_code == 303
    with unit_of_work(web_engine) as s:
        statuses = s.exec(select(ExcursionLink.status).where(ExcursionLink.id.in_(link_ids))).all()
        signed = s.exec(select(Signature).where(Signature.entity == "exposure_link")).all()
        events = s.exec(select(AuditEvent).where(AuditEvent.action == "link.confirmed")).all()
    assert statuses == ["confirmed"] * 4
    assert sorted(int(sig.entity_key) for sig in signed) == link_ids  # one signature per link
    assert len(events) == 4
    assert {e.reason for e in events} == {"开放操作期间 open seeding during all four"}


def test_the_demo_honours_tracker_web_port(monkeypatch: pytest.MonkeyPatch) -> None:
    from tracker.cli.main import demo_web_port

    monkeypatch.setenv("TRACKER_WEB_PORT", "8123")
    assert demo_web_port(None) == 8123
    assert demo_web_port(9000) == 9000
    assert demo_web_port(0) is None
    monkeypatch.delenv("TRACKER_WEB_PORT")
    assert demo_web_port(None) == 8000


def test_the_gate_is_never_open_while_a_step_runs(web_app, web_engine: Engine) -> None:
    from tracker.quality.batches.release import gate_reasons

    with unit_of_work(web_engine) as s:
        batch = create_batch(
            s,
            actor=as_(web_engine, "op1"),
            site=get_site(s),
            number="CT-2026-018",
            product="CAR-T",
            donor_id="D-18",
        )
        step = start_step(
            s,
            actor=as_(web_engine, "op1"),
            batch=batch,
            name="扩增 expansion",
            room_code="T-C1",
            start=T0,
            open_processing=False,
        )
        assert gate_reasons(s, batch) == [f"step {step.id} (扩增 expansion) is still running"]
    for lang, words in (("zh-CN", "仍在进行中"), ("en", "is still running")):
        page = browser(web_app, "qa1", lang=lang)[0].get("/batches/CT-2026-018").text
        assert words in page
        assert 'class="gate-open"' not in page
