"""`Client` and `AsyncClient` against an in-process fake service (httpx.MockTransport):
the same requests, retries, pages, event-stream reconnects, polling and checked downloads
from both.

The clients against the real stack: tests/integration/test_client.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from metacluster import client as mc_client
from metacluster.client import (
    AsyncClient,
    ChecksumError,
    Client,
    Job,
    ServiceUnavailableError,
)
from metacluster.client.calls import Call

BASE = "http://mc.test"
BODY = b"compressed model bytes"
SYNC_SLEPT: list[float] = []


def _job(status: str = "succeeded", sha256: str | None = None) -> dict[str, Any]:
    return {
        "id": "job_1",
        "status": status,
        "artifacts": [
            {
                "name": "model.mcz",
                "bytes": len(BODY),
                "sha256": sha256 or hashlib.sha256(BODY).hexdigest(),
                "url": "/v1/jobs/job_1/artifacts/model.mcz",
            }
        ],
    }


def _sse(*events: dict[str, Any]) -> bytes:
    return b"".join(
        f": heartbeat\n\nid: {e['seq']}\ndata: {json.dumps(e)}\n\n".encode() for e in events
    )


Handler = Callable[[httpx.Request], httpx.Response]


def _run(client_cls: type, handler: Handler, scenario: Callable[[Any], Any], **kw: Any) -> Any:
    """`scenario(client)` with a `Client` or an `AsyncClient` (its coroutine awaited).
    Neither sleeps: `Client` notes its sleeps in `SYNC_SLEPT`, `AsyncClient` in the
    `async_slept` fixture's list."""
    transport = httpx.MockTransport(handler)
    if client_cls is Client:
        with Client(BASE, "mck_test", transport=transport, **kw) as sync:
            sync._sleep = SYNC_SLEPT.append
            return scenario(sync)

    async def run() -> Any:
        async with AsyncClient(BASE, "mck_test", transport=transport, **kw) as client:
            return await scenario(client)

    return asyncio.run(run())


def _both(handler: Handler, scenario: Callable[[Any], Any], **kw: Any) -> list[Any]:
    return [_run(cls, handler, scenario, **kw) for cls in (Client, AsyncClient)]


async def _alist(it: Any) -> list[Any]:
    return [x async for x in it]


def _collect(client: Any, it: Any) -> Any:
    return _alist(it) if isinstance(client, AsyncClient) else list(it)


@pytest.fixture(autouse=True)
def async_slept(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    SYNC_SLEPT.clear()
    slept: list[float] = []
    real = asyncio.sleep

    async def fake(seconds: float) -> None:
        slept.append(seconds)
        await real(0)

    monkeypatch.setattr(asyncio, "sleep", fake)
    return slept


def test_both_clients_send_the_key_and_retry_429_and_503(async_slept: list[float]) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if len(seen) % 3 == 1:
            return httpx.Response(503, headers={"Retry-After": "0"})
        if len(seen) % 3 == 2:
            return httpx.Response(429, headers={"Retry-After": "0"})
        return httpx.Response(200, json=_job())

    jobs = _both(handler, lambda c: c.get_job("job_1"))
    assert [j.id for j in jobs] == ["job_1", "job_1"] and len(seen) == 6
    assert all(r.headers["authorization"] == "Bearer mck_test" for r in seen)
    assert all(r.headers["user-agent"].startswith("metacluster-client/") for r in seen)
    assert SYNC_SLEPT == async_slept == [0.0, 0.0]


def test_both_clients_give_up_with_the_typed_error(async_slept: list[float]) -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(
            503, json={"code": "unavailable", "detail": "db down"}, headers={"Retry-After": "0"}
        )

    for client_cls in (Client, AsyncClient):
        calls.clear()
        with pytest.raises(ServiceUnavailableError, match="db down"):
            _run(client_cls, handler, lambda c: c.get_job("job_1"), max_retries=2)
        assert len(calls) == 3  # the first try and two retries


def test_connection_failures_are_retried_only_when_safe(async_slept: list[float]) -> None:
    tries: dict[str, int] = {}
    keys: list[str] = []

    def create(c: Any) -> Any:
        tries.clear()
        return c.create_job("mdl_1", "digits", {"k": 8}, seed=3)

    def handler(request: httpx.Request) -> httpx.Response:
        what = f"{request.method} {request.url.path} {request.url.query.decode()}"
        tries[what] = tries.get(what, 0) + 1
        keys.append(request.headers.get("idempotency-key", ""))
        if tries[what] == 1:
            raise httpx.ConnectError("refused", request=request)
        if "dry_run" in what:
            return httpx.Response(200, json={"valid": True})
        return httpx.Response(201, json=_job("queued"))

    # Job creation carries an Idempotency-Key (the same on the retry): retried.
    created = _both(handler, create)
    assert all(isinstance(j, Job) and j.status == "queued" for j in created)
    assert keys[0] == keys[1] != "" and keys[2] == keys[3] != "" and keys[0] != keys[2]
    assert len(SYNC_SLEPT) == len(async_slept) == 1  # one backoff each
    # A dry run has none: not retried.
    post = Call("POST", "/v1/jobs", lambda r: r, {"json": {}})
    for client_cls in (Client, AsyncClient):
        tries.clear()
        with pytest.raises(httpx.ConnectError):
            _run(client_cls, handler, lambda c: c._call(post))
        assert tries == {"POST /v1/jobs ": 1}
    with pytest.raises(httpx.ConnectError):
        _run(Client, handler, lambda c: c.create_job("mdl_1", "digits", dry_run=True))
    assert tries["POST /v1/jobs dry_run=true"] == 1


def test_both_clients_follow_every_page() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        after = request.url.params.get("after")
        assert request.url.params["limit"] == "2" and request.url.params["status"] == "queued"
        page = {None: (["a", "b"], "c1"), "c1": (["c", "d"], "c2"), "c2": (["e"], None)}[after]
        items = [{"id": f"job_{i}", "status": "queued"} for i in page[0]]
        return httpx.Response(200, json={"items": items, "next": page[1]})

    listed = _both(handler, lambda c: _collect(c, c.list_jobs(status="queued", page_size=2)))
    assert [[j.id for j in jobs] for jobs in listed] == [[f"job_{i}" for i in "abcde"]] * 2


def test_both_clients_resume_the_event_stream_after_the_last_event(
    async_slept: list[float],
) -> None:
    last_ids: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/events"):
            last_ids.append(request.headers.get("last-event-id"))
            assert request.headers["accept"] == "text/event-stream"
            if len(last_ids) % 2 == 1:  # two events, then the connection ends
                body = _sse({"seq": 1, "kind": "stage"}, {"seq": 2, "kind": "progress"})
            else:  # the server repeats one; the client drops it
                body = _sse(
                    {"seq": 2, "kind": "progress"},
                    {"seq": 3, "kind": "status", "data": {"status": "succeeded"}},
                )
            return httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})
        return httpx.Response(200, json=_job("running"))

    got = _both(handler, lambda c: _collect(c, c.events("job_1", timeout=30)))
    assert [[e.seq for e in events] for events in got] == [[1, 2, 3]] * 2
    assert got[0][-1].final and last_ids == [None, "2", None, "2"]


def test_both_clients_poll_when_there_is_no_event_stream(async_slept: list[float]) -> None:
    polls = {"n": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/events"):  # a proxy that answers JSON
            return httpx.Response(200, json={"items": []})
        polls["n"] += 1
        return httpx.Response(200, json=_job("running" if polls["n"] < 4 else "succeeded"))

    def wait(c: Any) -> Any:
        polls["n"] = 0
        if isinstance(c, AsyncClient):
            return c.wait("job_1", timeout=30, poll_interval=0.5)
        return c.wait("job_1", timeout=30, poll_interval=0.5, progress=False)

    done = _both(handler, wait)
    assert [j.status for j in done] == ["succeeded"] * 2
    assert SYNC_SLEPT == async_slept == [0.5, 0.75]  # a growing interval


def test_both_clients_download_with_a_checked_sha256(tmp_path: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("model.mcz"):
            return httpx.Response(
                200, content=BODY, headers={"x-checksum-sha256": hashlib.sha256(BODY).hexdigest()}
            )
        return httpx.Response(200, json=_job())

    def download(c: Any) -> Any:
        folder = tmp_path / type(c).__name__
        folder.mkdir()
        return c.download("job_1", folder)

    paths = _both(handler, download)
    assert [p.name for p in paths] == ["model.mcz"] * 2
    assert all(p.read_bytes() == BODY for p in paths)
    assert sorted(q.name for q in tmp_path.rglob("*")) == sorted(
        ["AsyncClient", "Client", "model.mcz", "model.mcz"]
    )


def test_both_clients_refuse_a_download_with_a_wrong_sha256(tmp_path: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=BODY)

    artifact = Job.from_dict(_job(sha256="0" * 64)).artifact()
    for client_cls in (Client, AsyncClient):
        dest = tmp_path / client_cls.__name__ / "out.mcz"
        with pytest.raises(ChecksumError, match="expected 0000"):
            _run(client_cls, handler, lambda c, d=dest: c.download(artifact, d))
        assert list(dest.parent.iterdir()) == []  # nothing was written, nothing left over


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METACLUSTER_URL", "http://from-env/")
    monkeypatch.setenv("METACLUSTER_API_KEY", "mck_env")
    with Client() as c:
        assert (c.base_url, c.api_key, c.max_retries) == ("http://from-env", "mck_env", 5)
    a = AsyncClient(max_retries=2)
    assert (a.base_url, a.api_key, a.max_retries) == ("http://from-env", "mck_env", 2)
    asyncio.run(a.aclose())
    monkeypatch.delenv("METACLUSTER_API_KEY")
    with pytest.raises(mc_client.ClientError, match="no api key"):
        AsyncClient()
