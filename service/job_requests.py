"""What the API does for job requests: validate (the library's `plan`), create, cancel, read.

Validation reads the stored model description and the dataset's shape and asks
`metacluster.compress.pipeline.plan` whether they fit the config: the same rules the engine
applies when the job runs. State changes go through `core.jobs`; the job's message
is sent by an after-commit hook, never inside the creating transaction.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from core import jobs, retention, webhooks
from core.db.models import ApiKey, Artifact, Job, JobEvent, ModelRecord
from core.db.session import session_scope
from core.db.transaction import after_commit
from core.producer import TaskProducer
from core.repositories import ArtifactRepository, JobEventRepository, JobRepository, JobView
from core.service_errors import (
    DatasetTooLargeError,
    DeviceUnavailableError,
    NotFoundError,
    QuotaExceededError,
    ServiceUnavailableError,
)
from core.settings import Settings
from core.storage import Storage
from metacluster.data import DatasetMeta, builtin_sample_count, is_builtin
from metacluster.errors import ConfigError, DatasetError, IncompatibleError, MetaClusterError
from service.dataset_uploads import get_dataset
from service.model_uploads import get_model
from service.schemas import JobCreate

if TYPE_CHECKING:
    from metacluster.compress import MetaClusterConfig, Plan

log = logging.getLogger(__name__)

Enqueue = Callable[[str, str], None]
"""Sends job ``id`` to ``queue``; called only after the creating transaction commits."""


class BrokerEnqueuer:
    """Sends the job's message; a broker that refuses it fails the (committed) job and
    answers 503, so no job is ever stuck queued without a message."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def __call__(self, job_id: str, queue: str) -> None:
        try:
            TaskProducer(self.settings).send_compress(job_id, queue)
        except Exception as exc:
            log.error("enqueue of job %s failed: %r", job_id, exc)
            with session_scope(self.settings) as session:
                jobs.mark_enqueue_failed(session, job_id, str(exc))
            raise ServiceUnavailableError(
                f"job {job_id} was created but the broker refused it; it has been marked failed"
            ) from None


class IncompatibleJobError(IncompatibleError):
    """Model, dataset and config do not fit together; ``checks`` says where. A plan whose
    failed checks are all the config's (K, layers, method options, budget) answers
    `invalid_config`, the code the run itself would fail with."""

    def __init__(self, the_plan: Plan) -> None:
        failed = [c for c in the_plan.checks if not c.ok]
        code = ConfigError.code if the_plan.config_problem else None
        super().__init__("; ".join(c.detail for c in failed), code=code)
        self.extra = {"checks": [c.to_dict() for c in the_plan.checks]}


@dataclass(frozen=True)
class Validated:
    """A job request that passed every check of its plan."""

    model: ModelRecord
    config: dict[str, Any]
    queue: str
    plan: Plan  # the job's plan: the request validated with it, the dry run shows it
    webhook_url: str | None = None
    webhook_events: list[str] | None = None


# -- datasets -----------------------------------------------------------------
@lru_cache(maxsize=32)
def builtin_dataset_meta(spec: str) -> DatasetMeta:
    """Load a built-in once per process to learn its shape (generated locally, no download)."""
    from metacluster.data import load_dataset

    return load_dataset(spec).meta()


def dataset_meta(
    session: Session, owner: ApiKey, spec: str, *, max_builtin_samples: int
) -> DatasetMeta:
    """Shape of an uploaded dataset (from its row) or of a built-in (generated once,
    after its requested size is checked against the server's cap)."""
    if spec.startswith("ds_"):
        row = get_dataset(session, owner, spec)
        return DatasetMeta(
            row.task,
            row.n_train,
            row.n_test,
            tuple(row.input_shape),
            row.n_classes,
            row.n_outputs,
        )
    if not is_builtin(spec):
        raise DatasetError(
            f"unknown dataset {spec!r}: use an uploaded dataset id (ds_...) or a built-in "
            "(digits, mnist1d, eq:<name>)"
        )
    samples = builtin_sample_count(spec)
    if samples is not None and samples > max_builtin_samples:
        raise DatasetTooLargeError(spec, samples, max_builtin_samples)
    try:
        return builtin_dataset_meta(spec)
    except MetaClusterError:
        raise
    except Exception as exc:
        raise DatasetError(f"built-in dataset {spec!r} could not be generated: {exc}") from None


def parse_config(config: dict[str, Any]) -> MetaClusterConfig:
    """The validated `MetaClusterConfig` (defaults filled in) the worker will rebuild."""
    from metacluster.compress import MetaClusterConfig

    try:
        return MetaClusterConfig.from_dict(config)
    except MetaClusterError:
        raise
    except Exception as exc:
        raise ConfigError(f"invalid config: {exc}") from None


def validate_job(
    session: Session, owner: ApiKey, settings: Settings, request: JobCreate
) -> Validated:
    """Everything a job needs, checked together by its plan (made once, here: the config
    was validated when parsed, with its method options); raises 404 / 422 problems."""
    from metacluster.compress import plan

    model = get_model(session, owner, request.model_id)
    parsed = parse_config(request.config)
    webhook_url, webhook_events = None, None
    if request.webhook_url is not None:
        webhook_url = webhooks.check_url(
            request.webhook_url, allow_private=settings.webhook_allow_private
        )
        webhook_events = webhooks.check_events(request.webhook_events)
    elif request.webhook_events is not None:
        raise ConfigError("webhook_events needs a webhook_url")
    meta = dataset_meta(
        session, owner, request.dataset, max_builtin_samples=settings.max_builtin_samples
    )
    check_device(settings, parsed.device)
    the_plan = plan(model.info, meta, parsed)
    if not the_plan.ok:
        raise IncompatibleJobError(the_plan)
    full = parsed.to_dict()
    queue = settings.queue_for(full.get("device"))
    return Validated(model, full, queue, the_plan, webhook_url, webhook_events)


def check_device(settings: Settings, device: str) -> None:
    """422 `device_unavailable` for a device no worker of this deployment has."""
    if device == "auto":
        return
    available = settings.available_devices()
    family = "cuda" if device.startswith("cuda") else device
    if device not in available and family not in available:
        raise DeviceUnavailableError(device, available)


def check_quota(session: Session, owner: ApiKey, settings: Settings) -> None:
    """429 `quota_exceeded` (with Retry-After) when the key already has as many queued
    and running jobs as it may. The key's row is locked first (PostgreSQL), so two
    concurrent requests of one key cannot both take the last slot."""
    from sqlalchemy import select

    session.execute(select(ApiKey.id).where(ApiKey.id == owner.id).with_for_update())
    active = JobRepository(session).active_count(owner.id)
    limit = settings.max_active_jobs_per_key
    if active >= limit:
        raise QuotaExceededError(
            f"this API key has {active} queued or running jobs, the most it may have "
            f"(METACLUSTER_MAX_ACTIVE_JOBS_PER_KEY={limit}); retry when one has finished",
            retry_after_s=30,
            extra={"active": active, "limit": limit},
        )


def request_hash(request: JobCreate) -> str:
    """sha256 of the canonical request body, to tell a replay from a conflicting reuse."""
    body: dict[str, Any] = {
        "model_id": request.model_id,
        "dataset": request.dataset,
        "config": request.config,
    }
    if request.webhook_url is not None or request.webhook_events is not None:
        body["webhook"] = [request.webhook_url, request.webhook_events]
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def create_job(
    session: Session,
    owner: ApiKey,
    settings: Settings,
    enqueue: Enqueue,
    request: JobCreate,
    *,
    idempotency_key: str | None = None,
) -> tuple[Job, bool]:
    """Validate, add a queued job and schedule its message after commit.

    Returns (job, replayed): with a known Idempotency-Key and the same body the
    existing job comes back and nothing is enqueued again.
    """
    digest = request_hash(request)
    existing = jobs.find_replay(session, owner.id, idempotency_key, digest)
    if existing is not None:  # a replay (or a 409) needs no validation work
        return existing, True
    valid = validate_job(session, owner, settings, request)
    check_quota(session, owner, settings)
    job, replayed = jobs.create(
        session,
        owner_id=owner.id,
        model_id=valid.model.id,
        dataset=request.dataset,
        config=valid.config,
        queue=valid.queue,
        request_hash=digest,
        idempotency_key=idempotency_key,
        webhook_url=valid.webhook_url,
        webhook_events=valid.webhook_events,
    )
    if not replayed:
        job_id, queue = job.id, job.queue
        after_commit(session, lambda: enqueue(job_id, queue))
    return job, replayed


# -- reads and cancel ---------------------------------------------------------
def get_job(session: Session, owner: ApiKey, job_id: str, *, for_update: bool = False) -> Job:
    return JobRepository(session).require(owner.id, job_id, for_update=for_update)


def view_job(session: Session, owner: ApiKey, job_id: str) -> JobView:
    """What `GET /v1/jobs/{id}` shows: the owner's job and its artifacts (404 if none)."""
    return JobRepository(session).require_view(owner.id, job_id)


def list_jobs(
    session: Session, owner: ApiKey, *, after: str | None, limit: int, status: str | None
) -> tuple[Sequence[JobView], str | None]:
    """A page of the owner's jobs, newest first, and the cursor of the next page."""
    return JobRepository(session).view_page(owner.id, after=after, limit=limit, status=status)


def list_events(
    session: Session, owner: ApiKey, job_id: str, *, after: int | None, limit: int
) -> tuple[Sequence[JobEvent], int | None]:
    get_job(session, owner, job_id)
    return JobEventRepository(session).page(job_id, after=after, limit=limit)


def cancel_job(session: Session, owner: ApiKey, job_id: str) -> Job:
    """Queued -> cancelled at once; running -> flagged, the worker stops between steps."""
    # The row lock serialises the cancel against the worker's status writes.
    return jobs.request_cancel(session, get_job(session, owner, job_id, for_update=True))


def delete_job(session: Session, storage: Storage, owner: ApiKey, job_id: str) -> None:
    """A finished job, its events and artifacts (blobs removed once committed)."""
    keys = retention.delete_job(session, get_job(session, owner, job_id, for_update=True))
    after_commit(session, lambda: retention.remove_blobs(storage, keys))


def get_artifact(session: Session, owner: ApiKey, job_id: str, name: str) -> Artifact:
    get_job(session, owner, job_id)
    artifact = ArtifactRepository(session).get(job_id, name)
    if artifact is None:
        raise NotFoundError(f"job {job_id} has no artifact {name!r}")
    return artifact
