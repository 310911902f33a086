"""Named monotonic counters (duplicates absorbed, redeliveries) kept in the database."""

from __future__ import annotations

from sqlalchemy import text
from sqlmodel import Field, Session, SQLModel, select


class IngestCounter(SQLModel, table=True):
    __tablename__ = "ingest_counter"

    name: str = Field(primary_key=True, max_length=60)
    value: int = 0


_BUMP = text(
    "INSERT INTO ingest_counter (name, value) VALUES (:name, :by) "
    "ON CONFLICT (name) DO UPDATE SET value = ingest_counter.value + excluded.value"
)


def bump(session: Session, name: str, by: int = 1) -> None:
    """Add ``by`` in the caller's transaction; one atomic statement, so two ingest workers
    adding at once both count (a read-modify-write would lose one of them)."""
    if by == 0:
        return
    session.connection().execute(_BUMP, {"name": name, "by": by})


def read(session: Session, name: str) -> int:
    row = session.exec(select(IngestCounter.value).where(IngestCounter.name == name)).first()
    return int(row or 0)
