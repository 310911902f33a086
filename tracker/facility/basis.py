"""The evaluation basis: which limit set (code, version, file hash) and facility revision judged
a reading. One row per combination, made when a facility revision is loaded, so that every
stored reading names the rules it was judged by (DESIGN §4; GMP 2010 Art. 163)."""

from __future__ import annotations

from sqlalchemy import UniqueConstraint, text
from sqlmodel import Field, Session, SQLModel, select


class EvaluationBasis(SQLModel, table=True):
    """Which limit set (code, version, file hash) and facility revision judged a reading."""

    __tablename__ = "evaluation_basis"
    __table_args__ = (
        UniqueConstraint(
            "site_id", "limit_set_code", "limit_set_version", "limit_set_sha256", "facility_revision"
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    site_id: int = Field(foreign_key="site.id")
    limit_set_code: str = Field(max_length=40)
    limit_set_version: str = Field(max_length=20)
    limit_set_sha256: str = Field(max_length=64)
    facility_revision: int


def basis_id(session: Session, *, site_id: int, code: str, version: str, sha256: str, revision: int) -> int:
    """Id of the evaluation basis row, created on first use."""
    query = select(EvaluationBasis.id).where(
        EvaluationBasis.site_id == site_id,
        EvaluationBasis.limit_set_code == code,
        EvaluationBasis.limit_set_version == version,
        EvaluationBasis.limit_set_sha256 == sha256,
        EvaluationBasis.facility_revision == revision,
    )
    found = session.exec(query).first()
    if found is not None:
        return found
    # two ingest workers may meet a new facility revision at once: the second one's insert
    # is a no-op (not a unique violation that would fail its batch), then both read the row
    session.connection().execute(
        text(
            "INSERT INTO evaluation_basis (site_id, limit_set_code, limit_set_version, "
            "limit_set_sha256, facility_revision) VALUES (:site, :code, :version, :sha, :rev) "
            "ON CONFLICT DO NOTHING"
        ),
        {"site": site_id, "code": code, "version": version, "sha": sha256, "rev": revision},
    )
    return session.exec(query).one()
