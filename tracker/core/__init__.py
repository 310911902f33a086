"""The kernel every layer stands on: database and unit of work, settings, errors, time, audit
trail, counters, partitions, migrations, translation of CLI text and chart fonts.

Imports nothing else from ``tracker`` (checked by import-linter, ``pyproject.toml``).
"""
