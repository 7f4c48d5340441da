"""What both clients share but the I/O ("sans-I/O"): when a request is retried and after
how long, how a followed event stream resumes, how polling slows down, how a download is
checked, and the settings and the httpx client of `_BaseClient`.

`Client` and `AsyncClient` differ only where they send, read, close and sleep.
"""

from __future__ import annotations

import contextlib
import email.utils
import hashlib
import os
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Generic, TypeVar

import httpx

from metacluster import __version__
from metacluster.client.calls import Call, JobRef, PathLike, ref_id
from metacluster.client.errors import ChecksumError, ClientError, WaitTimeout
from metacluster.client.records import Artifact, Event, Job

DEFAULT_TIMEOUT_S = 60.0
# An event stream sends a heartbeat every 15 s; silence much longer means a dead link.
STREAM_READ_TIMEOUT_S = 60.0
CHUNK = 1024 * 1024
USER_AGENT = f"metacluster-client/{__version__}"


# -- retries --------------------------------------------------------------------------------
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


def _safe_to_retry(request: httpx.Request) -> bool:
    """Connection failures may be retried for reads and idempotent writes."""
    return request.method in ("GET", "HEAD", "OPTIONS", "DELETE") or (
        "idempotency-key" in request.headers
    )


class Retry:
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


# -- following a job ------------------------------------------------------------------------
def deadline_of(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout


def check_deadline(deadline: float | None, job_id: str) -> None:
    if deadline is not None and time.monotonic() > deadline:
        raise WaitTimeout(f"job {job_id} did not finish in time")


class Follow:
    """A followed event stream's bookkeeping: the last seq seen (where the next connection
    resumes), the deadline, the connection failures in a row. The client connects (``with``
    it, sending `request()`), asks for the job and sleeps."""

    def __init__(self, job: JobRef, after: int, timeout: float | None, max_retries: int) -> None:
        self.job_id = ref_id(job)
        self.deadline = deadline_of(timeout)
        self.last = after
        self.max_retries = max_retries
        self.failures = 0
        self.got_any = False

    def __enter__(self) -> Follow:
        """A connection, resuming after `last`."""
        self.got_any = False
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> bool:
        """A connection failure is swallowed, unless it is one too many in a row."""
        if exc_type is None or not issubclass(exc_type, httpx.TransportError):
            return False
        self.failures += 1
        return self.failures <= self.max_retries

    def request(self) -> Call[httpx.Response]:
        """The event stream, resuming after `last`; the read timeout (the heartbeats'
        silence allowed) ends by the deadline."""
        read = STREAM_READ_TIMEOUT_S
        if self.deadline is not None:
            read = max(0.1, min(read, self.deadline - time.monotonic()))
        headers = {"Accept": "text/event-stream"}
        if self.last:
            headers["Last-Event-ID"] = str(self.last)
        timeout = httpx.Timeout(DEFAULT_TIMEOUT_S, read=read)
        options = {"headers": headers, "timeout": timeout}
        return Call("GET", f"/v1/jobs/{self.job_id}/events", lambda r: r, options)

    def check(self) -> None:
        """`WaitTimeout` when past the deadline."""
        check_deadline(self.deadline, self.job_id)

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
        self.check()
        return not self.got_any

    @property
    def pause(self) -> float:
        return backoff_s(self.failures, base=0.25, cap=5.0)


class Poll:
    """Polling a job: a growing interval (up to 10 s), none past the deadline."""

    def __init__(self, timeout: float | None, interval: float) -> None:
        self.deadline = deadline_of(timeout)
        self.interval = interval

    def pause(self, current: Job) -> float:
        """Seconds to sleep before asking again about `current` (not finished);
        `WaitTimeout` when that would pass the deadline."""
        if self.deadline is not None and time.monotonic() + self.interval > self.deadline:
            raise WaitTimeout(f"job {current.id} did not finish in time", current)
        interval, self.interval = self.interval, min(10.0, self.interval * 1.5)
        return interval


# -- downloads ------------------------------------------------------------------------------
def redirect_location(response: httpx.Response) -> str | None:
    """Where a download is redirected (the object store's presigned URL), if it is."""
    if response.status_code in (301, 302, 303, 307, 308):
        return str(response.headers["location"])
    return None


def destination(path: PathLike | None, artifact: Artifact) -> Path:
    """The file a download goes to: `path`, or the artifact's name in the folder `path`
    (default the current folder; a path ending in a slash is a folder, made if missing);
    its folder is made."""
    dest = Path(path) if path is not None else Path.cwd()
    if dest.is_dir() or str(path).endswith(("/", os.sep)):
        dest = dest / artifact.name
    dest.parent.mkdir(parents=True, exist_ok=True)
    return dest


class ArtifactFile:
    """A download's temporary file beside `dest`: `write` the body into it, then `commit`
    checks its sha256 and renames it to `dest`; any failure removes it."""

    def __init__(self, dest: Path, artifact: Artifact) -> None:
        self.dest = dest
        self.artifact = artifact
        self.digest = hashlib.sha256()
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
        self.tmp = Path(tmp_name)
        self.file = os.fdopen(fd, "wb")

    def __enter__(self) -> ArtifactFile:
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


# -- the settings and request building of both clients ----------------------------------------
def _env(name: str, given: str | None) -> str:
    value = given or os.environ.get(name)
    if not value:
        raise ClientError(
            f"no {name.split('_', 1)[1].lower().replace('_', ' ')}: pass it or set {name}"
        )
    return value


_Transport = TypeVar("_Transport", httpx.BaseTransport, httpx.AsyncBaseTransport)
_HTTP = TypeVar("_HTTP", httpx.Client, httpx.AsyncClient)


class BaseClient(Generic[_Transport, _HTTP]):
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

    def _builder(self, call: Call[Any]) -> Callable[[], httpx.Request]:
        """Builds the call's request afresh for each try."""
        return lambda: self._http.build_request(call.method, call.path, **call.options)

    def _job_url(self, job: Job) -> str:
        return f"{self.base_url}/v1/jobs/{job.id}"
