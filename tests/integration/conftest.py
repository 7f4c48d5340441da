"""Fixtures for integration tests: a fresh PostgreSQL database, a Redis db, real processes.

Every run gets its own database, Redis db number and queue names, so runs never share state.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from ._runner import Env
from ._stack import (
    Proc,
    child_env,
    free_port,
    make_efficient_kan_checkpoint,
    make_npz_dataset,
    start_api,
    start_worker,
    wait_healthy,
)

PG_HOST = os.environ.get("METACLUSTER_TEST_PG_HOST", "127.0.0.1")
REDIS_HOST = os.environ.get("METACLUSTER_TEST_REDIS_HOST", "127.0.0.1")

# A worker killed mid-job gets its message back after this many seconds (Redis
# visibility timeout); short so the kill test runs in seconds, longer than any step.
VISIBILITY_TIMEOUT_S = 4
SSE_HEARTBEAT_S = 1
LEASE_TTL_S = 2


def _pg_admin_url() -> str:
    import psycopg

    for user in ("postgres", "root"):
        url = f"postgresql://{user}@{PG_HOST}:5432/test"
        try:
            with psycopg.connect(url, connect_timeout=3):
                return url
        except psycopg.Error:
            continue
    pytest.fail(f"PostgreSQL on {PG_HOST}:5432 is not reachable as postgres or root (db 'test')")


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """SQLAlchemy URL of a fresh, randomly named PostgreSQL database (dropped afterwards)."""
    import psycopg

    admin = _pg_admin_url()
    name = f"mc_it_{secrets.token_hex(6)}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    user = admin.split("//", 1)[1].split("@", 1)[0]
    try:
        yield f"postgresql+psycopg://{user}@{PG_HOST}:5432/{name}"
    finally:
        from core.db.session import dispose_engines

        dispose_engines()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A Redis db number that is empty now; flushed afterwards."""
    import redis

    for db in secrets.SystemRandom().sample(range(1, 16), 15):
        client = redis.Redis(host=REDIS_HOST, port=6379, db=db)
        try:
            if client.dbsize() == 0:
                break
        except redis.RedisError as exc:
            pytest.fail(f"Redis on {REDIS_HOST}:6379 is not reachable: {exc}")
    else:
        pytest.fail("no empty Redis db number among 1..15")
    try:
        yield f"redis://{REDIS_HOST}:6379/{db}"
    finally:
        client.flushdb()
        client.close()


@pytest.fixture(scope="session")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A trained 8-16-3 efficient-kan checkpoint and its .npz classification data."""
    root = tmp_path_factory.mktemp("inputs")
    data = make_npz_dataset(root / "blobs.npz")
    ckpt = make_efficient_kan_checkpoint(root / "efficient_kan.pt", data, [8, 16, 3])
    return {"data": data, "model": ckpt}


@dataclass
class Stack:
    """API + workers on Redis and PostgreSQL, and an authenticated client."""

    env: dict[str, str]
    log_dir: Path
    queue: str
    api: Proc
    client: httpx.Client
    key: dict[str, str]
    workers: list[Proc] = field(default_factory=list)

    def start_worker(self, name: str | None = None) -> Proc:
        proc = start_worker(self.env, [self.queue], self.log_dir, name or f"w{len(self.workers)}")
        self.workers.append(proc)
        return proc

    def ensure_one_worker(self) -> Proc:
        alive = [w for w in self.workers if w.alive()]
        for extra in alive[1:]:
            extra.stop()
        return alive[0] if alive else self.start_worker()

    def procs(self) -> tuple[Proc, ...]:
        return (self.api, *self.workers)

    def settings(self) -> Any:
        from core.settings import Settings

        values = {
            k.removeprefix("METACLUSTER_").lower(): v
            for k, v in self.env.items()
            if k.startswith("METACLUSTER_")
        }
        return Settings(**values)


@pytest.fixture(scope="session")
def stack(pg_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    from core.settings import Settings
    from service.embedded import create_key, upgrade_database

    run = secrets.token_hex(4)
    data_dir = tmp_path_factory.mktemp("service-data")
    log_dir = tmp_path_factory.mktemp("logs")
    queue = f"cpu-{run}"
    env = child_env(
        {
            "METACLUSTER_DATA_DIR": str(data_dir),
            "METACLUSTER_DATABASE_URL": pg_url,
            "METACLUSTER_BROKER_URL": redis_url,
            "METACLUSTER_CPU_QUEUE": queue,
            "METACLUSTER_GPU_QUEUE": f"gpu-{run}",
            "METACLUSTER_DEFAULT_QUEUE": queue,
            "METACLUSTER_MAX_DELIVERIES": "3",
            "METACLUSTER_BROKER_VISIBILITY_TIMEOUT_S": str(VISIBILITY_TIMEOUT_S),
            # Event streams: a heartbeat every second instead of 15, so tests see some.
            "METACLUSTER_SSE_HEARTBEAT_S": str(SSE_HEARTBEAT_S),
            "METACLUSTER_EVENTS_POLL_S": "0.2",
            # The test's webhook receiver listens on 127.0.0.1; retries come quickly.
            "METACLUSTER_WEBHOOK_ALLOW_PRIVATE": "1",
            "METACLUSTER_WEBHOOK_RETRY_BASE_S": "0.5",
            "METACLUSTER_WEBHOOK_POLL_S": "0.2",
            # As in a deployment whose API has no GPU: jobs may ask for cuda (their GPU
            # queue has no worker here, so such a job waits as long as a test likes).
            "METACLUSTER_WORKER_DEVICES": "cpu,cuda",
            # A killed worker's lease runs out before its message comes back.
            "METACLUSTER_LEASE_TTL_S": str(LEASE_TTL_S),
        }
    )
    settings = Settings(data_dir=data_dir, database_url=pg_url, broker_url=redis_url)
    upgrade_database(settings)
    key = create_key("integration", settings=settings)
    port = free_port()
    api = start_api(env, port, log_dir)
    base = f"http://127.0.0.1:{port}"
    client = httpx.Client(
        base_url=base, headers={"Authorization": f"Bearer {key['key']}"}, timeout=30
    )
    st = Stack(env=env, log_dir=log_dir, queue=queue, api=api, client=client, key=key)
    try:
        wait_healthy(base, api)
        st.start_worker()
        yield st
    finally:
        client.close()
        for proc in st.workers:
            proc.stop()
        api.stop()


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runner-inputs")
    data = make_npz_dataset(root / "blobs.npz")
    return {
        "data": data,
        "model": make_efficient_kan_checkpoint(root / "m.pt", data, [8, 16, 3], steps=60),
    }


@pytest.fixture
def env(tmp_path: Path, files: dict[str, Path]) -> Iterator[Env]:
    """A runner environment: one key, a model and a dataset stored and recorded."""
    from core.db.models import DatasetRecord, ModelRecord, new_id
    from core.db.session import session_scope
    from core.settings import Settings
    from core.storage import LocalStorage
    from metacluster.formats import inspect_model
    from service.embedded import create_key

    settings = Settings(data_dir=tmp_path)
    key = create_key("runner", settings=settings)
    storage = LocalStorage(settings.storage_root)
    model_id, dataset_id = new_id("mdl"), new_id("ds")
    model_key, data_key = f"models/{model_id}/m.pt", f"datasets/{dataset_id}.npz"
    m_blob = storage.put(model_key, files["model"])
    d_blob = storage.put(data_key, files["data"])
    m_bytes, m_sha, d_bytes, d_sha = m_blob.bytes, m_blob.sha256, d_blob.bytes, d_blob.sha256
    info = inspect_model(files["model"])
    with session_scope(settings) as session:
        session.add(
            ModelRecord(
                id=model_id,
                owner_id=key["id"],
                filename="m.pt",
                family="bspline",
                format="efficient-kan",
                edges=176,
                params=0,
                bytes=m_bytes,
                sha256=m_sha,
                storage_key=model_key,
                info=info,
            )
        )
        session.add(
            DatasetRecord(
                id=dataset_id,
                owner_id=key["id"],
                filename="blobs.npz",
                task="classification",
                n_train=480,
                n_test=120,
                input_shape=[8],
                n_classes=3,
                n_outputs=3,
                sha256=d_sha,
                bytes=d_bytes,
                storage_key=data_key,
            )
        )
    yield Env(settings, storage, key["id"], model_id, dataset_id)
    from core.db.session import dispose_engines

    dispose_engines()


@pytest.fixture(scope="session")
def uploaded(stack: Stack, inputs: dict[str, Path]) -> dict[str, Any]:
    from ._stack import upload_dataset, upload_model

    model = upload_model(stack.client, inputs["model"])
    dataset = upload_dataset(stack.client, inputs["data"])
    return {"model": model, "dataset": dataset}
