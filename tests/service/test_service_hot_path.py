"""The polling path's costs: what `benchmarks/load.py` measured as the p99 of
`GET /v1/jobs/{id}` (docs/reliability.md, "Load").

- the heap is settled (imports done, survivors frozen) before the first request, so a
  full garbage collection does not walk torch's objects in the middle of requests;
- a job and its artifacts are one SELECT, not two;
- no dependency hops to the thread pool (they read app state and parameters).
"""

from __future__ import annotations

import inspect
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from service_helpers import CONFIG, add_artifact, upload_dataset, upload_model
from sqlalchemy import event

from core.db.session import get_engine
from core.settings import Settings
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


def test_a_job_and_its_artifacts_are_one_select(
    client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    inputs = {"model_id": upload_model(client, auth), "dataset": upload_dataset(client, auth)}
    job_id = client.post("/v1/jobs", headers=auth, json={**inputs, "config": CONFIG}).json()["id"]
    add_artifact(settings, job_id, "model.mcz", b"abc")
    add_artifact(settings, job_id, "report.json", b"{}")
    assert client.get(f"/v1/jobs/{job_id}", headers=auth).status_code == 200  # key cached

    selects: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            selects.append(statement)

    engine = get_engine(settings)
    event.listen(engine, "before_cursor_execute", count)
    try:
        r = client.get(f"/v1/jobs/{job_id}", headers=auth)
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert r.status_code == 200, r.text
    assert [a["name"] for a in r.json()["artifacts"]] == ["model.mcz", "report.json"]
    assert len(selects) == 1, selects
    assert "artifacts" in selects[0] and "jobs" in selects[0]


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
