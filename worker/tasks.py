"""Celery tasks: thin wrappers that hand a job id to ``worker.runner``.

Registered with ``shared_task`` so every app built by ``get_celery`` knows them.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from celery import shared_task
from celery.signals import worker_ready, worker_shutdown
from sqlalchemy.exc import OperationalError

from core.producer import TASK_COMPRESS

if TYPE_CHECKING:
    from worker.maintenance import Periodic
    from worker.recovery import RequeueTimer

log = logging.getLogger(__name__)


# Celery's decorators are untyped. A database that is briefly unreachable must not
# leave the job stuck: the task is retried (a new message) and the runner resumes it.
@shared_task(  # type: ignore[untyped-decorator,misc]
    bind=True,
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
def compress_job(self: Any, job_id: str, takeover: bool = False) -> str:
    """Run compression job ``job_id`` to a final status; returns that status.

    ``takeover``: this message replaces one that was lost while the job ran.
    """
    from worker.runner import run_job

    # The task id is the same on a broker re-delivery and on a retry, and differs
    # between two messages for one job: the runner lets only the first claimant run it.
    status = run_job(job_id, message_id=self.request.id, takeover=takeover)
    log.info("job %s finished: %s", job_id, status)
    return status


_requeue_timer: RequeueTimer | None = None


@worker_ready.connect  # type: ignore[untyped-decorator,misc]
def _warm_up(**_kwargs: Any) -> None:
    # Before the worker takes its first message, so no job pays the library imports.
    from worker.runner import warm_up

    warm_up()


@worker_ready.connect  # type: ignore[untyped-decorator,misc]
def _start_requeue_timer(**_kwargs: Any) -> None:
    # Every worker re-sends jobs whose enqueue was lost (no Celery beat needed); the
    # sweeps of several workers do not collide (see worker.recovery).
    global _requeue_timer
    from core.settings import get_settings
    from worker.recovery import RequeueTimer

    settings = get_settings()
    if settings.requeue_interval_s <= 0 or _requeue_timer is not None:
        return
    _requeue_timer = RequeueTimer(settings)
    _requeue_timer.start()
    log.info(
        "re-enqueue of stale queued jobs: every %.0f s, after %.0f s",
        settings.requeue_interval_s,
        settings.requeue_after_s,
    )


_duties: list[Periodic] = []


@worker_ready.connect  # type: ignore[untyped-decorator,misc]
def _start_duties(**_kwargs: Any) -> None:
    # The webhook sender and the retention sweep (see worker.maintenance).
    from core.settings import get_settings
    from worker import maintenance

    if not _duties:
        _duties.extend(maintenance.start(get_settings()))


@worker_shutdown.connect  # type: ignore[untyped-decorator,misc]
def _stop_requeue_timer(**_kwargs: Any) -> None:
    global _requeue_timer
    if _requeue_timer is not None:
        _requeue_timer.stop()
        _requeue_timer = None
    while _duties:
        _duties.pop().stop()
