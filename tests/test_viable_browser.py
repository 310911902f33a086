"""Issue 18 in a real browser at phone width (390 px): an operator scans a sample's label code —
typed into the scan box, as a scanner keyboard does — and records it taken, incubating and read;
a second operator verifies the grade A count. Debian's Chromium driven by Playwright against a
live uvicorn server."""

from __future__ import annotations

import re
import shutil
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn
from sqlalchemy import Engine

from tests.factories import PASSWORD, T0, as_, minutes
from tests.viable_helpers import load_plan
from tracker.core.db import unit_of_work
from tracker.facility.models import get_site
from tracker.monitoring.viable.lifecycle import get_sample
from tracker.quality.batches.steps import create_batch, start_step
from tracker.quality.batches.viable import samples_of
from tracker.web.app import create_app
from tracker.web.config import WebSettings
from tracker.wire.broker import free_port

playwright_api = pytest.importorskip("playwright.sync_api")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-sync",
]
PHONE = {"width": 390, "height": 844}


@pytest.fixture
def live_server(web_engine: Engine) -> Iterator[str]:
    load_plan(web_engine)
    app = create_app(
        engine=web_engine, settings=WebSettings(secret_key="v" * 40, login_attempts_per_minute=10_000)
    )
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def _phone(browser, base: str, username: str, lang: str = "en"):
    context = browser.new_context(base_url=base, locale=lang, viewport=PHONE, is_mobile=True, has_touch=True)
    page = context.new_page()
    page.set_default_timeout(15_000)
    page.goto("/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("form[action='/login'] button[type=submit]")
    page.wait_for_url(f"{base}/")
    page.goto(f"/lang/{lang}")
    return page


def _scan(page, code: str) -> None:
    """What a phone's scanner keyboard does: type the label's code into the box and press Enter."""
    page.goto("/viable")
    page.fill("form[data-testid=scan] input[name=code]", code)
    page.press("form[data-testid=scan] input[name=code]", "Enter")
    page.wait_for_url(re.compile(rf"/viable/s/{code}$"))


def test_a_sample_is_recorded_from_taking_to_reading_by_scanning_its_code_on_a_phone(
    live_server: str, web_engine: Engine
) -> None:
    with unit_of_work(web_engine) as s:
        batch = create_batch(
            s,
            actor=as_(web_engine, "op1"),
            site=get_site(s),
            number="CT-VB",
            product="CAR-T",
            donor_id="D-VB",
        )
        start_step(
            s,
            actor=as_(web_engine, "op1"),
            batch=batch,
            name="transduction",
            room_code="T-B1-BSC",
            start=T0 + minutes(0),
            open_processing=True,
            late_reason="test scene",
        )
    with unit_of_work(web_engine) as s:
        code = next(x.code for x in samples_of(s, batch) if x.location == "V-BSC-1" and x.method == "settle")
    path = shutil.which("chromium")
    if path is None:
        pytest.fail("Debian's chromium is not installed: run scripts/bootstrap")
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path, headless=True, args=CHROMIUM_ARGS)
        page = _phone(browser, live_server, "op1")
        assert page.evaluate("window.innerWidth") == 390
        _scan(page, code)
        # the label's QR code is shown (segno SVG) for printing or checking
        assert page.locator("img.label-qr").evaluate("img => img.naturalWidth") > 0
        page.fill("form[data-testid=take] input[name=media_lot]", "TSA-2611-07")
        page.click("form[data-testid=take] button")
        page.wait_for_selector("text=Sample taken.")
        assert page.inner_text("[data-testid=sample-status]").startswith("taken")
        _scan(page, code)
        page.fill("form[data-testid=incubate] input[name=incubator]", "INC-1")
        page.click("form[data-testid=incubate] button")
        page.wait_for_selector("text=Incubation recorded.")
        _scan(page, code)
        page.fill("form[data-testid=read] input[name=count]", "1")
        page.click("form[data-testid=read] button")
        page.wait_for_selector("text=Count recorded.")
        assert "1 cfu" in page.inner_text("[data-testid=sample-count]")
        assert "action" in page.inner_text("[data-testid=sample-verdict]").lower()
        # the page fits the phone: nothing scrolls sideways
        assert page.evaluate("document.documentElement.scrollWidth") <= 390 + 1
        # the reader cannot verify their own count; a second person can (in Chinese)
        page.fill("form[data-testid=verify] input[name=count]", "1")
        page.click("form[data-testid=verify] button")
        page.wait_for_selector("text=another person")
        other = _phone(browser, live_server, "op2", lang="zh-CN")
        _scan(other, code)
        other.fill("form[data-testid=verify] input[name=count]", "1")
        other.click("form[data-testid=verify] button")
        other.wait_for_selector("form[data-testid=identify]")
        browser.close()
    with unit_of_work(web_engine) as s:
        sample = get_sample(s, code)
        assert (sample.status, sample.taken_by, sample.read_by, sample.verified_by) == (
            "read",
            "op1",
            "op1",
            "op2",
        )
        assert (sample.media_lot, sample.incubator, sample.count, sample.verdict) == (
            "TSA-2611-07",
            "INC-1",
            1,
            "action",
        )
