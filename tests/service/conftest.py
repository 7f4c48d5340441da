"""Service test fixtures: SQLite and a fresh PostgreSQL database, migrated with Alembic.

Every test gets its own data dir and API keys, so tests never see each other's rows.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from alembic import command
from fastapi.testclient import TestClient
from service_builders import make_key
from service_helpers import RecordingEnqueuer, alembic_config

from core.db import dispose_engines
from core.settings import Settings
from service.app import create_app
from service.deps import get_enqueuer

PG_HOST = os.environ.get("METACLUSTER_TEST_PG_HOST", "127.0.0.1")


def _pg_admin_url() -> str | None:
    import psycopg

    for user in ("postgres", "root"):
        url = f"postgresql://{user}@{PG_HOST}:5432/test"
        try:
            with psycopg.connect(url, connect_timeout=3):
                return url
        except psycopg.Error:
            continue
    return None


@pytest.fixture(scope="session")
def pg_database() -> Iterator[Callable[[], str]]:
    """A factory of fresh, randomly named PostgreSQL databases, all dropped at the end."""
    import psycopg

    admin = _pg_admin_url()
    created: list[str] = []

    def make() -> str:
        if admin is None:
            # make test needs a real PostgreSQL (.ci/run starts one): fail, never skip.
            pytest.fail(f"PostgreSQL on {PG_HOST}:5432 is not reachable as postgres or root")
        name = f"mc_svc_{secrets.token_hex(6)}"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        created.append(name)
        return (
            admin.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + f"/{name}"
        )

    yield make
    dispose_engines()
    if admin is not None:
        with psycopg.connect(admin, autocommit=True) as conn:
            for name in created:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def db_url(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    pg_database: Callable[[], str],
) -> str:
    """One migrated database per backend for the whole session (``alembic upgrade head``)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('sqlite')}/metacluster.db"
    else:
        url = pg_database()
    command.upgrade(alembic_config(url), "head")
    return url


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        database_url=db_url,
        broker_url=f"sqla+sqlite:///{tmp_path}/broker.db",
        max_upload_bytes=512 * 1024,
    )


@pytest.fixture
def enqueuer() -> RecordingEnqueuer:
    return RecordingEnqueuer()


@pytest.fixture
def client(settings: Settings, enqueuer: RecordingEnqueuer) -> Iterator[TestClient]:
    app = create_app(settings)
    app.dependency_overrides[get_enqueuer] = lambda: enqueuer
    with TestClient(app) as c:
        yield c


@pytest.fixture
def auth(settings: Settings) -> dict[str, str]:
    return make_key(settings, "alice")


@pytest.fixture
def other_auth(settings: Settings) -> dict[str, str]:
    return make_key(settings, "bob")


@pytest.fixture(params=["sqlite-broker", "redis"])
def broker_settings(request: pytest.FixtureRequest, settings: Settings) -> Iterator[Settings]:
    """The settings on a real broker (embedded SQLite, then Redis) with a queue of their own."""
    queue = f"cpu-test-{secrets.token_hex(4)}"
    if request.param == "redis":
        import redis

        try:
            redis.Redis(host="127.0.0.1", port=6379, socket_connect_timeout=2).ping()
        except redis.RedisError:
            # make test needs a real Redis (.ci/run starts one); never pass silently without it.
            pytest.fail("Redis on 127.0.0.1:6379 is not reachable")
        url = "redis://127.0.0.1:6379/0"
    else:
        url = settings.broker
    yield settings.model_copy(
        update={"broker_url": url, "cpu_queue": queue, "default_queue": queue}
    )
    if request.param == "redis":
        redis.Redis(host="127.0.0.1", port=6379).delete(queue)
