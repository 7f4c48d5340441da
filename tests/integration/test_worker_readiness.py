"""Issue 18: `/readyz` reports a missing worker in the Celery mode too (PostgreSQL +
Redis + a Celery worker process): the worker's heartbeat thread writes its row every
METACLUSTER_WORKER_HEARTBEAT_S, whatever it runs; `kill -9` of the only worker makes
`/readyz` answer 503 once three heartbeats are missed, and a new worker makes it 200.
(Before: `/readyz` checked the database and the broker only, and said ok.)"""

from __future__ import annotations

import signal
from typing import Any

import pytest

from ._stack import wait_until
from .conftest import Stack

pytestmark = pytest.mark.integration


def test_readyz_is_503_while_no_worker_beats(stack: Stack) -> None:
    worker = stack.ensure_one_worker()
    answers: list[dict[str, Any]] = []

    def ready(status: int) -> bool:
        r = stack.client.get("/readyz")
        answers.append(r.json())
        return r.status_code == status

    wait_until(lambda: ready(200), 60, "/readyz 200 with a worker", worker)
    assert answers[-1]["checks"] == {"database": "ok", "broker": "ok", "worker": "ok"}
    worker.popen.send_signal(signal.SIGKILL)
    worker.popen.wait(timeout=10)
    wait_until(lambda: ready(503), 60, "/readyz 503 without a worker", stack.api)
    assert "no worker heartbeat" in answers[-1]["checks"]["worker"], answers[-1]
    assert answers[-1]["checks"]["database"] == answers[-1]["checks"]["broker"] == "ok"
    replacement = stack.start_worker()
    wait_until(lambda: ready(200), 60, "/readyz 200 with a new worker", replacement)
