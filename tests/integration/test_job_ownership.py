"""One owner per job, time limits, storage faults and leftovers: `worker.runner` in-process.

The lease and fencing token of `core.jobs.claim`: a delivery that lost the job writes
nothing (no event, no artifact row, no blob); a job past its wall-time limit fails with
code `timeout`; a full disk during the artifact write fails the job with code
`storage_error` and leaves no partial artifact; a failed job leaves no checkpoints and
no empty folders. (Real processes: tests/integration/test_faults.py.)
"""

from __future__ import annotations

import errno
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from core.db.models import Job
from core.db.session import session_scope
from core.storage import LocalStorage, Source, checkpoints_key
from metacluster import errors
from worker.runner import run_job

from ._runner import Env, _fake_compress, expire_lease
from .test_redis_postgres import QUICK


def _job_files(env: Env, job_id: str) -> list[Path]:
    root = Path(env.storage.root) / "jobs" / job_id
    return sorted(root.rglob("*")) if root.exists() else []


def _take_over(env: Env, job_id: str) -> None:
    """Another delivery claims the job (as after an expired lease): the fence moves on."""
    expire_lease(env, job_id)
    from core import jobs

    with session_scope(env.settings) as session:
        claim = jobs.claim(session, job_id, max_deliveries=9, message_id="intruder")
    assert claim.runs and claim.fence == 2


def test_a_delivery_that_lost_the_job_writes_nothing_more(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The owner is cut off mid-run (another delivery took the job over): its next
    progress write is refused and it stops, leaving the job to the new owner."""
    job_id = env.job(QUICK)
    steps: list[int] = []

    def run(progress: Any, should_stop: Any, checkpoint: Any) -> Any:
        progress("meta", 1, 10, 1.0)
        _take_over(env, job_id)
        for step in range(2, 10):
            should_stop()
            progress("meta", step, 10, 1.0)
            steps.append(step)
            time.sleep(0.6)
        raise AssertionError("the fenced-out delivery went on")

    monkeypatch.setattr("metacluster.compress.compress", _fake_compress(run))
    assert env.run(job_id) == "lost"
    job = env.row(job_id)
    assert (job.status, job.fence, job.error) == ("running", 2, None)
    # Nothing written by fence 1 after the takeover: the last event is the intruder's claim.
    last = env.events(job_id)[-1]
    assert last.kind == "status" and last.data == {
        "status": "running",
        "delivery": 2,
        "fence": 2,
        "message_id": "intruder",
    }
    assert steps == [] or len(steps) <= 1


def test_artifacts_of_a_fenced_out_delivery_are_not_registered(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run finishes after another delivery took the job: `succeed` refuses fence 1,
    no artifact row appears and its blobs are deleted."""
    job_id = env.job(QUICK)
    real = __import__("metacluster.compress", fromlist=["compress"]).compress

    def compress_then_lose(model: Any, config: Any, data: Any, **kw: Any) -> Any:
        out = real(model, config, data, **kw)
        _take_over(env, job_id)
        return out

    monkeypatch.setattr("metacluster.compress.compress", compress_then_lose)
    assert env.run(job_id) == "lost"
    job = env.row(job_id)
    assert (job.status, job.fence) == ("running", 2)
    assert env.artifacts(job_id) == []
    assert [p for p in _job_files(env, job_id) if "artifacts" in p.parts] == []


def test_the_lease_is_renewed_while_the_job_runs(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    env.settings = env.settings.model_copy(update={"lease_ttl_s": 0.4})
    job_id = env.job(QUICK)
    seen: list[Any] = []
    intruder: list[str] = []

    def slow(progress: Any, should_stop: Any, checkpoint: Any) -> Any:
        for step in range(12):  # 1.8 s: several lease periods
            should_stop()
            progress("meta", step, 12, 1.0)
            seen.append(env.row(job_id).lease_expires_at)
            time.sleep(0.15)
        # A second delivery meanwhile: the lease is live, so it is a duplicate.
        intruder.append(
            run_job(job_id, settings=env.settings, storage=env.storage, message_id="m2")
        )
        raise errors.ConfigError("stop: only the lease is under test")

    monkeypatch.setattr("metacluster.compress.compress", _fake_compress(slow))
    assert env.run(job_id) == "failed"
    assert intruder == ["running"]
    assert len(set(seen)) >= 3 and seen == sorted(seen)  # renewed, moving forward
    job = env.row(job_id)
    assert (job.deliveries, job.fence, job.lease_expires_at) == (1, 1, None)


def test_a_job_past_its_wall_time_limit_fails_with_code_timeout(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    env.settings = env.settings.model_copy(update={"job_timeout_s": 0.5})
    job_id = env.job(QUICK)

    def endless(progress: Any, should_stop: Any, checkpoint: Any) -> Any:
        checkpoint.save("meta", {"step": 1})
        for step in range(10**6):
            if should_stop():
                raise errors.CancelledError("stopped")
            progress("meta", step, 10**6, 1.0)
            time.sleep(0.01)
        raise AssertionError("never timed out")

    monkeypatch.setattr("metacluster.compress.compress", _fake_compress(endless))
    assert env.run(job_id) == "failed"
    job = env.row(job_id)
    assert job.status == "failed" and job.error["code"] == "timeout"
    assert "wall-time limit" in job.error["message"]
    assert _job_files(env, job_id) == []  # its checkpoint went with it


class FullDisk(LocalStorage):
    """Local storage whose artifact writes fail half-way, as on a full disk."""

    def put(self, key: str, source: Source, *, max_bytes: int | None = None) -> Any:
        if "/artifacts/" in key and key.endswith("report.json"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return super().put(key, source, max_bytes=max_bytes)


def test_a_full_disk_during_the_artifact_write_fails_cleanly(env: Env) -> None:
    storage = FullDisk(env.storage.root)
    job_id = env.job(QUICK)
    assert run_job(job_id, settings=env.settings, storage=storage) == "failed"
    job = env.row(job_id)
    assert job.error == {
        "code": "storage_error",
        "message": "storing the artifact failed: No space left on device",
    }
    # model.mcz was written before report.json failed: it is gone, and nothing is left.
    assert env.artifacts(job_id) == []
    assert _job_files(env, job_id) == []


def test_a_failed_job_leaves_no_checkpoints_and_no_empty_folders(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = env.job(QUICK)

    def fail_after_a_stage(progress: Any, should_stop: Any, checkpoint: Any) -> Any:
        checkpoint.save("meta", {"weights": 1})
        assert env.storage.list(checkpoints_key(job_id)) != []
        raise errors.ConfigError("the data does not fit")

    monkeypatch.setattr("metacluster.compress.compress", _fake_compress(fail_after_a_stage))
    assert env.run(job_id) == "failed"
    assert env.row(job_id).error["code"] == "invalid_config"
    assert not (Path(env.storage.root) / "jobs" / job_id).exists()
    assert list(Path(env.settings.scratch).glob(f"*{job_id}*")) == []


def test_a_job_given_up_after_its_delivery_limit_drops_its_checkpoints(env: Env) -> None:
    limit = env.settings.max_deliveries
    job_id = env.job(QUICK, status="running", deliveries=limit)
    env.storage.put(f"{checkpoints_key(job_id)}/meta.json", b"{}")
    assert env.run(job_id) == "failed"
    assert env.row(job_id).error["code"] == "too_many_deliveries"
    assert not (Path(env.storage.root) / "jobs" / job_id).exists()


def test_cancel_and_heartbeat_threads_end_with_the_job(env: Env) -> None:
    before = {t.name for t in threading.enumerate()}
    job_id = env.job(QUICK)
    assert env.run(job_id) == "succeeded"
    assert not any(t.name.startswith("lease-") for t in threading.enumerate()), before
    with session_scope(env.settings) as session:
        job = session.get(Job, job_id)
        assert job is not None and job.lease_owner is None
