"""Trending (issue 21): control charts and run rules, change points, and a breach forecast.

``charts``, ``runrules``, ``changepoints`` and ``forecast`` are pure (numpy/scipy in, plain
values out); ``store`` persists change points; ``rule`` raises ``predicted`` warnings in
ingest; ``series`` loads a monitor's readings for them; ``review`` assembles the periodic
limits review. Methods, assumptions and citations: docs/trending.md.
"""
