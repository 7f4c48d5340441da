"""Deleting what users uploaded or made: models, datasets, jobs, on request or by age.

Rows go in the caller's transaction; their blobs only after it committed (the caller
passes the returned keys to `remove_blobs`), so a rolled-back delete loses no file. A
job is deleted through `core.jobs.delete` (a finished job only); a model or dataset that
a queued or running job uses is a 409.

Retention (`Settings.retention_days` > 0): the workers' periodic `sweep` deletes
finished jobs that ended before the cutoff, then models and datasets uploaded before it
that no job newer than the cutoff still uses.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import timedelta

from sqlalchemy.orm import Session

from core import jobs
from core.db.base import utcnow
from core.db.models import DatasetRecord, Job, ModelRecord
from core.repositories import DatasetRepository, JobRepository, ModelRepository
from core.service_errors import ConflictError
from core.storage import Storage, model_prefix

log = logging.getLogger(__name__)

# Rows deleted per kind and sweep; a larger backlog is worked through by the next sweeps.
BATCH = 200


class InUseError(ConflictError, code="in_use"):
    """A model or dataset that a queued or running job still uses."""


def delete_job(session: Session, job: Job) -> list[str]:
    """A finished job (locked by the caller) and its rows; returns its blob prefixes."""
    return jobs.delete(session, job)


def delete_model(session: Session, model: ModelRecord) -> list[str]:
    """The model, with the (finished) jobs made from it; returns their blob prefixes."""
    repo = JobRepository(session)
    if repo.using(model_id=model.id):
        raise InUseError(f"model {model.id} is used by a queued or running job; cancel it first")
    keys = [model_prefix(model.id)]
    for job in repo.of_model(model.id):
        keys += jobs.delete(session, job)
    ModelRepository(session).delete(model)
    return keys


def delete_dataset(session: Session, dataset: DatasetRecord) -> list[str]:
    """The dataset (finished jobs keep their record of it); returns its blob key."""
    if JobRepository(session).using(dataset=dataset.id):
        raise InUseError(
            f"dataset {dataset.id} is used by a queued or running job; cancel it first"
        )
    DatasetRepository(session).delete(dataset)
    return [dataset.storage_key]


def remove_blobs(storage: Storage, keys: Iterable[str]) -> None:
    """Remove blobs and prefixes (keys ending in ``/``); failures are logged, not raised:
    the rows are gone, a leftover file is only space."""
    for key in keys:
        try:
            if key.endswith("/"):
                storage.delete_prefix(key)
            else:
                storage.delete(key)
        except Exception:
            log.warning("could not delete blob(s) %s", key, exc_info=True)


def sweep(session: Session, older_than_days: float, *, batch: int = BATCH) -> list[str]:
    """Delete what retention let expire; returns the blob keys to remove after commit."""
    cutoff = utcnow() - timedelta(days=older_than_days)
    keys: list[str] = []
    job_repo = JobRepository(session)
    expired_jobs = job_repo.finished_before(cutoff, batch)
    for job in expired_jobs:
        keys += jobs.delete(session, job)
    models = [
        m
        for m in ModelRepository(session).created_before(cutoff, batch)
        if not job_repo.using(model_id=m.id, finished_since=cutoff)
    ]
    for model in models:
        keys += delete_model(session, model)
    datasets = [
        d
        for d in DatasetRepository(session).created_before(cutoff, batch)
        if not job_repo.using(dataset=d.id, finished_since=cutoff)
    ]
    for dataset in datasets:
        keys += delete_dataset(session, dataset)
    if expired_jobs or models or datasets:
        log.info(
            "retention (%g days): deleted %d job(s), %d model(s), %d dataset(s)",
            older_than_days,
            len(expired_jobs),
            len(models),
            len(datasets),
        )
    return keys


__all__ = [
    "InUseError",
    "delete_dataset",
    "delete_job",
    "delete_model",
    "remove_blobs",
    "sweep",
]
