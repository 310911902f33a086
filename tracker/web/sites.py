"""The site the web app works on, for the pages and the JSON API alike (the API does not import
page modules)."""

from __future__ import annotations

from sqlmodel import Session, select

from tracker.facility.models import Site, get_site


def site_or_none(session: Session) -> Site | None:
    """The first site, or ``None`` before any facility file is loaded."""
    return session.exec(select(Site).order_by(Site.id)).first()


def the_site(session: Session) -> Site:
    return get_site(session)
