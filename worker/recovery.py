"""Recovery of jobs whose enqueue was lost: queued too long and never delivered -> sent again.

Run by every worker (`RequeueTimer`, started on ``worker_ready``); duplicates are dropped by the runner.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from core import jobs
from core.producer import TaskProducer
from core.settings import Settings
from worker.maintenance import Periodic

log = logging.getLogger(__name__)

Send = Callable[[str, str], None]
"""Sends job ``id`` to ``queue`` (the Celery task message)."""

# Jobs re-sent per sweep; a larger backlog is worked through by the next sweeps.
BATCH = 500


def producer_send(settings: Settings) -> Send:
    """The real sender: the compress task by name on the job's queue."""
    return TaskProducer(settings).send_compress


def requeue_stale_jobs(
    settings: Settings,
    engine: Engine,
    *,
    send: Send | None = None,
    older_than_s: float | None = None,
) -> list[str]:
    """Send again every job queued longer than ``older_than_s`` that no worker took.

    The API sends a job's message only after the creating transaction commits; if
    it dies in between, the job would stay queued forever. `core.jobs.requeue_stale`
    picks the jobs (queued, never delivered, no event for ``older_than_s``, default
    ``settings.requeue_after_s``; or running with a lease expired for two lease
    periods: an owner that died with no message left to re-deliver) and records a
    "re-enqueued" event, so a job waiting in a long backlog gets at most one extra
    message per period. Returns the ids sent.
    """
    send = send or producer_send(settings)
    older_than_s = settings.requeue_after_s if older_than_s is None else older_than_s
    # SKIP LOCKED: several workers sweep at once; on PostgreSQL each job goes to one
    # of them (the event written keeps the others off it after the commit).
    with Session(engine, expire_on_commit=False) as session, session.begin():
        stale = jobs.requeue_stale(
            session, older_than_s, BATCH, lease_grace_s=2 * settings.lease_ttl_s
        )
    sent: list[str] = []
    for job_id, queue in stale:
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


class RequeueTimer(Periodic):
    """Daemon thread of a worker process: `requeue_stale_jobs` now and every
    ``requeue_interval_s`` (a `Periodic`, so a failed sweep is retried next time)."""

    def __init__(self, settings: Settings, *, send: Send | None = None) -> None:
        super().__init__(
            "requeue", settings, settings.requeue_interval_s, self._sweep, what="stale-job sweep"
        )
        self._send = send

    def _sweep(self, engine: Engine) -> None:
        requeue_stale_jobs(self.settings, engine, send=self._send)


__all__ = ["RequeueTimer", "producer_send", "requeue_stale_jobs"]
