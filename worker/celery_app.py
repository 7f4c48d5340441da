"""The worker's Celery application: the shared broker config plus the task modules.

``celery -A worker.celery_app worker`` finds ``app`` here; the producer side
(`core.producer`) builds the same config without importing any task.
"""

from __future__ import annotations

import functools
from typing import Any

from celery import Celery

from core.producer import make_celery
from core.settings import Settings, get_settings

TASK_MODULES = ["worker.tasks"]


@functools.cache
def _cached(settings_json: str) -> Celery:
    return make_celery(Settings.model_validate_json(settings_json), include=TASK_MODULES)


def get_worker_app(settings: Settings | None = None) -> Celery:
    """The worker process's app for ``settings`` (default: from the environment)."""
    return _cached((settings or get_settings()).model_dump_json())


def __getattr__(name: str) -> Any:
    # `celery -A worker.celery_app worker` looks up `app` (or `celery`) on this module;
    # building it lazily keeps importing this module free of settings side effects.
    if name in ("app", "celery"):
        return get_worker_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
