"""Issue 7, item 1: what the service layer says reads in the page's language.

The catalogue walk (tests/test_web_pages.py) covers the words of the templates; this covers the
messages the services raise or return: refusals for a role, for separation of duties, for
missing fields and wrong states, the deviation workflow's gaps, signature statements, and the
error handler that shows them. Each refusal path is driven once through the pages in zh-CN and
in English; the zh-CN page must show Chinese with no English sentence left, the English page
the English sentence (which JSON and logs keep), and the JSON API both.
"""

from __future__ import annotations

import ast
import re
from datetime import date
from html import unescape
from pathlib import Path

import pytest
from sqlalchemy import Engine

from tests.factories import PASSWORD, T0, as_, minutes
from tests.web_helpers import browser
from tracker.core.db import unit_of_work
from tracker.core.errors import WORDS_ZH
from tracker.facility.models import get_site
from tracker.quality import deviations as dv
from tracker.quality.batches.linking import raise_deviation
from tracker.quality.batches.steps import create_batch, end_step, start_step
from tracker.web.i18n import catalogue_path

ROOT = Path(__file__).resolve().parent.parent
#: the modules whose messages reach people (pages, terminals, the API)
SERVICE_MODULES = [
    "tracker/identity/users.py",
    "tracker/identity/signatures.py",
    "tracker/identity/grants.py",
    "tracker/quality/deviations.py",
    "tracker/monitoring/proposals.py",
    "tracker/monitoring/excursions.py",
    "tracker/facility/file.py",
    "tracker/facility/load.py",
    "tracker/facility/models.py",
    "tracker/facility/limits.py",
    "tracker/facility/inhibits.py",
    "tracker/facility/roomstate.py",
    "tracker/reports/signoff.py",
    "tracker/web/api/routes.py",
    "tracker/web/deps.py",
    "tracker/identity/tokens.py",
    "tracker/web/inputs.py",
    "tracker/web/reports.py",
    "tracker/web/throttle.py",
    *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tracker/web/pages").glob("*.py")),
    *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tracker/quality/batches").glob("*.py")),
]
USER_ERRORS = {
    "TrackerError",
    "NotFoundError",
    "InvalidInputError",
    "AuthenticationError",
    "PermissionDeniedError",
    "ConflictError",
    "TooManyRequestsError",
    "Forbidden",
    "FacilityFileError",
    "LimitTooLooseError",
}
CJK = re.compile(r"[\u4e00-\u9fff]")
#: three English words in a row: a sentence left untranslated (identifiers carry digits or hyphens)
ENGLISH_SENTENCE = re.compile(r"(?<![\w-])[A-Za-z]{2,}(?:[ ,;:'()]+[A-Za-z]{2,}){2,}(?![\w-])")


def _is_reason(node: ast.AST) -> bool:
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "Reason"


def _is_translated(node: ast.AST) -> bool:
    """A Reason, or a page's words through its catalogue (``_("…")`` in the page routers)."""
    return _is_reason(node) or (
        isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "_"
    )


def test_every_message_the_services_raise_carries_its_chinese_wording() -> None:
    """A message written as a bare string (English only) would show in English on a zh-CN page."""
    bare = []
    for rel in SERVICE_MODULES:
        tree = ast.parse((ROOT / rel).read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
                name = getattr(node.exc.func, "id", None)
                if (
                    name in USER_ERRORS
                    and node.exc.args
                    and not (
                        _is_translated(node.exc.args[0])
                        or isinstance(node.exc.args[0], (ast.Name, ast.IfExp))
                    )
                ):
                    bare.append(f"{rel}:{node.lineno} raise {name}")
                if name in USER_ERRORS and node.exc.args and isinstance(node.exc.args[0], ast.IfExp):
                    branches = (node.exc.args[0].body, node.exc.args[0].orelse)
                    if not all(_is_reason(b) for b in branches):
                        bare.append(f"{rel}:{node.lineno} raise {name}")
            if (
                isinstance(node, ast.Call)
                and getattr(node.func, "id", None) == "require_role"
                and not all(_is_reason(k.value) for k in node.keywords if k.arg == "action")
            ):
                bare.append(f"{rel}:{node.lineno} require_role(action=…)")
    assert bare == []
    assert len(SERVICE_MODULES) >= 25


def test_the_words_inside_reasons_are_the_words_of_the_pages() -> None:
    from babel.messages.pofile import read_po

    with catalogue_path("zh-CN").open("rb") as fh:
        zh = {m.id: m.string for m in read_po(fh) if m.id}
    assert {k: v for k, v in WORDS_ZH.items() if k in zh and zh[k] != v} == {}
    assert len([k for k in WORDS_ZH if k in zh]) >= 40


def _flash(html: str) -> list[str]:
    """The error shown on a page (flash or error page): its headline and each reason."""
    found = re.search(r'class="flash error" role="alert">(.*?)</(?:div|p)>', html, re.S)
    assert found, "no error shown on the page"
    parts = [re.sub(r"<[^>]+>", " ", p) for p in re.split(r"<li>", found.group(1))]
    return [re.sub(r"\s+", " ", unescape(p)).strip() for p in parts if p.strip()]


def _chinese_only(lines: list[str]) -> list[str]:
    """The lines that are not Chinese, or that keep an English sentence."""
    return [line for line in lines if not CJK.search(line) or ENGLISH_SENTENCE.search(line)]


@pytest.fixture
def scene(web_engine: Engine) -> dict:
    """A batch with a running step (op1), a deviation under investigation concerning it (no root
    cause, impact unassessed), a CAPA action owned by op1, and a signed, ended step."""
    engine = web_engine
    with unit_of_work(engine) as s:
        batch = create_batch(
            s,
            actor=as_(engine, "op1"),
            site=get_site(s),
            number="CT-2026-010",
            product="CAR-T",
            donor_id="D-10",
        )
        done = start_step(
            s,
            actor=as_(engine, "op1"),
            batch=batch,
            name="接种",
            room_code="T-B1-BSC",
            start=T0,
            open_processing=True,
        )
        running = start_step(
            s,
            actor=as_(engine, "op1"),
            batch=batch,
            name="扩增",
            room_code="T-B1-BSC",
            start=T0,
            open_processing=False,
        )
        dev = raise_deviation(
            s,
            actor=as_(engine, "qa1"),
            site=get_site(s),
            excursion_ids=[],
            title="t",
            classification="major",
            category="environment",
            description="d",
            batch_numbers=["CT-2026-010"],
        )
        dv.start_investigation(s, actor=as_(engine, "qa1"), dev=dev)
        capa = dv.add_capa(
            s,
            actor=as_(engine, "qa1"),
            dev=dev,
            kind="corrective",
            description="fix",
            owner="op1",
            due=date(2026, 12, 31),
        )
        s.flush()
        out = {"batch": batch.number, "deviation": dev.number, "capa": capa.id, "step": running.id}
    with unit_of_work(engine) as s:
        end_step(s, signer=as_(engine, "op1"), step_id=done.id, end=T0 + minutes(30))
    return out


def refusals(scene: dict) -> list[tuple[str, str, str, dict, str]]:
    """(user, method, path, form, English the headline starts with) for each refusal path."""
    b, d = scene["batch"], scene["deviation"]
    return [
        ("op1", "GET", "/users", {}, "GET /users needs the role admin"),  # the route table
        ("op2", "POST", f"/capa/{scene['capa']}/done", {"outcome": "x"}, "CAPA"),  # not the owner
        ("qa2", "POST", f"/deviations/{d}/approve", {"password": PASSWORD}, f"{d}: the investigation"),
        ("qa1", "POST", f"/deviations/{d}/close", {"password": PASSWORD}, f"{d} is investigating"),
        ("qa1", "POST", f"/deviations/{d}/update", {"reason": " ", "title": "new"}, "a change to a"),
        (
            "qa1",
            "POST",
            f"/deviations/{d}/capa",
            {"kind": "corrective", "description": "x", "owner": "nobody", "due": "2026-12-31"},
            "no user",
        ),
        ("qa1", "POST", f"/batches/{b}/review", {"password": "not my password"}, "wrong user name"),
        (
            "qa1",
            "POST",
            f"/batches/{b}/reject",
            {"password": PASSWORD, "reason": "r"},
            f"batch {b} still has running steps",
        ),
        ("op1", "POST", f"/batches/{b}/steps", {"name": " ", "room": "T-B1-BSC"}, "a step needs a name"),
        ("op1", "POST", f"/batches/{b}/complete", {}, f"batch {b} cannot complete"),
        (
            "admin",
            "POST",
            "/users",
            {
                "username": "both",
                "full_name": "B",
                "person": "E-both",
                "roles": ["qa", "production_head"],
                "password": "temporary password 123",
            },
            "roles",
        ),
        ("qa1", "POST", "/limits/proposals/999/reject", {"reason": "r"}, "no limit proposal 999"),
        ("qa1", "POST", "/excursions/999/acknowledge", {"comment": "c"}, "no excursion 999"),
        (
            "qa1",
            "POST",
            "/links/999/decide",
            {"exposed": "true", "reason": "r", "password": PASSWORD},
            "no link 999",
        ),
        ("prod", "POST", f"/batches/{b}/sign", {"password": PASSWORD}, f"batch {b} is in_progress"),
        ("qa1", "GET", "/excursions?since=yesterday", {}, "'yesterday': a time is ISO 8601"),
        (
            "qa1",
            "POST",
            "/limits/proposals",
            {"room": "T-B1", "kind": "pressure", "state": "at_rest", "start": "2026-01-01", "end": "soon"},
            "'2026-01-01': a time",
        ),
        ("qa1", "GET", "/monitors/NO-SUCH", {}, "no monitor 'NO-SUCH'"),
    ]


def test_each_refusal_reads_in_chinese_on_zh_pages_and_in_english_on_en_pages(web_app, scene) -> None:
    clients = {}
    problems = []
    for user, method, path, form, english in refusals(scene):
        for lang in ("zh-CN", "en"):
            if (user, lang) not in clients:
                clients[(user, lang)] = browser(web_app, user, lang=lang)
            client, token = clients[(user, lang)]
            if method == "GET":
                page = client.get(path).text
            else:
                r = client.post(
                    path, data={**form, "csrf_token": token}, headers={"referer": "http://testserver/batches"}
                )
                assert r.status_code == 303, (path, r.status_code, r.text[:200])
                page = client.get(r.headers["location"]).text
            shown = _flash(page)
            if lang == "zh-CN" and _chinese_only(shown):
                problems.append(f"{path} zh-CN: {_chinese_only(shown)}")
            if lang == "en" and (not shown[0].startswith(english) or any(CJK.search(x) for x in shown)):
                problems.append(f"{path} en: {shown}")
    assert problems == []


def test_the_deviation_page_lists_what_is_missing_and_signatures_in_chinese(web_app, scene) -> None:
    client, _ = browser(web_app, "qa1")
    page = client.get(f"/deviations/{scene['deviation']}").text
    assert "尚未记录根本原因" in page
    assert "root cause not recorded" not in page
    client_en, _ = browser(web_app, "qa1", lang="en")
    assert "root cause not recorded" in client_en.get(f"/deviations/{scene['deviation']}").text
    batch = client.get(f"/batches/{scene['batch']}").text
    assert "操作人确认工序已按记录执行（GMP（2010）第一百七十四条）" in batch  # the statement as shown
    assert "operator confirms the step" not in batch
    assert "operator confirms the step as performed" in client_en.get(f"/batches/{scene['batch']}").text


def test_login_errors_read_in_the_page_language(web_app) -> None:
    for lang, expected in (("zh-CN", "用户名或密码错误"), ("en", "wrong user name or password")):
        client, token = browser(web_app, lang=lang)
        r = client.post("/login", data={"username": "qa1", "password": "nope", "csrf_token": token})
        assert r.status_code == 401
        assert _flash(r.text)[0].startswith(expected)


def test_the_json_api_keeps_english_and_adds_the_chinese(web_app, scene) -> None:
    from fastapi.testclient import TestClient

    client = TestClient(web_app)
    token = client.post("/api/v1/tokens", json={"username": "qa2", "password": PASSWORD}).json()["token"]
    r = client.post(
        f"/api/v1/deviations/{scene['deviation']}/approve",
        json={"password": PASSWORD},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert r.status_code == 409
    body = r.json()
    assert body["detail"].startswith(f"{scene['deviation']}: the investigation cannot be approved: ")
    assert body["reasons"][0] == "root cause not recorded"
    assert body["reasons_zh"][0] == "尚未记录根本原因"
    assert body["detail_zh"].startswith(f"偏差 {scene['deviation']} 的调查报告尚不能批准：")
    assert not _chinese_only([body["detail_zh"], *body["reasons_zh"]])
    r = client.get("/api/v1/users", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 403
    assert r.json()["detail"].startswith("GET /api/v1/users needs the role admin")
    assert r.json()["detail_zh"].startswith("此操作需要系统管理员角色")


def test_the_terminal_says_it_in_chinese_unless_told_otherwise(
    web_engine: Engine, scene, monkeypatch, capsys
) -> None:
    from tracker.cli.main import main

    url = str(web_engine.url)
    for lang, expected in (("zh-CN", "尚未记录根本原因"), ("en", "root cause not recorded")):
        monkeypatch.setenv("TRACKER_LANG", lang)
        monkeypatch.setattr(
            "sys.argv",
            [
                "tracker",
                "deviation",
                "approve",
                scene["deviation"],
                "--as",
                "qa2",
                "--password-stdin",
                "--db",
                url,
            ],
        )
        monkeypatch.setattr("sys.stdin", __import__("io").StringIO(PASSWORD + "\n"))
        import tracker.cli.common as common

        monkeypatch.setattr(common, "_stdin_lines", None)
        with pytest.raises(SystemExit):
            main()
        err = capsys.readouterr().err
        assert expected in err
