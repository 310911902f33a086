"""The annual evaluation report's data: one JSON document per site and period (年度评估报告).

Sections follow regulatory.md §10.3 where this system holds the records; the others are listed
under ``inputs_required`` for QA to complete. The heavy figures (completeness, readings,
readings at alert/action, percentiles, time within limits) come from the hourly rollups with
numpy, never from raw readings, so a site-year takes seconds. Every figure is "as at the end of
the period": statuses are reconstructed from the dated fields (closed_at, done_at, signatures),
so the same period built again later gives the same document, which is what the e-signatures
of the report are checked against (``document.signed_content``).

Times are ISO 8601 UTC; months are calendar months in the site's time zone. The definitions of
every figure travel in the document (``definitions``) and in ``docs/report.md``.

Import from :mod:`tracker.reports.annual.document`, the public module (``build_annual_report``,
``validate_report``, ``signed_content``, ``report_schema``, ``year_period``, ``Period``, ``pct``).
The modules, in the order the data flows:

* ``loader`` — every database read, one ``load_*`` per part of the document, returning frozen
  records already narrowed to the period; nothing else here touches the session.
* ``period``, ``figures``, ``limits``, ``definitions`` — the period and its local months, how
  numbers are rounded and rooms ordered, the limits a monitor is shown against, the fixed text.
* one module per block of the document, each a set of plain functions over the records:
  ``facility`` (§3 and the limit changes), ``monitors`` (per-monitor rows and their sums),
  ``excursions`` (excursion figures of a room, grade or the site), ``environment`` (§6),
  ``particles`` (§6 monthly P95), ``conditions`` (§7), ``deviations`` (§8 and §9 CAPA),
  ``batches`` (§4 production and §12 traceability), ``integrity`` (§15), ``summary`` (§1).
* ``document`` — assembles the blocks in the order of the progress steps, adds the
  year-over-year comparison, and validates against ``tracker/reports/schema/``.

``pyproject.toml`` (import-linter) keeps that direction: document → blocks → loader → helpers.
"""
