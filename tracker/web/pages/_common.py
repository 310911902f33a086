"""Small helpers shared by the page routers."""

from __future__ import annotations

from tracker.web.inputs import instant as form_instant

__all__ = ["form_instant"]
