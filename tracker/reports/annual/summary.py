"""§1 Summary and declaration (``summary``): the statement on major incidents and the key figures.

Both are read from the assembled document rather than recomputed, so the summary cannot
disagree with the sections it summarises.
"""

from __future__ import annotations


def summary_block(report: dict) -> dict:
    """The document's ``summary``, read from the assembled sections (so it agrees with them)."""
    critical = report["deviations"]["critical"]
    zh, en = statement(critical)
    return {
        "major_incidents": {
            "count": len(critical),
            "deviations": [c["number"] for c in critical],
            "statement_zh": zh,
            "statement_en": en,
        },
        "key_figures": key_figures(report),
    }


def statement(critical: list[dict]) -> tuple[str, str]:
    """The declaration on major quality or safety incidents (zh, en): the system can only
    list critical deviations; whether one was a major incident is QA's call (Nanning Art. 16)."""
    numbers = "、".join(c["number"] for c in critical)
    if critical:
        zh = (
            f"报告期内记录关键偏差 {len(critical)} 起（{numbers}），须由质量管理部门评估是否构成"
            "主要由于技术原因发生的重大质量、安全事故。"
        )
        listed = ", ".join(c["number"] for c in critical)
        en = (
            f"{len(critical)} critical deviation(s) were recorded in the period ({listed}); QA must assess "
            "whether any was a major quality or safety incident caused mainly by technical reasons."
        )
    else:
        zh = "报告期内未记录关键偏差，系统中无重大质量或安全事故的记录。"
        en = (
            "No critical deviation was recorded in the period: the system holds no record of a major quality "
            "or safety incident."
        )
    return zh, en


def key_figures(report: dict) -> dict:
    """The figures of the summary table, also what next year's comparison shows for this one."""
    total = report["environment"]["total"]
    devs = report["deviations"]
    prod = report["production"]
    return {
        "completeness_pct": total["completeness_pct"],
        "readings": total["readings"],
        "excursions_alert": total["excursions"]["alert"],
        "excursions_action": total["excursions"]["action"],
        "excursions_per_1000_h": total["excursions"]["per_1000_h"],
        "deviations": devs["total"],
        "deviations_critical": len(devs["critical"]),
        "deviations_open_at_end": len(devs["open_at_end"]),
        "capa": report["capa"]["total"],
        "capa_overdue": report["capa"]["overdue"],
        "batches_started": prod["started"],
        "batches_released": prod["released"],
        "batches_rejected": prod["rejected"],
        "exposed_batches": report["traceability"]["exposed_batches"],
        "flagged_batches": report["traceability"]["flagged_batches"],
    }
