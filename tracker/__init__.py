"""The GMP environmental-monitoring and batch-record tracker, in layers (top may import below):

entry points ``cli``, ``web`` → ``reports`` → ``quality`` (deviations, batch records) and
``ingest`` (input paths) → ``monitoring`` (intake, excursions, rules) → ``facility`` →
``identity`` → ``core``; ``wire`` (the MQTT contract) imports nothing of the tracker.
``models`` gathers every table for the one migration history. The contracts are checked by
import-linter (``pyproject.toml``, ``docs/architecture.md``).
"""
