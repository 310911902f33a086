"""§1 Summary and declaration (``summary``): the statement on major incidents and the key figures.

Both are read from the assembled document rather than recomputed, so the summary cannot
disagree with the sections it summarises.

The statement on major quality or safety incidents "caused mainly by technical reasons" is an
exit trigger of the pilot (Nanning measures Art. 16, regulatory.md §10.2) and the report must make
it explicitly (§10.3 section 1). The system can only list the deviations of the classes counted as
possible major incidents (``tracker.quality.deviations.major_incident_classes``); whether any was
one is QA's finding. So the statement is printed as a finding only when a QA user has confirmed
it for this report with an e-signature (``tracker.reports.signoff.confirm_incidents``) over
:func:`incidents_content`; without one, or when the records behind it changed since, the report
says the statement is pending QA's confirmation (issue 14 item 7).
"""

from __future__ import annotations

import json

from tracker.core.errors import zh_word
from tracker.core.timeutil import iso_utc
from tracker.identity import signatures
from tracker.identity.signatures import Signature

NO_INCIDENT = "no major quality or safety incident caused mainly by technical reasons occurred in the period"
INCIDENTS = "the listed deviations were major quality or safety incidents caused mainly by technical reasons"


def summary_block(report: dict, confirmation: Signature | None = None) -> dict:
    """The document's ``summary``, read from the assembled sections (so it agrees with them)."""
    devs = report["deviations"]
    candidates = [c["number"] for c in devs["major_incident_class"]]
    confirmed = confirmation_block(report, confirmation)
    incidents = confirmed["incidents"] if confirmed and confirmed["status"] == "confirmed" else None
    zh, en = statement(
        devs["major_incident_classes"], candidates, incidents, outdated=bool(confirmed) and incidents is None
    )
    return {
        "major_incidents": {
            "classes": devs["major_incident_classes"],
            "count": len(candidates),
            "deviations": candidates,
            "status": "pending" if incidents is None else "confirmed",
            "incidents": incidents,
            "confirmation": confirmed,
            "statement_zh": zh,
            "statement_en": en,
        },
        "key_figures": key_figures(report, incidents),
    }


def incidents_content(report: dict, incidents: list[str]) -> dict:
    """What QA's confirmation covers: the report's site, period and cut-off, the classes counted,
    the deviations of those classes, and QA's finding (``incidents``: the deviations that were
    major incidents; empty: none occurred). A change to any of them voids the confirmation."""
    devs = report["deviations"]
    return {
        "site": report["site"]["code"],
        "period": report["period"]["label"],
        "cutoff": report["period"]["cutoff"],
        "classes": devs["major_incident_classes"],
        "candidates": [c["number"] for c in devs["major_incident_class"]],
        "incidents": sorted(incidents),
        "finding": INCIDENTS if incidents else NO_INCIDENT,
    }


def confirmation_block(report: dict, sig: Signature | None) -> dict | None:
    """QA's newest confirmation, ``confirmed`` while it still matches the report (seal and content),
    ``outdated`` otherwise; ``None`` when there is none."""
    if sig is None:
        return None
    incidents = json.loads(sig.content).get("incidents", [])
    check = signatures.check(sig, incidents_content(report, incidents))
    return {
        "status": "confirmed" if check.intact else "outdated",
        "incidents": incidents,
        "printed_name": sig.printed_name,
        "username": sig.username,
        "signed_at": iso_utc(sig.signed_at),
        "comment": sig.comment,
        "content_hash": sig.content_hash,
    }


def statement(
    classes: list[str], candidates: list[str], incidents: list[str] | None, *, outdated: bool = False
) -> tuple[str, str]:
    """The declaration on major quality or safety incidents (zh, en): QA's finding once confirmed
    (``incidents`` not ``None``), otherwise the deviations to assess and that it is pending."""
    n, listed_zh, listed_en = len(candidates), "、".join(candidates), ", ".join(candidates)
    of_zh = "分类为" + "、".join(f"“{zh_word(c)}”" for c in classes) + "的偏差"
    of_en = (
        f"deviation(s) classified {' or '.join(classes)} (the classes counted as possible major incidents)"
    )
    if incidents:
        k = len(incidents)
        return (
            f"经质量管理部门评估确认：报告期内发生主要由于技术原因导致的重大质量、安全事故 {k} 起（{'、'.join(incidents)}）。",
            f"QA confirms {k} major quality or safety incident(s) caused mainly by technical reasons in the period ({', '.join(incidents)}).",
        )
    if incidents is not None and candidates:
        return (
            f"报告期内记录{of_zh} {n} 起（{listed_zh}）；经质量管理部门评估确认，其中无主要由于技术原因导致的重大质量、安全事故。",
            f"{n} {of_en} were recorded in the period ({listed_en}); QA assessed them and confirms that none was a "
            "major quality or safety incident caused mainly by technical reasons.",
        )
    if incidents is not None:
        return (
            "经质量管理部门确认：报告期内未发生主要由于技术原因导致的重大质量、安全事故。",
            "Confirmed by QA: no major quality or safety incident caused mainly by technical reasons occurred in the period.",
        )
    zh, en = _pending(n, of_zh, of_en, listed_zh, listed_en)
    if outdated:
        zh += "（此前的确认所依据的记录已变化，须重新确认。）"
        en += " (An earlier confirmation no longer matches the records: QA confirms again.)"
    return zh, en


def _pending(n: int, of_zh: str, of_en: str, listed_zh: str, listed_en: str) -> tuple[str, str]:
    """The statement while QA has not confirmed it."""
    if n:
        return (
            f"报告期内记录{of_zh} {n} 起（{listed_zh}），是否构成主要由于技术原因导致的重大质量、安全事故，待质量管理部门评估确认。",
            f"{n} {of_en} were recorded in the period ({listed_en}); whether any was a major quality or safety incident "
            "caused mainly by technical reasons is pending QA's confirmation.",
        )
    return (
        f"报告期内未记录{of_zh}。关于报告期内未发生重大质量、安全事故的声明，待质量管理部门确认。",
        f"No {of_en} was recorded in the period. The statement that no major quality or safety incident occurred "
        "is pending QA's confirmation.",
    )


def key_figures(report: dict, incidents: list[str] | None = None) -> dict:
    """The figures of the summary table, also what next year's comparison shows for this one.
    ``major_incidents`` is ``None`` until QA has confirmed the statement."""
    total = report["environment"]["total"]
    gaps = total["excursions"]["data_gaps"]
    devs = report["deviations"]
    prod = report["production"]
    return {
        "completeness_pct": total["completeness_pct"],
        "readings": total["readings"],
        "excursions_alert": total["excursions"]["alert"],
        "excursions_action": total["excursions"]["action"],
        "excursions_per_1000_h": total["excursions"]["per_1000_h"],
        "data_gaps": gaps["count"],
        "data_gaps_action": gaps["action"],
        "data_gap_hours": gaps["hours"],
        "deviations": devs["total"],
        "deviations_major_incident_class": len(devs["major_incident_class"]),
        "major_incidents": None if incidents is None else len(incidents),
        "deviations_open_at_end": len(devs["open_at_end"]),
        "capa": report["capa"]["total"],
        "capa_overdue": report["capa"]["overdue"],
        "batches_started": prod["started"],
        "batches_released": prod["released"],
        "batches_rejected": prod["rejected"],
        "exposed_batches": report["traceability"]["exposed_batches"],
        "exposure_undecided_batches": report["traceability"]["undecided_batches"],
        "flagged_batches": report["traceability"]["flagged_batches"],
    }
