"""Enqueueing jobs on Celery by task name, after the creating transaction commits.

If the broker refuses a job, the (committed) job is marked failed so it is never stuck queued.
"""

from __future__ import annotations

import logging

from service.db.base import utcnow
from service.db.models import Job
from service.db.session import session_scope
from service.errors import ServiceUnavailableError
from service.settings import Settings

log = logging.getLogger(__name__)


class CeleryEnqueuer:
    """Sends ``metacluster.compress_job(job_id)`` to the job's queue."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def __call__(self, job_id: str, queue: str) -> None:
        from worker.celery_app import TASK_COMPRESS, get_celery

        try:
            get_celery(self.settings).send_task(TASK_COMPRESS, args=[job_id], queue=queue)
        except Exception as exc:
            log.error("enqueue of job %s failed: %r", job_id, exc)
            mark_enqueue_failed(self.settings, job_id, str(exc))
            raise ServiceUnavailableError(
                f"job {job_id} was created but the broker refused it; it has been marked failed"
            ) from None


def mark_enqueue_failed(settings: Settings, job_id: str, reason: str) -> None:
    """Fail a committed job whose message never reached the broker."""
    with session_scope(settings) as session:
        job = session.get(Job, job_id)
        if job is not None and job.status == "queued":
            job.status = "failed"
            job.finished_at = utcnow()
            job.error = {"code": "enqueue_failed", "message": f"broker unreachable: {reason}"}
