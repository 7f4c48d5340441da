"""`metacluster.client` and the live event stream against the real stack: uvicorn, a
celery worker, Redis and PostgreSQL (the `stack` fixture).

Upload, create (idempotent), wait with a progress bar from the event stream, download
with a checked sha256, list every page; a raw Server-Sent Events client that drops the
connection in the middle of a job and resumes with Last-Event-ID; retries on 429/503.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest

from ._stack import events, get_job
from .conftest import SSE_HEARTBEAT_S, Stack
from .test_redis_postgres import LONG_META, QUICK

pytestmark = pytest.mark.integration


def _client(stack: Stack) -> Any:
    from metacluster.client import Client

    return Client(str(stack.client.base_url), stack.key["key"])


def test_client_uploads_compresses_waits_downloads_and_lists(
    stack: Stack,
    inputs: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from metacluster.client import Job, NotFoundError, ValidationError

    stack.ensure_one_worker()
    with _client(stack) as mc:
        model = mc.upload_model(inputs["model"])
        dataset = mc.upload_dataset(inputs["data"])
        assert model.family == "bspline" and dataset.task == "classification"

        plan = mc.create_job(model, dataset, QUICK, dry_run=True)
        assert plan["valid"] is True and plan["plan"]["layers"]

        job = mc.create_job(model, dataset, QUICK, idempotency_key="client-e2e")
        again = mc.create_job(model, dataset, QUICK, idempotency_key="client-e2e")
        assert isinstance(job, Job) and again.id == job.id  # a retried create is one job

        done = mc.wait(job, timeout=240, progress=True)
        assert done.status == "succeeded", done.raw
        bar = capsys.readouterr().err
        assert "100%" in bar and "succeeded" in bar  # the progress bar went to stderr
        assert any(stage in bar for stage in ("meta", "kmeans", "finetune"))

        path = mc.download(done, tmp_path)
        assert path == tmp_path / "model.mcz"
        assert hashlib.sha256(path.read_bytes()).hexdigest() == done.artifact().sha256
        assert path.stat().st_size == done.metrics["bytes_after"]

        # Every page: page_size 1 walks the cursor through all of them.
        extra = mc.upload_model(inputs["model"])
        ids = [m.id for m in mc.list_models(page_size=1)]
        assert ids[:2] == [extra.id, model.id] and len(ids) == len(set(ids))
        assert job.id in [j.id for j in mc.list_jobs(page_size=1)]
        assert job.id in [j.id for j in mc.list_jobs(status="succeeded")]

        # The stream (follow) and the JSON pages give the same events.
        streamed = [e.seq for e in mc.events(job)]
        listed = [e.seq for e in mc.events(job, follow=False)]
        assert streamed == listed == list(range(1, len(listed) + 1))

        with pytest.raises(NotFoundError) as missing:
            mc.get_job("job_does_not_exist")
        assert missing.value.status == 404 and missing.value.code == "not_found"
        with pytest.raises(ValidationError) as bad:
            mc.create_job(model, dataset, {"k": 1})
        assert bad.value.code == "invalid_config"


def _sse(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    """Raw SSE records ({"id", "event", "data"} or {"comment"}) from response lines."""
    record: dict[str, Any] = {}
    for line in lines:
        if line.startswith(":"):
            yield {"comment": line[1:].strip()}
        elif line == "":
            if record:
                yield record
            record = {}
        else:
            name, _, value = line.partition(":")
            record[name] = value.lstrip(" ")


def test_event_stream_resumes_with_last_event_id_after_a_dropped_connection(
    stack: Stack, uploaded: dict[str, Any]
) -> None:
    import json

    stack.ensure_one_worker()
    config = {**LONG_META, "meta_epochs": 6}
    r = stack.client.post(
        "/v1/jobs",
        json={
            "model_id": uploaded["model"]["id"],
            "dataset": uploaded["dataset"]["id"],
            "config": config,
        },
    )
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    url = f"/v1/jobs/{job_id}/events"
    sse = {"Accept": "text/event-stream"}
    first: list[dict[str, Any]] = []
    # First connection: read until a few progress events came, then drop it mid-job.
    with stack.client.stream("GET", url, headers=sse) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for record in _sse(response.iter_lines()):
            if "id" in record:
                first.append(record)
                if sum(1 for e in first if e["event"] == "progress") >= 3:
                    break
    assert get_job(stack.client, job_id)["status"] == "running"
    last = int(first[-1]["id"])
    # Reconnect: only newer events, up to the final one; then the server closes.
    second: list[dict[str, Any]] = []
    with stack.client.stream(
        "GET", url, headers={**sse, "Last-Event-ID": str(last)}, timeout=120
    ) as response:
        second = [rec for rec in _sse(response.iter_lines()) if "id" in rec]
    seqs = [int(e["id"]) for e in first + second]
    assert seqs == list(range(1, len(seqs) + 1)), seqs  # no gap, no duplicate
    final = json.loads(second[-1]["data"])
    assert second[-1]["event"] == "status" and final["data"]["status"] == "succeeded"
    assert [e["seq"] for e in events(stack.client, job_id) if e["seq"] <= seqs[-1]] == seqs
    # A third connection after the end: nothing new, closed at once.
    t0 = time.monotonic()
    with stack.client.stream(
        "GET", url, headers={**sse, "Last-Event-ID": str(seqs[-1])}
    ) as response:
        assert [r for r in _sse(response.iter_lines()) if "id" in r] == []
    assert time.monotonic() - t0 < 10


def test_event_stream_sends_heartbeats_while_a_job_waits(
    stack: Stack, uploaded: dict[str, Any]
) -> None:
    # device "cuda" routes the job to the GPU queue, which no worker here consumes: it
    # stays queued, and the stream has nothing to say but heartbeats until the cancel.
    r = stack.client.post(
        "/v1/jobs",
        json={
            "model_id": uploaded["model"]["id"],
            "dataset": uploaded["dataset"]["id"],
            "config": {**QUICK, "device": "cuda"},
        },
    )
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]

    def cancel_later() -> None:
        time.sleep(3 * SSE_HEARTBEAT_S + 0.5)
        stack.client.post(f"/v1/jobs/{job_id}/cancel")

    canceller = threading.Thread(target=cancel_later)
    canceller.start()
    try:
        with stack.client.stream(
            "GET", f"/v1/jobs/{job_id}/events", headers={"Accept": "text/event-stream"}
        ) as response:
            records = list(_sse(response.iter_lines()))
    finally:
        canceller.join()
    heartbeats = [r for r in records if r.get("comment") == "heartbeat"]
    assert len(heartbeats) >= 2, records
    assert [r["event"] for r in records if "id" in r][-1] == "status"
    assert get_job(stack.client, job_id)["status"] == "cancelled"


class _Proxy(BaseHTTPRequestHandler):
    """A proxy in front of the API: answers 503 / 429 (Retry-After: 0) the first times,
    and can strip ``Accept`` (as some proxies do), so the API answers JSON, not a stream."""

    failures: ClassVar[list[int]] = []
    strip_accept = False
    target = ""

    def _forward(self) -> None:
        if self.failures:
            code = self.failures.pop(0)
            body = b'{"status": %d, "code": "x", "title": "t", "detail": "d"}' % code
            self.send_response(code)
            self.send_header("Retry-After", "0")
            self.send_header("Content-Type", "application/problem+json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else None
        drop = {"host", "accept"} if self.strip_accept else {"host"}
        headers = {k: v for k, v in self.headers.items() if k.lower() not in drop}
        upstream = httpx.request(
            self.command, self.target + self.path, headers=headers, content=body, timeout=60
        )
        self.send_response(upstream.status_code)
        for k, v in upstream.headers.items():
            if k.lower() not in ("transfer-encoding", "content-encoding", "connection"):
                self.send_header(k, v)
        self.end_headers()
        self.wfile.write(upstream.content)

    do_GET = do_POST = _forward

    def log_message(self, *args: Any) -> None:
        pass


@contextlib.contextmanager
def _proxy(target: str, failures: list[int], *, strip_accept: bool = False) -> Iterator[str]:
    handler = type(
        "Proxy", (_Proxy,), {"failures": failures, "target": target, "strip_accept": strip_accept}
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_client_retries_429_and_503_honouring_retry_after(stack: Stack) -> None:
    from metacluster.client import Client, ServiceUnavailableError

    with _proxy(str(stack.client.base_url), [503, 429]) as url, Client(url, stack.key["key"]) as mc:
        slept: list[float] = []
        mc._sleep = slept.append
        assert isinstance(list(mc.list_jobs(status="queued")), list)
        assert slept == [0.0, 0.0]  # Retry-After: 0, twice, then the real answer
    with (
        _proxy(str(stack.client.base_url), [503] * 3) as url,
        Client(url, stack.key["key"], max_retries=2) as mc,
    ):
        mc._sleep = lambda _s: None
        with pytest.raises(ServiceUnavailableError) as exc:
            mc.get_job("job_x")
        assert exc.value.status == 503


def test_wait_polls_when_a_proxy_strips_the_event_stream(
    stack: Stack, uploaded: dict[str, Any]
) -> None:
    from metacluster.client import Client

    stack.ensure_one_worker()
    with (
        _proxy(str(stack.client.base_url), [], strip_accept=True) as url,
        Client(url, stack.key["key"]) as mc,
    ):
        job = mc.create_job(uploaded["model"]["id"], uploaded["dataset"]["id"], QUICK)
        polls: list[float] = []
        mc._sleep = lambda s: (polls.append(s), time.sleep(s))  # type: ignore[func-returns-value]
        done = mc.wait(job, timeout=240, progress=False, poll_interval=0.2)
    assert done.status == "succeeded", done.raw
    # It polled, with a growing interval (the backoff), rather than streaming.
    assert len(polls) >= 2 and polls == sorted(polls) and polls[0] == pytest.approx(0.2)


def test_async_client_does_the_same(stack: Stack, inputs: dict[str, Path], tmp_path: Path) -> None:
    import asyncio

    from metacluster.client import AsyncClient, NotFoundError

    stack.ensure_one_worker()

    async def scenario() -> tuple[Any, list[int], Path, list[str]]:
        async with AsyncClient(str(stack.client.base_url), stack.key["key"]) as mc:
            model = await mc.upload_model(inputs["model"])
            dataset = await mc.upload_dataset(inputs["data"])
            job = await mc.create_job(model, dataset, QUICK)
            done = await mc.wait(job, timeout=240)
            seqs = [e.seq async for e in mc.events(done)]
            path = await mc.download(done, tmp_path)
            listed = [j.id async for j in mc.list_jobs(page_size=2)]
            try:
                await mc.get_job("job_nope")
            except NotFoundError:
                listed.append("404")
            return done, seqs, path, listed

    done, seqs, path, listed = asyncio.run(scenario())
    assert done.status == "succeeded", done.raw
    assert seqs == list(range(1, len(seqs) + 1)) and seqs
    assert hashlib.sha256(path.read_bytes()).hexdigest() == done.artifact().sha256
    assert done.id in listed and listed[-1] == "404"


def test_a_pykan_checkpoint_goes_up_as_its_two_files(stack: Stack, tmp_path: Path) -> None:
    import contextlib as ctx
    import io as io_

    kan = pytest.importorskip("kan", reason="pykan is not installed")
    with ctx.redirect_stdout(io_.StringIO()):
        model = kan.KAN(
            width=[8, 4, 3], grid=3, k=3, seed=0, auto_save=False, ckpt_path=str(tmp_path)
        )
        model.saveckpt(str(tmp_path / "m"))
    with _client(stack) as mc:
        for name in ("m", "m_state", "m_config.yml"):  # the prefix or either file
            uploaded = mc.upload_model(tmp_path / name)
            assert uploaded.format == "pykan" and uploaded.filename == "m_state", uploaded
            assert uploaded.raw["edges"] == 8 * 4 + 4 * 3


def test_async_client_reads_reports_and_deletes_like_the_sync_one(
    stack: Stack, inputs: dict[str, Path]
) -> None:
    """The methods `AsyncClient` gained (get_model, list_datasets, dry runs, on_event,
    report_html, pages of events, webhook_secret, delete_*, close) against the real stack,
    each checked against what the sync client answers."""
    import asyncio

    from metacluster.client import AsyncClient, Event, NotFoundError

    stack.ensure_one_worker()
    seen: list[Event] = []

    async def scenario() -> dict[str, Any]:
        async with AsyncClient(str(stack.client.base_url), stack.key["key"]) as mc:
            model = await mc.upload_model(inputs["model"])
            dataset = await mc.upload_dataset(inputs["data"])
            plan = await mc.create_job(model, dataset, QUICK, dry_run=True)
            job = await mc.create_job(model, dataset, QUICK)
            done = await mc.wait(job, timeout=240, progress=False, on_event=seen.append)
            out = {
                "model": await mc.get_model(model.id),
                "datasets": [d.id async for d in mc.list_datasets(page_size=1)],
                "dataset": dataset,
                "plan": plan,
                "done": done,
                "html": await mc.report_html(done),
                "events": [e.seq async for e in mc.events(done, follow=False, after=2)],
                "secret": await mc.webhook_secret(),
                "rotated": await mc.webhook_secret(rotate=True),
            }
            with _client(stack) as sync:  # what the sync client answers now
                out["sync_model"] = sync.get_model(model)
                out["sync_html"] = sync.report_html(done)
                out["sync_secret"] = sync.webhook_secret()
            await mc.delete_job(done)
            await mc.delete_model(model)
            await mc.delete_dataset(dataset)
            for missing in (mc.get_job(done), mc.get_model(model)):
                try:
                    await missing
                except NotFoundError:
                    out.setdefault("gone", 0)
                    out["gone"] += 1
            out["datasets_after"] = [d.id async for d in mc.list_datasets()]
        closed = AsyncClient(str(stack.client.base_url), stack.key["key"])
        await closed.close()
        try:
            await closed.get_job(done)
        except RuntimeError as exc:  # httpx: the client has been closed
            out["closed"] = str(exc)
        return out

    out = asyncio.run(scenario())
    done = out["done"]
    assert done.status == "succeeded", done.raw
    assert out["plan"]["valid"] is True and out["plan"]["plan"]["layers"]
    assert seen and seen[-1].final and [e.seq for e in seen] == sorted(e.seq for e in seen)
    assert out["model"] == out["sync_model"] and out["model"].family == "bspline"
    assert out["dataset"].id in out["datasets"]
    assert out["html"] == out["sync_html"] and out["html"].lstrip().lower().startswith("<!doctype")
    assert out["events"] == list(range(3, seen[-1].seq + 1))
    assert out["secret"]["secret"].startswith("whsec_")
    assert out["rotated"]["secret"] != out["secret"]["secret"]
    assert out["sync_secret"]["secret"] == out["rotated"]["secret"]
    assert out["gone"] == 2 and out["dataset"].id not in out["datasets_after"]
    assert "closed" in out["closed"]
