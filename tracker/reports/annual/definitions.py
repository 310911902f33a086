"""The document's fixed text: its schema id, the definitions it carries, and the input sections.

The definitions travel inside every document (``definitions``) so that a reader of an archived
report knows what each figure meant then, without this code; ``docs/report.md`` says the same
at more length. Change them together with the code that computes the figures.
"""

from __future__ import annotations

#: the ``schema`` of the document, matching ``tracker/reports/schema/annual-report.schema.json``
SCHEMA = "gmp.annual-report/1"

DEFINITIONS = {
    "period": "[start, end) in UTC; a calendar year is 1 January 00:00 to 1 January 00:00 in the site's "
    "time zone. Months are calendar months in that time zone. Rollup hours are UTC hours "
    "assigned to the month their start falls in.",
    "as_at": "Statuses are as at the end of the period, reconstructed from dated records (closure, "
    "CAPA completion and effectiveness check, release/rejection signatures), so a report built "
    "again later gives the same figures.",
    "monitored_period": "Per monitor: from the later of the period start and the hour of the monitor's "
    "first stored reading, to the earlier of the period end and the report time "
    "(an inactive monitor: the end of the hour of its last reading).",
    "expected_readings": "floor(monitored period in seconds / the monitor's interval_s) × its channels "
    "(two for a particle counter with 0.5 and 5.0 µm).",
    "data_completeness": "Valid readings received ÷ expected readings, per monitor capped at 100 %; per room "
    "and grade the sums of valid and expected readings of its monitors. Invalid "
    "readings (sensor fault, calibration overdue, inhibited, outside the instrument "
    "range) are received but not valid.",
    "readings": "Channel values stored (valid + invalid), from the hourly rollups.",
    "monitored_hours": "Distinct monitor-hours with at least one reading.",
    "excursions": "Excursion episodes of the site that started in the period, superseded ones excluded; "
    "limit excursions are counted at the highest level they reached (alert or action).",
    "excursions_per_1000_h": "Limit excursions (alert + action) × 1000 ÷ monitored hours.",
    "excursion_duration": "ended_at − started_at, counted up to the end of the period (or the report "
    "time if earlier): an episode still open then, or ending after it, counts to there.",
    "time_to_response": "From an excursion's start to QA's first recorded response to it: its "
    "acknowledgement, a decision on an exposure link, or a deviation raised from it; excursions "
    "without a response are counted apart.",
    "p95": "95th percentile of the valid readings of a month, read from the rollups' fixed-bin histogram "
    "(particles: quarter-decade bins): the upper edge of the bin holding the percentile, so it "
    "never understates the true value by more than one bin.",
    "time_within_limits": "Valid readings at neither alert nor action level ÷ valid readings (each "
    "reading stands for one sample interval); within action: not at action level.",
    "deviations": "Deviations of the site opened in the period. Time to close: opened_at to closed_at. "
    "Recurrent: an earlier deviation (within 365 days) has the same category and the same "
    "root cause (case and spacing ignored).",
    "major_incidents": "Critical deviations opened in the period; whether one was a major quality or "
    "safety incident caused mainly by technical reasons (Nanning measures Art. 16) is "
    "QA's assessment, stated in the summary.",
    "capa": "CAPA actions created in the period, status at the period end: open, done (not yet checked), "
    "effective or not effective (effectiveness check, GMP Art. 253). Overdue: open after its due date.",
    "batches": "Started: batch records created in the period; released / rejected: QP release or rejection "
    "signatures in the period; open: started in the period without either by its end.",
    "exposed_batches": "Batches with a confirmed exposure link to an excursion that started in the period.",
    "audit_digest": "Hash of the last audit event recorded before the period end and the number of events to "
    "it; publishing it lets anyone check later that the trail behind the report is unchanged.",
}

#: regulatory.md §10.3 sections the tracker holds no records for: QA completes them
INPUT_SECTIONS = (
    (2, "organisation", "组织机构与人员", "Organisation and personnel"),
    (5, "qc_results", "放行与质量控制结果", "Release and QC results"),
    (10, "change_control", "变更控制与注册变更", "Change control and registration changes"),
    (11, "materials", "物料与供应商", "Materials and suppliers"),
    (13, "complaints", "投诉、不良反应、召回与退货", "Complaints, adverse reactions, recalls, returns"),
    (14, "stability", "稳定性与保存时限", "Stability and hold times"),
    (16, "inspections", "自检与外部检查", "Self-inspection and external inspections"),
    (17, "conclusions", "结论与计划", "Conclusions and plan"),
)


def inputs_required() -> list[dict]:
    """The document's ``inputs_required``: the sections QA writes by hand, in section order."""
    return [{"section": n, "id": key, "title_zh": zh, "title_en": en} for n, key, zh, en in INPUT_SECTIONS]
