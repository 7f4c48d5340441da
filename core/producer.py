"""The task producer: how the API, the embedded mode and the workers' sweeps send work.

Jobs travel as Celery messages by task name only (`TASK_COMPRESS`); nothing here
imports the worker. `make_celery` holds the broker, routing and delivery semantics
that producer and consumer share; `worker.celery_app` adds the task modules.
"""

from __future__ import annotations

import functools
from typing import Any

from celery import Celery

from core.settings import Settings, get_settings

TASK_COMPRESS = "metacluster.compress_job"

# kombu's SQLAlchemy and filesystem transports poll; the default (1 s) would add
# up to a second of latency before a job starts in embedded mode.
_POLLING_INTERVAL_S = 0.2


def is_embedded_broker(broker_url: str) -> bool:
    """A broker that needs no server (kombu's SQLAlchemy or filesystem transport)."""
    return broker_url.startswith(("sqla+", "filesystem:"))


def _transport_options(broker_url: str, visibility_timeout_s: float) -> dict[str, Any]:
    if broker_url.startswith("sqla+"):
        # kombu hands every option of this transport to create_engine(), so the polling
        # interval cannot travel in the options; it is a class attribute of the transport.
        from kombu.transport import sqlalchemy as sqla_transport

        sqla_transport.Transport.polling_interval = _POLLING_INTERVAL_S
        return {}
    if broker_url.startswith("filesystem:"):
        return {"polling_interval": _POLLING_INTERVAL_S}
    if broker_url.startswith(("redis:", "rediss:")):
        # The message of a job whose worker died (acks_late: still unacked) comes back
        # once it is older than the visibility timeout; scan for such messages every
        # quarter of it (at most every 10 s) instead of kombu's every 100 s.
        timeout = float(visibility_timeout_s)
        return {
            "visibility_timeout": timeout,
            "unacked_restore_interval": max(1.0, min(10.0, timeout / 4)),
            "unacked_restore_throttle": 1,
        }
    return {}


def make_celery(settings: Settings, include: list[str] | None = None) -> Celery:
    """A Celery app bound to ``settings`` (broker, queues); no result backend.

    `include`: task modules a worker imports (the producer needs none).
    """
    app = Celery("metacluster", broker=settings.broker, include=include or [])
    app.conf.update(
        # The job row is the record of truth; Celery's result backend is not used.
        result_backend=None,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        # A worker killed mid-job (OOM, SIGKILL, node loss) must leave the message
        # on the broker so another worker re-runs it; the runner is idempotent and
        # resumes from the stage checkpoints.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        broker_connection_retry_on_startup=True,
        broker_transport_options=_transport_options(
            settings.broker, settings.broker_visibility_timeout_s
        ),
        # The server-less transports have no fanout exchange, which remote control,
        # gossip and mingle need; the job row, not `celery inspect`, is the truth anyway.
        worker_enable_remote_control=not is_embedded_broker(settings.broker),
        task_default_queue=settings.cpu_queue,
        # Queues are declared by the workers' -Q option (task_create_missing_queues).
        task_routes={TASK_COMPRESS: {"queue": settings.cpu_queue}},
        worker_hijack_root_logger=False,
        timezone="UTC",
        enable_utc=True,
    )
    return app


@functools.cache
def _cached_celery(settings_json: str) -> Celery:
    return make_celery(Settings.model_validate_json(settings_json))


def get_celery(settings: Settings | None = None) -> Celery:
    """The process-wide producer app of ``settings`` (default: ``get_settings()``).

    Cached per distinct settings, so tests that change the environment and clear
    ``get_settings``'s cache get an app for the new broker.
    """
    return _cached_celery((settings or get_settings()).model_dump_json())


class TaskProducer:
    """Sends ``metacluster.compress_job(job_id)`` messages to a job's queue."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def send_compress(self, job_id: str, queue: str, *, takeover: bool = False) -> None:
        """One message for the job; ``takeover`` resumes a running job whose message
        was lost (the embedded mode's restart). Raises whatever the broker raises."""
        kwargs = {"takeover": True} if takeover else {}
        get_celery(self.settings).send_task(
            TASK_COMPRESS, args=[job_id], kwargs=kwargs, queue=queue
        )


__all__ = ["TASK_COMPRESS", "TaskProducer", "get_celery", "is_embedded_broker", "make_celery"]
