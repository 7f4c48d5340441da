"""Issue 18: `metacluster serve` supervises its worker.

`kill -9` of the worker child mid-job: `/readyz` answers 503 until the worker is back,
the dead worker is reaped (no zombie), a new one is started, the interrupted job is
taken over once its lease expires and succeeds exactly once, and a new job succeeds.
(Before: a zombie, `/readyz` ok, new jobs queued forever, the running one `running`.)
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ._stack import FINAL, JOB_ARTIFACTS, create_job, poll, upload_dataset, upload_model, wait_until
from .test_embedded import Embedded, get_running_deliveries
from .test_redis_postgres import LONG_FINETUNE, QUICK

pytestmark = pytest.mark.integration

RESTART_DELAY_S = 3  # long enough to see the 503 between the death and the restart


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[Embedded]:
    emb = Embedded(tmp_path / "data", tmp_path)
    emb.env["METACLUSTER_WORKER_RESTART_DELAY_S"] = str(RESTART_DELAY_S)
    try:
        yield emb
    finally:
        if emb.proc is not None:
            emb.proc.stop(grace_s=45)


def _celery_worker(serve_pid: int) -> int:
    """The pid of serve's Celery worker child (its other children inspect uploads).
    Every thread's children: a restarted worker is the supervisor thread's child."""
    children = Path(f"/proc/{serve_pid}/task").glob("*/children")
    pids = [
        pid
        for path in children
        for pid in map(int, path.read_text().split())
        if b"celery" in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]
    assert len(pids) == 1, pids
    return pids[0]


def _state(pid: int) -> str | None:
    """The process's state letter (Z: a zombie), None once it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return None


def test_a_killed_embedded_worker_is_restarted_and_its_job_finishes_once(
    embedded: Embedded, inputs: dict[str, Path]
) -> None:
    import os
    import signal

    key = embedded.create_key("supervised")
    proc = embedded.start()
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=embedded.base, headers=headers, timeout=30) as client:
        wait_until(lambda: client.get("/readyz").status_code == 200, 30, "readyz", proc)
        model = upload_model(client, inputs["model"])
        dataset = upload_dataset(client, inputs["data"])
        job = create_job(client, model["id"], dataset["id"], LONG_FINETUNE)
        poll(client, job["id"], lambda j: j["status"] == "running", 180, (proc,))

        worker = _celery_worker(proc.pid)
        os.kill(worker, signal.SIGKILL)
        seen: list[dict[str, Any]] = []

        def unready() -> bool:
            r = client.get("/readyz")
            seen.append(r.json())
            return r.status_code == 503

        wait_until(unready, RESTART_DELAY_S, "readyz to answer 503", proc)
        assert "killed by SIGKILL" in seen[-1]["checks"]["worker"], seen[-1]
        wait_until(lambda: _state(worker) is None, 10, "the dead worker to be reaped", proc)
        wait_until(lambda: client.get("/readyz").status_code == 200, 30, "a new worker", proc)
        assert _celery_worker(proc.pid) != worker
        fresh = create_job(client, model["id"], dataset["id"], QUICK)

        done = poll(client, job["id"], lambda j: j["status"] in FINAL, 300, (proc,))
        assert done["status"] == "succeeded", done
        assert sorted(a["name"] for a in done["artifacts"]) == JOB_ARTIFACTS
        assert get_running_deliveries(client, job["id"]) == [1, 2]
        fresh = poll(client, fresh["id"], lambda j: j["status"] in FINAL, 240, (proc,))
        assert fresh["status"] == "succeeded", fresh
        assert get_running_deliveries(client, fresh["id"]) == [1]
