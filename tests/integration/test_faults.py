"""Faults on real processes: Redis and PostgreSQL restarted under load, the API restarted
while workers run. Nothing is lost: every job ends final with exactly one artifact set.

The servers restarted here are private to this module (a redis-server and a
PostgreSQL cluster of their own on free ports), so the shared ones stay untouched.
Redis runs without persistence, the harder case: a restart loses every queued
message, and the workers' sweep must re-send what was lost.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from ._stack import (
    FINAL,
    JOB_ARTIFACTS,
    Proc,
    child_env,
    create_job,
    events,
    free_port,
    get_job,
    poll,
    start_api,
    start_worker,
    upload_dataset,
    upload_model,
    wait_healthy,
    wait_until,
)
from .test_redis_postgres import QUICK

pytestmark = pytest.mark.integration


def _pg_bin(name: str) -> str:
    found = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    if found:
        return str(found[-1])
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"PostgreSQL's {name} is not installed (needed for the fault tests)")
    return path


class PrivatePostgres:
    """A throw-away PostgreSQL cluster (trust auth) on a free port, run as `postgres`."""

    def __init__(self) -> None:
        import pwd
        import tempfile

        # Not under pytest's tmp dir: that one is private to root, and PostgreSQL
        # refuses to run as root, so the cluster belongs to the `postgres` user.
        self.root = Path(tempfile.mkdtemp(prefix="mc-faults-pg-"))
        self.dir = self.root / "pgdata"
        self.port = free_port()
        self.log = self.root / "pg.log"
        as_user: list[str] = []
        if os.geteuid() == 0:
            pg = pwd.getpwnam("postgres")
            os.chown(self.root, pg.pw_uid, pg.pw_gid)
            as_user = ["runuser", "-u", "postgres", "--"]
        self.as_user = as_user
        subprocess.run(
            [*as_user, _pg_bin("initdb"), "-D", str(self.dir), "-A", "trust", "-U", "postgres"],
            check=True,
            capture_output=True,
        )
        self.start()

    def _ctl(self, *args: str) -> None:
        opts = f"-p {self.port} -h 127.0.0.1 -k {self.dir}"
        subprocess.run(
            [
                *self.as_user,
                _pg_bin("pg_ctl"),
                "-D",
                str(self.dir),
                "-l",
                str(self.log),
                "-o",
                opts,
                "-w",
                *args,
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )

    def start(self) -> None:
        self._ctl("start")

    def stop(self) -> None:
        self._ctl("stop", "-m", "fast")

    def remove(self) -> None:
        with contextlib.suppress(Exception):
            self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"


class PrivateRedis:
    """A redis-server without persistence on a free port."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.proc: Proc | None = None
        self.start()

    def start(self) -> None:
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        args += ["--save", "", "--appendonly", "no"]
        self.proc = Proc("redis", args, child_env({}), self.root)
        wait_until(self.ping, 20, "redis up", self.proc)

    def ping(self) -> bool:
        import redis

        return bool(redis.Redis(port=self.port, socket_connect_timeout=1).ping())

    def stop(self) -> None:
        assert self.proc is not None
        self.proc.stop()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


@dataclass
class FaultStack:
    pg: PrivatePostgres
    redis: PrivateRedis
    env: dict[str, str]
    log_dir: Path
    port: int
    api: Proc
    key: str
    workers: list[Proc]

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.base, headers={"Authorization": f"Bearer {self.key}"}, timeout=30
        )

    def procs(self) -> tuple[Proc, ...]:
        return (self.api, *self.workers)

    def restart_api(self) -> None:
        self.api.kill()
        self.api = start_api(self.env, self.port, self.log_dir)
        wait_healthy(self.base, self.api)


@pytest.fixture(scope="module")
def faults(
    tmp_path_factory: pytest.TempPathFactory, inputs: dict[str, Path]
) -> Iterator[FaultStack]:
    from core.settings import Settings
    from service.embedded import create_key, upgrade_database

    root = tmp_path_factory.mktemp("faults")
    pg = PrivatePostgres()
    red = PrivateRedis(root)
    run = secrets.token_hex(3)
    env = child_env(
        {
            "METACLUSTER_DATA_DIR": str(root / "data"),
            "METACLUSTER_DATABASE_URL": pg.url,
            "METACLUSTER_BROKER_URL": red.url,
            "METACLUSTER_CPU_QUEUE": f"cpu-{run}",
            "METACLUSTER_DEFAULT_QUEUE": f"cpu-{run}",
            "METACLUSTER_BROKER_VISIBILITY_TIMEOUT_S": "4",
            "METACLUSTER_LEASE_TTL_S": "2",
            # lost messages are re-sent within seconds (production: minutes)
            "METACLUSTER_REQUEUE_AFTER_S": "3",
            "METACLUSTER_REQUEUE_INTERVAL_S": "1",
        }
    )
    settings = Settings(data_dir=root / "data", database_url=pg.url, broker_url=red.url)
    upgrade_database(settings)
    key = create_key("faults", settings=settings)["key"]
    port = free_port()
    api = start_api(env, port, root)
    stack = FaultStack(pg, red, env, root, port, api, key, [])
    try:
        wait_healthy(stack.base, api)
        stack.workers.append(start_worker(env, [f"cpu-{run}"], root, "fw0"))
        yield stack
    finally:
        for proc in stack.procs():
            proc.stop()
        with contextlib.suppress(Exception):
            red.stop()
        pg.remove()
        from core.db.session import dispose_engines

        dispose_engines()


@pytest.fixture(scope="module")
def ids(faults: FaultStack, inputs: dict[str, Path]) -> dict[str, str]:
    with faults.client() as client:
        return {
            "model": upload_model(client, inputs["model"])["id"],
            "dataset": upload_dataset(client, inputs["data"])["id"],
        }


def _one_artifact_set(job: dict[str, Any]) -> None:
    assert job["status"] == "succeeded", job
    assert sorted(a["name"] for a in job["artifacts"]) == JOB_ARTIFACTS


def test_redis_restarted_while_jobs_are_queued_and_one_runs(
    faults: FaultStack, ids: dict[str, str]
) -> None:
    with faults.client() as client:
        jobs = [
            create_job(
                client,
                ids["model"],
                ids["dataset"],
                {**QUICK, "finetune_epochs": 40, "batch_size": 16},
            )
        ]
        jobs += [create_job(client, ids["model"], ids["dataset"], QUICK) for _ in range(3)]
        poll(client, jobs[0]["id"], lambda j: j["status"] == "running", 120, faults.procs())
        # Redis goes away with every queued message (no persistence) and comes back.
        faults.redis.stop()
        time.sleep(2)
        faults.redis.start()
        done = [
            poll(client, j["id"], lambda j: j["status"] in FINAL, 300, faults.procs()) for j in jobs
        ]
        for job in done:
            _one_artifact_set(job)
        # The queued messages really were lost, and the workers' sweep sent them again.
        requeued = [
            j["id"]
            for j in jobs
            if any((e.get("data") or {}).get("requeued") for e in events(client, j["id"]))
        ]
        assert requeued, "no message was lost: the restart did not test anything"


def test_postgres_restarted_while_the_api_serves(faults: FaultStack, ids: dict[str, str]) -> None:
    answers: list[tuple[int, str]] = []
    stop = threading.Event()

    def hammer() -> None:
        with faults.client() as client:
            while not stop.is_set():
                try:
                    r = client.get("/v1/jobs", params={"limit": 5})
                    answers.append((r.status_code, r.headers.get("content-type", "")))
                except httpx.HTTPError as exc:  # the API itself must never drop a request
                    answers.append((0, repr(exc)))
                time.sleep(0.02)

    thread = threading.Thread(target=hammer)
    thread.start()
    try:
        time.sleep(1)
        faults.pg.stop()
        time.sleep(3)
        with faults.client() as client:
            r = client.get("/readyz")
            assert r.status_code == 503 and r.json()["checks"]["database"].startswith("error")
        faults.pg.start()
        # The API recovers by itself: no restart, the pool reconnects.
        wait_until(lambda: answers[-1][0] == 200, 60, "the API to answer 200 again")
        time.sleep(1)
    finally:
        stop.set()
        thread.join()
    codes = {code for code, _ in answers}
    assert codes <= {200, 503}, answers
    assert 503 in codes, "the outage was not seen"
    assert all(ct.startswith("application/problem+json") for code, ct in answers if code == 503)
    with faults.client() as client:
        # ready again once a worker's heartbeat, missed during the outage, is written
        wait_until(lambda: client.get("/readyz").status_code == 200, 30, "/readyz 200", faults.api)
        job = create_job(client, ids["model"], ids["dataset"], QUICK)
        _one_artifact_set(
            poll(client, job["id"], lambda j: j["status"] in FINAL, 240, faults.procs())
        )


def test_api_restarted_while_workers_run(faults: FaultStack, ids: dict[str, str]) -> None:
    with faults.client() as client:
        job = create_job(
            client, ids["model"], ids["dataset"], {**QUICK, "finetune_epochs": 40, "batch_size": 16}
        )
        poll(client, job["id"], lambda j: j["status"] == "running", 120, faults.procs())
    faults.restart_api()  # SIGKILL, then a new process on the same port
    with faults.client() as client:
        done = poll(client, job["id"], lambda j: j["status"] in FINAL, 240, faults.procs())
        _one_artifact_set(done)
        assert done["deliveries"] == 1  # the worker was never disturbed
        assert get_job(client, job["id"])["status"] == "succeeded"
