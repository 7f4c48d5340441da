"""Alembic environment: the URL comes from the service settings, metadata from core.db.

SQLite runs in batch mode, because it cannot ALTER most constraints in place.
"""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context
from sqlalchemy import Connection

from core.db import Base
from core.db.session import make_engine
from core.settings import get_settings

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def _url() -> str:
    x_url = context.get_x_argument(as_dictionary=True).get("url")
    return x_url or config.get_main_option("sqlalchemy.url") or get_settings().db_url


def _configure(connection: Connection | None, url: str) -> None:
    batch = url.startswith("sqlite")
    if connection is None:
        context.configure(
            url=url,
            literal_binds=True,
            target_metadata=target_metadata,
            render_as_batch=batch,
            compare_type=True,
        )
    else:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=batch,
            compare_type=True,
        )


def run_migrations_offline() -> None:
    _configure(None, _url())
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        # A caller (tests) handed us its own connection.
        _configure(connection, str(connection.engine.url))
        with context.begin_transaction():
            context.run_migrations()
        return
    url = _url()
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            _configure(conn, url)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
