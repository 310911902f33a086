"""Alembic environment: one history for SQLite and PostgreSQL (batch mode for SQLite)."""

from alembic import context

from tracker.core.db import get_engine
from tracker.models import metadata

config = context.config


def run_migrations_online() -> None:
    engine = get_engine(config.get_main_option("sqlalchemy.url"))
    with engine.connect() as connection:
        context.configure(
            connection=connection, target_metadata=metadata, render_as_batch=True, compare_type=True
        )
        with context.begin_transaction():
            context.run_migrations()


run_migrations_online()
