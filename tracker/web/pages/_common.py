"""Small helpers shared by the page routers."""

from __future__ import annotations

from sqlmodel import Session, select

from tracker.facility import Site, get_site


def site_or_none(session: Session) -> Site | None:
    return session.exec(select(Site).order_by(Site.id)).first()


def the_site(session: Session) -> Site:
    return get_site(session)
