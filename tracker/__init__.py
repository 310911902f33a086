"""The application: facility registry, limits, excursions, storage, CLI.

The tracker core never imports ``sensors``, ``batch_records`` or ``simulators``;
only the composition roots (``tracker.cli``, ``tracker.pipeline``, the app factory) do.
"""
