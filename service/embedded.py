"""The embedded mode behind ``metacluster serve``: one process tree, no external services.

Migrations, the API (uvicorn) and one Celery worker process on a server-less broker
(SQLite through kombu), all under ``METACLUSTER_DATA_DIR``. The worker is started by
its command line (``celery -A worker.celery_app``), not imported, and supervised
(`service.supervisor`): restarted when it dies, `/readyz` 503 meanwhile.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from core.migrations import upgrade_database
from core.producer import is_embedded_broker
from core.service_errors import ServiceUnavailableError
from core.settings import DATABASE_FILE, Settings, get_settings, remember_data_dir
from service.supervisor import WorkerSupervisor, die_with_parent

log = logging.getLogger(__name__)

# How long a worker gets to finish its current step after SIGTERM before it is killed;
# an interrupted job is re-enqueued by the next `serve` (see `recover_jobs`).
WORKER_STOP_GRACE_S = 30.0


def create_key(name: str, settings: Settings | None = None) -> dict[str, str]:
    """Create an API key; returns ``{"id", "name", "key"}`` (the plaintext is shown once).

    Migrates the database first (a no-op when current), so a first key can be made
    before the first ``serve``.
    """
    from core.db.session import session_scope
    from service.auth import create_api_key

    settings = settings or get_settings()
    upgrade_database(settings)
    with session_scope(settings) as session:
        row, plaintext = create_api_key(session, name)
        return {"id": row.id, "name": row.name, "key": plaintext}


def describe_database(settings: Settings | None = None) -> tuple[str, bool]:
    """(where the key database is, whether it exists yet), for the `keys` commands to
    say which server their keys are for."""
    settings = settings or get_settings()
    url = settings.db_url
    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///") :])
        return str(path.resolve()), path.is_file()
    return url.split("@")[-1], True


def list_keys(settings: Settings | None = None) -> list[dict[str, str | None]]:
    """Every API key: id, name, prefix, created_at, revoked_at (no secret)."""
    from core.db.session import session_scope
    from service.auth import list_api_keys

    settings = settings or get_settings()
    upgrade_database(settings)
    with session_scope(settings) as session:
        return [_key_row(row) for row in list_api_keys(session)]


def revoke_key(key_id: str, settings: Settings | None = None) -> dict[str, str | None]:
    """Revoke the key with this id (or a unique id prefix); returns its row."""
    from core.db.session import session_scope
    from service.auth import revoke_api_key

    settings = settings or get_settings()
    upgrade_database(settings)
    with session_scope(settings) as session:
        return _key_row(revoke_api_key(session, key_id))


def _key_row(row: Any) -> dict[str, str | None]:
    return {
        "id": row.id,
        "name": row.name,
        "prefix": row.prefix,
        "created_at": row.created_at.isoformat(),
        "revoked_at": row.revoked_at.isoformat() if row.revoked_at else None,
    }


def _resolved_env(settings: Settings) -> dict[str, str]:
    """The environment of a child process that must see exactly these settings."""
    env = dict(os.environ)
    env.update(
        METACLUSTER_DATA_DIR=str(settings.data_dir.resolve()),
        METACLUSTER_DATABASE_URL=settings.db_url,
        METACLUSTER_BROKER_URL=settings.broker,
        METACLUSTER_STORAGE_DIR=str(settings.storage_root.resolve()),
        METACLUSTER_STORAGE_URL=(
            f"file://{settings.storage_root.resolve()}"
            if settings.storage_scheme == "file"
            else str(settings.storage_url)
        ),
        METACLUSTER_SCRATCH_DIR=str(settings.scratch.resolve()),
    )
    return env


def worker_command(
    queues: list[str], *, name: str = "embedded", loglevel: str = "INFO"
) -> list[str]:
    """The ``celery worker`` command line of one solo-pool worker on ``queues``."""
    return [
        sys.executable,
        "-m",
        "celery",
        *(["--quiet"] if loglevel.upper() in ("WARNING", "ERROR") else []),  # no banner
        "-A",
        "worker.celery_app:app",
        "worker",
        "--pool=solo",
        "--concurrency=1",
        "-Q",
        ",".join(queues),
        f"--hostname={name}@%h",
        f"--loglevel={loglevel}",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]


def start_worker(
    settings: Settings, queues: list[str] | None = None, *, loglevel: str = "INFO"
) -> subprocess.Popen[bytes]:
    """Start one solo-pool Celery worker process on the settings' broker."""
    queues = queues or [settings.cpu_queue, settings.gpu_queue]
    return subprocess.Popen(
        worker_command(queues, loglevel=loglevel),
        env=_resolved_env(settings),
        preexec_fn=die_with_parent if sys.platform.startswith("linux") else None,
    )


def stop_worker(proc: subprocess.Popen[bytes], grace_s: float = WORKER_STOP_GRACE_S) -> None:
    """Warm shutdown (SIGTERM), then SIGKILL after ``grace_s``."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        log.warning("worker %d did not stop within %.0f s; killing it", proc.pid, grace_s)
        proc.kill()
        proc.wait()


def recover_jobs(settings: Settings) -> list[str]:
    """Re-enqueue jobs left queued or running when the embedded mode last stopped.

    The server-less transports drop a message whose worker died (there is no
    visibility timeout as with Redis), and in embedded mode this process owns the
    only worker, so every unfinished job is an orphan. The messages take over a
    running job whatever message claimed it before. A duplicate (a queued job whose
    message did survive) is harmless: the one worker runs messages one at a time,
    and the runner ignores deliveries of finished jobs.
    """
    from core import jobs
    from core.db.session import session_scope
    from core.producer import TaskProducer

    with session_scope(settings) as session:
        rows = jobs.unfinished(session)
    producer = TaskProducer(settings)
    for job_id, queue in rows:
        producer.send_compress(job_id, queue, takeover=True)
    if rows:
        log.info("re-enqueued %d unfinished job(s)", len(rows))
    return [job_id for job_id, _ in rows]


def serve(host: str = "127.0.0.1", port: int = 8000, *, log_level: str = "info") -> None:
    """Run the API and one supervised embedded worker until SIGINT/SIGTERM; then stop
    both. A worker that keeps dying stops `serve` with an error (`WorkerSupervisor`)."""
    import uvicorn

    settings = get_settings()
    upgrade_database(settings)
    if "METACLUSTER_DATA_DIR" not in os.environ:
        # `keys create` run from another folder finds this server's database.
        remember_data_dir(settings.data_dir)
    # uvicorn re-raises the signal that stopped it once it has shut down; with this
    # handler in place that lands here instead of killing the process, so the worker
    # is stopped too and `serve` exits 0.
    stop_signals: list[int] = []
    previous = {
        sig: signal.signal(sig, lambda signum, _frame: stop_signals.append(signum))
        for sig in (signal.SIGINT, signal.SIGTERM)
    }
    config = uvicorn.Config(
        "service.app:create_app",
        factory=True,
        host=host,
        port=port,
        log_level=log_level,
        # An open event stream would otherwise hold the shutdown until its job ends.
        timeout_graceful_shutdown=settings.shutdown_grace_s,
    )
    server = uvicorn.Server(config)
    loglevel = "WARNING" if log_level == "warning" else "INFO"
    supervisor = WorkerSupervisor(
        lambda: start_worker(settings, loglevel=loglevel),
        on_restart=lambda: _recover_after_restart(settings),
        on_give_up=lambda: setattr(server, "should_exit", True),
        restart_delay_s=settings.worker_restart_delay_s,
    )
    try:
        if is_embedded_broker(settings.broker):
            recover_jobs(settings)
        # Inspecting uploads and validating jobs need torch, the format readers and the
        # data loaders: import them now, not inside the first request.
        import metacluster.compress
        import metacluster.data
        import metacluster.formats  # noqa: F401

        supervisor.install()
        server.run()
    finally:
        supervisor.stop(stop_worker)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    log.info("stopped (signals: %s)", stop_signals)
    if supervisor.gave_up is not None:
        raise ServiceUnavailableError(supervisor.gave_up)


def _recover_after_restart(settings: Settings) -> None:
    """A restarted worker's jobs: the messages of the dead one went with it on the
    server-less broker, so re-send every unfinished job; the one it was running is
    taken over once its lease expires (as a Celery worker's re-delivery would be)."""
    if is_embedded_broker(settings.broker):
        recover_jobs(settings)


__all__ = [
    "DATABASE_FILE",
    "create_key",
    "describe_database",
    "recover_jobs",
    "serve",
    "start_worker",
    "stop_worker",
    "upgrade_database",
    "worker_command",
]
