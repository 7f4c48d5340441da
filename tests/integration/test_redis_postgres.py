"""End to end on real Redis, PostgreSQL, uvicorn and `celery worker` processes.

Upload, compress, poll, download and verify; cancel; SIGKILL a worker mid-job; delivery limit.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update

from ._stack import FINAL, JOB_ARTIFACTS, create_job, events, get_job, poll
from .conftest import Stack

pytestmark = pytest.mark.integration

# Seconds, not minutes: a tiny model, few steps. Stage names follow metacluster.compress.
# The method is pinned: these tests follow the meta-learner's stages (meta, kmeans,
# finetune) whatever the engine's default method is.
QUICK: dict[str, Any] = {
    "method": "metacluster",
    "k": 4,
    "d_emb": 2,
    "hidden": 16,
    "regress_steps": 60,
    "meta_epochs": 3,
    "finetune_epochs": 3,
    "soft_min_steps": 0,
    "kmeans_restarts": 1,
    "kmeans_iters": 10,
    "device": "cpu",
    "seed": 0,
}
# A job that runs long enough to be seen running (cancel) and stays in its last
# stage long enough to be killed there (resume).
LONG_META = {**QUICK, "meta_epochs": 10_000, "batch_size": 16}
LONG_FINETUNE = {**QUICK, "finetune_epochs": 20, "batch_size": 16}


def _db_job(stack: Stack, job_id: str) -> Any:
    from core.db.models import Job
    from core.db.session import session_scope

    with session_scope(stack.settings()) as session:
        job = session.get(Job, job_id)
        assert job is not None
        session.expunge(job)
        return job


def _artifact_names(stack: Stack, job_id: str) -> list[str]:
    from core.db.models import Artifact
    from core.db.session import session_scope

    with session_scope(stack.settings()) as session:
        return sorted(session.scalars(select(Artifact.name).where(Artifact.job_id == job_id)))


def _download_and_check(stack: Stack, job: dict[str, Any], tmp_path: Path) -> Path:
    by_name = {a["name"]: a for a in job["artifacts"]}
    assert sorted(by_name) == JOB_ARTIFACTS
    meta = by_name["model.mcz"]
    r = stack.client.get(f"/v1/jobs/{job['id']}/artifacts/model.mcz")
    assert r.status_code == 200, r.text
    body = r.content
    digest = hashlib.sha256(body).hexdigest()
    assert digest == meta["sha256"]
    assert int(r.headers["content-length"]) == len(body) == meta["bytes"]
    assert digest in r.headers["etag"]
    path = tmp_path / "model.mcz"
    path.write_bytes(body)
    return path


def test_upload_compress_download_evaluate(
    stack: Stack, uploaded: dict[str, Any], inputs: dict[str, Path], tmp_path: Path
) -> None:
    from metacluster.artifact import load_artifact
    from metacluster.data import load_dataset
    from metacluster.training import evaluate

    stack.ensure_one_worker()
    job = create_job(stack.client, uploaded["model"]["id"], uploaded["dataset"]["id"], QUICK)
    assert job["status"] == "queued"
    job = poll(stack.client, job["id"], lambda j: j["status"] in FINAL, 240, stack.procs())
    assert job["status"] == "succeeded", job
    assert job["error"] is None and job["progress"] == pytest.approx(1.0)
    assert job["started_at"] is not None and job["finished_at"] is not None

    path = _download_and_check(stack, job, tmp_path)
    model = load_artifact(path)
    metric, value = evaluate(model, load_dataset(str(inputs["data"])))
    metrics = job["metrics"]
    assert metric == metrics["metric"] == "accuracy"
    assert value == pytest.approx(metrics["after"], abs=1e-6)
    assert metrics["bytes_after"] == path.stat().st_size
    assert metrics["k"] == QUICK["k"]

    evts = events(stack.client, job["id"])
    seqs = [e["seq"] for e in evts]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    stages = {e["stage"] for e in evts if e.get("stage")}
    assert len(stages) >= 3, stages  # meta-learner, k-means, fine-tuning
    progress = [e["progress"] for e in evts if e.get("progress") is not None]
    assert progress == sorted(progress) and 0 < progress[-1] <= 1
    assert _db_job(stack, job["id"]).deliveries == 1


def test_cancel_running_job_frees_the_worker(stack: Stack, uploaded: dict[str, Any]) -> None:
    stack.ensure_one_worker()
    model_id, dataset_id = uploaded["model"]["id"], uploaded["dataset"]["id"]
    job = create_job(stack.client, model_id, dataset_id, LONG_META)
    poll(
        stack.client,
        job["id"],
        lambda j: j["status"] == "running" and j["stage"] is not None,
        120,
        stack.procs(),
    )

    r = stack.client.post(f"/v1/jobs/{job['id']}/cancel")
    assert r.status_code in (200, 202), r.text
    asked = time.monotonic()
    job = poll(stack.client, job["id"], lambda j: j["status"] in FINAL, 30, stack.procs())
    assert job["status"] == "cancelled", job
    assert time.monotonic() - asked < 10
    assert job["artifacts"] == []

    # The same (only) worker takes the next job.
    nxt = create_job(stack.client, model_id, dataset_id, QUICK)
    nxt = poll(stack.client, nxt["id"], lambda j: j["status"] in FINAL, 240, stack.procs())
    assert nxt["status"] == "succeeded", nxt


def test_worker_killed_mid_job_resumes_on_a_new_worker(
    stack: Stack, uploaded: dict[str, Any]
) -> None:
    first = stack.ensure_one_worker()
    job = create_job(
        stack.client, uploaded["model"]["id"], uploaded["dataset"]["id"], LONG_FINETUNE
    )
    job_id = job["id"]

    def in_last_stage(j: dict[str, Any]) -> bool:
        return j["status"] == "running" and j["stage"] == "finetune"

    poll(stack.client, job_id, in_last_stage, 180, stack.procs())
    first.kill()
    assert get_job(stack.client, job_id)["status"] == "running"

    second = stack.start_worker("after-kill")
    job = poll(stack.client, job_id, lambda j: j["status"] in FINAL, 300, (stack.api, second))
    assert job["status"] == "succeeded", job
    assert _artifact_names(stack, job_id) == JOB_ARTIFACTS
    assert _db_job(stack, job_id).deliveries == 2

    evts = events(stack.client, job_id)
    resumed = {
        e["data"]["resumed_stage"] for e in evts if (e.get("data") or {}).get("resumed_stage")
    }
    # Stages that finished before the kill are restored, not recomputed.
    assert "meta" in resumed and any(s.startswith("kmeans") for s in resumed), resumed
    deliveries = [e["data"]["delivery"] for e in evts if (e.get("data") or {}).get("delivery")]
    assert deliveries == [1, 2]


def test_job_fails_clearly_after_too_many_deliveries(
    stack: Stack, uploaded: dict[str, Any]
) -> None:
    from core.db.models import Job
    from core.db.session import session_scope

    # No worker while the job is prepared: it stands for a job whose workers died
    # max_deliveries times (each SIGKILL leaves deliveries incremented).
    for w in stack.workers:
        w.stop()
    job = create_job(stack.client, uploaded["model"]["id"], uploaded["dataset"]["id"], QUICK)
    limit = stack.settings().max_deliveries
    with session_scope(stack.settings()) as session:
        session.execute(
            update(Job).where(Job.id == job["id"]).values(deliveries=limit, status="running")
        )
        assert session.scalar(select(func.count()).select_from(Job).where(Job.id == job["id"])) == 1
    stack.ensure_one_worker()
    job = poll(stack.client, job["id"], lambda j: j["status"] in FINAL, 60, stack.procs())
    assert job["status"] == "failed"
    assert job["error"]["code"] == "too_many_deliveries"
    assert str(limit) in job["error"]["message"]
    assert job["artifacts"] == []
