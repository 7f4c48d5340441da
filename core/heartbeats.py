"""Worker heartbeats in the database: how `/readyz` knows a worker is there, whatever
the broker (Redis, the embedded one) and whatever job the worker runs.

Each worker process writes its row every ``worker_heartbeat_s`` from a thread of its own
(`worker.maintenance.heartbeat`); a worker is present when some row is newer than
``STALE_AFTER`` heartbeats. Rows of workers gone for an hour are removed on the way.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from core.db.base import utcnow
from core.db.models import WorkerHeartbeat

STALE_AFTER = 3  # heartbeats missed before a worker counts as gone
_FORGET_AFTER = timedelta(hours=1)


def beat(session: Session, name: str) -> None:
    """Record that worker ``name`` is alive now (not committed)."""
    now = utcnow()
    session.merge(WorkerHeartbeat(name=name, seen_at=now))
    session.execute(delete(WorkerHeartbeat).where(WorkerHeartbeat.seen_at < now - _FORGET_AFTER))


def latest(session: Session) -> datetime | None:
    """When the most recent heartbeat of any worker was written (None: never)."""
    return session.scalar(select(func.max(WorkerHeartbeat.seen_at)))


def missing_worker(session: Session, heartbeat_s: float) -> str | None:
    """Why no worker counts as present, or None when one does."""
    seen = latest(session)
    if seen is None:
        return "no worker has ever reported a heartbeat"
    if seen.tzinfo is None:  # a backend that dropped the zone: it is UTC
        seen = seen.replace(tzinfo=UTC)
    age = (utcnow() - seen).total_seconds()
    if age > STALE_AFTER * heartbeat_s:
        return f"no worker heartbeat for {age:.0f} s (expected every {heartbeat_s:g} s)"
    return None
