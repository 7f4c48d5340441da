"""Service test fixtures: SQLite and a fresh PostgreSQL database, migrated with Alembic.

Every test gets its own data dir and API keys, so tests never see each other's rows.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.config import Config
from fastapi.testclient import TestClient

from service.app import create_app
from service.db import dispose_engines
from service.deps import get_enqueuer
from service.settings import Settings

from .builders import make_key

ROOT = Path(__file__).resolve().parents[2]
PG_HOST = os.environ.get("METACLUSTER_TEST_PG_HOST", "127.0.0.1")


def alembic_config(url: str) -> Config:
    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(ROOT / "migrations"))
    # configparser interpolates %; URLs may contain escaped characters.
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.attributes["configure_logger"] = False
    return cfg


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
            pytest.skip(f"PostgreSQL on {PG_HOST}:5432 is not reachable")
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


class RecordingEnqueuer:
    """Stands in for Celery in API tests; records (job_id, queue) and can fail on demand."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.hook: Callable[[str, str], None] | None = None

    def __call__(self, job_id: str, queue: str) -> None:
        if self.hook is not None:
            self.hook(job_id, queue)
        self.calls.append((job_id, queue))


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


def assert_problem(response: Any, status: int, code: str) -> dict[str, Any]:
    """The response is an RFC 9457 problem with this status and stable code."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["code"] == code, body
    assert body["title"] and body["detail"]
    return body
