"""Database layer: typed models on one `Base` and session helpers.

Import models from here so Alembic's env sees every table.
"""

from core.db.base import Base, utcnow
from core.db.models import (
    FINISHED_STATUSES,
    JOB_STATUSES,
    ApiKey,
    Artifact,
    DatasetRecord,
    Job,
    JobEvent,
    ModelRecord,
    WebhookDelivery,
    WorkerHeartbeat,
    new_id,
)
from core.db.session import (
    SessionLocal,
    dispose_engines,
    get_engine,
    get_sessionmaker,
    make_engine,
    session_scope,
)

__all__ = [
    "FINISHED_STATUSES",
    "JOB_STATUSES",
    "ApiKey",
    "Artifact",
    "Base",
    "DatasetRecord",
    "Job",
    "JobEvent",
    "ModelRecord",
    "SessionLocal",
    "WebhookDelivery",
    "WorkerHeartbeat",
    "dispose_engines",
    "get_engine",
    "get_sessionmaker",
    "make_engine",
    "new_id",
    "session_scope",
    "utcnow",
]
