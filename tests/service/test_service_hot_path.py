"""The polling path's costs: what `benchmarks/load.py` measured as the p99 of
`GET /v1/jobs/{id}` (docs/reliability.md, "Load").

- the heap is settled (imports done, survivors frozen) before the first request, so a
  full garbage collection does not walk torch's objects in the middle of requests;
- a polled job is one plain statement (`JobView`): its row once, not once per
  artifact (no outer join), and it reads what the ORM reads;
- no dependency hops to the thread pool (they read app state and parameters).
"""

from __future__ import annotations

import inspect
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from service_helpers import CONFIG, add_artifact, set_job, upload_dataset, upload_model
from sqlalchemy import event, select

from core.db import session_scope
from core.db.models import ApiKey, Job
from core.db.session import get_engine, read_scope
from core.repositories import JobRepository, JobView
from core.settings import Settings
from service.auth import hash_key
from service.routes import dashboard, health, jobs, keys, uploads, webhooks

ROOT = Path(__file__).resolve().parents[2]


def _run(code: str) -> str:
    """`code` in a fresh interpreter (the heap is settled once per process)."""
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_settle_imports_collects_and_freezes_once() -> None:
    out = _run(
        """
        import gc, sys
        from service import heap
        assert "metacluster.formats" not in sys.modules
        calls = []
        def boom():
            calls.append("boom")
            raise RuntimeError("warm-up failed")
        assert heap.settle(warmers=[boom, lambda: calls.append("ok")]) is True
        assert calls == ["boom", "ok"]  # a failing warmer is logged, the rest still run
        assert all(m in sys.modules for m in heap.WARM_MODULES)
        frozen, tracked = gc.get_freeze_count(), len(gc.get_objects())
        assert heap.settle() is False  # once per process
        print(frozen, tracked)
        """
    )
    frozen, tracked = map(int, out.split())
    # What a full collection still walks is a small fraction of what was imported.
    assert frozen > 100_000 and tracked < frozen // 10, (frozen, tracked)


def test_the_app_settles_the_heap_before_serving(tmp_path: Path) -> None:
    out = _run(
        f"""
        import gc
        from fastapi.testclient import TestClient
        from core.settings import Settings
        from service.app import create_app
        settings = Settings(data_dir={str(tmp_path / "data")!r})
        app = create_app(settings)
        assert gc.get_freeze_count() == 0
        with TestClient(app) as client:
            assert client.get("/healthz").status_code == 200
            print(gc.get_freeze_count())
        """
    )
    assert int(out) > 100_000


def _is_async(call: Any) -> bool:
    target = call if inspect.isfunction(call) or inspect.ismethod(call) else call.__call__
    return inspect.iscoroutinefunction(target) or inspect.isasyncgenfunction(target)


def test_no_dependency_hops_to_the_thread_pool() -> None:
    # FastAPI runs a plain `def` dependency in the thread pool: one hand-off (and a GIL
    # wait) per call. Dependencies read app state or parameters on the event loop; what
    # blocks (the database) happens in the route's thread or in an explicit hop.
    sync: set[str] = set()

    def walk(dependant: Any) -> None:
        for dep in dependant.dependencies:
            if dep.call is not None and not _is_async(dep.call):
                sync.add(getattr(dep.call, "__qualname__", repr(dep.call)))
            walk(dep)

    routers = [m.router for m in (dashboard, health, jobs, keys, uploads, webhooks)]
    routes = [r for router in routers for r in router.routes if isinstance(r, APIRoute)]
    for route in routes:
        walk(route.dependant)
    assert len(routes) > 20
    assert not sync, sorted(sync)


def _in_transaction_mode(dbapi_connection: Any) -> bool:
    """Whether the DBAPI connection opens transactions (psycopg: not autocommit; sqlite3:
    an isolation level other than None)."""
    if hasattr(dbapi_connection, "autocommit") and not hasattr(dbapi_connection, "total_changes"):
        return not dbapi_connection.autocommit
    return dbapi_connection.isolation_level is not None


@contextmanager
def _statements(settings: Settings) -> Iterator[list[tuple[str, bool]]]:
    """Every statement the database is sent meanwhile (whitespace collapsed), with
    whether its connection was in a transaction."""
    seen: list[tuple[str, bool]] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(
            (" ".join(statement.split()), _in_transaction_mode(conn.connection.dbapi_connection))
        )

    engine = get_engine(settings)
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def test_a_polled_job_is_one_statement_with_its_row_read_once(
    client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    """A succeeded job has eight artifacts: an outer join would carry its row (JSON
    config and metrics) eight times, 1.7x the CPU of reading it once; a second statement
    for the artifacts costs a round trip (docs/reliability.md, "Load")."""
    inputs = {"model_id": upload_model(client, auth), "dataset": upload_dataset(client, auth)}
    job_id = client.post("/v1/jobs", headers=auth, json={**inputs, "config": CONFIG}).json()["id"]
    names = [*sorted(f"plot-{i}.png" for i in range(6)), "model.mcz", "report.json"]
    for name in names:
        add_artifact(settings, job_id, name, name.encode())
    assert client.get(f"/v1/jobs/{job_id}", headers=auth).status_code == 200  # key cached

    with _statements(settings) as seen:
        r = client.get(f"/v1/jobs/{job_id}", headers=auth)
    selects = [q for q, _ in seen if q.upper().startswith("SELECT")]
    assert r.status_code == 200, r.text
    assert [a["name"] for a in r.json()["artifacts"]] == sorted(names)
    # one statement: the artifacts come as one array from a subquery, not joined
    (statement,) = selects
    assert " FROM jobs" in statement and " FROM artifacts" in statement, statement
    assert " JOIN " not in statement.upper(), statement


def _request_transaction(settings: Settings, fail: bool) -> tuple[list[str], bool]:
    """Drive `get_db` as FastAPI does: add a key, then finish the route (or raise in
    it). Returns the hooks that ran and whether the key row is in the database."""
    import asyncio

    from core.db import session_scope
    from core.db.models import ApiKey
    from core.db.transaction import after_commit, after_rollback
    from service.auth import create_api_key
    from service.deps import get_db

    ran: list[str] = []

    async def request() -> str:
        transaction = get_db(settings)
        session = await anext(transaction)
        row, _ = create_api_key(session, "in-request")
        after_commit(session, lambda: ran.append("after_commit"))
        after_rollback(session, lambda: ran.append("after_rollback"))
        if fail:
            try:
                await transaction.athrow(RuntimeError("the route failed"))
            except RuntimeError:
                return row.id
            raise AssertionError("the route's error was swallowed")
        try:
            await anext(transaction)
        except StopAsyncIteration:
            return row.id
        raise AssertionError("get_db yielded twice")

    key_id = asyncio.run(request())
    with session_scope(settings) as session:
        return ran, session.get(ApiKey, key_id) is not None


def test_the_request_transaction_commits_when_the_route_returns(settings: Settings) -> None:
    assert _request_transaction(settings, fail=False) == (["after_commit"], True)


def test_the_request_transaction_rolls_back_when_the_route_raises(settings: Settings) -> None:
    assert _request_transaction(settings, fail=True) == (["after_rollback"], False)


def test_the_polled_view_reads_what_the_orm_reads(
    client: TestClient, auth: dict[str, str], other_auth: dict[str, str], settings: Settings
) -> None:
    """`JobView` (one plain statement) and the ORM `Job` agree on every job, column types
    included (aware datetimes, JSON), and a page gives each job its own artifacts."""
    inputs = {"model_id": upload_model(client, auth), "dataset": upload_dataset(client, auth)}
    ids = [
        client.post(
            "/v1/jobs", headers=auth, json={**inputs, "config": {**CONFIG, "seed": i}}
        ).json()["id"]
        for i in range(3)
    ]
    when = datetime(2026, 12, 2, 17, 0, tzinfo=UTC)
    set_job(
        settings,
        ids[0],
        status="succeeded",
        stage="done",
        progress=1.0,
        metrics={"ratio": 41.5, "layers": [{"k": 8}]},
        started_at=when,
        finished_at=when,
        webhook_url="https://example.com/hook",
        webhook_events=["job.succeeded"],
    )
    set_job(settings, ids[1], status="failed", error={"code": "timeout", "message": "late"})
    for name in ("report.json", "model.mcz"):
        add_artifact(settings, ids[0], name, name.encode())
    add_artifact(settings, ids[2], "model.mcz", b"other bytes")

    with session_scope(settings) as s:
        repo = JobRepository(s)
        owner = s.get(Job, ids[0]).owner_id  # type: ignore[union-attr]
        views = {i: repo.view(owner, i) for i in ids}
        assert all(views[i] == JobView.of(s.get(Job, i)) for i in ids)  # type: ignore[arg-type]
        first = views[ids[0]]
        assert first is not None and first.finished_at == when
        assert first.metrics == {"ratio": 41.5, "layers": [{"k": 8}]}
        assert [a.name for a in first.artifacts] == ["model.mcz", "report.json"]
        page, cursor = repo.view_page(owner, after=None, limit=2)
        assert [v.id for v in page] == [ids[2], ids[1]] and cursor == ids[1]
        assert [[a.name for a in v.artifacts] for v in page] == [["model.mcz"], []]
        rest, end = repo.view_page(owner, after=cursor, limit=2)
        assert [v.id for v in rest] == [ids[0]] and rest[0] == first and end is None
        failed, _ = repo.view_page(owner, after=None, limit=5, status="failed")
        assert [v.error for v in failed] == [{"code": "timeout", "message": "late"}]
        bob_hash = hash_key(other_auth["Authorization"].removeprefix("Bearer "))
        bob = s.scalars(select(ApiKey.id).where(ApiKey.key_hash == bob_hash)).one()
        assert repo.view(bob, ids[0]) is None and repo.view_page(bob, after=None, limit=5)[0] == []


def test_polled_reads_run_outside_a_transaction_and_the_pool_gets_its_mode_back(
    client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    """GET /v1/jobs/{id} and the list read with no BEGIN/COMMIT (one statement needs none);
    the connection they used goes back to the pool opening transactions again, so a
    write that fails afterwards still rolls back whole."""
    inputs = {"model_id": upload_model(client, auth), "dataset": upload_dataset(client, auth)}
    job_id = client.post("/v1/jobs", headers=auth, json={**inputs, "config": CONFIG}).json()["id"]
    assert client.get(f"/v1/jobs/{job_id}", headers=auth).status_code == 200  # key cached

    with _statements(settings) as seen:
        assert client.get(f"/v1/jobs/{job_id}", headers=auth).status_code == 200
        assert client.get("/v1/jobs", headers=auth).json()["items"][0]["id"] == job_id
    modes = [(q.split()[0], in_transaction) for q, in_transaction in seen if " FROM jobs" in q]
    assert modes == [("SELECT", False), ("SELECT", False)], modes

    with pytest.raises(RuntimeError, match="rolled back"), session_scope(settings) as s:
        s.add(ApiKey(name="never", key_hash="0" * 64, prefix="never"))
        s.flush()
        assert _in_transaction_mode(s.connection().connection.dbapi_connection)
        raise RuntimeError("rolled back")
    with session_scope(settings) as s:
        assert s.scalars(select(ApiKey).where(ApiKey.name == "never")).first() is None


def test_a_read_scope_refuses_writes(settings: Settings) -> None:
    with pytest.raises(RuntimeError, match="read_scope is for reads"), read_scope(settings) as s:
        s.add(ApiKey(name="never", key_hash="1" * 64, prefix="never"))
        s.flush()
    with session_scope(settings) as s:
        assert s.scalars(select(ApiKey).where(ApiKey.key_hash == "1" * 64)).first() is None
