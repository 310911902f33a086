"""User-facing words in zh-CN (default) and English.

A small catalogue for the CLI and terminal views; the web app will move these into
Babel catalogues when it arrives. Keys are English identifiers, never shown.
"""

from __future__ import annotations

import os

MESSAGES: dict[str, tuple[str, str]] = {
    # key: (zh-CN, en)
    "grade": ("洁净级别", "Grade"),
    "room": ("房间", "Room"),
    "monitor": ("监测点", "Monitor"),
    "kind": ("参数", "Parameter"),
    "channel": ("粒径", "Size"),
    "value": ("数值", "Value"),
    "limit": ("限度", "Limit"),
    "level": ("级别", "Level"),
    "state": ("状态", "State"),
    "started": ("开始", "Started"),
    "ended": ("结束", "Ended"),
    "peak": ("峰值", "Peak"),
    "readings": ("读数", "Readings"),
    "reason": ("原因", "Reason"),
    "detail": ("说明", "Detail"),
    "topic": ("主题", "Topic"),
    "received": ("接收时间", "Received"),
    "count": ("数量", "Count"),
    "latest": ("最新", "Latest"),
    "open_excursions": ("未关闭超标", "Open excursions"),
    "excursions": ("超标/偏离", "Excursions"),
    "quarantine": ("隔离消息", "Quarantined messages"),
    "stats": ("统计", "Statistics"),
    "duplicates": ("重复消息", "Duplicates"),
    "quarantined": ("已隔离", "Quarantined"),
    "stored_readings": ("已存读数", "Stored readings"),
    "ok": ("正常", "in limit"),
    "alert": ("警戒", "alert"),
    "action": ("纠偏", "action"),
    "not_evaluated": ("未评价", "not evaluated"),
    "no_data": ("无数据", "no data"),
    "at_rest": ("静态", "at rest"),
    "in_operation": ("动态", "in operation"),
    "open": ("进行中", "open"),
    "closed": ("已结束", "closed"),
    "superseded": ("已被取代", "superseded"),
    "particles": ("悬浮粒子", "particles"),
    "pressure": ("压差", "pressure differential"),
    "temperature": ("温度", "temperature"),
    "humidity": ("相对湿度", "relative humidity"),
    "bad_json": ("JSON 无效", "invalid JSON"),
    "schema": ("格式不符", "schema violation"),
    "unknown_monitor": ("未知监测点", "unknown monitor"),
    "room_mismatch": ("房间不符", "room mismatch"),
    "bad_unit": ("单位无效", "bad unit"),
    "out_of_range": ("数值不可能", "impossible value"),
    "future_timestamp": ("时间戳超前", "future timestamp"),
    "too_large": ("消息过大", "message too large"),
    "seq_conflict": ("序号冲突", "sequence conflict"),
    "demo_title": ("GMP 洁净室环境监测 — 演示", "GMP cleanroom monitoring — demo"),
    "demo_sim_time": ("模拟时间", "Simulated time"),
    "demo_quit": ("按 Ctrl-C 退出", "Press Ctrl-C to quit"),
    "facility_loaded": ("设施文件已载入", "Facility file loaded"),
    "facility_unchanged": ("设施文件无变化", "Facility file unchanged"),
    "revision": ("版本", "revision"),
    "room_state_set": ("房间状态已记录", "Room state recorded"),
    "db_upgraded": ("数据库已升级", "Database upgraded"),
    "reevaluated": ("已重新评价", "Re-evaluated"),
    "none": ("无", "none"),
    "type": ("类型", "Type"),
    "type_limit": ("超限", "limit"),
    "type_data_gap": ("数据中断", "data gap"),
    "type_recurrence": ("≥5.0µm 反复出现", "≥5.0 µm recurrence"),
    "type_adverse_trend": ("不良趋势", "adverse trend"),
    "type_recovery": ("自净失败", "recovery failure"),
    "calibration": ("校准", "Calibration"),
    "overdue": ("已过期", "overdue"),
    "due_soon": ("即将到期", "due soon"),
    "unknown": ("未登记", "not recorded"),
    "invalid": ("无效", "invalid"),
}


def current_lang() -> str:
    return os.environ.get("TRACKER_LANG", "zh-CN")


def t(key: str, lang: str | None = None) -> str:
    """The text for ``key`` in ``lang`` (default from TRACKER_LANG); the key if unknown."""
    pair = MESSAGES.get(key)
    if pair is None:
        return key
    return pair[1] if (lang or current_lang()) == "en" else pair[0]
