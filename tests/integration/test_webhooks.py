"""Webhooks end to end: a real local HTTP receiver checks every Standard Webhooks signature
and the replay window, while the real stack (uvicorn, celery worker, Redis, PostgreSQL)
runs a job that subscribed to started, stage and succeeded.

The receiver fails the first delivery (HTTP 500): the worker's sender retries it with
the same webhook-id, and every attempt is a `webhook` job event. The key's secret was
rotated before the job, so each message carries two signatures (old and new secret).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from ._stack import JOB_ARTIFACTS, events
from .conftest import Stack
from .test_redis_postgres import QUICK

pytestmark = pytest.mark.integration


@dataclass
class Receiver:
    """What the receiver saw: every request, and the events whose signature verified."""

    secrets: list[str]
    fail_first: int = 1
    requests: list[dict[str, Any]] = field(default_factory=list)
    verified: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handle(self, body: bytes, headers: dict[str, str]) -> int:
        from metacluster.webhooks import verify

        with self.lock:
            self.requests.append({"body": body, "headers": headers})
            if self.fail_first > 0:
                self.fail_first -= 1
                return 500
            # A receiver checks with its secret; both the old and the new one work.
            events = [verify(body, headers, secret) for secret in self.secrets]
            assert events[0] == events[1]
            self.verified.append({"event": events[0], "headers": headers, "body": body})
            return 204

    def types(self) -> list[str]:
        with self.lock:
            return [v["event"]["type"] for v in self.verified]


@pytest.fixture
def receiver_url(request: pytest.FixtureRequest) -> Iterator[tuple[str, Receiver]]:
    receiver: Receiver = request.param

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            try:
                code = receiver.handle(body, dict(self.headers.items()))
            except Exception as exc:  # a bad signature: refuse, and keep the reason
                receiver.requests[-1]["error"] = repr(exc)
                code = 400
            self.send_response(code)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hooks/metacluster", receiver
    finally:
        server.shutdown()
        server.server_close()


def _wait_for(check: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.parametrize("receiver_url", [Receiver(secrets=[])], indirect=True)
def test_signed_webhooks_are_delivered_retried_and_recorded(
    stack: Stack, uploaded: dict[str, Any], receiver_url: tuple[str, Receiver]
) -> None:
    from metacluster.webhooks import WebhookVerificationError, verify

    url, receiver = receiver_url
    old = stack.client.get("/v1/webhooks/secret").json()["secret"]
    rotated = stack.client.post("/v1/webhooks/secret/rotate").json()
    assert old.startswith("whsec_") and rotated["previous"] == old
    receiver.secrets = [old, rotated["secret"]]

    stack.ensure_one_worker()
    r = stack.client.post(
        "/v1/jobs",
        json={
            "model_id": uploaded["model"]["id"],
            "dataset": uploaded["dataset"]["id"],
            "config": QUICK,
            "webhook_url": url,
            "webhook_events": ["started", "stage", "succeeded"],
        },
    )
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    _wait_for(lambda: "job.succeeded" in receiver.types(), 240, "the job.succeeded webhook")

    # Every subscribed kind came, verified. (Order is not promised: a retried message can
    # arrive after later ones, as with any Standard Webhooks sender.)
    types = receiver.types()
    assert {"job.started", "job.stage", "job.succeeded"} <= set(types)
    assert types.count("job.started") == 1 and types.count("job.succeeded") == 1
    assert not [q for q in receiver.requests if "error" in q], receiver.requests
    final = next(v["event"] for v in receiver.verified if v["event"]["type"] == "job.succeeded")
    assert final["data"]["id"] == job_id and final["data"]["status"] == "succeeded"
    assert final["data"]["metrics"]["ratio"] > 1
    assert sorted(a["name"] for a in final["data"]["artifacts"]) == JOB_ARTIFACTS
    assert final["data"]["report_url"] == f"/v1/jobs/{job_id}/report"
    for v in receiver.verified:
        assert len(v["headers"]["webhook-signature"].split()) == 2  # old and new secret

    # The first request got a 500: the same message (same webhook-id) came again.
    first_id = receiver.requests[0]["headers"]["webhook-id"]
    again = [q for q in receiver.requests if q["headers"]["webhook-id"] == first_id]
    assert len(again) == 2 and again[0]["body"] == again[1]["body"]
    assert again[0]["headers"]["webhook-timestamp"] <= again[1]["headers"]["webhook-timestamp"]

    # Every attempt is a job event.
    _wait_for(
        lambda: (
            sum(e["kind"] == "webhook" for e in events(stack.client, job_id))
            == len(receiver.requests)
        ),
        30,
        "one webhook event per attempt",
    )
    attempts = [e["data"] for e in events(stack.client, job_id) if e["kind"] == "webhook"]
    retried = [a for a in attempts if a["delivery"] == first_id]
    assert [(a["attempt"], a["ok"], a["status_code"]) for a in retried] == [
        (1, False, 500),
        (2, True, 204),
    ]
    assert retried[0]["retry_in_s"] > 0

    # Replay window and integrity, as a receiver checks them.
    last = next(v for v in receiver.verified if v["event"]["type"] == "job.succeeded")
    raw, headers = last["body"], last["headers"]
    assert verify(raw, headers, old)["type"] == "job.succeeded"
    sent_at = int(headers["webhook-timestamp"])
    with pytest.raises(WebhookVerificationError, match="replay"):
        verify(raw, headers, old, now=sent_at + 600)
    with pytest.raises(WebhookVerificationError, match="signature"):
        verify(raw.replace(b"succeeded", b"failed"), headers, old)
    with pytest.raises(WebhookVerificationError):
        verify(raw, headers, "whsec_" + "A" * 32)
