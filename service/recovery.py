"""Recovery of jobs whose enqueue was lost: queued too long and never delivered -> sent again.

Run by every worker (`RequeueTimer`, started on ``worker_ready``); duplicates are dropped by the runner.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import Engine, exists, select
from sqlalchemy.orm import Session

from service.db.base import utcnow
from service.db.models import Job, JobEvent
from service.repositories import JobEventRepository
from service.settings import Settings

log = logging.getLogger(__name__)

Send = Callable[[str, str], None]
"""Sends job ``id`` to ``queue`` (the Celery task message)."""

# Jobs re-sent per sweep; a larger backlog is worked through by the next sweeps.
BATCH = 500


def celery_send(settings: Settings) -> Send:
    """The real sender: the compress task by name on the job's queue."""
    from worker.celery_app import TASK_COMPRESS, get_celery

    app = get_celery(settings)

    def send(job_id: str, queue: str) -> None:
        app.send_task(TASK_COMPRESS, args=[job_id], queue=queue)

    return send


def requeue_stale_jobs(
    settings: Settings,
    engine: Engine,
    *,
    send: Send | None = None,
    older_than_s: float | None = None,
) -> list[str]:
    """Send again every job queued longer than ``older_than_s`` that no worker took.

    The API sends a job's message only after the creating transaction commits; if
    it dies in between, the job would stay queued forever. A job qualifies when it
    is ``queued``, has no delivery, and has had no event for ``older_than_s``
    (default ``settings.requeue_after_s``): its "queued" event, or the "re-enqueued"
    event of an earlier sweep, so a job waiting in a long backlog gets at most one
    extra message per period. Returns the ids sent.
    """
    send = send or celery_send(settings)
    older_than_s = settings.requeue_after_s if older_than_s is None else older_than_s
    cutoff = utcnow() - timedelta(seconds=older_than_s)
    recent_event = exists().where(JobEvent.job_id == Job.id, JobEvent.at >= cutoff)
    with Session(engine, expire_on_commit=False) as session, session.begin():
        # SKIP LOCKED: several workers sweep at once; on PostgreSQL each job goes to one
        # of them (the event written below keeps the others off it after the commit).
        jobs = session.execute(
            select(Job.id, Job.queue)
            .where(
                Job.status == "queued",
                Job.deliveries == 0,
                Job.created_at < cutoff,
                ~recent_event,
            )
            .order_by(Job.created_at)
            .limit(BATCH)
            .with_for_update(skip_locked=True)
        ).all()
        events = JobEventRepository(session)
        for job_id, _queue in jobs:
            events.add(
                job_id,
                "log",
                message=f"re-enqueued: no worker took the job within {older_than_s:.0f} s",
                data={"requeued": True},
            )
    sent: list[str] = []
    for job_id, queue in jobs:
        try:
            send(job_id, queue)
        except Exception as exc:
            # Its event is committed, so the next attempt comes one period later.
            log.error("re-enqueue of job %s failed: %r", job_id, exc)
            continue
        sent.append(job_id)
    if sent:
        log.warning("re-enqueued %d job(s) that no worker took: %s", len(sent), ", ".join(sent))
    return sent


class RequeueTimer(threading.Thread):
    """Daemon thread of a worker process: `requeue_stale_jobs` now and every interval.

    It uses an engine of its own, so it shares no pooled connection with the tasks
    (or with pool processes forked after it started).
    """

    def __init__(self, settings: Settings, *, send: Send | None = None) -> None:
        super().__init__(name="metacluster-requeue", daemon=True)
        self.settings = settings
        self.interval_s = settings.requeue_interval_s
        self._send = send
        self._stop_event = threading.Event()

    def run(self) -> None:
        from service.db.session import make_engine

        engine = make_engine(self.settings.db_url)
        try:
            while True:
                try:
                    requeue_stale_jobs(self.settings, engine, send=self._send)
                except Exception:
                    # A database or broker outage must not end the timer; retry next time.
                    log.exception("stale-job sweep failed")
                if self._stop_event.wait(self.interval_s):
                    return
        finally:
            engine.dispose()

    def stop(self, timeout: float | None = 5.0) -> None:
        self._stop_event.set()
        if self.is_alive():
            self.join(timeout)


__all__ = ["RequeueTimer", "celery_send", "requeue_stale_jobs"]
