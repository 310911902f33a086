"""Environmental monitoring: intake of readings, evaluation, storage, rollups, excursions and
their re-evaluation, data-driven limit proposals and the read views over them.

The excursion rules beyond the single-reading limit test live in ``rules``."""
