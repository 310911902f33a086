"""Stateful excursion rules beside the per-reading limit test: data gaps, rolling particle
volume, recovery after operation, >= 5.0 um recurrence and adverse trends."""
