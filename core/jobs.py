"""The job state machine: every change of a job's status happens here, on the repositories.

    create ─> queued ──claim──> running ──succeed──> succeeded
                │  │              │ │
                │  │              │ └──fail──> failed | cancelled
                │  │              └──claim (re-delivery: resumes)──> running
                │  └──request_cancel──> cancelled
                └──mark_enqueue_failed──> failed
    queued ──requeue_stale──> queued (one more message; an event records it)
    succeeded | failed | cancelled ──delete──> (gone, with its events and artifacts)

Each function takes the caller's session and leaves the commit to it (the API's
request transaction, the worker's `session_scope`). Every transition locks the job
row first and writes its event through the one event writer, so the API and the
workers never interleave two changes of one job. A change the job's webhook subscribed
to queues its message in the same transaction (`core.webhooks.job_changed`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.db.base import utcnow
from core.db.models import FINISHED_STATUSES, Job, new_id
from core.repositories import (
    ArtifactRepository,
    DatasetRepository,
    JobEventRepository,
    JobRepository,
    ModelRepository,
)
from core.service_errors import IdempotencyConflictError, JobStateError
from core.webhooks import job_changed
from metacluster.errors import DatasetError, InputError

log = logging.getLogger(__name__)


def _event(session: Session, job_id: str, kind: str, **fields: Any) -> None:
    JobEventRepository(session).add(job_id, kind, **fields)


def _settle(
    session: Session,
    job: Job,
    status: str,
    *,
    metrics: dict[str, Any] | None = None,
    error: dict[str, str] | None = None,
) -> None:
    """Put a locked job into a final status, with its status event."""
    job.status = status
    job.finished_at = utcnow()
    if metrics is not None:
        job.metrics = metrics
        job.progress = 1.0
    job.error = error
    data: dict[str, Any] = {"status": status}
    if error is not None:
        data["error"] = error
    message = status if error is None else f"{status}: {error['message']}"
    _event(session, job.id, "status", message=message, data=data)
    job_changed(session, job, status)


# -- create and enqueue (API) -------------------------------------------------------------
def find_replay(
    session: Session, owner_id: str, idempotency_key: str | None, request_hash: str
) -> Job | None:
    """The job an Idempotency-Key already made for the same request body (a replay), or
    None; the key used with another body is a 409."""
    if idempotency_key is None:
        return None
    existing = JobRepository(session).get_by_idempotency_key(owner_id, idempotency_key)
    if existing is not None and existing.request_hash != request_hash:
        raise IdempotencyConflictError(
            f"Idempotency-Key {idempotency_key!r} was already used with a different request body"
        )
    return existing


def create(
    session: Session,
    *,
    owner_id: str,
    model_id: str,
    dataset: str,
    config: dict[str, Any],
    queue: str,
    request_hash: str,
    idempotency_key: str | None = None,
    webhook_url: str | None = None,
    webhook_events: list[str] | None = None,
) -> tuple[Job, bool]:
    """-> queued: add a job the caller validated; returns (job, replayed).

    The caller looks for a replay first (`find_replay`, before validating anything);
    when a concurrent request with the same Idempotency-Key wins the race to insert,
    the unique constraint sends this one to the winner (replayed, nothing added).
    """
    job = Job(
        id=new_id("job"),
        owner_id=owner_id,
        model_id=model_id,
        dataset=dataset,
        config=config,
        status="queued",
        stage=None,
        progress=0.0,
        created_at=utcnow(),
        cancel_requested=False,
        deliveries=0,
        idempotency_key=idempotency_key,
        request_hash=request_hash,
        queue=queue,
        webhook_url=webhook_url,
        webhook_events=webhook_events if webhook_url else None,
    )
    try:
        # A savepoint, so losing a race on the (owner, key) unique constraint leaves
        # the outer transaction usable for reading the winner.
        with session.begin_nested():
            JobRepository(session).add(job)
    except IntegrityError:
        winner = find_replay(session, owner_id, idempotency_key, request_hash)
        if winner is None:
            raise
        return winner, True
    _event(session, job.id, "status", message="queued", data={"status": "queued"})
    return job, False


def mark_enqueue_failed(session: Session, job_id: str, reason: str) -> None:
    """queued -> failed: the job was committed but its message never reached the broker."""
    job = JobRepository(session).lock(job_id)
    if job is not None and job.status == "queued":
        _settle(
            session,
            job,
            "failed",
            error={"code": "enqueue_failed", "message": f"broker unreachable: {reason}"},
        )


def request_cancel(session: Session, job: Job) -> Job:
    """Queued -> cancelled at once; running -> flagged (the runner stops between steps).

    `job` must be locked by the caller (`JobRepository.get(..., for_update=True)`).
    """
    if job.status in FINISHED_STATUSES:
        if job.status == "cancelled":
            return job
        raise JobStateError(f"job {job.id} already {job.status}; it cannot be cancelled")
    if not job.cancel_requested:
        job.cancel_requested = True
        _event(session, job.id, "log", message="cancel requested")
    if job.status == "queued":
        job.status = "cancelled"
        job.finished_at = utcnow()
        _event(session, job.id, "status", message="cancelled", data={"status": "cancelled"})
        job_changed(session, job, "cancelled")
    session.flush()
    return job


def delete(session: Session, job: Job) -> list[str]:
    """A finished job -> gone, with its events, artifact rows and webhook messages;
    returns the storage prefix of its blobs for the caller to remove after commit.

    `job` must be locked by the caller. An unfinished job is a 409: cancel it first
    (a running worker would otherwise write into a job that no longer exists).
    """
    if job.status not in FINISHED_STATUSES:
        raise JobStateError(
            f"job {job.id} is {job.status}; cancel it and wait until it is cancelled "
            "before deleting it",
            code="job_not_finished",
        )
    job_id = job.id
    session.delete(job)
    session.flush()
    return [f"jobs/{job_id}/"]


# -- claim, progress, finish (worker) --------------------------------------------------------
@dataclass
class Claim:
    """The outcome of a delivery, and what a running job needs, read while claiming."""

    status: str  # the job's status after the claim ("running" to go on)
    duplicate: bool = False  # another message owns the running job: do nothing
    delivery: int = 0
    model_id: str = ""
    model_key: str = ""  # storage key of the checkpoint file
    model_format: str = "auto"
    model_info: dict[str, Any] = field(default_factory=dict)
    dataset: str = ""  # a built-in spec, or "" when `dataset_key` names an upload
    dataset_key: str | None = None
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def runs(self) -> bool:
        return self.status == "running" and not self.duplicate


def claim(
    session: Session,
    job_id: str,
    *,
    max_deliveries: int,
    message_id: str | None = None,
    takeover: bool = False,
) -> Claim:
    """queued|running -> running for this delivery, or settle the job without running.

    The message that claims a job owns it (its id in the status event): a second
    message delivered while it runs is a duplicate, while a re-delivery of the owner
    (same id: worker lost, or a retry) resumes it. `takeover` resumes a running job
    under a new message whatever owned it (a message sent because the owner's was
    lost). A job cancelled before it started, or delivered more than `max_deliveries`
    times, is settled here. Raises InputError / DatasetError when the model or dataset
    is gone (the caller rolls back and fails the job).
    """
    job = JobRepository(session).lock(job_id)
    if job is None:
        log.warning("job %s not found; dropping the message", job_id)
        return Claim(status="missing")
    if job.status in FINISHED_STATUSES:
        # A re-delivery of a job that already finished (e.g. the worker died after the
        # final commit but before the ack): nothing to do.
        return Claim(status=job.status)
    if job.status == "running" and message_id is not None and not takeover:
        owner = (JobEventRepository(session).last_status_data(job.id) or {}).get("message_id")
        if isinstance(owner, str) and owner != message_id:
            log.info(
                "job %s is running under message %s; dropping duplicate message %s",
                job_id,
                owner,
                message_id,
            )
            return Claim(status="running", duplicate=True)
    job.deliveries += 1
    if job.cancel_requested:
        _settle(
            session,
            job,
            "cancelled",
            error={"code": "cancelled", "message": "job was cancelled before it started"},
        )
        return Claim(status="cancelled")
    if job.deliveries > max_deliveries:
        message = (
            f"job was delivered {job.deliveries} times (limit {max_deliveries}); "
            "its worker died every time, giving up"
        )
        _settle(session, job, "failed", error={"code": "too_many_deliveries", "message": message})
        return Claim(status="failed")
    resumed = job.status == "running"
    job.status = "running"
    first_start = job.started_at is None
    if first_start:
        job.started_at = utcnow()
    message = f"delivery {job.deliveries}" + (
        " (re-delivered after a worker loss)" if resumed else ""
    )
    data: dict[str, Any] = {"status": "running", "delivery": job.deliveries}
    if message_id is not None:
        data["message_id"] = message_id  # this message now owns the job
    _event(session, job.id, "status", message=message, data=data)
    if first_start:
        job_changed(session, job, "started")
    model = ModelRepository(session).by_id(job.model_id)
    if model is None:
        raise InputError(f"model {job.model_id} of job {job.id} no longer exists", code="not_found")
    out = Claim(
        status="running",
        delivery=job.deliveries,
        model_id=model.id,
        model_key=model.storage_key,
        model_format=model.format or "auto",
        model_info=dict(model.info or {}),
        dataset=job.dataset,
        config=dict(job.config or {}),
    )
    if job.dataset.startswith("ds_"):
        record = DatasetRepository(session).get(job.owner_id, job.dataset)
        if record is None:
            raise DatasetError(f"dataset {job.dataset} of job {job.id} no longer exists")
        out.dataset, out.dataset_key = "", record.storage_key
    return out


def record_progress(
    session: Session,
    job_id: str,
    *,
    kind: str,
    stage: str | None,
    progress: float,
    loss: float | None,
    message: str,
    data: dict[str, Any] | None = None,
) -> None:
    """A running job's stage and overall fraction, with a ``stage`` or ``progress`` event."""
    job = JobRepository(session).lock(job_id)
    if job is None or job.status != "running":
        return
    job.stage = stage
    job.progress = progress
    _event(
        session, job_id, kind, stage=stage, progress=progress, loss=loss, message=message, data=data
    )
    if kind == "stage":
        job_changed(session, job, "stage")


def log_event(
    session: Session, job_id: str, message: str, *, stage: str | None, **data: Any
) -> None:
    _event(session, job_id, "log", stage=stage, message=message, data=data or None)


def succeed(
    session: Session,
    job_id: str,
    metrics: dict[str, Any],
    artifacts: list[tuple[str, int, str, str]],
) -> None:
    """running -> succeeded with exactly these artifacts ((name, bytes, sha256, key))."""
    job = JobRepository(session).lock(job_id)
    if job is None:
        return
    ArtifactRepository(session).replace(job_id, artifacts)
    job.stage = None
    _settle(session, job, "succeeded", metrics=metrics)


def fail(session: Session, job_id: str, status: str, error: dict[str, str]) -> bool:
    """-> failed | cancelled (an unfinished job only); True when it changed the job."""
    job = JobRepository(session).lock(job_id)
    if job is None or job.status in FINISHED_STATUSES:
        return False
    _settle(session, job, status, error=error)
    return True


# -- recovery ------------------------------------------------------------------------------
def requeue_stale(session: Session, older_than_s: float, limit: int) -> list[tuple[str, str]]:
    """Jobs whose enqueue was lost: queued longer than `older_than_s`, never delivered,
    no event since. Each gets a "re-enqueued" event (so the next sweep waits another
    period); returns their (id, queue) for the caller to send once committed."""
    cutoff = utcnow() - timedelta(seconds=older_than_s)
    jobs = JobRepository(session).stale_queued(cutoff, limit)
    for job_id, _queue in jobs:
        _event(
            session,
            job_id,
            "log",
            message=f"re-enqueued: no worker took the job within {older_than_s:.0f} s",
            data={"requeued": True},
        )
    return jobs


def unfinished(session: Session) -> list[tuple[str, str]]:
    """(id, queue) of every queued or running job (the embedded mode's orphans)."""
    return JobRepository(session).unfinished()


__all__ = [
    "Claim",
    "claim",
    "create",
    "delete",
    "fail",
    "find_replay",
    "log_event",
    "mark_enqueue_failed",
    "record_progress",
    "request_cancel",
    "requeue_stale",
    "succeed",
    "unfinished",
]
