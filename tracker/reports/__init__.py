"""Reports: the annual evaluation report (年度评估报告) as JSON, HTML and PDF.

``tracker.reports`` is a composition root like ``tracker.cli``: it reads every package's
records (batch records included) and turns them into one document.
"""
