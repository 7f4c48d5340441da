"""Engines, session factories and the transactional ``session_scope`` helper.

One engine per database URL per process; SQLite gets the pragmas that make it safe to share.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from core.settings import Settings, get_settings

_lock = threading.Lock()
_engines: dict[str, Engine] = {}
_autocommit_engines: dict[Engine, Engine] = {}


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    # FKs are off by default in SQLite; WAL lets the API read while a worker writes;
    # busy_timeout turns "database is locked" into a short wait.
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.close()


def make_engine(url: str) -> Engine:
    """A new engine for ``url`` (SQLite: directory created, pragmas set)."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[1] if "///" in url else ""
        if path and path != ":memory:":
            from pathlib import Path

            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 10})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True)


def get_engine(settings: Settings | None = None) -> Engine:
    """The process-wide engine for the settings' database URL."""
    url = (settings or get_settings()).db_url
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            engine = _engines[url] = make_engine(url)
        return engine


def dispose_engines() -> None:
    """Close every cached engine (tests, and worker processes after fork)."""
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()
        _autocommit_engines.clear()


def get_sessionmaker(settings: Settings | None = None) -> sessionmaker[Session]:
    """A session factory bound to the settings' engine."""
    return sessionmaker(bind=get_engine(settings), expire_on_commit=False)


def SessionLocal(settings: Settings | None = None) -> Session:
    """A new session on the current settings' database."""
    return get_sessionmaker(settings)()


def _autocommit(engine: Engine) -> Engine:
    """The engine's twin (same pool) whose connections run each statement on its own."""
    with _lock:
        twin = _autocommit_engines.get(engine)
        if twin is None:
            twin = _autocommit_engines[engine] = engine.execution_options(
                isolation_level="AUTOCOMMIT"
            )
        return twin


@contextmanager
def read_scope(settings: Settings | None = None) -> Iterator[Session]:
    """A session for a read that needs no transaction: no BEGIN and no COMMIT round trip.

    Each statement sees what was committed before it, as it would in a READ COMMITTED
    transaction; a read of one statement (the polled job) loses nothing. Writes raise.
    """
    session = _ReadSession(bind=_autocommit(get_engine(settings)), autoflush=False)
    try:
        yield session
    finally:
        session.close()


class _ReadSession(Session):
    """What `read_scope` hands out: a flush (a write) raises."""


@event.listens_for(_ReadSession, "before_flush")
def _refuse_writes(session: Session, *_args: Any) -> None:
    raise RuntimeError("read_scope is for reads: write in a session_scope")


@contextmanager
def session_scope(settings: Settings | None = None) -> Iterator[Session]:
    """A session whose transaction commits on success and rolls back on error."""
    session = SessionLocal(settings)
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
