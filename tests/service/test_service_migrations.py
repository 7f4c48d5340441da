"""Alembic on empty SQLite and PostgreSQL: upgrade head, no drift, downgrade base, upgrade again."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from service_helpers import alembic_config
from sqlalchemy import inspect

from core.db import Base, make_engine

TABLES = {
    "api_keys",
    "models",
    "datasets",
    "jobs",
    "job_events",
    "artifacts",
    "webhook_deliveries",
    "worker_heartbeats",
}


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_db(request: pytest.FixtureRequest, tmp_path: Path, pg_database: Callable[[], str]) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/empty.db"
    return pg_database()


def _drift(url: str) -> list[object]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(
                conn, opts={"compare_type": True, "render_as_batch": url.startswith("sqlite")}
            )
            return list(compare_metadata(ctx, Base.metadata))
    finally:
        engine.dispose()


def _tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_upgrade_downgrade_and_no_drift(empty_db: str) -> None:
    cfg = alembic_config(empty_db)
    command.upgrade(cfg, "head")
    assert _tables(empty_db) == TABLES | {"alembic_version"}
    assert _drift(empty_db) == []

    command.downgrade(cfg, "base")
    assert _tables(empty_db) == {"alembic_version"}

    command.upgrade(cfg, "head")
    assert _drift(empty_db) == []


def test_constraint_names_follow_the_convention(empty_db: str) -> None:
    command.upgrade(alembic_config(empty_db), "head")
    engine = make_engine(empty_db)
    try:
        insp = inspect(engine)
        fks = {fk["name"] for fk in insp.get_foreign_keys("jobs")}
        uniques = {u["name"] for u in insp.get_unique_constraints("jobs")}
    finally:
        engine.dispose()
    assert fks == {"fk_jobs_owner_id_api_keys", "fk_jobs_model_id_models"}
    assert "uq_jobs_owner_id_idempotency_key" in uniques


def test_single_head() -> None:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    assert len(script.get_heads()) == 1
