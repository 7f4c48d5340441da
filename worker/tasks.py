"""Celery tasks: thin wrappers that hand a job id to ``service.job_runner``.

Registered with ``shared_task`` so every app built by ``get_celery`` knows them.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import shared_task
from celery.signals import worker_ready
from sqlalchemy.exc import OperationalError

from worker.celery_app import TASK_COMPRESS

log = logging.getLogger(__name__)


# Celery's decorators are untyped. A database that is briefly unreachable must not
# leave the job stuck: the task is retried (a new message) and the runner resumes it.
@shared_task(  # type: ignore[untyped-decorator,misc]
    name=TASK_COMPRESS,
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
    autoretry_for=(OperationalError,),
    retry_backoff=2,
    retry_backoff_max=60,
    retry_jitter=True,
    max_retries=5,
)
def compress_job(job_id: str) -> str:
    """Run compression job ``job_id`` to a final status; returns that status."""
    from service.job_runner import run_job

    status = run_job(job_id)
    log.info("job %s finished: %s", job_id, status)
    return status


@worker_ready.connect  # type: ignore[untyped-decorator,misc]
def _warm_up(**_kwargs: Any) -> None:
    # Before the worker takes its first message, so no job pays the library imports.
    from service.job_runner import warm_up

    warm_up()
