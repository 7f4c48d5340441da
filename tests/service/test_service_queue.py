"""The real broker enqueuer: a created job's task message lands on the broker, by name.

Runs against the embedded SQLite broker and a real Redis; no worker consumes it here.
"""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from service_builders import make_key
from service_helpers import CONFIG, upload_dataset, upload_model

from core.producer import TASK_COMPRESS, get_celery
from core.settings import Settings
from service.app import create_app


def _take(settings: Settings, queue: str) -> Any:
    with get_celery(settings).connection_for_read() as conn:
        q = conn.SimpleQueue(queue)
        try:
            msg = q.get(timeout=10)
            msg.ack()
            return msg
        finally:
            q.close()


def test_job_message_reaches_the_broker(broker_settings: Settings) -> None:
    with TestClient(create_app(broker_settings)) as client:
        auth = make_key(broker_settings)
        inputs = {"model_id": upload_model(client, auth), "dataset": upload_dataset(client, auth)}
        r = client.post("/v1/jobs", headers=auth, json={**inputs, "config": CONFIG})
        assert r.status_code == 202, r.text
        job = r.json()
    queue = broker_settings.cpu_queue
    assert job["queue"] == queue
    msg = _take(broker_settings, queue)
    assert msg.headers["task"] == TASK_COMPRESS
    args, kwargs, _ = msg.decode()
    assert (args, kwargs) == ([job["id"]], {})
    assert msg.content_type == "application/json"
