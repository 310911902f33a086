"""The signed alarm challenge record as HTML and PDF (evidence for OQ and periodic review).

Presentation only: every figure comes from the record QA signed
(``tracker.monitoring.challenges.signed_record``); times are shown in the site's time zone, and
the page names the signature and whether the record still matches it.
"""

from __future__ import annotations

from tracker.core.timeutil import local_display, parse_instant
from tracker.identity.signatures import SignatureCheck
from tracker.reports.render import _env, html_to_pdf

WORDS = {
    "en": {
        "title": "Alarm challenge record",
        "monitor": "Monitor",
        "window": "Window",
        "reason": "Reason",
        "started_by": "Started by",
        "excursion": "Excursion",
        "reading": "Reading (event time)",
        "received": "Received",
        "to_excursion": "Reading → excursion",
        "rule": "Rule",
        "step": "Step",
        "target": "Target",
        "delivered": "Delivered",
        "to_delivery": "Reading → delivery",
        "status": "Status",
        "none": "No excursion arose in the window: the challenge did not reach the alarm chain.",
        "signed": "Signed",
        "intact": "the record matches its signature",
        "broken": "THE RECORD NO LONGER MATCHES ITS SIGNATURE",
        "test": "TEST — these excursions count in no statistics, exposure link, release or report.",
        "slowest": "Slowest reading → delivery",
    },
    "zh-CN": {
        "title": "报警挑战记录",
        "monitor": "监测点",
        "window": "时段",
        "reason": "原因",
        "started_by": "启动人",
        "excursion": "超标",
        "reading": "读数（事件时间）",
        "received": "接收时间",
        "to_excursion": "读数 → 超标",
        "rule": "规则",
        "step": "步骤",
        "target": "目标",
        "delivered": "送达时间",
        "to_delivery": "读数 → 送达",
        "status": "状态",
        "none": "该时段未产生超标：挑战未触达报警链路。",
        "signed": "签署",
        "intact": "记录与签名一致",
        "broken": "记录与签名不再一致",
        "test": "测试——以下超标不计入任何统计、暴露关联、放行或报告。",
        "slowest": "读数 → 送达最长用时",
    },
}


def render_html(record: dict, check: SignatureCheck, *, lang: str = "zh-CN") -> str:
    tz = record["timezone"]
    env = _env().overlay()
    env.filters["local"] = lambda iso: local_display(parse_instant(iso), tz) if iso else "—"
    return env.get_template("report/challenge.html.j2").render(
        r=record,
        w=WORDS["en" if lang == "en" else "zh-CN"],
        sig=check.signature,
        intact=check.intact,
        en=lang == "en",
    )


def render_pdf(record: dict, check: SignatureCheck, *, lang: str = "zh-CN") -> bytes:
    return html_to_pdf(render_html(record, check, lang=lang))
