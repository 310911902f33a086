"""The document's fixed text: its schema id, the definitions it carries, and the input sections.

The definitions travel inside every document (``definitions``) so that a reader of an archived
report knows what each figure meant then, without this code; ``docs/report.md`` says the same
at more length. Change them together with the code that computes the figures.
"""

from __future__ import annotations

#: the ``schema`` of the document, matching ``tracker/reports/schema/annual-report.schema.json``
#: (2: figures as at a cut-off, particle percentiles per room state, data gaps, undecided
#: exposures, superseded excursions, major incidents by the configured classes with QA's confirmation)
SCHEMA = "gmp.annual-report/2"

#: the report's e-signatures (``tracker.reports.signoff``): entity, and the scope of QA's
#: confirmation of the statement on major incidents (read back into the document)
REPORT_ENTITY = "annual_report"
INCIDENTS_SCOPE = "annual_report:major_incidents"

DEFINITIONS = {
    "period": "[start, end) in UTC; a calendar year is 1 January 00:00 to 1 January 00:00 in the site's "
    "time zone. Months are calendar months in that time zone. Rollup hours are UTC hours "
    "assigned to the month their start falls in.",
    "as_at": "Every figure is as at the cut-off: the period end, or for a period not yet over the start of "
    "the site's day it was built on (or the end of an --as-of day), so every build of that day, zh and en, "
    "agrees. Nothing dated at or after the cut-off counts (acknowledgements, link decisions, closures, "
    "signatures); statuses are reconstructed from dated records, and fields edited after the cut-off "
    "(a deviation's classification, category, root cause; an impact assessment) from the audit trail, "
    "so a report built again later gives the same figures. A supersession corrects the record and "
    "counts whenever it was made (listed in environment.superseded).",
    "monitored_period": "Per monitor: from the later of the period start and the hour of the monitor's "
    "first stored reading, to the cut-off (an inactive monitor: the end of the hour of its last reading).",
    "expected_readings": "floor(monitored period in seconds / the monitor's interval_s) × its channels "
    "(two for a particle counter with 0.5 and 5.0 µm).",
    "data_completeness": "Valid readings received ÷ expected readings, per monitor capped at 100 %; per room "
    "and grade the sums of valid and expected readings of its monitors. Invalid "
    "readings (sensor fault, calibration overdue, inhibited, outside the instrument "
    "range) are received but not valid.",
    "readings": "Channel values stored (valid + invalid), from the hourly rollups.",
    "monitored_hours": "Distinct monitor-hours with at least one reading.",
    "excursions": "Excursion episodes of the site that started in the period, superseded ones excluded; "
    "limit excursions are counted at the highest level they reached (alert or action). Data gaps "
    "(a monitor silent beyond its bound) are counted beside them in every grade, room and total row "
    "(data_gaps: count, by level, hours to the cut-off, longest).",
    "excursions_per_1000_h": "Limit excursions (alert + action) × 1000 ÷ monitored hours.",
    "excursion_duration": "ended_at − started_at, counted up to the cut-off: an episode still open then, "
    "or ending after it, counts to there.",
    "time_to_response": "From an excursion's start to QA's first recorded response to it before the "
    "cut-off: its acknowledgement, a decision on an exposure link, or a deviation raised from it; "
    "excursions without a response by the cut-off are counted apart.",
    "p95": "95th percentile of the valid readings of a month taken in one room state (at rest, in "
    "operation: the state whose limits judged them), read from the rollups' fixed-bin histogram "
    "(particles: quarter-decade bins) as the upper edge of the bin holding the percentile, capped at "
    "the highest of those readings: never below the true value, never above the series' maximum. "
    "Compared with the alert and action limits of the same state in force at the cut-off; null "
    "where the state has no limit (grade D in operation).",
    "time_within_limits": "Evaluated readings at neither alert nor action level ÷ evaluated readings "
    "(each reading stands for one sample interval); within action: not at action level. Evaluated = "
    "valid − not evaluated (no limit applied, e.g. a CNC room); null when none was evaluated.",
    "deviations": "Deviations of the site opened in the period. Time to close: opened_at to closed_at. "
    "Recurrent: an earlier deviation (within 365 days) has the same category and the same "
    "root cause (case and spacing ignored). Batches affected: linked for impact assessment before "
    "the cut-off; batches whose exposure to an excursion the deviation was raised from was still "
    "undecided at the cut-off are listed apart (batches_exposure_undecided), never counted as 0.",
    "major_incidents": "Deviations opened in the period whose class is one the site counts as a possible "
    "major incident (summary.major_incidents.classes: the facility file's [quality] major_incident_classes of "
    "the revision in force at the cut-off). Whether "
    "any was a major quality or safety incident caused mainly by technical reasons (Nanning measures "
    "Art. 16) is QA's finding: the statement is printed as such only when QA has confirmed it for this "
    "report with an e-signature that still matches the records; otherwise it is pending.",
    "capa": "CAPA actions created in the period, status at the cut-off: open, done (not yet checked), "
    "effective or not effective (effectiveness check, GMP Art. 253). Overdue: open after its due date "
    "(the action's own due date, not a calibration date).",
    "batches": "Started: batch records created in the period; released / rejected: QP release or rejection "
    "signatures in the period; open: started in the period without either by the cut-off.",
    "exposed_batches": "Batches with an exposure link to an excursion that started in the period, QA's "
    "decision as at the cut-off: confirmed (exposed), rejected (not exposed) or undecided (listed as "
    "such, and per deviation beside the batches affected).",
    "audit_digest": "Hash of the last audit event recorded before the cut-off and the number of events to "
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
