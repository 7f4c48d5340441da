"""The asyncio client: `Client`'s methods, awaited (its iterators are async), on the same
requests (`calls`) and the same retry, follow, poll and download logic (`transport`)."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, overload

import httpx

from metacluster.client import calls, transport
from metacluster.client.calls import Call, DatasetRef, JobRef, Listing, ModelRef, PathLike, Upload
from metacluster.client.errors import StreamUnavailable, WaitTimeout, checked
from metacluster.client.progress import Watch
from metacluster.client.records import Artifact, Dataset, Event, Job, Model
from metacluster.client.sse import NewEvents
from metacluster.client.sync import Client
from metacluster.client.transport import CHUNK, ArtifactFile, BaseClient, Follow, Poll, Retry
from metacluster.filenames import MODEL_FILE

T = TypeVar("T")


class AsyncClient(BaseClient[httpx.AsyncBaseTransport, httpx.AsyncClient]):
    """`Client` for asyncio: the same methods, awaited (iterators are async); use it as an
    async context manager. Each method's documentation is `Client`'s."""

    def _open(self, **options: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(**options)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connections (httpx's name)."""
        await self._http.aclose()

    async def close(self) -> None:
        await self.aclose()

    # -- plumbing --------------------------------------------------------------------
    async def _send(
        self, build: Callable[[], httpx.Request], *, stream: bool = False
    ) -> httpx.Response:
        retry = Retry(self.max_retries)
        while True:
            request = build()
            try:
                response = await self._http.send(request, stream=stream)
            except httpx.TransportError:
                if not retry.after_failure(request):
                    raise
                await asyncio.sleep(retry.wait)
                continue
            if not retry.after_answer(response):
                if stream and response.is_error:
                    await response.aread()
                return checked(response)
            await response.aclose()
            await asyncio.sleep(retry.wait)

    async def _call(self, call: Call[T]) -> T:
        return call.read(await self._send(self._builder(call)))

    async def _list(self, listing: Listing[T]) -> AsyncIterator[T]:
        query: dict[str, Any] | None = listing.first()
        while query is not None:
            body = await self._call(listing.page(query))
            for item in body["items"]:
                yield listing.record(item)
            query = listing.after(body, query)

    async def _upload(self, upload: Upload[T]) -> T:
        """A multipart upload of the files' bytes (httpx streams no sync file here)."""
        return await self._call(upload.call([f.read_bytes() for f in upload.files]))

    # -- uploads ---------------------------------------------------------------------
    async def upload_model(
        self, path: PathLike | Sequence[PathLike], *, format: str = "auto"
    ) -> Model:
        return await self._upload(calls.upload_model(path, format))

    async def upload_dataset(self, path: PathLike) -> Dataset:
        return await self._upload(calls.upload_dataset(path))

    # -- jobs ------------------------------------------------------------------------
    @overload
    async def create_job(
        self,
        model: ModelRef,
        dataset: DatasetRef,
        config: Mapping[str, Any] | None = ...,
        *,
        idempotency_key: str | None = ...,
        dry_run: Literal[False] = ...,
        webhook_url: str | None = ...,
        webhook_events: Sequence[str] | None = ...,
        **overrides: Any,
    ) -> Job: ...

    @overload
    async def create_job(
        self,
        model: ModelRef,
        dataset: DatasetRef,
        config: Mapping[str, Any] | None = None,
        *,
        dry_run: Literal[True],
        idempotency_key: str | None = None,
        webhook_url: str | None = None,
        webhook_events: Sequence[str] | None = None,
        **overrides: Any,
    ) -> dict[str, Any]: ...

    async def create_job(
        self,
        model: ModelRef,
        dataset: DatasetRef,
        config: Mapping[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
        dry_run: bool = False,
        webhook_url: str | None = None,
        webhook_events: Sequence[str] | None = None,
        **overrides: Any,
    ) -> Job | dict[str, Any]:
        body = calls.job_request(model, dataset, config, overrides, webhook_url, webhook_events)
        return await self._call(calls.create_job(body, idempotency_key, dry_run))  # type: ignore[no-any-return]

    async def get_job(self, job: JobRef) -> Job:
        return await self._call(calls.get_job(job))

    async def cancel(self, job: JobRef) -> Job:
        return await self._call(calls.cancel(job))

    async def delete_job(self, job: JobRef) -> None:
        await self._call(calls.delete_job(job))

    def list_jobs(self, *, status: str | None = None, page_size: int = 100) -> AsyncIterator[Job]:
        return self._list(calls.list_jobs(status, page_size))

    async def get_model(self, model: ModelRef) -> Model:
        return await self._call(calls.get_model(model))

    def list_models(self, *, page_size: int = 100) -> AsyncIterator[Model]:
        return self._list(calls.list_models(page_size))

    async def delete_model(self, model: ModelRef) -> None:
        await self._call(calls.delete_model(model))

    def list_datasets(self, *, page_size: int = 100) -> AsyncIterator[Dataset]:
        return self._list(calls.list_datasets(page_size))

    async def delete_dataset(self, dataset: DatasetRef) -> None:
        await self._call(calls.delete_dataset(dataset))

    async def webhook_secret(self, *, rotate: bool = False) -> dict[str, Any]:
        return await self._call(calls.webhook_secret(rotate))

    # -- events and waiting ----------------------------------------------------------
    async def events(
        self,
        job: JobRef,
        *,
        after: int = 0,
        follow: bool = True,
        timeout: float | None = None,
    ) -> AsyncIterator[Event]:
        if not follow:
            async for event in self._list(calls.events(job)):
                if event.seq > after:
                    yield event
            return
        state = Follow(job, after, timeout, self.max_retries)
        while True:
            with state:  # a connection: its failures are counted, too many raised
                async for event in self._stream_once(state):
                    yield event
                    if state.seen(event):
                        return
            if state.quiet():
                if (await self.get_job(state.job_id)).finished:
                    return
                await asyncio.sleep(state.pause)

    async def _stream_once(self, state: Follow) -> AsyncIterator[Event]:
        response = await self._send(self._builder(state.request()), stream=True)
        try:
            new = NewEvents(response, state.last)
            try:
                async for line in response.aiter_lines():
                    if (event := new.feed(line)) is not None:
                        yield event
                    state.check()
            except httpx.ReadTimeout:
                state.check()
                raise
        finally:
            await response.aclose()

    async def wait(
        self,
        job: JobRef,
        timeout: float | None = None,
        *,
        progress: bool = True,
        poll_interval: float = 1.0,
        on_event: Callable[[Event], None] | None = None,
        mlflow: bool = False,
        mlflow_experiment: str = "metacluster",
    ) -> Job:
        poll = Poll(timeout, poll_interval)
        current = await self.get_job(job)
        watch = Watch(current, progress=progress, on_event=on_event)
        try:
            if not current.finished and not await self._follow(watch, timeout):
                await self._poll(watch, poll)
            current = await self.get_job(current)
        finally:
            watch.close(current)
        if mlflow and current.succeeded:
            await self.log_to_mlflow(current, experiment=mlflow_experiment)
        return current

    async def _follow(self, watch: Watch, timeout: float | None) -> bool:
        try:
            async for event in self.events(watch.job_id, timeout=timeout):
                watch.event(event)
        except StreamUnavailable:
            return False
        except WaitTimeout as exc:
            raise WaitTimeout(str(exc), await self.get_job(watch.job_id)) from None
        return True

    async def _poll(self, watch: Watch, poll: Poll) -> None:
        while not (current := await self.get_job(watch.job_id)).finished:
            watch.polled(current)
            await asyncio.sleep(poll.pause(current))
        watch.polled(current)

    # -- artifacts -------------------------------------------------------------------
    async def download(
        self, target: JobRef | Artifact, path: PathLike | None = None, *, name: str = MODEL_FILE
    ) -> Path:
        artifact = target if isinstance(target, Artifact) else await self._artifact(target, name)
        dest = transport.destination(path, artifact)
        response = await self._send(self._builder(calls.artifact_bytes(artifact)), stream=True)
        try:
            location = transport.redirect_location(response)
            if location is None:
                return await _save(response, dest, artifact)
            async with (
                httpx.AsyncClient(timeout=self._http.timeout) as plain,
                plain.stream("GET", location) as redirected,
            ):
                if redirected.is_error:
                    await redirected.aread()
                return await _save(checked(redirected), dest, artifact)
        finally:
            await response.aclose()

    async def _artifact(self, job: JobRef, name: str) -> Artifact:
        current = job if isinstance(job, Job) and job.artifacts else await self.get_job(job)
        return current.artifact(name)

    async def report_html(self, job: JobRef) -> str:
        return await self._call(calls.report_html(job))

    async def log_to_mlflow(
        self, job: JobRef, *, experiment: str = "metacluster", tracking_uri: str | None = None
    ) -> str:
        current = job if isinstance(job, Job) else await self.get_job(job)
        with tempfile.TemporaryDirectory(prefix="mc-mlflow-") as tmp:
            files = [await self.download(a, Path(tmp)) for a in calls.mlflow_artifacts(current)]
            url = self._job_url(current)
            log = calls.log_to_mlflow  # blocking (MLflow's client): in a thread
            return await asyncio.to_thread(log, current, files, url, experiment, tracking_uri)


async def _save(response: httpx.Response, dest: Path, artifact: Artifact) -> Path:
    """Stream the body into a temporary file beside `dest`, check, then rename."""
    with ArtifactFile(dest, artifact) as out:
        async for chunk in response.aiter_bytes(CHUNK):
            out.write(chunk)
        return out.commit(response)


def _share_docs(cls: type, source: type) -> None:
    """Each public method of `cls` without a docstring takes `source`'s."""
    for name, member in vars(cls).items():
        original = getattr(source, name, None)
        if callable(member) and not name.startswith("_") and member.__doc__ is None:
            member.__doc__ = getattr(original, "__doc__", None)


_share_docs(AsyncClient, Client)
