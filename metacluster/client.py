"""Python client of the MetaCluster service (httpx): upload, compress, follow, download.

::

    from metacluster.client import Client

    with Client("http://127.0.0.1:8000", api_key="mck_...") as mc:
        model = mc.upload_model("kan.pt")               # or a pykan pair / prefix
        job = mc.create_job(model, "digits", k=16)      # Idempotency-Key generated
        job = mc.wait(job, timeout=3600)                # progress bar on stderr
        if job.succeeded:
            mc.download(job, "kan.mcz")                 # streamed, sha256 checked
            print(job.metrics["ratio"])

`base_url` and `api_key` default to ``METACLUSTER_URL`` and ``METACLUSTER_API_KEY``.
Errors are `APIError` subclasses chosen by the problem+json ``code`` (`NotFoundError`,
`ConflictError`, `ValidationError`, ...). Requests answered 429 or 503 are retried,
waiting as long as ``Retry-After`` says (else an exponential backoff); so are
connection failures of requests that are safe to repeat (reads, and job creation,
which carries an Idempotency-Key). `events` follows a job's Server-Sent Events and
reconnects with ``Last-Event-ID``; `wait` uses them and falls back to polling.
`AsyncClient` is the same client for asyncio.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import hashlib
import json
import os
import random
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import IO, Any, Generic, Literal, Self, TypeVar, overload

import httpx

from metacluster import __version__
from metacluster.errors import MetaClusterError

FINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})
DEFAULT_TIMEOUT_S = 60.0
# An event stream sends a heartbeat every 15 s; silence much longer means a dead link.
STREAM_READ_TIMEOUT_S = 60.0
CHUNK = 1024 * 1024
USER_AGENT = f"metacluster-client/{__version__}"
PYKAN_SUFFIXES = ("_config.yml", "_state")

PathLike = str | os.PathLike[str]


# -- errors -------------------------------------------------------------------------------
class ClientError(MetaClusterError, code="client_error", status=0):
    """A client-side failure that is not an HTTP answer (bad arguments, a timeout)."""


class WaitTimeout(ClientError, code="timeout"):
    """`wait` ran out of time before the job finished."""

    def __init__(self, message: str, job: Job | None = None) -> None:
        super().__init__(message)
        self.job = job


class APIError(MetaClusterError, code="http_error", status=0):
    """An error answer of the service (problem+json): `status`, `code`, `detail`."""

    def __init__(
        self,
        message: str,
        *,
        status: int,
        code: str,
        problem: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message, code=code)
        self.status = status
        self.problem: dict[str, Any] = dict(problem or {})
        self.headers: dict[str, str] = dict(headers or {})

    @property
    def detail(self) -> str:
        return str(self.problem.get("detail", self.message))


class AuthenticationError(APIError, code="unauthorized"):
    """401: a missing, unknown or revoked API key."""


class NotFoundError(APIError, code="not_found"):
    """404: no such resource for this API key."""


class ConflictError(APIError, code="conflict"):
    """409: the request does not fit the resource's state."""


class IdempotencyConflictError(ConflictError, code="idempotency_conflict"):
    """409: an Idempotency-Key reused with another request body."""


class PayloadTooLargeError(APIError, code="payload_too_large"):
    """413: over the server's upload limit."""


class UnsupportedMediaTypeError(APIError, code="unsupported_media_type"):
    """415: a file of a type the endpoint does not take."""


class ValidationError(APIError, code="validation_error"):
    """422: the model, dataset or config was refused; `code` says how."""


class RateLimitError(APIError, code="rate_limited"):
    """429: too many requests (after the retries)."""


class ServiceUnavailableError(APIError, code="unavailable"):
    """503: a dependency of the service is down (after the retries)."""


class ServerError(APIError, code="internal"):
    """5xx: an error of the service itself."""


class ChecksumError(ClientError, code="checksum_mismatch"):
    """A download whose sha256 is not the artifact's."""


_BY_CODE: dict[str, type[APIError]] = {
    "unauthorized": AuthenticationError,
    "not_found": NotFoundError,
    "idempotency_conflict": IdempotencyConflictError,
    "payload_too_large": PayloadTooLargeError,
    "unsupported_media_type": UnsupportedMediaTypeError,
    "rate_limited": RateLimitError,
    "unavailable": ServiceUnavailableError,
}
_BY_STATUS: dict[int, type[APIError]] = {
    401: AuthenticationError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    415: UnsupportedMediaTypeError,
    422: ValidationError,
    429: RateLimitError,
    503: ServiceUnavailableError,
}


def error_from_response(response: httpx.Response) -> APIError:
    """The typed exception for an error answer (problem+json, or anything else)."""
    problem: dict[str, Any] = {}
    with contextlib.suppress(Exception):
        body = response.json()
        if isinstance(body, dict):
            problem = body
    status = response.status_code
    code = str(problem.get("code") or "")
    cls = _BY_CODE.get(code) or _BY_STATUS.get(status)
    if cls is None:
        cls = ServerError if status >= 500 else APIError
    detail = str(problem.get("detail") or response.reason_phrase or "error")
    message = f"{status} {code or 'error'}: {detail}"
    return cls(
        message,
        status=status,
        code=code or cls.code,
        problem=problem,
        headers=dict(response.headers),
    )


# -- resources ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Artifact:
    job_id: str
    name: str
    bytes: int
    sha256: str
    url: str


@dataclass(frozen=True)
class Job:
    """A compression job as the service last reported it (`raw` holds every field)."""

    id: str
    status: str
    stage: str | None
    progress: float
    model_id: str
    dataset: str
    config: dict[str, Any]
    metrics: dict[str, Any] | None
    error: dict[str, Any] | None
    artifacts: list[Artifact]
    created_at: str
    started_at: str | None
    finished_at: str | None
    report_url: str | None
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Job:
        jid = str(d["id"])
        return cls(
            id=jid,
            status=str(d["status"]),
            stage=d.get("stage"),
            progress=float(d.get("progress") or 0.0),
            model_id=str(d.get("model_id", "")),
            dataset=str(d.get("dataset", "")),
            config=dict(d.get("config") or {}),
            metrics=d.get("metrics"),
            error=d.get("error"),
            artifacts=[
                Artifact(jid, a["name"], int(a["bytes"]), a["sha256"], a["url"])
                for a in d.get("artifacts") or []
            ],
            created_at=str(d.get("created_at", "")),
            started_at=d.get("started_at"),
            finished_at=d.get("finished_at"),
            report_url=d.get("report_url"),
            raw=dict(d),
        )

    @property
    def finished(self) -> bool:
        return self.status in FINAL_STATUSES

    @property
    def succeeded(self) -> bool:
        return self.status == "succeeded"

    def artifact(self, name: str = "model.mcz") -> Artifact:
        for a in self.artifacts:
            if a.name == name:
                return a
        have = ", ".join(a.name for a in self.artifacts) or "none"
        raise ClientError(f"job {self.id} has no artifact {name!r} (it has: {have})")


_CASTS: dict[str, type] = {"str": str, "int": int}


class _Record:
    """A record from the API's JSON (a frozen dataclass): the first field is required;
    other `str` / `int` fields default to "" / 0, the rest to None; `raw` keeps the
    whole object."""

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Self:
        values: dict[str, Any] = {}
        for i, f in enumerate(fields(cls)):  # type: ignore[arg-type]
            if f.name == "raw":
                values["raw"] = dict(d)
                continue
            value = d[f.name] if i == 0 else d.get(f.name)
            kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "")
            cast = _CASTS.get(kind)
            values[f.name] = value if cast is None else cast(cast() if value is None else value)
        return cls(**values)


@dataclass(frozen=True)
class Model(_Record):
    id: str
    filename: str
    family: str
    format: str
    edges: int
    params: int
    bytes: int
    sha256: str
    raw: dict[str, Any] = field(repr=False)


@dataclass(frozen=True)
class Dataset(_Record):
    id: str
    filename: str
    task: str
    n_train: int
    n_test: int
    raw: dict[str, Any] = field(repr=False)


@dataclass(frozen=True)
class Event(_Record):
    """A job event: ``kind`` status, stage, progress, log or webhook; ``seq`` 1, 2, ..."""

    seq: int
    kind: str
    stage: str | None
    progress: float | None
    loss: float | None
    message: str | None
    data: dict[str, Any] | None
    at: str
    raw: dict[str, Any] = field(repr=False)

    @property
    def final(self) -> bool:
        """The event that put the job into its final status."""
        return self.kind == "status" and (self.data or {}).get("status") in FINAL_STATUSES


JobRef = Job | str
ModelRef = Model | str
DatasetRef = Dataset | str


def _job_id(job: JobRef) -> str:
    return job.id if isinstance(job, Job) else str(job)


# -- pure helpers shared by both clients ----------------------------------------------------
def retry_after_s(response: httpx.Response, fallback: float) -> float:
    """Seconds the server asked to wait (``Retry-After``: seconds or an HTTP date)."""
    value = response.headers.get("retry-after")
    if not value:
        return fallback
    value = value.strip()
    if value.isdigit():
        return float(value)
    with contextlib.suppress(TypeError, ValueError):
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - time.time())
    return fallback


def backoff_s(attempt: int, base: float = 0.5, cap: float = 30.0) -> float:
    """Exponential backoff with jitter: ~base, 2 base, 4 base, ... up to `cap`."""
    return float(min(cap, base * 2**attempt) * (0.5 + random.random() / 2))


def model_files(path: PathLike | Sequence[PathLike]) -> list[Path]:
    """The files of a model upload: the file itself, or both files of a pykan checkpoint
    (named by its saveckpt prefix or by either file), plus a spec sidecar beside it."""
    if not isinstance(path, str | os.PathLike):
        files = [Path(p) for p in path]
    else:
        p = Path(path)
        prefix = p
        for suffix in PYKAN_SUFFIXES:
            if p.name.endswith(suffix) and len(p.name) > len(suffix):
                prefix = p.with_name(p.name[: -len(suffix)])
        config = prefix.with_name(prefix.name + "_config.yml")
        state = prefix.with_name(prefix.name + "_state")
        if config.is_file() and state.is_file():
            files = [config, state]
        else:
            files = [p]
            spec = p.with_name(p.name + ".spec.json")
            if spec.is_file():
                files.append(spec)
    for f in files:
        if not f.is_file():
            raise ClientError(f"model file not found: {f}")
    return files


def job_request(
    model: ModelRef,
    dataset: DatasetRef,
    config: Mapping[str, Any] | None,
    overrides: Mapping[str, Any],
    webhook_url: str | None,
    webhook_events: Sequence[str] | None,
) -> dict[str, Any]:
    cfg = dict(config or {})
    cfg.update({k: v for k, v in overrides.items() if v is not None})
    body: dict[str, Any] = {
        "model_id": model.id if isinstance(model, Model) else str(model),
        "dataset": dataset.id if isinstance(dataset, Dataset) else str(dataset),
        "config": cfg,
    }
    if webhook_url is not None:
        body["webhook_url"] = webhook_url
    if webhook_events is not None:
        body["webhook_events"] = list(webhook_events)
    return body


class SSEParser:
    """Server-Sent Events from lines: `feed(line)` returns an `Event` when one is complete."""

    def __init__(self) -> None:
        self._data: list[str] = []
        self._id: str | None = None
        self.last_id: str | None = None
        self.retry_ms: int | None = None

    def feed(self, line: str) -> Event | None:
        if line == "":
            if not self._data:
                return None
            data, self._data = "\n".join(self._data), []
            if self._id is not None:
                self.last_id = self._id
            return Event.from_dict(json.loads(data))
        if line.startswith(":"):
            return None  # a comment: the heartbeat
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            self._data.append(value)
        elif name == "id":
            self._id = value
        elif name == "retry" and value.isdigit():
            self.retry_ms = int(value)
        return None


class StreamUnavailable(ClientError, code="stream_unavailable"):
    """The server did not answer with an event stream (an older server, a proxy)."""


class _Progress:
    """A tqdm bar on stderr with the stage and the overall percent."""

    def __init__(self, enabled: bool, job_id: str) -> None:
        self.bar: Any = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(
                total=100,
                desc=f"{job_id[:16]} queued",
                unit="%",
                file=sys.stderr,
                bar_format="{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}]",
            )
        self.stage: str | None = None

    def job(self, job: Job) -> None:
        self._show(job.id, job.status, job.stage, job.progress)

    def event(self, job_id: str, event: Event) -> None:
        status = (event.data or {}).get("status") if event.kind == "status" else None
        self._show(job_id, status, event.stage, event.progress)

    def _show(
        self, job_id: str, status: str | None, stage: str | None, progress: float | None
    ) -> None:
        if self.bar is None:
            return
        label = stage or status or self.stage
        if label and label != self.stage:
            self.stage = label
            self.bar.set_description_str(f"{job_id[:16]} {label}", refresh=False)
        if progress is not None:
            self.bar.n = round(100 * min(max(progress, 0.0), 1.0), 1)
        self.bar.refresh()

    def close(self, job: Job | None = None) -> None:
        if self.bar is None:
            return
        if job is not None:
            if job.succeeded:
                self.bar.n = 100
            self.bar.set_description_str(f"{job.id[:16]} {job.status}", refresh=False)
            self.bar.refresh()
        self.bar.close()
        self.bar = None


def _env(name: str, given: str | None) -> str:
    value = given or os.environ.get(name)
    if not value:
        raise ClientError(
            f"no {name.split('_', 1)[1].lower().replace('_', ' ')}: pass it or set {name}"
        )
    return value


def _safe_to_retry(request: httpx.Request) -> bool:
    """Connection failures may be retried for reads and idempotent writes."""
    return request.method in ("GET", "HEAD", "OPTIONS", "DELETE") or (
        "idempotency-key" in request.headers
    )


def _check_deadline(deadline: float | None, job_id: str) -> None:
    if deadline is not None and time.monotonic() > deadline:
        raise WaitTimeout(f"job {job_id} did not finish in time")


# -- what both clients share: all but the I/O ("sans-I/O") ----------------------------------
# `Client` and `AsyncClient` differ only where they send, read, close and sleep; how a
# request is built, when it is retried, what an answer means and how a download is checked
# is decided here, once.
def _checked(response: httpx.Response) -> httpx.Response:
    """The response, or the typed error of a 4xx/5xx answer (the caller reads a streamed
    one's body first)."""
    if response.status_code >= 400:
        raise error_from_response(response)
    return response


def _json_body(response: httpx.Response) -> Any:
    return None if response.status_code == 204 else response.json()


def _next_page(body: Mapping[str, Any], params: dict[str, Any]) -> dict[str, Any] | None:
    """The query of the page after `body`, or None after the last one."""
    return {**params, "after": body["next"]} if body.get("next") else None


def _file_parts(files: Sequence[Path], contents: Sequence[Any]) -> list[tuple[str, Any]]:
    """The multipart ``file`` fields of an upload (contents: open files or bytes)."""
    return [
        ("file", (f.name, c, "application/octet-stream"))
        for f, c in zip(files, contents, strict=True)
    ]


def _dataset_file(path: PathLike) -> Path:
    p = Path(path)
    if not p.is_file():
        raise ClientError(f"dataset file not found: {p}")
    return p


def _create_job_kwargs(
    body: dict[str, Any], idempotency_key: str | None, dry_run: bool
) -> dict[str, Any]:
    """The request arguments of ``POST /v1/jobs`` (`body` from `job_request`): a dry run,
    or with an Idempotency-Key."""
    if dry_run:
        return {"json": body, "params": {"dry_run": "true"}}
    return {"json": body, "headers": {"Idempotency-Key": idempotency_key or str(uuid.uuid4())}}


def _deadline(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout


def _stream_kwargs(after: int, deadline: float | None) -> dict[str, Any]:
    """The request arguments of an event stream: resume after `after`; the read timeout
    (the heartbeats' silence allowed) ends by the deadline."""
    read = STREAM_READ_TIMEOUT_S
    if deadline is not None:
        read = max(0.1, min(read, deadline - time.monotonic()))
    headers = {"Accept": "text/event-stream"}
    if after:
        headers["Last-Event-ID"] = str(after)
    return {"headers": headers, "timeout": httpx.Timeout(DEFAULT_TIMEOUT_S, read=read)}


def _redirect_location(response: httpx.Response) -> str | None:
    """Where a download is redirected (the object store's presigned URL), if it is."""
    if response.status_code in (301, 302, 303, 307, 308):
        return str(response.headers["location"])
    return None


def _destination(path: PathLike | None, artifact: Artifact) -> Path:
    """The file a download goes to: `path`, or the artifact's name in the folder `path`
    (default the current folder; a path ending in a slash is a folder, made if missing);
    its folder is made."""
    dest = Path(path) if path is not None else Path.cwd()
    if dest.is_dir() or str(path).endswith(("/", os.sep)):
        dest = dest / artifact.name
    dest.parent.mkdir(parents=True, exist_ok=True)
    return dest


class _Retry:
    """When one request is sent again, and after how long: 429 and 503 answers (as long
    as ``Retry-After`` says, else an exponential backoff) and connection failures of
    requests safe to repeat, `max_retries` times at most. The client sends, reports what
    happened, and sleeps `wait` seconds when told to send again."""

    def __init__(self, max_retries: int) -> None:
        self.max_retries = max_retries
        self.attempt = 0
        self.wait = 0.0

    def after_failure(self, request: httpx.Request) -> bool:
        """A connection failure: whether to send `request` again (after `wait`)."""
        if self.attempt >= self.max_retries or not _safe_to_retry(request):
            return False
        return self._again(backoff_s(self.attempt))

    def after_answer(self, response: httpx.Response) -> bool:
        """An answer: whether it is a 429 or 503 to send again (after `wait`)."""
        if response.status_code not in (429, 503) or self.attempt >= self.max_retries:
            return False
        return self._again(retry_after_s(response, backoff_s(self.attempt)))

    def _again(self, wait: float) -> bool:
        self.wait = wait
        self.attempt += 1
        return True


class _Follow:
    """A followed event stream's bookkeeping: the last seq seen (where the next connection
    resumes), the deadline, the connection failures in a row. The client connects (``with``
    it), asks for the job and sleeps."""

    def __init__(self, job_id: str, after: int, timeout: float | None, max_retries: int) -> None:
        self.job_id = job_id
        self.deadline = _deadline(timeout)
        self.last = after
        self.max_retries = max_retries
        self.failures = 0
        self.got_any = False

    def __enter__(self) -> _Follow:
        """A connection, resuming after `last`."""
        self.got_any = False
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> bool:
        """A connection failure is swallowed, unless it is one too many in a row."""
        if exc_type is None or not issubclass(exc_type, httpx.TransportError):
            return False
        self.failures += 1
        return self.failures <= self.max_retries

    def seen(self, event: Event) -> bool:
        """An event came: whether it is the job's final one."""
        self.got_any = True
        self.failures = 0
        self.last = event.seq
        return event.final

    def quiet(self) -> bool:
        """After a connection (`WaitTimeout` when past the deadline): whether it brought
        no event; then the client asks whether the job finished, and waits `pause` before
        the next one."""
        _check_deadline(self.deadline, self.job_id)
        return not self.got_any

    @property
    def pause(self) -> float:
        return backoff_s(self.failures, base=0.25, cap=5.0)


class _NewEvents:
    """The events of one event-stream answer that come after `after`, fed its lines;
    `StreamUnavailable` when the answer is no event stream."""

    def __init__(self, response: httpx.Response, after: int) -> None:
        if not response.headers.get("content-type", "").startswith("text/event-stream"):
            raise StreamUnavailable("the server did not answer with an event stream")
        self.parser = SSEParser()
        self.after = after

    def feed(self, line: str) -> Event | None:
        event = self.parser.feed(line)
        return event if event is not None and event.seq > self.after else None


class _Poll:
    """Polling a job: a growing interval (up to 10 s), none past the deadline."""

    def __init__(self, deadline: float | None, interval: float) -> None:
        self.deadline = deadline
        self.interval = interval

    def pause(self, current: Job) -> float:
        """Seconds to sleep before asking again about `current` (not finished);
        `WaitTimeout` when that would pass the deadline."""
        if self.deadline is not None and time.monotonic() + self.interval > self.deadline:
            raise WaitTimeout(f"job {current.id} did not finish in time", current)
        interval, self.interval = self.interval, min(10.0, self.interval * 1.5)
        return interval


class _ArtifactFile:
    """A download's temporary file beside `dest`: `write` the body into it, then `commit`
    checks its sha256 and renames it to `dest`; any failure removes it."""

    def __init__(self, dest: Path, artifact: Artifact) -> None:
        self.dest = dest
        self.artifact = artifact
        self.digest = hashlib.sha256()
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
        self.tmp = Path(tmp_name)
        self.file = os.fdopen(fd, "wb")

    def __enter__(self) -> _ArtifactFile:
        return self

    def write(self, chunk: bytes) -> None:
        self.digest.update(chunk)
        self.file.write(chunk)

    def commit(self, response: httpx.Response) -> Path:
        self.file.close()
        got = self.digest.hexdigest()
        announced = response.headers.get("x-checksum-sha256")
        for expected in filter(None, (self.artifact.sha256, announced)):
            if got != expected:
                raise ChecksumError(
                    f"download of {self.artifact.name} has sha256 {got}, expected {expected}; "
                    "nothing was written"
                )
        os.replace(self.tmp, self.dest)
        return self.dest

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        self.file.close()
        if exc_type is not None:
            self.tmp.unlink(missing_ok=True)


_Transport = TypeVar("_Transport", httpx.BaseTransport, httpx.AsyncBaseTransport)
_HTTP = TypeVar("_HTTP", httpx.Client, httpx.AsyncClient)


class _BaseClient(Generic[_Transport, _HTTP]):
    """The settings and the request building of both clients (none of it I/O)."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        max_retries: int = 5,
        transport: _Transport | None = None,
    ) -> None:
        self.base_url = _env("METACLUSTER_URL", base_url).rstrip("/")
        self.api_key = _env("METACLUSTER_API_KEY", api_key)
        self.max_retries = max_retries
        self._http: _HTTP = self._open(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {self.api_key}", "User-Agent": USER_AGENT},
            timeout=timeout,
            transport=transport,
            follow_redirects=False,
        )

    def _open(self, **options: Any) -> _HTTP:
        """The httpx client: `httpx.Client` or `httpx.AsyncClient`."""
        raise NotImplementedError

    def _builder(self, method: str, path: str, **kw: Any) -> Callable[[], httpx.Request]:
        """Builds the request afresh for each try."""
        return lambda: self._http.build_request(method, path, **kw)


# -- the synchronous client -----------------------------------------------------------------
class Client(_BaseClient[httpx.BaseTransport, httpx.Client]):
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
        self._http.close()

    # -- plumbing --------------------------------------------------------------------
    def _send(self, build: Callable[[], httpx.Request], *, stream: bool = False) -> httpx.Response:
        """Send with retries (429/503 honouring Retry-After; connection errors when safe);
        raise the typed error of any other 4xx/5xx."""
        retry = _Retry(self.max_retries)
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
                return _checked(response)
            response.close()
            self._sleep(retry.wait)

    def _json(self, method: str, path: str, **kw: Any) -> Any:
        return _json_body(self._send(self._builder(method, path, **kw)))

    def _pages(self, path: str, params: dict[str, Any]) -> Iterator[dict[str, Any]]:
        query: dict[str, Any] | None = {k: v for k, v in params.items() if v is not None}
        while query is not None:
            body = self._json("GET", path, params=query)
            yield from body["items"]
            query = _next_page(body, query)

    # -- uploads ---------------------------------------------------------------------
    def upload_model(self, path: PathLike | Sequence[PathLike], *, format: str = "auto") -> Model:
        """Upload a checkpoint: one file, or a pykan checkpoint (its prefix or either
        file: both files go up), or an explicit list of files."""
        data = self._upload("/v1/models", model_files(path), {"format": format})
        return Model.from_dict(data)

    def upload_dataset(self, path: PathLike) -> Dataset:
        """Upload an ``.npz`` dataset (x_train, y_train, x_test, y_test)."""
        return Dataset.from_dict(self._upload("/v1/datasets", [_dataset_file(path)], None))

    def _upload(self, path: str, files: list[Path], data: dict[str, str] | None) -> dict[str, Any]:
        """A multipart upload streamed from the files (reopened for each retry)."""
        handles: list[IO[bytes]] = []

        def build() -> httpx.Request:
            for handle in handles:
                handle.close()
            handles.clear()
            handles.extend(f.open("rb") for f in files)
            parts = _file_parts(files, handles)
            return self._http.build_request("POST", path, files=parts, data=data)

        try:
            return dict(self._send(build).json())
        finally:
            for handle in handles:
                handle.close()

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
        config: Mapping[str, Any] | None = ...,
        *,
        idempotency_key: str | None = ...,
        dry_run: Literal[True],
        webhook_url: str | None = ...,
        webhook_events: Sequence[str] | None = ...,
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
        body = job_request(model, dataset, config, overrides, webhook_url, webhook_events)
        data = self._json("POST", "/v1/jobs", **_create_job_kwargs(body, idempotency_key, dry_run))
        return dict(data) if dry_run else Job.from_dict(data)

    def get_job(self, job: JobRef) -> Job:
        return Job.from_dict(self._json("GET", f"/v1/jobs/{_job_id(job)}"))

    def cancel(self, job: JobRef) -> Job:
        """Cancel: a queued job at once, a running one between two steps."""
        return Job.from_dict(self._json("POST", f"/v1/jobs/{_job_id(job)}/cancel"))

    def delete_job(self, job: JobRef) -> None:
        self._json("DELETE", f"/v1/jobs/{_job_id(job)}")

    def list_jobs(self, *, status: str | None = None, page_size: int = 100) -> Iterator[Job]:
        """Every job of this key, newest first (all pages)."""
        for d in self._pages("/v1/jobs", {"status": status, "limit": page_size}):
            yield Job.from_dict(d)

    def get_model(self, model: ModelRef) -> Model:
        mid = model.id if isinstance(model, Model) else model
        return Model.from_dict(self._json("GET", f"/v1/models/{mid}"))

    def list_models(self, *, page_size: int = 100) -> Iterator[Model]:
        for d in self._pages("/v1/models", {"limit": page_size}):
            yield Model.from_dict(d)

    def delete_model(self, model: ModelRef) -> None:
        mid = model.id if isinstance(model, Model) else model
        self._json("DELETE", f"/v1/models/{mid}")

    def list_datasets(self, *, page_size: int = 100) -> Iterator[Dataset]:
        for d in self._pages("/v1/datasets", {"limit": page_size}):
            yield Dataset.from_dict(d)

    def delete_dataset(self, dataset: DatasetRef) -> None:
        did = dataset.id if isinstance(dataset, Dataset) else dataset
        self._json("DELETE", f"/v1/datasets/{did}")

    def webhook_secret(self, *, rotate: bool = False) -> dict[str, Any]:
        """The key's webhook signing secret (``{"secret": "whsec_...", ...}``)."""
        if rotate:
            return dict(self._json("POST", "/v1/webhooks/secret/rotate"))
        return dict(self._json("GET", "/v1/webhooks/secret"))

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
        job_id = _job_id(job)
        if not follow:
            for d in self._pages(f"/v1/jobs/{job_id}/events", {"limit": 500}):
                if int(d["seq"]) > after:
                    yield Event.from_dict(d)
            return
        state = _Follow(job_id, after, timeout, self.max_retries)
        while True:
            with state:  # a connection: its failures are counted, too many raised
                for event in self._stream_once(job_id, state.last, state.deadline):
                    yield event
                    if state.seen(event):
                        return
            if state.quiet():
                if self.get_job(job_id).finished:
                    return
                self._sleep(state.pause)

    def _stream_once(self, job_id: str, after: int, deadline: float | None) -> Iterator[Event]:
        path = f"/v1/jobs/{job_id}/events"
        build = self._builder("GET", path, **_stream_kwargs(after, deadline))
        response = self._send(build, stream=True)
        with contextlib.closing(response):
            new = _NewEvents(response, after)
            try:
                for line in response.iter_lines():
                    if (event := new.feed(line)) is not None:
                        yield event
                    _check_deadline(deadline, job_id)
            except httpx.ReadTimeout:
                _check_deadline(deadline, job_id)
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
        job_id = _job_id(job)
        deadline = _deadline(timeout)
        current = self.get_job(job_id)
        bar = _Progress(progress and not current.finished, job_id)
        bar.job(current)
        try:
            if not current.finished:
                try:
                    for event in self.events(job_id, timeout=timeout):
                        bar.event(job_id, event)
                        if on_event is not None:
                            on_event(event)
                except StreamUnavailable:
                    self._poll(job_id, deadline, poll_interval, bar)
                except WaitTimeout as exc:
                    raise WaitTimeout(str(exc), self.get_job(job_id)) from None
            current = self.get_job(job_id)
        finally:
            bar.close(current if current.finished else None)
        if mlflow and current.succeeded:
            self.log_to_mlflow(current, experiment=mlflow_experiment)
        return current

    def _poll(self, job_id: str, deadline: float | None, interval: float, bar: _Progress) -> None:
        poll = _Poll(deadline, interval)
        while True:
            current = self.get_job(job_id)
            bar.job(current)
            if current.finished:
                return
            self._sleep(poll.pause(current))

    # -- artifacts -------------------------------------------------------------------
    def download(
        self, target: JobRef | Artifact, path: PathLike | None = None, *, name: str = "model.mcz"
    ) -> Path:
        """Stream an artifact (default the job's ``model.mcz``) to `path` (a file, or a
        folder; default the current folder), checking its sha256; returns the path.
        A redirect to the object store's presigned URL is followed without the API key."""
        artifact = target if isinstance(target, Artifact) else self._artifact(target, name)
        dest = _destination(path, artifact)
        response = self._send(self._builder("GET", artifact.url), stream=True)
        location = _redirect_location(response)
        if location is not None:
            response.close()
            with (
                httpx.Client(timeout=self._http.timeout) as plain,
                plain.stream("GET", location) as redirected,
            ):
                if redirected.is_error:
                    redirected.read()
                return _save(_checked(redirected), dest, artifact)
        with contextlib.closing(response):
            return _save(response, dest, artifact)

    def _artifact(self, job: JobRef, name: str) -> Artifact:
        current = job if isinstance(job, Job) and job.artifacts else self.get_job(job)
        return current.artifact(name)

    def report_html(self, job: JobRef) -> str:
        """The job's HTML report (self-contained, plots inline)."""
        response = self._send(self._builder("GET", f"/v1/jobs/{_job_id(job)}/report"))
        return str(response.text)

    def log_to_mlflow(
        self, job: JobRef, *, experiment: str = "metacluster", tracking_uri: str | None = None
    ) -> str:
        """Log a succeeded job as an MLflow run (params, metrics, artifact and report);
        returns the run id. Needs ``pip install 'metacluster[mlflow]'``."""
        from metacluster.tracking import log_job

        current = job if isinstance(job, Job) else self.get_job(job)
        with tempfile.TemporaryDirectory(prefix="mc-mlflow-") as tmp:
            files = [
                self.download(current, Path(tmp), name=a.name)
                for a in current.artifacts
                if a.name in ("model.mcz", "report.html", "report.json")
            ]
            return log_job(
                current.raw,
                files,
                tracking_uri=tracking_uri,
                experiment=experiment,
                job_url=f"{self.base_url}/v1/jobs/{current.id}",
            )


def _save(response: httpx.Response, dest: Path, artifact: Artifact) -> Path:
    """Stream the body into a temporary file beside `dest`, check, then rename."""
    with _ArtifactFile(dest, artifact) as out:
        for chunk in response.iter_bytes(CHUNK):
            out.write(chunk)
        return out.commit(response)


async def _asave(response: httpx.Response, dest: Path, artifact: Artifact) -> Path:
    """`_save` for an asyncio response."""
    with _ArtifactFile(dest, artifact) as out:
        async for chunk in response.aiter_bytes(CHUNK):
            out.write(chunk)
        return out.commit(response)


# -- the asyncio client -----------------------------------------------------------------------
class AsyncClient(_BaseClient[httpx.AsyncBaseTransport, httpx.AsyncClient]):
    """`Client` for asyncio: the same methods, awaited (iterators are async)."""

    def _open(self, **options: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(**options)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(
        self, build: Callable[[], httpx.Request], *, stream: bool = False
    ) -> httpx.Response:
        retry = _Retry(self.max_retries)
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
                return _checked(response)
            await response.aclose()
            await asyncio.sleep(retry.wait)

    async def _json(self, method: str, path: str, **kw: Any) -> Any:
        return _json_body(await self._send(self._builder(method, path, **kw)))

    async def _pages(self, path: str, params: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        query: dict[str, Any] | None = {k: v for k, v in params.items() if v is not None}
        while query is not None:
            body = await self._json("GET", path, params=query)
            for item in body["items"]:
                yield item
            query = _next_page(body, query)

    async def upload_model(
        self, path: PathLike | Sequence[PathLike], *, format: str = "auto"
    ) -> Model:
        files = model_files(path)
        parts = _file_parts(files, [f.read_bytes() for f in files])
        data = await self._json("POST", "/v1/models", files=parts, data={"format": format})
        return Model.from_dict(data)

    async def upload_dataset(self, path: PathLike) -> Dataset:
        p = _dataset_file(path)
        parts = _file_parts([p], [p.read_bytes()])
        return Dataset.from_dict(await self._json("POST", "/v1/datasets", files=parts))

    async def create_job(
        self,
        model: ModelRef,
        dataset: DatasetRef,
        config: Mapping[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
        webhook_url: str | None = None,
        webhook_events: Sequence[str] | None = None,
        **overrides: Any,
    ) -> Job:
        body = job_request(model, dataset, config, overrides, webhook_url, webhook_events)
        kw = _create_job_kwargs(body, idempotency_key, dry_run=False)
        return Job.from_dict(await self._json("POST", "/v1/jobs", **kw))

    async def get_job(self, job: JobRef) -> Job:
        return Job.from_dict(await self._json("GET", f"/v1/jobs/{_job_id(job)}"))

    async def cancel(self, job: JobRef) -> Job:
        return Job.from_dict(await self._json("POST", f"/v1/jobs/{_job_id(job)}/cancel"))

    async def list_jobs(
        self, *, status: str | None = None, page_size: int = 100
    ) -> AsyncIterator[Job]:
        async for d in self._pages("/v1/jobs", {"status": status, "limit": page_size}):
            yield Job.from_dict(d)

    async def list_models(self, *, page_size: int = 100) -> AsyncIterator[Model]:
        async for d in self._pages("/v1/models", {"limit": page_size}):
            yield Model.from_dict(d)

    async def events(
        self, job: JobRef, *, after: int = 0, timeout: float | None = None
    ) -> AsyncIterator[Event]:
        """The job's live events after `after`, until its final one (reconnecting)."""
        job_id = _job_id(job)
        state = _Follow(job_id, after, timeout, self.max_retries)
        while True:
            with state:  # a connection: its failures are counted, too many raised
                async for event in self._stream_once(job_id, state.last, state.deadline):
                    yield event
                    if state.seen(event):
                        return
            if state.quiet():
                if (await self.get_job(job_id)).finished:
                    return
                await asyncio.sleep(state.pause)

    async def _stream_once(
        self, job_id: str, after: int, deadline: float | None
    ) -> AsyncIterator[Event]:
        path = f"/v1/jobs/{job_id}/events"
        build = self._builder("GET", path, **_stream_kwargs(after, deadline))
        response = await self._send(build, stream=True)
        try:
            new = _NewEvents(response, after)
            async for line in response.aiter_lines():
                if (event := new.feed(line)) is not None:
                    yield event
                _check_deadline(deadline, job_id)
        finally:
            await response.aclose()

    async def wait(
        self, job: JobRef, timeout: float | None = None, *, poll_interval: float = 1.0
    ) -> Job:
        """Wait until the job finished (event stream, else polling); returns it."""
        job_id = _job_id(job)
        deadline = _deadline(timeout)
        current = await self.get_job(job_id)
        if current.finished:
            return current
        streamed = True
        try:
            async for _event in self.events(job_id, timeout=timeout):
                pass
        except StreamUnavailable:
            streamed = False
        if not streamed:  # polled outside the `except`: its WaitTimeout chains nothing
            poll = _Poll(deadline, poll_interval)
            while not (current := await self.get_job(job_id)).finished:
                await asyncio.sleep(poll.pause(current))
        return await self.get_job(job_id)

    async def download(
        self, target: JobRef | Artifact, path: PathLike | None = None, *, name: str = "model.mcz"
    ) -> Path:
        if isinstance(target, Artifact):
            artifact = target
        else:
            current = target if isinstance(target, Job) else await self.get_job(target)
            artifact = current.artifact(name)
        dest = _destination(path, artifact)
        response = await self._send(self._builder("GET", artifact.url), stream=True)
        try:
            location = _redirect_location(response)
            if location is None:
                return await _asave(response, dest, artifact)
            async with (
                httpx.AsyncClient(timeout=self._http.timeout) as plain,
                plain.stream("GET", location) as redirected,
            ):
                if redirected.is_error:
                    await redirected.aread()
                return await _asave(_checked(redirected), dest, artifact)
        finally:
            await response.aclose()


__all__ = [
    "APIError",
    "Artifact",
    "AsyncClient",
    "AuthenticationError",
    "ChecksumError",
    "Client",
    "ClientError",
    "ConflictError",
    "Dataset",
    "Event",
    "IdempotencyConflictError",
    "Job",
    "Model",
    "NotFoundError",
    "PayloadTooLargeError",
    "RateLimitError",
    "ServerError",
    "ServiceUnavailableError",
    "StreamUnavailable",
    "UnsupportedMediaTypeError",
    "ValidationError",
    "WaitTimeout",
    "error_from_response",
]
