"""The synchronous client: sends the requests `calls` builds, with the retries, event
following, polling and checked downloads of `transport`."""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Literal, TypeVar, overload

import httpx

from metacluster.client import calls, transport
from metacluster.client.calls import Call, DatasetRef, JobRef, Listing, ModelRef, PathLike, Upload
from metacluster.client.errors import StreamUnavailable, WaitTimeout, checked
from metacluster.client.progress import Watch
from metacluster.client.records import Artifact, Dataset, Event, Job, Model
from metacluster.client.sse import NewEvents
from metacluster.client.transport import CHUNK, ArtifactFile, BaseClient, Follow, Poll, Retry
from metacluster.filenames import MODEL_FILE

T = TypeVar("T")


class Client(BaseClient[httpx.BaseTransport, httpx.Client]):
    """A synchronous client of one MetaCluster service; use it as a context manager."""

    # How it waits between retries and polls (a test may put its own here).
    _sleep: Callable[[float], None] = time.sleep

    def _open(self, **options: Any) -> httpx.Client:
        return httpx.Client(**options)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections."""
        self._http.close()

    # -- plumbing --------------------------------------------------------------------
    def _send(self, build: Callable[[], httpx.Request], *, stream: bool = False) -> httpx.Response:
        """Send with retries (429/503 honouring Retry-After; connection errors when safe);
        raise the typed error of any other 4xx/5xx."""
        retry = Retry(self.max_retries)
        while True:
            request = build()
            try:
                response = self._http.send(request, stream=stream)
            except httpx.TransportError:
                if not retry.after_failure(request):
                    raise
                self._sleep(retry.wait)
                continue
            if not retry.after_answer(response):
                if stream and response.is_error:
                    response.read()
                return checked(response)
            response.close()
            self._sleep(retry.wait)

    def _call(self, call: Call[T]) -> T:
        return call.read(self._send(self._builder(call)))

    def _list(self, listing: Listing[T]) -> Iterator[T]:
        query: dict[str, Any] | None = listing.first()
        while query is not None:
            body = self._call(listing.page(query))
            yield from map(listing.record, body["items"])
            query = listing.after(body, query)

    def _upload(self, upload: Upload[T]) -> T:
        """A multipart upload streamed from the files (reopened for each retry)."""
        handles: list[IO[bytes]] = []

        def build() -> httpx.Request:
            for handle in handles:
                handle.close()
            handles.clear()
            handles.extend(f.open("rb") for f in upload.files)
            return self._builder(upload.call(handles))()

        try:
            return upload.read(self._send(build))
        finally:
            for handle in handles:
                handle.close()

    # -- uploads ---------------------------------------------------------------------
    def upload_model(self, path: PathLike | Sequence[PathLike], *, format: str = "auto") -> Model:
        """Upload a checkpoint: one file, or a pykan checkpoint (its prefix or either
        file: both files go up), or an explicit list of files."""
        return self._upload(calls.upload_model(path, format))

    def upload_dataset(self, path: PathLike) -> Dataset:
        """Upload an ``.npz`` dataset (x_train, y_train, x_test, y_test)."""
        return self._upload(calls.upload_dataset(path))

    # -- jobs ------------------------------------------------------------------------
    @overload
    def create_job(
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
    def create_job(
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

    def create_job(
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
        """Start a compression job. `config` and keyword overrides are MetaClusterConfig
        fields (``k=16``, ``target_ratio=40``, ``method="kmeans"``, ...). An
        Idempotency-Key is made unless given, so a retried request never makes two
        jobs. `dry_run`: check model, dataset and config together and queue nothing;
        returns the checks and the plan (layers with K, expected bytes, stages)."""
        body = calls.job_request(model, dataset, config, overrides, webhook_url, webhook_events)
        return self._call(calls.create_job(body, idempotency_key, dry_run))  # type: ignore[no-any-return]

    def get_job(self, job: JobRef) -> Job:
        """The job as the service sees it now."""
        return self._call(calls.get_job(job))

    def cancel(self, job: JobRef) -> Job:
        """Cancel: a queued job at once, a running one between two steps."""
        return self._call(calls.cancel(job))

    def delete_job(self, job: JobRef) -> None:
        """Delete a finished job, its events and its files."""
        self._call(calls.delete_job(job))

    def list_jobs(self, *, status: str | None = None, page_size: int = 100) -> Iterator[Job]:
        """Every job of this key, newest first (all pages)."""
        return self._list(calls.list_jobs(status, page_size))

    def get_model(self, model: ModelRef) -> Model:
        """An uploaded model."""
        return self._call(calls.get_model(model))

    def list_models(self, *, page_size: int = 100) -> Iterator[Model]:
        """Every model of this key, newest first (all pages)."""
        return self._list(calls.list_models(page_size))

    def delete_model(self, model: ModelRef) -> None:
        """Delete an uploaded model (refused while a job uses it)."""
        self._call(calls.delete_model(model))

    def list_datasets(self, *, page_size: int = 100) -> Iterator[Dataset]:
        """Every dataset of this key, newest first (all pages)."""
        return self._list(calls.list_datasets(page_size))

    def delete_dataset(self, dataset: DatasetRef) -> None:
        """Delete an uploaded dataset (refused while a job uses it)."""
        self._call(calls.delete_dataset(dataset))

    def webhook_secret(self, *, rotate: bool = False) -> dict[str, Any]:
        """The key's webhook signing secret (``{"secret": "whsec_...", ...}``)."""
        return self._call(calls.webhook_secret(rotate))

    # -- events and waiting ----------------------------------------------------------
    def events(
        self,
        job: JobRef,
        *,
        after: int = 0,
        follow: bool = True,
        timeout: float | None = None,
    ) -> Iterator[Event]:
        """The job's events after sequence number `after`, oldest first.

        `follow`: a live event stream until the job's final event, reconnecting (with
        ``Last-Event-ID``) when the connection breaks; otherwise the events there are
        now. `timeout` bounds the whole iteration (`WaitTimeout`).
        """
        if not follow:
            yield from (e for e in self._list(calls.events(job)) if e.seq > after)
            return
        state = Follow(job, after, timeout, self.max_retries)
        while True:
            with state:  # a connection: its failures are counted, too many raised
                for event in self._stream_once(state):
                    yield event
                    if state.seen(event):
                        return
            if state.quiet():
                if self.get_job(state.job_id).finished:
                    return
                self._sleep(state.pause)

    def _stream_once(self, state: Follow) -> Iterator[Event]:
        response = self._send(self._builder(state.request()), stream=True)
        with contextlib.closing(response):
            new = NewEvents(response, state.last)
            try:
                for line in response.iter_lines():
                    if (event := new.feed(line)) is not None:
                        yield event
                    state.check()
            except httpx.ReadTimeout:
                state.check()
                raise

    def wait(
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
        """Wait until the job finished and return it (whatever its status).

        Follows the event stream (a progress bar with stage and percent on stderr when
        `progress`); when the server offers none, polls with a growing interval from
        `poll_interval` to 10 s. `WaitTimeout` after `timeout` seconds. `mlflow`:
        log a succeeded job as an MLflow run (tracking URI from MLFLOW_TRACKING_URI).
        """
        poll = Poll(timeout, poll_interval)
        current = self.get_job(job)
        watch = Watch(current, progress=progress, on_event=on_event)
        try:
            if not current.finished and not self._follow(watch, timeout):
                self._poll(watch, poll)
            current = self.get_job(current)
        finally:
            watch.close(current)
        if mlflow and current.succeeded:
            self.log_to_mlflow(current, experiment=mlflow_experiment)
        return current

    def _follow(self, watch: Watch, timeout: float | None) -> bool:
        """Follow the job's events to its final one; False when there is no stream."""
        try:
            for event in self.events(watch.job_id, timeout=timeout):
                watch.event(event)
        except StreamUnavailable:
            return False
        except WaitTimeout as exc:
            raise WaitTimeout(str(exc), self.get_job(watch.job_id)) from None
        return True

    def _poll(self, watch: Watch, poll: Poll) -> None:
        while not (current := self.get_job(watch.job_id)).finished:
            watch.polled(current)
            self._sleep(poll.pause(current))
        watch.polled(current)

    # -- artifacts -------------------------------------------------------------------
    def download(
        self, target: JobRef | Artifact, path: PathLike | None = None, *, name: str = MODEL_FILE
    ) -> Path:
        """Stream an artifact (default the job's ``model.mcz``) to `path` (a file, or a
        folder; default the current folder), checking its sha256; returns the path.
        A redirect to the object store's presigned URL is followed without the API key."""
        artifact = target if isinstance(target, Artifact) else self._artifact(target, name)
        dest = transport.destination(path, artifact)
        response = self._send(self._builder(calls.artifact_bytes(artifact)), stream=True)
        location = transport.redirect_location(response)
        if location is not None:
            response.close()
            with (
                httpx.Client(timeout=self._http.timeout) as plain,
                plain.stream("GET", location) as redirected,
            ):
                if redirected.is_error:
                    redirected.read()
                return _save(checked(redirected), dest, artifact)
        with contextlib.closing(response):
            return _save(response, dest, artifact)

    def _artifact(self, job: JobRef, name: str) -> Artifact:
        current = job if isinstance(job, Job) and job.artifacts else self.get_job(job)
        return current.artifact(name)

    def report_html(self, job: JobRef) -> str:
        """The job's HTML report (self-contained, plots inline)."""
        return self._call(calls.report_html(job))

    def log_to_mlflow(
        self, job: JobRef, *, experiment: str = "metacluster", tracking_uri: str | None = None
    ) -> str:
        """Log a succeeded job as an MLflow run (params, metrics, artifact and report);
        returns the run id. Needs ``pip install 'metacluster[mlflow]'``."""
        current = job if isinstance(job, Job) else self.get_job(job)
        with tempfile.TemporaryDirectory(prefix="mc-mlflow-") as tmp:
            files = [self.download(a, Path(tmp)) for a in calls.mlflow_artifacts(current)]
            url = self._job_url(current)
            return calls.log_to_mlflow(current, files, url, experiment, tracking_uri)


def _save(response: httpx.Response, dest: Path, artifact: Artifact) -> Path:
    """Stream the body into a temporary file beside `dest`, check, then rename."""
    with ArtifactFile(dest, artifact) as out:
        for chunk in response.iter_bytes(CHUNK):
            out.write(chunk)
        return out.commit(response)
