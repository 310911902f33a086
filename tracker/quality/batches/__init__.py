"""Batch production records (批生产记录): steps, exposure links to excursions, review by
exception, the sign-off chain, the release gate and the integrity check."""
