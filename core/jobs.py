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
from datetime import datetime, timedelta
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
from core.service_errors import IdempotencyConflictError, JobStateError, LeaseLostError
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
    job.lease_owner = None
    job.lease_expires_at = None
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
    duplicate: bool = False  # another delivery holds the job's live lease: do nothing
    delivery: int = 0
    fence: int = 0  # this delivery's fencing token: every later write of it checks it
    lease_expires_at: datetime | None = None  # a duplicate: when the holder's lease ends
    started_at: datetime | None = None  # the first delivery's start (the wall-time limit)
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


def _lease_live(job: Job, now: datetime) -> bool:
    return job.lease_expires_at is not None and job.lease_expires_at > now


def claim(
    session: Session,
    job_id: str,
    *,
    max_deliveries: int,
    message_id: str | None = None,
    takeover: bool = False,
    worker: str | None = None,
    lease_ttl_s: float = 60.0,
) -> Claim:
    """queued|running -> running for this delivery, or settle the job without running.

    One owner at a time: a running job whose lease is live belongs to the delivery
    that holds it, and any other delivery (a re-sent message, a broker re-delivery
    of a slow job, a second `serve`) is a duplicate that does nothing. Once the
    lease expired (its worker stopped renewing it: dead, or cut off) the next
    delivery takes the job over and resumes it from its checkpoints. Each claim that
    runs the job takes a new fencing token (`Job.fence`) and a lease of
    `lease_ttl_s`; the worker renews it (`renew_lease`) and every later write passes
    the token (`record_progress`, `log_event`, `succeed`, `fail`), so a delivery that
    lost the job can no longer change it. `takeover` (a message sent because another
    was lost) changes nothing here: the caller may wait for a live lease to end.

    A job cancelled before it started, or delivered more than `max_deliveries`
    times, is settled here. Raises InputError / DatasetError when the model or dataset
    is gone (the caller rolls back and fails the job).
    """
    del takeover  # the lease alone decides (kept for the callers' signature)
    job = JobRepository(session).lock(job_id)
    if job is None:
        log.warning("job %s not found; dropping the message", job_id)
        return Claim(status="missing")
    if job.status in FINISHED_STATUSES:
        # A re-delivery of a job that already finished (e.g. the worker died after the
        # final commit but before the ack): nothing to do.
        return Claim(status=job.status)
    now = utcnow()
    if job.status == "running" and _lease_live(job, now):
        log.info(
            "job %s is leased by %s until %s; dropping delivery %s",
            job_id,
            job.lease_owner,
            job.lease_expires_at,
            message_id,
        )
        return Claim(status="running", duplicate=True, lease_expires_at=job.lease_expires_at)
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
        job.started_at = now
    job.fence = (job.fence or 0) + 1
    job.lease_owner = (worker or message_id or "worker")[:200]
    job.lease_expires_at = now + timedelta(seconds=lease_ttl_s)
    message = f"delivery {job.deliveries}" + (
        " (taken over after its lease expired)" if resumed else ""
    )
    data: dict[str, Any] = {"status": "running", "delivery": job.deliveries, "fence": job.fence}
    if message_id is not None:
        data["message_id"] = message_id
    _event(session, job.id, "status", message=message, data=data)
    if first_start:
        job_changed(session, job, "started")
    model = ModelRepository(session).by_id(job.model_id)
    if model is None:
        raise InputError(f"model {job.model_id} of job {job.id} no longer exists", code="not_found")
    out = Claim(
        status="running",
        delivery=job.deliveries,
        fence=job.fence,
        lease_expires_at=job.lease_expires_at,
        started_at=job.started_at,
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


def _owned(session: Session, job_id: str, fence: int) -> Job:
    """The job row, locked, when the delivery holding `fence` still owns it; else
    LeaseLostError (another delivery took it over, or it already finished)."""
    job = JobRepository(session).lock_if_owned(job_id, fence)
    if job is None:
        raise LeaseLostError(f"job {job_id} is no longer running under fence {fence}")
    # the row may have been loaded by this session before: read what the lock guards
    session.refresh(job)
    return job


def renew_lease(session: Session, job_id: str, fence: int, ttl_s: float) -> bool:
    """Extend the owner's lease by `ttl_s` from now; False when `fence` lost the job."""
    try:
        job = _owned(session, job_id, fence)
    except LeaseLostError:
        return False
    job.lease_expires_at = utcnow() + timedelta(seconds=ttl_s)
    return True


def record_progress(
    session: Session,
    job_id: str,
    *,
    fence: int,
    kind: str,
    stage: str | None,
    progress: float,
    loss: float | None,
    message: str,
    data: dict[str, Any] | None = None,
) -> None:
    """A running job's stage and overall fraction, with a ``stage`` or ``progress`` event
    (LeaseLostError when `fence` no longer owns the job)."""
    job = _owned(session, job_id, fence)
    job.stage = stage
    job.progress = progress
    _event(
        session, job_id, kind, stage=stage, progress=progress, loss=loss, message=message, data=data
    )
    if kind == "stage":
        job_changed(session, job, "stage")


def log_event(
    session: Session, job_id: str, message: str, *, fence: int, stage: str | None, **data: Any
) -> None:
    """A ``log`` event of the delivery holding `fence` (LeaseLostError otherwise)."""
    _owned(session, job_id, fence)
    _event(session, job_id, "log", stage=stage, message=message, data=data or None)


def note(session: Session, job_id: str, message: str, **data: Any) -> None:
    """A ``log`` event on a job whatever its state (what its delivery learned after the
    job finished, e.g. the MLflow run it was logged as); never changes the job."""
    _event(session, job_id, "log", message=message, data=data or None)


def succeed(
    session: Session,
    job_id: str,
    metrics: dict[str, Any],
    artifacts: list[tuple[str, int, str, str]],
    *,
    fence: int,
) -> None:
    """running -> succeeded with exactly these artifacts ((name, bytes, sha256, key)), when
    `fence` still owns the job; LeaseLostError (nothing written) otherwise."""
    job = _owned(session, job_id, fence)
    ArtifactRepository(session).replace(job_id, artifacts)
    job.stage = None
    _settle(session, job, "succeeded", metrics=metrics)


def fail(
    session: Session, job_id: str, status: str, error: dict[str, str], *, fence: int | None = None
) -> bool:
    """-> failed | cancelled (an unfinished job only); True when it changed the job.

    With `fence`: only while that delivery owns the job. Without (a delivery that
    never got to own it, e.g. its model vanished): only when no live lease holds it.
    """
    repo = JobRepository(session)
    job = repo.lock(job_id) if fence is None else repo.lock_if_owned(job_id, fence)
    if job is None or job.status in FINISHED_STATUSES:
        return False
    if fence is None and job.status == "running" and _lease_live(job, utcnow()):
        return False
    _settle(session, job, status, error=error)
    return True


# -- recovery ------------------------------------------------------------------------------
def requeue_stale(
    session: Session, older_than_s: float, limit: int, *, lease_grace_s: float = 0.0
) -> list[tuple[str, str]]:
    """Jobs whose message was lost, for the caller to send again once committed:

    - queued longer than `older_than_s`, never delivered, no event since (the API
      died between its commit and the send);
    - running with a lease expired more than `lease_grace_s` ago and no event for as
      long (the owner died and its message is gone: acknowledged as a duplicate, or
      a server-less broker that does not re-deliver).

    Each gets a "re-enqueued" event (so the next sweep waits another period); returns
    their (id, queue)."""
    now = utcnow()
    cutoff = now - timedelta(seconds=older_than_s)
    repo = JobRepository(session)
    jobs = repo.stale_queued(cutoff, limit)
    for job_id, _queue in jobs:
        _event(
            session,
            job_id,
            "log",
            message=f"re-enqueued: no worker took the job within {older_than_s:.0f} s",
            data={"requeued": True},
        )
    orphans = repo.expired_leases(now - timedelta(seconds=lease_grace_s), limit)
    for job_id, _queue in orphans:
        _event(
            session,
            job_id,
            "log",
            message="re-enqueued: the job's lease expired and nobody took it over",
            data={"requeued": True, "takeover": True},
        )
    return jobs + orphans


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
    "note",
    "record_progress",
    "renew_lease",
    "request_cancel",
    "requeue_stale",
    "succeed",
    "unfinished",
]
