"""Messages people can act on, in the site's language (zh-CN default, en)."""

from __future__ import annotations

from dataclasses import dataclass
from zoneinfo import ZoneInfo

from tracker.facility.limits import UNITS
from tracker.facility.models import Room, Site
from tracker.monitoring.alarm_records import SystemAlarm
from tracker.monitoring.excursions import Excursion
from tracker.monitoring.health import KINDS

LEVEL = {"en": {"alert": "ALERT", "action": "ACTION"}, "zh-CN": {"alert": "警戒", "action": "纠偏"}}
TYPE = {
    "en": {
        "limit": "limit excursion",
        "data_gap": "data gap",
        "recurrence": "recurring ≥5.0 µm counts",
        "adverse_trend": "adverse trend",
        "recovery": "recovery not met",
        "predicted": "predicted breach (a forecast warning, not a breach)",
    },
    "zh-CN": {
        "limit": "超限",
        "data_gap": "数据中断",
        "recurrence": "≥5.0 µm 反复检出",
        "adverse_trend": "不良趋势",
        "recovery": "自净未达标",
        "predicted": "预测超标预警（预测，并非超标）",
    },
}
STATUS = {
    "en": {"open": "open", "closed": "closed", "superseded": "superseded"},
    "zh-CN": {"open": "进行中", "closed": "已结束", "superseded": "已被取代"},
}
STATE = {
    "en": {"at_rest": "at rest", "in_operation": "in operation"},
    "zh-CN": {"at_rest": "静态", "in_operation": "动态"},
}
STEP = {
    "en": {
        "escalate": "ESCALATED, not acknowledged",
        "remind": "REMINDER, not acknowledged",
        "acknowledged": "ACKNOWLEDGED by {by}: no further reminders",
        "closed": "CLOSED: the excursion has ended",
    },
    "zh-CN": {
        "escalate": "升级通知：未确认",
        "remind": "提醒：尚未确认",
        "acknowledged": "已由 {by} 确认：不再提醒",
        "closed": "已结束：该超标已结束",
    },
}
#: the steps that tell of an excursion's end of alarm (a rule's ``also``), marked in the title
DONE = {
    "acknowledged": {"en": "[ACKNOWLEDGED]", "zh-CN": "【已确认】"},
    "closed": {"en": "[CLOSED]", "zh-CN": "【已结束】"},
}
TITLE = {"en": "[{level}] {site} {room}: {type}", "zh-CN": "【{level}】{site} {room}：{type}"}
BODY = {
    "en": (
        "{step}Site: {site}\nRoom: {room} {room_name} (grade {grade})\nMonitor: {monitor}, channel {channel}\n"
        "Level: {level} ({state})\nValue: {value} against limit {limit}\nStatus: {status}\n"
        "Started: {started}\nAcknowledge: {link}"
    ),
    "zh-CN": (
        "{step}站点：{site}\n房间：{room} {room_name}（{grade} 级）\n监测点：{monitor}，通道 {channel}\n"
        "级别：{level}（{state}）\n数值：{value}，限度 {limit}\n状态：{status}\n"
        "开始时间：{started}\n确认：{link}"
    ),
}


#: an alarm challenge's messages say, first in the title and the body, that they are a test
TEST = {
    "en": ("[TEST] ", "TEST — alarm challenge {n}, not a real excursion: do not act on the room.\n"),
    "zh-CN": ("【测试】", "测试——报警挑战 {n}，并非真实超标：请勿对房间采取措施。\n"),
}
SYSTEM_TITLE = {"en": "[{level}] {site}: SYSTEM {what}", "zh-CN": "【{level}】{site}：系统报警 {what}"}
SYSTEM_BODY = {
    "en": "{step}Site: {site}\nSystem alarm: {what}\nConcerns: {subject}\nDetail: {detail}\nSince: {started}\n"
    "Acknowledge: {link}",
    "zh-CN": "{step}站点：{site}\n系统报警：{what}\n对象：{subject}\n详情：{detail}\n开始时间：{started}\n确认：{link}",
}


@dataclass(frozen=True)
class Message:
    title: str
    body: str


def _number(value: float | None, kind: str) -> str:
    if value is None:
        return "—"
    return f"{value:g} {UNITS.get(kind, '')}".strip()


def compose(
    *,
    ex: Excursion,
    site: Site,
    room: Room,
    source: str,
    level: str,
    step: str,
    language: str,
    base_url: str,
    by: str | None = None,
) -> Message:
    """Title and body of one notification; the level is the one the step announces. ``source``:
    the monitor's code, or a viable result's sampling location; ``by``: who acknowledged (the
    ``acknowledged`` step of a rule that asks to hear of it)."""
    lang = language if language in TITLE else "zh-CN"
    step_key = "remind" if step.startswith("remind") else step
    started = ex.started_at.astimezone(ZoneInfo(site.timezone)).strftime("%Y-%m-%d %H:%M:%S %Z")
    link = f"{base_url}/excursions?id={ex.id}" if base_url else f"/excursions?id={ex.id}"
    site_name = site.name_en or site.name if lang == "en" else site.name
    fields = {
        "level": LEVEL[lang].get(level, level),
        "site": f"{site.code} {site_name}",
        "room": room.code,
        "room_name": room.name_en or room.name if lang == "en" else room.name,
        "grade": room.grade,
        "type": TYPE[lang].get(ex.type, ex.type),
        "monitor": source,
        "channel": ex.channel or "—",
        "state": STATE[lang].get(ex.state, ex.state),
        "value": _number(ex.peak, ex.kind),
        "limit": _number(ex.limit_value, ex.kind),
        "status": STATUS[lang].get(ex.status, ex.status),
        "started": started,
        "link": link,
        "step": f"{STEP[lang][step_key]}\n".format(by=by or "?") if step_key in STEP[lang] else "",
    }
    title, body = TITLE[lang].format(**fields), BODY[lang].format(**fields)
    if step_key in DONE:
        title = f"{DONE[step_key][lang]} {title}"
    if ex.challenge_id is not None:
        title, body = TEST[lang][0] + title, TEST[lang][1].format(n=ex.challenge_id) + body
    return Message(title, body)


def _local(at, site: Site) -> str:
    return at.astimezone(ZoneInfo(site.timezone)).strftime("%Y-%m-%d %H:%M:%S %Z")


def compose_system(
    *, alarm: SystemAlarm, site: Site, level: str, step: str, language: str, base_url: str
) -> Message:
    """Title and body of a system alarm's notification."""
    lang = language if language in TITLE else "zh-CN"
    step_key = "remind" if step.startswith("remind") else step
    words = KINDS.get(alarm.kind, (alarm.kind, alarm.kind))
    fields = {
        "level": LEVEL[lang].get(level, level),
        "site": f"{site.code} {site.name_en or site.name if lang == 'en' else site.name}",
        "what": words[0] if lang == "en" else words[1],
        "subject": alarm.subject,
        "detail": alarm.detail,
        "started": _local(alarm.started_at, site),
        "link": f"{base_url}/system-alarms?id={alarm.id}",
        "step": f"{STEP[lang][step_key]}\n" if step_key in STEP[lang] else "",
    }
    return Message(SYSTEM_TITLE[lang].format(**fields), SYSTEM_BODY[lang].format(**fields))
