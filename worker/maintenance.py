"""Background duties of every worker process besides running jobs: webhooks and retention.

Each runs in a daemon thread with a database engine of its own (`Periodic`), started
on Celery's ``worker_ready`` (no Celery beat needed) and stopped on shutdown:

- the webhook sender (`worker.webhooks.deliver_due`) every ``webhook_poll_s``;
- the retention sweep (`core.retention.sweep`) every ``retention_interval_s`` when
  ``retention_days`` > 0;
- the heartbeat (`core.heartbeats.beat`) every ``worker_heartbeat_s``, by which
  `/readyz` knows a worker is there.

(The stale-job sweep, `worker.recovery.RequeueTimer`, is a `Periodic` too.)

Several workers do this at once without stepping on each other: due rows are taken
with ``FOR UPDATE SKIP LOCKED`` on PostgreSQL.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from core import retention
from core.settings import Settings
from core.storage import get_storage

log = logging.getLogger(__name__)

Tick = Callable[[Engine], object]


class Periodic(threading.Thread):
    """Runs `tick(engine)` now and then every `interval_s` until `stop`; a failing tick
    (a database or broker outage) is logged as ``what`` (default: the thread's name)
    and tried again at the next interval.

    The engine is its own, so the thread shares no pooled connection with the tasks
    (or with pool processes forked after it started).
    """

    def __init__(
        self,
        name: str,
        settings: Settings,
        interval_s: float,
        tick: Tick,
        *,
        what: str | None = None,
    ) -> None:
        super().__init__(name=f"metacluster-{name}", daemon=True)
        self.settings = settings
        self.interval_s = interval_s
        self.what = what or self.name
        self._tick = tick
        self._stop_event = threading.Event()

    def run(self) -> None:
        from core.db.session import make_engine

        engine = make_engine(self.settings.db_url)
        try:
            while True:
                try:
                    self._tick(engine)
                except Exception:
                    # On the logger of the subclass's module (worker.recovery for the requeue).
                    logging.getLogger(type(self).__module__).exception(
                        "%s failed; trying again in %.1f s", self.what, self.interval_s
                    )
                if self._stop_event.wait(self.interval_s):
                    return
        finally:
            engine.dispose()

    def stop(self, timeout: float | None = 5.0) -> None:
        self._stop_event.set()
        if self.is_alive():
            self.join(timeout)


def webhook_sender(settings: Settings) -> Periodic:
    from worker.webhooks import deliver_due, make_client

    client = make_client(settings)

    def tick(engine: Engine) -> None:
        # Work through a backlog without waiting a poll interval between batches.
        while deliver_due(settings, engine, client):
            pass

    return Periodic("webhooks", settings, settings.webhook_poll_s, tick)


def sweep_retention(settings: Settings, engine: Engine) -> list[str]:
    """One retention sweep: expired rows in one transaction, then their blobs."""
    with Session(engine, expire_on_commit=False) as session, session.begin():
        keys = retention.sweep(session, settings.retention_days)
    retention.remove_blobs(get_storage(settings), keys)
    return keys


def retention_sweeper(settings: Settings) -> Periodic:
    return Periodic(
        "retention",
        settings,
        settings.retention_interval_s,
        lambda engine: sweep_retention(settings, engine),
    )


def heartbeat(settings: Settings) -> Periodic:
    """This process's heartbeat row, named ``host:pid``."""
    from core import heartbeats

    name = f"{socket.gethostname()}:{os.getpid()}"

    def tick(engine: Engine) -> None:
        with Session(engine) as session, session.begin():
            heartbeats.beat(session, name)

    return Periodic("heartbeat", settings, settings.worker_heartbeat_s, tick)


def start(settings: Settings) -> list[Periodic]:
    """The duties this worker's settings ask for, started."""
    threads = [heartbeat(settings), webhook_sender(settings)]
    if settings.retention_days > 0:
        threads.append(retention_sweeper(settings))
        log.info(
            "retention: delete what is older than %g days, checking every %.0f s",
            settings.retention_days,
            settings.retention_interval_s,
        )
    for thread in threads:
        thread.start()
    return threads


__all__ = [
    "Periodic",
    "heartbeat",
    "retention_sweeper",
    "start",
    "sweep_retention",
    "webhook_sender",
]
