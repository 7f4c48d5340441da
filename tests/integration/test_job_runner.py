"""worker.runner in-process on SQLite: delivery counting, error mapping, cancel, progress.

No worker processes: `run_job` is called directly, as the Celery task does.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from core.db.models import Job, ModelRecord
from core.db.session import session_scope
from core.storage import checkpoints_key
from metacluster import errors
from worker.runner import run_job

from ._runner import Env, _fake_compress, expire_lease
from ._stack import JOB_ARTIFACTS
from .test_redis_postgres import QUICK


def test_success_stores_artifacts_and_a_redelivery_is_a_no_op(env: Env) -> None:
    job_id = env.job(QUICK)
    assert env.run(job_id) == "succeeded"
    job = env.row(job_id)
    assert (job.status, job.deliveries, job.progress, job.stage, job.error) == (
        "succeeded",
        1,
        1.0,
        None,
        None,
    )
    assert job.metrics is not None and job.metrics["k"] == QUICK["k"]
    assert env.artifacts(job_id) == JOB_ARTIFACTS
    artifact = env.storage.stat(f"jobs/{job_id}/artifacts/1/model.mcz")
    assert artifact is not None and job.metrics["bytes_after"] == artifact.bytes
    # Stage checkpoints only serve an unfinished job.
    assert env.storage.list(checkpoints_key(job_id)) == []
    n_events = len(env.events(job_id))

    # The broker may deliver a finished job again (worker died before the ack).
    assert env.run(job_id) == "succeeded"
    assert env.row(job_id).deliveries == 1
    assert len(env.events(job_id)) == n_events


def test_missing_job_is_dropped(env: Env) -> None:
    assert env.run("job_doesnotexist") == "missing"


def test_cancel_requested_before_start_never_runs(env: Env) -> None:
    job_id = env.job(QUICK, cancel_requested=True)
    assert env.run(job_id) == "cancelled"
    job = env.row(job_id)
    assert job.status == "cancelled" and job.started_at is None and job.error["code"] == "cancelled"
    assert env.artifacts(job_id) == []


def test_delivery_limit_fails_with_a_clear_error(env: Env) -> None:
    limit = env.settings.max_deliveries
    job_id = env.job(QUICK, status="running", deliveries=limit)
    assert env.run(job_id) == "failed"
    job = env.row(job_id)
    assert job.error["code"] == "too_many_deliveries"
    assert f"{limit + 1} times" in job.error["message"] and f"limit {limit}" in job.error["message"]
    assert job.deliveries == limit + 1 and job.finished_at is not None


def test_library_errors_keep_their_code(env: Env) -> None:
    job_id = env.job({**QUICK, "d_emb": 9})
    assert env.run(job_id) == "failed"
    error = env.row(job_id).error
    assert error["code"] == "invalid_config" and "d_emb" in error["message"]


def test_unreadable_model_is_an_input_error(env: Env) -> None:
    with session_scope(env.settings) as session:
        key = session.get(ModelRecord, env.model_id).storage_key  # type: ignore[union-attr]
    env.storage.put(key, b"not a checkpoint")
    job_id = env.job(QUICK)
    assert env.run(job_id) == "failed"
    error = env.row(job_id).error
    # Whichever reader refused it, the user gets the formats layer's code, not "internal".
    assert error["code"] in (errors.FormatError.code, errors.UnsafeCheckpointError.code), error
    assert "m.pt" in error["message"]


def test_unexpected_errors_are_internal_and_logged(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(progress: Any, should_stop: Any, checkpoint: Any) -> Any:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr("metacluster.compress.compress", _fake_compress(boom))
    job_id = env.job(QUICK)
    assert env.run(job_id) == "failed"
    error = env.row(job_id).error
    assert error["code"] == "internal" and "disk on fire" in error["message"]


def test_cancel_of_a_running_job_stops_it_between_steps(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    steps: list[int] = []

    def endless(progress: Any, should_stop: Any, checkpoint: Any) -> Any:
        for step in range(1_000_000):
            if should_stop():
                raise errors.CancelledError("stopped")
            progress("meta", step, 1_000_000, 1.0)
            steps.append(step)
            time.sleep(0.005)
        raise AssertionError("never cancelled")

    monkeypatch.setattr("metacluster.compress.compress", _fake_compress(endless))
    job_id = env.job(QUICK)

    def cancel_soon() -> None:
        time.sleep(0.5)
        with session_scope(env.settings) as session:
            session.get(Job, job_id).cancel_requested = True  # type: ignore[union-attr]

    threading.Thread(target=cancel_soon).start()
    t0 = time.monotonic()
    assert env.run(job_id) == "cancelled"
    # The flag is read at most every 0.5 s: stopped within about a second of it.
    assert time.monotonic() - t0 < 2.5
    job = env.row(job_id)
    assert job.status == "cancelled" and job.error["code"] == "cancelled" and len(steps) > 10
    assert env.artifacts(job_id) == []


def test_progress_events_are_throttled_and_monotone(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = 0

    def fast_stages(progress: Any, should_stop: Any, checkpoint: Any) -> Any:
        nonlocal calls
        for stage, total in (("meta", 200), ("kmeans", 1), ("finetune", 200)):
            for step in range(1, total + 1):
                progress(stage, step, total, 0.5)
                calls += 1
        raise errors.ConfigError("stop here: only progress is under test")

    monkeypatch.setattr("metacluster.compress.compress", _fake_compress(fast_stages))
    job_id = env.job(QUICK)
    assert env.run(job_id) == "failed"
    evts = [e for e in env.events(job_id) if e.kind in ("stage", "progress")]
    assert [e.stage for e in evts if e.kind == "stage"] == ["meta", "kmeans", "finetune"]
    # 401 callbacks in well under a second: one event per stage change and stage end.
    assert calls == 401 and len(evts) <= 12
    progress = [e.progress for e in evts]
    assert progress == sorted(progress) and 0 < progress[-1] < 1


def test_progress_of_a_k_sweep_spans_every_k(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    from metacluster.compress import MetaClusterConfig, plan

    seen: list[tuple[str, float]] = []
    reported = ("meta", "kmeans", "finetune", "kmeans", "finetune")

    def sweep(progress: Any, should_stop: Any, checkpoint: Any) -> Any:
        for stage in reported:
            progress(stage, 1, 1, None)
            with session_scope(env.settings) as session:
                seen.append((stage, session.get(Job, env_job).progress))  # type: ignore[union-attr]
        raise errors.ConfigError("stop here: only progress is under test")

    monkeypatch.setattr("metacluster.compress.compress", _fake_compress(sweep))
    config = {**QUICK, "k": [4, 8]}
    env_job = env.job(config)
    assert env.run(env_job) == "failed"
    # The weights are the plan's: every stage visit of both K, and the stages the run
    # skipped (regression, soft clustering) count as done when a later one reports.
    stages = plan(inspect_model_info(env), None, MetaClusterConfig.from_dict(config)).stages
    assert [s.name for s in stages] == [
        "regress",
        "meta",
        "soft",
        "kmeans",
        "finetune",
        "soft",
        "kmeans",
        "finetune",
    ]
    total = sum(s.weight for s in stages)
    ends, position = [], 0
    for stage in reported:
        position = next(i for i in range(position, len(stages)) if stages[i].name == stage)
        ends.append(sum(s.weight for s in stages[: position + 1]) / total)
        position += 1
    assert [round(p, 4) for _, p in seen] == [round(min(e, 0.99), 4) for e in ends]
    assert [p for _, p in seen] == sorted(p for _, p in seen)


def inspect_model_info(env: Env) -> dict[str, Any]:
    with session_scope(env.settings) as session:
        return dict(session.get(ModelRecord, env.model_id).info)  # type: ignore[union-attr]


class _WorkerLost(BaseException):
    """Stands in for SIGKILL: nothing after the claim is written, nothing catches it."""


def _claim_then_die(env: Env, monkeypatch: pytest.MonkeyPatch, job_id: str, message: str) -> None:
    def die(*_args: Any, **_kwargs: Any) -> None:
        raise _WorkerLost

    with monkeypatch.context() as patch:
        patch.setattr("worker.runner._execute", die)
        with pytest.raises(_WorkerLost):
            run_job(job_id, settings=env.settings, storage=env.storage, message_id=message)
    job = env.row(job_id)
    assert (job.status, job.deliveries) == ("running", 1)


def _running_events(env: Env, job_id: str) -> list[dict[str, Any]]:
    return [
        e.data
        for e in env.events(job_id)
        if e.kind == "status" and (e.data or {}).get("status") == "running"
    ]


def test_a_live_lease_keeps_every_other_delivery_out(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = env.job(QUICK)
    _claim_then_die(env, monkeypatch, job_id, "msg-1")
    assert _running_events(env, job_id) == [
        {"status": "running", "delivery": 1, "fence": 1, "message_id": "msg-1"}
    ]
    n_events = len(env.events(job_id))

    def run(message: str) -> str:
        return run_job(job_id, settings=env.settings, storage=env.storage, message_id=message)

    # While msg-1's lease is live, any other delivery (a re-sent copy, the broker's
    # re-delivery of a slow job, even msg-1 itself) is dropped: not counted, nothing written.
    assert run("msg-2") == "running"
    assert run("msg-1") == "running"
    assert env.row(job_id).deliveries == 1 and len(env.events(job_id)) == n_events
    # Once the lease expired (its owner stopped renewing it), the next delivery takes
    # the job over with a new fencing token and finishes it.
    expire_lease(env, job_id)
    assert run("msg-2") == "succeeded"
    job = env.row(job_id)
    assert (job.status, job.deliveries, job.fence) == ("succeeded", 2, 2)
    assert job.lease_expires_at is None and job.lease_owner is None
    assert [(d["message_id"], d["fence"]) for d in _running_events(env, job_id)] == [
        ("msg-1", 1),
        ("msg-2", 2),
    ]
    assert env.artifacts(job_id) == JOB_ARTIFACTS
    # A copy delivered once more, after the end: a no-op.
    assert run("msg-1") == "succeeded" and env.row(job_id).deliveries == 2


def test_takeover_waits_for_the_lease_then_resumes(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    env.settings = env.settings.model_copy(update={"lease_ttl_s": 1.0})
    job_id = env.job(QUICK)
    _claim_then_die(env, monkeypatch, job_id, "msg-1")
    assert env.row(job_id).lease_expires_at is not None
    # The embedded mode's restart re-sends unfinished jobs as takeover messages: the
    # dead owner's lease is still live, so the takeover waits for it to run out.
    status = run_job(
        job_id, settings=env.settings, storage=env.storage, message_id="msg-3", takeover=True
    )
    assert status == "succeeded"
    assert env.row(job_id).deliveries == 2
    assert [d["message_id"] for d in _running_events(env, job_id)] == ["msg-1", "msg-3"]
