"""The client's public surface: every name `metacluster.client` offered as one module still
imports from the package, and `AsyncClient` has every public method of `Client`, with the
same parameters (the check is shown to catch a missing or different method)."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator
from typing import Any

import pytest

import metacluster.client as mc_client
from metacluster.client import AsyncClient, Client

# The public names of metacluster/client.py before it became a package.
SINGLE_MODULE_NAMES = {
    "APIError", "Artifact", "AsyncClient", "AuthenticationError", "CHUNK", "ChecksumError",
    "Client", "ClientError", "ConflictError", "DEFAULT_TIMEOUT_S", "Dataset", "DatasetRef",
    "Event", "FINAL_STATUSES", "IdempotencyConflictError", "Job", "JobRef", "Model",
    "ModelRef", "NotFoundError", "PYKAN_SUFFIXES", "PathLike", "PayloadTooLargeError",
    "RateLimitError", "SSEParser", "STREAM_READ_TIMEOUT_S", "ServerError",
    "ServiceUnavailableError", "StreamUnavailable", "USER_AGENT", "UnsupportedMediaTypeError",
    "ValidationError", "WaitTimeout", "backoff_s", "error_from_response", "job_request",
    "model_files", "retry_after_s",
}  # fmt: skip


def test_every_name_of_the_single_module_client_still_imports() -> None:
    assert set(mc_client.__all__) == SINGLE_MODULE_NAMES
    for name in SINGLE_MODULE_NAMES:
        assert getattr(mc_client, name) is not None, name


def _public_methods(cls: type) -> dict[str, Any]:
    return {
        name: member
        for name, member in inspect.getmembers(cls, callable)
        if not name.startswith("_") and not isinstance(member, type)
    }


def _is_async(method: Any) -> bool:
    """A coroutine function, or one that returns an async iterator."""
    returns = inspect.signature(method).return_annotation
    return (
        inspect.iscoroutinefunction(method)
        or inspect.isasyncgenfunction(method)
        or (isinstance(returns, str) and returns.startswith(AsyncIterator.__name__))
    )


def async_gaps(sync_cls: type, async_cls: type) -> list[str]:
    """Each public method of `sync_cls` that `async_cls` lacks, has with other parameters
    (names, kinds, defaults, annotations), or has but not awaitable."""
    gaps = []
    theirs = _public_methods(async_cls)
    for name, method in sorted(_public_methods(sync_cls).items()):
        other = theirs.get(name)
        if other is None:
            gaps.append(f"{name}: missing")
        elif inspect.signature(other).parameters != inspect.signature(method).parameters:
            gaps.append(f"{name}: {inspect.signature(other)} != {inspect.signature(method)}")
        elif not _is_async(other):
            gaps.append(f"{name}: not async")
    return gaps


def test_the_async_client_has_every_method_of_the_sync_one() -> None:
    assert async_gaps(Client, AsyncClient) == []
    assert {"close", "delete_job", "get_model", "log_to_mlflow", "report_html"} <= set(
        _public_methods(AsyncClient)
    )


def test_the_async_client_shares_the_sync_clients_documentation() -> None:
    for name, method in _public_methods(Client).items():
        if method.__doc__:
            assert getattr(AsyncClient, name).__doc__ == method.__doc__, name


class _Sync:
    def get(self, job: str, *, after: int = 0) -> int:
        return after

    def close(self) -> None:
        pass

    def rotate(self, *, rotate: bool = False) -> bool:
        return rotate

    def listing(self) -> list[int]:
        return []


class _Async:
    async def get(self, job: str, *, after: int = 1) -> int:  # another default
        return after

    def rotate(self, *, rotate: bool = False) -> bool:  # not awaitable
        return rotate

    def listing(self) -> AsyncIterator[int]:
        raise NotImplementedError


def test_the_check_catches_a_missing_a_different_and_a_blocking_method() -> None:
    gaps = async_gaps(_Sync, _Async)
    assert [g.split(":")[0] for g in gaps] == ["close", "get", "rotate"], gaps
    assert gaps[0] == "close: missing" and "after: 'int' = 1" in gaps[1]
    assert gaps[2] == "rotate: not async"


@pytest.mark.parametrize("name", ["delete_model", "list_datasets", "webhook_secret"])
def test_the_two_clients_build_the_same_request(name: str) -> None:
    """Both send what `calls` builds: the same method, path and query."""
    import asyncio

    import httpx

    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.method} {request.url}")
        if request.method == "DELETE":
            return httpx.Response(204)
        if name == "list_datasets":
            return httpx.Response(200, json={"items": [{"id": "ds_1"}], "next": None})
        return httpx.Response(200, json={"secret": "whsec_x"})

    args: dict[str, tuple[Any, ...]] = {"delete_model": ("mdl_1",)}
    transport = httpx.MockTransport(handler)
    with Client("http://mc.test", "k", transport=transport) as sync:
        got = getattr(sync, name)(*args.get(name, ()))
        sync_result = list(got) if name == "list_datasets" else got

    async def run() -> Any:
        async with AsyncClient("http://mc.test", "k", transport=httpx.MockTransport(handler)) as a:
            got = getattr(a, name)(*args.get(name, ()))
            return [x async for x in got] if name == "list_datasets" else await got

    assert asyncio.run(run()) == sync_result
    assert len(seen) == 2 and seen[0] == seen[1], seen
