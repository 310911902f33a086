"""Named monotonic counters (duplicates absorbed, redeliveries) kept in the database."""

from __future__ import annotations

from sqlmodel import Field, Session, SQLModel, select


class IngestCounter(SQLModel, table=True):
    __tablename__ = "ingest_counter"

    name: str = Field(primary_key=True, max_length=60)
    value: int = 0


def bump(session: Session, name: str, by: int = 1) -> None:
    """Add ``by`` in the caller's transaction."""
    if by == 0:
        return
    row = session.get(IngestCounter, name)
    if row is None:
        row = IngestCounter(name=name, value=0)
    row.value += by
    session.add(row)


def read(session: Session, name: str) -> int:
    row = session.exec(select(IngestCounter.value).where(IngestCounter.name == name)).first()
    return int(row or 0)
