"""Embedded mode: `metacluster serve` alone (SQLite, server-less broker) runs the whole flow.

Also: a job left running when `serve` died is resumed by the next `serve`, and shutdown is clean.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
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
    poll,
    upload_dataset,
    upload_model,
    wait_healthy,
    wait_until,
)
from .test_redis_postgres import LONG_FINETUNE, QUICK

pytestmark = pytest.mark.integration


def _metacluster() -> list[str]:
    script = Path(sys.executable).with_name("metacluster")
    return [str(script)] if script.exists() else [shutil.which("metacluster") or "metacluster"]


class Embedded:
    """One `metacluster serve` process on a data directory, restartable."""

    def __init__(self, data_dir: Path, log_dir: Path) -> None:
        self.env = child_env(
            {
                "METACLUSTER_DATA_DIR": str(data_dir),
                "METACLUSTER_SHUTDOWN_GRACE_S": "2",
                # a crashed serve's job is taken over a few seconds after the crash
                "METACLUSTER_LEASE_TTL_S": "3",
                "METACLUSTER_REQUEUE_INTERVAL_S": "2",
            }
        )
        self.log_dir = log_dir
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc: Proc | None = None

    def create_key(self, name: str) -> str:
        out = subprocess.run(
            [*_metacluster(), "keys", "create", "--name", name, "--json"],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr
        body = json.loads(out.stdout)
        assert set(body) == {"id", "name", "key"} and body["name"] == name
        return str(body["key"])

    def start(self, port: int | None = None) -> Proc:
        port = port or self.port
        args = [*_metacluster(), "serve", "--host", "127.0.0.1", "--port", str(port)]
        proc = Proc("serve", args, self.env, self.log_dir)
        wait_healthy(f"http://127.0.0.1:{port}", proc, timeout_s=90)
        if port == self.port:
            self.proc = proc
        return proc


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[Embedded]:
    emb = Embedded(tmp_path / "data", tmp_path)
    try:
        yield emb
    finally:
        if emb.proc is not None:
            emb.proc.stop(grace_s=45)


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


def test_embedded_serve_runs_the_whole_flow_on_sqlite(
    embedded: Embedded, inputs: dict[str, Path], tmp_path: Path
) -> None:
    from metacluster.artifact import load_artifact
    from metacluster.data import load_dataset
    from metacluster.training import evaluate

    key = embedded.create_key("embedded")
    proc = embedded.start()
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=embedded.base, headers=headers, timeout=30) as client:
        assert client.get("/readyz").status_code == 200
        model = upload_model(client, inputs["model"])
        dataset = upload_dataset(client, inputs["data"])
        job = create_job(client, model["id"], dataset["id"], QUICK)
        job = poll(client, job["id"], lambda j: j["status"] in FINAL, 240, (proc,))
        assert job["status"] == "succeeded", job

        art = next(a for a in job["artifacts"] if a["name"] == "model.mcz")
        r = client.get(f"/v1/jobs/{job['id']}/artifacts/model.mcz")
        assert r.status_code == 200
        assert (
            hashlib.sha256(r.content).hexdigest() == art["sha256"] == r.headers["x-checksum-sha256"]
        )
        path = tmp_path / "model.mcz"
        path.write_bytes(r.content)
        metric, value = evaluate(load_artifact(path), load_dataset(str(inputs["data"])))
        assert (metric, value) == (
            job["metrics"]["metric"],
            pytest.approx(job["metrics"]["after"], abs=1e-6),
        )
        # The job started promptly: the embedded broker is polled, not slept on.
        started = [
            e for e in events(client, job["id"]) if (e.get("data") or {}).get("status") == "running"
        ]
        assert started and job["started_at"] is not None

    # Everything lives under the data directory: SQLite, broker, storage.
    data_dir = Path(embedded.env["METACLUSTER_DATA_DIR"])
    assert (data_dir / "metacluster.db").is_file() and (data_dir / "broker.db").is_file()
    assert any((data_dir / "storage" / "jobs" / job["id"] / "artifacts").iterdir())

    # Clean shutdown: SIGTERM stops the API and its worker, exit status 0, even while a
    # client follows the event stream of a job that will not end by itself (a queued
    # job whose message went nowhere): the stream is cut after the grace period.
    from core import jobs as job_states
    from core.db.session import dispose_engines, session_scope
    from core.settings import Settings

    settings = Settings(data_dir=data_dir)
    with session_scope(settings) as session:
        parked, _ = job_states.create(
            session,
            owner_id=_owner(settings, job["id"]),
            model_id=model["id"],
            dataset=dataset["id"],
            config=job["config"],
            queue="nowhere",
            request_hash="x",
        )
        parked_id = parked.id
    dispose_engines()
    opened = threading.Event()

    def follow() -> None:
        with (
            contextlib.suppress(httpx.HTTPError),  # the server cuts the stream: expected
            httpx.Client(base_url=embedded.base, headers=headers, timeout=120) as c,
            c.stream(
                "GET", f"/v1/jobs/{parked_id}/events", headers={"Accept": "text/event-stream"}
            ) as stream,
        ):
            for _line in stream.iter_lines():
                opened.set()

    follower = threading.Thread(target=follow, daemon=True)
    follower.start()
    assert opened.wait(30), "the event stream did not open"
    workers = _children(proc.pid)
    assert workers, "serve started no worker process"
    t0 = time.monotonic()
    proc.popen.send_signal(signal.SIGTERM)
    assert proc.popen.wait(timeout=60) == 0, proc.log_tail()
    assert time.monotonic() - t0 < 30  # grace 2 s, then the stream was cut
    assert not any(_alive(pid) for pid in workers)


def _owner(settings: Any, job_id: str) -> str:
    from core.db.models import Job
    from core.db.session import session_scope

    with session_scope(settings) as session:
        row = session.get(Job, job_id)
        assert row is not None
        return row.owner_id


def test_embedded_job_interrupted_by_a_crash_resumes_on_restart(
    embedded: Embedded, inputs: dict[str, Path]
) -> None:
    key = embedded.create_key("crash")
    proc = embedded.start()
    headers = {"Authorization": f"Bearer {key}"}
    long_job: dict[str, Any] = LONG_FINETUNE
    with httpx.Client(base_url=embedded.base, headers=headers, timeout=30) as client:
        model = upload_model(client, inputs["model"])
        dataset = upload_dataset(client, inputs["data"])
        job = create_job(client, model["id"], dataset["id"], long_job)
        poll(client, job["id"], lambda j: j["stage"] == "finetune", 180, (proc,))
        # The whole process group at once, as a power cut or `kill -9` would.
        os.killpg(proc.pid, signal.SIGKILL)
        proc.popen.wait(timeout=10)

        proc = embedded.start()
        job = poll(client, job["id"], lambda j: j["status"] in FINAL, 240, (proc,))
        assert job["status"] == "succeeded", job
        assert sorted(a["name"] for a in job["artifacts"]) == JOB_ARTIFACTS
        evts = events(client, job["id"])
        assert [e["data"]["delivery"] for e in evts if (e.get("data") or {}).get("delivery")] == [
            1,
            2,
        ]
        assert any((e.get("data") or {}).get("resumed_stage") == "meta" for e in evts)


def test_two_serves_never_run_one_job_and_a_killed_serve_takes_its_worker(
    embedded: Embedded, inputs: dict[str, Path]
) -> None:
    """Issue 9, item 6: a second `serve` on the same data directory while a job runs,
    then `kill -9` of the first serve's process alone (not its group)."""
    key = embedded.create_key("owners")
    first = embedded.start()
    headers = {"Authorization": f"Bearer {key}"}
    second: Proc | None = None
    with httpx.Client(base_url=embedded.base, headers=headers, timeout=30) as client:
        model = upload_model(client, inputs["model"])
        dataset = upload_dataset(client, inputs["data"])
        # fine-tuning long enough (~30 s here) to start a second serve and kill the first
        job = create_job(
            client, model["id"], dataset["id"], {**LONG_FINETUNE, "finetune_epochs": 400}
        )
        poll(client, job["id"], lambda j: j["status"] == "running", 120, (first,))
        try:
            # The second serve re-sends the running job as a takeover: its worker waits
            # for the lease, which the first worker keeps renewing, and gives up.
            second_port = free_port()
            second = embedded.start(second_port)
            wait_until(
                lambda: "leased by a live owner" in second.log_path.read_text(),
                60,
                "the takeover to wait",
                second,
            )
            poll(client, job["id"], lambda j: j["stage"] == "finetune", 240, (first,))
            time.sleep(5)  # past the takeover's wait (lease 3 s): it must have given up
            assert get_running_deliveries(client, job["id"]) == [1]

            # kill -9 the first serve alone: its worker must die with it.
            workers = _children(first.pid)
            assert workers
            first.popen.send_signal(signal.SIGKILL)
            first.popen.wait(timeout=10)
            wait_until(lambda: not any(_alive(pid) for pid in workers), 15, "orphan worker gone")

            # The second serve's worker takes the job over once the lease expired.
            client.base_url = httpx.URL(f"http://127.0.0.1:{second_port}")
            job = poll(client, job["id"], lambda j: j["status"] in FINAL, 300, (second,))
            assert job["status"] == "succeeded", job
            assert get_running_deliveries(client, job["id"]) == [1, 2]
            assert sorted(a["name"] for a in job["artifacts"]) == JOB_ARTIFACTS
        finally:
            if second is not None:
                second.stop(grace_s=45)


def get_running_deliveries(client: httpx.Client, job_id: str) -> list[int]:
    return [
        int(e["data"]["delivery"])
        for e in events(client, job_id)
        if (e.get("data") or {}).get("status") == "running"
    ]
