"""The Celery application: broker, routing and delivery semantics of compression jobs.

Configured from ``service.settings.Settings``; the API enqueues by task name only.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from celery import Celery

if TYPE_CHECKING:
    from service.settings import Settings

TASK_COMPRESS = "metacluster.compress_job"

# kombu's SQLAlchemy and filesystem transports poll; the default (1 s) would add
# up to a second of latency before a job starts in embedded mode.
_POLLING_INTERVAL_S = 0.2


def _is_embedded(broker_url: str) -> bool:
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


def make_celery(settings: Settings) -> Celery:
    """A Celery app bound to ``settings`` (broker, queues); no result backend."""
    app = Celery("metacluster", broker=settings.broker, include=["worker.tasks"])
    app.conf.update(
        # The job row is the record of truth; Celery's result backend is not used.
        result_backend=None,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        # A worker killed mid-job (OOM, SIGKILL, node loss) must leave the message
        # on the broker so another worker re-runs it; run_job is idempotent and
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
        worker_enable_remote_control=not _is_embedded(settings.broker),
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
    from service.settings import Settings

    return make_celery(Settings.model_validate_json(settings_json))


def get_celery(settings: Settings | None = None) -> Celery:
    """The process-wide Celery app of ``settings`` (default: ``get_settings()``).

    Cached per distinct settings, so tests that change the environment and clear
    ``get_settings``'s cache get an app for the new broker.
    """
    if settings is None:
        from service.settings import get_settings

        settings = get_settings()
    return _cached_celery(settings.model_dump_json())


def __getattr__(name: str) -> Any:
    # `celery -A worker.celery_app worker` looks up `app` (or `celery`) on this module;
    # building it lazily keeps importing TASK_COMPRESS free of settings side effects.
    if name in ("app", "celery"):
        return get_celery()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
